"""Layers shared by the sequential models: Mamba layer, feed-forward, padding-aware ops.

RecBole pads item sequences on the right with 0 and gives the valid length per row;
every function here takes that length (or a mask built from it) so that padding
never reaches a result.
"""
import torch
from torch import nn

from recbole_mamba.errors import InputError
from recbole_mamba.ssm import Mamba


def valid_mask(item_seq_len, max_len):
    """[B] lengths -> [B, L] bool mask, True on the valid prefix."""
    positions = torch.arange(max_len, device=item_seq_len.device)  # [L]
    return positions[None, :] < item_seq_len[:, None]  # [B, L]


def reverse_valid_prefix(x, item_seq_len):
    """Reverse positions 0..len-1 of each row; padding stays where it is (on the right).

    x: [B, L, ...]; item_seq_len: [B].  An involution: applying it twice gives x back.
    Reversing the whole padded row instead would make short rows start on padding.
    """
    batch, max_len = x.shape[:2]
    positions = torch.arange(max_len, device=x.device).expand(batch, max_len)  # [B, L]
    lengths = item_seq_len[:, None].to(positions.dtype)  # [B, 1]
    index = torch.where(positions < lengths, lengths - 1 - positions, positions)  # [B, L]
    index = index.view(batch, max_len, *([1] * (x.dim() - 2))).expand_as(x)
    return torch.gather(x, 1, index)  # [B, L, ...]


def masked_mean(h, mask):
    """Mean of h [B, L, d] over positions where mask [B, L] is True -> [B, d]."""
    weights = mask.to(h.dtype).unsqueeze(-1)  # [B, L, 1]
    return (h * weights).sum(1) / weights.sum(1).clamp(min=1.0)  # [B, d]


def masked_softmax_pool(h, scores, mask):
    """Softmax of scores [B, L] over valid positions, then the weighted sum of h [B, L, d]."""
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)  # [B, L]
    alpha = torch.softmax(scores, dim=-1) * mask  # [B, L]; exactly 0 on padding
    return torch.bmm(alpha.unsqueeze(1), h).squeeze(1)  # [B, d]


def target_attention_pool(h, query, mask, scorer):
    """DIN's target attention: sum over valid steps of w_t h_t, with w_t = scorer([q; h_t;
    q - h_t; q * h_t]) / sqrt(d) for the query q [B, d] and steps h [B, L, d] -> [B, d].

    As DIN (and RecBole's ``SequenceAttLayer`` with ``softmax_stag=False``), the weights
    are not normalised over the history, so the result keeps how strongly the history
    as a whole matches the target; padding gets weight exactly 0, so extra padding never
    changes the result (RecBole's layer masks by length against a fixed width instead)."""
    q = query.unsqueeze(1).expand_as(h)  # [B, L, d]
    scores = scorer(torch.cat([q, h, q - h, q * h], dim=-1)).squeeze(-1)  # [B, L]
    weights = scores.masked_fill(~mask, 0.0) / h.shape[-1] ** 0.5  # [B, L]
    return torch.bmm(weights.unsqueeze(1), h).squeeze(1)  # [B, d]


def check_sequence_lengths(item_seq, item_seq_len, max_len):
    """One-line errors for rows no recommender can score (SPEC §7)."""
    if item_seq.shape[1] > max_len:
        raise InputError(
            f"item sequences have {item_seq.shape[1]} positions but MAX_ITEM_LIST_LENGTH is "
            f"{max_len}; truncate them or raise MAX_ITEM_LIST_LENGTH"
        )
    if item_seq_len.numel() and int(item_seq_len.max()) > item_seq.shape[1]:
        bad = int((item_seq_len > item_seq.shape[1]).sum())
        raise InputError(
            f"{bad} row(s) have item_seq_len up to {int(item_seq_len.max())} but the item sequences are "
            f"{item_seq.shape[1]} positions wide; item_seq_len counts the valid items of each padded row, "
            "so it must be at most the row width"
        )
    if item_seq_len.numel() and int(item_seq_len.min()) < 1:
        bad = int((item_seq_len < 1).sum())
        raise InputError(
            f"{bad} row(s) have an empty item history (item_seq_len 0, all padding); "
            "drop users without history or filter with user_inter_num_interval"
        )


class FeedForward(nn.Module):
    """Linear(d, inner) -> GELU -> dropout -> Linear(inner, d) -> dropout -> LN(. + input)."""

    def __init__(self, d_model, inner_size, dropout, layer_norm_eps=1e-12):
        super().__init__()
        self.w_1 = nn.Linear(d_model, inner_size)
        self.w_2 = nn.Linear(inner_size, d_model)
        self.activation = nn.GELU()
        self.dropout = nn.Dropout(dropout)
        self.LayerNorm = nn.LayerNorm(d_model, eps=layer_norm_eps)

    def forward(self, input_tensor):
        hidden = self.dropout(self.activation(self.w_1(input_tensor)))  # [B, L, inner]
        hidden = self.dropout(self.w_2(hidden))  # [B, L, d]
        return self.LayerNorm(hidden + input_tensor)


class MambaLayer(nn.Module):
    """Mamba4Rec's layer: Mamba -> dropout -> LN (residual only when stacked) -> FFN."""

    def __init__(self, d_model, d_state, d_conv, expand, dropout, num_layers, backend="auto"):
        super().__init__()
        self.num_layers = num_layers
        self.mamba = Mamba(d_model=d_model, d_state=d_state, d_conv=d_conv, expand=expand, backend=backend)
        self.dropout = nn.Dropout(dropout)
        self.LayerNorm = nn.LayerNorm(d_model, eps=1e-12)
        self.ffn = FeedForward(d_model, d_model * 4, dropout)

    def forward(self, input_tensor, lengths=None):
        """[B, L, d] -> [B, L, d]; ``lengths`` ([B], right padding) lets the scan skip the
        padding, whose outputs are then unspecified (see :meth:`Mamba.forward`)."""
        return self._after_mixer(self.mamba(input_tensor, lengths), input_tensor)  # [B, L, d]

    def step(self, input_tensor, conv_state, ssm_state):
        """One position: input_tensor [B, d] -> (output [B, d], conv_state, ssm_state).

        Everything after the mixer acts per position, so it runs on the step alone."""
        mixed, conv_state, ssm_state = self.mamba.step(input_tensor, conv_state, ssm_state)
        return self._after_mixer(mixed, input_tensor), conv_state, ssm_state

    def _after_mixer(self, mixed, input_tensor):
        hidden = self.dropout(mixed)
        if self.num_layers == 1:  # the reference uses no residual around a single layer
            hidden = self.LayerNorm(hidden)
        else:
            hidden = self.LayerNorm(hidden + input_tensor)
        return self.ffn(hidden)

"""Mamba4Rec (Liu et al. 2024, "Mamba4Rec: Towards Efficient Sequential
Recommendation with Selective State Space Models", arXiv 2403.03900).

Behaves exactly like the public RecBole reference implementation, init included,
on either selective-scan backend.

Being causal, it can train on every position of a sequence in one pass
(``train_mode: all_positions``, :mod:`recbole_mamba.model.all_positions`), and it runs in Mamba's recurrent mode: :meth:`Mamba4Rec.init_state`
and :meth:`Mamba4Rec.step` append one event per row in O(1) of the history length
and give the same user vector as :meth:`Mamba4Rec.forward` on the whole history.
"""
from torch import nn

from recbole_mamba.model.base import ItemScoringRecommender, ssm_backend_from
from recbole_mamba.model.layers import MambaLayer


class Mamba4Rec(ItemScoringRecommender):
    """item embedding -> dropout -> LN -> N x MambaLayer -> state at len-1 -> item scores."""

    causal = True

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.hidden_size = config["hidden_size"]
        self.num_layers = config["num_layers"]
        self.dropout_prob = config["dropout_prob"]
        self.d_state = config["d_state"]
        self.d_conv = config["d_conv"]
        self.expand = config["expand"]
        self.ssm_backend = ssm_backend_from(config)
        self._build_loss(config)

        self.item_embedding = nn.Embedding(self.n_items, self.hidden_size, padding_idx=0)
        self.LayerNorm = nn.LayerNorm(self.hidden_size, eps=1e-12)
        self.dropout = nn.Dropout(self.dropout_prob)
        self.mamba_layers = nn.ModuleList(
            MambaLayer(
                d_model=self.hidden_size,
                d_state=self.d_state,
                d_conv=self.d_conv,
                expand=self.expand,
                dropout=self.dropout_prob,
                num_layers=self.num_layers,
                backend=self.ssm_backend,
            )
            for _ in range(self.num_layers)
        )
        self.apply(self._init_weights)

    def every_position(self, item_seq, item_seq_len=None):
        """User vector after each position [B, L, d]; position t reads items 0..t only.
        With ``item_seq_len`` the torch scan skips the right padding (unspecified there)."""
        hidden = self.LayerNorm(self.dropout(self.item_embedding(item_seq)))  # [B, L, d]
        for layer in self.mamba_layers:
            hidden = layer(hidden, item_seq_len)  # [B, L, d]
        return hidden

    def forward(self, item_seq, item_seq_len):
        return self.gather_indexes(self.every_position(item_seq, item_seq_len), item_seq_len - 1)  # [B, d]

    def init_state(self, batch_size, device=None):
        """Empty-history state for :meth:`step`: one (conv_state, ssm_state) per layer."""
        device = self.item_embedding.weight.device if device is None else device
        return [layer.mamba.allocate_state(batch_size, device) for layer in self.mamba_layers]

    def step(self, item_ids, state):
        """Append one event per row: item_ids [B] -> (user vector [B, d], new state).

        The user vector equals ``forward`` on the history so far (in eval mode; in
        train mode dropout draws differ).  Cost per call is O(1) in the history length:
        each layer keeps a conv state [B, d_inner, d_conv] and an SSM state
        [B, d_inner, d_state].  Embedding dropout/LN and everything after the Mamba
        mixer act per position, so they run on the step alone (MambaLayer.step).
        """
        hidden = self.LayerNorm(self.dropout(self.item_embedding(item_ids)))  # [B, d]
        new_state = []
        for layer, (conv_state, ssm_state) in zip(self.mamba_layers, state):
            hidden, conv_state, ssm_state = layer.step(hidden, conv_state, ssm_state)  # [B, d]
            new_state.append((conv_state, ssm_state))
        return hidden, new_state

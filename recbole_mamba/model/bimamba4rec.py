"""BiMamba4Rec: bidirectional Mamba with attention pooling for sequential
recommendation (the seed paper).

Each layer runs one Mamba over the history and a second one (own weights, or shared
with ``share_direction_weights``) over the history with its *valid prefix* reversed;
the backward output is reversed back so position t lines up with item t.  Only the
observed history is read (the target is never in the input), so nothing leaks.
"""
import torch
from torch import nn

from recbole_mamba.errors import ConfigError
from recbole_mamba.model.base import ItemScoringRecommender, choose_option, ssm_backend_from
from recbole_mamba.model.layers import (
    FeedForward,
    masked_mean,
    masked_softmax_pool,
    reverse_valid_prefix,
    valid_mask,
)
from recbole_mamba.ssm import Mamba, mamba_pair

FUSIONS = ("concat", "sum", "gate")
POOLINGS = ("attention", "last", "mean")


class BiMambaLayer(nn.Module):
    """[fwd Mamba(x); bwd Mamba(x reversed per row)] -> fuse -> dropout -> LN(. + x) -> FFN."""

    def __init__(self, d_model, d_state, d_conv, expand, dropout, fusion, share_weights, backend):
        super().__init__()
        self.fusion = fusion
        self.forward_mamba = Mamba(d_model, d_state=d_state, d_conv=d_conv, expand=expand, backend=backend)
        self.backward_mamba = (
            self.forward_mamba
            if share_weights
            else Mamba(d_model, d_state=d_state, d_conv=d_conv, expand=expand, backend=backend)
        )
        if fusion in ("concat", "gate"):
            self.fuse = nn.Linear(2 * d_model, d_model)
        self.dropout = nn.Dropout(dropout)
        self.LayerNorm = nn.LayerNorm(d_model, eps=1e-12)
        self.ffn = FeedForward(d_model, d_model * 4, dropout)

    def forward(self, x, item_seq_len):
        # both directions together: one scan loop over time where that pays (mamba_pair)
        fwd, bwd_reversed = mamba_pair(
            self.forward_mamba, self.backward_mamba, x, reverse_valid_prefix(x, item_seq_len), lengths=item_seq_len
        )  # [B, L, d] each; the padding is unspecified where the scan skipped it
        bwd = reverse_valid_prefix(bwd_reversed, item_seq_len)  # position t aligned with item t
        if self.fusion == "concat":
            fused = self.fuse(torch.cat([fwd, bwd], dim=-1))  # [B, L, d]
        elif self.fusion == "gate":
            gate = torch.sigmoid(self.fuse(torch.cat([fwd, bwd], dim=-1)))  # [B, L, d]
            fused = gate * fwd + (1 - gate) * bwd
        else:
            fused = fwd + bwd
        hidden = self.LayerNorm(self.dropout(fused) + x)  # [B, L, d]
        return self.ffn(hidden)


class BiMamba4Rec(ItemScoringRecommender):
    """item embedding -> dropout -> LN -> N x BiMambaLayer -> pooling -> item scores."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.hidden_size = config["hidden_size"]
        self.num_layers = config["num_layers"]
        self.dropout_prob = config["dropout_prob"]
        self.d_state = config["d_state"]
        self.d_conv = config["d_conv"]
        self.expand = config["expand"]
        self.fusion = choose_option(config, "fusion", FUSIONS, "BiMamba4Rec")
        self.pooling = choose_option(config, "pooling", POOLINGS, "BiMamba4Rec")
        self.share_direction_weights = bool(config["share_direction_weights"])
        self.ssm_backend = ssm_backend_from(config)
        self._build_loss(config)

        self.item_embedding = nn.Embedding(self.n_items, self.hidden_size, padding_idx=0)
        self.LayerNorm = nn.LayerNorm(self.hidden_size, eps=1e-12)
        self.dropout = nn.Dropout(self.dropout_prob)
        self.layers = nn.ModuleList(
            BiMambaLayer(
                d_model=self.hidden_size,
                d_state=self.d_state,
                d_conv=self.d_conv,
                expand=self.expand,
                dropout=self.dropout_prob,
                fusion=self.fusion,
                share_weights=self.share_direction_weights,
                backend=self.ssm_backend,
            )
            for _ in range(self.num_layers)
        )
        if self.pooling == "attention":
            self.pool_query = nn.Parameter(torch.empty(self.hidden_size))  # [d]
            self.pool_LayerNorm = nn.LayerNorm(self.hidden_size, eps=1e-12)
        self.apply(self._init_weights)
        if self.pooling == "attention":
            nn.init.normal_(self.pool_query, mean=0.0, std=0.02)

    def forward(self, item_seq, item_seq_len):
        hidden = self.LayerNorm(self.dropout(self.item_embedding(item_seq)))  # [B, L, d]
        for layer in self.layers:
            hidden = layer(hidden, item_seq_len)  # [B, L, d]
        if self.pooling == "last":
            return self.gather_indexes(hidden, item_seq_len - 1)  # [B, d]
        mask = valid_mask(item_seq_len, item_seq.shape[1])  # [B, L]
        if self.pooling == "mean":
            return masked_mean(hidden, mask)  # [B, d]
        scores = torch.matmul(hidden, self.pool_query)  # [B, L]
        return self.pool_LayerNorm(masked_softmax_pool(hidden, scores, mask))  # [B, d]

    def init_state(self, batch_size, device=None):
        raise ConfigError(_NOT_INCREMENTAL)

    def step(self, item_ids, state):
        raise ConfigError(_NOT_INCREMENTAL)


_NOT_INCREMENTAL = (
    "BiMamba4Rec cannot recommend incrementally: its backward direction reads the whole "
    "history again after every new event; re-encode with forward/full_sort_predict "
    "(recbole_mamba.infer.Recommender.recommend) or use Mamba4Rec or GRU4Rec for O(1) steps"
)

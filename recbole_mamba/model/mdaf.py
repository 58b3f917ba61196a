"""MDAF: Mamba-DCN with Adaptive Fusion (seed thesis), a sequence-aware CTR model.

Static branch: concat(user, item, category) -> Linear -> d -> DCNv3 (LCN + ECN with
self-mask) -> mean of the two -> s.  Sequential branch: per step concat(item,
category) -> Linear -> d -> Mamba layers (a real selective scan) -> masked mean over
the valid history -> q.  Gate: g = sigmoid(MLP([s; q])); fused = g s + (1 - g) q;
head MLP -> click logit.  ``fusion`` selects the thesis ablations; only the branches
it uses are built.  ``sequence_target`` (off by default, not in the thesis) appends
the target as the scan's last step.
"""
import torch
from torch import nn

from recbole_mamba.errors import InputError
from recbole_mamba.model.base import choose_option, ssm_backend_from
from recbole_mamba.model.ctr_base import CTRRecommender, xavier_init
from recbole_mamba.model.dcnv3 import DCNv3Backbone
from recbole_mamba.model.layers import MambaLayer, masked_mean
from recbole_mamba.trainer import WarmupCosineTrainer

FUSIONS = ("gate", "concat", "fixed", "static", "sequential")


def gated_fusion(gate, static, sequential):
    """g * s + (1 - g) * q with g [B, 1] broadcast over the width."""
    return gate * static + (1.0 - gate) * sequential


def with_target_appended(item_seq, mask, target):
    """The target item written right after each row's last behaviour: ([B, L + 1], mask).

    With ``sequence_target`` the scan reads the target as its last step, so the pooled
    sequence vector depends on the candidate (as in BST), not on the history alone."""
    lengths = mask.sum(dim=1)  # [B]
    padded = torch.cat([item_seq, item_seq.new_zeros(len(item_seq), 1)], dim=1)  # [B, L + 1]
    padded = padded.scatter(1, lengths.unsqueeze(1), target.unsqueeze(1))
    extended = torch.cat([mask, mask.new_zeros(len(mask), 1)], dim=1)
    return padded, extended.scatter(1, lengths.unsqueeze(1), True)


class MDAF(CTRRecommender):
    """Static DCNv3 branch + sequential Mamba branch, fused by a learned per-row gate."""

    trainer_class = WarmupCosineTrainer

    def __init__(self, config, dataset):
        super().__init__()
        static_input_dim = self._build_features(config, dataset)
        self.hidden_size = config["hidden_size"]
        self.num_cross_layers = config["num_cross_layers"]
        self.num_mamba_layers = config["num_layers"]
        self.d_state = config["d_state"]
        self.d_conv = config["d_conv"]
        self.expand = config["expand"]
        self.dropout_prob = config["dropout_prob"]
        self.fusion = choose_option(config, "fusion", FUSIONS, "MDAF")
        self.ssm_backend = ssm_backend_from(config)
        d = self.hidden_size
        sequence_input_dim = config["item_embedding_size"] + config["category_embedding_size"]

        self.sequence_target = bool(config["sequence_target"])
        # only the branches this fusion uses: an ablation's parameter count is its own
        if self.fusion != "sequential":
            self.static_proj = nn.Linear(static_input_dim, d)
            self.dcn = DCNv3Backbone(d, self.num_cross_layers, self.dropout_prob)
        if self.fusion != "static":
            self.sequence_proj = nn.Linear(sequence_input_dim, d)
            self.sequence_dropout = nn.Dropout(self.dropout_prob)
            self.mamba_layers = nn.ModuleList(
                MambaLayer(d, self.d_state, self.d_conv, self.expand, self.dropout_prob,
                           num_layers=self.num_mamba_layers, backend=self.ssm_backend)
                for _ in range(self.num_mamba_layers)
            )
        if self.fusion == "gate":
            self.gate_mlp = nn.Sequential(nn.Linear(2 * d, d), nn.ReLU(), nn.Linear(d, 1))
        head_input = 2 * d if self.fusion == "concat" else d
        self.head = nn.Sequential(
            nn.Linear(head_input, 64), nn.ReLU(), nn.Dropout(self.dropout_prob), nn.Linear(64, 1)
        )
        self._init_weights(self)

    def _init_weights(self, module):
        """Xavier for embeddings and Linear layers, zero biases; the Mamba blocks keep
        Mamba's own init (dt bias, A_log, D), so only their FFNs are re-initialised."""
        for name, child in self.named_children():
            if name == "mamba_layers":
                for layer in child:
                    layer.ffn.apply(xavier_init)
            else:
                child.apply(xavier_init)

    def static_vector(self, interaction):
        x_lcn, x_ecn = self.dcn(self.static_proj(self.static_input(interaction)))  # [B, d] each
        return (x_lcn + x_ecn) / 2  # [B, d]

    def sequence_vector(self, interaction):
        item_seq = interaction[self.ITEM_SEQ]  # [B, L], right-padded with 0
        mask = item_seq > 0  # [B, L]
        if not bool(mask.any(dim=1).all()):
            raise InputError(
                f"{int((~mask.any(dim=1)).sum())} row(s) have an empty behaviour history; "
                "MDAF needs at least one earlier behaviour per row (the CTR converter drops such rows)"
            )
        if self.sequence_target:
            item_seq, mask = with_target_appended(item_seq, mask, interaction[self.ITEM_ID])  # [B, L + 1]
        steps = torch.cat([
            self.item_embedding(item_seq), self.category_embedding(self.item_category[item_seq])
        ], dim=-1)  # [B, L, di + dc]
        hidden = self.sequence_dropout(self.sequence_proj(steps))  # [B, L, d]
        for layer in self.mamba_layers:
            hidden = layer(hidden)  # [B, L, d]
        return masked_mean(hidden, mask)  # [B, d]

    def branches(self, interaction):
        """(static s, sequential q, gate g or None) for a batch; g is [B, 1]."""
        s = self.static_vector(interaction) if self.fusion != "sequential" else None
        q = self.sequence_vector(interaction) if self.fusion != "static" else None
        g = torch.sigmoid(self.gate_mlp(torch.cat([s, q], dim=-1))) if self.fusion == "gate" else None
        return s, q, g

    def forward(self, interaction):
        s, q, g = self.branches(interaction)
        if self.fusion == "gate":
            fused = gated_fusion(g, s, q)  # [B, d]
        elif self.fusion == "fixed":
            fused = gated_fusion(torch.full_like(s[:, :1], 0.5), s, q)
        elif self.fusion == "concat":
            fused = torch.cat([s, q], dim=-1)  # [B, 2d]
        else:
            fused = s if self.fusion == "static" else q
        return self.head(fused).squeeze(-1)  # [B] logit

    @torch.no_grad()
    def gate_values(self, interaction):
        """The gate g per row ([B]), the weight of the static branch."""
        if self.fusion != "gate":
            raise InputError(f"fusion={self.fusion!r} has no learned gate; train with fusion: gate")
        return self.branches(interaction)[2].squeeze(-1)

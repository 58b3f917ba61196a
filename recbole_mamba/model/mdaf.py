"""MDAF: Mamba-DCN with Adaptive Fusion (seed thesis), a sequence-aware CTR model.

A RecBole ContextRecommender.  Static branch: concat(user, item, category, RecBole's
embedding of every other field) -> Linear -> d -> DCNv3 (LCN + ECN with self-mask) ->
mean of the two -> s.  Sequential branch: the dataset's item-sequence field
(``item_id_list``), per step concat(item, category) -> Linear -> d -> Mamba layers (a
real selective scan) -> masked mean over the valid history -> q.  Gate: g =
sigmoid(MLP([s; q])); fused = g s + (1 - g) q; head MLP -> click logit.  ``fusion``
selects the thesis ablations; only the branches it uses are built.  Beyond the thesis
(both off by default): ``sequence_target`` appends the target as the scan's last step;
``sequence_pooling: target_attention`` replaces the mean by DIN's attention from the
target over the Mamba outputs.
"""
import torch
from recbole.model.layers import MLPLayers
from recbole.utils import FeatureType
from torch import nn

from recbole_mamba.errors import ConfigError, InputError
from recbole_mamba.model.base import choose_option, ssm_backend_from
from recbole_mamba.model.ctr_base import CTRRecommender, category_lookup, exclude_fields, xavier_init
from recbole_mamba.model.dcnv3 import DCNv3Backbone
from recbole_mamba.model.layers import MambaLayer, masked_mean, target_attention_pool
from recbole_mamba.trainer import WarmupCosineTrainer

FUSIONS = ("gate", "concat", "fixed", "static", "sequential")
POOLINGS = ("mean", "target_attention")


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


def check_item_sequence_field(dataset, field):
    """One-line errors when the dataset lacks the history MDAF's sequence branch reads."""
    if field not in dataset.field2type:
        raise ConfigError(
            f"MDAF's sequence branch reads each row's behaviour history from a token_seq field "
            f"'{field}' (ITEM_ID_FIELD + LIST_SUFFIX), which dataset '{dataset.dataset_name}' does not load: "
            f"add it to the .inter file (the user's earlier items, oldest first), to load_col: inter, and "
            f"share item ids with alias_of_item_id: [{field}] (or train with fusion: static)"
        )
    if dataset.field2type[field] != FeatureType.TOKEN_SEQ:
        raise ConfigError(f"'{field}' must be a token_seq field (the user's earlier items), "
                          f"not {dataset.field2type[field].value}; declare it as {field}:token_seq")
    if field not in set(dataset.alias.get("item_id", ())):
        raise ConfigError(f"'{field}' has its own id space, so its ids are not item ids: "
                          f"set alias_of_item_id: [{field}]")


class MDAF(CTRRecommender):
    """Static DCNv3 branch + sequential Mamba branch, fused by a learned per-row gate.

    User, target item and its category are embedded at their own widths (the thesis'
    80 / 64 / 32); the item and category tables are shared with the history.  Every other
    field of the data keeps RecBole's embedding (``embedding_size``) and joins the static
    branch's input; the item-sequence field feeds the sequence branch only."""

    trainer_class = WarmupCosineTrainer

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.ITEM_SEQ = self.ITEM_ID + config["LIST_SUFFIX"]
        self.CATEGORY = config["CATEGORY_FIELD"] or None
        self.user_embedding_size = config["user_embedding_size"] or self.embedding_size
        self.item_embedding_size = config["item_embedding_size"] or self.embedding_size
        self.category_embedding_size = config["category_embedding_size"] or self.embedding_size
        self.hidden_size = config["hidden_size"]
        self.num_cross_layers = config["num_cross_layers"]
        self.num_mamba_layers = config["num_layers"]
        self.d_state = config["d_state"]
        self.d_conv = config["d_conv"]
        self.expand = config["expand"]
        self.dropout_prob = config["dropout_prob"]
        self.fusion = choose_option(config, "fusion", FUSIONS, "MDAF")
        self.sequence_pooling = choose_option(config, "sequence_pooling", POOLINGS, "MDAF")
        self.sequence_target = bool(config["sequence_target"])
        self.attention_hidden_sizes = list(config["attention_hidden_sizes"] or [80, 40])
        self.ssm_backend = ssm_backend_from(config)
        if self.fusion != "static":
            check_item_sequence_field(dataset, self.ITEM_SEQ)

        # fields MDAF embeds itself; RecBole's tables keep the rest
        exclude_fields(self, [self.USER_ID, self.ITEM_ID, self.CATEGORY, self.ITEM_SEQ])
        self.user_embedding = nn.Embedding(dataset.num(self.USER_ID), self.user_embedding_size)
        self.item_embedding = nn.Embedding(dataset.num(self.ITEM_ID), self.item_embedding_size, padding_idx=0)
        category_size = 0
        if self.CATEGORY is not None:
            self.register_buffer("item_category", category_lookup(dataset, self.CATEGORY))
            self.category_embedding = nn.Embedding(dataset.num(self.CATEGORY), self.category_embedding_size,
                                                   padding_idx=0)
            category_size = self.category_embedding_size
        d = self.hidden_size
        static_input_dim = (self.user_embedding_size + self.item_embedding_size + category_size
                            + self.num_feature_field * self.embedding_size)
        sequence_input_dim = self.item_embedding_size + category_size

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
            if self.sequence_pooling == "target_attention":
                self.attention_scorer = nn.Sequential(
                    MLPLayers([4 * d] + self.attention_hidden_sizes, activation="sigmoid"),
                    nn.Linear(self.attention_hidden_sizes[-1], 1),
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

    def static_input(self, interaction):
        """concat(user, item, category, every other field's RecBole embedding): [B, du + di + dc + F E]."""
        items = interaction[self.ITEM_ID]  # [B]
        parts = [self.user_embedding(interaction[self.USER_ID]), self.item_embedding(items)]
        if self.CATEGORY is not None:
            parts.append(self.category_embedding(self.item_category[items]))
        others = self.embedded_fields(interaction)  # [B, F, E] or None
        if others is not None:
            parts.append(others.flatten(start_dim=1))  # [B, F E]
        return torch.cat(parts, dim=-1)

    def step_embedding(self, items):
        """Item (and category) embedding of item ids [...] -> [..., di + dc], as a history step."""
        if self.CATEGORY is None:
            return self.item_embedding(items)
        return torch.cat([self.item_embedding(items), self.category_embedding(self.item_category[items])], dim=-1)

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
        hidden = self.sequence_dropout(self.sequence_proj(self.step_embedding(item_seq)))  # [B, L, d]
        lengths = mask.sum(dim=1)  # [B]; the history is right-padded, so the scan skips the padding
        for layer in self.mamba_layers:
            hidden = layer(hidden, lengths)  # [B, L, d]
        if self.sequence_pooling == "target_attention":
            query = self.sequence_proj(self.step_embedding(interaction[self.ITEM_ID]))  # [B, d]
            return target_attention_pool(hidden, query, mask, self.attention_scorer)  # [B, d]
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

"""DCNv3 (Li et al. 2024, "DCNv3: Towards Next Generation Deep Cross Network for
CTR Prediction", arXiv 2407.13349), as the authors' code (salmon1802/DCNv3) builds it:
a Linear Cross Network (shallow) and an Exponential Cross Network (deep) with the
self-mask, each with its own logit, averaged, trained with Tri-BCE.

    LCN: x_{l+1} = Dropout(x_0 * (Mask(W_l x_l) + b_l) + x_l)
    ECN: x_{l+1} = Dropout(x_l * (Mask(W_l x_l) + b_l) + x_l)
    Mask(H) = [H ; H * ReLU(LayerNorm(H))],  W_l: D -> D/2,  b_l ~ U(0, 1)

* The input is RecBole's embedding of every field of the data (a ContextRecommender, as
  RecBole's DCNV2), reordered as the authors do before the first layer:
  every field's first half, then every field's second half (with ``num_heads`` > 1, per
  head: each head owns a slice of every field's embedding, and a network runs on each head
  and the head logits are averaged).  So the self-mask's two halves pair [H ; H * mask]
  line up with the two halves of every field.
* LCN and ECN have their own depth and dropout (``num_shallow_cross_layers`` /
  ``shallow_net_dropout``, ``num_deep_cross_layers`` / ``deep_net_dropout``).
* Tri-BCE: BCE of the averaged prediction plus each head's BCE weighted by
  max(0, L_head - L), the weights kept in the graph as in the authors' code.
"""
import torch
from torch import nn

from recbole_mamba.errors import ConfigError
from recbole_mamba.model.ctr_base import CTRRecommender, xavier_init
from recbole_mamba.trainer import PlateauDecayTrainer


def self_mask(h, layer_norm):
    """Mask(H) = [H ; H * ReLU(LayerNorm(H))]: [..., D/2] -> [..., D]."""
    return torch.cat([h, h * torch.relu(layer_norm(h))], dim=-1)


def half_split(fields, num_heads=1):
    """The authors' input order: [B, F, E] field embeddings -> [B, H, F*E/H], per head
    every field's first half of that head's slice, then every field's second half."""
    heads = torch.stack(torch.tensor_split(fields, num_heads, dim=-1), dim=1)  # [B, H, F, E/H]
    first, second = torch.tensor_split(heads, 2, dim=-1)  # [B, H, F, E/2H] each
    return torch.cat([first.flatten(start_dim=2), second.flatten(start_dim=2)], dim=-1)


class CrossLayer(nn.Module):
    """One cross layer; ``exponential`` picks ECN (x_l) over LCN (x_0) as the multiplier.
    ``batch_norm`` normalises W x over the ``num_heads`` channel of a [B, H, D] input."""

    def __init__(self, dim, dropout, exponential, batch_norm=False, num_heads=1):
        super().__init__()
        if dim % 2:
            raise ConfigError(f"DCNv3 cross layers need an even width, got {dim}; change the embedding sizes")
        self.exponential = exponential
        self.W = nn.Linear(dim, dim // 2, bias=False)
        self.b = nn.Parameter(torch.empty(dim).uniform_(0.0, 1.0))
        self.batch_norm = nn.BatchNorm1d(num_heads) if batch_norm else None
        self.layer_norm = nn.LayerNorm(dim // 2)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x0, x):
        multiplier = x if self.exponential else x0  # [..., D]
        h = self.W(x)  # [..., D/2]
        if self.batch_norm is not None:
            h = self.batch_norm(h)
        return self.dropout(multiplier * (self_mask(h, self.layer_norm) + self.b) + x)


class CrossNetwork(nn.Module):
    """A stack of LCN or ECN layers: [..., D] -> [..., D]."""

    def __init__(self, dim, num_layers, dropout, exponential, batch_norm=False, num_heads=1):
        super().__init__()
        self.layers = nn.ModuleList(CrossLayer(dim, dropout, exponential, batch_norm, num_heads)
                                    for _ in range(num_layers))

    def forward(self, x0):
        x = x0
        for layer in self.layers:
            x = layer(x0, x)
        return x


class DCNv3Backbone(nn.Module):
    """LCN and ECN side by side on the same input: returns both outputs (input's shape).

    ``num_layers`` / ``dropout`` are the ECN's (deep) and, unless given apart, the LCN's."""

    def __init__(self, dim, num_layers, dropout, shallow_layers=None, shallow_dropout=None,
                 batch_norm=False, num_heads=1):
        super().__init__()
        shallow_layers = num_layers if shallow_layers is None else shallow_layers
        shallow_dropout = dropout if shallow_dropout is None else shallow_dropout
        self.lcn = CrossNetwork(dim, shallow_layers, shallow_dropout, False, batch_norm, num_heads)
        self.ecn = CrossNetwork(dim, num_layers, dropout, True, batch_norm, num_heads)

    def forward(self, x0):
        return self.lcn(x0), self.ecn(x0)


def _reinit_cross_biases(module):
    for child in module.modules():
        if isinstance(child, CrossLayer):
            nn.init.uniform_(child.b, 0.0, 1.0)


class DCNv3(CTRRecommender):
    """Every field of the data (RecBole's field embeddings) -> LCN + ECN -> averaged logits."""

    trainer_class = PlateauDecayTrainer

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.num_heads = int(config["num_heads"] or 1)
        if self.embedding_size % (2 * self.num_heads):
            raise ConfigError(f"DCNv3 splits every field's embedding into halves per head: embedding_size="
                              f"{self.embedding_size} must be divisible by 2*num_heads={2 * self.num_heads}")
        if self.num_feature_field == 0:
            raise ConfigError("DCNv3 found no field to embed: list token / token_seq fields in load_col "
                              "(float fields also need numerical_features)")
        dim = self.num_feature_field * self.embedding_size // self.num_heads
        self.tri_bce = bool(config["tri_bce"])
        self.backbone = DCNv3Backbone(dim, config["num_deep_cross_layers"], config["deep_net_dropout"],
                                      config["num_shallow_cross_layers"], config["shallow_net_dropout"],
                                      batch_norm=bool(config["batch_norm"]), num_heads=self.num_heads)
        self.lcn_head = nn.Linear(dim, 1)
        self.ecn_head = nn.Linear(dim, 1)
        self.apply(xavier_init)
        _reinit_cross_biases(self)

    def cross_input(self, interaction):
        """[B, H, F*E/H]: every field's embedding in the authors' order."""
        return half_split(self.embedded_fields(interaction), self.num_heads)  # [B, F, E] -> [B, H, F*E/H]

    def head_logits(self, interaction):
        x_lcn, x_ecn = self.backbone(self.cross_input(interaction))  # [B, H, D] each
        return self.lcn_head(x_lcn).mean(dim=1).squeeze(-1), self.ecn_head(x_ecn).mean(dim=1).squeeze(-1)

    def forward(self, interaction):
        lcn, ecn = self.head_logits(interaction)
        return (lcn + ecn) / 2  # [B]

    def calculate_loss(self, interaction):
        labels = interaction[self.LABEL]
        lcn, ecn = self.head_logits(interaction)
        return tri_bce_loss(self.bce, lcn, ecn, labels) if self.tri_bce else self.bce((lcn + ecn) / 2, labels)


def tri_bce_loss(bce, lcn, ecn, labels):
    """L + max(0, L_lcn - L) L_lcn + max(0, L_ecn - L) L_ecn, weights in the graph."""
    loss = bce((lcn + ecn) / 2, labels)
    loss_lcn, loss_ecn = bce(lcn, labels), bce(ecn, labels)
    return loss + torch.clamp(loss_lcn - loss, min=0) * loss_lcn + torch.clamp(loss_ecn - loss, min=0) * loss_ecn

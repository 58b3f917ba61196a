"""DCNv3 (Li et al. 2024, "DCNv3: Towards Next Generation Deep Cross Network for
CTR Prediction", arXiv 2407.13349): Linear/Local Cross Network and Exponential Cross
Network with the self-mask, each with its own logit, averaged.

    LCN: x_{l+1} = x_0 * (Mask(W_l x_l) + b_l) + x_l
    ECN: x_{l+1} = x_l * (Mask(W_l x_l) + b_l) + x_l
    Mask(H) = [H ; H * ReLU(LayerNorm(H))],  W_l: D -> D/2

Trained with the paper's Tri-BCE: BCE of the averaged logit plus each head's BCE
weighted by max(0, L_head - L) (weights not back-propagated).
"""
import torch
from torch import nn

from recbole_mamba.errors import ConfigError
from recbole_mamba.model.ctr_base import CTRRecommender, xavier_init


def self_mask(h, layer_norm):
    """Mask(H) = [H ; H * ReLU(LayerNorm(H))]: [B, D/2] -> [B, D]."""
    return torch.cat([h, h * torch.relu(layer_norm(h))], dim=-1)


class CrossLayer(nn.Module):
    """One cross layer; ``exponential`` picks ECN (x_l) over LCN (x_0) as the multiplier."""

    def __init__(self, dim, dropout, exponential):
        super().__init__()
        if dim % 2:
            raise ConfigError(f"DCNv3 cross layers need an even width, got {dim}; change the embedding sizes")
        self.exponential = exponential
        self.W = nn.Linear(dim, dim // 2, bias=False)
        self.b = nn.Parameter(torch.zeros(dim))
        self.layer_norm = nn.LayerNorm(dim // 2)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x0, x):
        multiplier = x if self.exponential else x0  # [B, D]
        cross = multiplier * (self_mask(self.W(x), self.layer_norm) + self.b)  # [B, D]
        return self.dropout(cross) + x


class CrossNetwork(nn.Module):
    """A stack of LCN or ECN layers: [B, D] -> [B, D]."""

    def __init__(self, dim, num_layers, dropout, exponential):
        super().__init__()
        self.layers = nn.ModuleList(CrossLayer(dim, dropout, exponential) for _ in range(num_layers))

    def forward(self, x0):
        x = x0
        for layer in self.layers:
            x = layer(x0, x)
        return x


class DCNv3Backbone(nn.Module):
    """LCN and ECN side by side on the same input: returns both [B, D] outputs."""

    def __init__(self, dim, num_layers, dropout):
        super().__init__()
        self.lcn = CrossNetwork(dim, num_layers, dropout, exponential=False)
        self.ecn = CrossNetwork(dim, num_layers, dropout, exponential=True)

    def forward(self, x0):
        return self.lcn(x0), self.ecn(x0)


class DCNv3(CTRRecommender):
    """Static features (user, item, category) -> LCN + ECN -> averaged logits."""

    def __init__(self, config, dataset):
        super().__init__()
        input_dim = self._build_features(config, dataset)
        self.num_cross_layers = config["num_cross_layers"]
        self.dropout_prob = config["dropout_prob"]
        self.tri_bce = bool(config["tri_bce"])

        self.backbone = DCNv3Backbone(input_dim, self.num_cross_layers, self.dropout_prob)
        self.lcn_head = nn.Linear(input_dim, 1)
        self.ecn_head = nn.Linear(input_dim, 1)
        self.apply(xavier_init)

    def head_logits(self, interaction):
        x_lcn, x_ecn = self.backbone(self.static_input(interaction))  # [B, D] each
        return self.lcn_head(x_lcn).squeeze(-1), self.ecn_head(x_ecn).squeeze(-1)  # [B], [B]

    def forward(self, interaction):
        lcn, ecn = self.head_logits(interaction)
        return (lcn + ecn) / 2  # [B]

    def calculate_loss(self, interaction):
        labels = interaction[self.LABEL]
        lcn, ecn = self.head_logits(interaction)
        loss = self.bce((lcn + ecn) / 2, labels)
        if not self.tri_bce:
            return loss
        loss_lcn, loss_ecn = self.bce(lcn, labels), self.bce(ecn, labels)
        weight_lcn = torch.clamp(loss_lcn - loss, min=0).detach()
        weight_ecn = torch.clamp(loss_ecn - loss, min=0).detach()
        return loss + weight_lcn * loss_lcn + weight_ecn * loss_ecn

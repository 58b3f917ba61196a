"""What Mamba4Rec and BiMamba4Rec share: config checks, losses, scoring, init."""

import torch
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.model.loss import BPRLoss
from torch import nn

from recbole_mamba.errors import ConfigError
from recbole_mamba.model.all_positions import SequentialTrainer, all_positions_ce, checked_history, train_mode_from
from recbole_mamba.ssm.backends import log_choice, resolve_backend

LOSS_TYPES = ("CE", "BPR")


def choose_option(config, key, allowed, model_name):
    """config[key] checked against ``allowed``; a one-line error names the choices."""
    value = config[key]
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not supported by {model_name}; use one of {', '.join(allowed)}")
    return value


def trim_padding_from(config):
    """The ``trim_padding`` config key (default True): cut each batch to its longest row."""
    value = config["trim_padding"]
    return True if value is None else bool(value)


def ssm_backend_from(config):
    """The ``ssm_backend`` config key, validated against the device; logged once for auto."""
    requested = str(config["ssm_backend"] if config["ssm_backend"] is not None else "auto").lower()
    chosen = resolve_backend(requested, config["device"])
    log_choice(requested, chosen)
    return requested


class ItemScoringRecommender(SequentialRecommender):
    """Score = <user vector from ``forward``, item embedding>, trained with CE or BPR.

    Subclasses build ``self.item_embedding`` and implement ``forward(item_seq, item_seq_len)``.
    A causal subclass sets ``causal = True`` and implements ``every_position(item_seq,
    item_seq_len=None)`` ([B, L, d], position t reading items 0..t only; with the lengths
    it may leave the padding uncomputed, unspecified there); it can then train with
    ``train_mode: all_positions`` (:mod:`recbole_mamba.model.all_positions`).
    """

    causal = False
    trainer_class = SequentialTrainer

    def _build_loss(self, config):
        name = type(self).__name__
        self.loss_type = choose_option(config, "loss_type", LOSS_TYPES, name)
        self.loss_fct = BPRLoss() if self.loss_type == "BPR" else nn.CrossEntropyLoss()
        self.train_mode = train_mode_from(config, name, causal=self.causal)
        if self.train_mode == "all_positions" and self.loss_type != "CE":
            raise ConfigError(f"train_mode=all_positions trains {name} with CE over all items; "
                              f"loss_type={self.loss_type!r} is for prefix mode: use loss_type=CE or train_mode=prefix")
        self.trim_padding = trim_padding_from(config)

    def _init_weights(self, module):
        """Mamba4Rec's init: N(0, 0.02) for every Linear/Embedding weight (the Mamba
        block's projections included), zero Linear biases, unit LayerNorm."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(mean=0.0, std=0.02)
        elif isinstance(module, nn.LayerNorm):
            module.bias.data.zero_()
            module.weight.data.fill_(1.0)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()

    def _user_vector(self, interaction):
        return self.forward(*checked_history(self, interaction))  # [B, d]

    def calculate_loss(self, interaction):
        if self.train_mode == "all_positions":
            return all_positions_ce(self, interaction)
        seq_output = self._user_vector(interaction)  # [B, d]
        pos_items = interaction[self.POS_ITEM_ID]
        if self.loss_type == "BPR":
            neg_items = interaction[self.NEG_ITEM_ID]
            pos_score = torch.sum(seq_output * self.item_embedding(pos_items), dim=-1)  # [B]
            neg_score = torch.sum(seq_output * self.item_embedding(neg_items), dim=-1)  # [B]
            return self.loss_fct(pos_score, neg_score)
        logits = torch.matmul(seq_output, self.item_embedding.weight.transpose(0, 1))  # [B, n_items]
        return self.loss_fct(logits, pos_items)

    def predict(self, interaction):
        seq_output = self._user_vector(interaction)  # [B, d]
        test_item_emb = self.item_embedding(interaction[self.ITEM_ID])  # [B, d]
        return torch.mul(seq_output, test_item_emb).sum(dim=1)  # [B]

    def full_sort_predict(self, interaction):
        seq_output = self._user_vector(interaction)  # [B, d]
        return torch.matmul(seq_output, self.item_embedding.weight.transpose(0, 1))  # [B, n_items]


def count_parameters(model):
    """Trainable parameters, as RecBole's model summary counts them."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)



"""What the CTR models (MDAF, DCNv3) share: feature embeddings, the item -> category
lookup, label-smoothed BCE and RecBole's pointwise predict.

The data (``python -m recbole_mamba.data.ctr``) has one labelled row per target:
user, target item, label, timestamp and the user's preceding items as a token_seq
field that shares the item id space (``alias_of_item_id``).  Categories live in the
``.item`` file, so the target's category and every history step's category come
from one lookup table and share one embedding table.
"""
import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import AbstractRecommender
from recbole.utils import InputType, ModelType
from torch import nn

from recbole_mamba.errors import ConfigError


def smoothed_targets(labels, epsilon):
    """Label smoothing for BCE: y (1 - eps) + eps / 2."""
    return labels * (1.0 - epsilon) + 0.5 * epsilon


def xavier_init(module):
    """The CTR models' init: Xavier-normal embeddings and Linear weights, zero biases."""
    if isinstance(module, (nn.Embedding, nn.Linear)):
        nn.init.xavier_normal_(module.weight)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def category_lookup(dataset, category_field):
    """[n_items] LongTensor: category index of each item (0 = padding item)."""
    item_feat = dataset.get_item_feature()
    if category_field not in item_feat.interaction:
        raise ConfigError(
            f"item categories are missing: no '{category_field}' field in the .item file; "
            f"add it (item_id:token {category_field}:token) and list it in load_col: item"
        )
    lookup = item_feat[category_field].long()  # [n_items]
    missing = int((lookup[1:] == 0).sum())
    if missing:
        raise ConfigError(
            f"{missing} item(s) have no '{category_field}' in the .item file; "
            "give every item a category (the CTR converter writes one for each)"
        )
    return lookup


class CTRRecommender(AbstractRecommender):
    """Pointwise click model over user / item / category embeddings."""

    type = ModelType.CONTEXT
    input_type = InputType.POINTWISE

    def _build_features(self, config, dataset):
        self.LABEL = config["LABEL_FIELD"]
        self.USER_ID = config["USER_ID_FIELD"]
        self.ITEM_ID = config["ITEM_ID_FIELD"]
        self.ITEM_SEQ = config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]
        self.device = config["device"]
        self.label_smoothing = float(config["label_smoothing"] or 0.0)
        self.register_buffer("item_category", category_lookup(dataset, config["CATEGORY_FIELD"]))
        n_categories = dataset.num(config["CATEGORY_FIELD"])
        self.user_embedding = nn.Embedding(dataset.user_num, config["user_embedding_size"])
        self.item_embedding = nn.Embedding(dataset.item_num, config["item_embedding_size"], padding_idx=0)
        self.category_embedding = nn.Embedding(n_categories, config["category_embedding_size"], padding_idx=0)
        return config["user_embedding_size"] + config["item_embedding_size"] + config["category_embedding_size"]

    def static_input(self, interaction):
        """concat(user, item, category) embeddings of the target row: [B, du + di + dc]."""
        items = interaction[self.ITEM_ID]  # [B]
        return torch.cat([
            self.user_embedding(interaction[self.USER_ID]),
            self.item_embedding(items),
            self.category_embedding(self.item_category[items]),
        ], dim=-1)

    def bce(self, logits, labels):
        return F.binary_cross_entropy_with_logits(logits, smoothed_targets(labels.float(), self.label_smoothing))

    def calculate_loss(self, interaction):
        return self.bce(self.forward(interaction), interaction[self.LABEL])

    def predict(self, interaction):
        return torch.sigmoid(self.forward(interaction))  # [B] click probability

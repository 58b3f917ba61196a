"""What the CTR models (MDAF, DCNv3) share: RecBole's context-aware field embeddings,
the item -> category lookup, label-smoothed BCE and RecBole's pointwise predict.

Both models are RecBole ``ContextRecommender`` subclasses: every token, float (those in
``numerical_features``) and token_seq field of the .inter / .user / .item files is
embedded by RecBole's own tables at ``embedding_size``, as RecBole's DCNV2, DeepFM or
AutoInt do, so they run on any RecBole CTR dataset.  A model can take fields out of that
set (:func:`exclude_fields`) to embed them its own way: MDAF keeps its thesis widths for
user / item / category and reads the item-sequence field with its Mamba branch.

On our Taobao data (``python -m recbole_mamba.data.ctr``) each labelled row has user,
target item, label, timestamp and the user's preceding items as a token_seq field that
shares the item id space (``alias_of_item_id``); categories live in the ``.item`` file,
so a history step's category comes from one item -> category lookup table.
"""
import numpy as np
import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import ContextRecommender
from recbole.model.layers import FLEmbedding, FMEmbedding
from recbole.utils import FeatureType
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
            f"add it (item_id:token {category_field}:token) and list it in load_col: item, "
            "or set CATEGORY_FIELD: ~ to run without categories"
        )
    if dataset.field2type[category_field] != FeatureType.TOKEN:
        raise ConfigError(
            f"CATEGORY_FIELD '{category_field}' is a {dataset.field2type[category_field].value} field; "
            "it must name one token per item (a multi-valued field such as ml-100k's class stays an "
            "ordinary feature): set CATEGORY_FIELD: ~ or point it at a token field"
        )
    lookup = item_feat[category_field].long()  # [n_items]
    missing = int((lookup[1:] == 0).sum())
    if missing:
        raise ConfigError(
            f"{missing} item(s) have no '{category_field}' in the .item file; "
            "give every item a category (the CTR converter writes one for each)"
        )
    return lookup


# ContextRecommender's per-kind field lists and the tables it builds from them
_FIELD_KINDS = ("token", "float", "token_seq", "float_seq")


def exclude_fields(model, names):
    """Take ``names`` out of the fields RecBole's ContextRecommender embeds, and rebuild
    its tables (with RecBole's own classes, as its ``__init__`` does) for the rest.

    ContextRecommender builds one table per field kind from every field of the data;
    a model that embeds some fields itself (MDAF: user, item and category at their own
    widths, the item sequence through Mamba) would otherwise carry unused copies."""
    names = set(names)
    for kind in _FIELD_KINDS:
        fields, dims = getattr(model, f"{kind}_field_names"), getattr(model, f"{kind}_field_dims")
        kept = [(f, d) for f, d in zip(fields, dims) if f not in names]
        setattr(model, f"{kind}_field_names", [f for f, _ in kept])
        setattr(model, f"{kind}_field_dims", [d for _, d in kept])
        if hasattr(model, f"{kind}_embedding_table"):
            delattr(model, f"{kind}_embedding_table")
    model.num_feature_field = sum(len(getattr(model, f"{kind}_field_names")) for kind in _FIELD_KINDS)
    size = model.embedding_size
    for kind, table_class in (("token", FMEmbedding), ("float", FLEmbedding)):
        dims = getattr(model, f"{kind}_field_dims")
        if dims:
            offsets = np.array((0, *np.cumsum(dims)[:-1]), dtype=np.int64)
            setattr(model, f"{kind}_field_offsets", offsets)
            setattr(model, f"{kind}_embedding_table", table_class(dims, offsets, size))
    for kind in ("token_seq", "float_seq"):
        dims = getattr(model, f"{kind}_field_dims")
        if dims:
            setattr(model, f"{kind}_embedding_table", nn.ModuleList(nn.Embedding(d, size) for d in dims))


class CTRRecommender(ContextRecommender):
    """RecBole's ContextRecommender with a label-smoothed BCE loss and pointwise predict.

    Neither CTR model has a first-order (LR) term, so RecBole's ``first_order_linear``
    is dropped: its weights would never train and only inflate the parameter count."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        del self.first_order_linear
        self.USER_ID = config["USER_ID_FIELD"]
        self.ITEM_ID = config["ITEM_ID_FIELD"]
        self.label_smoothing = float(config["label_smoothing"] or 0.0)

    def embedded_fields(self, interaction):
        """RecBole's embeddings of every field this model left to it: [B, F, E] or None."""
        if self.num_feature_field == 0:
            return None
        return self.concat_embed_input_fields(interaction)  # [B, F, E]

    def bce(self, logits, labels):
        return F.binary_cross_entropy_with_logits(logits, smoothed_targets(labels.float(), self.label_smoothing))

    def calculate_loss(self, interaction):
        return self.bce(self.forward(interaction), interaction[self.LABEL])

    def predict(self, interaction):
        return torch.sigmoid(self.forward(interaction))  # [B] click probability

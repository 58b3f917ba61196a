"""GRU4Rec (Hidasi et al. 2016, "Session-based Recommendations with Recurrent Neural
Networks", ICLR 2016; Hidasi & Karatzoglou 2018, "Recurrent Neural Networks with Top-k
Gains for Session-based Recommendations", CIKM 2018).

By default (``loss_type`` CE or BPR, ``train_mode: prefix``) this is RecBole's built-in
GRU4Rec: the same layers, built in the same order with the same init, so the same seed
gives the same weights and the same metrics.  On top of it:

* the ranking losses TOP1, BPR-max and TOP1-max over sampled negatives: the other rows'
  target items (in-batch) plus ``n_sample`` extra items drawn with probability
  proportional to popularity^``sample_alpha``; a row's own positive is never one of its
  negatives;
* ``train_mode: all_positions`` (alias ``session``): each training window is scored at
  every position in one pass (targets = the next items), in the spirit of
  session-parallel mini-batches, instead of one row per prefix
  (:mod:`recbole_mamba.model.all_positions`, shared with Mamba4Rec);
* a stateful API for incremental inference: :meth:`GRU4Rec.init_state` and
  :meth:`GRU4Rec.step`.
"""
import numpy as np
import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.model.loss import BPRLoss
from recbole.utils import InputType
from torch import nn
from torch.nn.init import xavier_normal_, xavier_uniform_

from recbole_mamba.errors import ConfigError
from recbole_mamba.model.all_positions import (
    SequentialTrainer,
    checked_history,
    item_cross_entropy,
    next_item_targets,
    train_mode_from,
    window_rows,
)
from recbole_mamba.model.base import choose_option, trim_padding_from

LOSS_TYPES = ("CE", "BPR", "TOP1", "BPR-max", "TOP1-max")
TRAIN_MODE_ALIASES = {"session": "all_positions"}  # the name this mode had first


# ---------------------------------------------------------------- ranking losses
# Each takes pos_score [N], neg_scores [N, K] and neg_mask [N, K] (True = a real
# negative of that row) and returns the mean over rows that have at least one negative.

def _rows_with_negatives(pos_score, neg_scores, neg_mask):
    has_negative = neg_mask.any(dim=1)  # [N]
    return pos_score[has_negative], neg_scores[has_negative], neg_mask[has_negative]


def _masked_mean(values, mask):
    return (values * mask).sum(dim=1) / mask.sum(dim=1)  # [N]


def _negative_softmax_log(neg_scores, neg_mask):
    """log s_j: softmax over each row's real negatives only (the "max" in BPR-max)."""
    return torch.log_softmax(neg_scores.masked_fill(~neg_mask, float("-inf")), dim=1)  # [N, K]


def _mean_or_zero(per_row, scores):
    # a batch where no row has a negative (one row, n_sample 0) contributes nothing
    return per_row.mean() if per_row.numel() else scores.sum() * 0.0


def bpr_sampled_loss(pos_score, neg_scores, neg_mask):
    """BPR over sampled negatives: mean_j -log sigmoid(r_i - r_j)."""
    pos, neg, mask = _rows_with_negatives(pos_score, neg_scores, neg_mask)
    per_row = _masked_mean(-F.logsigmoid(pos.unsqueeze(1) - neg), mask)  # [N]
    return _mean_or_zero(per_row, neg_scores)


def top1_loss(pos_score, neg_scores, neg_mask):
    """TOP1 (Hidasi et al. 2016): mean_j sigmoid(r_j - r_i) + sigmoid(r_j^2)."""
    pos, neg, mask = _rows_with_negatives(pos_score, neg_scores, neg_mask)
    per_row = _masked_mean(torch.sigmoid(neg - pos.unsqueeze(1)) + torch.sigmoid(neg**2), mask)  # [N]
    return _mean_or_zero(per_row, neg_scores)


def bpr_max_loss(pos_score, neg_scores, neg_mask, bpreg):
    """BPR-max (Hidasi & Karatzoglou 2018):
    -log sum_j s_j sigmoid(r_i - r_j) + bpreg * sum_j s_j r_j^2, s = softmax over negatives."""
    pos, neg, mask = _rows_with_negatives(pos_score, neg_scores, neg_mask)
    log_weight = _negative_softmax_log(neg, mask)  # [N, K]
    # log of the weighted sum, in log space: masked negatives have log weight -inf
    ranking = -torch.logsumexp(log_weight + F.logsigmoid(pos.unsqueeze(1) - neg), dim=1)  # [N]
    regulariser = (log_weight.exp() * neg**2).sum(dim=1)  # [N]
    return _mean_or_zero(ranking + bpreg * regulariser, neg_scores)


def top1_max_loss(pos_score, neg_scores, neg_mask):
    """TOP1-max (Hidasi & Karatzoglou 2018): sum_j s_j (sigmoid(r_j - r_i) + sigmoid(r_j^2))."""
    pos, neg, mask = _rows_with_negatives(pos_score, neg_scores, neg_mask)
    weight = _negative_softmax_log(neg, mask).exp()  # [N, K]
    per_row = (weight * (torch.sigmoid(neg - pos.unsqueeze(1)) + torch.sigmoid(neg**2))).sum(dim=1)  # [N]
    return _mean_or_zero(per_row, neg_scores)


# ---------------------------------------------------------------- negatives

def popularity_distribution(item_counts, alpha):
    """Sampling probabilities proportional to count^alpha; the padding item 0 never drawn."""
    weight = item_counts.double().pow(alpha)  # [n_items]
    weight[0] = 0.0
    return (weight / weight.sum()).float()  # [n_items]


def candidate_scores(user_vectors, targets, extra_items, item_embedding):
    """Scores of each row's positive and of its sampled negatives.

    Candidates are every row's target (in-batch negatives) followed by the shared extra
    items; a candidate equal to a row's own target (its diagonal entry, another row with
    the same target, or an extra item that happens to be it) is masked out for that row.
    Returns pos_score [N], neg_scores [N, N + S], neg_mask [N, N + S].
    """
    candidates = torch.cat([targets, extra_items])  # [N + S]
    neg_scores = user_vectors @ item_embedding(candidates).T  # [N, N + S]
    pos_score = neg_scores[:, : targets.numel()].diagonal()  # [N]
    neg_mask = candidates.unsqueeze(0) != targets.unsqueeze(1)  # [N, N + S]
    return pos_score, neg_scores, neg_mask


# ---------------------------------------------------------------- all-positions training

# the machinery lives in all_positions.py (shared by every causal model); old names kept
session_window_rows = window_rows
GRU4RecTrainer = SequentialTrainer


# ---------------------------------------------------------------- model

class GRU4Rec(SequentialRecommender):
    """item embedding -> dropout -> GRU -> Linear(hidden, embedding) -> state at len-1 -> item scores."""

    # pairwise for BPR's dataloader negatives, like RecBole's choice for loss_type BPR;
    # CE and the sampled losses read no dataloader negatives
    input_type = InputType.PAIRWISE
    trainer_class = SequentialTrainer
    causal = True

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding_size = config["embedding_size"]
        self.hidden_size = config["hidden_size"]
        self.num_layers = config["num_layers"]
        self.dropout_prob = config["dropout_prob"]
        self.loss_type = choose_option(config, "loss_type", LOSS_TYPES, "GRU4Rec")
        self.train_mode = train_mode_from(config, "GRU4Rec", aliases=TRAIN_MODE_ALIASES)
        self.trim_padding = trim_padding_from(config)
        self.n_sample = config["n_sample"]
        self.sample_alpha = config["sample_alpha"]
        self.bpreg = config["bpreg"]
        if isinstance(self.n_sample, bool) or not isinstance(self.n_sample, int) or self.n_sample < 0:
            raise ConfigError(
                f"n_sample={self.n_sample!r} must be an integer >= 0 (extra popularity-sampled "
                "negatives per batch); use 0 for in-batch negatives only"
            )
        if not isinstance(self.sample_alpha, (int, float)) or self.sample_alpha < 0:
            raise ConfigError(f"sample_alpha={self.sample_alpha!r} must be a number >= 0 (popularity^alpha; 0 = uniform)")
        if not isinstance(self.bpreg, (int, float)) or self.bpreg < 0:
            raise ConfigError(f"bpreg={self.bpreg!r} must be a number >= 0 (BPR-max score regularisation)")

        # same modules in the same order as RecBole's GRU4Rec: same seed, same weights
        self.item_embedding = nn.Embedding(self.n_items, self.embedding_size, padding_idx=0)
        self.emb_dropout = nn.Dropout(self.dropout_prob)
        self.gru_layers = nn.GRU(
            input_size=self.embedding_size,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            bias=False,
            batch_first=True,
        )
        self.dense = nn.Linear(self.hidden_size, self.embedding_size)
        self.bpr_loss = BPRLoss()
        # training targets (an Interaction, or a DataFrame before RecBole's build)
        target_items = torch.as_tensor(np.asarray(dataset.inter_feat[dataset.iid_field]), dtype=torch.long)  # [rows]
        item_counts = torch.bincount(target_items, minlength=self.n_items)  # [n_items]
        self.register_buffer(
            "negative_distribution", popularity_distribution(item_counts, self.sample_alpha), persistent=False
        )
        self.apply(self._init_weights)

    def _init_weights(self, module):
        """RecBole's GRU4Rec init: Xavier-normal embeddings, Xavier-uniform first GRU
        layer, PyTorch's defaults for the rest."""
        if isinstance(module, nn.Embedding):
            xavier_normal_(module.weight)
        elif isinstance(module, nn.GRU):
            xavier_uniform_(module.weight_hh_l0)
            xavier_uniform_(module.weight_ih_l0)

    def every_position(self, item_seq):
        """User vector after each position [B, L, e]; position t reads items 0..t only."""
        item_seq_emb = self.emb_dropout(self.item_embedding(item_seq))  # [B, L, e]
        gru_output, _ = self.gru_layers(item_seq_emb)  # [B, L, h]
        return self.dense(gru_output)  # [B, L, e]

    def forward(self, item_seq, item_seq_len):
        return self.gather_indexes(self.every_position(item_seq), item_seq_len - 1)  # [B, e]

    def init_state(self, batch_size, device=None):
        """GRU state before any event: zeros [num_layers, batch_size, hidden_size]."""
        return torch.zeros(self.num_layers, batch_size, self.hidden_size, device=device)

    def step(self, item_ids, state):
        """Feed one new event per row; returns (user vector [B, e], new state).

        The user vector equals ``forward`` on the whole history so far (in eval mode).
        """
        item_emb = self.emb_dropout(self.item_embedding(item_ids)).unsqueeze(1)  # [B, 1, e]
        gru_output, state = self.gru_layers(item_emb, state)  # [B, 1, h], [layers, B, h]
        return self.dense(gru_output.squeeze(1)), state  # [B, e]

    def sample_negatives(self, n_sample):
        """``n_sample`` items drawn with probability ~ training popularity^sample_alpha."""
        if n_sample == 0:
            return torch.zeros(0, dtype=torch.long, device=self.negative_distribution.device)  # [0]
        return torch.multinomial(self.negative_distribution, n_sample, replacement=True)  # [S]

    def _training_rows(self, interaction):
        """(user vectors [N, e], target items [N]) to train on."""
        item_seq, item_seq_len = checked_history(self, interaction)  # [B, L], [B]
        pos_items = interaction[self.POS_ITEM_ID]  # [B]
        if self.train_mode == "prefix":
            return self.forward(item_seq, item_seq_len), pos_items
        # all positions: position t predicts item t+1; the last valid position predicts the target
        next_items, valid = next_item_targets(item_seq, item_seq_len, pos_items)  # [B, L] each
        return self.every_position(item_seq)[valid], next_items[valid]  # [N, e], [N]

    def calculate_loss(self, interaction):
        user_vectors, targets = self._training_rows(interaction)  # [N, e], [N]
        if self.loss_type == "CE":
            return item_cross_entropy(user_vectors, self.item_embedding.weight, targets)
        if self.loss_type == "BPR" and self.train_mode == "prefix":
            # RecBole's BPR: one dataloader negative per row
            pos_score = (user_vectors * self.item_embedding(targets)).sum(dim=-1)  # [B]
            neg_score = (user_vectors * self.item_embedding(interaction[self.NEG_ITEM_ID])).sum(dim=-1)  # [B]
            return self.bpr_loss(pos_score, neg_score)
        extra_items = self.sample_negatives(self.n_sample)  # [S]
        scores = candidate_scores(user_vectors, targets, extra_items, self.item_embedding)
        if self.loss_type == "BPR":
            return bpr_sampled_loss(*scores)
        if self.loss_type == "TOP1":
            return top1_loss(*scores)
        if self.loss_type == "BPR-max":
            return bpr_max_loss(*scores, self.bpreg)
        return top1_max_loss(*scores)

    def predict(self, interaction):
        seq_output = self.forward(*checked_history(self, interaction))  # [B, e]
        return (seq_output * self.item_embedding(interaction[self.ITEM_ID])).sum(dim=1)  # [B]

    def full_sort_predict(self, interaction):
        seq_output = self.forward(*checked_history(self, interaction))  # [B, e]
        return seq_output @ self.item_embedding.weight.T  # [B, n_items]

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
  :meth:`GRU4Rec.step`;
* as options, the official implementation's (Hidasi's GRU4Rec_PyTorch_Official; Hidasi &
  Czapp 2023): one item table shared by input and output (``constrained_embedding``), an item
  bias in the scores (``item_bias``), GRU biases (``gru_bias``), its init (``weight_init:
  official``), a final activation of the scores (``final_activation``), hidden dropout
  (``hidden_dropout_prob``; ``dropout_prob`` is the embedding dropout), CE as a sampled softmax
  over in-batch + ``n_sample`` extra negatives with the ``logq`` correction
  (``sampled_softmax``), the negatives drawn from a sample cache (``sample_cache_size``),
  ``train_mode: session_parallel`` (:mod:`recbole_mamba.model.session_parallel`) and
  ``learner: adagrad_momentum`` (:mod:`recbole_mamba.optim`).
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
from recbole_mamba.model.session_parallel import SampleCache, event_item_counts

LOSS_TYPES = ("CE", "BPR", "TOP1", "BPR-max", "TOP1-max")
TRAIN_MODES = ("prefix", "all_positions", "session_parallel")
TRAIN_MODE_ALIASES = {"session": "all_positions"}  # the name all_positions had first
WEIGHT_INITS = ("recbole", "official")


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


def sampled_softmax_loss(pos_score, neg_scores, neg_mask):
    """CE of each row's positive against its real negatives (a softmax over the sampled
    candidates only): mean_i -log e^{r_i} / (e^{r_i} + sum_j e^{r_j})."""
    logits = torch.cat([pos_score.unsqueeze(1), neg_scores.masked_fill(~neg_mask, float("-inf"))], dim=1)  # [N, 1 + K]
    return -torch.log_softmax(logits, dim=1)[:, 0].mean()


def final_activation_from(config):
    """``final_activation``: linear | tanh | elu-<alpha> (elu = elu-1) -> a function of the scores."""
    value = str(config["final_activation"] if config["final_activation"] is not None else "linear").lower()
    if value == "linear":
        return None
    if value == "tanh":
        return torch.tanh
    if value == "elu" or value.startswith("elu-"):
        try:
            alpha = float(value[4:]) if value != "elu" else 1.0
        except ValueError:
            alpha = -1.0
        if alpha > 0:
            return lambda scores: F.elu(scores, alpha)
    raise ConfigError(f"final_activation={config['final_activation']!r} is not supported by GRU4Rec; "
                      "use linear, tanh or elu-<alpha> with alpha > 0 (e.g. elu-1)")


# ---------------------------------------------------------------- negatives

def popularity_distribution(item_counts, alpha):
    """Sampling probabilities proportional to count^alpha; the padding item 0 never drawn."""
    weight = item_counts.double().pow(alpha)  # [n_items]
    weight[0] = 0.0
    return (weight / weight.sum()).float()  # [n_items]


def candidate_scores(user_vectors, targets, extra_items, item_embedding, item_bias=None):
    """Scores of each row's positive and of its sampled negatives.

    Candidates are every row's target (in-batch negatives) followed by the shared extra
    items; a candidate equal to a row's own target (its diagonal entry, another row with
    the same target, or an extra item that happens to be it) is masked out for that row.
    ``item_bias`` (an [n_items, 1] embedding) adds each candidate's bias to its score.
    Returns pos_score [N], neg_scores [N, N + S], neg_mask [N, N + S].
    """
    candidates = torch.cat([targets, extra_items])  # [N + S]
    neg_scores = user_vectors @ item_embedding(candidates).T  # [N, N + S]
    if item_bias is not None:
        neg_scores = neg_scores + item_bias(candidates).T  # [N, N + S]
    pos_score = neg_scores[:, : targets.numel()].diagonal()  # [N]
    neg_mask = candidates.unsqueeze(0) != targets.unsqueeze(1)  # [N, N + S]
    return pos_score, neg_scores, neg_mask


# ---------------------------------------------------------------- all-positions training

# the machinery lives in all_positions.py (shared by every causal model); old names kept
session_window_rows = window_rows
GRU4RecTrainer = SequentialTrainer


# ---------------------------------------------------------------- model

class GRU4Rec(SequentialRecommender):
    """item embedding -> dropout -> GRU -> Linear(hidden, embedding) -> state at len-1 -> item scores.

    With ``constrained_embedding: True`` (the official layout) one item table of
    ``hidden_size`` columns is both the GRU's input and the output layer: GRU state -> scores
    directly, no Linear (``embedding_size`` is not used).
    """

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
        self.train_mode = train_mode_from(config, "GRU4Rec", aliases=TRAIN_MODE_ALIASES, modes=TRAIN_MODES)
        self.trim_padding = trim_padding_from(config)
        self.n_sample = config["n_sample"]
        self.sample_alpha = config["sample_alpha"]
        self.bpreg = config["bpreg"]
        self.constrained_embedding = bool(config["constrained_embedding"])
        self.use_item_bias = bool(config["item_bias"])
        self.gru_bias = bool(config["gru_bias"])
        self.weight_init = choose_option(config, "weight_init", WEIGHT_INITS, "GRU4Rec")
        self.final_activation = final_activation_from(config)
        self.hidden_dropout_prob = config["hidden_dropout_prob"] or 0.0
        self.sampled_softmax = bool(config["sampled_softmax"])
        self.logq = config["logq"] or 0.0
        self.sample_cache_size = config["sample_cache_size"]
        if isinstance(self.n_sample, bool) or not isinstance(self.n_sample, int) or self.n_sample < 0:
            raise ConfigError(
                f"n_sample={self.n_sample!r} must be an integer >= 0 (extra popularity-sampled "
                "negatives per batch); use 0 for in-batch negatives only"
            )
        if not isinstance(self.sample_alpha, (int, float)) or self.sample_alpha < 0:
            raise ConfigError(f"sample_alpha={self.sample_alpha!r} must be a number >= 0 (popularity^alpha; 0 = uniform)")
        if not isinstance(self.bpreg, (int, float)) or self.bpreg < 0:
            raise ConfigError(f"bpreg={self.bpreg!r} must be a number >= 0 (BPR-max score regularisation)")
        if not isinstance(self.logq, (int, float)) or self.logq < 0:
            raise ConfigError(f"logq={self.logq!r} must be a number >= 0 (weight of the sampled softmax's "
                              "log-probability correction; 0 = none)")
        if not 0 <= self.hidden_dropout_prob < 1:
            raise ConfigError(f"hidden_dropout_prob={self.hidden_dropout_prob!r} must be in [0, 1)")
        if self.logq and not (self.loss_type == "CE" and self.sampled_softmax):
            raise ConfigError(f"logq={self.logq} corrects the sampled softmax only; set loss_type=CE and "
                              "sampled_softmax=True, or logq=0")
        # sparse row gradients for the item tables: only learner=adagrad_momentum reads them
        sparse = str(config["learner"]).lower() == "adagrad_momentum" and bool(config["sparse_rows"])
        item_dim = self.hidden_size if self.constrained_embedding else self.embedding_size

        # same modules in the same order as RecBole's GRU4Rec: same seed, same weights
        self.item_embedding = nn.Embedding(self.n_items, item_dim, padding_idx=0, sparse=sparse)
        self.emb_dropout = nn.Dropout(self.dropout_prob)
        self.gru_layers = nn.GRU(
            input_size=item_dim,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            bias=self.gru_bias,
            batch_first=True,
            dropout=self.hidden_dropout_prob if self.num_layers > 1 else 0.0,
        )
        self.dense = None if self.constrained_embedding else nn.Linear(self.hidden_size, self.embedding_size)
        self.bpr_loss = BPRLoss()
        # options beyond RecBole's are built only when on, so RecBole's defaults draw the same weights
        self.hidden_dropout = nn.Dropout(self.hidden_dropout_prob) if self.hidden_dropout_prob else None
        self.item_bias = nn.Embedding(self.n_items, 1, sparse=sparse) if self.use_item_bias else None
        # training events per item: the extra negatives' popularity and the logq correction
        item_counts = event_item_counts(dataset.inter_feat, dataset.iid_field, self.ITEM_SEQ, self.ITEM_SEQ_LEN,
                                        self.n_items)  # [n_items]
        self.register_buffer(
            "negative_distribution", popularity_distribution(item_counts, self.sample_alpha), persistent=False
        )
        self.register_buffer("log_item_counts", item_counts.clamp(min=1).float().log(), persistent=False)
        self._sample_cache = None
        self.apply(self._init_weights)

    def _init_weights(self, module):
        """RecBole's GRU4Rec init: Xavier-normal embeddings, Xavier-uniform first GRU layer,
        PyTorch's defaults for the rest.  ``weight_init: official``: the official code's,
        Xavier-uniform item table and per-gate Xavier-uniform GRU weights, zero biases."""
        if module is self.item_bias:
            nn.init.zeros_(module.weight)
        elif self.weight_init == "official":
            if isinstance(module, nn.Embedding):
                xavier_uniform_(module.weight)
            elif isinstance(module, nn.GRU):
                for name, weight in module.named_parameters():
                    if name.startswith("weight"):
                        for gate in weight.data.chunk(3, dim=0):  # reset, update, new: [h, in] each
                            xavier_uniform_(gate)
                    else:
                        nn.init.zeros_(weight)
        elif isinstance(module, nn.Embedding):
            xavier_normal_(module.weight)
        elif isinstance(module, nn.GRU):
            xavier_uniform_(module.weight_hh_l0)
            xavier_uniform_(module.weight_ih_l0)

    # ------------------------------------------------------------ network

    def _output(self, gru_output):
        """GRU output [..., h] -> user vector [..., d]: hidden dropout, then the Linear
        (none with a constrained embedding)."""
        if self.hidden_dropout is not None:
            gru_output = self.hidden_dropout(gru_output)
        return gru_output if self.dense is None else self.dense(gru_output)

    def every_position(self, item_seq, item_seq_len=None):
        """User vector after each position [B, L, d]; position t reads items 0..t only (the
        GRU computes the padding too, so ``item_seq_len`` is not needed)."""
        item_seq_emb = self.emb_dropout(self.item_embedding(item_seq))  # [B, L, d]
        gru_output, _ = self.gru_layers(item_seq_emb)  # [B, L, h]
        return self._output(gru_output)  # [B, L, d]

    def forward(self, item_seq, item_seq_len):
        return self.gather_indexes(self.every_position(item_seq), item_seq_len - 1)  # [B, d]

    def init_state(self, batch_size, device=None):
        """GRU state before any event: zeros [num_layers, batch_size, hidden_size]."""
        return torch.zeros(self.num_layers, batch_size, self.hidden_size, device=device)

    def step(self, item_ids, state):
        """Feed one new event per row; returns (user vector [B, d], new state).

        The user vector equals ``forward`` on the whole history so far (in eval mode).  In
        training, with hidden dropout, the last layer carries its dropped-out output as its
        state, as the official code's session-parallel training does.
        """
        item_emb = self.emb_dropout(self.item_embedding(item_ids)).unsqueeze(1)  # [B, 1, d]
        gru_output, state = self.gru_layers(item_emb, state)  # [B, 1, h], [layers, B, h]
        gru_output = gru_output.squeeze(1)  # [B, h]
        if self.hidden_dropout is not None and self.training:
            gru_output = self.hidden_dropout(gru_output)
            state = torch.cat([state[:-1], gru_output.unsqueeze(0)])  # [layers, B, h]
            return (gru_output if self.dense is None else self.dense(gru_output)), state
        return self._output(gru_output), state  # [B, d]

    # ------------------------------------------------------------ scores and losses

    def _activated(self, scores):
        return scores if self.final_activation is None else self.final_activation(scores)

    def _item_scores(self, user_vectors, items):
        """<user vector, item vector> (+ item bias) per row [B]."""
        scores = (user_vectors * self.item_embedding(items)).sum(dim=-1)  # [B]
        return scores if self.item_bias is None else scores + self.item_bias(items).squeeze(-1)

    def _all_item_scores(self, user_vectors):
        scores = user_vectors @ self.item_embedding.weight.T  # [B, n_items]
        return scores if self.item_bias is None else scores + self.item_bias.weight.T

    @property
    def sample_cache(self):
        """The extra negatives' store (built on first use, on the model's device)."""
        if self._sample_cache is None or self._sample_cache.cdf.device != self.negative_distribution.device:
            self._sample_cache = SampleCache(self.negative_distribution, self.n_sample, self.sample_cache_size)
        return self._sample_cache

    def sample_negatives(self, n_sample):
        """``n_sample`` items drawn with probability ~ training popularity^sample_alpha: the next
        batch of the sample cache (a fresh draw for any other count)."""
        if n_sample == 0:
            return torch.zeros(0, dtype=torch.long, device=self.negative_distribution.device)  # [0]
        if n_sample == self.n_sample:
            return self.sample_cache.next()  # [S]
        return self.sample_cache.draw(n_sample)  # [S]

    def _training_rows(self, interaction):
        """(user vectors [N, d], target items [N]) to train on."""
        item_seq, item_seq_len = checked_history(self, interaction)  # [B, L], [B]
        pos_items = interaction[self.POS_ITEM_ID]  # [B]
        if self.train_mode == "prefix":
            return self.forward(item_seq, item_seq_len), pos_items
        # all positions: position t predicts item t+1; the last valid position predicts the target
        next_items, valid = next_item_targets(item_seq, item_seq_len, pos_items)  # [B, L] each
        return self.every_position(item_seq)[valid], next_items[valid]  # [N, d], [N]

    def calculate_loss(self, interaction):
        if self.train_mode == "session_parallel":
            raise ConfigError("train_mode=session_parallel trains through GRU4Rec's trainer (SequentialTrainer), "
                              "one step per event; RecBole's plain Trainer cannot run it")
        user_vectors, targets = self._training_rows(interaction)  # [N, d], [N]
        if self.loss_type == "BPR" and self.train_mode == "prefix":
            # RecBole's BPR: one dataloader negative per row
            pos_score = self._activated(self._item_scores(user_vectors, targets))  # [B]
            neg_score = self._activated(self._item_scores(user_vectors, interaction[self.NEG_ITEM_ID]))  # [B]
            return self.bpr_loss(pos_score, neg_score)
        return self.rows_loss(user_vectors, targets)

    def session_parallel_loss(self, input_items, target_items, state, lanes):
        """One session-parallel step: (loss, new state) for the n open lanes of ``lanes``
        feeding ``input_items`` [n] and predicting ``target_items`` [n] from ``state``
        [layers, n, h].  The loss is the mean over the open lanes x n / lanes: every event
        weighs the same, so the last steps of an epoch, with few lanes open, take
        proportionally smaller steps (the official normalisation; a plain mean let Adagrad
        take full-size steps from 2 rows, which diverged at hidden size 512)."""
        user_vectors, state = self.step(input_items, state)  # [n, d], [layers, n, h]
        return self.rows_loss(user_vectors, target_items) * (len(target_items) / lanes), state

    def rows_loss(self, user_vectors, targets):
        """The configured loss of user vectors [N, d] predicting ``targets`` [N]."""
        if self.loss_type == "CE" and not self.sampled_softmax:
            if self.item_bias is None and self.final_activation is None:
                return item_cross_entropy(user_vectors, self.item_embedding.weight, targets)
            return F.cross_entropy(self._activated(self._all_item_scores(user_vectors)), targets)
        extra_items = self.sample_negatives(self.n_sample)  # [S]
        pos_score, neg_scores, neg_mask = candidate_scores(user_vectors, targets, extra_items, self.item_embedding,
                                                           self.item_bias)
        pos_score, neg_scores = self._activated(pos_score), self._activated(neg_scores)
        if self.loss_type == "CE":
            if self.logq:
                pos_score, neg_scores = self._logq_corrected(pos_score, neg_scores, targets, extra_items)
            return sampled_softmax_loss(pos_score, neg_scores, neg_mask)
        if self.loss_type == "BPR":
            return bpr_sampled_loss(pos_score, neg_scores, neg_mask)
        if self.loss_type == "TOP1":
            return top1_loss(pos_score, neg_scores, neg_mask)
        if self.loss_type == "BPR-max":
            return bpr_max_loss(pos_score, neg_scores, neg_mask, self.bpreg)
        return top1_max_loss(pos_score, neg_scores, neg_mask)

    def _logq_corrected(self, pos_score, neg_scores, targets, extra_items):
        """Scores minus ``logq`` x log q, q a candidate's (unnormalised) sampling weight:
        an in-batch candidate is some row's target, drawn ~ count; an extra is drawn
        ~ count^sample_alpha (the official code's correction, its normalisers left out)."""
        log_q = torch.cat([self.log_item_counts[targets],
                           self.sample_alpha * self.log_item_counts[extra_items]])  # [N + S]
        return pos_score - self.logq * log_q[: targets.numel()], neg_scores - self.logq * log_q  # [N], [N, N + S]

    def predict(self, interaction):
        seq_output = self.forward(*checked_history(self, interaction))  # [B, d]
        return self._item_scores(seq_output, interaction[self.ITEM_ID])  # [B]

    def full_sort_predict(self, interaction):
        # the final activation is monotonic: ranking by the raw scores is the same ranking
        # (without tanh/elu saturating distinct scores into ties)
        seq_output = self.forward(*checked_history(self, interaction))  # [B, d]
        return self._all_item_scores(seq_output)  # [B, n_items]

"""Training a causal sequential model on every position of a sequence in one pass.

RecBole's sequential protocol (``train_mode: prefix``, the default and the papers')
makes one training row per target: the target's last ``MAX_ITEM_LIST_LENGTH`` items as
history, scored at its last position.  A causal model (its output at position t reads
only items 0..t) can instead score every position of one row at once, position t
predicting item t+1, as SASRec's own training does.  ``train_mode: all_positions``
does that, for any causal model in this package:

* :func:`window_rows` keeps, per user, every ``MAX_ITEM_LIST_LENGTH``-th prefix row
  counted back from the user's last one.  Scored at every position, these windows
  tile the user's targets: each training target is used exactly once per epoch, long
  histories included.  A window's first position sees only the items of that window
  (its context starts fresh at the window's start), the way prefix mode's rows see
  at most ``MAX_ITEM_LIST_LENGTH`` items; later positions see more of the window.
* :func:`next_item_targets` turns a batch of windows into (targets, valid) per position;
  the last valid position of a window predicts the row's own target.
* :func:`item_cross_entropy` is the mean full-softmax CE over [positions, n_items],
  computed in chunks of positions when the logits would not fit in ``_CE_CHUNK_ELEMENTS``
  floats (the chunk's logits are recomputed in backward, never all held at once).
* :class:`SequentialTrainer` swaps the training loader for the windows (batches of
  ``max(1, train_batch_size // MAX_ITEM_LIST_LENGTH)`` windows, so ``train_batch_size``
  keeps meaning *target positions per update*, at most) and, with
  ``length_bucketing: True``, serves batches of rows of similar length in either mode
  (in this mode as many windows as fit in ``train_batch_size`` positions).

For such a model in eval mode the loss of a window equals the mean of the prefix-mode
CE losses of that window's prefixes (``tests/test_all_positions.py``): the same
objective as prefix mode, in one pass per window instead of one per target.
"""
import numpy as np
import torch
import torch.nn.functional as F
from recbole.data.dataloader import TrainDataLoader
from recbole.trainer import Trainer
from torch.nn.utils import clip_grad_norm_

from recbole_mamba.errors import ConfigError
from recbole_mamba.model.layers import check_sequence_lengths

TRAIN_MODES = ("prefix", "all_positions")

# Logit floats one CE chunk may hold (64 MB in float32); a bigger [positions, n_items]
# is split into chunks of positions.
_CE_CHUNK_ELEMENTS = 1 << 24

# Batches whose rows are sorted by length together, under length_bucketing.
_BUCKET_POOL_BATCHES = 64


def train_mode_from(config, model_name, aliases=None, causal=True, modes=TRAIN_MODES):
    """The ``train_mode`` config key, checked against ``modes``; ``aliases`` maps old names to new ones."""
    value = config["train_mode"] if config["train_mode"] is not None else "prefix"
    value = (aliases or {}).get(value, value)
    allowed = tuple(modes) + tuple(aliases or ())
    if value not in modes:
        raise ConfigError(f"train_mode={config['train_mode']!r} is not supported by {model_name}; "
                          f"use one of {', '.join(allowed)}")
    if value == "all_positions" and not causal:
        raise ConfigError(
            f"train_mode=all_positions needs a causal model, and {model_name} is not one: its backward "
            "direction at position t reads the items after t, so every position would see its own target; "
            "use train_mode=prefix"
        )
    return value


def window_rows(user_ids, max_len):
    """Rows of a prefix-augmented training set that, scored at every position, cover
    each user's targets exactly once.

    RecBole's augmentation makes one row per target, in time order per user, with the
    last ``max_len`` items as history.  Scored at every position, the row of target t
    covers targets t-max_len+1 .. t, so keeping every ``max_len``-th row counted back
    from each user's last row tiles the user's targets without overlap.
    """
    user_ids = np.asarray(user_ids)
    order = np.argsort(user_ids, kind="stable")  # rows of one user stay in time order
    sorted_ids = user_ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])  # [n_users]
    counts = np.diff(np.r_[starts, len(sorted_ids)])  # [n_users]
    rank = np.arange(len(sorted_ids)) - np.repeat(starts, counts)  # [rows]
    rows_after = np.repeat(counts, counts) - 1 - rank  # [rows]
    return np.sort(order[rows_after % max_len == 0])


def next_item_targets(item_seq, item_seq_len, pos_items):
    """Per position, the item it predicts: position t -> item t+1, the last valid
    position -> the row's target.  Returns (targets [B, L], valid [B, L])."""
    next_items = F.pad(item_seq[:, 1:], (0, 1))  # [B, L]
    next_items = next_items.scatter(1, (item_seq_len - 1).unsqueeze(1), pos_items.unsqueeze(1))  # [B, L]
    positions = torch.arange(item_seq.shape[1], device=item_seq.device)  # [L]
    valid = positions.unsqueeze(0) < item_seq_len.unsqueeze(1)  # [B, L]
    return next_items, valid


def trim_padding(item_seq, item_seq_len):
    """The batch cut to its longest row: RecBole right-pads every row to
    MAX_ITEM_LIST_LENGTH, and no output at a valid position of a right-padded causal
    model (or of BiMamba4Rec's length-aware reversal) reads the padding."""
    longest = int(item_seq_len.max()) if item_seq_len.numel() else item_seq.shape[1]
    return item_seq[:, : max(1, min(longest, item_seq.shape[1]))]


def checked_history(model, interaction):
    """(item_seq, item_seq_len) of a batch, checked (one-line errors, SPEC §7) and, with
    ``model.trim_padding``, cut to the longest row."""
    item_seq = interaction[model.ITEM_SEQ]
    item_seq_len = interaction[model.ITEM_SEQ_LEN]
    check_sequence_lengths(item_seq, item_seq_len, model.max_seq_length)
    if model.trim_padding:
        item_seq = trim_padding(item_seq, item_seq_len)
    return item_seq, item_seq_len


class _ChunkedItemCE(torch.autograd.Function):
    """Mean CE of vectors [P, d] against every item (weight [n_items, d]), in chunks of
    positions; backward recomputes each chunk's softmax."""

    @staticmethod
    def forward(ctx, vectors, weight, targets, chunk):
        total = vectors.new_zeros((), dtype=torch.float32)
        for i in range(0, vectors.shape[0], chunk):
            logits = (vectors[i : i + chunk] @ weight.T).float()  # [c, n_items]
            picked = logits.gather(1, targets[i : i + chunk, None]).squeeze(1)  # [c]
            total += (torch.logsumexp(logits, dim=1) - picked).sum()
        ctx.save_for_backward(vectors, weight, targets)
        ctx.chunk = chunk
        return (total / vectors.shape[0]).to(vectors.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        vectors, weight, targets = ctx.saved_tensors
        scale = grad_out / vectors.shape[0]
        grad_vectors = torch.empty_like(vectors)
        grad_weight = torch.zeros_like(weight)
        for i in range(0, vectors.shape[0], ctx.chunk):
            rows = vectors[i : i + ctx.chunk]  # [c, d]
            probs = torch.softmax((rows @ weight.T).float(), dim=1)  # [c, n_items]
            probs[torch.arange(rows.shape[0], device=rows.device), targets[i : i + ctx.chunk]] -= 1.0
            probs = (probs * scale).to(rows.dtype)  # dLoss/dlogits
            grad_vectors[i : i + ctx.chunk] = probs @ weight
            grad_weight.addmm_(probs.T, rows)
        return grad_vectors, grad_weight, None, None


def item_cross_entropy(vectors, weight, targets, max_elements=None):
    """Mean full-softmax CE of vectors [P, d] over all items (weight [n_items, d]);
    chunked over positions when P x n_items exceeds ``max_elements``."""
    max_elements = _CE_CHUNK_ELEMENTS if max_elements is None else max_elements
    n_items = weight.shape[0]
    if vectors.shape[0] * n_items <= max_elements:
        return F.cross_entropy(vectors @ weight.T, targets)
    chunk = max(1, max_elements // n_items)
    return _ChunkedItemCE.apply(vectors, weight, targets, chunk)


def all_positions_ce(model, interaction):
    """A causal model's CE at every valid position of a batch of windows.

    ``model`` provides ``every_position(item_seq, item_seq_len) -> [B, L, d]`` and
    ``item_embedding``.
    """
    item_seq, item_seq_len = checked_history(model, interaction)
    targets, valid = next_item_targets(item_seq, item_seq_len, interaction[model.POS_ITEM_ID])
    vectors = model.every_position(item_seq, item_seq_len)[valid]  # [P, d]
    return item_cross_entropy(vectors, model.item_embedding.weight, targets[valid])


class LengthBucketedLoader:
    """RecBole's training loader with batches of rows of similar length.

    Each epoch the rows are shuffled, cut into pools of ``_BUCKET_POOL_BATCHES``
    batches, sorted by length inside each pool, cut into batches, and the batches
    shuffled; every row is served once per epoch.  With the batch cut to its longest
    row, the model then computes little padding.  A batch holds the loader's ``step``
    rows or, with ``max_positions`` (all-positions windows), as many rows as fit in
    ``max_positions`` computed positions (rows x longest row), so an update keeps
    about the same number of targets whatever the window lengths.  Everything else
    (collation, the dataset, negative sampling) is the wrapped loader's.
    """

    def __init__(self, loader, lengths, seed, max_positions=None):
        if not loader.config["single_spec"]:
            raise ConfigError("length_bucketing is not supported in distributed training (nproc > 1) yet; "
                              "set length_bucketing=False")
        self._loader = loader
        self._lengths = np.asarray(lengths)
        self._rng = np.random.default_rng(seed)
        self._max_positions = max_positions
        self._count = len(self._cut(np.argsort(self._lengths, kind="stable")))

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def __len__(self):
        return self._count

    def _cut(self, rows):
        """Consecutive batches of ``rows`` (sorted by length)."""
        if not self._max_positions:
            step = self._loader.step
            return [rows[i : i + step] for i in range(0, len(rows), step)]
        batches, start = [], 0
        widths = self._lengths[rows]
        for end in range(1, len(rows) + 1):  # widths ascend: the batch's width is its last row's
            if end - start > 1 and (end - start) * widths[end - 1] > self._max_positions:
                batches.append(rows[start : end - 1])
                start = end - 1
        batches.append(rows[start:])
        return batches

    def batches(self):
        """Row indices of each batch of one epoch."""
        order = self._rng.permutation(len(self._lengths))
        pool = self._loader.step * _BUCKET_POOL_BATCHES
        batches = []
        for start in range(0, len(order), pool):
            rows = order[start : start + pool]
            batches += self._cut(rows[np.argsort(self._lengths[rows], kind="stable")])
        self._count = len(batches)
        return [batches[i] for i in self._rng.permutation(len(batches))]

    def __iter__(self):
        for rows in self.batches():
            yield self._loader.collate_fn(rows.tolist())


class SequentialTrainer(Trainer):
    """RecBole's Trainer; trains on windows under ``train_mode: all_positions``, on
    length-bucketed batches under ``length_bucketing: True``, step by step through session
    lanes under ``train_mode: session_parallel``
    (:mod:`recbole_mamba.model.session_parallel`), and builds ``learner: adagrad_momentum``
    (:mod:`recbole_mamba.optim`)."""

    def _build_optimizer(self, **kwargs):
        learner = kwargs.get("learner", self.learner)
        if str(learner).lower() != "adagrad_momentum":
            return super()._build_optimizer(**kwargs)
        from recbole_mamba.optim import AdagradMomentum

        if kwargs.get("weight_decay", self.weight_decay):
            raise ConfigError("learner=adagrad_momentum has no weight decay; set weight_decay=0")
        momentum = self.config["momentum"] if self.config["momentum"] is not None else 0.0
        eps = self.config["adagrad_eps"] if self.config["adagrad_eps"] is not None else 1e-6
        sparse_momentum = self.config["sparse_momentum"] or "exact"
        return AdagradMomentum(kwargs.get("params", self.model.parameters()),
                               kwargs.get("learning_rate", self.learning_rate), momentum, eps, sparse_momentum)

    def fit(self, train_data, *args, **kwargs):
        mode = getattr(self.model, "train_mode", "prefix")
        if mode == "session_parallel":
            self._session_lanes = None  # built from this train_data on the first epoch
            return super().fit(train_data, *args, **kwargs)
        all_positions = mode == "all_positions"
        if all_positions:
            train_data = self._window_loader(train_data)
        if self.config["length_bucketing"]:
            dataset = train_data._dataset
            lengths = dataset.inter_feat[self.model.ITEM_SEQ_LEN].numpy()
            max_positions = self.config["train_batch_size"] if all_positions else None
            train_data = LengthBucketedLoader(train_data, lengths, self.config["seed"], max_positions)
        return super().fit(train_data, *args, **kwargs)

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        if getattr(self.model, "train_mode", "prefix") != "session_parallel":
            return super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        return self._session_parallel_epoch(train_data)

    def _session_parallel_epoch(self, train_data):
        """One pass over the session lanes: one optimizer step per time step, the model's
        state carried between steps and zeroed where a lane starts a new sequence."""
        from recbole_mamba.model.session_parallel import SessionLanes, carried_state, session_sequences

        if not self.config["single_spec"]:
            raise ConfigError("train_mode=session_parallel is not supported in distributed training (nproc > 1); "
                              "use train_mode=all_positions")
        if getattr(self, "_session_lanes", None) is None:
            inter = train_data._dataset.inter_feat
            model = self.model
            items, offsets = session_sequences(inter[model.USER_ID].numpy(), inter[model.ITEM_SEQ].numpy(),
                                               inter[model.ITEM_SEQ_LEN].numpy(), inter[model.ITEM_ID].numpy())
            self._session_lanes = SessionLanes(items, offsets, self.config["train_batch_size"])
        self.model.train()
        total_loss, state = 0.0, None
        for inputs, targets, carry, fresh in self._session_lanes:
            inputs, targets = inputs.to(self.device), targets.to(self.device)
            if state is None:
                state = self.model.init_state(len(inputs), self.device)
            else:
                state = carried_state(state, carry, fresh)
            self.optimizer.zero_grad()
            loss, state = self.model.session_parallel_loss(inputs, targets, state, self._session_lanes.batch_size)
            self._check_nan(loss)
            loss.backward()
            if self.clip_grad_norm:
                clip_grad_norm_(self.model.parameters(), **self.clip_grad_norm)
            self.optimizer.step()
            total_loss += loss.item()
        return total_loss

    def _window_loader(self, train_data):
        dataset = train_data._dataset
        max_len = self.config["MAX_ITEM_LIST_LENGTH"]
        rows = window_rows(dataset.inter_feat[dataset.uid_field].numpy(), max_len)
        windows = dataset.copy(dataset.inter_feat[torch.from_numpy(rows)])
        # train_batch_size keeps meaning "target positions per update" (at most): a
        # window holds up to MAX_ITEM_LIST_LENGTH of them
        batch_size = self.config["train_batch_size"]
        self.config["train_batch_size"] = max(1, batch_size // max_len)
        try:
            return TrainDataLoader(self.config, windows, train_data._sampler, shuffle=self.config["shuffle"])
        finally:
            self.config["train_batch_size"] = batch_size

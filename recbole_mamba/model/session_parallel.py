"""Session-parallel mini-batches (Hidasi et al. 2016, section 3.1.1) and the official
GRU4Rec's negative sampling, for ``train_mode: session_parallel``.

A recurrent model can carry its state from one event to the next, so it never needs to
re-read a history.  Session-parallel training does that: ``train_batch_size`` lanes each hold
one training sequence (a session, or a user's history).  At every step each lane gives its
current item as input and its next item as target, the model steps its state once, and the
optimizer takes one step.  The state is carried to the next step (detached: back-propagation
through one step, as the official code does) and set to zero when a lane starts a new
sequence; a lane whose sequence has no next item takes the next unused sequence, and when none
is left it closes and the batch shrinks (a step's loss is then scaled by open lanes /
``train_batch_size``: every event weighs the same).  Sequences enter the lanes in the order of their first
training row (time order for the session converter's files), the same order every epoch.

Relation to ``train_mode: all_positions``: both use every training target once per epoch and
predict the next item at each position.  ``all_positions`` runs whole windows through the model
in one pass (back-propagation through the window, one update per batch of windows, any causal
model); ``session_parallel`` steps all lanes one event at a time (one update per event,
truncated back-propagation, a recurrent model's state) -- the official GRU4Rec's training.

Pieces, each small and tested on its own:

* :func:`session_sequences`: the training sequences back from RecBole's prefix rows;
* :func:`event_item_counts`: how often each item occurs in training (the popularity the
  sampler and the ``logq`` correction use);
* :class:`SessionLanes`: the lane schedule of one epoch;
* :class:`SampleCache`: extra negatives drawn ~ count^``sample_alpha`` in large blocks in advance
  and served ``n_sample`` at a time.
"""
import numpy as np
import torch


def session_sequences(user_ids, item_seq, item_seq_len, targets):
    """Every training sequence in full: (items [E], offsets [S + 1]), numpy int64.

    RecBole's training rows of one user (session) are the prefixes of its sequence in time
    order, each with its next item as target: the sequence is the first row's history followed
    by every row's target.  Sequences come in the order of their first row.
    """
    user_ids = np.asarray(user_ids)
    item_seq, item_seq_len, targets = (np.asarray(a) for a in (item_seq, item_seq_len, targets))
    order = np.argsort(user_ids, kind="stable")  # rows of one user stay in time order
    sorted_ids = user_ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])  # [S]
    ends = np.r_[starts[1:], len(order)]  # [S]
    first_rows = order[starts]  # [S]
    sequences = []
    for s in np.argsort(first_rows, kind="stable"):
        first = first_rows[s]
        history = item_seq[first, : item_seq_len[first]]
        sequences.append(np.concatenate([history, targets[order[starts[s] : ends[s]]]]))
    offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(s) for s in sequences])
    items = np.concatenate(sequences).astype(np.int64) if sequences else np.zeros(0, dtype=np.int64)
    return items, offsets


def event_item_counts(inter_feat, item_field, item_list_field, length_field, n_items):
    """How often each item occurs in the training data [n_items]: every target, plus the first
    item of each sequence (the history of its length-1 row), i.e. every event.  Data without
    history fields (not yet augmented) count the targets only."""
    targets = torch.as_tensor(np.asarray(inter_feat[item_field]), dtype=torch.long)  # [rows]
    counts = torch.bincount(targets, minlength=n_items)  # [n_items]
    columns = getattr(inter_feat, "columns", None)
    if columns is not None and item_list_field in columns and length_field in columns:
        lengths = torch.as_tensor(np.asarray(inter_feat[length_field]))  # [rows]
        first_items = torch.as_tensor(np.asarray(inter_feat[item_list_field]))[lengths == 1, 0].long()
        counts += torch.bincount(first_items, minlength=n_items)
    return counts


class SessionLanes:
    """The session-parallel schedule of one epoch over sequences ``items[offsets[s]:offsets[s+1]]``.

    Iterating yields, per step, ``(inputs [n], targets [n], carry, fresh)``: lane i feeds
    ``inputs[i]`` and predicts ``targets[i]``; its state is row ``carry[i]`` of the previous
    step's state (``carry`` is None when every lane continues in place), set to zero where
    ``fresh`` is True (None: no lane starts a sequence).  The first step has every lane fresh.
    """

    def __init__(self, items, offsets, batch_size):
        self.items = torch.as_tensor(items, dtype=torch.long)
        self.starts = np.asarray(offsets[:-1], dtype=np.int64)
        self.ends = np.asarray(offsets[1:], dtype=np.int64)
        if np.any(self.ends - self.starts < 2):
            raise ValueError("session-parallel training needs sequences of at least 2 items")
        self.batch_size = int(batch_size)

    def __len__(self):
        """Steps in one epoch (computed by running the schedule)."""
        return sum(1 for _ in self._positions())

    def _positions(self):
        """Per step: (positions [n] of the lanes' current items, carry, fresh) as numpy arrays."""
        n_sequences = len(self.starts)
        lane_sequence = np.arange(min(self.batch_size, n_sequences))  # [n]
        position = self.starts[lane_sequence].copy()  # [n]
        next_sequence = len(lane_sequence)
        carry, fresh = None, np.ones(len(lane_sequence), dtype=bool)
        while len(lane_sequence):
            yield position, carry, fresh
            position = position + 1
            done = position + 1 >= self.ends[lane_sequence]  # [n] no next item left
            if not done.any():
                carry, fresh = None, None
                continue
            finished = np.flatnonzero(done)
            refill = finished[: max(0, n_sequences - next_sequence)]  # in lane order, as many as are left
            lane_sequence[refill] = np.arange(next_sequence, next_sequence + len(refill))
            position[refill] = self.starts[lane_sequence[refill]]
            next_sequence += len(refill)
            open_lanes = ~done
            open_lanes[refill] = True
            fresh = np.zeros(len(done), dtype=bool)
            fresh[refill] = True
            carry = np.flatnonzero(open_lanes)  # [n'] rows of the old state that go on
            lane_sequence, position, fresh = lane_sequence[carry], position[carry], fresh[carry]
            if len(carry) == len(done):
                carry = None

    def __iter__(self):
        for position, carry, fresh in self._positions():
            position = torch.from_numpy(position)
            yield (self.items[position], self.items[position + 1],
                   None if carry is None else torch.from_numpy(carry),
                   None if fresh is None else torch.from_numpy(fresh))


def carried_state(state, carry, fresh):
    """The state [layers, n, h] each lane starts a step from (see :class:`SessionLanes`); detached."""
    state = state.detach()
    if carry is not None:
        state = state[:, carry.to(state.device)]  # [layers, n', h]
    if fresh is not None:
        state = state.masked_fill(fresh.to(state.device)[None, :, None], 0.0)
    return state


class SampleCache:
    """Items drawn with probability ``distribution`` (zero-probability items never), by inverse
    CDF, ``n_sample`` per call to :meth:`next`.  Draws ``max(1, cache_size // n_sample)`` batches
    at a time: one large draw costs far less than thousands of small ones."""

    def __init__(self, distribution, n_sample, cache_size):
        cdf = torch.cumsum(distribution.double(), dim=0)  # [n_items]
        self.cdf = cdf / cdf[-1]
        self.n_sample = int(n_sample)
        self.batches = max(1, int(cache_size) // max(1, self.n_sample))
        self.store, self.pointer = None, 0

    def draw(self, count):
        """``count`` independent draws [count]."""
        uniform = torch.rand(count, dtype=torch.float64, device=self.cdf.device)  # [count] in [0, 1)
        # the first item whose cumulative probability exceeds u: item i with probability p_i
        return torch.searchsorted(self.cdf, uniform, right=True).clamp_(max=len(self.cdf) - 1)

    def next(self):
        """The next ``n_sample`` items [n_sample]."""
        if self.store is None or self.pointer == self.batches:
            self.store = self.draw(self.batches * self.n_sample).view(self.batches, self.n_sample)
            self.pointer = 0
        sample = self.store[self.pointer]
        self.pointer += 1
        return sample

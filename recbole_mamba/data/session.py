"""Session data (the official GRU4Rec format) to RecBole benchmark files, sessions as users.

Input: ``SessionId<TAB>ItemId<TAB>Time`` files with a header (YooChoose / RSC15 as the
official GRU4Rec code and session-rec prepare them), already split by time into train and
test, or the raw Diginetica ``train-item-views.csv`` (``sessionId;userId;itemId;timeframe;
eventdate``), split here by time: sessions that start in the last ``test_days`` days are
the test set, as the official preprocessing does.

Output (``<out_dir>/<dataset>/``): ``<dataset>.train.inter``, ``.valid.inter`` and
``.test.inter`` with one row per predicted position, ``session_id:token``,
``item_id_list:token_seq`` (the session so far, oldest first) and ``item_id:token`` (the
next item), read by RecBole's ``benchmark_filename``; and ``<dataset>.yaml``, the protocol
as a RecBole config (``--config_files``).  That is the official evaluation: the next item at
every position of every test session, test events whose item never occurs in training
dropped first and then sessions left with fewer than 2 events, full ranking, Recall@20 and
MRR@20 by RecBole's evaluators (ties: RecBole's top-k, not the official code's conservative
count, so a tie can only help here).

Validation: ``valid`` names a held-out file of the same format (e.g. session-rec's
``train_tr`` / ``train_valid`` split for tuning).  Without one, the valid rows are the last
``monitor_sessions`` training sessions, which stay in training too: a monitor for a run of a
fixed number of epochs as the official code trains, not a held-out set.
"""
import collections
import datetime
import os

import yaml

from recbole_mamba.data.atomic import Summary, dataset_file, iter_lines, write_atomic
from recbole_mamba.errors import DatasetError

COLUMNS = [("session_id", "token"), ("item_id_list", "token_seq"), ("item_id", "token")]


def read_sessions(path, progress=True):
    """``{session: [(time, position, item), ...]}`` from a SessionId/ItemId/Time file."""
    sessions = collections.defaultdict(list)
    header = None
    for number, line in iter_lines(path, "utf-8", progress):
        fields = line.rstrip("\n").split("\t")
        if header is None:
            header = [f.strip() for f in fields]
            missing = {"SessionId", "ItemId", "Time"} - set(header)
            if missing:
                raise DatasetError(f"{path} line 1: expected a SessionId<TAB>ItemId<TAB>Time header, got "
                                   f"{line.strip()[:80]!r}; missing {sorted(missing)}")
            s, i, t = (header.index(k) for k in ("SessionId", "ItemId", "Time"))
            continue
        if not line.strip():
            continue
        try:
            time = float(fields[t])
            sessions[fields[s]].append((time, len(sessions[fields[s]]), fields[i]))
        except (IndexError, ValueError):
            raise DatasetError(f"{path} line {number}: expected SessionId<TAB>ItemId<TAB>Time with a number as "
                               f"Time, got {line.strip()[:80]!r}") from None
    return sessions


def read_diginetica(path, test_days=7, progress=True):
    """Diginetica's ``train-item-views.csv`` -> (train, test) session dicts, split by time."""
    sessions = collections.defaultdict(list)
    header = None
    for number, line in iter_lines(path, "utf-8", progress):
        fields = line.rstrip("\n").split(";")
        if header is None:
            header = fields
            if not {"sessionId", "itemId", "timeframe", "eventdate"} <= set(header):
                raise DatasetError(f"{path} line 1: expected Diginetica's sessionId;userId;itemId;timeframe;eventdate "
                                   f"header, got {line.strip()[:80]!r}")
            s, i, f, d = (header.index(k) for k in ("sessionId", "itemId", "timeframe", "eventdate"))
            continue
        try:
            day = datetime.datetime.strptime(fields[d], "%Y-%m-%d").replace(tzinfo=datetime.timezone.utc)
            time = day.timestamp() + float(fields[f]) / 1000.0
        except (IndexError, ValueError):
            raise DatasetError(f"{path} line {number}: expected sessionId;userId;itemId;timeframe;eventdate, "
                               f"got {line.strip()[:80]!r}") from None
        sessions[fields[s]].append((time, len(sessions[fields[s]]), fields[i]))
    starts = {k: min(e[0] for e in v) for k, v in sessions.items()}
    split = max(starts.values()) - test_days * 86400
    train = {k: v for k, v in sessions.items() if starts[k] <= split}
    test = {k: v for k, v in sessions.items() if starts[k] > split}
    return train, test


def ordered(sessions):
    """Items of each session in time order (file order among equal times), the sessions in the
    order of their first event (as the official GRU4Rec feeds them to session-parallel training;
    files sorted by session id are not in that order)."""
    by_start = sorted(sessions.items(), key=lambda kv: min(kv[1])[:2])  # stable: file order among ties
    return {k: [item for _, _, item in sorted(v)] for k, v in by_start}


def position_rows(sessions, max_len=None):
    """(session, 'prefix items', next item) for every position >= 1 of every session."""
    for session, items in sessions.items():
        for t in range(1, len(items)):
            start = 0 if max_len is None else max(0, t - max_len)
            yield session, " ".join(items[start:t]), items[t]


def limit_to_training_items(sessions, train_items):
    """The official test filter: unseen items dropped, then sessions shorter than 2."""
    dropped = collections.Counter()
    kept = {}
    for session, items in sessions.items():
        known = [i for i in items if i in train_items]
        dropped["test event with an item never seen in training"] += len(items) - len(known)
        if len(known) < 2:
            dropped["test session with fewer than 2 events left"] += 1
            continue
        kept[session] = known
    return kept, dropped


def protocol_config(dataset, max_len):
    return {
        "benchmark_filename": ["train", "valid", "test"],
        "USER_ID_FIELD": "session_id", "ITEM_ID_FIELD": "item_id",
        "load_col": {"inter": ["session_id", "item_id_list", "item_id"]},
        "alias_of_item_id": ["item_id_list"],
        "MAX_ITEM_LIST_LENGTH": max_len,
        "user_inter_num_interval": None, "item_inter_num_interval": None,
        "eval_args": {"order": "TO", "mode": "full", "group_by": None},
        "metrics": ["Recall", "MRR"], "topk": [20], "valid_metric": "MRR@20",
        "train_neg_sample_args": None,
    }


def convert(train_path, test_path, dataset, out_dir="dataset", valid_path=None, max_len=None, fmt="rsc15",
            test_days=7, monitor_sessions=1000, progress=True):
    if fmt == "diginetica":
        train, test = (ordered(s) for s in read_diginetica(train_path, test_days, progress))
    else:
        train, test = ordered(read_sessions(train_path, progress)), ordered(read_sessions(test_path, progress))
    dropped = collections.Counter()
    short = [k for k, v in train.items() if len(v) < 2]
    for k in short:
        del train[k]
    dropped["training session with fewer than 2 events"] += len(short)
    train_items = {i for items in train.values() for i in items}
    test, test_dropped = limit_to_training_items(test, train_items)
    dropped.update(test_dropped)
    notes = []
    if valid_path:
        valid, valid_dropped = limit_to_training_items(ordered(read_sessions(valid_path, progress)), train_items)
        dropped.update({f"valid: {k}": v for k, v in valid_dropped.items()})
    else:
        last = list(train)[-monitor_sessions:]  # the sessions that start last
        valid = {k: train[k] for k in last}
        notes.append(f"valid = the last {len(valid):,} training sessions, kept in training too: "
                     "a monitor, not a held-out set (give --valid for one)")
    longest = max(len(v) for part in (train, valid, test) for v in part.values()) - 1
    max_len = int(max_len or longest)
    paths = []
    for part, sessions in (("train", train), ("valid", valid), ("test", test)):
        paths.append(write_atomic(dataset_file(out_dir, dataset, f"{part}.inter"), COLUMNS,
                                  position_rows(sessions, max_len), progress))
    config_path = dataset_file(out_dir, dataset, "yaml")
    with open(config_path, "w", encoding="utf-8") as f:
        f.write(f"# The official GRU4Rec evaluation on {dataset} (python -m recbole_mamba.data session)\n")
        yaml.safe_dump(protocol_config(dataset, max_len), f, sort_keys=False)
    predictions = {part: sum(len(v) - 1 for v in s.values()) for part, s in (("train", train), ("valid", valid),
                                                                             ("test", test))}
    notes.append("positions to predict: " + ", ".join(f"{k} {v:,}" for k, v in predictions.items()))
    notes.append(f"protocol config: {config_path}")
    if max_len < longest:
        notes.append(f"item_id_list keeps the last {max_len} items of longer sessions (longest {longest + 1})")
    sessions_all = list(train) + list(test)
    items_all = [i for part in (train, test) for v in part.values() for i in v]
    users = [k for k, v in list(train.items()) + list(test.items()) for _ in v]
    summary = Summary.of_interactions(dataset, paths + [config_path], users, items_all, dropped, notes)
    summary.predictions = predictions
    summary.sessions = len(sessions_all)
    return summary

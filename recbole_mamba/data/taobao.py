"""Taobao UserBehavior (Alibaba Tianchi 649): ``user_id,item_id,category_id,behavior_type,
timestamp`` without a header, behaviours pv/buy/cart/fav, 2017-11-25..12-03 (UTC+8).

:func:`read_user_behavior` is the one parser: the sequential converter here and the CTR
converter (:mod:`recbole_mamba.data.ctr`) both build on it.
"""
import collections

import numpy as np
import pandas as pd

from recbole_mamba.data.atomic import Summary, dataset_file, iter_lines, write_atomic

BEHAVIORS = ("pv", "buy", "cart", "fav")
# [2017-11-25 00:00, 2017-12-04 00:00) Beijing time, the dataset's documented window
TIME_WINDOW = (1511539200, 1512316800)
COLUMNS = [("user_id", "token"), ("item_id", "token"), ("category_id", "token"),
           ("behavior_type", "token"), ("timestamp", "float")]


def parse_behavior_line(line, behaviors=BEHAVIORS, time_window=TIME_WINDOW):
    """One CSV line -> (user, item, category, behavior, timestamp) with int ids, or a drop reason."""
    parts = line.split(",")
    if len(parts) != 5:
        return "truncated or extra fields" if len(parts) < 5 else "extra fields"
    user, item, category, behavior, timestamp = (p.strip() for p in parts)
    try:
        user, item, category, timestamp = int(user), int(item), int(category), int(timestamp)
    except ValueError:
        return "non-integer id or timestamp"
    if behavior not in BEHAVIORS:
        return "unknown behavior_type"
    if behavior not in behaviors:
        return f"behavior {behavior} not selected"
    if time_window is not None and not time_window[0] <= timestamp < time_window[1]:
        return "timestamp outside 2017-11-25..12-03"
    return user, item, category, behavior, timestamp


def read_user_behavior(path, behaviors=BEHAVIORS, time_window=TIME_WINDOW, progress=True):
    """Clean rows of a UserBehavior CSV and why the others were skipped.

    Returns ``(frame, dropped)``: a DataFrame with int64 user_id, item_id, category_id,
    timestamp and a ``behavior_type`` string column, in file order; and a Counter of
    skipped lines by reason (a cut-off last line counts as "truncated or extra fields").
    ``time_window=None`` keeps rows outside the documented 9 days.
    """
    behaviors = tuple(behaviors)
    unknown = set(behaviors) - set(BEHAVIORS)
    if unknown:
        from recbole_mamba.errors import ConfigError

        raise ConfigError(f"behaviors {sorted(unknown)} are not Taobao behaviours; choose from {', '.join(BEHAVIORS)}")
    columns = collections.defaultdict(list)
    dropped = collections.Counter()
    names = ("user_id", "item_id", "category_id", "behavior_type", "timestamp")
    for _, line in iter_lines(path, "utf-8", progress):
        if not line.strip():
            continue
        parsed = parse_behavior_line(line, behaviors, time_window)
        if isinstance(parsed, str):
            dropped[parsed] += 1
            continue
        for name, value in zip(names, parsed):
            columns[name].append(value)
    frame = pd.DataFrame({
        name: (np.asarray(columns[name], dtype=object if name == "behavior_type" else np.int64))
        for name in names
    })
    return frame, dropped


def convert(path, dataset="taobao", out_dir="dataset", behaviors=BEHAVIORS, time_window=TIME_WINDOW,
            progress=True):
    """Interactions for the sequential models: every selected behaviour is one event."""
    frame, dropped = read_user_behavior(path, behaviors, time_window, progress)
    duplicated = frame.duplicated(keep="first").to_numpy()
    if duplicated.any():
        dropped["exact duplicate row"] += int(duplicated.sum())
        frame = frame[~duplicated]
    rows = zip(frame["user_id"], frame["item_id"], frame["category_id"], frame["behavior_type"], frame["timestamp"])
    out = write_atomic(dataset_file(out_dir, dataset, "inter"), COLUMNS, rows, progress)
    counts = frame["behavior_type"].value_counts()
    notes = ["behaviours kept: " + ", ".join(f"{b} {counts.get(b, 0):,}" for b in behaviors)]
    return Summary.of_interactions(dataset, [out], frame["user_id"].to_numpy(), frame["item_id"].to_numpy(),
                                   dropped, notes)

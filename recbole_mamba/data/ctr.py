"""Labelled CTR rows with the user's history, for MDAF and DCNv3: from a behaviour log
(Taobao UserBehavior, :func:`convert`) or from ratings (:func:`convert_ratings`).

Each positive row is a user's first behaviour on an item (so the target item is
never in its own history); its history is the user's behaviours strictly before it
in time, the last ``history`` of them, oldest first.  Each positive gets
``neg_ratio`` negatives: items the user never touched at any time, drawn from the
other behaviours of the *same day* (so by that day's popularity), with the same user,
time and history.  Drawing from the same day matters: with a pool over the whole log,
negatives are mostly items already known from training while test positives are
mostly new items, and every model learns a rule that flips on the test split (AUC
below 0.5 for DCNv3 here).  ``--popularity-alpha`` reweights the day's distinct
items by count^alpha (0 = uniform over them).  RecBole then splits the rows by time
(props/dataset/taobao-ctr.yaml: order TO).
"""
import argparse
import collections
import os
import sys

import numpy as np
from tqdm import tqdm

from recbole_mamba.data.atomic import Summary, copy_atomic, dataset_file, format_number, write_atomic
from recbole_mamba.data.taobao import BEHAVIORS, TIME_WINDOW, read_user_behavior
from recbole_mamba.errors import ConfigError, RecboleMambaError

INTER_COLUMNS = [("user_id", "token"), ("item_id", "token"), ("label", "float"),
                 ("timestamp", "float"), ("item_id_list", "token_seq")]
ITEM_COLUMNS = [("item_id", "token"), ("category_id", "token")]


def build_ctr_rows(events, history=50, neg_ratio=1, popularity_alpha=None, seed=2020, progress=None):
    """events: DataFrame (user_id, item_id, category_id, timestamp), any order.

    Returns (rows, item_categories, counts): rows is a list of
    (user, item, label, timestamp, history_items) and item_categories maps every item
    of the log to its category.
    """
    rng = np.random.default_rng(seed)
    events = events.sort_values(["user_id", "timestamp"], kind="stable")
    item_categories = dict(zip(events["item_id"], events["category_id"]))
    pools = _daily_pools(events, popularity_alpha)
    counts = {"positives": 0, "negatives": 0, "no earlier behaviour": 0, "repeat of an earlier item": 0}
    rows = []
    groups = events.groupby("user_id", sort=False)
    for user, frame in (progress(groups, total=groups.ngroups) if progress else groups):
        items = frame["item_id"].to_numpy()
        times = frame["timestamp"].to_numpy()
        touched = set(items.tolist())
        seen = set()
        for j in range(len(items)):
            item = items[j]
            if item in seen:
                counts["repeat of an earlier item"] += 1
                continue
            seen.add(item)
            k = int(np.searchsorted(times, times[j], side="left"))  # events strictly earlier
            if k == 0:
                counts["no earlier behaviour"] += 1
                continue
            past = items[max(0, k - history):k].tolist()
            rows.append((user, item, 1, times[j], past))
            counts["positives"] += 1
            pool, weights = pools[day_of(times[j])]
            for negative in _sample_negatives(rng, pool, weights, touched, neg_ratio):
                rows.append((user, negative, 0, times[j], past))
                counts["negatives"] += 1
    return rows, item_categories, counts


def day_of(timestamp):
    """Calendar day in Beijing time (UTC+8), the dataset's clock."""
    return int((timestamp + 8 * 3600) // 86400)


def _daily_pools(events, popularity_alpha):
    """day -> (items, weights): that day's behaviours, as negatives are drawn from them."""
    pools = {}
    days = (events["timestamp"].to_numpy() + 8 * 3600) // 86400
    for day, frame in events.groupby(days):
        if popularity_alpha is None:  # one entry per behaviour: the day's popularity
            pools[int(day)] = (frame["item_id"].to_numpy(), None)
        else:
            popularity = frame["item_id"].value_counts()
            weights = popularity.to_numpy().astype(np.float64) ** popularity_alpha
            pools[int(day)] = (popularity.index.to_numpy(), weights / weights.sum())
    return pools


def _sample_negatives(rng, pool, weights, touched, count):
    """``count`` distinct items from ``pool`` that are not in ``touched``."""
    chosen = []
    for _ in range(1000):
        for item in rng.choice(pool, size=2 * count + 4, p=weights).tolist():
            if item not in touched and item not in chosen:
                chosen.append(item)
                if len(chosen) == count:
                    return chosen
    return chosen  # the day has fewer than ``count`` items this user never touched


def convert(path, dataset="taobao-ctr", out_dir="dataset", history=50, neg_ratio=1,
            popularity_alpha=None, behaviors=BEHAVIORS, time_window=TIME_WINDOW, max_users=None,
            seed=2020, progress=True):
    """UserBehavior CSV -> ``<out_dir>/<dataset>/<dataset>.inter`` + ``.item`` for MDAF / DCNv3."""
    if history < 1 or neg_ratio < 1:
        raise ConfigError(f"history={history} and neg_ratio={neg_ratio} must both be >= 1")
    events, dropped = read_user_behavior(path, behaviors, time_window, progress)
    if max_users:
        keep = events["user_id"].drop_duplicates().iloc[:max_users]
        events = events[events["user_id"].isin(keep)]
    bar = (lambda groups, total: tqdm(groups, total=total, desc="users", leave=False)) if progress else None
    rows, item_categories, counts = build_ctr_rows(events, history, neg_ratio, popularity_alpha, seed, bar)
    inter_path = write_atomic(
        dataset_file(out_dir, dataset, "inter"), INTER_COLUMNS,
        ((u, i, label, t, " ".join(map(str, past))) for u, i, label, t, past in rows), progress,
    )
    item_path = write_atomic(dataset_file(out_dir, dataset, "item"), ITEM_COLUMNS, item_categories.items(), progress)
    not_rows = collections.Counter(dropped)
    not_rows["target: no earlier behaviour"] = counts["no earlier behaviour"]
    not_rows["target: repeat of an earlier item"] = counts["repeat of an earlier item"]
    summary = Summary(
        dataset=dataset, files=[inter_path, item_path], users=int(events["user_id"].nunique()),
        items=len(item_categories), interactions=0, dropped=not_rows,
        notes=[f"users {int(events['user_id'].nunique()):,}  items {len(item_categories):,}  "
               f"rows {len(rows):,}",
               f"{counts['positives']:,} positive + {counts['negatives']:,} negative rows "
               f"(history <= {history}, {neg_ratio} negative(s) per positive, "
               f"{'same-day popularity' if popularity_alpha is None else f'same-day count^{popularity_alpha}'} negatives)"],
    )
    return summary


def build_rating_ctr_rows(ratings, threshold=4, history=50):
    """Sequence-aware CTR rows from explicit ratings: one row per rating, label
    rating >= ``threshold``, history the items the user rated strictly earlier (the last
    ``history`` of them, oldest first, liked or not).  Ratings in the same second as
    the target are not history (their order is unknown); a user's first ratings, with
    nothing earlier, give no row.

    ratings: DataFrame (user_id, item_id, rating, timestamp).  Returns (rows, dropped):
    rows are (user, item, label, timestamp, history_items)."""
    ratings = ratings.sort_values(["user_id", "timestamp"], kind="stable")
    rows, dropped = [], 0
    for user, frame in ratings.groupby("user_id", sort=False):
        items = frame["item_id"].to_numpy()
        times = frame["timestamp"].to_numpy()
        labels = (frame["rating"].to_numpy() >= threshold).astype(int)
        for j in range(len(items)):
            k = int(np.searchsorted(times, times[j], side="left"))  # ratings strictly earlier
            if k == 0:
                dropped += 1
                continue
            rows.append((user, items[j], labels[j], times[j], items[max(0, k - history):k].tolist()))
    return rows, dropped


def read_atomic_ratings(path):
    """A RecBole .inter with user_id, item_id, rating, timestamp -> DataFrame (header types stripped)."""
    import pandas as pd

    frame = pd.read_csv(path, sep="\t", dtype=str)
    frame.columns = [c.split(":")[0] for c in frame.columns]
    missing = {"user_id", "item_id", "rating", "timestamp"} - set(frame.columns)
    if missing:
        raise ConfigError(f"{path} has no {', '.join(sorted(missing))} column(s); a rating .inter needs "
                          "user_id, item_id, rating and timestamp")
    frame["rating"] = frame["rating"].astype(float)
    frame["timestamp"] = frame["timestamp"].astype(float)
    return frame


def convert_ratings(inter_path, dataset, out_dir="dataset", threshold=4, history=50, progress=True):
    """Rating .inter (e.g. RecBole's ml-100k) -> ``<out_dir>/<dataset>/<dataset>.inter`` with
    label and ``item_id_list``; the .user / .item files next to it are copied alongside."""
    if history < 1:
        raise ConfigError(f"history={history} must be >= 1")
    ratings = read_atomic_ratings(inter_path)
    rows, dropped = build_rating_ctr_rows(ratings, threshold, history)
    inter_out = write_atomic(
        dataset_file(out_dir, dataset, "inter"), INTER_COLUMNS,
        ((u, i, label, format_number(t), " ".join(past)) for u, i, label, t, past in rows), progress,
    )
    files = [inter_out]
    stem = os.path.splitext(inter_path)[0]
    for suffix in ("user", "item"):
        if os.path.isfile(f"{stem}.{suffix}"):
            files.append(copy_atomic(f"{stem}.{suffix}", dataset_file(out_dir, dataset, suffix)))
    positives = sum(r[2] for r in rows)
    return Summary(
        dataset=dataset, files=files, users=int(ratings["user_id"].nunique()), items=int(ratings["item_id"].nunique()),
        interactions=0, dropped=collections.Counter({"target: no earlier rating": dropped}),
        notes=[f"rows {len(rows):,}: {positives:,} with rating >= {threshold} (label 1), "
               f"{len(rows) - positives:,} below (label 0); history <= {history} earlier ratings"],
    )


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m recbole_mamba.data.ctr", description=__doc__.splitlines()[0])
    parser.add_argument("input", help="UserBehavior.csv (user_id,item_id,category_id,behavior_type,timestamp)")
    parser.add_argument("--dataset", default="taobao-ctr", help="dataset name (default taobao-ctr)")
    parser.add_argument("--out-dir", default="dataset", help="RecBole data_path (default ./dataset)")
    parser.add_argument("--history", type=int, default=50, help="behaviours kept per history (default 50)")
    parser.add_argument("--neg-ratio", type=int, default=1, help="negatives per positive (default 1)")
    parser.add_argument("--popularity-alpha", type=float, default=None,
                        help="weight the day's distinct items by count^alpha (default: by behaviours)")
    parser.add_argument("--behaviors", default=",".join(BEHAVIORS), help="behaviours that count (default all)")
    parser.add_argument("--max-users", type=int, default=None, help="first N users only (samples)")
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        summary = convert(
            args.input, args.dataset, args.out_dir, args.history, args.neg_ratio, args.popularity_alpha,
            [b.strip() for b in args.behaviors.split(",") if b.strip()], TIME_WINDOW, args.max_users,
            args.seed, not args.quiet,
        )
    except (RecboleMambaError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2)
    print(summary)
    return summary


if __name__ == "__main__":
    main()

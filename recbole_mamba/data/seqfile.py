"""Time-ordered sequence files (SASRec-style repos) to a RecBole ``.inter`` file.

Either one ``user item`` pair per line or one ``user item item ...`` line per user, items
in time order, no timestamps. Each row gets its position in the user's history as the
timestamp, so RecBole's time ordering (``order: TO``) keeps the file's order.
"""
import collections

from recbole_mamba.data.atomic import Summary, dataset_file, iter_lines, write_atomic

COLUMNS = [("user_id", "token"), ("item_id", "token"), ("timestamp", "float")]


def positions_from_lines(lines):
    """``(user, item, position)`` rows and drop reasons from sequence-file lines.

    Both layouts are one rule: the first token is the user, every later token an item,
    and a user's position counter runs on across lines, so pair files (one item per line)
    and per-user lines give the same rows.
    """
    next_position = collections.Counter()
    rows, dropped = [], collections.Counter()
    for line in lines:
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) == 1:
            dropped["user without items"] += 1
            continue
        user = tokens[0]
        for item in tokens[1:]:
            rows.append((user, item, next_position[user]))
            next_position[user] += 1
    return rows, dropped


def convert(path, dataset, out_dir="dataset", progress=True):
    rows, dropped = positions_from_lines(line for _, line in iter_lines(path, "utf-8", progress))
    pairs = collections.Counter((user, item) for user, item, _ in rows)
    repeats = sum(count - 1 for count in pairs.values())
    notes = ["timestamp = position in the user's sequence (the file has no times)"]
    if repeats:
        notes.append(f"{repeats:,} rows repeat an earlier (user, item) pair; kept, as in the file")
    out = write_atomic(dataset_file(out_dir, dataset, "inter"), COLUMNS, rows, progress)
    return Summary.of_interactions(dataset, [out], [r[0] for r in rows], [r[1] for r in rows], dropped, notes)

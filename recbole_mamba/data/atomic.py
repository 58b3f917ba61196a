"""What every converter shares: reading raw text with a progress bar, writing RecBole
atomic files, and the summary (users, items, interactions, dropped rows by reason).
"""
import collections
import dataclasses
import gzip
import io
import math
import os
import shutil
import zlib

import numpy as np
from tqdm import tqdm

from recbole_mamba.errors import DatasetError
from recbole_mamba.fileio import replacing

FILTER_MIN = 5  # RecBole's user/item [5,inf) filters used by the paper protocols


def open_text(path, encoding="utf-8"):
    """Text stream of ``path``, gunzipped when the file starts with gzip's magic bytes."""
    with open(path, "rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    raw = gzip.open(path, "rb") if gzipped else open(path, "rb")
    return io.TextIOWrapper(raw, encoding=encoding, newline=None)


def iter_lines(path, encoding="utf-8", progress=True, desc=None):
    """``(line_number, line without newline)`` for every line, with a bar over bytes read."""
    total = os.path.getsize(path)
    with open_text(path, encoding) as stream, tqdm(
        total=total, unit="B", unit_scale=True, desc=desc or os.path.basename(path),
        disable=not progress, leave=False,
    ) as bar:
        raw = stream.buffer
        # the compressed position is the honest progress for .gz; for plain text both agree
        source = getattr(raw, "fileobj", None) or raw
        last = 0
        number = 0
        lines = iter(stream)
        while True:
            try:
                line = next(lines)
            except StopIteration:
                break
            except UnicodeDecodeError as error:  # decoded in blocks: the line is known to within one block
                raise DatasetError(
                    f"{os.path.basename(path)}: not valid {encoding} text after line {number} "
                    f"(byte {error.object[error.start:error.start + 1]!r}: {error.reason}); "
                    f"re-save the file as {encoding}") from None
            except (EOFError, OSError, zlib.error) as error:  # a truncated or corrupt .gz
                raise DatasetError(
                    f"{os.path.basename(path)}: the compressed stream is truncated or corrupt after line {number} "
                    f"({type(error).__name__}: {error}); download or copy the file again") from None
            number += 1
            if number % 8192 == 0:
                position = source.tell()
                bar.update(position - last)
                last = position
            yield number, line.rstrip("\r\n")
        bar.update(total - last)


# drop reason of a rating row whose rating or timestamp is no finite number (also what
# a CSV header line gives)
NOT_A_NUMBER = "non-numeric or non-finite rating or timestamp"


def finite_float(text):
    """float(text), or ValueError for NaN and infinities (RecBole cannot order by them)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"non-finite number {text!r}")
    return value


def clean_token(value):
    """A token as an atomic file can hold it: tabs and newlines would split the row."""
    return value.replace("\t", " ").replace("\n", " ").strip()


def write_atomic(path, columns, rows, progress=True):
    """Write ``rows`` (tuples) under the header ``columns`` = [(name, type), ...].

    The file appears whole or not at all: it is written beside ``path`` and renamed over it,
    so a RecBole run reading ``path`` meanwhile (another benchmark process, a Ray trial)
    sees the old file or the new one, and a conversion that fails half-way keeps the old."""
    with replacing(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write("\t".join(f"{name}:{kind}" for name, kind in columns) + "\n")
        for row in tqdm(rows, desc=f"writing {os.path.basename(path)}", unit="rows",
                        disable=not progress, leave=False):
            f.write("\t".join(map(str, row)) + "\n")
    return path


def copy_atomic(source, path):
    """``shutil.copyfile`` that, like ``write_atomic``, replaces ``path`` in one step."""
    with replacing(path) as tmp:
        shutil.copyfile(source, tmp)
    return path


def format_number(value):
    """Timestamps and ratings as RecBole writes them: integers without '.0'."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def kcore_counts(users, items, min_user=FILTER_MIN, min_item=FILTER_MIN):
    """(users, items, interactions) left by RecBole's iterated [min,inf) user/item filters.

    RecBole drops users and items below the threshold and repeats until nothing changes;
    the fixed point is the unique largest subset where every user has >= ``min_user`` rows
    and every item >= ``min_item`` rows, so plain repeated peeling gives the same counts.
    Rows count with multiplicity (repeated user-item pairs count each time), as in RecBole.
    """
    _, user_codes = np.unique(np.asarray(users), return_inverse=True)
    _, item_codes = np.unique(np.asarray(items), return_inverse=True)
    keep = np.ones(len(user_codes), dtype=bool)
    while True:
        user_count = np.bincount(user_codes[keep], minlength=user_codes.max(initial=-1) + 1)
        item_count = np.bincount(item_codes[keep], minlength=item_codes.max(initial=-1) + 1)
        still = keep & (user_count[user_codes] >= min_user) & (item_count[item_codes] >= min_item)
        if still.sum() == keep.sum():
            break
        keep = still
    return (len(np.unique(user_codes[keep])), len(np.unique(item_codes[keep])), int(keep.sum()))


@dataclasses.dataclass
class Summary:
    """What a converter did; ``str(summary)`` is the report it prints."""

    dataset: str
    files: list
    users: int = 0
    items: int = 0
    interactions: int = 0
    filtered: tuple = None  # (users, items, interactions) after the [5,inf) filters
    dropped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    notes: list = dataclasses.field(default_factory=list)

    @classmethod
    def of_interactions(cls, dataset, files, users, items, dropped, notes=()):
        return cls(dataset=dataset, files=list(files), users=len(set(users)), items=len(set(items)),
                   interactions=len(users), filtered=kcore_counts(users, items) if len(users) else (0, 0, 0),
                   dropped=collections.Counter(dropped), notes=list(notes))

    def __str__(self):
        lines = [f"{self.dataset}: wrote " + ", ".join(self.files)]
        if self.interactions:
            lines.append(f"  users {self.users:,}  items {self.items:,}  interactions {self.interactions:,}")
            u, i, n = self.filtered
            lines.append(f"  after RecBole's [{FILTER_MIN},inf) user/item filters: "
                         f"users {u:,}  items {i:,}  interactions {n:,}")
        total = sum(self.dropped.values())
        if total:
            reasons = ", ".join(f"{reason}: {count:,}" for reason, count in self.dropped.most_common())
            lines.append(f"  dropped {total:,} rows ({reasons})")
        else:
            lines.append("  dropped 0 rows")
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)


def dataset_file(out_dir, dataset, suffix):
    """``<out_dir>/<dataset>/<dataset>.<suffix>``: where RecBole looks with data_path=out_dir."""
    return os.path.join(out_dir, dataset, f"{dataset}.{suffix}")


INTER_COLUMNS = [("user_id", "token"), ("item_id", "token"), ("rating", "float"), ("timestamp", "float")]


def write_ratings(out_dir, dataset, rows, dropped, progress=True, notes=()):
    """Write ``(user, item, rating, timestamp)`` rows (exact duplicates dropped) as ``.inter``."""
    dropped = collections.Counter(dropped)
    unique = []
    seen = set()
    for row in rows:
        if row in seen:
            dropped["exact duplicate row"] += 1
            continue
        seen.add(row)
        unique.append(row)
    path = write_atomic(dataset_file(out_dir, dataset, "inter"), INTER_COLUMNS,
                        ((u, i, format_number(r), format_number(t)) for u, i, r, t in unique), progress)
    return Summary.of_interactions(dataset, [path], [r[0] for r in unique], [r[1] for r in unique],
                                   dropped, notes)

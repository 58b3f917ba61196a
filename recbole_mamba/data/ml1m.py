"""MovieLens-1M raw files (``ratings.dat``, ``movies.dat``, ``users.dat``; ``::``-separated,
latin-1) to RecBole atomic files ``ml-1m.inter`` / ``.item`` / ``.user``.

Columns follow RecBole's own ml-1m: ``.item`` = item_id, movie_title (token_seq),
release_year, genre (token_seq); ``.user`` = user_id, age, gender, occupation, zip_code.
"""
import collections
import os
import re

from recbole_mamba.data.atomic import (
    NOT_A_NUMBER, Summary, clean_token, dataset_file, finite_float, iter_lines, write_atomic, write_ratings,
)

ENCODING = "latin-1"
_TITLE_YEAR = re.compile(r"^(.*)\s+\((\d{4})\)\s*$")


def split_title_year(title):
    """``'Toy Story (1995)'`` -> ``('Toy Story', '1995')``; no year -> ``(title, '')``."""
    match = _TITLE_YEAR.match(title)
    return (match.group(1), match.group(2)) if match else (title.strip(), "")


def parse_rating_line(line):
    """``UserID::MovieID::Rating::Timestamp`` -> (user, item, rating, timestamp) or a drop reason."""
    parts = line.split("::")
    if len(parts) != 4:
        return "wrong number of '::' fields"
    user, item, rating, timestamp = (p.strip() for p in parts)
    if not user or not item:
        return "empty user or item id"
    try:
        return user, item, finite_float(rating), finite_float(timestamp)
    except ValueError:
        return NOT_A_NUMBER


def _read(path, parse, progress):
    rows, dropped = [], collections.Counter()
    for _, line in iter_lines(path, ENCODING, progress):
        if not line.strip():
            continue
        parsed = parse(line)
        if isinstance(parsed, str):
            dropped[f"{os.path.basename(path)}: {parsed}"] += 1
        else:
            rows.append(parsed)
    return rows, dropped


def _parse_movie(line):
    parts = line.split("::")
    if len(parts) != 3:
        return "wrong number of '::' fields"
    item, title, genres = parts
    title, year = split_title_year(title)
    return clean_token(item), clean_token(title), year, " ".join(clean_token(g) for g in genres.split("|") if g)


def _parse_user(line):
    parts = line.split("::")
    if len(parts) != 5:
        return "wrong number of '::' fields"
    user, gender, age, occupation, zip_code = (clean_token(p) for p in parts)
    return user, age, gender, occupation, zip_code


def convert(raw_dir, out_dir="dataset", dataset="ml-1m", progress=True):
    """Convert whichever of the three raw files ``raw_dir`` holds; ``ratings.dat`` makes ``.inter``."""
    paths = {name: os.path.join(raw_dir, name) for name in ("ratings.dat", "movies.dat", "users.dat")}
    present = {name: path for name, path in paths.items() if os.path.isfile(path)}
    if not present:
        from recbole_mamba.errors import DatasetError

        raise DatasetError(f"none of ratings.dat, movies.dat, users.dat is in {raw_dir}; "
                           "point ml1m at the unzipped ml-1m folder from grouplens.org")
    dropped, files, notes = collections.Counter(), [], []
    summary = None
    if "ratings.dat" in present:
        rows, bad = _read(present["ratings.dat"], parse_rating_line, progress)
        summary = write_ratings(out_dir, dataset, rows, bad, progress)
        files, dropped = summary.files, summary.dropped
    else:
        notes.append(f"no ratings.dat in {raw_dir}: no {dataset}.inter written, RecBole needs one")
    if "movies.dat" in present:
        movies, bad = _read(present["movies.dat"], _parse_movie, progress)
        dropped.update(bad)
        files.append(write_atomic(dataset_file(out_dir, dataset, "item"),
                                  [("item_id", "token"), ("movie_title", "token_seq"),
                                   ("release_year", "token"), ("genre", "token_seq")], movies, progress))
        notes.append(f"{len(movies):,} movies")
    if "users.dat" in present:
        users, bad = _read(present["users.dat"], _parse_user, progress)
        dropped.update(bad)
        files.append(write_atomic(dataset_file(out_dir, dataset, "user"),
                                  [("user_id", "token"), ("age", "token"), ("gender", "token"),
                                   ("occupation", "token"), ("zip_code", "token")], users, progress))
        notes.append(f"{len(users):,} user profiles")
    if summary is None:
        summary = Summary(dataset=dataset, files=files)
    summary.files, summary.dropped = files, dropped
    summary.notes.extend(notes)
    return summary

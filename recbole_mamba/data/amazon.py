"""Amazon review data (McAuley lab) to a RecBole ``.inter`` file.

Two inputs: the ratings CSV (2014 ``ratings_<Category>.csv``: user,item,rating,timestamp;
2018 ``<Category>.csv`` puts item first: ``--columns item,user,rating,timestamp``), comma-
or tab-separated, an optional header line skipped; and the 5-core review JSON lines
(2014 ``reviews_<Category>_5.json`` and 2018 ``<Category>_5.json``), gzipped or not:
reviewerID, asin, overall, unixReviewTime.
"""
import collections
import json

from recbole_mamba.data.atomic import NOT_A_NUMBER, clean_token, finite_float, iter_lines, write_ratings

CSV_COLUMNS = ("user", "item", "rating", "timestamp")


def parse_columns(spec):
    """``'item,user,rating,timestamp'`` -> positions of (user, item, rating, timestamp)."""
    names = [name.strip() for name in spec.split(",")]
    if sorted(names) != sorted(CSV_COLUMNS):
        from recbole_mamba.errors import ConfigError

        raise ConfigError(f"--columns {spec!r} must name user, item, rating, timestamp once each, "
                          "e.g. item,user,rating,timestamp for the 2018 ratings CSV")
    return tuple(names.index(name) for name in CSV_COLUMNS)


def parse_csv_line(line, positions, separator):
    """One ratings row -> (user, item, rating, timestamp) or a drop reason."""
    parts = line.split(separator)
    if len(parts) != 4:
        return "wrong number of fields"
    user, item, rating, timestamp = (parts[p].strip().strip('"') for p in positions)
    if not user or not item:
        return "empty user or item id"
    try:
        return clean_token(user), clean_token(item), finite_float(rating), finite_float(timestamp)
    except ValueError:
        return NOT_A_NUMBER


def parse_json_line(line):
    """One review (JSON object) -> (user, item, rating, timestamp) or a drop reason."""
    try:
        review = json.loads(line)
    except ValueError:
        return "invalid JSON"
    if not isinstance(review, dict):
        return "invalid JSON"
    try:
        user, item = str(review["reviewerID"]), str(review["asin"])
        rating, timestamp = finite_float(review["overall"]), finite_float(review["unixReviewTime"])
    except KeyError:
        return "missing reviewerID/asin/overall/unixReviewTime"
    except (TypeError, ValueError):
        return "non-numeric or non-finite overall or unixReviewTime"
    return clean_token(user), clean_token(item), rating, timestamp


def read_reviews(path, columns="user,item,rating,timestamp", progress=True):
    """Rows and drop reasons of an Amazon ratings CSV or review JSON-lines file."""
    positions = parse_columns(columns)
    rows, dropped = [], collections.Counter()
    parse = separator = None
    for number, line in iter_lines(path, "utf-8", progress):
        if not line.strip():
            continue
        if parse is None:
            if line.lstrip().startswith("{"):
                parse = parse_json_line
            else:
                separator = "\t" if "\t" in line else ","
                parse = lambda text: parse_csv_line(text, positions, separator)  # noqa: E731
                first = parse(line)
                if isinstance(first, str):  # a header line (or a broken first row)
                    if first != NOT_A_NUMBER:
                        dropped[first] += 1
                    continue
                rows.append(first)
                continue
        parsed = parse(line)
        if isinstance(parsed, str):
            dropped[parsed] += 1
        else:
            rows.append(parsed)
    return rows, dropped


def convert(path, dataset, out_dir="dataset", columns="user,item,rating,timestamp", progress=True):
    rows, dropped = read_reviews(path, columns, progress)
    return write_ratings(out_dir, dataset, rows, dropped, progress)

"""Missing and malformed dataset files: one-line errors instead of a download attempt
that hangs offline or a pandas traceback without a line number.

:func:`install` (called by :func:`recbole_mamba.compat.apply`) wraps two methods of
RecBole's ``Dataset``: ``_load_data`` checks that the atomic files exist before RecBole
tries to download them (it still downloads when its server answers within seconds), and
``_load_feat`` checks each file's header and rows before pandas reads it.
"""
import functools
import logging
import os
import socket
import threading
import urllib.parse

from recbole_mamba.errors import DatasetError

FEATURE_TYPES = ("token", "token_seq", "float", "float_seq")
PROBE_TIMEOUT_S = 3.0

# how to make each of the project's datasets; {out} is the data_path
CONVERTERS = {
    "ml-1m": "python -m recbole_mamba.data ml1m <folder with ratings.dat movies.dat users.dat> --out-dir {out}",
    "amazon-video-games": ("python -m recbole_mamba.data seqfile <SASRec data/Video.txt> "
                           "--dataset amazon-video-games --out-dir {out}"),
    "taobao": "python -m recbole_mamba.data taobao <UserBehavior.csv> --out-dir {out}",
}
GENERIC_CONVERTER = "python -m recbole_mamba.data {{ml1m,amazon,seqfile,taobao}} <raw file> --dataset {name} --out-dir {out}"


def converter_command(dataset, out_dir):
    """The command that writes ``out_dir/<dataset>/<dataset>.inter``."""
    template = CONVERTERS.get(dataset, GENERIC_CONVERTER)
    return template.format(out=out_dir or ".", name=dataset)


def server_answers(url, timeout=PROBE_TIMEOUT_S):
    """Whether ``url``'s host accepts a TCP connection within ``timeout`` seconds, DNS included.

    The probe runs in a daemon thread because name resolution has no timeout of its own.
    """
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    answered = []

    def probe():
        try:
            socket.create_connection((parts.hostname, port), timeout=timeout).close()
            answered.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answered)


def missing_dataset_message(dataset, dataset_path, token, url=None):
    """One line: the folder looked in, the files expected, how to make them."""
    folder = os.path.abspath(dataset_path)
    download = f"; RecBole could not reach {url} to download it (offline?)" if url else ""
    command = converter_command(dataset, os.path.dirname(os.path.normpath(dataset_path)))
    return (f"dataset {dataset!r} not found: {folder} has no {token}.inter (expected {token}.inter, "
            f"optionally {token}.user and {token}.item){download}; create it with `{command}` "
            f"or set data_path to the folder that holds {token}/")


def parse_header(line, path, separator="\t"):
    """``[(field, type), ...]`` of an atomic file's first line, or a DatasetError naming the fix."""
    name = os.path.basename(path)
    if not line.strip():
        raise DatasetError(f"{name} line 1: the header is empty; the first line names the columns, "
                           "e.g. user_id:token<TAB>item_id:token<TAB>timestamp:float")
    columns = []
    for entry in line.split(separator):
        if entry.count(":") != 1:
            hint = ("the header looks comma-separated; atomic files separate columns with a tab "
                    "(field_separator)") if "," in entry else "write each column as name:type, e.g. user_id:token"
            raise DatasetError(f"{name} line 1: header entry {entry!r} is not name:type; {hint}")
        field, kind = entry.split(":")
        if kind not in FEATURE_TYPES:
            raise DatasetError(f"{name} line 1: column {field!r} has type {kind!r}; use one of "
                               f"{', '.join(FEATURE_TYPES)} (ids are token)")
        columns.append((field, kind))
    return columns


def _decode(raw, encoding, name, line_number):
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError:
        raise DatasetError(f"{name} line {line_number}: not valid {encoding} text; re-save the file "
                           f"as {encoding} or set encoding in the config") from None


def _check_float(value, kind):
    values = value.split() if kind == "float_seq" else ([value] if value.strip() else [])
    for item in values:
        float(item)


def check_atomic_file(path, separator="\t", encoding="utf-8", wanted=None, unwanted=None, required=(),
                      source="inter"):
    """Raise a DatasetError (file, line, cause, fix) if RecBole cannot read ``path`` correctly.

    ``wanted``: the columns load_col asks for (None = all); each must be in the header.
    ``required``: id fields (USER_ID_FIELD, ...) the file must have. Rows must have as many
    fields as the header; loaded float columns must hold numbers. Token columns may hold
    anything: non-numeric ids are fine.
    """
    name = os.path.basename(path)
    encoding = encoding or "utf-8"
    # bytes, decoded line by line: a decoding error then names its own line
    with open(path, "rb") as f:
        header = _decode(f.readline(), encoding, name, 1).rstrip("\r\n")
        columns = parse_header(header, path, separator)
        names = [field for field, _ in columns]
        for field in sorted(set(wanted or ())):
            if field not in names:
                raise DatasetError(f"{name}: no column {field!r} (header: {', '.join(names)}); add it to the "
                                   f"file or remove it from load_col['{source}']")
        for field, setting in required:
            if field and field not in names and (wanted is None or field in wanted):
                raise DatasetError(f"{name}: no column {field!r} for {setting} (header: {', '.join(names)}); "
                                   f"rename the column or set {setting}")
        floats = [(i, field, kind) for i, (field, kind) in enumerate(columns)
                  if kind.startswith("float") and (wanted is None or field in wanted)
                  and not (unwanted and field in unwanted)]
        width = len(columns)
        for line_number, raw in enumerate(f, start=2):
            line = _decode(raw, encoding, name, line_number).rstrip("\r\n")
            if not line.strip():
                continue  # pandas skips blank lines too
            parts = line.split(separator)
            if len(parts) != width:
                raise DatasetError(
                    f"{name} line {line_number}: {len(parts)} fields but the header has {width}; "
                    f"each row needs exactly {width} tab-separated values (a stray tab or a missing value?)")
            for index, field, kind in floats:
                try:
                    _check_float(parts[index], kind)
                except ValueError:
                    raise DatasetError(
                        f"{name} line {line_number}: column {field!r} is {kind} but holds "
                        f"{parts[index][:40]!r}; fix the value or declare the column as token") from None
    return columns


def _recbole_url(dataset_object):
    try:
        return dataset_object._get_download_url("url", allow_none=True)
    except (OSError, ValueError):
        return None


def _wrap_load_data(original):
    @functools.wraps(original)
    def _load_data(self, token, dataset_path):
        inter = os.path.join(dataset_path, f"{token}.inter")
        if self.benchmark_filename_list is None and not os.path.isfile(inter):
            url = _recbole_url(self)
            # RecBole downloads only when the folder is absent; let it when its server answers
            if url is None or os.path.exists(dataset_path) or not server_answers(url):
                raise DatasetError(missing_dataset_message(self.dataset_name, dataset_path, token, url))
        return original(self, token, dataset_path)

    _load_data._recbole_mamba = True
    return _load_data


def _wrap_load_feat(original):
    from recbole.utils import FeatureSource

    @functools.wraps(original)
    def _load_feat(self, filepath, source):
        load_col, unload_col = self._get_load_and_unload_col(source)
        if load_col != set():
            value = source.value if isinstance(source, FeatureSource) else source
            required = {
                "inter": [(self.uid_field, "USER_ID_FIELD"), (self.iid_field, "ITEM_ID_FIELD")],
                "user": [(self.uid_field, "USER_ID_FIELD")],
                "item": [(self.iid_field, "ITEM_ID_FIELD")],
            }.get(value, [])
            columns = check_atomic_file(filepath, self.config["field_separator"], self.config["encoding"],
                                        load_col, unload_col, required, value)
            _warn_unloaded_time(self, value, [field for field, _ in columns], load_col)
        return original(self, filepath, source)

    _load_feat._recbole_mamba = True
    return _load_feat


def _warn_unloaded_time(dataset, source, names, load_col):
    # SPEC §5 pitfall: without a dataset YAML only user_id/item_id load, and order TO
    # silently becomes file order
    time_field = dataset.config["TIME_FIELD"]
    order = (dataset.config["eval_args"] or {}).get("order")
    if source == "inter" and order == "TO" and time_field in names and load_col is not None \
            and time_field not in load_col:
        logging.getLogger().warning(
            f"{dataset.dataset_name}.inter has a {time_field!r} column that load_col does not load, so "
            f"order TO follows file order; add {time_field} to load_col['inter'] (a dataset YAML)")


def install():
    """Wrap RecBole's Dataset loaders once; idempotent."""
    from recbole.data.dataset import Dataset

    if not getattr(Dataset._load_data, "_recbole_mamba", False):
        Dataset._load_data = _wrap_load_data(Dataset._load_data)
    if not getattr(Dataset._load_feat, "_recbole_mamba", False):
        Dataset._load_feat = _wrap_load_feat(Dataset._load_feat)

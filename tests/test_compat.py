"""RecBole 1.2.1 on both supported stacks: the numpy 2 / pandas 3 / Ray fixes in
recbole_mamba.compat, checked by what RecBole loads from real ml-100k files. On the
2023-era stack the same assertions hold through RecBole's own code, so they say the two
stacks give the same data."""
import os

import numpy as np
import pandas as pd
import pytest
import recbole

from recbole_mamba import compat

ML100K = os.path.join(os.path.dirname(recbole.__file__), "dataset_example", "ml-100k")


def _build(tmp_path, name, model, config_dict):
    from recbole.config import Config
    from recbole.data import create_dataset

    config = Config(model=model, dataset=name, config_dict={"data_path": str(tmp_path), "state": "WARNING",
                                                            "show_progress": False, **config_dict})
    dataset = create_dataset(config)
    dataset.build()  # feature frames become Interactions, as models see them
    return dataset


def test_config_builds_and_numpy_names_recbole_uses_resolve():
    from recbole.config import Config

    Config(model="Mamba4Rec", dataset="ml-100k")
    # RecBole's metrics and dataset code use these old names; numpy 2 has none of them natively
    assert np.float is np.float64 and np.int is np.int_ and np.bool is np.bool_
    assert np.zeros(2, dtype=np.float).dtype == np.float64


def _missing_values_copy(tmp_path):
    """ml-100k with MovieLens' own missing values put back: item 267 has no release date
    (RecBole's file says 'unkonwn'), and items whose only genre is 'unknown' have none."""
    folder = tmp_path / "ml-100k-missing"
    folder.mkdir()
    lines = open(os.path.join(ML100K, "ml-100k.item"), encoding="utf-8").read().splitlines()
    out = ["item_id:token\trelease_year:float\tclass:token_seq"]
    for line in lines[1:]:
        item, _, year, genres = line.split("\t")
        out.append("\t".join([item, "" if not year.isdigit() else year, "" if genres == "unknown" else genres]))
    (folder / "ml-100k-missing.item").write_text("\n".join(out) + "\n", encoding="utf-8")
    inter = open(os.path.join(ML100K, "ml-100k.inter"), encoding="utf-8").read().splitlines()
    (folder / "ml-100k-missing.inter").write_text("\n".join(inter) + "\n", encoding="utf-8")
    years = [float(row.split("\t")[1]) for row in out[1:] if row.split("\t")[1]]
    no_genre = [row.split("\t")[0] for row in out[1:] if not row.split("\t")[2]]
    return years, no_genre


def test_missing_float_gets_the_mean_and_empty_token_seq_loads(tmp_path):
    years, no_genre = _missing_values_copy(tmp_path)
    assert "267" in no_genre and len(no_genre) == 2  # 267 and 1373 in ml-100k
    dataset = _build(tmp_path, "ml-100k-missing", "FM", {
        "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"],
                     "item": ["item_id", "release_year", "class"]},
        "threshold": {"rating": 4}, "normalize_all": False})
    year = dataset.item_feat["release_year"].numpy()
    assert not np.isnan(year).any()
    item = dataset.token2id("item_id", "267")
    # RecBole's _fill_nan: a missing float is the mean of the column as loaded
    assert year[item] == pytest.approx(np.mean(years), rel=1e-6)
    genres = dataset.item_feat["class"].numpy()
    assert (genres[item] == 0).all()  # an empty sequence: all padding
    toy_story = dataset.token2id("item_id", "1")
    names = {dataset.id2token("class", int(t)) for t in genres[toy_story] if t}
    assert names == {"Animation", "Children's", "Comedy"}


def test_pre_split_benchmark_files_get_per_row_item_length(tmp_path):
    """``benchmark_filename`` files with a ready item_id_list: RecBole computes item_length
    with Series.agg(len), which pandas 3 turned into the number of rows."""
    frame = pd.read_csv(os.path.join(ML100K, "ml-100k.inter"), sep="\t")
    frame.columns = [c.split(":")[0] for c in frame.columns]
    frame = frame.sort_values(["user_id", "timestamp"], kind="stable")
    folder = tmp_path / "ml-100k-split"
    folder.mkdir()
    header = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
    rows = {"train": [], "valid": [], "test": []}
    for user, items in list(frame.groupby("user_id")["item_id"])[:60]:
        items = [str(i) for i in items]
        for t in range(1, len(items)):
            part = "test" if t == len(items) - 1 else "valid" if t == len(items) - 2 else "train"
            rows[part].append(f"{user}\t{' '.join(items[max(0, t - 10):t])}\t{items[t]}")
    for part, lines in rows.items():
        (folder / f"ml-100k-split.{part}.inter").write_text(header + "\n".join(lines) + "\n", encoding="utf-8")
    dataset = _build(tmp_path, "ml-100k-split", "Mamba4Rec", {
        "benchmark_filename": ["train", "valid", "test"], "MAX_ITEM_LIST_LENGTH": 10,
        "load_col": {"inter": ["user_id", "item_id_list", "item_id"]}, "alias_of_item_id": ["item_id_list"],
        "user_inter_num_interval": None, "item_inter_num_interval": None})
    lengths = dataset.inter_feat["item_length"].numpy()
    histories = dataset.inter_feat["item_id_list"].numpy()
    assert len(set(lengths.tolist())) > 1  # not one number for every row
    assert (lengths == (histories != 0).sum(axis=1)).all()
    assert lengths.max() == 10 and lengths.min() == 1


def test_elementwise_len_agg_is_scoped():
    series = pd.Series([np.arange(2), np.arange(3)])
    with compat.elementwise_len_agg():
        assert series.agg(len).tolist() == [2, 3]
    assert pd.Series.agg is not None and series.agg(np.concatenate).tolist() == [0, 1, 0, 1, 2]


def test_tune_api_names_the_installed_ray():
    ray = pytest.importorskip("ray")
    config = compat.tune_run_config(name="x", storage_path="/tmp", max_failures=0)
    assert config.failure_config.max_failures == 0 and config.name == "x"
    major, minor = (int(p) for p in ray.__version__.split(".")[:2])
    module = compat._tune_context_module()
    if (major, minor) >= (2, 41):
        from ray import tune

        assert module is tune
    elif (major, minor) <= (2, 6):
        assert module is None  # ray.air.session


def test_missing_recbole_is_one_line(monkeypatch):
    import importlib.util

    from recbole_mamba.errors import MissingDependencyError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "recbole" else real(name, *a))
    with pytest.raises(MissingDependencyError) as error:
        compat.require_recbole()
    assert "pip install --no-deps recbole==1.2.1" in str(error.value) and "\n" not in str(error.value)

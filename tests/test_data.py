"""Converters to RecBole atomic files, on real data: the samples in dataset_atomic/,
ml-100k from RecBole's wheel, and ../shared/data when present."""
import collections
import gzip
import json
import os
import subprocess
import sys

import pytest
import recbole
import recbole_mamba  # noqa: F401  (registers models, installs the dataset checks)
from conftest import REPO, TINY, shared_path
from recbole_mamba.data import amazon, kcore_counts, ml1m, read_user_behavior, seqfile, taobao
from recbole_mamba.data.atomic import dataset_file, write_atomic

SAMPLES = os.path.join(REPO, "dataset_atomic")
AVG_SAMPLE = os.path.join(SAMPLES, "amazon-video-games", "amazon-video-games.inter")
TAOBAO_SAMPLE = os.path.join(SAMPLES, "raw", "taobao", "UserBehavior_head.csv")
ML100K = os.path.join(os.path.dirname(recbole.__file__), "dataset_example", "ml-100k", "ml-100k.inter")


def read_atomic(path):
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        return header, [line.rstrip("\n").split("\t") for line in f]


def load(dataset, data_path, **extra):
    """RecBole's own loading (with the plugin's dataset YAML) of a converted dataset."""
    from recbole.config import Config
    from recbole.data import create_dataset

    config = Config(model="Mamba4Rec", dataset=dataset, config_dict={**TINY, "data_path": data_path, **extra})
    return config, create_dataset(config)


def counts(dataset):
    """(users, items, interactions) of a loaded RecBole dataset, padding excluded."""
    return dataset.user_num - 1, dataset.item_num - 1, len(dataset.inter_feat)


def train_one_epoch(config, dataset):
    from recbole.data import data_preparation
    from recbole.utils import get_model, get_trainer, init_seed

    init_seed(config["seed"], config["reproducibility"])
    train, valid, test = data_preparation(config, dataset)
    model = get_model(config["model"])(config, train.dataset)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    trainer.fit(train, valid, saved=False)
    return trainer.evaluate(test, load_best_model=False)


def sample_sequences():
    """The sample's rows as {user: [items in time order]} (real SASRec Games users)."""
    _, rows = read_atomic(AVG_SAMPLE)
    sequences = collections.defaultdict(list)
    for user, item, position in sorted(rows, key=lambda r: (int(r[0]), float(r[2]))):
        sequences[user].append(item)
    return sequences


# --- pure parts -------------------------------------------------------------------

def test_kcore_counts_match_recbole_filters():
    # RecBole's own iterated [5,inf) filters on the sample give the converter's numbers
    _, rows = read_atomic(AVG_SAMPLE)
    expected = kcore_counts([r[0] for r in rows], [r[1] for r in rows])
    _, dataset = load("amazon-video-games", SAMPLES)
    assert counts(dataset) == expected
    assert kcore_counts(["u"] * 4, ["i"] * 4) == (0, 0, 0)


def test_sequence_layouts_give_the_same_positions():
    sequences = sample_sequences()
    per_user = [f"{user} {' '.join(items)}" for user, items in sequences.items()]
    pairs = [f"{user} {item}" for user, items in sequences.items() for item in items]
    rows_a, dropped_a = seqfile.positions_from_lines(per_user)
    rows_b, dropped_b = seqfile.positions_from_lines(pairs + ["", "42"])
    assert rows_a == rows_b and not dropped_a and dropped_b == {"user without items": 1}
    assert [r for r in rows_a if r[0] == "1"][:3] == [("1", sequences["1"][0], 0), ("1", sequences["1"][1], 1),
                                                      ("1", sequences["1"][2], 2)]


def test_title_year_and_rating_lines():
    assert ml1m.split_title_year("Toy Story (1995)") == ("Toy Story", "1995")
    assert ml1m.split_title_year("City of Lost Children, The (1995) ") == ("City of Lost Children, The", "1995")
    assert ml1m.split_title_year("Untitled") == ("Untitled", "")
    assert ml1m.parse_rating_line("1::1193::5::978300760") == ("1", "1193", 5.0, 978300760.0)
    assert ml1m.parse_rating_line("1::1193::5") == "wrong number of '::' fields"
    assert ml1m.parse_rating_line("1::1193::five::978300760") == "non-numeric or non-finite rating or timestamp"
    assert ml1m.parse_rating_line("1::1193::5::nan") == "non-numeric or non-finite rating or timestamp"


# --- converters -------------------------------------------------------------------

def test_seqfile_converter_keeps_order_and_trains(tmp_path):
    sequences = sample_sequences()
    source = tmp_path / "Video.txt"
    source.write_text("".join(f"{u} {i}\n" for u, items in sequences.items() for i in items))
    summary = seqfile.convert(str(source), "amazon-video-games", str(tmp_path / "out"), progress=False)
    header, rows = read_atomic(dataset_file(str(tmp_path / "out"), "amazon-video-games", "inter"))
    assert header == ["user_id:token", "item_id:token", "timestamp:float"]
    assert summary.interactions == len(rows) == sum(map(len, sequences.values()))
    config, dataset = load("amazon-video-games", str(tmp_path / "out"))
    assert "timestamp" in dataset.inter_feat  # the pitfall of SPEC §5: the time field survives
    # RecBole's time ordering gives back the file's order for every user
    feat = dataset.inter_feat.sort_values(["user_id", "timestamp"], kind="stable")
    users = dataset.id2token("user_id", feat["user_id"].to_numpy())
    items = dataset.id2token("item_id", feat["item_id"].to_numpy())
    first_user = users[0]
    kept = [item for user, item in zip(users, items) if user == first_user]
    assert kept == [item for item in sequences[first_user] if item in set(kept)]
    result = train_one_epoch(config, dataset)
    assert 0 <= result["ndcg@10"] <= 1


def test_ml1m_converter_round_trips_real_ratings(tmp_path):
    # ml-100k's real ratings written in ML-1M's '::' layout come back unchanged
    _, original = read_atomic(ML100K)
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "ratings.dat").write_text("".join("::".join(r) + "\n" for r in original), encoding="latin-1")
    summary = ml1m.convert(str(raw), str(tmp_path / "out"), "ml-1m", progress=False)
    header, rows = read_atomic(dataset_file(str(tmp_path / "out"), "ml-1m", "inter"))
    assert header == ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
    assert sorted(map(tuple, rows)) == sorted(map(tuple, original))
    assert (summary.users, summary.items, summary.interactions) == (943, 1682, 100000)
    _, dataset = load("ml-1m", str(tmp_path / "out"))
    assert "timestamp" in dataset.inter_feat and len(dataset.inter_feat) == summary.filtered[2]


def test_rewriting_an_atomic_file_replaces_it_in_one_step(tmp_path):
    # a reader during the rewrite (a second benchmark process loading the same dataset)
    # sees the whole old file, and a rewrite that fails half-way keeps it
    header, original = read_atomic(ML100K)
    columns = [tuple(field.split(":")) for field in header]
    path = dataset_file(str(tmp_path), "ml-100k", "inter")
    write_atomic(path, columns, original[:1000], progress=False)
    before = open(path, encoding="utf-8").read()
    seen_meanwhile = []

    def rows_then_fail():
        for i, row in enumerate(original):
            if i == 500:
                seen_meanwhile.append(open(path, encoding="utf-8").read())
            if i == 2000:
                raise OSError("disk full")
            yield row

    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, columns, rows_then_fail(), progress=False)
    assert seen_meanwhile == [before]
    assert open(path, encoding="utf-8").read() == before
    assert os.listdir(os.path.dirname(path)) == ["ml-100k.inter"]  # no temporary file left
    write_atomic(path, columns, original, progress=False)
    assert read_atomic(path) == (header, original)


def test_ml1m_converter_on_the_grouplens_files(tmp_path):
    raw = shared_path("ml-1m", "raw")
    summary = ml1m.convert(raw, str(tmp_path), "ml-1m", progress=False)
    assert summary.dropped == {} and "no ratings.dat" in str(summary)
    _, items = read_atomic(dataset_file(str(tmp_path), "ml-1m", "item"))
    _, users = read_atomic(dataset_file(str(tmp_path), "ml-1m", "user"))
    assert len(items) == 3883 and len(users) == 6040
    assert items[0] == ["1", "Toy Story", "1995", "Animation Children's Comedy"]
    assert any("é" in row[1] for row in items)  # latin-1 read, UTF-8 written
    assert users[0] == ["1", "1", "F", "10", "48067"]


def test_amazon_converter_csv_json_and_gzip(tmp_path):
    _, original = read_atomic(ML100K)
    original = original[:3000]
    csv_2018 = tmp_path / "Video_Games.csv"  # 2018 ratings CSV: item first, no header
    csv_2018.write_text("".join(f"{i},{u},{r},{t}\n" for u, i, r, t in original) + "broken,row\n")
    reviews = tmp_path / "Video_Games_5.json.gz"
    with gzip.open(reviews, "wt") as f:
        for u, i, r, t in original:
            f.write(json.dumps({"reviewerID": u, "asin": i, "overall": float(r), "unixReviewTime": int(t),
                                "reviewText": "tab\there"}) + "\n")
        f.write('{"reviewerID": "A1", "asin": "B2"}\n{not json\n')
    rows_csv, dropped_csv = amazon.read_reviews(str(csv_2018), "item,user,rating,timestamp", progress=False)
    rows_json, dropped_json = amazon.read_reviews(str(reviews), progress=False)
    expected = [(u, i, float(r), float(t)) for u, i, r, t in original]
    assert rows_csv == expected and dropped_csv == {"wrong number of fields": 1}
    assert rows_json == expected
    assert dropped_json == {"invalid JSON": 1, "missing reviewerID/asin/overall/unixReviewTime": 1}
    summary = amazon.convert(str(reviews), "amazon-json", str(tmp_path / "out"), progress=False)
    assert summary.interactions == 3000 and sum(summary.dropped.values()) == 2


def test_amazon_converter_on_recbole_subset(tmp_path):
    path = shared_path("amazon_video_games", "recbole_subset", "Amazon_Video_Games.inter")
    summary = amazon.convert(path, "amazon-subset", str(tmp_path), progress=False)
    assert (summary.users, summary.items, summary.interactions) == (794, 6626, 35000)
    assert summary.dropped == {"exact duplicate row": 2341}
    _, dataset = load("amazon-subset", str(tmp_path), load_col={"inter": ["user_id", "item_id", "timestamp"]},
                      user_inter_num_interval="[5,inf)", item_inter_num_interval="[5,inf)")
    assert counts(dataset) == summary.filtered


def test_seqfile_converter_on_sasrec_games(tmp_path):
    path = shared_path("amazon_video_games", "sasrec_games_2014", "Video.txt")
    summary = seqfile.convert(path, "amazon-video-games", str(tmp_path), progress=False)
    assert (summary.users, summary.items, summary.interactions) == (31013, 23715, 287107)
    _, dataset = load("amazon-video-games", str(tmp_path))
    assert counts(dataset) == summary.filtered == (24303, 10672, 231780)


def test_read_user_behavior_drops_the_cut_last_line(tmp_path):
    frame, dropped = read_user_behavior(TAOBAO_SAMPLE, progress=False)
    lines = open(TAOBAO_SAMPLE).read().splitlines()
    assert len(frame) + sum(dropped.values()) == len(lines)
    assert list(frame.columns) == ["user_id", "item_id", "category_id", "behavior_type", "timestamp"]
    assert frame.iloc[0].tolist() == [1, 2268318, 2520377, "pv", 1511544070]
    # cut the real file mid-line, the way the shared copy was cut
    cut = tmp_path / "UserBehavior.csv"
    cut.write_text("\n".join(lines[:100]) + "\n" + lines[100][:-11])
    frame_cut, dropped_cut = read_user_behavior(str(cut), progress=False)
    assert dropped_cut["truncated or extra fields"] == 1 and len(frame_cut) <= 100
    buys, dropped_buys = read_user_behavior(TAOBAO_SAMPLE, behaviors=["buy"], progress=False)
    assert set(buys["behavior_type"]) == {"buy"} and dropped_buys["behavior pv not selected"] > 0


def test_taobao_converter_loads_and_trains(tmp_path):
    summary = taobao.convert(TAOBAO_SAMPLE, "taobao", str(tmp_path), progress=False)
    header, _ = read_atomic(dataset_file(str(tmp_path), "taobao", "inter"))
    assert header[-1] == "timestamp:float" and "category_id:token" in header
    config, dataset = load("taobao", str(tmp_path), user_inter_num_interval="[2,inf)",
                           item_inter_num_interval="[2,inf)")
    assert "timestamp" in dataset.inter_feat and summary.users == 40
    assert 0 <= train_one_epoch(config, dataset)["ndcg@10"] <= 1


def test_taobao_on_the_shared_prefix(tmp_path):
    path = shared_path("taobao_userbehavior", "UserBehavior_head_prefix.csv")
    frame, dropped = read_user_behavior(path, progress=False)
    assert dropped == {"truncated or extra fields": 1, "timestamp outside 2017-11-25..12-03": 35}
    assert len(frame) == 84475 - 35 and frame["user_id"].nunique() == 815
    everything, dropped_all = read_user_behavior(path, time_window=None, progress=False)
    assert len(everything) == 84475 and dropped_all == {"truncated or extra fields": 1}


def test_converter_command_line(tmp_path):
    command = [sys.executable, "-m", "recbole_mamba.data", "taobao", TAOBAO_SAMPLE, "--out-dir", str(tmp_path),
               "--quiet"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "taobao: wrote" in done.stdout and "after RecBole's [5,inf)" in done.stdout
    assert "dropped 1 rows" not in done.stdout or "truncated" in done.stdout
    assert os.path.isfile(dataset_file(str(tmp_path), "taobao", "inter"))


def test_converter_error_is_one_line(tmp_path, capsys):
    from recbole_mamba.data.__main__ import main

    with pytest.raises(SystemExit) as caught:
        main(["seqfile", str(tmp_path / "nope.txt"), "--dataset", "x", "--quiet"])
    assert caught.value.code == 2
    assert capsys.readouterr().err.startswith("error: ")
    with pytest.raises(SystemExit):
        main(["ml1m", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err
    assert err.startswith("error: none of ratings.dat, movies.dat, users.dat is in") and err.count("\n") == 1

"""Session data for GRU4Rec's official protocol: the converter on a real yoochoose sample
(dataset_atomic/raw/yoochoose), its test filter, the benchmark files RecBole reads, and
GRU4Rec trained and evaluated on them with Recall@20 / MRR@20; the full yoochoose-100k
split from ../shared when present."""
import os

import pytest

from conftest import REPO, shared_path
from recbole_mamba.data.session import convert, limit_to_training_items, position_rows, read_sessions
from recbole_mamba.errors import DatasetError

RAW = os.path.join(REPO, "dataset_atomic", "raw", "yoochoose")
TRAIN = os.path.join(RAW, "yoochoose-clicks-100k_train_head.txt")
TEST = os.path.join(RAW, "yoochoose-clicks-100k_test_head.txt")


def _sessions(path):
    rows = [line.split("\t") for line in open(path, encoding="utf-8").read().splitlines()[1:]]
    sessions = {}
    for session, item, time in rows:
        sessions.setdefault(session, []).append((float(time), item))
    return {k: [i for _, i in sorted(v, key=lambda e: e[0])] for k, v in sessions.items()}


def test_every_position_of_every_test_session_with_training_items_only(tmp_path):
    summary = convert(TRAIN, TEST, "yc", str(tmp_path), progress=False)
    train, test = _sessions(TRAIN), _sessions(TEST)
    train_items = {i for v in train.values() if len(v) >= 2 for i in v}
    expected = {}
    for session, items in test.items():
        known = [i for i in items if i in train_items]
        if len(known) >= 2:
            expected[session] = known
    rows = open(tmp_path / "yc" / "yc.test.inter", encoding="utf-8").read().splitlines()
    assert rows[0] == "session_id:token\titem_id_list:token_seq\titem_id:token"
    assert len(rows) - 1 == sum(len(v) - 1 for v in expected.values()) == summary.predictions["test"]
    assert summary.dropped["test event with an item never seen in training"] == sum(
        len(v) for v in test.values()) - sum(len([i for i in v if i in train_items]) for v in test.values())
    # a row: the session so far, then the next item
    session, history, target = rows[1].split("\t")
    assert history.split() == expected[session][:1] and target == expected[session][1]
    assert os.path.exists(tmp_path / "yc" / "yc.yaml")


def test_limits_and_position_rows():
    kept, dropped = limit_to_training_items({"a": ["1", "9", "2"], "b": ["9", "1"]}, {"1", "2"})
    assert kept == {"a": ["1", "2"]} and dropped["test session with fewer than 2 events left"] == 1
    assert list(position_rows({"s": ["1", "2", "3"]}, max_len=1)) == [("s", "1", "2"), ("s", "2", "3")]


def test_bad_session_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("SessionId\tItemId\tTime\n1\t5\tnoon\n")
    with pytest.raises(DatasetError, match=r"line 2: expected SessionId<TAB>ItemId<TAB>Time") as error:
        read_sessions(str(bad), progress=False)
    assert "\n" not in str(error.value)
    header = tmp_path / "header.txt"
    header.write_text("session,item,time\n1,2,3\n")
    with pytest.raises(DatasetError, match="SessionId<TAB>ItemId<TAB>Time header"):
        read_sessions(str(header), progress=False)


def test_gru4rec_trains_and_evaluates_on_the_benchmark_files(tmp_path):
    from recbole.quick_start import run_recbole

    convert(TRAIN, TEST, "yc", str(tmp_path), progress=False)
    result = run_recbole(model="GRU4Rec", dataset="yc", config_file_list=[str(tmp_path / "yc" / "yc.yaml")],
                         config_dict={"data_path": str(tmp_path), "epochs": 2, "use_gpu": False, "seed": 2020,
                                      "show_progress": False, "state": "WARNING", "train_batch_size": 256},
                         saved=False)
    test = result["test_result"]
    assert set(test) == {"recall@20", "mrr@20"}
    assert 0 < test["mrr@20"] < test["recall@20"] < 1


def test_full_yoochoose_100k_split(tmp_path):
    folder = shared_path("session", "yoochoose-100k")  # skips without ../shared/data
    summary = convert(os.path.join(folder, "yoochoose-clicks-100k_train_full.txt"),
                      os.path.join(folder, "yoochoose-clicks-100k_test.txt"), "yoochoose-100k", str(tmp_path),
                      progress=False)
    # 13,568 test clicks in 3,416 sessions, all items seen in training (session-rec filtered them)
    assert summary.predictions["test"] == 13_568 - 3_416 and summary.items == 2_933

"""Fuzzed input to every file reader ends in a one-line error or a correct result
(bench/fuzz.py's harness with fewer cases), plus the two defects it found, pinned."""
import os
import sys

import pytest

from conftest import REPO

sys.path.insert(0, os.path.join(REPO, "bench"))
pytest.importorskip("hypothesis")


def test_fuzzed_files_give_one_line_errors_or_correct_results():
    import fuzz

    results = fuzz.fuzz(examples=25)
    assert set(results) == {"atomic_reader", "ml1m", "amazon_csv", "amazon_json", "seqfile", "taobao", "ctr",
                            "params_file"}
    for name, counts in results.items():
        assert counts["cases"] >= 20, name
        assert counts["failures"] == 0, (name, counts["failure_samples"])
        assert counts["correct_result"] + counts["one_line_error"] == counts["cases"]


def test_bad_utf8_in_a_converter_input_is_a_one_line_error(tmp_path):
    from recbole_mamba.data import amazon
    from recbole_mamba.errors import DatasetError

    path = tmp_path / "ratings.csv"
    path.write_bytes(b"u1,i1,5.0,100\n\xff\xfe,i2,4.0,101\n")
    with pytest.raises(DatasetError, match="not valid utf-8 text") as error:
        amazon.convert(str(path), "a", str(tmp_path / "out"), progress=False)
    assert "\n" not in str(error.value)


def test_non_finite_timestamps_are_dropped_not_written(tmp_path):
    from recbole_mamba.data import amazon

    path = tmp_path / "ratings.csv"
    path.write_text("u1,i1,5.0,100\nu1,i2,4.0,nan\nu2,i1,3.0,inf\nu2,i3,1.0,-5\n")
    summary = amazon.convert(str(path), "a", str(tmp_path / "out"), progress=False)
    rows = (tmp_path / "out" / "a" / "a.inter").read_text().splitlines()[1:]
    assert sorted(r.split("\t")[0] + r.split("\t")[1] for r in rows) == ["u1i1", "u2i3"]  # -5 is a real (old) time
    assert sum(summary.dropped.values()) == 2


def test_truncated_gzip_is_a_one_line_error(tmp_path):
    import gzip

    from recbole_mamba.data import seqfile
    from recbole_mamba.errors import DatasetError

    whole = gzip.compress(b"1 10 11 12\n2 10 13\n" * 50)
    path = tmp_path / "seq.txt.gz"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DatasetError, match="truncated or corrupt") as error:
        seqfile.convert(str(path), "s", str(tmp_path / "out"), progress=False)
    assert "\n" not in str(error.value)

"""DCNv3 against the authors' code (salmon1802/DCNv3), same weights and batch: logits,
Tri-BCE loss and gradients (bench/dcnv3_reference.py).  Needs their DCNv3.py in a scratch
folder outside this repository and a Python with fuxictr, named by
RECBOLE_MAMBA_DCNV3_REFERENCE (the folder) and RECBOLE_MAMBA_DCNV3_PYTHON; skipped without
them.  The last run's numbers are in bench/results/dcnv3_reference.json."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

SRC = os.environ.get("RECBOLE_MAMBA_DCNV3_REFERENCE", "")
PY = os.environ.get("RECBOLE_MAMBA_DCNV3_PYTHON", "")


@pytest.mark.skipif(not (os.path.isfile(os.path.join(SRC, "DCNv3.py")) and os.path.exists(PY)),
                    reason="the authors' DCNv3 is not set up (RECBOLE_MAMBA_DCNV3_REFERENCE, RECBOLE_MAMBA_DCNV3_PYTHON)")
def test_same_logits_loss_and_gradients_as_the_authors_code(tmp_path):
    out = tmp_path / "check.json"
    subprocess.run([sys.executable, os.path.join(REPO, "bench", "dcnv3_reference.py"), "--reference-src", SRC,
                    "--reference-python", PY, "--out", str(out)], check=True, timeout=600)
    cases = json.load(open(out))["cases"]
    assert set(cases) == {"1 head/train", "1 head/eval", "2 heads/train", "2 heads/eval"}
    for name, case in cases.items():
        assert case["input_order"] == 0, name
        for key in ("max_abs_diff_y_pred", "max_abs_diff_y_d", "max_abs_diff_y_s", "max_abs_diff_loss"):
            assert case[key] < 1e-6, (name, key, case[key])
        assert case["max_rel_diff_grads"] < 1e-5, (name, case["max_rel_diff_grads"])


def test_committed_reference_result_agrees():
    path = os.path.join(REPO, "bench", "results", "dcnv3_reference.json")
    cases = json.load(open(path))["cases"]
    assert len(cases) == 4 and all(c["max_abs_diff_loss"] < 1e-6 and c["max_rel_diff_grads"] < 1e-5
                                   for c in cases.values())

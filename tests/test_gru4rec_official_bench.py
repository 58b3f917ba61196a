"""bench/gru4rec_official.py: skips cleanly without the official code, maps the official
parameter files onto our config keys."""
import os
import subprocess
import sys

from conftest import REPO

BENCH = os.path.join(REPO, "bench")
sys.path.insert(0, BENCH)

import gru4rec_official  # noqa: E402


def test_without_the_official_code_it_skips_with_a_message(tmp_path):
    done = subprocess.run([sys.executable, os.path.join(BENCH, "gru4rec_official.py"), "--official",
                           str(tmp_path / "absent"), "--systems", "official", "--out", str(tmp_path / "r.json")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert ("skipping the official rows: no official GRU4Rec code" in done.stdout
            or "skipped: no yoochoose-clicks-100k_train_full.txt" in done.stdout)
    assert not (tmp_path / "r.json").exists()


def test_official_parameters_as_our_config_keys():
    xe = gru4rec_official.ours_config(gru4rec_official.CONFIGS["rsc15_xe_shared_100_best"], 10)
    assert xe["loss_type"] == "CE" and xe["sampled_softmax"] and xe["logq"] == 1.0
    assert xe["final_activation"] == "linear" and xe["hidden_size"] == 100 and xe["train_batch_size"] == 32
    assert (xe["learner"], xe["learning_rate"], xe["momentum"]) == ("adagrad_momentum", 0.2, 0.2)
    assert (xe["dropout_prob"], xe["hidden_dropout_prob"], xe["n_sample"], xe["sample_alpha"]) == (0.0, 0.4, 2048, 0.5)
    bpr = gru4rec_official.ours_config(gru4rec_official.CONFIGS["diginetica_bprmax_shared_best"], 10)
    assert bpr["loss_type"] == "BPR-max" and not bpr["sampled_softmax"] and bpr["logq"] == 0.0
    assert bpr["final_activation"] == "elu-1" and bpr["bpreg"] == 0.9 and bpr["hidden_size"] == 512
    for config in (xe, bpr):
        assert config["train_mode"] == "session_parallel" and config["constrained_embedding"]
        assert config["item_bias"] and config["gru_bias"] and config["weight_init"] == "official"

"""Ray Tune: a real 2-trial search on ml-100k, its outputs, and the params-file parser."""
import csv
import os
import subprocess
import sys

import pytest
import yaml

from conftest import REPO, TINY
from recbole_mamba.errors import ConfigError
from recbole_mamba.tune import HYPER_DIR, parse_params_file, search_space


def test_params_file_recbole_format(tmp_path):
    path = tmp_path / "space.hyper"
    path.write_text("# comment\n"
                    "learning_rate loguniform -8,-5\n"
                    "dropout_prob uniform 0.1 0.4   # spaces work too\n"
                    "hidden_size quniform 32,128,32\n"
                    "fusion choice ['concat', 'gate']\n\n")
    space = parse_params_file(str(path))
    assert space == {"learning_rate": ("loguniform", [-8.0, -5.0]), "dropout_prob": ("uniform", [0.1, 0.4]),
                     "hidden_size": ("quniform", [32.0, 128.0, 32.0]), "fusion": ("choice", ["concat", "gate"])}
    domains = search_space(space)
    for _ in range(20):
        assert 0.000335 < domains["learning_rate"].sample() < 0.00674  # exp(-8), exp(-5)
        assert domains["hidden_size"].sample() in (32, 64, 96, 128)


def test_every_example_params_file_parses():
    names = sorted(os.listdir(HYPER_DIR))
    assert {"BiMamba4Rec.hyper", "Mamba4Rec.hyper", "GRU4Rec.hyper", "MDAF.hyper"} <= set(names)
    for name in names:
        assert parse_params_file(os.path.join(HYPER_DIR, name))


@pytest.mark.parametrize("line, expected", [
    ("learning_rate unifrom 0.1,0.2", "line 2: unknown type 'unifrom'"),
    ("hidden_size choice [64,128", "line 2: choice needs a Python list"),
    ("dropout_prob uniform 0.4", "line 2: uniform needs 2 numbers"),
    ("dropout_prob uniform 0.4,0.1", "line 2: uniform needs low < high"),
    ("num_layers", "line 2: expected 'name type values'"),
])
def test_params_file_error_is_one_line_with_line_number(tmp_path, line, expected):
    path = tmp_path / "bad.hyper"
    path.write_text(f"d_state choice [8,16]\n{line}\n")
    with pytest.raises(ConfigError) as error:
        parse_params_file(str(path))
    message = str(error.value)
    assert expected in message and "\n" not in message and str(path) in message


def test_cli_params_file_error_exits_with_one_line(tmp_path):
    bad = tmp_path / "bad.hyper"
    bad.write_text("learning_rate loguniform -8\n")
    done = subprocess.run([sys.executable, os.path.join(REPO, "run_recbole.py"), "--tune", "--model=Mamba4Rec",
                           f"--params_file={bad}"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: {bad} line 1: loguniform needs 2 numbers (low,high); got '-8'")


def test_two_trials_table_best_config_reproduces(tmp_path):
    import ray
    from recbole.quick_start import run

    from recbole_mamba.tune import tune

    params = tmp_path / "space.hyper"
    params.write_text("learning_rate uniform 0.0005,0.005\n")
    # ml-100k's 380 users with at most 50 ratings keep each trial's epoch short
    fixed = {**TINY, "user_inter_num_interval": "[0,50]"}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        summary = tune("Mamba4Rec", "ml-100k", params_file=str(params), config_dict=fixed, metric="ndcg@10",
                       num_samples=2, cpus_per_trial=1, gpus_per_trial=0, scheduler="fifo",
                       output_dir=str(tmp_path / "out"))
    finally:
        ray.shutdown()

    rows = summary["rows"]
    assert len(rows) == 2 and all(row["status"] == "completed" for row in rows)
    assert rows[0]["valid_ndcg@10"] >= rows[1]["valid_ndcg@10"]
    files = summary["files"]
    with open(files["results.csv"], newline="", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    assert [r["trial"] for r in table] == [r["trial"] for r in rows] and "test_ndcg@10" in table[0]
    assert open(files["results.md"], encoding="utf-8").read().count("\n| ") == 3  # header + 2 trials
    assert os.path.getsize(files["curves.png"]) > 1000
    # one checkpoint folder per trial
    checkpoints = [os.path.join(root, d) for root, dirs, _ in os.walk(tmp_path / "out" / "ray")
                   for d in dirs if d == "checkpoints"]
    assert len(checkpoints) == 2 and all(os.listdir(c) for c in checkpoints)

    best = yaml.safe_load(open(files["best_config.yaml"], encoding="utf-8"))
    assert best["model"] == "Mamba4Rec" and best["learning_rate"] == rows[0]["learning_rate"]
    # the YAML alone, through RecBole's run() as run_recbole.py calls it, gives the trial's numbers
    import torch

    torch.set_num_threads(1)  # as in the 1-CPU trial
    again = run("Mamba4Rec", "ml-100k", config_file_list=[files["best_config.yaml"]])
    assert again["test_result"]["ndcg@10"] == pytest.approx(rows[0]["test_ndcg@10"], abs=1e-4)
    assert again["best_valid_result"]["ndcg@10"] == pytest.approx(rows[0]["valid_ndcg@10"], abs=1e-4)

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
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
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


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_cli():
    ray = os.path.join(os.path.dirname(sys.executable), "ray")
    return ray if os.path.exists(ray) else None


def test_tune_on_a_running_two_node_cluster(tmp_path):
    """A real local Ray cluster (a head node and a second worker node started by
    ``ray start``), and ``python -m recbole_mamba.tune --address=...`` from a fresh
    process: the plugin's model has to be found in the cluster's own worker processes."""
    ray = _ray_cli()
    if ray is None:
        pytest.skip("the ray command is not installed next to this Python")
    port = _free_port()
    address = f"127.0.0.1:{port}"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}

    def ray_cmd(*args, timeout=180):
        return subprocess.run([ray, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)

    started = ray_cmd("start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=1",
                      "--num-gpus=0", "--include-dashboard=false", "--disable-usage-stats")
    try:
        assert started.returncode == 0, started.stderr[-2000:]
        worker = ray_cmd("start", f"--address={address}", "--node-ip-address=127.0.0.1", "--num-cpus=1",
                         "--num-gpus=0", "--disable-usage-stats")
        assert worker.returncode == 0, worker.stderr[-2000:]
        params = tmp_path / "space.hyper"
        params.write_text("learning_rate choice [0.001,0.003]\n")
        out = tmp_path / "out"
        fixed = {**TINY, "user_inter_num_interval": "[0,50]"}
        flags = [f"--{k}={v}" for k, v in fixed.items() if k != "state"]
        done = subprocess.run([sys.executable, "-m", "recbole_mamba.tune", "--model=Mamba4Rec", "--dataset=ml-100k",
                               f"--params_file={params}", "--num_samples=2", "--cpus_per_trial=1", "--scheduler=fifo",
                               "--metric=ndcg@10", f"--address={address}", f"--output_dir={out}", *flags],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
        # both nodes were in the cluster the trials ran on
        status = ray_cmd("status", f"--address={address}")
        assert status.stdout.count("node_") >= 2, status.stdout
    finally:
        ray_cmd("stop", "--force")
    with open(out / "results.csv", newline="", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 2 and all(row["status"] == "completed" for row in table)
    assert {float(row["learning_rate"]) for row in table} <= {0.001, 0.003}  # two draws from the choice
    assert all(0 < float(row["test_ndcg@10"]) < 1 for row in table)
    best = yaml.safe_load(open(out / "best_config.yaml", encoding="utf-8"))
    assert best["model"] == "Mamba4Rec" and best["learning_rate"] == float(table[0]["learning_rate"])

"""End to end through RecBole's own entry points, and the CLI."""
import os
import subprocess
import sys

import torch

import recbole_mamba
from conftest import REPO, TINY


def test_builtin_models_are_untouched():
    from recbole.model.sequential_recommender.sasrec import SASRec
    from recbole.utils import get_model

    assert get_model("SASRec") is SASRec
    assert get_model("BiMamba4Rec").__module__ == "recbole_mamba.model.bimamba4rec"


def test_config_reads_plugin_defaults_and_keeps_recbole_order():
    from recbole.config import Config

    config = Config(model="BiMamba4Rec", dataset="ml-100k")
    assert config["num_layers"] == 2 and config["d_state"] == 32 and config["fusion"] == "concat"
    assert config["eval_args"]["order"] == "TO"  # RecBole's sequential default still applies
    assert config["MODEL_TYPE"].name == "SEQUENTIAL"
    assert Config(model="BiMamba4Rec", dataset="ml-100k", config_dict={"num_layers": 1})["num_layers"] == 1


def test_run_recbole_trains_and_checkpoint_reloads():
    from recbole.quick_start import load_data_and_model, run_recbole

    result = run_recbole(model="Mamba4Rec", dataset="ml-100k", config_dict=dict(TINY))
    assert result["test_result"]["ndcg@10"] > 0.01
    saved = [f for f in os.listdir("saved") if f.startswith("Mamba4Rec-") and f.endswith(".pth")]
    assert len(saved) == 1
    config, model, dataset, _, _, test_data = load_data_and_model(os.path.join("saved", saved[0]))
    assert type(model).__name__ == "Mamba4Rec" and config["hidden_size"] == 32
    checkpoint = torch.load(os.path.join("saved", saved[0]), weights_only=False)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, checkpoint["state_dict"][key])
    from recbole.trainer import Trainer

    reloaded = Trainer(config, model).evaluate(test_data, load_best_model=False)
    assert abs(reloaded["ndcg@10"] - result["test_result"]["ndcg@10"]) < 1e-4


def test_objective_function_finds_plugin_models():
    from recbole.quick_start import objective_function

    result = objective_function(config_dict={**TINY, "model": "BiMamba4Rec", "dataset": "ml-100k"}, saved=False)
    assert result["model"] == "BiMamba4Rec"
    assert 0 <= result["test_result"]["ndcg@10"] <= 1


def test_cli_from_another_directory(tmp_path):
    command = [
        sys.executable, os.path.join(REPO, "run_recbole.py"),
        "--model=BiMamba4Rec", "--dataset=ml-100k", "--epochs=1", "--MAX_ITEM_LIST_LENGTH=20",
        "--hidden_size=32", "--d_state=8", "--num_layers=1", "--show_progress=False",
    ]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    log = done.stdout + done.stderr
    assert "test result" in log and "ndcg@10" in log
    assert "ssm_backend=auto chose 'torch'" in log


def test_cli_bad_input_is_one_line(tmp_path):
    cases = [(["--model=Mamba4rec"], "is neither a recbole-mamba model"),
             (["--model=Mamba4Rec", "--ssm_backend=cuda"], "ssm_backend=cuda needs"),
             (["--model=BiMamba4Rec", "--fusion=mul"], "fusion='mul' is not supported")]
    for flags, expected in cases:
        command = [sys.executable, os.path.join(REPO, "run_recbole.py"), *flags, "--epochs=1", "--use_gpu=False"]
        done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 2
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and expected in last
        assert "Traceback" not in done.stderr

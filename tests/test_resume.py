"""A seeded run killed with SIGKILL mid-epoch and resumed with --resume=latest ends with
the same test metrics as the uninterrupted run.

RecBole writes a checkpoint only at the end of an epoch whose validation improved, so a
run resumes from the last such epoch boundary; recbole-mamba saves the random streams
(torch, numpy, Python, the loader's shuffling) with it, so the epochs after it repeat
exactly.  Checkpoints are written to a temporary file and renamed, so none is ever half
written."""
import json
import os
import subprocess
import sys

import pytest

RUN = r"""
import json, os, signal, sys
sys.argv = sys.argv[:1]
import torch
torch.set_num_threads(1)
import recbole_mamba
from recbole.trainer import Trainer
from recbole_mamba.model.mamba4rec import Mamba4Rec

kill_epoch = int(os.environ.get("KILL_EPOCH", "-1"))
state = {"epoch": -1, "batches": 0}
train_epoch = Trainer._train_epoch

def counted_train_epoch(self, train_data, epoch_idx, *args, **kwargs):
    state["epoch"], state["batches"] = epoch_idx, 0
    return train_epoch(self, train_data, epoch_idx, *args, **kwargs)

calculate_loss = Mamba4Rec.calculate_loss

def killing_loss(self, interaction):
    state["batches"] += 1
    if state["epoch"] == kill_epoch and state["batches"] == 3:  # mid-epoch, after two updates
        os.kill(os.getpid(), signal.SIGKILL)
    return calculate_loss(self, interaction)

Trainer._train_epoch = counted_train_epoch
Mamba4Rec.calculate_loss = killing_loss
from recbole.quick_start import run_recbole
config = json.loads(os.environ["RUN_CONFIG"])
result = run_recbole(model="Mamba4Rec", dataset="ml-100k", config_dict=config)
print("RESULT " + json.dumps({k: float(v) for k, v in result["test_result"].items()}))
"""

BASE = {"epochs": 4, "hidden_size": 8, "d_state": 4, "MAX_ITEM_LIST_LENGTH": 10, "train_batch_size": 512,
        "use_gpu": False, "state": "WARNING", "show_progress": False, "seed": 7,
        "val_interval": {"rating": "[5,5]"}, "checkpoint_dir": "saved", "stopping_step": 10}


def run(folder, config, kill_epoch=-1):
    env = {**os.environ, "RUN_CONFIG": json.dumps(config), "KILL_EPOCH": str(kill_epoch)}
    return subprocess.run([sys.executable, "-c", RUN], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=900)


def result_of(done):
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.split("RESULT ", 1)[1])


@pytest.mark.parametrize("extra", [{}, {"train_mode": "all_positions", "length_bucketing": True,
                                        "train_batch_size": 200}])
def test_killed_and_resumed_run_ends_like_an_uninterrupted_one(tmp_path, extra):
    config = {**BASE, **extra}
    (tmp_path / "straight").mkdir()
    (tmp_path / "killed").mkdir()
    straight = result_of(run(tmp_path / "straight", config))
    killed = run(tmp_path / "killed", config, kill_epoch=2)
    assert killed.returncode == -9  # SIGKILL, in the third epoch
    saved = os.listdir(tmp_path / "killed" / "saved")
    assert len(saved) == 1 and saved[0].endswith(".pth")  # nothing half-written
    resumed = result_of(run(tmp_path / "killed", {**config, "resume": "latest"}))
    assert resumed == pytest.approx(straight, rel=1e-9, abs=1e-12)


def test_save_latest_resumes_after_the_last_validated_epoch(tmp_path):
    # save_latest: the run's state after every validation goes to <best>-latest.pth, so a run
    # killed in its third epoch resumes after the second (not after the last improving one)
    # and still ends like the uninterrupted run, testing the best checkpoint's weights
    from recbole_mamba.checkpoints import read_checkpoint

    config = {**BASE, "save_latest": True}
    (tmp_path / "straight").mkdir()
    (tmp_path / "killed").mkdir()
    straight = result_of(run(tmp_path / "straight", config))
    killed = run(tmp_path / "killed", config, kill_epoch=2)
    assert killed.returncode == -9
    folder = tmp_path / "killed" / "saved"
    latest = [f for f in os.listdir(folder) if f.endswith("-latest.pth")]
    assert len(latest) == 1 and len(os.listdir(folder)) == 2
    state = read_checkpoint(str(folder / latest[0]))
    assert state["epoch"] == 1 and state["best_model_file"] in os.listdir(folder)
    resumed = result_of(run(tmp_path / "killed", {**config, "resume": "latest"}))
    assert resumed == pytest.approx(straight, rel=1e-9, abs=1e-12)

    # the latest state without the best checkpoint it names: one line, nothing trained
    os.remove(folder / state["best_model_file"])
    broken = run(tmp_path / "killed", {**config, "resume": str(folder / latest[0])})
    assert broken.returncode != 0
    assert "is a run's latest state, and the best checkpoint it names" in broken.stderr

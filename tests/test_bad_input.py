"""SPEC §7, the dataset and checkpoint part: missing dataset files (offline), malformed
atomic files, a checkpoint from another model; resume and same-seed reproducibility."""
import os
import shutil
import subprocess
import sys
import time

import pytest
import torch

import recbole_mamba  # noqa: F401
from conftest import REPO, TINY
from recbole_mamba import datasets
from recbole_mamba.errors import CheckpointError, DatasetError

SAMPLES = os.path.join(REPO, "dataset_atomic")
SAMPLE = os.path.join(SAMPLES, "amazon-video-games", "amazon-video-games.inter")
RUN = os.path.join(REPO, "run_recbole.py")


def cli_tiny(**overrides):
    """Tiny-run flags for run_recbole.py (RecBole refuses a flag given twice)."""
    flags = {"epochs": 1, "MAX_ITEM_LIST_LENGTH": 20, "hidden_size": 32, "d_state": 8, "num_layers": 1,
             "use_gpu": False, "show_progress": False, "data_path": SAMPLES, "dataset": "amazon-video-games",
             **overrides}
    return [f"--{key}={value}" for key, value in flags.items()]


def make_dataset(dataset="amazon-video-games", **config):
    from recbole.config import Config
    from recbole.data import create_dataset

    return create_dataset(Config(model="Mamba4Rec", dataset=dataset, config_dict={**TINY, **config}))


def cli(args, cwd, timeout=300):
    done = subprocess.run([sys.executable, RUN, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    return done, done.stdout + done.stderr


def assert_one_line_error(done, expected):
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and expected in last, last
    assert "Traceback" not in done.stderr


# --- missing dataset files: no download attempt that hangs -------------------------

def test_missing_dataset_folder_is_one_line_without_network(tmp_path):
    (tmp_path / "ml-1m").mkdir()  # folder present, files absent: RecBole would not download
    started = time.monotonic()
    with pytest.raises(DatasetError) as caught:
        make_dataset("ml-1m", data_path=str(tmp_path))
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert "\n" not in message and str(tmp_path / "ml-1m") in message and "ml-1m.inter" in message
    assert "python -m recbole_mamba.data ml1m" in message


def test_offline_download_ends_in_seconds(tmp_path):
    url = "https://recbole.s3-accelerate.amazonaws.com/ProcessedDatasets/MovieLens/ml-1m.zip"
    if datasets.server_answers(url):
        pytest.skip("this machine reaches RecBole's server: RecBole would download ml-1m")
    started = time.monotonic()
    with pytest.raises(DatasetError, match="could not reach .*ml-1m.zip") as caught:
        make_dataset("ml-1m", data_path=str(tmp_path))
    assert time.monotonic() - started < datasets.PROBE_TIMEOUT_S + 5
    assert not (tmp_path / "ml-1m").exists() and "\n" not in str(caught.value)


def test_missing_plugin_dataset_names_its_converter_on_the_cli(tmp_path):
    done, _ = cli(["--model=Mamba4Rec", "--dataset=taobao", f"--data_path={tmp_path}", "--epochs=1"], tmp_path)
    assert_one_line_error(done, "python -m recbole_mamba.data taobao")
    assert "taobao.inter" in done.stderr and str(tmp_path / "taobao") in done.stderr


# --- malformed atomic files -------------------------------------------------------

def corrupt(tmp_path, edit):
    """A copy of the real sample under tmp_path with ``edit(lines)`` applied."""
    lines = open(SAMPLE, encoding="utf-8").read().splitlines()
    lines = edit(lines) or lines
    folder = tmp_path / "amazon-video-games"
    folder.mkdir(exist_ok=True)
    (folder / "amazon-video-games.inter").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(tmp_path)


def _set(lines, index, value):
    lines[index] = value


MALFORMED = {
    "wrong header type": (lambda l: _set(l, 0, "user_id:str\titem_id:token\ttimestamp:float"),
                          "line 1: column 'user_id' has type 'str'; use one of token"),
    "header without types": (lambda l: _set(l, 0, "user_id\titem_id\ttimestamp"),
                             "line 1: header entry 'user_id' is not name:type"),
    "comma-separated header": (lambda l: _set(l, 0, "user_id:token,item_id:token,timestamp:float"),
                               "looks comma-separated"),
    "missing time column": (lambda l: [r.rsplit("\t", 1)[0] for r in l], "no column 'timestamp'"),
    "missing user column": (lambda l: [r.split("\t", 1)[1] for r in l], "no column 'user_id'"),
    "ragged row": (lambda l: _set(l, 6, l[6] + "\t7"), "line 7: 4 fields but the header has 3"),
    "short row": (lambda l: _set(l, 8, l[8].rsplit("\t", 1)[0]), "line 9: 2 fields but the header has 3"),
    "text in a float column": (lambda l: _set(l, 9, l[9].rsplit("\t", 1)[0] + "\tyesterday"),
                               "line 10: column 'timestamp' is float but holds 'yesterday'"),
    "empty file": (lambda l: [""], "line 1: the header is empty"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_atomic_file_names_the_line(tmp_path, case):
    edit, expected = MALFORMED[case]
    data_path = corrupt(tmp_path, edit)
    with pytest.raises(DatasetError) as caught:
        make_dataset(data_path=data_path)
    message = str(caught.value)
    assert expected in message and "\n" not in message and message.startswith("amazon-video-games.inter")


def test_text_ids_and_blank_lines_are_fine(tmp_path):
    def edit(lines):
        return [lines[0]] + [f"user-{r}" for r in lines[1:]] + [""]

    dataset = make_dataset(data_path=corrupt(tmp_path, edit))
    assert dataset.id2token("user_id", 1).startswith("user-")


def test_file_not_in_the_configured_encoding(tmp_path):
    data_path = corrupt(tmp_path, lambda l: None)
    path = os.path.join(data_path, "amazon-video-games", "amazon-video-games.inter")
    with open(path, "ab") as f:
        f.write("équipe\tx\t1\n".encode("latin-1"))
    lines = sum(1 for _ in open(path, "rb"))
    with pytest.raises(DatasetError, match=f"line {lines}: not valid utf-8"):
        make_dataset(data_path=data_path)


def test_malformed_file_on_the_cli_is_one_line(tmp_path):
    data_path = corrupt(tmp_path, MALFORMED["ragged row"][0])
    done, _ = cli(["--model=Mamba4Rec", *cli_tiny(data_path=data_path)], tmp_path)
    assert_one_line_error(done, "amazon-video-games.inter line 7:")


def test_a_dataset_without_yaml_warns_that_time_is_not_loaded(tmp_path, caplog):
    folder = tmp_path / "games-noyaml"
    folder.mkdir()
    shutil.copy(SAMPLE, folder / "games-noyaml.inter")
    with caplog.at_level("WARNING"):
        make_dataset("games-noyaml", data_path=str(tmp_path))
    assert any("does not load" in r.getMessage() and "timestamp" in r.getMessage() for r in caplog.records)


# --- checkpoints: resume, another model, reproducibility ---------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny Mamba4Rec run on the sample: (checkpoint path, its test result)."""
    from recbole.quick_start import run_recbole

    folder = tmp_path_factory.mktemp("trained")
    saved_cwd, saved_argv = os.getcwd(), sys.argv
    os.chdir(folder)
    sys.argv = sys.argv[:1]
    try:
        result = run_recbole(model="Mamba4Rec", dataset="amazon-video-games",
                             config_dict={**TINY, "data_path": SAMPLES, "checkpoint_dir": str(folder / "saved")})
    finally:
        os.chdir(saved_cwd)
        sys.argv = saved_argv
    [name] = os.listdir(folder / "saved")
    return str(folder / "saved" / name), result


def trainer_for(model, **config):
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer

    config = Config(model=model, dataset="amazon-video-games", config_dict={**TINY, "data_path": SAMPLES, **config})
    train, _, _ = data_preparation(config, create_dataset(config))
    return get_trainer(config["MODEL_TYPE"], model)(config, get_model(model)(config, train.dataset))


def test_same_seed_same_metrics_twice(trained):
    from recbole.quick_start import run_recbole

    _, first = trained
    again = run_recbole(model="Mamba4Rec", dataset="amazon-video-games",
                        config_dict={**TINY, "data_path": SAMPLES}, saved=False)
    assert again["test_result"] == first["test_result"]
    assert again["best_valid_result"] == first["best_valid_result"]


def test_checkpoint_from_another_model(trained, tmp_path):
    path, _ = trained
    bimamba = trainer_for("BiMamba4Rec")
    with pytest.raises(CheckpointError, match="holds a Mamba4Rec model, not BiMamba4Rec; use --model=Mamba4Rec"):
        bimamba.resume_checkpoint(path)
    with pytest.raises(CheckpointError, match="holds a Mamba4Rec model"):
        bimamba.evaluate(None, load_best_model=True, model_file=path)
    wider = trainer_for("Mamba4Rec", hidden_size=16)
    with pytest.raises(CheckpointError, match=r"item_embedding.weight is \[\d+, 32\] in the file but \[\d+, 16\]"):
        wider.resume_checkpoint(path)
    not_a_checkpoint = tmp_path / "notes.pth"
    not_a_checkpoint.write_text("hello")
    with pytest.raises(CheckpointError, match="is not a readable torch checkpoint"):
        wider.resume_checkpoint(str(not_a_checkpoint))
    torch.save({"weights": 1}, tmp_path / "plain.pth")
    with pytest.raises(CheckpointError, match="is not a RecBole checkpoint"):
        wider.resume_checkpoint(str(tmp_path / "plain.pth"))
    with pytest.raises(CheckpointError, match="not found"):
        wider.resume_checkpoint(str(tmp_path / "missing.pth"))


def test_resume_through_the_cli(tmp_path):
    # an interrupted run is one whose last checkpoint is at epoch 0 of 2
    first, log = cli(["--model=Mamba4Rec", *cli_tiny(checkpoint_dir="saved")], tmp_path)
    assert first.returncode == 0, log[-2000:]
    [checkpoint] = os.listdir(tmp_path / "saved")
    saved = torch.load(tmp_path / "saved" / checkpoint, weights_only=False)
    assert saved["epoch"] == 0

    resumed, log = cli(["--model=Mamba4Rec", *cli_tiny(epochs=2, checkpoint_dir="saved", resume="latest")], tmp_path)
    assert resumed.returncode == 0, log[-2000:]
    assert "Resume training from epoch 1" in log
    assert "epoch 1 training" in log and "epoch 0 training" not in log
    assert "test result" in log

    other, _ = cli(["--model=BiMamba4Rec", *cli_tiny(resume=f"saved/{checkpoint}")], tmp_path)
    assert_one_line_error(other, "holds a Mamba4Rec model, not BiMamba4Rec")

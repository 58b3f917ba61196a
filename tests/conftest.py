"""Shared test setup.

RecBole's Config reads ``--key=value`` from ``sys.argv`` (pytest's own flags
included) and writes ./log and ./saved, so every test runs with a one-entry argv
in its own temporary directory.
"""
import contextlib
import os
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO), "shared", "data")

# tiny settings: an ml-100k epoch in well under a minute on 2 CPU cores
TINY = {
    "MAX_ITEM_LIST_LENGTH": 20,
    "hidden_size": 32,
    "d_state": 8,
    "num_layers": 1,
    "epochs": 1,
    "use_gpu": False,
    "show_progress": False,
    "state": "WARNING",
    "seed": 2020,
    "train_batch_size": 2048,
}


@pytest.fixture(autouse=True)
def isolated_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", sys.argv[:1])
    torch.set_num_threads(2)
    yield tmp_path


def shared_path(*parts):
    """A path under ../shared/data, or skip the test when this checkout has none."""
    path = os.path.join(SHARED_DATA, *parts)
    if not os.path.exists(path):
        pytest.skip(f"needs ../shared/data/{'/'.join(parts)} (not in a fresh clone)")
    return path


@contextlib.contextmanager
def recbole_argv():
    """A one-entry argv for module/session fixtures (the autouse fixture covers tests)."""
    saved_argv = sys.argv
    sys.argv = sys.argv[:1]
    try:
        yield
    finally:
        sys.argv = saved_argv


@pytest.fixture(scope="session")
def ml100k():
    """ml-100k (from RecBole's wheel) loaded once for model-level tests."""
    with recbole_argv():
        import recbole_mamba  # noqa: F401
        from recbole.config import Config
        from recbole.data import create_dataset

        config = Config(model="Mamba4Rec", dataset="ml-100k", config_dict=dict(TINY))
        return config, create_dataset(config)

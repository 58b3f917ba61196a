"""Inference: incremental (recurrent) steps == full forward, top-k from checkpoints, errors."""
import io
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

import recbole_mamba  # noqa: F401
from conftest import REPO, TINY
from recbole_mamba.errors import ConfigError, InputError
from recbole_mamba.infer import Recommender, require_stateful
from recbole_mamba.ssm import Mamba

SASREC = {**TINY, "n_layers": 1, "n_heads": 1, "train_neg_sample_args": None}


def _ml100k_inter():
    import recbole

    path = os.path.join(os.path.dirname(recbole.__file__), "dataset_example", "ml-100k", "ml-100k.inter")
    frame = pd.read_csv(path, sep="\t", dtype=str)
    frame.columns = [c.split(":")[0] for c in frame.columns]
    frame["timestamp"] = frame["timestamp"].astype(float)
    return frame


def _with_config(config, **overrides):
    """Set config keys for one model build; returns the old values to restore."""
    old = {key: config[key] for key in overrides}
    for key, value in overrides.items():
        config[key] = value
    return old


def _assert_step_matches_forward(model, n_items, length, batch=3, seed=0):
    """Step through a random history and compare with forward on every prefix."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    seq = torch.randint(1, n_items, (batch, length), generator=generator)  # [B, T]
    state = model.init_state(batch, torch.device("cpu"))
    with torch.no_grad():
        for t in range(length):
            user_vector, state = model.step(seq[:, t], state)  # [B, d]
            prefix = seq.clone()
            prefix[:, t + 1:] = 0  # RecBole's right padding
            full = model.forward(prefix, torch.full((batch,), t + 1))  # [B, d]
            torch.testing.assert_close(user_vector, full, rtol=1e-4, atol=1e-5, msg=f"prefix length {t + 1}")


def test_mamba_block_step_matches_forward():
    torch.manual_seed(0)
    block = Mamba(32, d_state=8, d_conv=4, expand=2, backend="torch")
    x = torch.randn(2, 23, 32)  # [B, L, d]
    with torch.no_grad():
        full = block(x)  # [B, L, d]
        conv_state, ssm_state = block.allocate_state(2)
        assert conv_state.shape == (2, 64, 4) and ssm_state.shape == (2, 64, 8)
        for t in range(x.shape[1]):
            y, conv_state, ssm_state = block.step(x[:, t], conv_state, ssm_state)  # [B, d]
            torch.testing.assert_close(y, full[:, t], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("num_layers", [1, 2])
def test_mamba4rec_incremental_equals_full(ml100k, num_layers):
    from recbole_mamba.model.mamba4rec import Mamba4Rec

    config, dataset = ml100k
    old = _with_config(config, num_layers=num_layers)
    try:
        torch.manual_seed(num_layers)
        model = Mamba4Rec(config, dataset)
    finally:
        _with_config(config, **old)
    length = int(torch.randint(5, 41, (1,), generator=torch.Generator().manual_seed(num_layers)))
    _assert_step_matches_forward(model, model.n_items, length, seed=num_layers)


def test_gru4rec_incremental_equals_full(ml100k):
    try:
        from recbole_mamba.model.gru4rec import GRU4Rec
    except ImportError:
        pytest.skip("recbole_mamba/model/gru4rec.py is not in this checkout")
    if not hasattr(GRU4Rec, "step"):
        pytest.skip("this GRU4Rec has no init_state/step yet")
    from recbole.config import Config

    config, dataset = ml100k
    gru_config = Config(model="GRU4Rec", dataset="ml-100k", config_dict={**TINY, "num_layers": 2})
    torch.manual_seed(0)
    model = GRU4Rec(gru_config, dataset.copy(dataset._dataframe_to_interaction(dataset.inter_feat)))
    length = int(torch.randint(5, 41, (1,), generator=torch.Generator().manual_seed(7)))
    _assert_step_matches_forward(model, model.n_items, length, seed=7)


def test_models_without_incremental_api_say_so(ml100k):
    from recbole.config import Config
    from recbole.model.sequential_recommender.sasrec import SASRec
    from recbole_mamba.model.bimamba4rec import BiMamba4Rec

    _, dataset = ml100k
    model = BiMamba4Rec(Config(model="BiMamba4Rec", dataset="ml-100k", config_dict=dict(TINY)), dataset)
    for call in (lambda: model.init_state(2), lambda: model.step(torch.ones(2, dtype=torch.long), None)):
        with pytest.raises(ConfigError) as error:
            call()
        message = str(error.value)
        assert "\n" not in message and "BiMamba4Rec cannot" in message and "Mamba4Rec or GRU4Rec" in message
    with pytest.raises(ConfigError, match="SASRec has no incremental API") as error:
        require_stateful(SASRec(Config(model="SASRec", dataset="ml-100k", config_dict=dict(SASREC)), dataset))
    assert "\n" not in str(error.value)


@pytest.fixture(scope="module")
def checkpoints(ml100k, tmp_path_factory):
    """Untrained Mamba4Rec and RecBole SASRec saved by RecBole's own Trainer (no training)."""
    from recbole.config import Config
    from recbole.data import create_dataset
    from recbole.model.sequential_recommender.sasrec import SASRec
    from recbole.trainer import Trainer
    from recbole_mamba.model.mamba4rec import Mamba4Rec

    folder = tmp_path_factory.mktemp("saved")
    config, dataset = ml100k
    old = _with_config(config, checkpoint_dir=str(folder))
    try:
        torch.manual_seed(0)
        mamba_path = str(folder / "Mamba4Rec.pth")
        Trainer(config, Mamba4Rec(config, dataset))._save_checkpoint(0, verbose=False, saved_model_file=mamba_path)
    finally:
        _with_config(config, **old)
    saved_argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        sas_config = Config(model="SASRec", dataset="ml-100k",
                            config_dict={**SASREC, "checkpoint_dir": str(folder)})
    finally:
        sys.argv = saved_argv
    sas_path = str(folder / "SASRec.pth")
    sas_model = SASRec(sas_config, create_dataset(sas_config))
    Trainer(sas_config, sas_model)._save_checkpoint(0, verbose=False, saved_model_file=sas_path)
    return {"Mamba4Rec": mamba_path, "SASRec": sas_path}


@pytest.fixture(scope="module")
def mamba_recommender(checkpoints):
    return Recommender.from_checkpoint(checkpoints["Mamba4Rec"], device="cpu")


def test_topk_excludes_seen_and_ids_round_trip(mamba_recommender):
    raw = _ml100k_inter()
    users = ["196", "186", "22"]
    recs = mamba_recommender.recommend(users, topk=20)
    assert list(recs.columns) == ["user_id", "rank", "item_id", "score"]
    assert recs["user_id"].tolist() == [u for u in users for _ in range(20)]
    model, dataset = mamba_recommender.model, mamba_recommender.dataset
    for user in users:
        rows = raw[raw.user_id == user]
        mine = recs[recs.user_id == user]
        assert not set(mine.item_id) & set(rows.item_id)  # nothing already seen
        assert mine["score"].is_monotonic_decreasing and mine["rank"].tolist() == list(range(1, 21))
        # the same numbers from the raw file's external ids, RecBole's time order
        history = rows.sort_values("timestamp", kind="stable").item_id.tolist()[-model.max_seq_length:]
        seq = torch.tensor(dataset.token2id("item_id", history))[None]  # [1, T]
        with torch.no_grad():
            user_vector = model.forward(seq, torch.tensor([seq.shape[1]]))  # [1, d]
        items = torch.tensor(dataset.token2id("item_id", mine.item_id.tolist()))  # [k]
        expected = (model.item_embedding(items) @ user_vector[0]).detach().numpy()  # [k]
        np.testing.assert_allclose(mine.score.to_numpy(), expected, rtol=1e-5, atol=1e-6)
    everything = mamba_recommender.recommend(["196"], topk=10**6, include_seen=True)
    assert len(everything) == dataset.item_num - 1  # every item but RecBole's padding
    assert set(raw[raw.user_id == "196"].item_id) <= set(everything.item_id)
    unseen = mamba_recommender.recommend(["196"], topk=10**6)
    assert len(unseen) == len(everything) - raw[raw.user_id == "196"].item_id.nunique()


def test_recommend_all_writes_every_user(mamba_recommender, tmp_path):
    output = str(tmp_path / "recs.parquet")
    rows = mamba_recommender.recommend_all(output, topk=3, batch_size=400, progress=False)
    frame = pd.read_parquet(output)
    assert rows == len(frame) == 943 * 3
    assert frame.user_id.nunique() == 943 and frame.groupby("user_id").size().eq(3).all()


def test_streaming_session_matches_full_reencode(mamba_recommender):
    model, dataset = mamba_recommender.model, mamba_recommender.dataset
    session = mamba_recommender.session("196")
    first = session.top_k(5)
    pd.testing.assert_frame_equal(first, mamba_recommender.recommend(["196"], topk=5), rtol=1e-5)
    new_item = first.item_id.iloc[0]
    session.append(new_item)
    after = session.top_k(50)
    assert new_item not in set(after.item_id)
    window, length = mamba_recommender.histories.window(dataset.token2id("user_id", ["196"]), model.max_seq_length)
    seq = torch.cat([window[:, : int(length[0])], torch.tensor([[dataset.token2id("item_id", new_item)]])], 1)
    with torch.no_grad():
        full = model.forward(seq, torch.tensor([seq.shape[1]]))  # [1, d], window + the new event
    torch.testing.assert_close(session.user_vector, full, rtol=1e-4, atol=1e-5)


def test_recbole_sequential_checkpoint_recommends_but_is_not_incremental(checkpoints):
    recommender = Recommender.from_checkpoint(checkpoints["SASRec"], device="cpu")
    recs = recommender.recommend(["196"], topk=5)
    assert len(recs) == 5 and not set(recs.item_id) & set(_ml100k_inter().query("user_id == '196'").item_id)
    with pytest.raises(ConfigError, match="SASRec has no incremental API"):
        recommender.session("196")
    with pytest.raises(InputError, match="not in dataset 'ml-100k'"):
        recommender.recommend(["no-such-user"])


def test_cli_prints_topk_and_bad_path_is_one_line(checkpoints, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "recbole_mamba.infer", f"--checkpoint={checkpoints['Mamba4Rec']}",
         "--users=196,186", "--topk=4"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    frame = pd.read_csv(io.StringIO(done.stdout), dtype={"user_id": str, "item_id": str})
    assert frame.user_id.tolist() == ["196"] * 4 + ["186"] * 4
    for flags, expected in [([f"--checkpoint={tmp_path / 'missing.pth'}", "--users=1"], "does not exist"),
                            ([f"--checkpoint={checkpoints['Mamba4Rec']}", "--all-users"], "add --output")]:
        done = subprocess.run([sys.executable, os.path.join(REPO, "run_recbole.py"), "--recommend", *flags],
                              cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 2
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0]

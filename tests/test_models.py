"""Mamba4Rec and BiMamba4Rec: structure, parameter counts, no leakage, bad config."""
import os

import pytest
import torch
from recbole.config import Config
from recbole.data import create_dataset

import recbole_mamba
from recbole_mamba.errors import BackendError, ConfigError, InputError, UnknownModelError
from recbole_mamba.model.base import count_parameters

from conftest import TINY, shared_path


def build(model_name, dataset, **overrides):
    config = Config(model=model_name, dataset="ml-100k", config_dict={**TINY, **overrides})
    torch.manual_seed(0)
    return config, recbole_mamba.get_model(model_name)(config, dataset)


def mamba_params(d, n, expand=2, d_conv=4):
    d_inner = expand * d
    dt_rank = -(-d // 16)
    return (d * 2 * d_inner + d_inner * d_conv + d_inner + d_inner * (dt_rank + 2 * n)
            + dt_rank * d_inner + d_inner + d_inner * n + d_inner + d_inner * d)


def test_parameter_counts_follow_the_structure(ml100k):
    _, dataset = ml100k
    d, n = 32, 8
    embedding = dataset.item_num * d
    ffn = (d * 4 * d + 4 * d) + (4 * d * d + d) + 2 * d
    _, mamba4rec = build("Mamba4Rec", dataset)
    assert count_parameters(mamba4rec) == embedding + 2 * d + mamba_params(d, n) + 2 * d + ffn
    _, bimamba = build("BiMamba4Rec", dataset, num_layers=2)
    per_layer = 2 * mamba_params(d, n) + (2 * d * d + d) + 2 * d + ffn
    assert count_parameters(bimamba) == embedding + 2 * d + 2 * per_layer + d + 2 * d


def test_paper_parameter_counts_on_ml1m():
    """SPEC §4: 290,944 (Mamba4Rec, 1 layer) and 457,344 (BiMamba4Rec, 2 layers) on ML-1M."""
    data_path = shared_path("ml-1m", "atomic-untimed")
    counts = {}
    for model_name in ("Mamba4Rec", "BiMamba4Rec"):
        config = Config(model=model_name, dataset="ml-1m", config_dict={
            "data_path": data_path, "load_col": {"inter": ["user_id", "item_id"]},
            "use_gpu": False, "state": "WARNING",
            "eval_args": {"split": {"LS": "valid_and_test"}, "order": "RO", "mode": "full", "group_by": "user"},
        })
        dataset = create_dataset(config)
        assert dataset.item_num == 3417 and dataset.inter_num == 999_611
        counts[model_name] = count_parameters(recbole_mamba.get_model(model_name)(config, dataset))
    assert counts == {"Mamba4Rec": 290_944, "BiMamba4Rec": 457_344}


def random_batch(dataset, batch=4, max_len=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([1, 5, 12, 20])[:batch]
    seq = torch.randint(1, dataset.item_num, (batch, max_len), generator=g)
    seq[torch.arange(max_len)[None, :] >= lengths[:, None]] = 0
    return seq, lengths


@pytest.mark.parametrize("model_name,overrides", [
    ("Mamba4Rec", {}),
    ("Mamba4Rec", {"num_layers": 2}),
    ("BiMamba4Rec", {}),
    ("BiMamba4Rec", {"fusion": "sum", "pooling": "mean"}),
    ("BiMamba4Rec", {"fusion": "gate", "pooling": "last", "share_direction_weights": True}),
])
def test_user_vector_ignores_everything_beyond_the_history(ml100k, model_name, overrides):
    _, dataset = ml100k
    _, model = build(model_name, dataset, **overrides)
    model.eval()
    seq, lengths = random_batch(dataset)
    with torch.no_grad():
        user = model(seq, lengths)
        future = seq.clone()
        for row, n in enumerate(lengths.tolist()):  # fill padding with real items ("the future")
            future[row, n:] = torch.randint(1, dataset.item_num, (seq.shape[1] - n,))
        torch.testing.assert_close(model(future, lengths), user)
        # a prefix of one row's history sees only that prefix, whatever follows it
        row = 3
        short = seq[row:row + 1].clone()
        short[:, 8:] = 0
        short_future = seq[row:row + 1].clone()
        torch.testing.assert_close(model(short, torch.tensor([8])), model(short_future, torch.tensor([8])))
    assert user.shape == (4, 32)


def test_bimamba_layer_reads_both_directions_within_the_prefix():
    """Position 0 of a BiMamba layer sees later items of the history (backward path),
    never the padding; a forward-only Mamba's position 0 sees neither."""
    from recbole_mamba.model.bimamba4rec import BiMambaLayer

    torch.manual_seed(0)
    layer = BiMambaLayer(8, d_state=4, d_conv=4, expand=2, dropout=0.0, fusion="concat",
                         share_weights=False, backend="torch").eval()
    x = torch.randn(1, 6, 8)
    lengths = torch.tensor([4])
    later_item = x.clone()
    later_item[:, 2] = torch.randn(8)
    padding = x.clone()
    padding[:, 4:] = torch.randn(2, 8)
    with torch.no_grad():
        base = layer(x, lengths)
        assert (layer(later_item, lengths)[:, 0] - base[:, 0]).abs().max() > 1e-4
        torch.testing.assert_close(layer(padding, lengths)[:, :4], base[:, :4])
        forward_only = layer.forward_mamba
        torch.testing.assert_close(forward_only(later_item)[:, :2], forward_only(x)[:, :2])


def test_init_follows_the_reference(ml100k):
    _, dataset = ml100k
    _, model = build("Mamba4Rec", dataset)
    block = model.mamba_layers[0].mamba
    assert torch.all(block.dt_proj.bias == 0)  # zeroed like every Linear bias
    assert abs(block.in_proj.weight.std().item() - 0.02) < 0.003
    torch.testing.assert_close(-torch.exp(block.A_log[0]), -torch.arange(1, 9, dtype=torch.float32))
    assert torch.all(model.LayerNorm.weight == 1)


@pytest.mark.parametrize("key,value,error", [
    ("loss_type", "TOP1", ConfigError),
    ("fusion", "mul", ConfigError),
    ("pooling", "max", ConfigError),
    ("ssm_backend", "triton", BackendError),
])
def test_bad_config_values_are_one_line_errors(ml100k, key, value, error):
    if (key, value) == ("ssm_backend", "triton") and os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("under TRITON_INTERPRET=1 the triton backend runs on a CPU (bench/gpu_run.sh --dry-run)")
    _, dataset = ml100k
    with pytest.raises(error) as info:
        build("BiMamba4Rec", dataset, **{key: value})
    message = str(info.value)
    assert "\n" not in message and repr(value) in message and "use " in message


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_backend_without_cuda(ml100k):
    _, dataset = ml100k
    with pytest.raises(BackendError, match="ssm_backend=cuda needs a CUDA device"):
        build("Mamba4Rec", dataset, ssm_backend="cuda")


def test_unknown_model_name():
    with pytest.raises(UnknownModelError, match="'Mamba4rec' is neither"):
        Config(model="Mamba4rec", dataset="ml-100k", config_dict=dict(TINY))


def test_empty_history_is_rejected(ml100k):
    _, dataset = ml100k
    _, model = build("Mamba4Rec", dataset)
    seq, lengths = random_batch(dataset)
    lengths[0] = 0
    seq[0] = 0
    from recbole.data.interaction import Interaction
    batch = Interaction({model.ITEM_SEQ: seq, model.ITEM_SEQ_LEN: lengths})
    with pytest.raises(InputError, match="empty item history"):
        model.full_sort_predict(batch)
    too_long = Interaction({model.ITEM_SEQ: torch.ones(4, 30, dtype=torch.long), model.ITEM_SEQ_LEN: torch.full((4,), 30)})
    with pytest.raises(InputError, match="MAX_ITEM_LIST_LENGTH"):
        model.full_sort_predict(too_long)

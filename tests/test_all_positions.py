"""All-positions training, padding trimming, length-bucketed batches and BiMamba4Rec's
two directions in one scan, on ml-100k from RecBole's wheel."""
import math

import numpy as np
import pytest
import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.data.interaction import Interaction
from recbole.utils import init_seed

import recbole_mamba
import recbole_mamba.model.all_positions as all_positions
from conftest import TINY
from recbole_mamba.errors import ConfigError
from recbole_mamba.model.all_positions import (
    LengthBucketedLoader,
    SequentialTrainer,
    item_cross_entropy,
    trim_padding,
    window_rows,
)
from recbole_mamba.ssm import Mamba, mamba_pair, scan_time_major

CAUSAL = {"Mamba4Rec": {}, "GRU4Rec": {"embedding_size": 32}}


def config_for(model_name, **overrides):
    return Config(model=model_name, dataset="ml-100k",
                  config_dict={**TINY, "train_neg_sample_args": None, **CAUSAL.get(model_name, {}), **overrides})


@pytest.fixture(scope="module")
def prepared():
    """(train_data, valid_data, test_data) of ml-100k at TINY's L = 20, built once."""
    from conftest import recbole_argv

    with recbole_argv():
        config = config_for("Mamba4Rec")
        init_seed(config["seed"], True)
        return data_preparation(config, create_dataset(config))


def build(model_name, dataset, **overrides):
    torch.manual_seed(0)
    return recbole_mamba.get_model(model_name)(config_for(model_name, **overrides), dataset)


def a_long_window(train_data):
    """One real training window: a user's last prefix row with a full-length history."""
    inter = train_data._dataset.inter_feat
    rows = window_rows(inter["user_id"].numpy(), 20)
    lengths = inter["item_length"][rows]
    row = int(rows[int(torch.argmax(lengths))])
    return inter[torch.tensor([row])]


def prefixes_of(window):
    """The prefix-mode rows of a window: history items[:t] with the next item as target."""
    seq, length, target = window["item_id_list"][0], int(window["item_length"][0]), window["item_id"][0]
    items = torch.cat([seq[:length], target.view(1)])  # the window's items and its target
    histories = torch.zeros(length, seq.shape[0], dtype=torch.long)
    for t in range(1, length + 1):
        histories[t - 1, :t] = items[:t]
    return Interaction({"item_id_list": histories, "item_length": torch.arange(1, length + 1),
                        "item_id": items[1 : length + 1]})


# ---------------------------------------------------------------- the objective

@pytest.mark.parametrize("model_name", list(CAUSAL))
def test_window_loss_is_the_mean_of_its_prefix_losses(model_name, prepared):
    train_data, _, _ = prepared
    model = build(model_name, train_data._dataset, train_mode="all_positions").eval()  # dropout off
    window = a_long_window(train_data)
    assert int(window["item_length"][0]) == 20
    with torch.no_grad():
        all_positions_loss = model.calculate_loss(window)
        model.train_mode = "prefix"
        prefix_loss = model.calculate_loss(prefixes_of(window))  # CE mean over the 20 prefix rows
    torch.testing.assert_close(all_positions_loss, prefix_loss, rtol=1e-5, atol=1e-6)


def test_windows_cover_every_training_target_once(prepared):
    train_data, _, _ = prepared
    model = build("Mamba4Rec", train_data._dataset, train_mode="all_positions")
    trainer = SequentialTrainer(config_for("Mamba4Rec", train_mode="all_positions"), model)
    windows = trainer._window_loader(train_data)
    inter = windows._dataset.inter_feat
    assert int(inter["item_length"].sum()) == len(train_data._dataset)  # one target per training row
    assert windows.step == max(1, TINY["train_batch_size"] // TINY["MAX_ITEM_LIST_LENGTH"])
    users = train_data._dataset.inter_feat["user_id"].numpy()
    assert len(np.unique(inter["user_id"].numpy())) == len(np.unique(users))


def test_long_histories_are_tiled_without_overlap():
    # user 1 has 7 targets (rows 0..6 in time order), L = 3: windows end at its rows 6, 3, 0
    user_ids = np.array([1, 1, 1, 1, 1, 1, 1, 2, 2])
    assert window_rows(user_ids, 3).tolist() == [0, 3, 6, 8]


def test_chunked_cross_entropy_equals_the_plain_one():
    g = torch.Generator().manual_seed(0)
    vectors = torch.randn(37, 8, generator=g, requires_grad=True)
    weight = torch.randn(50, 8, generator=g, requires_grad=True)
    targets = torch.randint(0, 50, (37,), generator=g)
    plain = torch.nn.functional.cross_entropy(vectors @ weight.T, targets)
    chunked = item_cross_entropy(vectors, weight, targets, max_elements=50 * 5)  # chunks of 5 positions
    torch.testing.assert_close(chunked, plain)
    for a, b in zip(torch.autograd.grad(chunked, [vectors, weight]), torch.autograd.grad(plain, [vectors, weight])):
        torch.testing.assert_close(a, b)


def test_bimamba4rec_refuses_all_positions(prepared):
    train_data, _, _ = prepared
    with pytest.raises(ConfigError, match="backward direction at position t reads the items after t") as error:
        build("BiMamba4Rec", train_data._dataset, train_mode="all_positions")
    assert "\n" not in str(error.value)


def test_unknown_train_mode_and_non_ce_loss_are_one_line_errors(prepared):
    train_data, _, _ = prepared
    with pytest.raises(ConfigError, match="use one of prefix, all_positions"):
        build("Mamba4Rec", train_data._dataset, train_mode="windows")
    with pytest.raises(ConfigError, match="use loss_type=CE"):
        build("Mamba4Rec", train_data._dataset, train_mode="all_positions", loss_type="BPR")


def test_gru4rec_session_is_an_alias(prepared):
    train_data, _, _ = prepared
    assert build("GRU4Rec", train_data._dataset, train_mode="session").train_mode == "all_positions"


@pytest.mark.parametrize("model_name", list(CAUSAL))
def test_all_positions_trains_and_evaluates(model_name, prepared):
    train_data, valid_data, test_data = prepared
    config = config_for(model_name, train_mode="all_positions", length_bucketing=True, train_batch_size=640)
    init_seed(config["seed"], True)
    model = recbole_mamba.get_model(model_name)(config, train_data._dataset)
    trainer = SequentialTrainer(config, model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.fit(train_data, valid_data, saved=False, show_progress=False)
    assert math.isfinite(trainer.train_loss_dict[0])
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    result = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    assert 0 < result["ndcg@10"] <= 1


# ---------------------------------------------------------------- padding

@pytest.mark.parametrize("model_name,overrides", [
    ("Mamba4Rec", {}), ("Mamba4Rec", {"num_layers": 2}), ("GRU4Rec", {}),
    ("BiMamba4Rec", {"pooling": "attention"}), ("BiMamba4Rec", {"pooling": "mean"}),
    ("BiMamba4Rec", {"pooling": "last", "fusion": "gate"}),
])
def test_trimming_padding_changes_no_output(model_name, overrides, prepared):
    _, _, test_data = prepared
    batch = next(iter(test_data))[0]
    lengths = batch["item_length"]
    assert int(lengths.max()) < batch["item_id_list"].shape[1] or lengths.unique().numel() > 1
    model = build(model_name, test_data._dataset, **overrides).eval()
    with torch.no_grad():
        cut = model.full_sort_predict(batch)
        model.trim_padding = False
        full = model.full_sort_predict(batch)
        # and a batch padded far wider than its longest row gives the same vectors once cut
        seq = batch["item_id_list"][:, :5].clone()
        short = torch.clamp(lengths, max=5)
        seq[torch.arange(5)[None, :] >= short[:, None]] = 0
        wide = torch.nn.functional.pad(seq, (0, 15))
        torch.testing.assert_close(model.forward(trim_padding(wide, short), short), model.forward(wide, short),
                                   rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cut, full, rtol=1e-5, atol=1e-6)


def test_trim_padding_cuts_to_the_longest_row():
    seq = torch.tensor([[1, 2, 0, 0, 0], [3, 0, 0, 0, 0]])
    assert trim_padding(seq, torch.tensor([2, 1])).tolist() == [[1, 2], [3, 0]]


def test_length_buckets_serve_every_row_once_with_less_padding(prepared):
    train_data, _, _ = prepared
    lengths = train_data._dataset.inter_feat["item_length"].numpy()
    loader = LengthBucketedLoader(train_data, lengths, seed=0)
    batches = loader.batches()
    served = np.concatenate(batches)
    assert np.array_equal(np.sort(served), np.arange(len(lengths)))
    assert len(loader) == len(batches)
    step = train_data.step
    padded = sum(lengths[b].max() * len(b) for b in batches)
    rng = np.random.default_rng(0).permutation(len(lengths))
    padded_random = sum(lengths[rng[i:i + step]].max() * len(rng[i:i + step]) for i in range(0, len(rng), step))
    assert padded < padded_random
    first = next(iter(loader))  # collated by RecBole's loader: an Interaction of the batch's rows
    assert first["item_id_list"].shape[0] == len(batches[0]) or first["item_id_list"].shape[0] <= step
    assert loader.batches()[0].tolist() != batches[0].tolist()  # a new order each epoch


# ---------------------------------------------------------------- both directions in one scan

def test_grouped_scan_equals_one_scan_per_group(monkeypatch):
    import recbole_mamba.ssm.scan_torch as scan_torch

    monkeypatch.setattr(scan_torch, "_SLICE_ELEMENTS", 24)  # several slices of rows per group
    g = torch.Generator().manual_seed(0)
    L, B, D, N = 9, 6, 4, 3
    u, delta = torch.randn(L, 2 * B, D, generator=g), torch.rand(L, 2 * B, D, generator=g)
    Bm, C = torch.randn(L, 2 * B, N, generator=g), torch.randn(L, 2 * B, N, generator=g)
    A = -torch.rand(2, D, N, generator=g)
    inputs = [t.double().requires_grad_() for t in (u, delta, A, Bm, C)]
    y = scan_time_major(*inputs)
    u, delta, A, Bm, C = inputs
    y_ref = torch.cat([scan_time_major(u[:, :B], delta[:, :B], A[0], Bm[:, :B], C[:, :B]),
                       scan_time_major(u[:, B:], delta[:, B:], A[1], Bm[:, B:], C[:, B:])], dim=1)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    weights = torch.randn_like(y)
    for a, b in zip(torch.autograd.grad((y * weights).sum(), inputs), torch.autograd.grad((y_ref * weights).sum(), inputs)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_mamba_pair_equals_two_blocks():
    torch.manual_seed(0)
    first, second = Mamba(16, d_state=4, backend="torch"), Mamba(16, d_state=4, backend="torch")
    x1, x2 = torch.randn(3, 7, 16, requires_grad=True), torch.randn(3, 7, 16, requires_grad=True)
    y1, y2 = mamba_pair(first, second, x1, x2, grouped=True)  # one scan for both (CUDA's default)
    r1, r2 = first(x1), second(x2)
    torch.testing.assert_close(y1, r1)
    torch.testing.assert_close(y2, r2)
    params = [x1, x2, *first.parameters(), *second.parameters()]
    grads = torch.autograd.grad((y1 * 2 + y2).sum(), params)
    grads_ref = torch.autograd.grad((r1 * 2 + r2).sum(), params)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    shared = mamba_pair(first, first, x1, x2)  # one block for both: one call on 2B rows
    torch.testing.assert_close(shared[1], first(x2))
    default = mamba_pair(first, second, x1, x2)  # on a CPU: one block after the other
    torch.testing.assert_close(default[0], r1)


@pytest.mark.parametrize("share,grouped", [(False, False), (False, True), (True, None)])
def test_bimamba_layer_equals_two_separate_directions(share, grouped, prepared, monkeypatch):
    import functools

    import recbole_mamba.model.bimamba4rec as bimamba_module
    from recbole_mamba.model.layers import reverse_valid_prefix

    monkeypatch.setattr(bimamba_module, "mamba_pair", functools.partial(mamba_pair, grouped=grouped))
    _, _, test_data = prepared
    model = build("BiMamba4Rec", test_data._dataset, share_direction_weights=share).eval()
    layer = model.layers[0]
    x = torch.randn(4, 20, 32)
    lengths = torch.tensor([20, 13, 5, 1])
    with torch.no_grad():
        fwd = layer.forward_mamba(x)
        bwd = reverse_valid_prefix(layer.backward_mamba(reverse_valid_prefix(x, lengths)), lengths)
        expected = layer.ffn(layer.LayerNorm(layer.dropout(layer.fuse(torch.cat([fwd, bwd], -1))) + x))
        torch.testing.assert_close(layer(x, lengths), expected, rtol=1e-5, atol=1e-6)


def test_window_buckets_hold_a_position_budget(prepared):
    train_data, _, _ = prepared
    lengths = train_data._dataset.inter_feat["item_length"].numpy()
    loader = LengthBucketedLoader(train_data, lengths, seed=0, max_positions=300)
    batches = loader.batches()
    assert np.array_equal(np.sort(np.concatenate(batches)), np.arange(len(lengths)))
    # every batch of more than one row fits the budget, and short rows share batches
    assert all(len(b) == 1 or len(b) * lengths[b].max() <= 300 for b in batches)
    assert max(len(b) for b in batches) > 300 // lengths.max()

"""GRU4Rec: RecBole equality, ranking losses, negative sampling, session mode, stateful API."""
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.data.interaction import Interaction
from recbole.model.sequential_recommender.gru4rec import GRU4Rec as RecBoleGRU4Rec
from recbole.trainer import Trainer
from recbole.utils import init_seed

import recbole_mamba  # noqa: F401
from conftest import REPO, TINY
from recbole_mamba.errors import ConfigError
from recbole_mamba.model.session_parallel import SampleCache, event_item_counts
from recbole_mamba.model.gru4rec import (
    GRU4Rec,
    GRU4RecTrainer,
    bpr_max_loss,
    bpr_sampled_loss,
    candidate_scores,
    popularity_distribution,
    sampled_softmax_loss,
    session_window_rows,
    top1_loss,
    top1_max_loss,
)

GRU_TINY = {**TINY, "embedding_size": 32}
# ml-100k's 5-star ratings (~21k interactions): real data, a training epoch in seconds
FIVE_STARS = {**GRU_TINY, "val_interval": {"rating": "[5,5]"}}


def sig(x):
    return 1.0 / (1.0 + math.exp(-x))


def gru_config(**overrides):
    return Config(model="GRU4Rec", dataset="ml-100k", config_dict={**GRU_TINY, **overrides})


@pytest.fixture(scope="module")
def gru_data():
    """(config, train_data, test_data) for the plugin GRU4Rec on all of ml-100k."""
    config = gru_config(train_neg_sample_args=None)
    # its own dataset: data_preparation turns a dataset's frames into Interactions in place
    train_data, _, test_data = data_preparation(config, create_dataset(config))
    return config, train_data, test_data


# ---------------------------------------------------------------- equality with RecBole

def _train_and_test(model_class, trainer_class, config):
    """run_recbole's steps, one model class against another."""
    init_seed(config["seed"], config["reproducibility"])
    train_data, valid_data, test_data = data_preparation(config, create_dataset(config))
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = model_class(config, train_data._dataset)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = trainer_class(config, model)
    trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    return initial, trainer.evaluate(test_data, load_best_model=True)


@pytest.mark.parametrize("loss_type", ["CE", "BPR"])
def test_same_metrics_as_recbole_gru4rec(loss_type):
    overrides = {"loss_type": loss_type}
    if loss_type == "CE":
        overrides["train_neg_sample_args"] = None  # RecBole's CE requires it
    recbole_config = Config(model=RecBoleGRU4Rec, dataset="ml-100k", config_dict={**FIVE_STARS, **overrides})
    plugin_config = Config(model="GRU4Rec", dataset="ml-100k", config_dict={**FIVE_STARS, **overrides})
    assert recbole_config["MODEL_INPUT_TYPE"] == plugin_config["MODEL_INPUT_TYPE"] or loss_type == "CE"
    theirs_init, theirs = _train_and_test(RecBoleGRU4Rec, Trainer, recbole_config)
    ours_init, ours = _train_and_test(GRU4Rec, GRU4RecTrainer, plugin_config)
    assert theirs_init.keys() == ours_init.keys()
    for key in theirs_init:
        assert torch.equal(theirs_init[key], ours_init[key]), key
    assert dict(ours) == dict(theirs)
    assert theirs["hit@10"] > 0


def test_plugin_is_the_default_gru4rec():
    from recbole.utils import get_model

    assert get_model("GRU4Rec") is GRU4Rec
    assert gru_config()["n_sample"] == 0 and gru_config()["hidden_size"] == 32


# ---------------------------------------------------------------- losses

POS = torch.tensor([1.0])
NEG = torch.tensor([[0.0, 2.0, 50.0]])
MASK = torch.tensor([[True, True, False]])  # the third "negative" is the row's own positive
S0, S1 = 1 / (1 + math.e**2), math.e**2 / (1 + math.e**2)  # softmax([0, 2])

LOSSES = {
    "BPR": (bpr_sampled_loss, 0.5 * (-math.log(sig(1)) - math.log(sig(-1)))),
    "TOP1": (top1_loss, 0.5 * ((sig(-1) + sig(0)) + (sig(1) + sig(4)))),
    "BPR-max": (
        lambda p, n, m: bpr_max_loss(p, n, m, bpreg=0.5),
        -math.log(S0 * sig(1) + S1 * sig(-1)) + 0.5 * (S0 * 0 + S1 * 4),
    ),
    "TOP1-max": (top1_max_loss, S0 * (sig(-1) + sig(0)) + S1 * (sig(1) + sig(4))),
}


@pytest.mark.parametrize("name", LOSSES)
def test_loss_value_and_gradient_signs(name):
    loss_fn, expected = LOSSES[name]
    pos = POS.clone().requires_grad_()
    neg = NEG.clone().requires_grad_()
    loss = loss_fn(pos, neg, MASK)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert pos.grad.item() < 0  # raising the positive lowers the loss
    assert neg.grad[0, 1].item() > 0  # raising the top-scoring negative raises it
    assert neg.grad[0, 2].item() == 0  # a masked entry takes no part


@pytest.mark.parametrize("name", LOSSES)
def test_loss_rows_without_negatives_are_skipped(name):
    loss_fn, expected = LOSSES[name]
    pos = torch.tensor([1.0, 3.0])
    neg = torch.cat([NEG, torch.tensor([[1.0, 1.0, 1.0]])])
    mask = torch.cat([MASK, torch.tensor([[False, False, False]])])
    assert loss_fn(pos, neg, mask).item() == pytest.approx(expected, rel=1e-6)
    assert loss_fn(pos[1:], neg[1:], mask[1:]).item() == 0.0


# ---------------------------------------------------------------- negatives

def test_popularity_distribution_by_hand():
    counts = torch.tensor([7, 1, 4, 9, 0])  # item 0 is padding, item 4 never seen
    torch.testing.assert_close(popularity_distribution(counts, 0.5), torch.tensor([0, 1, 2, 3, 0]) / 6.0)
    torch.testing.assert_close(popularity_distribution(counts, 0.0), torch.tensor([0, 1, 1, 1, 1]) / 4.0)
    torch.testing.assert_close(popularity_distribution(counts, 1.0), torch.tensor([0, 1, 4, 9, 0]) / 14.0)


def _event_counts(dataset):
    return event_item_counts(dataset.inter_feat, "item_id", "item_id_list", "item_length", dataset.item_num)


def test_event_counts_are_every_training_event(gru_data):
    _, train_data, _ = gru_data
    inter = train_data._dataset.inter_feat
    counts = _event_counts(train_data._dataset)
    # each user's training events: the first row's history item, then one target per row
    users = inter["user_id"].numpy()
    assert int(counts.sum()) == len(inter) + len(np.unique(users))
    by_hand = np.zeros(len(counts), dtype=np.int64)
    for row in range(len(inter)):
        by_hand[int(inter["item_id"][row])] += 1
        if int(inter["item_length"][row]) == 1:
            by_hand[int(inter["item_id_list"][row, 0])] += 1
    assert counts.tolist() == by_hand.tolist()


def test_sampler_follows_popularity_power(gru_data):
    config, train_data, _ = gru_data
    counts = _event_counts(train_data._dataset)
    top, rare = int(counts.argmax()), int(torch.nonzero(counts == 1)[0])
    draws = 200_000
    share = {}
    for alpha in (0.0, 0.5, 1.0):
        model = GRU4Rec(gru_config(sample_alpha=alpha), train_data._dataset)
        torch.manual_seed(0)
        sample = model.sample_negatives(draws)
        assert sample.min() >= 1  # never padding
        freq = torch.bincount(sample, minlength=len(counts)).double() / draws
        expected = counts.double() ** alpha / (counts.double()[1:] ** alpha).sum()
        assert abs(freq[top] - expected[top]) < 4 * math.sqrt(expected[top] / draws) + 1e-4
        share[alpha] = (freq[top] / max(freq[rare], 1.0 / draws)).item()
    assert share[0.0] < 3 < share[0.5] < share[1.0]  # more skew as alpha grows
    assert model.sample_negatives(0).numel() == 0


def test_sample_cache_serves_blocks_that_follow_count_power(gru_data):
    _, train_data, _ = gru_data
    counts = _event_counts(train_data._dataset).double()
    distribution = popularity_distribution(counts, 0.5)
    torch.manual_seed(1)
    cache = SampleCache(distribution, n_sample=1000, cache_size=5000)  # 5 blocks per draw
    blocks = [cache.next() for _ in range(60)]
    assert cache.batches == 5 and all(b.shape == (1000,) for b in blocks)
    assert not torch.equal(blocks[0], blocks[1]) and not torch.equal(blocks[4], blocks[5])  # refilled
    sample = torch.cat(blocks)
    assert sample.min() >= 1 and bool((counts[sample] > 0).all())  # never padding, never an unseen item
    expected = counts**0.5 / (counts[1:] ** 0.5).sum()
    observed = torch.bincount(sample, minlength=len(counts)).double()
    # Pearson chi-square over items with expected count >= 5 (dof ~ their number): far below a 6-sigma bound
    big = expected * len(sample) >= 5
    chi2 = (((observed - expected * len(sample)) ** 2) / (expected * len(sample)))[big].sum().item()
    dof = int(big.sum()) - 1
    assert chi2 < dof + 6 * math.sqrt(2 * dof)
    # and it is not plain popularity: the same draws fail count^1
    linear = counts / counts[1:].sum()
    chi2_linear = (((observed - linear * len(sample)) ** 2) / (linear * len(sample) + 1e-9))[big].sum().item()
    assert chi2_linear > dof + 6 * math.sqrt(2 * dof)


def test_sampled_softmax_loss_by_hand():
    pos = torch.tensor([1.0, 0.5])
    neg = torch.tensor([[0.0, 2.0, 50.0], [1.0, -1.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    row0 = -(1.0 - math.log(math.e**1.0 + math.e**0.0 + math.e**2.0))
    row1 = -(0.5 - math.log(math.e**0.5 + math.e**1.0 + math.e**-1.0 + 1.0))
    assert sampled_softmax_loss(pos, neg, mask).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)


@pytest.mark.parametrize("logq", [0.0, 1.0, 0.5])
def test_sampled_softmax_with_logq_by_hand(logq, gru_data):
    _, train_data, _ = gru_data
    alpha = 0.5
    model = GRU4Rec(gru_config(sampled_softmax=True, logq=logq, n_sample=6, sample_alpha=alpha, item_bias=True,
                               constrained_embedding=True), train_data._dataset)
    torch.manual_seed(3)
    with torch.no_grad():
        model.item_bias.weight.normal_()
    users = torch.randn(4, config_hidden(model))
    targets = torch.tensor([3, 7, 3, 11])  # rows 0 and 2 share a target
    extras = model.sample_negatives(6)
    model.sample_cache.pointer -= 1  # rows_loss draws the same block
    loss = model.rows_loss(users, targets).item()
    counts = _event_counts(train_data._dataset).double().clamp(min=1)
    weight, bias = model.item_embedding.weight.detach().double(), model.item_bias.weight.detach().double()[:, 0]
    candidates = targets.tolist() + extras.tolist()
    log_q = [math.log(counts[c]) for c in targets.tolist()] + [alpha * math.log(counts[c]) for c in extras.tolist()]
    total = 0.0
    for i, target in enumerate(targets.tolist()):
        scores = [float(users[i].double() @ weight[c]) + float(bias[c]) - logq * log_q[j] for j, c in enumerate(candidates)]
        positive = scores[i]
        negatives = [s for j, s in enumerate(scores) if candidates[j] != target]
        total += -(positive - math.log(math.exp(positive) + sum(math.exp(s) for s in negatives)))
    assert loss == pytest.approx(total / 4, rel=1e-5)


def config_hidden(model):
    return model.item_embedding.weight.shape[1]


def test_bpr_max_with_elu_final_activation(gru_data):
    _, train_data, _ = gru_data
    model = GRU4Rec(gru_config(loss_type="BPR-max", final_activation="elu-0.5", bpreg=0.9, n_sample=8),
                    train_data._dataset)
    torch.manual_seed(4)
    users, targets = torch.randn(5, 32) * 3, torch.tensor([1, 2, 3, 4, 2])
    extras = model.sample_negatives(8)
    model.sample_cache.pointer -= 1
    loss = model.rows_loss(users, targets)
    pos, neg, mask = candidate_scores(users, targets, extras, model.item_embedding)
    expected = bpr_max_loss(torch.nn.functional.elu(pos, 0.5), torch.nn.functional.elu(neg, 0.5), mask, 0.9)
    torch.testing.assert_close(loss, expected)
    assert not torch.allclose(loss, bpr_max_loss(pos, neg, mask, 0.9))  # the activation mattered
    tanh = GRU4Rec(gru_config(final_activation="tanh"), train_data._dataset)
    assert tanh.final_activation is torch.tanh


def test_constrained_embedding_and_item_bias(gru_data):
    config, train_data, test_data = gru_data
    model = GRU4Rec(gru_config(constrained_embedding=True, item_bias=True, hidden_size=24, embedding_size=64,
                               gru_bias=True), train_data._dataset).eval()
    assert model.dense is None and model.item_embedding.weight.shape == (train_data._dataset.item_num, 24)
    assert model.gru_layers.bias and model.gru_layers.input_size == 24
    assert torch.count_nonzero(model.item_bias.weight) == 0  # zero-initialised
    with torch.no_grad():
        model.item_bias.weight.normal_()
    batch = next(iter(test_data))[0]
    with torch.no_grad():
        states = model.forward(batch["item_id_list"], batch["item_length"])  # [B, 24]: the GRU state itself
        _, h_n = model.gru_layers(model.item_embedding(batch["item_id_list"]))
        scores = model.full_sort_predict(batch)
        single = model.predict(batch)
    by_hand = states @ model.item_embedding.weight.T + model.item_bias.weight.T
    torch.testing.assert_close(scores, by_hand)
    torch.testing.assert_close(single, by_hand[torch.arange(len(by_hand)), batch["item_id"]])
    full = batch["item_length"] == batch["item_id_list"].shape[1]
    torch.testing.assert_close(states[full], h_n[-1][full])


def test_official_init(gru_data):
    _, train_data, _ = gru_data
    model = GRU4Rec(gru_config(weight_init="official", constrained_embedding=True, gru_bias=True, item_bias=True,
                               hidden_size=40), train_data._dataset)
    h, n_items = 40, train_data._dataset.item_num
    for name, weight in model.gru_layers.named_parameters():
        if name.startswith("bias"):
            assert torch.count_nonzero(weight) == 0, name
            continue
        for gate in weight.detach().chunk(3):  # each [h, 40]: Xavier-uniform bound sqrt(6 / (40 + h))
            bound = math.sqrt(6 / (gate.shape[0] + gate.shape[1]))
            assert gate.abs().max() <= bound and gate.abs().max() > 0.9 * bound, name
    table_bound = math.sqrt(6 / (n_items + h))
    assert model.item_embedding.weight.abs().max() <= table_bound
    assert model.item_embedding.weight.std().item() == pytest.approx(table_bound / math.sqrt(3), rel=0.05)


def test_no_positive_among_its_negatives():
    embedding = torch.nn.Embedding(10, 4)
    targets = torch.tensor([3, 5, 3, 7])  # rows 0 and 2 share a target
    extra = torch.tensor([3, 9, 7, 1])  # extras that hit positives
    users = torch.randn(4, 4)
    pos, neg, mask = candidate_scores(users, targets, extra, embedding)
    candidates = torch.cat([targets, extra])
    assert torch.equal(mask, candidates.unsqueeze(0) != targets.unsqueeze(1))
    assert not (mask & (candidates.unsqueeze(0) == targets.unsqueeze(1))).any()
    assert mask.sum(1).tolist() == [5, 7, 5, 6]
    torch.testing.assert_close(pos, (users * embedding(targets)).sum(1))
    torch.testing.assert_close(neg, users @ embedding(candidates).T)


# ---------------------------------------------------------------- session mode

def test_session_window_rows_tile_each_user():
    # user 1 has 7 targets (rows 0..6), user 2 has 2 (rows 7..8, stored out of order)
    user_ids = np.array([1, 1, 1, 2, 1, 1, 1, 2, 1])
    # user 1's rows are 0,1,2,4,5,6,8 in time order; keep its last and every 3rd back
    assert session_window_rows(user_ids, 3).tolist() == [0, 4, 7, 8]


def test_session_windows_cover_every_training_target_once(gru_data):
    config, train_data, _ = gru_data
    inter = train_data._dataset.inter_feat
    rows = session_window_rows(inter["user_id"].numpy(), config["MAX_ITEM_LIST_LENGTH"])
    # a kept row scores item_seq_len targets; together exactly the training rows
    assert int(inter["item_length"][rows].sum()) == len(inter)
    assert len(np.unique(inter["user_id"][rows].numpy())) == len(np.unique(inter["user_id"].numpy()))


def test_session_rows_predict_the_next_item(gru_data):
    config, train_data, _ = gru_data
    model = GRU4Rec(gru_config(train_mode="session"), train_data._dataset).eval()
    item_seq = torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0]])
    batch = Interaction({"item_id_list": item_seq, "item_length": torch.tensor([3, 2]), "item_id": torch.tensor([11, 12])})
    users, targets = model._training_rows(batch)
    assert targets.tolist() == [6, 7, 11, 9, 12]
    every = model.every_position(item_seq)
    torch.testing.assert_close(users, torch.cat([every[0, :3], every[1, :2]]))


def test_session_mode_trains_and_evaluates():
    config = Config(
        model="GRU4Rec", dataset="ml-100k",
        config_dict={**FIVE_STARS, "train_mode": "session", "loss_type": "TOP1-max", "n_sample": 32,
                     "train_neg_sample_args": None},
    )
    init_seed(config["seed"], True)
    train_data, valid_data, test_data = data_preparation(config, create_dataset(config))
    model = GRU4Rec(config, train_data._dataset)
    trainer = GRU4RecTrainer(config, model)
    windows = trainer._window_loader(train_data)
    assert windows.step == config["train_batch_size"] // config["MAX_ITEM_LIST_LENGTH"]
    assert config["train_batch_size"] == GRU_TINY["train_batch_size"]  # restored
    assert int(windows._dataset.inter_feat["item_length"].sum()) == len(train_data._dataset)
    trainer.fit(train_data, valid_data, saved=False, show_progress=False)
    assert math.isfinite(trainer.train_loss_dict[0])
    result = trainer.evaluate(test_data, load_best_model=False)
    assert 0 < result["hit@10"] <= 1


@pytest.mark.parametrize("loss_type", ["BPR", "TOP1", "BPR-max"])
def test_sampled_losses_have_gradients_in_both_modes(loss_type, gru_data):
    config, train_data, _ = gru_data
    batch = train_data._dataset.inter_feat[torch.arange(64)]
    for mode in ("prefix", "session"):
        if loss_type == "BPR" and mode == "prefix":
            continue  # RecBole's BPR: dataloader negatives, covered by the equality test
        model = GRU4Rec(gru_config(loss_type=loss_type, train_mode=mode, n_sample=16), train_data._dataset)
        loss = model.calculate_loss(batch)
        loss.backward()
        assert math.isfinite(loss.item()) and model.item_embedding.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------- stateful API

@pytest.mark.parametrize("num_layers", [1, 2])
def test_step_matches_forward_at_every_prefix(num_layers, gru_data):
    config, train_data, _ = gru_data
    model = GRU4Rec(gru_config(num_layers=num_layers), train_data._dataset).eval()
    inter = train_data._dataset.inter_feat
    rows = torch.nonzero(inter["item_length"] == config["MAX_ITEM_LIST_LENGTH"])[:32, 0]
    item_seq = inter["item_id_list"][rows]  # [32, L]
    state = model.init_state(len(rows), item_seq.device)
    assert state.shape == (num_layers, 32, config["hidden_size"])
    with torch.no_grad():
        for t in range(item_seq.shape[1]):
            user_vector, state = model.step(item_seq[:, t], state)
            prefix_len = torch.full((len(rows),), t + 1)
            expected = model.forward(item_seq, prefix_len)  # padding-free rows: position t is the prefix end
            assert user_vector.shape == (32, config["embedding_size"])
            torch.testing.assert_close(user_vector, expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- config errors

@pytest.mark.parametrize(
    "overrides, message",
    [({"loss_type": "TOP2"}, "loss_type='TOP2' is not supported by GRU4Rec; use one of CE, BPR, TOP1"),
     ({"n_sample": -1}, "n_sample=-1 must be an integer >= 0"),
     ({"sample_alpha": -0.5}, "sample_alpha=-0.5 must be a number >= 0"),
     ({"train_mode": "parallel"}, "train_mode='parallel' is not supported"),
     ({"final_activation": "relu"}, "final_activation='relu' is not supported by GRU4Rec; use linear, tanh or elu-"),
     ({"final_activation": "elu-0"}, "final_activation='elu-0' is not supported"),
     ({"weight_init": "xavier"}, "weight_init='xavier' is not supported by GRU4Rec; use one of recbole, official"),
     ({"logq": 1.0}, "logq=1.0 corrects the sampled softmax only"),
     ({"hidden_dropout_prob": 1.0}, "hidden_dropout_prob=1.0 must be in [0, 1)")],
)
def test_bad_config_is_a_one_line_error(overrides, message, gru_data):
    _, train_data, _ = gru_data
    with pytest.raises(ConfigError) as error:
        GRU4Rec(gru_config(**overrides), train_data._dataset)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_cli_bad_n_sample_is_one_line(tmp_path):
    command = [sys.executable, os.path.join(REPO, "run_recbole.py"), "--model=GRU4Rec", "--loss_type=TOP1",
               "--n_sample=-3", "--epochs=1", "--use_gpu=False", "--MAX_ITEM_LIST_LENGTH=20"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "n_sample=-3 must be an integer >= 0" in last
    assert "Traceback" not in done.stderr

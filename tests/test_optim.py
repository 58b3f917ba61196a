"""learner=adagrad_momentum: the update by hand, sparse rows equal to dense, the trainer builds it."""
import math

import pytest
import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation

import recbole_mamba  # noqa: F401
from conftest import TINY
from recbole_mamba.errors import ConfigError
from recbole_mamba.model.gru4rec import GRU4Rec
from recbole_mamba.model.all_positions import SequentialTrainer
from recbole_mamba.optim import AdagradMomentum


def test_step_equals_hand_written_update():
    lr, momentum, eps = 0.2, 0.5, 1e-6
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    opt = AdagradMomentum([p], lr=lr, momentum=momentum, eps=eps)
    grads = [[0.3, -1.0, 0.0], [0.1, 2.0, -0.5], [0.0, 0.0, 0.0]]
    value, acc, mom = [1.0, -2.0, 0.5], [0.0] * 3, [0.0] * 3
    moved_by = []
    for g in grads:
        before = p.detach().clone()
        p.grad = torch.tensor(g)
        opt.step()
        moved_by.append(p.detach() - before)
        for k in range(3):
            acc[k] += g[k] ** 2
            mom[k] = momentum * mom[k] - lr * g[k] / math.sqrt(acc[k] + eps)
            value[k] += mom[k]
        assert p.detach().tolist() == pytest.approx(value, rel=1e-6, abs=1e-7)
    # the third step had no gradient: momentum alone moved p, by momentum x the second step's move
    torch.testing.assert_close(moved_by[2], momentum * moved_by[1])


def test_without_momentum_it_is_adagrad():
    p = torch.nn.Parameter(torch.tensor([1.0, 3.0]))
    q = torch.nn.Parameter(torch.tensor([1.0, 3.0]))
    ours, torchs = AdagradMomentum([p], lr=0.1, eps=1e-10), torch.optim.Adagrad([q], lr=0.1, eps=1e-10)
    for g in ([0.5, -1.0], [2.0, 0.25]):
        p.grad, q.grad = torch.tensor(g), torch.tensor(g)
        ours.step()
        torchs.step()
    # torch adds eps after the square root, we before: equal up to that
    torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("momentum", [0.0, 0.3])
def test_sparse_rows_equal_dense(momentum):
    torch.manual_seed(0)
    dense = torch.nn.Embedding(50, 8)
    sparse = torch.nn.Embedding(50, 8, sparse=True)
    sparse.weight.data.copy_(dense.weight.data)
    opt_dense = AdagradMomentum(dense.parameters(), lr=0.1, momentum=momentum)
    opt_sparse = AdagradMomentum(sparse.parameters(), lr=0.1, momentum=momentum)
    for step in range(6):
        rows = torch.randint(0, 50, (12,))  # repeats: the sparse gradient sums them when coalesced
        target = torch.randn(12, 8)
        for table, opt in ((dense, opt_dense), (sparse, opt_sparse)):
            opt.zero_grad()
            ((table(rows) - target) ** 2).sum().backward()
            opt.step()
        assert sparse.weight.grad.is_sparse and not dense.weight.grad.is_sparse
        assert torch.equal(dense.weight, sparse.weight), step
    untouched = sorted(set(range(50)) - set(rows.tolist()))
    assert torch.equal(opt_dense.state[dense.weight]["acc"][untouched], opt_sparse.state[sparse.weight]["acc"][untouched])


def test_touched_rows_momentum_is_the_official_sparse_step():
    """sparse_momentum=touched_rows: a row moves only on the steps whose gradient reaches it,
    with its own momentum decayed once per such step (checked against a per-row loop)."""
    torch.manual_seed(1)
    table = torch.nn.Embedding(20, 4, sparse=True).double()
    start = table.weight.detach().clone()
    opt = AdagradMomentum(table.parameters(), lr=0.1, momentum=0.5, sparse_momentum="touched_rows")
    acc, mom, expected = torch.zeros(20, 4, dtype=torch.float64), torch.zeros(20, 4, dtype=torch.float64), start.clone()
    seen, batches = set(), []
    for _ in range(5):
        rows = torch.randint(0, 10, (6,))  # rows 10..19 are never sampled
        target = torch.randn(6, 4, dtype=torch.float64)
        batches.append((rows, target))
        opt.zero_grad()
        ((table(rows) - target) ** 2).sum().backward()
        grad = table.weight.grad.to_dense()
        opt.step()
        for r in sorted(set(rows.tolist())):
            acc[r] += grad[r] ** 2
            mom[r] = 0.5 * mom[r] - 0.1 * grad[r] / torch.sqrt(acc[r] + 1e-6)
            expected[r] += mom[r]
        seen |= set(rows.tolist())
    torch.testing.assert_close(table.weight.detach(), expected, rtol=1e-12, atol=1e-12)
    assert torch.equal(table.weight[10:], start[10:]) and len(seen) > 1
    # the exact step, on the same batches, moves rows by their momentum even when not sampled
    exact_table = torch.nn.Embedding(20, 4, sparse=True).double()
    exact_table.weight.data.copy_(start)
    exact = AdagradMomentum(exact_table.parameters(), lr=0.1, momentum=0.5)
    for rows, target in batches:
        exact.zero_grad()
        ((exact_table(rows) - target) ** 2).sum().backward()
        exact.step()
    assert not torch.allclose(exact_table.weight, table.weight)


def test_bad_values_are_one_line_errors():
    p = [torch.nn.Parameter(torch.zeros(2))]
    for kwargs, message in (({"lr": 0}, "learning_rate=0 must be > 0"), ({"lr": 0.1, "momentum": 1.0}, "momentum=1.0"),
                            ({"lr": 0.1, "eps": 0}, "adagrad_eps=0"),
                            ({"lr": 0.1, "sparse_momentum": "lazy"}, "sparse_momentum='lazy' must be one of")):
        with pytest.raises(ConfigError, match=message):
            AdagradMomentum(p, **kwargs)


def test_trainer_builds_it_with_sparse_item_tables():
    config = Config(model="GRU4Rec", dataset="ml-100k",
                    config_dict={**TINY, "learner": "adagrad_momentum", "learning_rate": 0.05, "momentum": 0.1,
                                 "loss_type": "BPR-max", "n_sample": 16, "item_bias": True,
                                 "train_neg_sample_args": None})
    train_data, _, _ = data_preparation(config, create_dataset(config))
    model = GRU4Rec(config, train_data._dataset)
    trainer = SequentialTrainer(config, model)
    assert isinstance(trainer.optimizer, AdagradMomentum)
    assert trainer.optimizer.param_groups[0]["momentum"] == 0.1
    assert model.item_embedding.sparse and model.item_bias.sparse
    batch = train_data._dataset.inter_feat[torch.arange(64)]
    model.calculate_loss(batch).backward()
    assert model.item_embedding.weight.grad.is_sparse
    before = model.item_embedding.weight.detach().clone()
    trainer.optimizer.step()
    assert not torch.equal(before, model.item_embedding.weight)
    with pytest.raises(ConfigError, match="no weight decay"):
        SequentialTrainer(Config(model="GRU4Rec", dataset="ml-100k",
                                 config_dict={**TINY, "learner": "adagrad_momentum", "weight_decay": 0.1}), model)

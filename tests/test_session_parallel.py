"""train_mode=session_parallel on the real yoochoose sample (dataset_atomic/raw/yoochoose):
sequences rebuilt from RecBole's rows, the lane schedule, state carried and reset exactly at
session ends, one optimizer step per time step, and a trained model that beats popularity."""
import os

import numpy as np
import pytest
import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_seed

import recbole_mamba  # noqa: F401
from conftest import REPO
from recbole_mamba.data.session import convert
from recbole_mamba.errors import ConfigError
from recbole_mamba.model.all_positions import SequentialTrainer
from recbole_mamba.model.gru4rec import GRU4Rec
from recbole_mamba.model.session_parallel import SessionLanes, carried_state, session_sequences

RAW = os.path.join(REPO, "dataset_atomic", "raw", "yoochoose")
TRAIN = os.path.join(RAW, "yoochoose-clicks-100k_train_head.txt")
TEST = os.path.join(RAW, "yoochoose-clicks-100k_test_head.txt")

OFFICIAL_XE = {  # the official rsc15 XE param file's shapes, smaller where only speed matters
    "loss_type": "CE", "sampled_softmax": True, "logq": 1.0, "constrained_embedding": True, "item_bias": True,
    "gru_bias": True, "weight_init": "official", "hidden_size": 32, "dropout_prob": 0.0, "hidden_dropout_prob": 0.4,
    "learner": "adagrad_momentum", "learning_rate": 0.2, "momentum": 0.2, "n_sample": 256, "sample_alpha": 0.5,
    "train_batch_size": 32, "train_mode": "session_parallel",
}


@pytest.fixture(scope="module")
def yoochoose(tmp_path_factory):
    """(config, train_data, test_data, training sessions by the converter) for the sample."""
    import sys

    folder = str(tmp_path_factory.mktemp("yc"))
    convert(TRAIN, TEST, "yc", folder, progress=False)
    saved_argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        config = Config(model="GRU4Rec", dataset="yc", config_file_list=[os.path.join(folder, "yc", "yc.yaml")],
                        config_dict={"data_path": folder, "use_gpu": False, "state": "WARNING", "seed": 2020,
                                     "show_progress": False, "epochs": 1, "eval_step": 0, **OFFICIAL_XE})
        train_data, _, test_data = data_preparation(config, create_dataset(config))
    finally:
        sys.argv = saved_argv
    sessions, order = {}, []
    for line in open(os.path.join(folder, "yc", "yc.train.inter"), encoding="utf-8").read().splitlines()[1:]:
        session, history, target = line.split("\t")
        if session not in sessions:
            order.append(session)
            sessions[session] = history.split()
        sessions[session].append(target)
    return config, train_data, test_data, [sessions[s] for s in order]


def _sequences(train_data):
    inter = train_data._dataset.inter_feat
    return session_sequences(inter["session_id"].numpy(), inter["item_id_list"].numpy(), inter["item_length"].numpy(),
                             inter["item_id"].numpy())


def test_sequences_rebuilt_from_recbole_rows_are_the_sessions(yoochoose):
    _, train_data, _, sessions = yoochoose
    items, offsets = _sequences(train_data)
    tokens = train_data._dataset.field2id_token["item_id"]
    rebuilt = [[tokens[i] for i in items[offsets[k] : offsets[k + 1]]] for k in range(len(offsets) - 1)]
    assert rebuilt == sessions  # every session in full, in the converter's (start time) order
    assert len(items) - (len(offsets) - 1) == len(train_data._dataset)  # one target per training row


def test_lanes_serve_every_transition_once_and_reset_exactly_at_session_ends(yoochoose):
    _, train_data, _, _ = yoochoose
    _, offsets = _sequences(train_data)
    positions = np.arange(offsets[-1])  # items = their own position, to see where each lane is
    lanes = SessionLanes(positions, offsets, batch_size=32)
    # state row of a lane: (session + 1, position) after its last step; zero means "fresh"
    state, served, steps = None, [], 0
    for inputs, targets, carry, fresh in lanes:
        session = np.searchsorted(offsets, inputs.numpy(), side="right") - 1  # [n]
        assert np.array_equal(targets.numpy(), inputs.numpy() + 1)
        assert np.all(targets.numpy() < offsets[session + 1])  # the target is in the same session
        if state is None:
            assert fresh.all()
        else:
            state = carried_state(state, carry, fresh)
            starting = inputs.numpy() == offsets[session]
            # a lane starts from zeros exactly when its input is a session's first item ...
            assert np.array_equal(state[0, :, 0].numpy() == 0, starting)
            # ... and otherwise from its own session's previous step
            going_on = ~starting
            assert np.array_equal(state[0, going_on, 0].numpy(), session[going_on] + 1)
            assert np.array_equal(state[0, going_on, 1].numpy(), inputs.numpy()[going_on] - 1)
        state = torch.stack([torch.from_numpy(session + 1.0), inputs.double()], dim=1)[None]  # [1, n, 2]
        served.extend(inputs.tolist())
        steps += 1
    every_transition = np.concatenate([np.arange(a, b - 1) for a, b in zip(offsets[:-1], offsets[1:])])
    assert sorted(served) == every_transition.tolist()  # each (item, next item) pair once
    assert steps == len(lanes) and steps > (offsets[-1] - len(offsets) + 1) / 32  # lanes close at the end


def test_carried_state_gives_the_forward_pass_of_each_prefix(yoochoose):
    """The real model stepped through the lanes (eval mode) scores every position as
    ``forward`` on that session's prefix: state carried within a session, zero at its start."""
    config, train_data, _, _ = yoochoose
    init_seed(2020, True)
    model = GRU4Rec(config, train_data._dataset).eval()
    items, offsets = _sequences(train_data)
    lanes = SessionLanes(items, offsets, batch_size=16)
    where = SessionLanes(np.arange(offsets[-1]), offsets, batch_size=16)
    state = None
    with torch.no_grad():
        for step, ((inputs, _, carry, fresh), (positions, _, _, _)) in enumerate(zip(lanes, where)):
            state = model.init_state(len(inputs)) if state is None else carried_state(state, carry, fresh)
            vectors, state = model.step(inputs, state)
            if step % 25:
                continue
            session = np.searchsorted(offsets, positions.numpy(), side="right") - 1
            length = positions.numpy() - offsets[session] + 1
            width = int(length.max())
            prefixes = torch.zeros(len(inputs), width, dtype=torch.long)
            for row, (s, n) in enumerate(zip(session, length)):
                prefixes[row, :n] = torch.from_numpy(items[offsets[s] : offsets[s] + n])
            expected = model.forward(prefixes, torch.from_numpy(length))
            torch.testing.assert_close(vectors, expected, rtol=1e-5, atol=1e-5)


def test_one_optimizer_step_per_time_step_and_it_learns(yoochoose):
    config, train_data, test_data, _ = yoochoose
    init_seed(2020, True)
    model = GRU4Rec(config, train_data._dataset)
    trainer = SequentialTrainer(config, model)
    steps = []
    trainer.optimizer.register_step_post_hook(lambda optimizer, args, kwargs: steps.append(1))
    trainer.fit(train_data, None, saved=False, show_progress=False)
    items, offsets = _sequences(train_data)
    assert len(steps) == len(SessionLanes(items, offsets, config["train_batch_size"]))
    assert np.isfinite(trainer.train_loss_dict[0])
    result = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    # most-popular-item baseline on the same test rows, for a floor
    counts = np.bincount(items, minlength=train_data._dataset.item_num)
    counts[0] = 0
    top20 = set(np.argsort(-counts, kind="stable")[:20].tolist())
    test_targets = test_data._dataset.inter_feat["item_id"].numpy()
    popular_recall = np.mean([t in top20 for t in test_targets])
    assert result["recall@20"] > 1.5 * popular_recall and result["mrr@20"] > 0


def test_plain_trainer_refuses_session_parallel(yoochoose):
    config, train_data, _, _ = yoochoose
    model = GRU4Rec(config, train_data._dataset)
    with pytest.raises(ConfigError, match="session_parallel trains through GRU4Rec's trainer"):
        model.calculate_loss(train_data._dataset.inter_feat[torch.arange(4)])


def test_a_step_with_few_open_lanes_weighs_each_event_the_same(yoochoose):
    """The last steps of an epoch have few lanes open: their loss is the sum over the open
    lanes / train_batch_size, not their mean (full-size Adagrad steps from 2 rows diverged)."""
    config, train_data, _, _ = yoochoose
    init_seed(2020, True)
    model = GRU4Rec(config, train_data._dataset).eval()
    inputs, targets = torch.tensor([5, 9]), torch.tensor([6, 11])
    state = model.init_state(2)
    scaled, _ = model.session_parallel_loss(inputs, targets, state, lanes=32)
    model.sample_cache.pointer -= 1  # the same extra negatives again
    full, _ = model.session_parallel_loss(inputs, targets, state, lanes=2)
    torch.testing.assert_close(scaled, full * 2 / 32)

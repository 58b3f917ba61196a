"""MDAF and DCNv3 (CTR): layer equations, gate, label smoothing, pooling, the Taobao
CTR converter on a real slice, and tiny end-to-end runs through RecBole."""
import json
import os

import numpy as np
import pytest
import torch
from recbole.config import Config
from recbole.data import create_dataset

import recbole_mamba
from recbole_mamba.data.ctr import convert as convert_ctr, day_of
from recbole_mamba.data.taobao import read_user_behavior
from recbole_mamba.errors import ConfigError
from recbole_mamba.model.ctr_base import smoothed_targets
from recbole_mamba.model.dcnv3 import CrossLayer, DCNv3Backbone, half_split, self_mask, tri_bce_loss
from recbole_mamba.model.mdaf import FUSIONS, gated_fusion, with_target_appended
from recbole_mamba.trainer import warmup_cosine_factor

from conftest import REPO, recbole_argv

RAW_SLICE = os.path.join(REPO, "dataset_atomic", "raw", "taobao", "UserBehavior_head.csv")
CTR_SAMPLE = os.path.join(REPO, "dataset_atomic")
TINY_CTR = {
    "data_path": CTR_SAMPLE, "use_gpu": False, "show_progress": False, "state": "WARNING",
    "hidden_size": 32, "d_state": 8, "user_embedding_size": 16, "item_embedding_size": 16,
    "category_embedding_size": 8, "train_batch_size": 512, "epochs": 1, "warmup_epochs": 1, "seed": 2020,
}


def test_self_mask_and_cross_layer_equations():
    torch.manual_seed(0)
    for exponential in (False, True):
        layer = CrossLayer(4, dropout=0.0, exponential=exponential).eval()
        with torch.no_grad():
            layer.b.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0]))
        x0, x = torch.randn(3, 4), torch.randn(3, 4)
        h = x @ layer.W.weight.t()  # [3, 2]
        ln = torch.nn.functional.layer_norm(h, (2,), layer.layer_norm.weight, layer.layer_norm.bias)
        mask = torch.cat([h, h * torch.relu(ln)], dim=-1)  # [3, 4]
        multiplier = x if exponential else x0
        torch.testing.assert_close(layer(x0, x), multiplier * (mask + layer.b) + x)
        torch.testing.assert_close(self_mask(h, layer.layer_norm), mask)
    with pytest.raises(ConfigError, match="even width"):
        CrossLayer(5, 0.0, False)


def test_dcnv3_details_of_the_authors_code():
    torch.manual_seed(0)
    layer = CrossLayer(64, dropout=1.0, exponential=True)
    # the cross bias starts U(0, 1), not 0
    assert 0 <= float(layer.b.min()) and float(layer.b.max()) <= 1 and float(layer.b.std()) > 0.2
    # dropout acts on the whole new x (with p = 1 nothing is left), not on the cross term only
    x = torch.randn(5, 64)
    assert torch.count_nonzero(layer.train()(x, x)) == 0
    # LCN and ECN have their own depth
    backbone = DCNv3Backbone(8, num_layers=3, dropout=0.1, shallow_layers=2, shallow_dropout=0.3)
    assert len(backbone.ecn.layers) == 3 and len(backbone.lcn.layers) == 2
    assert backbone.lcn.layers[0].dropout.p == 0.3 and backbone.ecn.layers[0].dropout.p == 0.1
    # the input order: every field's first half, then every field's second half
    fields = torch.arange(12.0).view(1, 3, 4)  # 3 fields of 4: [0..3], [4..7], [8..11]
    assert half_split(fields).tolist() == [[[0, 1, 4, 5, 8, 9, 2, 3, 6, 7, 10, 11]]]
    assert half_split(fields, num_heads=2).tolist() == [[[0, 4, 8, 1, 5, 9], [2, 6, 10, 3, 7, 11]]]


def test_tri_bce_weights_stay_in_the_graph():
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0])
    lcn = torch.tensor([-2.0, 1.0, 0.5, 0.3], requires_grad=True)
    ecn = torch.tensor([0.5, -1.0, 2.0, -0.3], requires_grad=True)
    loss = tri_bce_loss(bce, lcn, ecn, labels)
    loss.backward()
    # by hand, with the weights differentiated too
    a, b = lcn.detach().clone().requires_grad_(), ecn.detach().clone().requires_grad_()
    mean_loss = bce((a + b) / 2, labels)
    la, lb = bce(a, labels), bce(b, labels)
    expected = mean_loss + torch.relu(la - mean_loss) * la + torch.relu(lb - mean_loss) * lb
    detached = mean_loss + torch.relu(la - mean_loss).detach() * la + torch.relu(lb - mean_loss).detach() * lb
    grad_detached = torch.autograd.grad(detached, a, retain_graph=True)[0]
    expected.backward()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(lcn.grad, a.grad)
    assert float(la - mean_loss) > 0  # the LCN head is the worse one here, so its weight counts
    assert not torch.allclose(lcn.grad, grad_detached)


def test_dcnv3_embeds_every_field_with_recboles_tables(ctr_dataset):
    _, dataset, batch = ctr_dataset
    with recbole_argv():
        config = Config(model="DCNv3", dataset="taobao-ctr", config_dict=dict(TINY_CTR))
    model = recbole_mamba.get_model("DCNv3")(config, dataset).eval()
    # RecBole's fields: the token fields user, item and category (joined from the .item file) and the
    # token_seq history (mean-pooled by RecBole); the timestamp is a float outside numerical_features
    assert model.token_field_names == ["user_id", "item_id", "category_id"]
    assert model.token_seq_field_names == ["item_id_list"] and model.float_field_names == []
    assert model.cross_input(batch).shape == (len(batch), 1, 4 * 16)
    torch.testing.assert_close(model.cross_input(batch), half_split(model.concat_embed_input_fields(batch)))
    assert not hasattr(model, "first_order_linear")  # no LR term: no untrained weights in the count
    assert len(model.backbone.ecn.layers) == 3 and len(model.backbone.lcn.layers) == 2  # the YAML's defaults
    with recbole_argv():
        config = Config(model="DCNv3", dataset="taobao-ctr", config_dict={**TINY_CTR, "embedding_size": 6,
                                                                          "num_heads": 2})
    with pytest.raises(ConfigError, match="divisible by 2\\*num_heads=4"):
        recbole_mamba.get_model("DCNv3")(config, dataset)


def test_label_smoothing_and_fusion_and_schedule():
    torch.testing.assert_close(smoothed_targets(torch.tensor([0.0, 1.0]), 0.05), torch.tensor([0.025, 0.975]))
    s, q, g = torch.randn(2, 3), torch.randn(2, 3), torch.tensor([[0.2], [0.9]])
    torch.testing.assert_close(gated_fusion(g, s, q), torch.stack([0.2 * s[0] + 0.8 * q[0], 0.9 * s[1] + 0.1 * q[1]]))
    factors = [warmup_cosine_factor(e, 2, 10) for e in range(10)]
    assert factors[:3] == [0.5, 1.0, 1.0] and factors[-1] < factors[3] and all(0 < f <= 1 for f in factors)


def test_ctr_converter_on_a_real_slice(tmp_path):
    summary = convert_ctr(RAW_SLICE, "slice", str(tmp_path), history=5, neg_ratio=2, progress=False)
    events, _ = read_user_behavior(RAW_SLICE, progress=False)
    inter = os.path.join(tmp_path, "slice", "slice.inter")
    with open(inter) as f:
        header = f.readline().rstrip("\n").split("\t")
        rows = [line.rstrip("\n").split("\t") for line in f]
    assert header == ["user_id:token", "item_id:token", "label:float", "timestamp:float", "item_id_list:token_seq"]
    by_user = {u: frame for u, frame in events.groupby("user_id")}
    positives = negatives = 0
    for user, item, label, timestamp, history in rows:
        frame = by_user[int(user)]
        past = [int(i) for i in history.split(" ")]
        assert 1 <= len(past) <= 5
        earlier = frame[frame["timestamp"] < float(timestamp)]
        assert past == earlier["item_id"].tolist()[-len(past):]  # the latest earlier behaviours, oldest first
        assert int(item) not in past  # never the target itself
        if label == "1":
            positives += 1
        else:
            negatives += 1
            assert int(item) not in set(frame["item_id"])  # never an item the user touched
            same_day = events[events["timestamp"].map(day_of) == day_of(float(timestamp))]
            assert int(item) in set(same_day["item_id"])  # drawn from that day's behaviours
    assert negatives == 2 * positives > 0
    with open(os.path.join(tmp_path, "slice", "slice.item")) as f:
        categories = dict(line.rstrip("\n").split("\t") for line in list(f)[1:])
    assert {r[1] for r in rows} <= set(categories)


@pytest.fixture(scope="module")
def ctr_dataset():
    from recbole.data import data_preparation

    with recbole_argv():
        config = Config(model="MDAF", dataset="taobao-ctr", config_dict=dict(TINY_CTR))
        train, _, _ = data_preparation(config, create_dataset(config))
        return config, train._dataset, next(iter(train))


@pytest.mark.parametrize("fusion", FUSIONS)
def test_mdaf_ablations_build_and_score(ctr_dataset, fusion):
    config, dataset, batch = ctr_dataset
    config = Config(model="MDAF", dataset="taobao-ctr", config_dict={**TINY_CTR, "fusion": fusion})
    model = recbole_mamba.get_model("MDAF")(config, dataset).eval()
    probs = model.predict(batch)
    assert probs.shape == (len(batch),) and torch.all((probs > 0) & (probs < 1))
    if fusion == "gate":
        g = model.gate_values(batch)
        assert torch.all((g > 0) & (g < 1))
        s, q, gate = model.branches(batch)
        torch.testing.assert_close(model(batch), model.head(gate * s + (1 - gate) * q).squeeze(-1))


def test_mdaf_ablations_build_only_their_branches(ctr_dataset):
    config, dataset, _ = ctr_dataset

    def model_for(fusion):
        return recbole_mamba.get_model("MDAF")(
            Config(model="MDAF", dataset="taobao-ctr", config_dict={**TINY_CTR, "fusion": fusion}), dataset)

    models = {fusion: model_for(fusion) for fusion in FUSIONS}
    count = {f: sum(p.numel() for p in m.parameters()) for f, m in models.items()}
    gate_params = sum(p.numel() for p in models["gate"].gate_mlp.parameters())
    static_params = sum(p.numel() for n, p in models["gate"].named_parameters() if n.startswith(("static_proj", "dcn")))
    sequence_params = sum(p.numel() for n, p in models["gate"].named_parameters()
                          if n.startswith(("sequence_proj", "mamba_layers")))
    d = TINY_CTR["hidden_size"]
    assert count["fixed"] == count["gate"] - gate_params
    assert count["static"] == count["fixed"] - sequence_params
    assert count["sequential"] == count["fixed"] - static_params
    assert count["concat"] == count["fixed"] + d * 64  # the head reads [s; q] (2d) instead of d
    assert not hasattr(models["static"], "mamba_layers") and not hasattr(models["sequential"], "dcn")


def test_target_is_written_after_the_last_behaviour():
    item_seq = torch.tensor([[5, 6, 0], [7, 0, 0], [1, 2, 3]])
    seq, mask = with_target_appended(item_seq, item_seq > 0, torch.tensor([9, 8, 4]))
    assert seq.tolist() == [[5, 6, 9, 0], [7, 8, 0, 0], [1, 2, 3, 4]]
    assert mask.tolist() == [[True, True, True, False], [True, True, False, False], [True, True, True, True]]


def test_sequence_target_makes_the_sequence_vector_depend_on_the_candidate(ctr_dataset):
    config, dataset, batch = ctr_dataset
    from recbole.data.interaction import Interaction

    other = Interaction(dict(batch.interaction))
    other.interaction[config["ITEM_ID_FIELD"]] = torch.roll(batch[config["ITEM_ID_FIELD"]], 1)
    for sequence_target in (False, True):
        cfg = Config(model="MDAF", dataset="taobao-ctr", config_dict={**TINY_CTR, "sequence_target": sequence_target})
        torch.manual_seed(0)
        model = recbole_mamba.get_model("MDAF")(cfg, dataset).eval()
        with torch.no_grad():
            moved = (model.sequence_vector(batch) - model.sequence_vector(other)).abs().amax(dim=1)  # [B]
        changed = batch[config["ITEM_ID_FIELD"]] != other[config["ITEM_ID_FIELD"]]
        if sequence_target:
            assert bool((moved[changed] > 1e-6).all())
        else:
            assert float(moved.max()) == 0.0  # the thesis' branch reads the history only


def test_mdaf_sequence_pooling_ignores_padding(ctr_dataset):
    config, dataset, batch = ctr_dataset
    model = recbole_mamba.get_model("MDAF")(config, dataset).eval()
    with torch.no_grad():
        base = model.sequence_vector(batch)
        assert (batch[model.ITEM_SEQ] == 0).any()  # some rows are padded
        from recbole.data.interaction import Interaction

        longer = Interaction(dict(batch.interaction))
        padding = torch.zeros(len(batch), 7, dtype=torch.long)
        longer.interaction[model.ITEM_SEQ] = torch.cat([batch[model.ITEM_SEQ], padding], dim=1)
        torch.testing.assert_close(model.sequence_vector(longer), base)


@pytest.mark.parametrize("pooling", ["mean", "target_attention"])
def test_mdaf_scan_skips_the_padding_without_changing_the_vector(ctr_dataset, monkeypatch, pooling):
    # MDAF hands the history lengths to its Mamba layers so the torch scan skips the padding;
    # the sequence vector and every gradient equal those of the scan over all L steps
    from recbole_mamba.model.layers import MambaLayer

    config, dataset, batch = ctr_dataset
    config = Config(model="MDAF", dataset="taobao-ctr", config_dict={**TINY_CTR, "sequence_pooling": pooling})
    model = recbole_mamba.get_model("MDAF")(config, dataset).double().eval()
    lengths = (batch[model.ITEM_SEQ] > 0).sum(1)
    assert lengths.min() < batch[model.ITEM_SEQ].shape[1]  # some padding to skip

    def vector_and_grads():
        model.zero_grad()
        q = model.sequence_vector(batch)
        q.pow(2).sum().backward()
        return [q.detach()] + [p.grad.clone() for p in model.parameters() if p.grad is not None]

    skipped = vector_and_grads()
    full_forward = MambaLayer.forward
    monkeypatch.setattr(MambaLayer, "forward", lambda self, x, lengths=None: full_forward(self, x))
    full = vector_and_grads()
    assert len(skipped) == len(full) > 10
    for a, b in zip(skipped, full):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_mdaf_needs_categories(ctr_dataset):
    config = Config(model="MDAF", dataset="taobao-ctr",
                    config_dict={**TINY_CTR, "load_col": {"inter": ["user_id", "item_id", "label", "timestamp", "item_id_list"]}})
    dataset = create_dataset(config)
    with pytest.raises(ConfigError, match="item categories are missing"):
        recbole_mamba.get_model("MDAF")(config, dataset)


def test_mdaf_and_dcnv3_train_end_to_end_and_gate_report(tmp_path):
    from recbole.quick_start import run_recbole
    from recbole_mamba.gate_analysis import analyse_checkpoint

    for model_name in ("DCNv3", "MDAF"):
        result = run_recbole(model=model_name, dataset="taobao-ctr", config_dict=dict(TINY_CTR))
        test = result["test_result"]
        assert set(test) == {"auc", "logloss"} and 0 < test["auc"] < 1 and 0 < test["logloss"] < 2
    checkpoint = [f for f in os.listdir("saved") if f.startswith("MDAF-")][0]
    stats, rows = analyse_checkpoint(os.path.join("saved", checkpoint), str(tmp_path / "gate"), progress=False)
    assert 0 < stats["mean"] < 1 and stats["rows"] == sum(r["rows"] for r in rows)
    assert abs(sum(r["share"] for r in rows) - 1) < 1e-9
    for name in ("gate_hist.png", "gate_buckets.csv", "gate_buckets.md", "gate_stats.json"):
        assert os.path.getsize(tmp_path / "gate" / name) > 0
    assert json.load(open(tmp_path / "gate" / "gate_stats.json"))["median"] == pytest.approx(stats["median"])


def test_mdaf_keeps_the_thesis_sizes_on_taobao_ctr(ctr_dataset):
    """MDAF at its YAML defaults on the taobao-ctr sample: 80 / 64 / 32 embeddings, d = 128,
    2 Mamba layers with d_state 16, gate 256 -> 128 -> 1, head 128 -> 64 -> 1.  As a
    ContextRecommender it would embed every field, but here the only fields are user, item,
    category (its own tables), the history (its sequence branch) and the timestamp, a float
    outside numerical_features: nothing is left for RecBole's tables, so the count is the
    one from before the ContextRecommender change (839,026)."""
    _, dataset, _ = ctr_dataset
    with recbole_argv():
        config = Config(model="MDAF", dataset="taobao-ctr", config_dict={"data_path": CTR_SAMPLE, "use_gpu": False})
    model = recbole_mamba.get_model("MDAF")(config, dataset)
    assert model.num_feature_field == 0 and not hasattr(model, "token_embedding_table")
    users, items, categories = dataset.num("user_id"), dataset.num("item_id"), dataset.num("category_id")
    assert (model.user_embedding.embedding_dim, model.item_embedding.embedding_dim,
            model.category_embedding.embedding_dim) == (80, 64, 32)
    assert (model.static_proj.in_features, model.static_proj.out_features) == (176, 128)
    assert (model.sequence_proj.in_features, model.sequence_proj.out_features) == (96, 128)
    assert len(model.mamba_layers) == 2 and model.mamba_layers[0].mamba.d_state == 16
    assert [(m.in_features, m.out_features) for m in model.gate_mlp if isinstance(m, torch.nn.Linear)] == [(256, 128), (128, 1)]
    assert [(m.in_features, m.out_features) for m in model.head if isinstance(m, torch.nn.Linear)] == [(128, 64), (64, 1)]
    count = sum(p.numel() for p in model.parameters())
    embeddings = 80 * users + 64 * items + 32 * categories
    assert sum(p.numel() for n, p in model.named_parameters() if "embedding" in n) == embeddings
    assert count == 839_026


def test_dcnv3_parameter_count_on_taobao_ctr(ctr_dataset):
    """DCNv3 at its YAML defaults (16 per field) on the taobao-ctr sample: 117,292 parameters,
    64,172 before the ContextRecommender change.  The difference is RecBole's handling of the
    history field item_id_list: like DCNV2 it is one more field, with its own table
    (items x 16 = 48,448, mean-pooled), and the cross width grows from 3 x 16 to 4 x 16."""
    _, dataset, _ = ctr_dataset
    with recbole_argv():
        config = Config(model="DCNv3", dataset="taobao-ctr", config_dict={"data_path": CTR_SAMPLE, "use_gpu": False})
    model = recbole_mamba.get_model("DCNv3")(config, dataset)
    items = dataset.num("item_id")
    assert sum(p.numel() for p in model.token_seq_embedding_table.parameters()) == 16 * items == 48_448
    assert model.lcn_head.in_features == 64
    assert sum(p.numel() for p in model.parameters()) == 117_292


def test_dcnv3_trains_with_fuxictrs_loop():
    """DCNv3's YAML runs FuxiCTR's training loop on the taobao-ctr sample: each validation
    without a gain cuts the learning rate 10-fold, and the 2nd in a row stops training
    (early_stop_patience 2, which is RecBole's stopping_step 1)."""
    from recbole.data import data_preparation
    from recbole_mamba.registry import get_trainer
    from recbole_mamba.trainer import PlateauDecayTrainer

    with recbole_argv():
        config = Config(model="DCNv3", dataset="taobao-ctr", config_dict={**TINY_CTR, "epochs": 40})
        train, valid, _ = data_preparation(config, create_dataset(config))
    assert (config["stopping_step"], config["lr_plateau_factor"], config["clip_grad_norm"]["max_norm"]) == (1, 0.1, 10)
    trainer = get_trainer(config["MODEL_TYPE"], "DCNv3")(
        config, recbole_mamba.get_model("DCNv3")(config, train._dataset))
    assert isinstance(trainer, PlateauDecayTrainer)
    seen = []  # (learning rate during the epoch, valid AUC, best before it)
    validate = trainer._valid_epoch

    def recording(data, show_progress=False):
        lr, best = trainer.optimizer.param_groups[0]["lr"], trainer.best_valid_score
        score, result = validate(data, show_progress=show_progress)
        seen.append((lr, score, best))
        return score, result

    trainer._valid_epoch = recording
    trainer.fit(train, valid, saved=False)
    gains = [score >= best for _, score, best in seen]
    assert len(seen) < 40 and gains[-2:] == [False, False]  # stopped by the 2nd evaluation without a gain
    assert not any(not a and not b for a, b in zip(gains[:-2], gains[1:-1]))  # and not earlier
    expected = 1e-3
    for (lr, _, _), gain in zip(seen, gains):
        assert lr == pytest.approx(expected)
        expected *= 1 if gain else 0.1
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(expected)
    with recbole_argv():
        config = Config(model="DCNv3", dataset="taobao-ctr", config_dict={**TINY_CTR, "lr_plateau_factor": 2})
    with pytest.raises(ConfigError, match="lr_plateau_factor=2 must lie in"):
        PlateauDecayTrainer(config, recbole_mamba.get_model("DCNv3")(config, train._dataset))


def test_dcnv3_runs_on_recboles_ml100k_context_setup(tmp_path):
    """`run_recbole.py --model=DCNv3 --dataset=ml-100k` as for RecBole's DCNV2: RecBole's context
    defaults (rating >= 4 label, labelled evaluation, AUC / LogLoss) and every field embedded."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, os.path.join(REPO, "run_recbole.py"), "--model=DCNv3", "--dataset=ml-100k",
                          "--epochs=1", "--use_gpu=False", "--show_progress=False", "--seed=2020"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    log = out.stdout + out.stderr
    result = [line for line in log.splitlines() if "test result" in line][-1]
    assert "'auc'" in result and "'logloss'" in result
    auc = float(result.split("('auc', ")[1].split(")")[0])
    assert 0.55 < auc < 1  # one epoch already ranks above chance
    # the cross width: 7 fields (user, item, age, gender, occupation, release_year, class) x 16
    assert "in_features=112" in log


def test_mdaf_on_a_dataset_without_history_names_the_field():
    with recbole_argv():
        config = Config(model="MDAF", dataset="ml-100k", config_dict={"use_gpu": False, "state": "WARNING"})
        dataset = create_dataset(config)
    with pytest.raises(ConfigError, match="token_seq field 'item_id_list'.*'ml-100k' does not load") as error:
        recbole_mamba.get_model("MDAF")(config, dataset)
    assert "\n" not in str(error.value)
    # without the sequence branch MDAF is a static model over every field of RecBole's setup
    with recbole_argv():
        config = Config(model="MDAF", dataset="ml-100k", config_dict={"use_gpu": False, "fusion": "static"})
    model = recbole_mamba.get_model("MDAF")(config, dataset)
    assert model.token_field_names == ["age", "gender", "occupation", "release_year"]
    assert model.token_seq_field_names == ["class"]
    assert model.static_proj.in_features == 80 + 64 + 5 * 16  # no CATEGORY_FIELD on ml-100k


def test_mdaf_history_must_share_the_item_ids(ctr_dataset):
    with recbole_argv():
        config = Config(model="MDAF", dataset="taobao-ctr", config_dict={**TINY_CTR, "alias_of_item_id": None})
        dataset = create_dataset(config)
    with pytest.raises(ConfigError, match="set alias_of_item_id: \\[item_id_list\\]"):
        recbole_mamba.get_model("MDAF")(config, dataset)


def ml100k_inter():
    import recbole

    return os.path.join(os.path.dirname(recbole.__file__), "dataset_example", "ml-100k", "ml-100k.inter")


def test_rating_ctr_converter_on_ml100k(tmp_path):
    from recbole_mamba.data.ctr import convert_ratings, read_atomic_ratings

    summary = convert_ratings(ml100k_inter(), "ml-100k-ctr", str(tmp_path), threshold=4, history=5, progress=False)
    ratings = read_atomic_ratings(ml100k_inter())
    with open(tmp_path / "ml-100k-ctr" / "ml-100k-ctr.inter") as f:
        header = f.readline().rstrip("\n").split("\t")
        rows = [line.rstrip("\n").split("\t") for line in f]
    assert header == ["user_id:token", "item_id:token", "label:float", "timestamp:float", "item_id_list:token_seq"]
    assert len(rows) + summary.dropped["target: no earlier rating"] == len(ratings) == 100_000
    by_user = {u: frame.sort_values("timestamp", kind="stable") for u, frame in ratings.groupby("user_id")}
    for user, item, label, timestamp, history in rows[::997]:
        frame = by_user[user]
        rating = float(frame[(frame["item_id"] == item)]["rating"].iloc[0])
        assert label == str(int(rating >= 4))
        earlier = frame[frame["timestamp"] < float(timestamp)]["item_id"].tolist()
        assert history.split(" ") == earlier[-5:]  # the latest earlier ratings, oldest first, liked or not
    assert os.path.isfile(tmp_path / "ml-100k-ctr" / "ml-100k-ctr.user")
    assert os.path.isfile(tmp_path / "ml-100k-ctr" / "ml-100k-ctr.item")


def test_target_attention_pool_is_dins_unnormalised_attention():
    from recbole_mamba.model.layers import target_attention_pool

    torch.manual_seed(0)
    scorer = torch.nn.Sequential(torch.nn.Linear(12, 5), torch.nn.Sigmoid(), torch.nn.Linear(5, 1))
    h, q = torch.randn(2, 4, 3), torch.randn(2, 3)
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    pooled = target_attention_pool(h, q, mask, scorer)
    for b in range(2):
        expected = torch.zeros(3)
        for t in range(int(mask[b].sum())):
            w = scorer(torch.cat([q[b], h[b, t], q[b] - h[b, t], q[b] * h[b, t]]))  # DIN's local activation unit
            expected = expected + w / 3 ** 0.5 * h[b, t]
        torch.testing.assert_close(pooled[b], expected)
    # extra padding changes nothing; the weights are not normalised (a softmax would make them sum to 1)
    longer = torch.cat([h, torch.randn(2, 3, 3)], dim=1)
    torch.testing.assert_close(target_attention_pool(longer, q, torch.cat([mask, torch.zeros(2, 3, dtype=torch.bool)], 1),
                                                     scorer), pooled)


def test_target_attention_makes_mdaf_target_aware(ctr_dataset):
    config, dataset, batch = ctr_dataset
    from recbole.data.interaction import Interaction

    other = Interaction(dict(batch.interaction))
    other.interaction["item_id"] = torch.roll(batch["item_id"], 1)
    changed = batch["item_id"] != other["item_id"]
    cfg = Config(model="MDAF", dataset="taobao-ctr", config_dict={**TINY_CTR, "sequence_pooling": "target_attention"})
    torch.manual_seed(0)
    model = recbole_mamba.get_model("MDAF")(cfg, dataset).eval()
    with torch.no_grad():
        moved = (model.sequence_vector(batch) - model.sequence_vector(other)).abs().amax(dim=1)  # [B]
        assert bool((moved[changed] > 1e-6).all()) and float(moved[~changed].sum()) == 0.0
        g = model.gate_values(batch)
    assert torch.all((g > 0) & (g < 1))
    mean_model = recbole_mamba.get_model("MDAF")(config, dataset)
    extra = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in mean_model.parameters())
    d = TINY_CTR["hidden_size"]
    assert extra == (4 * d * 80 + 80) + (80 * 40 + 40) + (40 + 1)  # DIN's scoring MLP 4d -> 80 -> 40 -> 1
    with pytest.raises(ConfigError, match="sequence_pooling='max' is not supported"):
        recbole_mamba.get_model("MDAF")(Config(model="MDAF", dataset="taobao-ctr",
                                               config_dict={**TINY_CTR, "sequence_pooling": "max"}), dataset)


def test_mdaf_on_sequence_aware_ml100k_uses_every_field(tmp_path):
    """MDAF on ml-100k as sequence-aware CTR (the rating-ctr converter): the history feeds the
    Mamba branch, and RecBole's embeddings of age, gender, occupation, release_year and class
    join the static branch; target attention trains through RecBole's quick start."""
    from recbole.quick_start import run_recbole
    from recbole_mamba.data.ctr import convert_ratings

    convert_ratings(ml100k_inter(), "ml-100k-ctr", str(tmp_path / "data"), history=10, progress=False)
    config_dict = {**TINY_CTR, "data_path": str(tmp_path / "data"), "seq_len": {"item_id_list": 10},
                   "sequence_pooling": "target_attention", "embedding_size": 8}
    config = Config(model="MDAF", dataset="ml-100k-ctr", config_dict=config_dict)
    model = recbole_mamba.get_model("MDAF")(config, create_dataset(config))
    assert model.token_field_names == ["age", "gender", "occupation", "release_year"]
    assert model.token_seq_field_names == ["class"]
    assert model.static_proj.in_features == 16 + 16 + 5 * 8 and model.sequence_proj.in_features == 16
    result = run_recbole(model="MDAF", dataset="ml-100k-ctr", config_dict=config_dict)
    assert set(result["test_result"]) == {"auc", "logloss"} and 0.5 < result["test_result"]["auc"] < 1

"""Paths a CPU-only CI never took before: the CUDA backend (through stand-in kernels with
the real kernels' signatures and requirements), auto's trust in a kernel call, half
precision, RecBole's own models untouched by the import, and argv handling."""
import json
import logging
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from recbole.config import Config
from recbole.data.interaction import Interaction

import recbole_mamba
import recbole_mamba.ssm.backends as backends
import recbole_mamba.ssm.mamba as mamba_module
from conftest import REPO, TINY
from recbole_mamba.errors import BackendError, InputError
from recbole_mamba.ssm import Mamba, selective_scan_torch


# ---------------------------------------------------------------- stand-in kernels

def _check(condition, what):
    if not condition:
        raise AssertionError(f"the real kernel would reject this call: {what}")


def standin_selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                           return_last_state=False):
    """mamba_ssm.ops.selective_scan_interface.selective_scan_fn's signature and input
    requirements (selective_scan_fwd in csrc/selective_scan), computed with the torch scan."""
    batch, d_inner, length = u.shape
    _check(u.stride(-1) == 1 and delta.stride(-1) == 1, "u and delta need a contiguous last dimension")
    _check(delta.shape == u.shape, "delta must be [B, D, L] like u")
    _check(A.dtype == torch.float32 and A.shape[0] == d_inner and A.dim() == 2, "A must be float32 [D, N]")
    d_state = A.shape[1]
    for name, t in (("B", B), ("C", C)):
        _check(t.dim() == 3 and t.shape == (batch, d_state, length), f"{name} must be [B, N, L] (input-dependent)")
        _check(t.stride(-1) == 1, f"{name} needs a contiguous last dimension")
        _check(t.dtype == u.dtype, f"{name} must have u's dtype")
    _check(delta.dtype == u.dtype, "delta must have u's dtype")
    if D is not None:
        _check(D.dtype == torch.float32 and D.shape == (d_inner,), "D must be float32 [D]")
    if z is not None:
        _check(z.shape == u.shape and z.stride(-1) == 1 and z.dtype == u.dtype, "z must be [B, D, L] like u")
    if delta_bias is not None:
        _check(delta_bias.dtype == torch.float32 and delta_bias.shape == (d_inner,), "delta_bias must be float32 [D]")
    _check(isinstance(delta_softplus, bool), "delta_softplus is a bool")
    y = selective_scan_torch(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus)
    return y.to(u.dtype)


def standin_causal_conv1d(x, weight, bias=None, seq_idx=None, initial_states=None, return_final_states=False,
                          final_states_out=None, activation=None):
    """causal_conv1d.causal_conv1d_fn's signature and requirements, computed with torch."""
    batch, dim, length = x.shape
    _check(weight.dim() == 2 and weight.shape[0] == dim and 2 <= weight.shape[1] <= 4,
           "weight must be [d_inner, d_conv] with d_conv in 2..4")
    _check(x.stride(2) == 1 or x.stride(1) == 1, "x must be contiguous in L or in channels")
    _check(bias is None or bias.shape == (dim,), "bias must be [d_inner]")
    _check(activation in (None, "silu", "swish"), "activation is None, silu or swish")
    out = F.conv1d(x, weight.unsqueeze(1), bias, padding=weight.shape[1] - 1, groups=dim)[..., :length]
    return F.silu(out) if activation else out


@pytest.fixture
def standin_kernels(monkeypatch):
    """The CUDA path with stand-in kernels; every Mamba block takes it whatever the device."""
    kernels = (standin_selective_scan, standin_causal_conv1d, "")
    monkeypatch.setattr(mamba_module, "cuda_kernels", lambda: kernels)
    monkeypatch.setattr(backends, "cuda_kernels", lambda: kernels)
    monkeypatch.setattr(Mamba, "runs_on_cuda_kernels", lambda self, x: True)


def plugin_model(model_name, **overrides):
    config = Config(model=model_name, dataset="ml-100k", config_dict={**TINY, **overrides})
    from recbole.data import create_dataset

    dataset = create_dataset(config)
    torch.manual_seed(0)
    return recbole_mamba.get_model(model_name)(config, dataset), dataset


def sequential_batch(dataset):
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([20, 7, 1, 13])
    seq = torch.randint(1, dataset.item_num, (4, 20), generator=g)
    seq[torch.arange(20)[None, :] >= lengths[:, None]] = 0
    return Interaction({"item_id_list": seq, "item_length": lengths,
                        "item_id": torch.randint(1, dataset.item_num, (4,), generator=g)})


def _outputs_and_grads(model, batch):
    model.zero_grad()
    loss = model.calculate_loss(batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("model_name", ["Mamba4Rec", "BiMamba4Rec"])
def test_cuda_path_equals_torch_path(model_name, standin_kernels, monkeypatch):
    model, dataset = plugin_model(model_name, dropout_prob=0.0, num_layers=2)
    batch = sequential_batch(dataset)
    calls = []
    original = mamba_module.Mamba._forward_cuda

    def counted(self, x):
        calls.append(x.shape)
        return original(self, x)

    monkeypatch.setattr(mamba_module.Mamba, "_forward_cuda", counted)
    cuda_loss, cuda_grads = _outputs_and_grads(model, batch)
    assert len(calls) == (2 if model_name == "Mamba4Rec" else 4)  # every block took the kernels
    monkeypatch.setattr(Mamba, "runs_on_cuda_kernels", lambda self, x: False)
    torch_loss, torch_grads = _outputs_and_grads(model, batch)
    torch.testing.assert_close(cuda_loss, torch_loss, rtol=1e-5, atol=1e-6)
    assert cuda_grads.keys() == torch_grads.keys()
    for name in torch_grads:
        torch.testing.assert_close(cuda_grads[name], torch_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_mdaf_cuda_path_equals_torch_path(standin_kernels, monkeypatch):
    from conftest import recbole_argv
    from recbole.data import create_dataset, data_preparation

    data_path = os.path.join(REPO, "dataset_atomic")
    if not os.path.isdir(os.path.join(data_path, "taobao-ctr")):
        pytest.skip("dataset_atomic/taobao-ctr not in this checkout")
    with recbole_argv():
        config = Config(model="MDAF", dataset="taobao-ctr",
                        config_dict={"data_path": data_path, "use_gpu": False, "state": "WARNING", "dropout_prob": 0.0})
        train_data, _, _ = data_preparation(config, create_dataset(config))
    torch.manual_seed(0)
    model = recbole_mamba.get_model("MDAF")(config, train_data._dataset)
    batch = next(iter(train_data))
    cuda_loss, cuda_grads = _outputs_and_grads(model, batch)
    monkeypatch.setattr(Mamba, "runs_on_cuda_kernels", lambda self, x: False)
    torch_loss, torch_grads = _outputs_and_grads(model, batch)
    torch.testing.assert_close(cuda_loss, torch_loss, rtol=1e-5, atol=1e-6)
    for name in torch_grads:
        torch.testing.assert_close(cuda_grads[name], torch_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_standins_reject_what_the_kernels_reject():
    x = torch.randn(2, 8, 5)
    with pytest.raises(AssertionError, match="weight must be"):
        standin_causal_conv1d(x, torch.randn(8, 1, 4))  # nn.Conv1d's [D, 1, k] layout
    with pytest.raises(AssertionError, match="A must be float32"):
        standin_selective_scan(x, x, -torch.rand(8, 3, dtype=torch.float64), torch.randn(2, 3, 5), torch.randn(2, 3, 5))
    with pytest.raises(AssertionError, match="contiguous last dimension"):
        standin_selective_scan(x.transpose(1, 2).contiguous().transpose(1, 2), x, -torch.rand(8, 3),
                               torch.randn(2, 3, 5), torch.randn(2, 3, 5))


# ---------------------------------------------------------------- backend choice

def test_cuda_backend_is_checked_by_name_at_construction_and_by_device_at_forward(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine with working kernels
    monkeypatch.setattr(backends, "cuda_kernels", lambda: (standin_selective_scan, standin_causal_conv1d, ""))
    block = Mamba(16, d_state=4, backend="cuda")  # constructing on a GPU machine must work
    block.set_backend("cuda")
    with pytest.raises(BackendError, match="not a backend"):
        Mamba(16, backend="cuda-fast")
    with pytest.raises(BackendError, match="needs a CUDA device"):
        block(torch.randn(1, 3, 16))  # CPU tensors: the device is checked here


def test_auto_trusts_only_a_kernel_call_that_ran(monkeypatch, caplog):
    def broken_scan(*args, **kwargs):
        raise RuntimeError("no kernel image is available for execution on the device")

    monkeypatch.setattr(backends, "cuda_kernels", lambda: (broken_scan, standin_causal_conv1d, ""))
    backends.probe_kernels.cache_clear()
    working, reason = backends.probe_kernels("cpu")
    assert not working and "test call failed" in reason and "no kernel image" in reason
    monkeypatch.setattr(backends, "cuda_kernels", lambda: (standin_selective_scan, standin_causal_conv1d, ""))
    backends.probe_kernels.cache_clear()
    assert backends.probe_kernels("cpu") == (True, "")
    # on a CUDA device whose kernels fail their call, auto falls back to torch and says why, once
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(backends, "probe_kernels", lambda device: (False, "the kernels import but a test call failed (X)"))
    backends._log_fallback.cache_clear()
    with caplog.at_level(logging.WARNING):
        assert backends.resolve_backend("auto", "cuda") == "torch"
        assert backends.resolve_backend("auto", "cuda") == "torch"
    assert sum("uses 'torch' on this CUDA device" in r.getMessage() for r in caplog.records) == 1
    backends.probe_kernels = backends.probe_kernels  # (monkeypatch restores the cached one)


# ---------------------------------------------------------------- half precision

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_blocks_run_forward_and_backward(dtype):
    torch.manual_seed(0)
    block = Mamba(16, d_state=4, backend="torch")
    x = torch.randn(2, 9, 16)
    reference = block(x)
    half = Mamba(16, d_state=4, backend="torch")
    half.load_state_dict(block.state_dict())
    half = half.to(dtype)
    x_half = x.to(dtype).requires_grad_()
    y = half(x_half)
    assert y.dtype == dtype
    y.float().sum().backward()
    assert x_half.grad.dtype == dtype and torch.isfinite(x_half.grad.float()).all()
    assert all(torch.isfinite(p.grad.float()).all() for p in half.parameters())
    torch.testing.assert_close(y.float(), reference, rtol=0.05, atol=0.05)


def test_autocast_bfloat16_forward_and_backward():
    torch.manual_seed(0)
    block = Mamba(16, d_state=4, backend="torch")
    x = torch.randn(2, 9, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = block(x)
    y.float().sum().backward()
    assert torch.isfinite(x.grad).all() and block.A_log.grad is not None
    torch.testing.assert_close(y.float(), block(x).detach(), rtol=0.05, atol=0.05)


# ---------------------------------------------------------------- bad lengths

@pytest.mark.parametrize("model_name", ["Mamba4Rec", "BiMamba4Rec", "GRU4Rec"])
def test_lengths_wider_than_the_rows_are_one_line_errors(model_name):
    overrides = {"embedding_size": 32} if model_name == "GRU4Rec" else {}
    model, dataset = plugin_model(model_name, **overrides)
    batch = sequential_batch(dataset)
    batch["item_length"][0] = 25  # > the 20 positions of the padded rows
    with pytest.raises(InputError, match="at most the row width") as error:
        model.full_sort_predict(batch)
    assert "\n" not in str(error.value)


# ---------------------------------------------------------------- init order

def test_bare_block_draws_its_init_in_upstream_order():
    """mamba_ssm's Mamba builds in_proj, conv1d, x_proj, dt_proj, re-draws dt_proj's
    weight, draws dt, then A_log/D, and out_proj last: the same seed, the same init."""
    torch.manual_seed(123)
    block = Mamba(32, d_state=8)
    torch.manual_seed(123)
    d_inner, dt_rank = 64, 2
    in_proj = torch.nn.Linear(32, 2 * d_inner, bias=False)
    conv = torch.nn.Conv1d(d_inner, d_inner, 4, groups=d_inner, padding=3)
    x_proj = torch.nn.Linear(d_inner, dt_rank + 16, bias=False)
    dt_proj = torch.nn.Linear(dt_rank, d_inner)
    torch.nn.init.uniform_(dt_proj.weight, -dt_rank**-0.5, dt_rank**-0.5)
    dt = torch.exp(torch.rand(d_inner) * (math.log(0.1) - math.log(0.001)) + math.log(0.001)).clamp(min=1e-4)
    out_proj = torch.nn.Linear(d_inner, 32, bias=False)
    for mine, upstream in ((block.in_proj.weight, in_proj.weight), (block.conv1d.weight, conv.weight),
                           (block.x_proj.weight, x_proj.weight), (block.dt_proj.weight, dt_proj.weight),
                           (block.dt_proj.bias, dt + torch.log(-torch.expm1(-dt))),
                           (block.out_proj.weight, out_proj.weight)):
        torch.testing.assert_close(mine.detach(), upstream.detach())


# ---------------------------------------------------------------- RecBole's own models

_CONFIG_DUMP = r"""
import json, sys
sys.argv = sys.argv[:1]
if {plugin}:
    import recbole_mamba
from recbole.config import Config
import numpy as np
if not {plugin} and not hasattr(np, "float_"):  # numpy 2: RecBole alone cannot build a Config
    def old_names(self):
        for name, value in dict(bool=np.bool_, int=np.int_, float=np.float64, complex=np.complex128,
                                object=np.object_, str=np.str_, unicode=np.str_).items():
            setattr(np, name, value)
    Config.compatibility_settings = old_names
out = {{}}
for dataset in ("ml-1m", "amazon-video-games", "taobao", "taobao-ctr"):
    for model in ("BPR", "SASRec", "DCNV2"):
        extra = {{"train_neg_sample_args": None}} if model == "SASRec" else {{}}
        config = Config(model=model, dataset=dataset, config_dict={{"use_gpu": False, **extra}})
        out[f"{{model}}/{{dataset}}"] = {{k: repr(v) for k, v in config.final_config_dict.items()}}
print(json.dumps(out))
"""


def test_import_changes_no_config_of_recbole_models(tmp_path):
    dumps = {}
    for plugin in (False, True):
        done = subprocess.run([sys.executable, "-c", _CONFIG_DUMP.format(plugin=plugin)], cwd=tmp_path,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        dumps[plugin] = json.loads(done.stdout.strip().splitlines()[-1])
    for key, without in dumps[False].items():
        assert dumps[True][key] == without, f"{key}: " + ", ".join(
            k for k in set(without) | set(dumps[True][key]) if without.get(k) != dumps[True][key].get(k))
    # while plugin models still get the paper protocol from props/dataset
    config = Config(model="Mamba4Rec", dataset="ml-1m", config_dict={"use_gpu": False})
    assert config["MAX_ITEM_LIST_LENGTH"] == 200 and config["eval_args"]["order"] == "TO"


# ---------------------------------------------------------------- cli argv

def test_cli_main_passes_a_list_through_to_recbole():
    from recbole_mamba.cli import main

    argv_before = list(sys.argv)
    result = main(["--model=Mamba4Rec", "--dataset=ml-100k", "--epochs=1", "--hidden_size=8", "--d_state=4",
                   "--MAX_ITEM_LIST_LENGTH=10", "--topk=[3]", "--valid_metric=MRR@3", "--use_gpu=False", "--state=WARNING",
                   "--val_interval={'rating': '[5,5]'}", "--show_progress=False"])
    test = result["test_result"]
    assert "mrr@3" in test and all(k.endswith("@3") for k in test)  # --topk=[3] reached RecBole
    assert sys.argv == argv_before


# ---------------------------------------------------------------- checkpoints from elsewhere

class _Planted:
    """Unpickling this object opens (creates) a file: a stand-in for any code a crafted .pth runs."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def crafted_checkpoint(folder):
    marker = folder / "pwned.txt"
    path = folder / "Mamba4Rec-crafted.pth"
    torch.save({"config": _Planted(str(marker)), "state_dict": {}, "epoch": 0, "cur_step": 0,
                "best_valid_score": 0.0, "optimizer": {}}, path)
    return path, marker


def test_crafted_checkpoint_runs_nothing_through_recommend(tmp_path, capsys):
    from recbole_mamba.infer import main as recommend

    path, marker = crafted_checkpoint(tmp_path)
    with pytest.raises(SystemExit):
        recommend(["--checkpoint", str(path), "--users", "1"])
    assert not marker.exists()
    err = capsys.readouterr().err.strip()
    assert "would build" in err and "--trust-checkpoint" in err and "\n" not in err


def test_crafted_checkpoint_runs_nothing_through_resume(tmp_path, capsys):
    from recbole_mamba.cli import main

    path, marker = crafted_checkpoint(tmp_path)
    with pytest.raises(SystemExit):
        main(["--model=Mamba4Rec", "--dataset=ml-100k", f"--resume={path}", "--epochs=1", "--hidden_size=8",
              "--d_state=4", "--MAX_ITEM_LIST_LENGTH=10", "--use_gpu=False", "--state=WARNING",
              "--val_interval={'rating': '[5,5]'}", "--show_progress=False"])
    assert not marker.exists()
    assert "trust_checkpoint=True" in capsys.readouterr().err


def test_crafted_checkpoint_runs_nothing_through_load_data_and_model(tmp_path):
    from recbole.quick_start import load_data_and_model

    from recbole_mamba.errors import CheckpointError
    from recbole_mamba.safe_load import load_checkpoint_file, trust

    path, marker = crafted_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="would build"):
        load_data_and_model(str(path))
    assert not marker.exists()
    # the file really runs code when fully unpickled: trusting it explicitly does that
    trust(path)
    load_checkpoint_file(path)
    assert marker.exists()


def test_own_checkpoints_are_written_atomically_and_load_restricted(tmp_path):
    from recbole.quick_start import load_data_and_model, run_recbole

    from recbole_mamba import safe_load

    run_recbole(model="Mamba4Rec", dataset="ml-100k", config_dict={
        **TINY, "hidden_size": 8, "d_state": 4, "MAX_ITEM_LIST_LENGTH": 10, "val_interval": {"rating": "[5,5]"},
        "checkpoint_dir": str(tmp_path / "saved")})
    files = os.listdir(tmp_path / "saved")
    assert len(files) == 1 and files[0].endswith(".pth")  # no temporary file left
    path = str(tmp_path / "saved" / files[0])
    assert safe_load._fully_trusted(path)  # this process wrote it
    safe_load._written.clear()  # as if another process had: the restricted loader reads it all the same
    config, model, *_ = load_data_and_model(path)
    assert config["model"] == "Mamba4Rec" and type(model).__name__ == "Mamba4Rec"
    # a save that fails half-way (here: an object pickle cannot write) keeps the last
    # checkpoint whole and leaves no temporary file beside it
    from recbole.trainer import Trainer

    trainer = Trainer(config, model)
    trainer.saved_model_file = path
    before = open(path, "rb").read()
    model.other_parameter = lambda: {"unpicklable": lambda: None}
    with pytest.raises(Exception, match="pickle"):
        trainer._save_checkpoint(3, verbose=False)
    assert os.listdir(tmp_path / "saved") == files and open(path, "rb").read() == before

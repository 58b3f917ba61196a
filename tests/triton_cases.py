"""The Triton scan under TRITON_INTERPRET=1 (run by test_scan_triton.py in its own process,
since triton reads that variable when the kernels are defined): every case's largest errors
against the float64 reference and the torch backend, as JSON on stdout."""
import json
import os
import sys

os.environ["TRITON_INTERPRET"] = "1"
sys.argv = sys.argv[:1]

import torch  # noqa: E402

from recbole_mamba.ssm.scan_torch import selective_scan_torch  # noqa: E402
from recbole_mamba.ssm.scan_triton import selective_scan_triton  # noqa: E402

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def inputs(batch, d_inner, d_state, length, groups=1, skip=True, gate=True, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    f64 = {"dtype": torch.float64}
    a_shape = (groups, d_inner, d_state) if groups > 1 else (d_inner, d_state)
    x = {"u": torch.randn(batch, d_inner, length, generator=g, **f64),
         "delta": 0.5 * torch.randn(batch, d_inner, length, generator=g, **f64),
         "A": -0.2 - torch.rand(*a_shape, generator=g, **f64),
         "B": torch.randn(batch, d_state, length, generator=g, **f64),
         "C": torch.randn(batch, d_state, length, generator=g, **f64),
         "D": torch.randn(d_inner, generator=g, **f64) if skip else None,
         "z": torch.randn(batch, d_inner, length, generator=g, **f64) if gate else None,
         "delta_bias": torch.randn(d_inner, generator=g, **f64) if bias else None}
    return {k: v for k, v in x.items() if v is not None}, torch.randn(batch, d_inner, length, generator=g, **f64)


def torch_scan(x, softplus):
    """selective_scan_torch, one call per group for a grouped A."""
    A = x["A"]
    if A.dim() == 2:
        return selective_scan_torch(x["u"], x["delta"], A, x["B"], x["C"], x.get("D"), x.get("z"),
                                    x.get("delta_bias"), softplus)
    rows = x["u"].shape[0] // A.shape[0]
    parts = []
    for g in range(A.shape[0]):
        s = slice(g * rows, (g + 1) * rows)
        parts.append(selective_scan_torch(x["u"][s], x["delta"][s], A[g], x["B"][s], x["C"][s], x.get("D"),
                                          x["z"][s] if "z" in x else None, x.get("delta_bias"), softplus))
    return torch.cat(parts)


def triton_scan(x, softplus, chunk):
    return selective_scan_triton(x["u"], x["delta"], x["A"], x["B"], x["C"], x.get("D"), x.get("z"),
                                 x.get("delta_bias"), softplus, chunk=chunk)


def run(fn, x, weight, dtype):
    leaves = {k: v.detach().to(dtype).requires_grad_() for k, v in x.items()}
    y = fn(leaves)
    grads = torch.autograd.grad((y.double() * weight).sum(), list(leaves.values()))
    return y, dict(zip(leaves, grads)), leaves


def rel(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / (b.abs().max() + 1e-30))


def scan_case(name, shape, chunk, softplus=True, dtype=torch.float32, **flags):
    x, weight = inputs(*shape, **flags)
    y64, g64, _ = run(lambda v: torch_scan(v, softplus), x, weight, torch.float64)
    y, grads, leaves = run(lambda v: triton_scan(v, softplus, chunk), x, weight, dtype)
    out = {"shape": list(shape), "chunk": chunk, "dtype": str(dtype), "vs_float64": {"y": rel(y, y64)},
           "dtypes_kept": y.dtype == dtype and all(grads[k].dtype == leaves[k].dtype for k in grads)}
    out["vs_float64"].update({f"d{k}": rel(grads[k], g64[k]) for k in grads})
    if dtype == torch.float32:
        yt, gt, _ = run(lambda v: torch_scan(v, softplus), x, weight, torch.float32)
        out["vs_torch"] = {"y": rel(y, yt), **{f"d{k}": rel(grads[k], gt[k]) for k in grads}}
    return name, out


def model_case(model_name):
    from recbole.config import Config
    from recbole.data import create_dataset
    from recbole.data.interaction import Interaction

    import recbole_mamba

    tiny = {"MAX_ITEM_LIST_LENGTH": 20, "hidden_size": 32, "d_state": 8, "num_layers": 2, "epochs": 1,
            "use_gpu": False, "state": "WARNING", "dropout_prob": 0.0, "show_progress": False}
    config = Config(model=model_name, dataset="ml-100k", config_dict={**tiny, "ssm_backend": "triton"})
    dataset = create_dataset(config)
    torch.manual_seed(0)
    model = recbole_mamba.get_model(model_name)(config, dataset)
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([20, 7, 1, 13])
    seq = torch.randint(1, dataset.item_num, (4, 20), generator=g)
    seq[torch.arange(20)[None, :] >= lengths[:, None]] = 0
    batch = Interaction({"item_id_list": seq, "item_length": lengths,
                         "item_id": torch.randint(1, dataset.item_num, (4,), generator=g)})
    results = {}
    for backend in ("triton", "torch"):
        for block in model.modules():
            if hasattr(block, "set_backend"):
                block.set_backend(backend)
        model.zero_grad()
        loss = model.calculate_loss(batch)
        loss.backward()
        results[backend] = (loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                            if p.grad is not None})
    (lt, gt), (l0, g0) = results["triton"], results["torch"]
    return f"model_{model_name}", {"loss": rel(lt, l0), "grads": {n: rel(gt[n], g0[n]) for n in g0},
                                   "same_grad_names": sorted(gt) == sorted(g0)}


def main():
    cases = [
        scan_case("odd_length_partial_chunk", (2, 8, 4, 7), chunk=3),
        scan_case("length_1_batch_1", (1, 5, 3, 1), chunk=4),
        scan_case("length_multiple_of_chunk", (2, 4, 4, 8), chunk=4),
        scan_case("one_chunk_longer_than_length", (2, 6, 3, 5), chunk=32),
        scan_case("grouped_A", (4, 6, 5, 9), chunk=4, groups=2),
        scan_case("no_D_z_bias_softplus", (3, 4, 2, 5), chunk=2, softplus=False, skip=False, gate=False, bias=False),
        scan_case("float16", (2, 8, 4, 7), chunk=3, dtype=torch.float16),
        scan_case("bfloat16", (2, 8, 4, 7), chunk=3, dtype=torch.bfloat16),
        model_case("Mamba4Rec"),
        model_case("BiMamba4Rec"),
    ]
    print(json.dumps(dict(cases)))


if __name__ == "__main__":
    main()

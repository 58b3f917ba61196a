"""GPU checks for bench/gpu_run.sh: every selective-scan backend that runs on this CUDA
device against the torch backend (one Mamba block's output and every gradient), then one
Mamba block forward + backward per backend at B 2048, L 200, d_model 64, d_state 32,
expand 2, with its peak GPU memory.  Writes JSON (``--out``).

``--device cpu`` is the dry run (bench/gpu_run.sh --dry-run): the same steps at small
shapes, the triton backend under its interpreter when ``TRITON_INTERPRET=1`` is set."""
import argparse
import json
import time

import torch

import recbole_mamba  # noqa: F401
from recbole_mamba.ssm import Mamba
from recbole_mamba.ssm.backends import probe_kernels, probe_triton


def working_backends(device):
    names = ["torch"]
    reasons = {}
    for name, probe in (("triton", probe_triton), ("cuda", probe_kernels)):
        ok, why = probe(device)
        if ok:
            names.append(name)
        else:
            reasons[name] = why
    return names, reasons


def block(backend, device, seed=0):
    torch.manual_seed(seed)
    return Mamba(64, d_state=32, d_conv=4, expand=2, backend=backend).to(device)


def agreement(backends, device, batch=64, length=200):
    g = torch.Generator(device="cpu").manual_seed(1)
    x = torch.randn(batch, length, 64, generator=g).to(device)
    w = torch.randn(batch, length, 64, generator=g).to(device)
    runs = {}
    for name in backends:
        m = block(name, device)
        xi = x.clone().requires_grad_()
        y = m(xi)
        (y * w).sum().backward()
        runs[name] = (y.detach(), {"input": xi.grad, **{n: p.grad for n, p in m.named_parameters()}})
    y0, g0 = runs["torch"]
    out = {}
    for name, (y, grads) in runs.items():
        if name == "torch":
            continue
        rel = {k: float((grads[k] - g0[k]).abs().max() / (g0[k].abs().max() + 1e-30)) for k in g0}
        out[name] = {"y": float((y - y0).abs().max() / (y0.abs().max() + 1e-30)), "grads": rel,
                     "worst": max([float((y - y0).abs().max() / (y0.abs().max() + 1e-30))] + list(rel.values()))}
    return out


def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize(device)


def timing(backends, device, batch=2048, length=200, repeats=5):
    cuda = str(device).startswith("cuda")
    results = {}
    for name in backends:
        m = block(name, device)
        x = torch.randn(batch, length, 64, device=device, requires_grad=True)
        times = []
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        for i in range(repeats + 2):
            _sync(device)
            t0 = time.perf_counter()
            m(x).sum().backward()
            _sync(device)
            if i >= 2:
                times.append(time.perf_counter() - t0)
            m.zero_grad(set_to_none=True)
            x.grad = None
        times.sort()
        results[name] = {"median_ms": 1000 * times[len(times) // 2], "min_ms": 1000 * times[0],
                         "peak_extra_mb": (torch.cuda.max_memory_allocated(device) - base) / 2**20 if cuda else None}
        print(f"{name}: {results[name]}", flush=True)
    return results


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cpu: the dry run, at small shapes (B 4 / L 13 agreement, B 8 / L 16 timing)")
    args = parser.parse_args()
    device = args.device
    backends, reasons = working_backends(device)
    shapes = ({"batch": 64, "length": 200}, {"batch": 2048, "length": 200}) if device == "cuda" else \
        ({"batch": 4, "length": 13}, {"batch": 8, "length": 16, "repeats": 1})
    record = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu (dry run)",
              "torch": torch.__version__, "backends": backends,
              "not_running": reasons, "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        import triton

        record["triton"] = triton.__version__
    except Exception:
        pass
    record["agreement_shape"] = dict(shapes[0], d_model=64, d_state=32, expand=2)
    record["agreement_vs_torch"] = agreement(backends, device, **shapes[0])
    print(json.dumps(record["agreement_vs_torch"], indent=1), flush=True)
    record["timing_shape"] = dict(shapes[1], d_model=64, d_state=32, expand=2)
    record["block_fwd_bwd"] = timing(backends, device, **shapes[1])
    torch_ms = record["block_fwd_bwd"]["torch"]["median_ms"]
    record["speedup_vs_torch"] = {k: torch_ms / v["median_ms"] for k, v in record["block_fwd_bwd"].items()}
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)
    bad = {k: v["worst"] for k, v in record["agreement_vs_torch"].items() if v["worst"] > 1e-3}
    if bad:
        raise SystemExit(f"backends disagree with torch: {bad}")


if __name__ == "__main__":
    main()

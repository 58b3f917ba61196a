"""GPU checks for bench/gpu_run.sh: every selective-scan backend that runs on this CUDA
device against the torch backend (one Mamba block's output and every gradient), then one
Mamba block forward + backward per backend at B 2048, L 200, d_model 64, d_state 32,
expand 2, with its peak GPU memory.  Writes JSON (``--out``)."""
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


def timing(backends, device, batch=2048, length=200, repeats=5):
    results = {}
    for name in backends:
        m = block(name, device)
        x = torch.randn(batch, length, 64, device=device, requires_grad=True)
        times = []
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        for i in range(repeats + 2):
            torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            m(x).sum().backward()
            torch.cuda.synchronize(device)
            if i >= 2:
                times.append(time.perf_counter() - t0)
            m.zero_grad(set_to_none=True)
            x.grad = None
        times.sort()
        results[name] = {"median_ms": 1000 * times[len(times) // 2], "min_ms": 1000 * times[0],
                         "peak_extra_mb": (torch.cuda.max_memory_allocated(device) - base) / 2**20}
        print(f"{name}: {results[name]}", flush=True)
    return results


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    device = "cuda"
    backends, reasons = working_backends(device)
    record = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "backends": backends,
              "not_running": reasons, "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        import triton

        record["triton"] = triton.__version__
    except Exception:
        pass
    record["agreement_vs_torch_B64_L200"] = agreement(backends, device)
    print(json.dumps(record["agreement_vs_torch_B64_L200"], indent=1), flush=True)
    record["block_fwd_bwd_B2048_L200_d64_N32"] = timing(backends, device)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)
    bad = {k: v["worst"] for k, v in record["agreement_vs_torch_B64_L200"].items() if v["worst"] > 1e-3}
    if bad:
        raise SystemExit(f"backends disagree with torch: {bad}")


if __name__ == "__main__":
    main()

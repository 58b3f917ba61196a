"""Mamba block forward+backward on CPU: recbole-mamba's torch scan vs a plain
per-step autograd loop vs mambapy 1.2.0's parallel scan (pscan).

Each implementation runs in its own process (same shapes, same thread count, same
run), so peak memory is that implementation's alone.  Writes JSON and a PNG of time
and peak memory against L:

    python bench/scan_speed.py                       # B=64 L=200 d=64 N=32, 2 threads
    python bench/scan_speed.py --lengths 50 200 800  # how cost grows with L
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

from common import HERE, log_length_axis, machine_record, pyplot

IMPLEMENTATIONS = ("recbole_mamba", "plain_loop", "mambapy_pscan")


def plain_loop_scan(u, delta, A, B, C):
    """Per-step recurrence left to autograd: the baseline the torch backend must beat."""
    import torch

    h = u.new_zeros(u.shape[1], u.shape[2], A.shape[1])
    ys = []
    for t in range(u.shape[0]):
        h = torch.exp(delta[t, :, :, None] * A) * h + (delta[t] * u[t])[:, :, None] * B[t][:, None, :]
        ys.append(torch.matmul(h, C[t][:, :, None]).squeeze(-1))
    return torch.stack(ys)


def build_block(name, d_model, d_state, expand):
    if name == "mambapy_pscan":
        from mambapy.mamba import MambaBlock, MambaConfig

        return MambaBlock(MambaConfig(d_model=d_model, n_layers=1, d_state=d_state, expand_factor=expand, pscan=True))
    import recbole_mamba.ssm.mamba as mamba_module

    if name == "plain_loop":
        mamba_module.scan_time_major = plain_loop_scan
    return mamba_module.Mamba(d_model, d_state=d_state, expand=expand, backend="torch")


def run_one(args):
    """Child process: time one implementation, print one JSON line."""
    import psutil
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    block = build_block(args.impl, args.d_model, args.d_state, args.expand)
    x = torch.randn(args.batch, args.length, args.d_model, requires_grad=True)
    rss_before = psutil.Process().memory_info().rss
    times = []
    for i in range(args.warmup + args.repeats):
        start = time.perf_counter()
        block(x).sum().backward()
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    times.sort()
    print(json.dumps({
        "impl": args.impl, "length": args.length,
        "median_ms": 1000 * times[len(times) // 2], "min_ms": 1000 * times[0],
        "peak_extra_mb": (peak - rss_before) / 2**20,
    }))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lengths", type=int, nargs="+", default=[200])
    parser.add_argument("--d_model", type=int, default=64)
    parser.add_argument("--d_state", type=int, default=32)
    parser.add_argument("--expand", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--impls", nargs="+", default=list(IMPLEMENTATIONS), choices=IMPLEMENTATIONS)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "scan_speed.json"))
    parser.add_argument("--impl", help=argparse.SUPPRESS)
    parser.add_argument("--length", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.impl:
        return run_one(args)

    rows = []
    for length in args.lengths:
        for impl in args.impls:
            command = [sys.executable, __file__, "--impl", impl, "--length", str(length)] + [
                f"--{k}={getattr(args, k)}" for k in ("batch", "d_model", "d_state", "expand", "threads", "warmup", "repeats")
            ]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"{impl} L={length} failed: {done.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"L={length:4d} {impl:14s} {row['median_ms']:9.1f} ms  peak +{row['peak_extra_mb']:7.1f} MB", flush=True)
    by = {(r["impl"], r["length"]): r for r in rows}
    ratios = {}
    for length in args.lengths:
        ours = by.get(("recbole_mamba", length))
        for other in ("plain_loop", "mambapy_pscan"):
            if ours and (other, length) in by:
                ratios[f"{other}_over_ours_L{length}"] = by[(other, length)]["median_ms"] / ours["median_ms"]
    result = {
        "benchmark": "Mamba block forward+backward, CPU",
        "shape": {"batch": args.batch, "d_model": args.d_model, "d_state": args.d_state, "expand": args.expand},
        "threads": args.threads, "warmup": args.warmup, "repeats": args.repeats,
        **machine_record(args.threads), "seed": 0, "rows": rows, "speedup": ratios,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    for key, value in ratios.items():
        print(f"{key}: {value:.2f}x")
    print(f"wrote {args.out}")
    if len(args.lengths) > 1:
        plot(result, os.path.splitext(args.out)[0] + ".png")


def plot(result, path):
    """Median time and peak memory against L, one line per implementation (log-log)."""
    plt = pyplot()

    fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(10, 3.8))
    for impl in IMPLEMENTATIONS:
        rows = sorted((r for r in result["rows"] if r["impl"] == impl), key=lambda r: r["length"])
        if not rows:
            continue
        lengths = [r["length"] for r in rows]
        ax_time.plot(lengths, [r["median_ms"] for r in rows], marker="o", label=impl)
        ax_mem.plot(lengths, [max(r["peak_extra_mb"], 0.1) for r in rows], marker="o", label=impl)
    for ax, label in ((ax_time, "forward+backward ms (median)"), (ax_mem, "peak extra MB")):
        log_length_axis(ax, [r["length"] for r in result["rows"]])
        ax.set_yscale("log")
        ax.set_xlabel("sequence length L")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    shape = result["shape"]
    fig.suptitle(f"One Mamba block on CPU: B={shape['batch']}, d={shape['d_model']}, N={shape['d_state']}, "
                 f"{result['threads']} thread(s)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

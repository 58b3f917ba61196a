"""Latency of scoring one new event: incremental ``step`` vs full re-encode with ``forward``.

    python bench/incremental_latency.py [--device cpu|cuda] [--lengths 50 200 1000] [--threads 1]

For each history length L, one user (batch 1) already has L-1 events and one more
arrives.  *incremental*: ``model.step`` on the saved recurrent state (Mamba's conv +
SSM state, the GRU's hidden state).  *full*: ``model.forward`` over all L events, what
a model without a recurrent mode (SASRec, BiMamba4Rec) has to do.  Untrained models
at the paper sizes (Mamba4Rec: d=64, d_state=32, 1 layer; GRU4Rec: RecBole's
defaults) on ml-100k's item set; latency does not depend on the weights.  Each
configuration also checks that step == forward at length L.  Writes
bench/results/incremental_latency.json and .png.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch

from common import HERE, pyplot


def build(model_name, device):
    import recbole_mamba  # noqa: F401
    from recbole.config import Config
    from recbole.data import create_dataset
    from recbole.utils import get_model

    # a short MAX_ITEM_LIST_LENGTH keeps RecBole's dataset small; forward takes any length
    config = Config(model=model_name, dataset="ml-100k", config_dict={
        "MAX_ITEM_LIST_LENGTH": 50, "use_gpu": device.type == "cuda", "state": "WARNING",
        "show_progress": False})
    dataset = create_dataset(config)
    torch.manual_seed(0)
    model = get_model(model_name)(config, dataset.copy(dataset._dataframe_to_interaction(dataset.inter_feat)))
    return model.to(device).eval()


def timed(function, device, repeats, warmup=3):
    """Median wall time of ``function()`` in milliseconds."""
    for _ in range(warmup):
        function()
    samples = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        function()
        if device.type == "cuda":
            torch.cuda.synchronize()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


@torch.no_grad()
def measure(model, length, device, repeats):
    seq = torch.randint(1, model.n_items, (1, length), device=device)  # [1, L]
    state = model.init_state(1, device)
    for t in range(length - 1):
        _, state = model.step(seq[:, t], state)
    incremental_vector, _ = model.step(seq[:, -1], state)  # [1, d]
    full_vector = model.forward(seq, torch.tensor([length], device=device))  # [1, d]
    max_diff = float((incremental_vector - full_vector).abs().max())
    step_ms = timed(lambda: model.step(seq[:, -1], state), device, repeats)
    full_ms = timed(lambda: model.forward(seq, torch.tensor([length], device=device)), device,
                    max(5, repeats // (1 + length // 100)))
    return {"length": length, "incremental_ms": step_ms, "full_ms": full_ms,
            "speedup": full_ms / step_ms, "max_abs_diff": max_diff}


def plot(results, path):
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 4))
    for (model_name, device), rows in results.items():
        lengths = [r["length"] for r in rows]
        ax.plot(lengths, [r["full_ms"] for r in rows], "o-", label=f"{model_name} full re-encode ({device})")
        ax.plot(lengths, [r["incremental_ms"] for r in rows], "s--", label=f"{model_name} incremental step ({device})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("history length L (events)")
    ax.set_ylabel("latency per new event (ms, median)")
    ax.set_title("Scoring one new event, batch 1")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", action="append", help="cpu and/or cuda (default: cpu, plus cuda when present)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[50, 200, 1000])
    parser.add_argument("--models", nargs="+", default=["Mamba4Rec", "GRU4Rec"])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1: steady numbers on a shared box)")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "incremental_latency"))
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # RecBole's Config reads --key=value from argv
    torch.set_num_threads(args.threads)
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])

    results, table = {}, []
    for device_name in devices:
        device = torch.device(device_name)
        for model_name in args.models:
            model = build(model_name, device)
            rows = [measure(model, length, device, args.repeats) for length in args.lengths]
            results[(model_name, device_name)] = rows
            for row in rows:
                table.append({"model": model_name, "device": device_name, **row})
                print(f"{model_name:10s} {device_name:4s} L={row['length']:5d}  step {row['incremental_ms']:8.3f} ms"
                      f"  full {row['full_ms']:9.3f} ms  x{row['speedup']:7.1f}  |diff| {row['max_abs_diff']:.1e}")

    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump({
            "what": "median latency to score one new event for one user (batch 1), "
                    "incremental step vs full forward over the history",
            "torch": torch.__version__, "threads": args.threads, "machine": platform.processor() or platform.machine(),
            "cuda_device": torch.cuda.get_device_name() if "cuda" in devices else None,
            "rows": table,
        }, f, indent=2)
    plot(results, args.out + ".png")
    print(f"wrote {args.out}.json and .png")


if __name__ == "__main__":
    main()

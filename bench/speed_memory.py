"""CPU speed and memory per model: training step, peak memory, full-sort inference latency.

    python bench/speed_memory.py                          # L = 50 and 200, batch 128
    python bench/speed_memory.py --lengths 50 200 --batch 256 --repeats 5

For each model (untrained, on ml-100k's item set; cost does not depend on the
weights) and each history length L: one training step (CE loss over all items,
backward, Adam step) on a batch of random histories with lengths uniform in
[1, L], and one ``full_sort_predict`` batch.  Each model runs in its own process,
so its peak memory (max RSS growth while training) is its own; lengths run in
increasing order, so a longer L's peak is not hidden by a shorter one's.  Ratios
are against RecBole's SASRec measured in the same run.  Writes
bench/results/speed_memory.json and .png; with ``--scan-json`` the plot also shows
bench/scan_speed.py's scan backends against L.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from common import RESULTS, log_length_axis, machine_record, pyplot, recbole_config, save_json

MODELS = ("Mamba4Rec", "BiMamba4Rec", "GRU4Rec", "SASRec")


def build_model(model_name, length, seed=0):
    """Model at its paper/RecBole default sizes on ml-100k's item set."""
    import torch
    from recbole.data import create_dataset

    from recbole_mamba.registry import get_model

    config = recbole_config(model_name, "ml-100k", {
        "MAX_ITEM_LIST_LENGTH": length, "use_gpu": False, "state": "WARNING", "show_progress": False,
        "loss_type": "CE", "train_neg_sample_args": None})
    dataset = create_dataset(config)
    torch.manual_seed(seed)
    model = get_model(model_name)(config, dataset.copy(dataset._dataframe_to_interaction(dataset.inter_feat)))
    return model


def random_batch(model, batch, length, seed=0):
    """Interaction of ``batch`` histories, lengths uniform in [1, L], random items and targets."""
    import torch
    from recbole.data.interaction import Interaction

    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, length + 1, (batch,), generator=g)
    seq = torch.randint(1, model.n_items, (batch, length), generator=g)
    seq[torch.arange(length)[None, :] >= lengths[:, None]] = 0  # right padding, as RecBole
    target = torch.randint(1, model.n_items, (batch,), generator=g)
    return Interaction({model.ITEM_SEQ: seq, model.ITEM_SEQ_LEN: lengths, model.POS_ITEM_ID: target})


def median_ms(function, warmup, repeats):
    for _ in range(warmup):
        function()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        samples.append(1000 * (time.perf_counter() - start))
    return statistics.median(samples)


def rss_bytes():
    import psutil

    return psutil.Process().memory_info().rss


def measure_model(args):
    """Child process: every length for one model; one JSON line per length."""
    import torch

    torch.set_num_threads(args.threads)
    for length in args.lengths:
        model = build_model(args.model, length)
        batch = random_batch(model, args.batch, length)
        model.eval()
        with torch.no_grad():
            infer_ms = median_ms(lambda: model.full_sort_predict(batch), args.warmup, args.repeats)
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step():
            optimizer.zero_grad()
            model.calculate_loss(batch).backward()
            optimizer.step()

        rss_before = rss_bytes()
        train_ms = median_ms(step, args.warmup, args.repeats)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
        print(json.dumps({
            "model": args.model, "length": length, "train_step_ms": train_ms, "infer_batch_ms": infer_ms,
            "train_peak_extra_mb": max(0.0, (peak - rss_before) / 2**20),
            "params": sum(p.numel() for p in model.parameters()), "n_items": model.n_items,
        }), flush=True)
        del model, optimizer, batch


def plot(result, path, scan=None):
    plt = pyplot()

    rows = result["rows"]
    models = list(dict.fromkeys(r["model"] for r in rows))
    lengths = sorted({r["length"] for r in rows})
    panels = [("train_step_ms", "training step (ms)"), ("train_peak_extra_mb", "training peak RSS growth (MB)"),
              ("infer_batch_ms", "full-sort inference per batch (ms)")]
    fig, axes = plt.subplots(1, len(panels) + (1 if scan else 0), figsize=(4.6 * (len(panels) + bool(scan)), 3.8))
    width = 0.8 / len(models)
    by = {(r["model"], r["length"]): r for r in rows}
    for ax, (key, title) in zip(axes, panels):
        for i, model_name in enumerate(models):
            xs = [j + (i - (len(models) - 1) / 2) * width for j in range(len(lengths))]
            ax.bar(xs, [by[(model_name, L)][key] if (model_name, L) in by else 0 for L in lengths], width, label=model_name)
        ax.set_xticks(range(len(lengths)))
        ax.set_xticklabels([f"L={L}" for L in lengths])
        ax.set_title(title, fontsize=9)
    axes[0].legend(fontsize=8)
    if scan:
        ax = axes[-1]
        for impl in dict.fromkeys(r["impl"] for r in scan["rows"]):
            points = sorted((r["length"], r["median_ms"]) for r in scan["rows"] if r["impl"] == impl)
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=impl)
        log_length_axis(ax, [r["length"] for r in scan["rows"]])
        ax.set_yscale("log")
        ax.set_xlabel("L")
        ax.set_title(f"Mamba block fwd+bwd (ms), B={scan['shape']['batch']}", fontsize=9)
        ax.legend(fontsize=8)
    fig.suptitle(f"CPU, {result['machine']['torch_threads']} threads, batch {result['batch']}, "
                 "load avg at start " + " / ".join(f"{x:.1f}" for x in result["machine"]["loadavg_1_5_15"] or []),
                 fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--lengths", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--scan-json", help="bench/scan_speed.py output to add to the plot")
    parser.add_argument("--out", default=f"{RESULTS}/speed_memory.json")
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.lengths = sorted(args.lengths)
    if args.model:
        return measure_model(args)

    result = {"benchmark": "training step / peak memory / full-sort inference per model, CPU",
              **machine_record(args.threads), "batch": args.batch, "lengths": args.lengths,
              "warmup": args.warmup, "repeats": args.repeats, "seed": 0,
              "config": "model defaults: Mamba4Rec d=64 N=32 1 layer; BiMamba4Rec d=64 N=32 2 layers; "
                        "GRU4Rec RecBole defaults (emb 64, hidden 128); SASRec RecBole defaults (d=64, 2 layers, 2 heads); "
                        "CE over all ml-100k items; Adam step included; ssm_backend auto (= torch scan on CPU)",
              "not_run": "GPU memory/speed (paper's efficiency table) needs a GPU; none was lent to this run",
              "rows": []}
    start = time.perf_counter()
    for model_name in args.models:
        command = [sys.executable, __file__, "--model", model_name, "--lengths", *map(str, args.lengths)] + [
            f"--{k}={getattr(args, k)}" for k in ("batch", "warmup", "repeats", "threads")]
        done = subprocess.run(command, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0:
            print(f"{model_name} failed: {done.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        for line in lines:
            row = json.loads(line)
            result["rows"].append(row)
            print(f"{model_name:12s} L={row['length']:4d} train {row['train_step_ms']:8.1f} ms  "
                  f"peak +{row['train_peak_extra_mb']:7.1f} MB  infer {row['infer_batch_ms']:7.1f} ms", flush=True)
    by = {(r["model"], r["length"]): r for r in result["rows"]}
    ratios = {}
    for (model_name, length), row in by.items():
        base = by.get(("SASRec", length))
        if base and model_name != "SASRec":
            ratios[f"{model_name}_L{length}"] = {
                key: row[key] / base[key] if base[key] else None
                for key in ("train_step_ms", "train_peak_extra_mb", "infer_batch_ms")}
    result["ratio_vs_SASRec"] = ratios
    result["machine"]["loadavg_1_5_15_end"] = list(os.getloadavg())
    result["wall_s"] = time.perf_counter() - start
    save_json(result, args.out)
    scan = None
    if args.scan_json:
        with open(args.scan_json) as f:
            scan = json.load(f)
    plot(result, args.out[:-5] + ".png", scan)


if __name__ == "__main__":
    main()

"""Gate analysis for a trained MDAF checkpoint: how much each row leans on the static
branch (g near 1) or on the behaviour sequence (g near 0), and how well the model
ranks inside each gate bucket.

    python -m recbole_mamba.gate_analysis --checkpoint saved/MDAF-....pth --out gate_report/

Writes ``gate_hist.png`` (histogram), ``gate_buckets.csv`` / ``.md`` (sample share and
AUC per gate bucket) and ``gate_stats.json`` (mean / median / std of g, overall AUC).
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from recbole_mamba.errors import InputError, RecboleMambaError


def collect_gates(model, eval_data, device, progress=True):
    """(gate, probability, label) arrays over every row of a labelled eval loader."""
    gates, probs, labels = [], [], []
    model.eval()
    with torch.no_grad():
        for batch in tqdm(eval_data, desc="gate", disable=not progress, leave=False):
            interaction = (batch[0] if isinstance(batch, tuple) else batch).to(device)
            gates.append(model.gate_values(interaction).cpu())
            probs.append(model.predict(interaction).cpu())
            labels.append(interaction[model.LABEL].cpu())
    return torch.cat(gates).numpy(), torch.cat(probs).numpy(), torch.cat(labels).numpy()


def bucket_table(gates, probs, labels, bins=10):
    """One row per equal-width gate bucket on [0, 1]: range, rows, share, positive rate, AUC."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(gates, edges[1:-1]), 0, bins - 1)
    rows = []
    for b in range(bins):
        inside = index == b
        n = int(inside.sum())
        classes = np.unique(labels[inside]) if n else []
        auc = float(roc_auc_score(labels[inside], probs[inside])) if len(classes) == 2 else None
        rows.append({
            "gate_from": float(edges[b]), "gate_to": float(edges[b + 1]), "rows": n,
            "share": n / max(1, len(gates)), "positive_rate": float(labels[inside].mean()) if n else None,
            "auc": auc,
        })
    return rows


def gate_statistics(gates, probs, labels):
    return {
        "rows": int(len(gates)), "mean": float(np.mean(gates)), "median": float(np.median(gates)),
        "std": float(np.std(gates)), "min": float(np.min(gates)), "max": float(np.max(gates)),
        "auc": float(roc_auc_score(labels, probs)) if len(np.unique(labels)) == 2 else None,
    }


def markdown_table(rows):
    lines = ["| gate bucket | rows | share | positive rate | AUC |", "|---|---|---|---|---|"]
    for r in rows:
        auc = f"{r['auc']:.4f}" if r["auc"] is not None else "–"
        rate = f"{r['positive_rate']:.3f}" if r["positive_rate"] is not None else "–"
        lines.append(f"| [{r['gate_from']:.1f}, {r['gate_to']:.1f}) | {r['rows']} | {r['share']:.1%} | {rate} | {auc} |")
    return "\n".join(lines) + "\n"


def write_report(gates, probs, labels, out_dir, bins=10):
    """Histogram PNG, bucket table (CSV + Markdown) and statistics JSON in ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    rows = bucket_table(gates, probs, labels, bins)
    stats = gate_statistics(gates, probs, labels)
    with open(os.path.join(out_dir, "gate_buckets.csv"), "w", encoding="utf-8") as f:
        f.write("gate_from,gate_to,rows,share,positive_rate,auc\n")
        for r in rows:
            f.write(",".join("" if r[k] is None else f"{r[k]}" for k in
                             ("gate_from", "gate_to", "rows", "share", "positive_rate", "auc")) + "\n")
    with open(os.path.join(out_dir, "gate_buckets.md"), "w", encoding="utf-8") as f:
        f.write(markdown_table(rows))
    with open(os.path.join(out_dir, "gate_stats.json"), "w", encoding="utf-8") as f:
        json.dump(stats, f, indent=2)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(gates, bins=np.linspace(0, 1, 4 * bins + 1), color="#3b75af")
    ax.axvline(stats["mean"], color="#c44e52", linestyle="--", label=f"mean {stats['mean']:.3f}")
    ax.set_xlabel("gate g (weight of the static DCNv3 branch)")
    ax.set_ylabel("rows")
    ax.set_title("MDAF gate values")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "gate_hist.png"), dpi=120)
    plt.close(fig)
    return stats, rows


def analyse_checkpoint(checkpoint, out_dir, split="test", bins=10, progress=True):
    from recbole.quick_start import load_data_and_model

    import recbole_mamba  # noqa: F401

    if not os.path.isfile(checkpoint):
        raise InputError(f"checkpoint {checkpoint!r} does not exist; pass the .pth file RecBole saved (saved/MDAF-*.pth)")
    config, model, _, _, valid_data, test_data = load_data_and_model(checkpoint)
    if not hasattr(model, "gate_values"):
        raise InputError(f"{checkpoint!r} holds a {config['model']} model; gate analysis needs an MDAF checkpoint")
    gates, probs, labels = collect_gates(model, test_data if split == "test" else valid_data, config["device"], progress)
    return write_report(gates, probs, labels, out_dir, bins)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m recbole_mamba.gate_analysis", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="MDAF checkpoint (.pth) saved by RecBole")
    parser.add_argument("--out", default="gate_report", help="output folder (default ./gate_report)")
    parser.add_argument("--split", choices=("test", "valid"), default="test")
    parser.add_argument("--bins", type=int, default=10, help="equal-width gate buckets on [0, 1]")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    sys.argv = sys.argv[:1]  # RecBole's Config reads --key=value from argv
    try:
        stats, rows = analyse_checkpoint(args.checkpoint, args.out, args.split, args.bins)
    except RecboleMambaError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2)
    print(markdown_table(rows))
    print(f"gate mean {stats['mean']:.4f}  median {stats['median']:.4f}  std {stats['std']:.4f}  "
          f"AUC {stats['auc']}  -> {args.out}")


if __name__ == "__main__":
    main()

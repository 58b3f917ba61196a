"""CTR on real Taobao UserBehavior data: MDAF, its four ablations, a target-aware MDAF
(``sequence_target``, not in the thesis), DCNv3 and
RecBole's DCNV2 and AutoInt on the same converted data and the same time split.

    python bench/ctr_taobao.py                         # defaults below, ~20 min on 2 CPU cores
    python bench/ctr_taobao.py --max-users 815 --history 50 --hidden 128 --epochs 10   # thesis widths

Converts ``../shared/data/taobao_userbehavior/UserBehavior_head_prefix.csv`` (the first
815 complete users of Tianchi's UserBehavior.csv) with ``recbole_mamba.data.ctr`` into
bench/out/, trains every model for every seed through RecBole's quick start (early
stopping on valid AUC), and writes bench/results/ctr_taobao.json plus a Markdown table;
every gate run also gets a gate report in ctr_gates/<variant>-seed<seed>/ next to it.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time

from common import (HERE, SHARED_DATA, bar_plot, count_trainable, newest_checkpoint, partial_path, repo_relative,
                    slugify)

DEFAULT_INPUT = os.path.join(SHARED_DATA, "taobao_userbehavior", "UserBehavior_head_prefix.csv")

# name in the table -> (RecBole model, extra config)
VARIANTS = {
    "MDAF (gate)": ("MDAF", {"fusion": "gate"}),
    "MDAF (gate) + target in sequence": ("MDAF", {"fusion": "gate", "sequence_target": True}),
    "MDAF static only": ("MDAF", {"fusion": "static"}),
    "MDAF sequential only": ("MDAF", {"fusion": "sequential"}),
    "MDAF sequential only + target in sequence": ("MDAF", {"fusion": "sequential", "sequence_target": True}),
    "MDAF concat": ("MDAF", {"fusion": "concat"}),
    "MDAF fixed 0.5": ("MDAF", {"fusion": "fixed"}),
    "DCNv3": ("DCNv3", {}),
    "DCNV2 (RecBole)": ("DCNV2", {}),
    "AutoInt (RecBole)": ("AutoInt", {}),
}


def count_parameters(model_name, config_dict):
    from recbole_mamba.registry import PLUGIN_MODELS, props_file

    files = None if model_name in PLUGIN_MODELS else [props_file("dataset", "taobao-ctr")]
    return count_trainable(model_name, "taobao-ctr", files, config_dict)


def _load_partial(out):
    path = partial_path(out)
    return json.load(open(path)) if os.path.isfile(path) else []


def _save_partial(out, runs):
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(partial_path(out), "w") as f:
        json.dump(runs, f, indent=2)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", default=DEFAULT_INPUT)
    parser.add_argument("--max-users", type=int, default=100)
    parser.add_argument("--history", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=64, help="MDAF branch width (thesis: 128)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[2020, 2021, 2022])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--resume", action="store_true", help="skip runs already in the .partial.json")
    parser.add_argument("--summarise", action="store_true", help="only write the table from the .partial.json")
    parser.add_argument("--batch", type=int, default=256, help="train batch size for every model")
    parser.add_argument("--learning-rate", type=float, default=1e-3,
                        help="for every model (the thesis' 3e-4 needs more steps than a CPU budget has)")
    parser.add_argument("--warmup-epochs", type=int, default=1, help="MDAF warm-up (thesis: 2)")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "ctr_taobao.json"))
    args = parser.parse_args()
    if not os.path.isfile(args.input):
        raise SystemExit(f"error: {args.input} not found; pass --input=UserBehavior.csv")
    sys.argv = sys.argv[:1]

    import torch
    import recbole_mamba
    from recbole.quick_start import run_recbole
    from recbole_mamba.data.ctr import convert
    from recbole_mamba.gate_analysis import analyse_checkpoint
    from recbole_mamba.registry import PLUGIN_MODELS, props_file

    torch.set_num_threads(args.threads)
    data_dir = os.path.join(HERE, "out", "ctr_taobao")
    summary = convert(args.input, "taobao-ctr", data_dir, history=args.history, max_users=args.max_users,
                      progress=False)
    print(summary, flush=True)
    common = {
        "data_path": data_dir, "use_gpu": False, "show_progress": False, "state": "WARNING",
        "epochs": args.epochs, "stopping_step": 3, "train_batch_size": args.batch, "eval_batch_size": 4096,
        "learning_rate": args.learning_rate, "warmup_epochs": args.warmup_epochs,
        "checkpoint_dir": os.path.join(HERE, "out", "ctr_checkpoints"), "seq_len": {"item_id_list": args.history},
    }
    mdaf_widths = {"hidden_size": args.hidden}
    gate_reports = os.path.join(os.path.dirname(args.out), "ctr_gates")  # per gate run: histogram, buckets, stats
    runs = _load_partial(args.out) if args.resume or args.summarise else []
    done = {(r["variant"], r["seed"]) for r in runs}
    for seed in args.seeds:  # seed-major: a cut-short run still covers every variant
        for name in args.variants:
            if (name, seed) in done or args.summarise:
                continue
            model_name, extra = VARIANTS[name]
            config = {**common, **extra, **(mdaf_widths if model_name == "MDAF" else {})}
            slug = f"{slugify(name)}-seed{seed}"
            config["checkpoint_dir"] = os.path.join(HERE, "out", "ctr_checkpoints", slug)  # one run's .pth only
            start = time.time()
            # the plugin's dataset YAML reaches only plugin models; RecBole's get it as a file
            files = None if model_name in PLUGIN_MODELS else [props_file("dataset", "taobao-ctr")]
            result = run_recbole(model=model_name, dataset="taobao-ctr", config_file_list=files,
                                 config_dict={**config, "seed": seed})
            row = {"variant": name, "model": model_name, "seed": seed, "seconds": time.time() - start,
                   "test_auc": result["test_result"]["auc"], "test_logloss": result["test_result"]["logloss"],
                   "best_valid_auc": result["best_valid_result"]["auc"]}
            if extra.get("fusion") == "gate":  # the learned gate on the test rows, with its report
                row["gate"], _ = analyse_checkpoint(newest_checkpoint(config["checkpoint_dir"]),
                                                    os.path.join(gate_reports, slug), progress=False)
            runs.append(row)
            _save_partial(args.out, runs)
            print(f"{name:22s} seed {seed}: AUC {row['test_auc']:.4f} LogLoss {row['test_logloss']:.4f} "
                  f"({row['seconds']:.0f}s)", flush=True)
    table = []
    for name in args.variants:
        model_name, extra = VARIANTS[name]
        rows = [r for r in runs if r["variant"] == name]
        if not rows:
            continue
        aucs, losses = [r["test_auc"] for r in rows], [r["test_logloss"] for r in rows]
        params = count_parameters(model_name, {**common, **extra, **(mdaf_widths if model_name == "MDAF" else {})})
        gates = [r["gate"]["mean"] for r in rows if r.get("gate")]
        table.append({
            "variant": name, "params": params,
            "gate_mean": statistics.mean(gates) if gates else None,
            "gate_means_per_seed": gates or None,
            "auc_mean": statistics.mean(aucs), "auc_std": statistics.stdev(aucs) if len(aucs) > 1 else 0.0,
            "logloss_mean": statistics.mean(losses), "logloss_std": statistics.stdev(losses) if len(losses) > 1 else 0.0,
        })
    result = {
        "benchmark": "CTR on Taobao UserBehavior (real data), time-ordered 80/10/10 split",
        "data": {"input": os.path.basename(args.input), "max_users": args.max_users, "history": args.history,
                 "negatives_per_positive": 1, "negatives": "same-day popularity", "summary": repo_relative(summary)},
        "complete": all((n, s) in {(r["variant"], r["seed"]) for r in runs} for n in args.variants for s in args.seeds),
        "budget": {"threads": args.threads, "epochs": args.epochs, "stopping_step": 3, "train_batch_size": args.batch,
                   "learning_rate": args.learning_rate, "mdaf_warmup_epochs": args.warmup_epochs, "seeds": args.seeds,
                   "mdaf_hidden_size": args.hidden},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_average": os.getloadavg()},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "recbole_mamba": recbole_mamba.__version__},
        "table": table, "runs": runs,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    lines = ["| model | params | test AUC | test LogLoss | mean gate (test) |", "|---|---|---|---|---|"]
    for row in table:
        gate = f"{row['gate_mean']:.3f}" if row.get("gate_mean") is not None else "–"
        lines.append(f"| {row['variant']} | {row['params']:,} | {row['auc_mean']:.4f} ± {row['auc_std']:.4f} | "
                     f"{row['logloss_mean']:.4f} ± {row['logloss_std']:.4f} | {gate} |")
    markdown = "\n".join(lines) + "\n"
    if table:
        bar_plot(os.path.splitext(args.out)[0] + ".png", [r["variant"] for r in table],
                 [r["auc_mean"] for r in table], [r["auc_std"] for r in table], "test AUC (mean ± std over seeds)",
                 f"Taobao CTR, {args.max_users} users, {args.epochs} epochs, {len(args.seeds)} seeds "
                 "(dashed: chance)", reference=0.5, xmin=0.45)
    with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
        f.write(markdown)
    print(markdown)


if __name__ == "__main__":
    main()

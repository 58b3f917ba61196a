"""Paper scale on a CPU: the papers' model configs on ML-1M (L 200) and Video Games (L 50),
trained on every position (``train_mode: all_positions``) or per prefix, under a wall-clock budget.

    python bench/paper_cpu.py --dataset ml-1m --run mamba4rec-ap --seed 2020 --out bench/out/paper_cpu/a.json
    python bench/paper_cpu.py --merge bench/out/paper_cpu/*.json --out bench/results/paper_cpu.json

One process trains one (dataset, run, seed) and writes its piece; pieces run side by side
(one torch thread each on the 2 cores) and are merged with ``--merge``, which also draws
the plot and the README table.  Runs (``--run``):

* ``mamba4rec-ap``: Mamba4Rec at the paper config (d 64, d_state 32, 1 layer), all positions
* ``mamba4rec-2l-ap``: the same with 2 layers
* ``gru4rec-ap``: GRU4Rec (RecBole's sizes: embedding 64, hidden 128), all positions
* ``sasrec-prefix``: RecBole's SASRec (its defaults, d 64, 2 layers), prefix mode
* ``bimamba4rec-prefix``: BiMamba4Rec at the paper config (2 layers), prefix mode
* ``mamba4rec-prefix``: Mamba4Rec at the paper config, prefix mode

Training: CE over all items, Adam 1e-3, early stop 10 on valid NDCG@10, test at the best
valid epoch, batches of rows of similar length (``length_bucketing``) cut to their longest row; ``--budget-min`` stops training once the
wall-clock budget is spent (mid-epoch too, which then validates the partial epoch) and
tests the best epoch so far.  Protocol: leave-one-out by time, full ranking, [5,inf)
filters (props/dataset/*.yaml).  Data: ``../shared/data/ml-1m/seq/ml-1m.txt`` (6,039 of
6,040 users: one user of 39 interactions is missing at the file's source) and SASRec's
``Video.txt``, converted with ``python -m recbole_mamba.data seqfile`` into bench/out/.
"""
import argparse
import json
import os
import shutil
import sys
import textwrap
import time

from accuracy import METRICS, ML1M_NOTE, prepare_games, prepare_ml1m, prepared_data
from common import OUT, RESULTS, SEED_PAPER, machine_record, mean_std, pyplot, recbole_config, repo_relative, save_json

RUNS = {
    "mamba4rec-ap": ("Mamba4Rec", "Mamba4Rec (all_positions)", {"train_mode": "all_positions"}),
    "mamba4rec-2l-ap": ("Mamba4Rec", "Mamba4Rec 2 layers (all_positions)",
                        {"train_mode": "all_positions", "num_layers": 2}),
    "gru4rec-ap": ("GRU4Rec", "GRU4Rec (all_positions)", {"train_mode": "all_positions"}),
    "sasrec-prefix": ("SASRec", "SASRec (prefix)", {}),
    "bimamba4rec-prefix": ("BiMamba4Rec", "BiMamba4Rec (prefix)", {}),
    "mamba4rec-prefix": ("Mamba4Rec", "Mamba4Rec (prefix)", {}),
}
# train_batch_size: the datasets' YAML value in both modes (rows per batch in prefix
# mode, target positions per update in all_positions mode)
BATCH = {"ml-1m": {"all_positions": 2048, "prefix": 2048}, "amazon-video-games": {"all_positions": 2048, "prefix": 2048}}
MAX_LEN = {"ml-1m": 200, "amazon-video-games": 50}
MAMBA4REC_PAPER_ML1M = {"hit@10": 0.3121, "ndcg@10": 0.1822, "mrr@10": 0.1425}
SASREC_PLUS_ML1M = {"hit@10": 0.3152, "ndcg@10": 0.1821}
SHORT = {"learning_rate": "lr", "dropout_prob": "dropout", "train_batch_size": "batch"}
TITLES = {"ml-1m": "ML-1M (L 200)", "amazon-video-games": "Video Games (L 50)"}


class BudgetSpent(Exception):
    """Raised at the start of an epoch once the wall-clock budget is spent."""


class _UntilDeadline:
    """A training loader that stops yielding batches at ``deadline`` (perf_counter) and,
    with ``slice_s``, after ``slice_s`` seconds of each call: the next call goes on where
    the last one stopped (a new pass over the data starts when one ends), so RecBole
    validates every ``slice_s`` seconds even when one pass over the data takes longer."""

    def __init__(self, loader, deadline, slice_s=0.0):
        self._loader, self._deadline, self._slice_s = loader, deadline, slice_s
        self._pass, self.cut, self.passes_done = None, False, 0.0
        self._batches_in_pass, self._completed = 0, 0

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def __len__(self):
        return len(self._loader)

    def __iter__(self):
        stop = self._deadline if not self._slice_s else min(self._deadline, time.perf_counter() + self._slice_s)
        self.cut = False
        if self._pass is None:
            self._pass, self._batches_in_pass = iter(self._loader), 0
        while True:
            if time.perf_counter() > stop:
                self.cut = True
                return
            try:
                batch = next(self._pass)
            except StopIteration:
                self._pass = None
                self._completed += 1
                self.passes_done = float(self._completed)
                return
            self._batches_in_pass += 1
            self.passes_done = self._completed + self._batches_in_pass / max(1, len(self._loader))
            yield batch


def run_config(args, data_path, overrides):
    mode = overrides.get("train_mode", "prefix")
    return {
        "data_path": data_path, "use_gpu": args.device == "cuda", "ssm_backend": args.ssm_backend,
        "state": "WARNING", "show_progress": False,
        "checkpoint_dir": os.path.join(OUT, "saved"), "epochs": args.epochs, "stopping_step": args.stopping_step,
        "eval_step": 1, "learning_rate": 0.001, "loss_type": "CE", "train_neg_sample_args": None,
        "MAX_ITEM_LIST_LENGTH": MAX_LEN[args.dataset],
        "train_batch_size": args.train_batch_size or BATCH[args.dataset][mode], "eval_batch_size": args.eval_batch_size,
        "length_bucketing": args.length_bucketing,
        # the protocol in full: props/dataset/*.yaml reaches plugin models only, not RecBole's SASRec
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "user_inter_num_interval": "[5,inf)", "item_inter_num_interval": "[5,inf)",
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
        "metrics": ["Hit", "NDCG", "MRR"], "topk": [10], "valid_metric": "NDCG@10",
        **overrides,
    }


def train_once(args, data_path):
    """Train one run under the budget; per-epoch curve, test at the best valid epoch."""
    import torch
    from recbole.utils import init_seed

    from recbole_mamba.registry import get_model, get_trainer

    model_name, label, overrides = RUNS[args.run]
    if args.set:  # a variant of the run, named in its label
        overrides = {**overrides, **args.set}
        name, mode = label.split(" (", 1)
        label = f"{name} " + ", ".join(f"{SHORT.get(k, k)} {v}" for k, v in args.set.items()) + f" ({mode}"
    resume = {"resume": os.path.abspath(args.checkpoint)} if args.checkpoint and os.path.exists(args.checkpoint) else {}
    config = recbole_config(model_name, args.dataset,
                            {**run_config(args, data_path, overrides), "seed": args.seed, **resume})
    init_seed(args.seed, config["reproducibility"])
    stats, train_data, valid_data, test_data = prepared_data(config, args.dataset)
    init_seed(args.seed, config["reproducibility"])
    model = get_model(model_name)(config, train_data._dataset)
    trainer = get_trainer(config["MODEL_TYPE"], model_name)(config, model)
    os.makedirs(config["checkpoint_dir"], exist_ok=True)
    trainer.saved_model_file = os.path.join(config["checkpoint_dir"], f"paper_cpu-{args.run}-{args.dataset}-{args.seed}-{os.getpid()}.pth")

    start = time.perf_counter()
    deadline = start + args.budget_min * 60 if args.budget_min else float("inf")
    curve, epoch_train_s, partial = [], [], []
    train_epoch, valid_epoch = trainer._train_epoch, trainer._valid_epoch
    limited = {}

    def budgeted_train_epoch(train_data, epoch_idx, *a, **kw):
        if time.perf_counter() > deadline:
            raise BudgetSpent
        if "loader" not in limited:  # one per run: a slice goes on where the last one stopped
            limited["loader"] = _UntilDeadline(train_data, deadline, args.eval_every_min * 60)
        t0 = time.perf_counter()
        loss = train_epoch(limited["loader"], epoch_idx, *a, **kw)
        epoch_train_s.append(time.perf_counter() - t0)
        partial.append(limited["loader"].cut)
        return loss

    def recorded_valid_epoch(*a, **kw):
        score, result = valid_epoch(*a, **kw)
        curve.append({"epoch": len(curve) + 1, "wall_s": time.perf_counter() - start,
                      "valid_ndcg@10": float(score), "partial_epoch": partial[-1] if partial else False,
                      "data_passes": limited["loader"].passes_done if "loader" in limited else None})
        print(f"{args.dataset} {label} seed {args.seed} epoch {len(curve)}: valid ndcg@10 {score:.4f} "
              f"at {curve[-1]['wall_s'] / 60:.1f} min", flush=True)
        if args.progress:  # the curve so far, should the process be cut off
            save_json({"label": label, "seed": args.seed, "curve": curve}, args.progress)
        return score, result

    trainer._train_epoch, trainer._valid_epoch = budgeted_train_epoch, recorded_valid_epoch
    stopped_by = "early stopping or epoch limit"
    try:
        trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    except BudgetSpent:
        stopped_by = "wall-clock budget"
    if partial and partial[-1] and time.perf_counter() > deadline:
        stopped_by = "wall-clock budget"
    fit_s = time.perf_counter() - start
    test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    kept = os.path.abspath(args.checkpoint) if args.checkpoint else None
    if kept and os.path.exists(trainer.saved_model_file) and os.path.abspath(trainer.saved_model_file) != kept:
        os.makedirs(os.path.dirname(kept), exist_ok=True)  # the run goes on from here next time
        shutil.copyfile(trainer.saved_model_file, kept)
    if os.path.exists(trainer.saved_model_file) and os.path.abspath(trainer.saved_model_file) != kept:
        os.remove(trainer.saved_model_file)
    best = max(curve, key=lambda c: c["valid_ndcg@10"]) if curve else None
    whole = [s for s, p in zip(epoch_train_s, partial) if not p]
    return {
        "run": args.run, "label": label, "model": model_name, "dataset": args.dataset, "seed": args.seed,
        "device": args.device, "ssm_backend": args.ssm_backend, "resumed_from_checkpoint": bool(resume),
        "config": {k: v for k, v in {**overrides, "train_batch_size": config["train_batch_size"],
                                     "MAX_ITEM_LIST_LENGTH": config["MAX_ITEM_LIST_LENGTH"], "learning_rate": config["learning_rate"],
                                     "num_layers": config["num_layers"], "hidden_size": config["hidden_size"],
                                     "train_mode": overrides.get("train_mode", "prefix"),
                                     "length_bucketing": bool(args.length_bucketing)}.items()},
        "test": {k: float(test[k]) for k in METRICS},
        "best_valid_ndcg@10": best["valid_ndcg@10"] if best else None,
        "best_epoch": best["epoch"] if best else None,
        "wall_s_to_best_epoch": best["wall_s"] if best else None,
        "epochs_run": len(curve), "last_epoch_partial": bool(partial and partial[-1]),
        "eval_every_min": args.eval_every_min or None,
        "data_passes": limited["loader"].passes_done if "loader" in limited else None,
        "passes_counted_once": True,
        "train_s_per_epoch": sum(whole) / len(whole) if whole else None,
        "train_s_per_data_pass": (sum(epoch_train_s) / limited["loader"].passes_done
                                  if "loader" in limited and limited["loader"].passes_done else None),
        "train_s_partial_epoch": epoch_train_s[-1] if partial and partial[-1] else None,
        "fit_s": fit_s, "budget_min": args.budget_min or None, "stopped_by": stopped_by,
        "curve": curve, "dataset_stats": stats,
        "params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "torch_threads": torch.get_num_threads(),
    }


# ---------------------------------------------------------------- merge, plot, table

def corrected_passes(run):
    """Pieces written before ``passes_counted_once`` counted every completed pass twice (the
    end of a pass added one more on top of the pass's last batch): 2k + f for k passes and a
    fraction f of the next.  Returns the run with data_passes = k + f and the seconds per pass
    scaled to match; newer pieces come back unchanged."""
    passes = run.get("data_passes")
    if run.get("passes_counted_once") or not passes or passes < 1:
        return run
    k = int(passes) // 2
    fixed = k + (passes - 2 * k)
    per_pass = run.get("train_s_per_data_pass")
    return {**run, "data_passes": fixed, "passes_counted_once": True,
            "train_s_per_data_pass": per_pass * passes / fixed if per_pass else per_pass}


def summarise(runs):
    runs = [corrected_passes(r) for r in runs]
    summary = {}
    for run in runs:
        models = summary.setdefault(run["dataset"], {"models": {}})["models"]
        models.setdefault(run["label"], []).append(run)
    for dataset, entry in summary.items():
        rows = {}
        for label, group in entry["models"].items():
            row = {"seeds": [r["seed"] for r in group]}
            for metric in METRICS:
                row[metric] = dict(zip(("mean", "std"), mean_std([r["test"][metric] for r in group])))
            for key in ("epochs_run", "best_epoch", "wall_s_to_best_epoch", "fit_s", "train_s_per_epoch",
                        "train_s_per_data_pass", "data_passes", "params"):
                values = [r[key] for r in group if r.get(key) is not None]
                row[key] = mean_std(values)[0] if values else None
            row["stopped_by"] = sorted({r["stopped_by"] for r in group})
            row["budget_min"] = group[0]["budget_min"]
            row["train_mode"] = group[0]["config"]["train_mode"]
            row["train_batch_size"] = group[0]["config"]["train_batch_size"]
            rows[label] = row
        entry["models"] = rows
    return summary


def plot(result, path):
    plt = pyplot()
    datasets = [d for d in ("ml-1m", "amazon-video-games") if d in result["summary"]]
    fig, axes = plt.subplots(1, len(datasets), figsize=(6.5 * len(datasets), 4.4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for run in (r for r in result["runs"] if r["dataset"] == dataset):
            xs = [c["wall_s"] / 60 for c in run["curve"]]
            ys = [c["valid_ndcg@10"] for c in run["curve"]]
            style = "-" if run["config"]["train_mode"] == "all_positions" else "--"
            ax.plot(xs, ys, style, marker=".", label=f"{run['label']} s{run['seed']}")
        if dataset == "ml-1m":
            ax.axhline(MAMBA4REC_PAPER_ML1M["ndcg@10"], color="#c44e52", linestyle=":", linewidth=1,
                       label="Mamba4Rec paper (test)")
        elif (dataset, "Mamba4Rec") in SEED_PAPER:
            ax.axhline(SEED_PAPER[(dataset, "Mamba4Rec")]["ndcg@10"], color="#c44e52", linestyle=":", linewidth=1,
                       label="seed paper Mamba4Rec (test)")
        ax.set_xlabel("wall-clock minutes (training + validation, 1 thread)")
        ax.set_ylabel("valid NDCG@10")
        ax.set_title(f"{TITLES[dataset]}: solid = all_positions, dashed = prefix", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(textwrap.fill("Paper configs on a CPU: " + result["machine_summary"], 120), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}", flush=True)


def _fmt(value, digits=4):
    return "–" if value is None else f"{value:.{digits}f}"


def table(result):
    """Markdown: one table per dataset, papers' numbers beside ours."""
    lines = []
    for dataset in ("ml-1m", "amazon-video-games"):
        entry = result["summary"].get(dataset)
        if not entry:
            continue
        stats = next(r["dataset_stats"] for r in result["runs"] if r["dataset"] == dataset)
        lines += [f"**{TITLES[dataset]}** ({stats['users']:,} users, {stats['items']:,} items, "
                  f"{stats['interactions']:,} interactions)", "",
                  "| model | mode | batch | Hit@10 | NDCG@10 | MRR@10 | seeds | validations (best) | min to best | "
                  "train s per pass | passes | budget | params |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for label, row in entry["models"].items():
            metrics = " | ".join(f"{row[m]['mean']:.4f}" + (f" ± {row[m]['std']:.4f}" if len(row["seeds"]) > 1 else "")
                                 for m in METRICS)
            budget = f"{row['budget_min']:g} min" if row["budget_min"] else "–"
            if "wall-clock budget" in row["stopped_by"]:
                budget += " (hit)"
            name = label.split(" (")[0]
            lines.append(f"| {name} | {row['train_mode']} | {row['train_batch_size']} | {metrics} | {len(row['seeds'])} | "
                         f"{row['epochs_run']:.0f} ({row['best_epoch']:.0f}) | {_fmt((row['wall_s_to_best_epoch'] or 0) / 60, 1)} | "
                         f"{_fmt(row['train_s_per_data_pass'] or row['train_s_per_epoch'], 0)} | "
                         f"{_fmt(row['data_passes'], 2)} | {budget} | {row['params']:,.0f} |")
        if dataset == "ml-1m":
            p, s = MAMBA4REC_PAPER_ML1M, SASREC_PLUS_ML1M
            lines.append(f"| *Mamba4Rec paper (GPU)* | prefix | | {p['hit@10']:.4f} | {p['ndcg@10']:.4f} | {p['mrr@10']:.4f} | | | | | | | |")
            lines.append(f"| *SASRec+ (Klenitskiy & Vasilev 2023)* | all positions | | {s['hit@10']:.4f} | {s['ndcg@10']:.4f} | – | | | | | | | |")
        for model_name in ("Mamba4Rec", "BiMamba4Rec"):
            paper = SEED_PAPER.get((dataset, model_name))
            if paper:
                lines.append(f"| *{model_name}, seed paper (GPU)* | prefix | | {paper['hit@10']:.4f} | {paper['ndcg@10']:.4f} | "
                             f"{paper['mrr@10']:.4f} | | | | | | | |")
        lines.append("")
    return "\n".join(lines)


def padding_lines(padding):
    """What trimming and bucketing buy, and BiMamba4Rec / Mamba4Rec, from bench/padding.py's JSON."""
    def step(e, key, way="bucketed"):
        return e["step_s"].get(key, {}).get(way)

    def ratio(a, b):
        return f"{a / b:.2f}×" if a and b else "–"

    def secs(value):
        return f"{value:.1f} s" if value else "–"

    lines = ["What padding costs in prefix mode (`python bench/padding.py`, 1 thread, `padding.json`): positions one "
             "epoch computes (exact), and seconds per training step (forward, backward, Adam) on batches of the "
             "median bucket width; ratios at equal `num_layers` on the same batches", "",
             "| dataset | batch | padded | trimmed | bucketed + trimmed | valid | all_positions windows (padded) | "
             "Mamba4Rec step: padded / trimmed / bucketed | BiMamba4Rec / Mamba4Rec, 1 layer | 2 layers | "
             "one scan ÷ two, BiMamba4Rec 1L |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for dataset, e in padding["datasets"].items():
        p = e["positions_per_epoch"]
        m1 = e["step_s"].get("Mamba4Rec 1L", {})
        lines.append(
            f"| {TITLES[dataset]} | {e.get('batch', 2048)} | {p['padded']:,} | {p['trimmed']:,} | {p['bucketed']:,} | "
            f"{p['valid']:,} | {p['all_positions_windows']:,} ({p['all_positions_padded']:,}) | "
            f"{secs(m1.get('padded'))} / {secs(m1.get('trimmed'))} / {secs(m1.get('bucketed'))} | "
            f"{ratio(step(e, 'BiMamba4Rec 1L'), step(e, 'Mamba4Rec 1L'))} | "
            f"{ratio(step(e, 'BiMamba4Rec 2L'), step(e, 'Mamba4Rec 2L'))} | "
            f"{ratio(step(e, 'BiMamba4Rec 1L (one scan for both directions)'), step(e, 'BiMamba4Rec 1L'))} |")
    lines.append("")
    lines += [f"{note}." for note in padding.get("notes", [])[1:]]
    return lines + [""]


def readme_lines(result, padding):
    lines = ["Paper configs on a CPU (`bench/results/paper_cpu.json`, merged from one process per run with "
             "`python bench/paper_cpu.py --merge ...`; commands in the JSON). " + result["machine_summary"] + ". "
             "Test metrics at the best valid NDCG@10 epoch; *min to best*: wall-clock minutes (training + "
             "validation) to that epoch.", ""]
    lines += [n + "." for n in result["notes"]] + [""]
    lines += table(result).splitlines()
    lines += ["", "![valid NDCG@10 against wall-clock time](paper_cpu.png)", ""]
    if padding:
        lines += padding_lines(padding)
    return lines


def merge(paths, out, update_readme=False):
    parts = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            parts.append(json.load(f))
    runs = [corrected_passes(run) for part in parts for run in part["runs"]]
    result = {
        "benchmark": "paper configs on a CPU (all_positions vs prefix)",
        "pieces": [{"command": p["command"], "date_utc": p["date_utc"], "machine": p["machine"]} for p in parts],
        "versions": parts[0]["versions"],
        "notes": [ML1M_NOTE] + sorted({n for p in parts for n in p.get("notes", []) if n != ML1M_NOTE}),
        "protocol": parts[0]["protocol"],
        "runs": runs,
    }
    loads = [p["machine"]["loadavg_1_5_15"][0] for p in parts if p["machine"].get("loadavg_1_5_15")]
    result["machine_summary"] = (f"{parts[0]['machine']['cpus']} CPU cores, 1 torch thread per run, {len(parts)} "
                                 f"piece{'s' if len(parts) != 1 else ''} run two at a time; 1-min load average at piece starts {min(loads):.1f}–{max(loads):.1f}; "
                                 f"torch {parts[0]['versions']['torch']}, RecBole {parts[0]['versions']['recbole']}")
    result["summary"] = summarise(runs)
    result["table_md"] = table(result)
    save_json(result, out)
    plot(result, os.path.splitext(out)[0] + ".png")
    print(result["table_md"])
    if update_readme:
        from common import REPO
        from make_readme import update_readme as splice

        padding_path = os.path.join(os.path.dirname(out), "padding.json")
        padding = json.load(open(padding_path, encoding="utf-8")) if os.path.exists(padding_path) else None
        splice(os.path.join(REPO, "README.md"), readme_lines(result, padding), "<!-- paper_cpu:start -->",
               "<!-- paper_cpu:end -->")
    return result


def _recorded_args(argv):
    """The command line as a piece records it: without --progress (where this machine kept
    the curve while the run went on), which changes nothing in the result."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--progress":
            skip = True
        elif not arg.startswith("--progress="):
            kept.append(arg)
    return kept


def _setting(text):
    """``KEY=VALUE`` for --set; the value is read as YAML (0.002, 0.1, True, [64])."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, yaml.safe_load(value)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=list(MAX_LEN), default="ml-1m")
    parser.add_argument("--run", choices=list(RUNS), default="mamba4rec-ap")
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--stopping-step", type=int, default=10)
    parser.add_argument("--budget-min", type=float, default=90.0, help="wall-clock minutes of training + validation (0 = none)")
    parser.add_argument("--train-batch-size", type=int, default=0, help="0: the per-dataset default in BATCH")
    parser.add_argument("--eval-batch-size", type=int, default=2048, help="users per full-ranking batch")
    parser.add_argument("--eval-every-min", type=float, default=0.0,
                        help="validate every this many minutes of training (a RecBole 'epoch' is then a slice of a "
                             "pass over the data; 0 = once per pass)")
    parser.add_argument("--no-length-bucketing", dest="length_bucketing", action="store_false",
                        help="random batches (default: batches of rows of similar length)")
    parser.add_argument("--set", type=_setting, nargs="+", default=[], metavar="KEY=VALUE",
                        help="config overrides for a variant of --run (e.g. learning_rate=0.002); named in the label")
    parser.add_argument("--progress", default=None, help="write the validation curve here after every validation")
    parser.add_argument("--users", type=int, default=0, help="uniform user subset, for smoke runs only (0 = all)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--checkpoint", default=None,
                        help="resume from this checkpoint if it exists, and leave the best one there at the end")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="cuda: bench/gpu_run.sh's run")
    parser.add_argument("--ssm-backend", default="auto", help="auto | torch | cuda | triton")
    parser.add_argument("--out", default=None)
    parser.add_argument("--merge", nargs="+", metavar="JSON")
    parser.add_argument("--update-readme", action="store_true", help="with --merge: splice the table into README.md")
    args = parser.parse_args()
    args.set = dict(args.set)
    # paths given relative to where the command ran, before the chdir below
    args.progress = os.path.abspath(args.progress) if args.progress else None
    args.checkpoint = os.path.abspath(args.checkpoint) if args.checkpoint else None
    if args.merge:
        return merge(args.merge, args.out or os.path.join(RESULTS, "paper_cpu.json"), args.update_readme)

    import torch

    torch.set_num_threads(args.threads)
    out = os.path.abspath(args.out or os.path.join(OUT, "paper_cpu", f"{args.dataset}-{args.run}-{args.seed}.json"))
    os.makedirs(OUT, exist_ok=True)
    os.chdir(OUT)  # RecBole writes ./log
    data_path, subset = (prepare_ml1m if args.dataset == "ml-1m" else prepare_games)(args.users)
    piece = {
        "benchmark": "paper configs on a CPU, one piece",
        "command": "python bench/paper_cpu.py " + " ".join(repo_relative(a) for a in _recorded_args(sys.argv[1:])),
        **machine_record(args.threads),
        "protocol": "leave-one-out by time (LS valid_and_test, order TO), full ranking over all items, "
                    "user/item filters [5,inf), CE, Adam 1e-3, early stop 10 on valid NDCG@10, test at the best epoch",
        "notes": [ML1M_NOTE] if args.dataset == "ml-1m" else [],
        "subset": subset, "runs": [],
    }
    run = train_once(args, data_path)
    piece["machine"]["loadavg_1_5_15_end"] = list(os.getloadavg())
    piece["runs"].append(run)
    save_json(piece, out)
    t = run["test"]
    print(f"{args.dataset} {run['label']} seed {args.seed}: test hit {t['hit@10']:.4f} ndcg {t['ndcg@10']:.4f} "
          f"mrr {t['mrr@10']:.4f}; best epoch {run['best_epoch']} at {(run['wall_s_to_best_epoch'] or 0) / 60:.1f} min, "
          f"stopped by {run['stopped_by']}", flush=True)


if __name__ == "__main__":
    main()

"""Sequential accuracy: Hit/NDCG/MRR@10, full ranking, leave-one-out by time, mean ± std over seeds.

    python bench/accuracy.py                                  # the CPU budget below
    python bench/accuracy.py --datasets ml-100k --seeds 1 2 3 --epochs 20

Models: Mamba4Rec, BiMamba4Rec, GRU4Rec (this plugin) and RecBole's SASRec (and
BERT4Rec with ``--models ... BERT4Rec``), all with the same epoch budget, early
stopping on valid NDCG@10 and the same embedding size.  Datasets: ml-100k (RecBole's
wheel) and Amazon Video Games (SASRec's ``Video.txt`` from ../shared/data, converted
at run time with ``python -m recbole_mamba.data seqfile`` into bench/out/, then a
uniform user subset drawn with a fixed seed when ``--games-users`` is set).  Writes
bench/results/accuracy.json and accuracy.png (``--out`` names another pair).
"""
import argparse
import os
import random
import subprocess
import sys
import textwrap
import time

from common import (OUT, REPO, RESULTS, SHARED_DATA, machine_record, mean_std, pyplot, recbole_config, repo_relative,
                    save_json)

MODELS = ("Mamba4Rec", "BiMamba4Rec", "GRU4Rec", "SASRec")
METRICS = ("hit@10", "ndcg@10", "mrr@10")
ML100K_SUBSET = "ml-100k-subset"
GAMES_SOURCE = os.path.join(SHARED_DATA, "amazon_video_games", "sasrec_games_2014", "Video.txt")
ML1M_SOURCE = os.path.join(SHARED_DATA, "ml-1m", "seq", "ml-1m.txt")
ML1M_NOTE = "ML-1M: 6,039 of 6,040 users (one user of 39 interactions is missing at the seq file's source)"


def model_sizes(model_name, d, d_state):
    """Per-model keys that set one embedding size d for every model (the budget's knob)."""
    if model_name in ("Mamba4Rec", "BiMamba4Rec"):
        return {"hidden_size": d, "d_state": d_state}
    if model_name == "GRU4Rec":
        return {"embedding_size": d, "hidden_size": 2 * d}  # RecBole's default ratio 64:128
    if model_name in ("SASRec", "BERT4Rec"):
        return {"hidden_size": d, "inner_size": 4 * d}
    raise ValueError(f"no size keys for {model_name}")


def subset_users(inter_path, out_path, n_users, seed):
    """Copy an atomic .inter file keeping ``n_users`` users drawn uniformly (fixed seed)."""
    with open(inter_path, encoding="utf-8") as f:
        header, *lines = f.read().splitlines()
    users = sorted({line.split("\t", 1)[0] for line in lines})
    keep = set(random.Random(seed).sample(users, min(n_users, len(users))))
    kept = [line for line in lines if line.split("\t", 1)[0] in keep]
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with open(out_path, "w", encoding="utf-8") as f:
        f.write("\n".join([header] + kept) + "\n")
    return len(keep), len(kept)


def prepare_ml100k(n_users, seed=0):
    """data_path for ml-100k: RecBole's own copy (None), or a uniform user subset of it in bench/out/."""
    if not n_users:
        return None, None
    import recbole

    source = os.path.join(os.path.dirname(recbole.__file__), "dataset_example", "ml-100k", "ml-100k.inter")
    sub_dir = os.path.join(OUT, "data", f"ml100k-users{n_users}-seed{seed}")
    # RecBole reads dataset "ml-100k" from its wheel whatever data_path says, so the subset gets its own name
    users, rows = subset_users(source, os.path.join(sub_dir, ML100K_SUBSET, f"{ML100K_SUBSET}.inter"), n_users, seed)
    return sub_dir, {"users_drawn": users, "rows": rows, "subset_seed": seed}


def prepare_seqfile(source, dataset, folder, n_users, seed=0):
    """data_path holding <dataset>/<dataset>.inter converted from a SASRec-style sequence
    file with ``python -m recbole_mamba.data seqfile`` (once), then maybe a uniform user
    subset: (data_path, subset record or None)."""
    full_dir = os.path.join(OUT, "data", f"{folder}-full")
    full_inter = os.path.join(full_dir, dataset, f"{dataset}.inter")
    if not os.path.exists(full_inter):
        subprocess.run([sys.executable, "-m", "recbole_mamba.data", "seqfile", source,
                        "--dataset", dataset, "--out-dir", full_dir, "--quiet"], check=True, cwd=REPO)
    if not n_users:
        return full_dir, None
    sub_dir = os.path.join(OUT, "data", f"{folder}-users{n_users}-seed{seed}")
    users, rows = subset_users(full_inter, os.path.join(sub_dir, dataset, f"{dataset}.inter"), n_users, seed)
    return sub_dir, {"users_drawn": users, "rows": rows, "subset_seed": seed}


def prepare_games(n_users, seed=0):
    """Amazon Video Games from SASRec's Video.txt (maybe a user subset)."""
    return prepare_seqfile(GAMES_SOURCE, "amazon-video-games", "games", n_users, seed)


def prepare_ml1m(n_users, seed=0):
    """ML-1M from the time-ordered seq file (maybe a user subset)."""
    return prepare_seqfile(ML1M_SOURCE, "ml-1m", "ml1m-seq", n_users, seed)


_DATA_CACHE = {}


def prepared_data(config, dataset):
    """Dataset and its three loaders, built once per dataset: every model and seed shares them
    (same protocol keys; the training order still follows each run's seed)."""
    from recbole.data import create_dataset, data_preparation

    key = (dataset, config["transform"])  # a transform (BERT4Rec's masking) lives in the loaders
    if key not in _DATA_CACHE:
        data = create_dataset(config)
        # before data_preparation: its augmentation leaves one row per target (a user's first item is none)
        stats = {"users": data.user_num - 1, "items": data.item_num - 1, "interactions": data.inter_num}
        before = dict(config.final_config_dict)
        loaders = data_preparation(config, data)
        # keys the loaders' transform wrote into the config (e.g. MASK_ITEM_SEQ): later configs need them too
        written = {k: v for k, v in config.final_config_dict.items() if k not in before}
        _DATA_CACHE[key] = (stats, written, *loaders)
    stats, written, *loaders = _DATA_CACHE[key]
    for k, v in written.items():
        config[k] = v
    return (stats, *loaders)


def run_once(model_name, dataset, seed, config_dict):
    """Train with early stopping, test the best epoch; metrics and wall times."""
    import torch
    from recbole.utils import init_seed

    from recbole_mamba.registry import get_model, get_trainer

    config = recbole_config(model_name, dataset, {**config_dict, "seed": seed})
    init_seed(seed, config["reproducibility"])
    stats, train_data, valid_data, test_data = prepared_data(config, dataset)
    init_seed(seed, config["reproducibility"])
    model = get_model(model_name)(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], model_name)(config, model)
    trainer.saved_model_file = os.path.join(config["checkpoint_dir"], f"{model_name}-{dataset}-{seed}-{os.getpid()}.pth")
    epoch_seconds, valid_scores = _record_epochs(trainer)
    start = time.perf_counter()
    best_valid, _ = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    fit_s = time.perf_counter() - start
    test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    os.remove(trainer.saved_model_file)
    return {
        "model": model_name, "dataset": dataset, "seed": seed,
        "test": {k: float(test[k]) for k in METRICS},
        "best_valid_ndcg@10": float(best_valid),
        "epochs_run": len(epoch_seconds),
        "best_epoch": 1 + valid_scores.index(max(valid_scores)) if valid_scores else None,
        "fit_s": fit_s, "train_s_per_epoch": sum(epoch_seconds) / max(1, len(epoch_seconds)),
        "dataset_stats": stats,
        "params": sum(p.numel() for p in model.parameters()),
        "torch_threads": torch.get_num_threads(),
    }


def _record_epochs(trainer):
    """Wrap the trainer's epoch methods: training seconds per epoch, valid score per epoch."""
    epoch_seconds, valid_scores = [], []
    train_epoch, valid_epoch = trainer._train_epoch, trainer._valid_epoch

    def timed_train_epoch(*args, **kwargs):
        start = time.perf_counter()
        loss = train_epoch(*args, **kwargs)
        epoch_seconds.append(time.perf_counter() - start)
        return loss

    def recorded_valid_epoch(*args, **kwargs):
        score, result = valid_epoch(*args, **kwargs)
        valid_scores.append(float(score))
        return score, result

    trainer._train_epoch, trainer._valid_epoch = timed_train_epoch, recorded_valid_epoch
    return epoch_seconds, valid_scores


def base_config(args, dataset, data_path):
    """The protocol (props/dataset/*.yaml for the Amazon data) plus this run's budget."""
    config = {
        "use_gpu": False, "state": "WARNING", "show_progress": False,
        "checkpoint_dir": os.path.join(OUT, "saved"),
        "epochs": args.epochs, "stopping_step": args.stopping_step, "eval_step": 1,
        "loss_type": "CE", "train_neg_sample_args": None,
        "train_batch_size": args.train_batch_size, "eval_batch_size": 4096,
        "learning_rate": 0.001,
        "MAX_ITEM_LIST_LENGTH": args.max_len,
        "user_inter_num_interval": "[5,inf)", "item_inter_num_interval": "[5,inf)",
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
        "metrics": ["Hit", "NDCG", "MRR"], "topk": [10], "valid_metric": "NDCG@10",
    }
    if dataset.startswith("ml-100k"):
        config["load_col"] = {"inter": ["user_id", "item_id", "timestamp"]}
    if data_path:
        config["data_path"] = data_path
    return config


def summarise(runs):
    """Mean ± std per (dataset, model), and the seed's claim (BiMamba4Rec > Mamba4Rec) per dataset."""
    table = {}
    for run in runs:
        table.setdefault(run["dataset"], {}).setdefault(run["model"], []).append(run)
    summary = {}
    for dataset, by_model in table.items():
        rows = {}
        for model_name, model_runs in by_model.items():
            row = {"seeds": [r["seed"] for r in model_runs]}
            for metric in METRICS:
                row[metric] = dict(zip(("mean", "std"), mean_std([r["test"][metric] for r in model_runs])))
            row["epochs_run_mean"] = mean_std([r["epochs_run"] for r in model_runs])[0]
            row["train_s_per_epoch_mean"] = mean_std([r["train_s_per_epoch"] for r in model_runs])[0]
            row["params"] = model_runs[0]["params"]
            rows[model_name] = row
        claim = None
        bi, uni = by_model.get("BiMamba4Rec", []), by_model.get("Mamba4Rec", [])
        paired = sorted({r["seed"] for r in bi} & {r["seed"] for r in uni})
        if paired:
            diffs = {}
            for metric in METRICS:
                b = {r["seed"]: r["test"][metric] for r in bi}
                u = {r["seed"]: r["test"][metric] for r in uni}
                d = [b[s] - u[s] for s in paired]
                diffs[metric] = {"mean_diff": mean_std(d)[0], "std_diff": mean_std(d)[1],
                                 "bimamba_wins": sum(x > 0 for x in d), "seeds": len(d)}
            claim = {"claim": "BiMamba4Rec beats Mamba4Rec", "paired_seeds": paired, "by_metric": diffs,
                     "holds_on_all_metrics_in_mean": all(v["mean_diff"] > 0 for v in diffs.values())}
        summary[dataset] = {"models": rows, "seed_claim": claim}
    return summary


def merge(paths, out):
    """One result from several runs of the same budget (say one seed per process): runs
    joined, summary recomputed, every command kept."""
    import json

    parts = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            parts.append(json.load(f))
    budgets = [{k: v for k, v in p["budget"].items() if k not in ("seeds", "summary", "time_limit_s")} for p in parts]
    if any(b != budgets[0] for b in budgets[1:]):
        raise SystemExit("error: these files ran different budgets; merge only runs of one budget (seeds may differ)")
    result = dict(parts[0])
    result["runs"] = [run for p in parts for run in p["runs"]]
    result["skipped"] = [s for p in parts for s in p.get("skipped", [])]
    seeds = sorted({run["seed"] for run in result["runs"]})
    result["budget"] = {**parts[0]["budget"], "seeds": seeds,
                        "summary": parts[0]["budget"]["summary"].replace(str(parts[0]["budget"]["seeds"]), str(seeds))}
    result["command"] = (" & ".join(p["command"] for p in parts) + " (at once), then python bench/accuracy.py --merge "
                         + " ".join(repo_relative(os.path.abspath(p)) for p in paths) + f" --out {repo_relative(os.path.abspath(out))}")
    result["wall_s"] = max(p.get("wall_s", 0) for p in parts)
    cpus = parts[0]["machine"].get("cpus") or 1
    if len(parts) > cpus:
        result["notes"] = list(result.get("notes", [])) + [
            f"{len(parts)} processes shared {cpus} cores, so seconds per epoch are up to "
            f"{len(parts) / cpus:.1f}× a lone run's"]
    result["summary"] = summarise(result["runs"])
    save_json(result, out)
    plot(result, os.path.splitext(out)[0] + ".png")
    return result


def plot(result, path):
    plt = pyplot()

    datasets = list(result["summary"])
    fig, axes = plt.subplots(1, len(datasets), figsize=(max(7, 6 * len(datasets)), 4.4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        rows = result["summary"][dataset]["models"]
        models = list(rows)
        width = 0.8 / len(models)
        for i, model_name in enumerate(models):
            means = [rows[model_name][m]["mean"] for m in METRICS]
            stds = [rows[model_name][m]["std"] for m in METRICS]
            xs = [j + (i - (len(models) - 1) / 2) * width for j in range(len(METRICS))]
            ax.bar(xs, means, width, yerr=stds, capsize=3, label=f"{model_name} (n={len(rows[model_name]['seeds'])})")
        ax.set_xticks(range(len(METRICS)))
        ax.set_xticklabels([m.replace("@", "@") for m in METRICS])
        ax.set_title(f"{dataset}: test, full ranking (mean ± std over seeds)")
        ax.legend(fontsize=8)
    fig.suptitle(textwrap.fill(f"CPU budget: {result['budget']['summary']}", 110), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["ml-100k", "amazon-video-games"])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=3, help="epoch budget, the same for every model")
    parser.add_argument("--stopping-step", type=int, default=1, help="RecBole's stopping_step: the (N + 1)-th eval in a row without a valid NDCG@10 gain stops a run")
    parser.add_argument("--hidden", type=int, default=32, help="embedding/hidden size d for every model (GRU hidden 2d)")
    parser.add_argument("--d-state", type=int, default=8, help="Mamba state size N")
    parser.add_argument("--max-len", type=int, default=20, help="MAX_ITEM_LIST_LENGTH")
    parser.add_argument("--train-batch-size", type=int, default=256)
    parser.add_argument("--games-users", type=int, default=6000, help="uniform user subset of Video.txt (0 = all 31,013)")
    parser.add_argument("--ml100k-users", type=int, default=40, help="uniform user subset of ml-100k (0 = all 943)")
    parser.add_argument("--threads", type=int, default=1,
                        help="1: on shared cores a 2-thread OpenMP barrier stalls whenever a thread is descheduled")
    parser.add_argument("--time-limit", type=float, default=0, help="seconds; runs not started by then are skipped (0 = none)")
    parser.add_argument("--out", default=os.path.join(RESULTS, "accuracy.json"))
    parser.add_argument("--merge", nargs="+", metavar="JSON",
                        help="only merge these result files (same budget, e.g. one seed per core) into --out")
    args = parser.parse_args()
    if args.merge:
        return merge(args.merge, args.out)

    import torch

    torch.set_num_threads(args.threads)
    args.out = os.path.abspath(args.out)  # before the chdir below
    os.chdir(OUT if os.path.isdir(OUT) else (os.makedirs(OUT) or OUT))  # RecBole writes ./log
    data_paths, subsets = {}, {}
    preparers = {"ml-1m": (prepare_ml1m, 0), "amazon-video-games": (prepare_games, args.games_users),
                 "ml-100k": (prepare_ml100k, args.ml100k_users)}
    for dataset in args.datasets:
        prepare, n_users = preparers.get(dataset, preparers["ml-100k"])
        data_paths[dataset], subsets[dataset] = prepare(n_users)
    budget = {
        "epochs": args.epochs, "stopping_step": args.stopping_step, "hidden_size": args.hidden,
        "d_state": args.d_state, "MAX_ITEM_LIST_LENGTH": args.max_len, "train_batch_size": args.train_batch_size,
        "games_users": args.games_users or "all", "ml100k_users": args.ml100k_users or "all", "subsets": subsets, "seeds": args.seeds,
        "learning_rate": 0.001, "loss": "CE (full softmax)", "layers": "model defaults (Mamba4Rec 1, BiMamba4Rec 2, GRU4Rec 1, SASRec 2, BERT4Rec 2)",
        "time_limit_s": args.time_limit or None,
    }
    drawn = {"ml-100k": f"ml-100k {args.ml100k_users or 'all'}",
             "amazon-video-games": f"Video Games {args.games_users or 'all'}"}
    budget["summary"] = (f"d={args.hidden}, N={args.d_state}, L={args.max_len}, <= {args.epochs} epochs, "
                         f"early stop {args.stopping_step}, batch {args.train_batch_size}, seeds {args.seeds}, "
                         f"users drawn: " + ", ".join(drawn.get(d, f"{d} all") for d in args.datasets))
    command = "python bench/accuracy.py " + " ".join(repo_relative(a) for a in sys.argv[1:])
    result = {"benchmark": "sequential accuracy, CPU, reduced budget", "command": command, **machine_record(args.threads),
              "protocol": "leave-one-out by time (LS valid_and_test, order TO), full ranking over all items, "
                          "user/item filters [5,inf), test metrics at the best valid NDCG@10 epoch",
              "not_run": "paper scale (ML-1M, L=200, d=64, 300 epochs) needs a GPU; none was lent to this run",
              "budget": budget, "notes": [ML1M_NOTE] if "ml-1m" in args.datasets else [], "runs": [], "skipped": []}
    start = time.perf_counter()
    for seed in args.seeds:  # seed outermost: a cut-off run still has whole seeds for every model
        for dataset in args.datasets:
            for model_name in args.models:
                if args.time_limit and time.perf_counter() - start > args.time_limit:
                    result["skipped"].append({"model": model_name, "dataset": dataset, "seed": seed})
                    continue
                config = {**base_config(args, dataset, data_paths[dataset]), **model_sizes(model_name, args.hidden, args.d_state)}
                try:
                    name = ML100K_SUBSET if dataset == "ml-100k" and data_paths[dataset] else dataset
                    run = run_once(model_name, name, seed, config)
                    run["dataset"] = dataset
                except ValueError as error:  # RecBole: a subset too small for the [5,inf) filters
                    result["skipped"].append({"model": model_name, "dataset": dataset, "seed": seed,
                                              "reason": str(error)})
                    print(f"{dataset} {model_name} seed {seed}: {error}", file=sys.stderr, flush=True)
                    continue
                result["runs"].append(run)
                t = run["test"]
                print(f"{dataset:20s} {model_name:12s} seed {seed}  hit {t['hit@10']:.4f} ndcg {t['ndcg@10']:.4f} "
                      f"mrr {t['mrr@10']:.4f}  {run['epochs_run']} ep, {run['train_s_per_epoch']:.1f} s/ep", flush=True)
                result["summary"] = summarise(result["runs"])
                result["wall_s"] = time.perf_counter() - start
                save_json(result, args.out)  # after every run: an interrupted suite keeps what it has
    result["machine"]["loadavg_1_5_15_end"] = list(os.getloadavg())
    result["summary"] = summarise(result["runs"])
    result["wall_s"] = time.perf_counter() - start
    save_json(result, args.out)
    plot(result, os.path.splitext(args.out)[0] + ".png")


if __name__ == "__main__":
    main()

"""GRU4Rec on ml-100k: every loss x both training modes, same budget, mean over seeds.

Metrics: Recall@20 and MRR@20 (the GRU4Rec papers' metrics) plus Hit/NDCG/MRR@10,
full ranking, RecBole's leave-one-out split.  Each run trains for the same number of
epochs (an epoch covers every training target once in either mode) and is tested with
its final weights; epoch time is the mean wall time of a training epoch.

    python bench/gru4rec_losses.py                  # writes bench/results/gru4rec_losses.json
    python bench/gru4rec_losses.py --resume         # finish an interrupted run
    python bench/gru4rec_losses.py --seeds 2020 --epochs 1 --losses CE --modes prefix
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch

import recbole_mamba  # noqa: F401  (registers GRU4Rec)
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.utils import get_model, get_trainer, init_seed

LOSSES = ("CE", "BPR", "TOP1", "BPR-max", "TOP1-max")
MODES = ("prefix", "session")
METRICS = ("recall@20", "mrr@20", "hit@10", "ndcg@10", "mrr@10")
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "gru4rec_losses.json")

SETTINGS = {
    "MAX_ITEM_LIST_LENGTH": 10,
    "embedding_size": 32,
    "hidden_size": 32,
    "train_batch_size": 2048,
    "learning_rate": 0.001,
    "n_sample": 256,
    "sample_alpha": 0.75,
    "metrics": ["Recall", "MRR", "NDCG", "Hit"],
    "topk": [10, 20],
    "valid_metric": "MRR@20",
    "eval_step": 0,  # no validation: the budget goes to training, tested at the end
    "use_gpu": False,
    "show_progress": False,
    "state": "WARNING",
}


def run_one(loss_type, train_mode, seed, epochs):
    config_dict = {**SETTINGS, "loss_type": loss_type, "train_mode": train_mode, "seed": seed, "epochs": epochs}
    if loss_type != "BPR" or train_mode == "session":
        config_dict["train_neg_sample_args"] = None  # only RecBole's BPR reads dataloader negatives
    config = Config(model="GRU4Rec", dataset="ml-100k", config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    train_data, valid_data, test_data = data_preparation(config, create_dataset(config))
    init_seed(config["seed"], config["reproducibility"])
    model = get_model("GRU4Rec")(config, train_data._dataset)
    trainer = get_trainer(config["MODEL_TYPE"], "GRU4Rec")(config, model)
    start = time.perf_counter()
    trainer.fit(train_data, valid_data, saved=False, show_progress=False, verbose=False)
    epoch_time = (time.perf_counter() - start) / epochs
    result = trainer.evaluate(test_data, load_best_model=False)
    return {"epoch_time_s": round(epoch_time, 2), **{m: float(result[m]) for m in METRICS}}


def summarise(runs):
    keys = ("epoch_time_s",) + METRICS
    return {k: {"mean": round(statistics.mean(r[k] for r in runs), 4),
                "std": round(statistics.stdev(r[k] for r in runs), 4) if len(runs) > 1 else 0.0} for k in keys}


def markdown(results):
    head = "| loss | mode | Recall@20 | MRR@20 | Hit@10 | NDCG@10 | MRR@10 | epoch s |"
    lines = [head, "|" + "---|" * 8]
    for row in results:
        s = row["mean"]
        lines.append(f"| {row['loss_type']} | {row['train_mode']} | "
                     + " | ".join(f"{s[m]['mean']:.4f} ± {s[m]['std']:.4f}" for m in METRICS)
                     + f" | {s['epoch_time_s']['mean']:.1f} |")
    return "\n".join(lines)


def write(report, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[2020, 2021, 2022])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--losses", nargs="+", default=list(LOSSES), choices=LOSSES)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=OUT)
    parser.add_argument("--resume", action="store_true", help="keep the rows already in --out, run the rest")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # RecBole's Config would read our flags as its own
    torch.set_num_threads(args.threads)

    report = {
        "what": "GRU4Rec (recbole-mamba) on ml-100k, every loss x training mode; mean ± std over seeds",
        "budget": f"{args.epochs} epoch(s) per run, no early stopping, tested with the final weights; "
                  "a short budget chosen for 2 shared CPU cores, not converged results",
        "dataset": "ml-100k from RecBole's wheel, RecBole's sequential defaults (leave-one-out, full ranking)",
        "settings": SETTINGS,
        "seeds": args.seeds,
        "epochs": args.epochs,
        "hardware": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
                    f"{args.threads} CPU threads (shared machine: times are indicative)",
        "results": [],
    }
    if args.resume and os.path.isfile(args.out):
        with open(args.out, encoding="utf-8") as f:
            report = json.load(f)
    done = {(row["loss_type"], row["train_mode"]) for row in report["results"]}
    for loss_type in args.losses:
        for train_mode in args.modes:
            if (loss_type, train_mode) in done:
                continue
            runs = []
            for seed in args.seeds:
                runs.append({"seed": seed, **run_one(loss_type, train_mode, seed, args.epochs)})
                print(loss_type, train_mode, runs[-1], flush=True)
            report["results"].append(
                {"loss_type": loss_type, "train_mode": train_mode, "mean": summarise(runs), "runs": runs})
            write(report, args.out)  # after every row, so an interrupted run can --resume
    results = report["results"]
    print(markdown(results))
    plot(report, os.path.splitext(args.out)[0] + ".png")


def plot(report, path):
    from common import bar_plot

    rows = report["results"]
    bar_plot(path, [f"{r['loss_type']} / {r['train_mode']}" for r in rows],
             [r["mean"]["ndcg@10"]["mean"] for r in rows], [r["mean"]["ndcg@10"]["std"] for r in rows],
             "test NDCG@10 (mean ± std over seeds)", f"GRU4Rec losses on ml-100k, {report['epochs']} epoch(s)")


if __name__ == "__main__":
    main()

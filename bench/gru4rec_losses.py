"""GRU4Rec's losses on ml-100k, each trained the way that suits it; mean over seeds.

Every loss (CE as a logq-corrected sampled softmax, BPR, TOP1, BPR-max, TOP1-max) gets the
official GRU4Rec's training: session-parallel mini-batches, Adagrad with momentum, a
constrained embedding with an item bias, in-batch plus ``n_sample`` popularity-sampled
negatives (sizes of the official rsc15_xe_shared_100_best param file).  Per loss, the
learning rate and the final activation are chosen on the **validation** split (MRR@20, first
seed) from a small grid; the chosen setting then runs with every seed and is reported on the
test split.  RecBole's own recipe (CE over all items, prefix rows, Adam 1e-3, its YAML sizes)
is the reference row, trained for the same epochs.

Data: ml-100k from RecBole's wheel, RecBole's sequential defaults (leave-one-out, full
ranking).  Metrics: Recall@20 and MRR@20 (the GRU4Rec papers') plus Hit/NDCG/MRR@10.

    python bench/gru4rec_losses.py                  # writes bench/results/gru4rec_losses.json (+ .png)
    python bench/gru4rec_losses.py --resume         # finish an interrupted run
    python bench/gru4rec_losses.py --losses CE --seeds 2020 --epochs 1 --out bench/out/losses_check.json
"""
import argparse
import itertools
import json
import os
import sys
import time

from common import RESULTS, bar_plot, mean_std, save_json

LOSSES = ("CE", "BPR", "TOP1", "BPR-max", "TOP1-max")
METRICS = ("recall@20", "mrr@20", "hit@10", "ndcg@10", "mrr@10")
SELECT_BY = "mrr@20"
OUT = os.path.join(RESULTS, "gru4rec_losses.json")

COMMON = {
    "MAX_ITEM_LIST_LENGTH": 50,
    "metrics": ["Recall", "MRR", "NDCG", "Hit"],
    "topk": [10, 20],
    "valid_metric": "MRR@20",
    "eval_step": 0,  # no early stopping: every run trains the same epochs, then valid and test are scored
    "use_gpu": False,
    "show_progress": False,
    "state": "WARNING",
}
# the official GRU4Rec's training (its rsc15_xe_shared_100_best sizes), for every loss
OFFICIAL_RECIPE = {
    "hidden_size": 100, "num_layers": 1, "constrained_embedding": True, "item_bias": True, "gru_bias": True,
    "weight_init": "official", "train_mode": "session_parallel", "train_batch_size": 32,
    "learner": "adagrad_momentum", "momentum": 0.2, "dropout_prob": 0.0, "hidden_dropout_prob": 0.4,
    "n_sample": 2048, "sample_alpha": 0.5, "sample_cache_size": 10_000_000, "bpreg": 1.0,
    "train_neg_sample_args": None,
}
PER_LOSS = {"CE": {"sampled_softmax": True, "logq": 1.0}}
# chosen on the validation split, per loss (CE's softmax takes no final activation)
GRID = {"learning_rate": (0.05, 0.1), "final_activation": ("linear", "elu-1")}
# RecBole's own GRU4Rec recipe: its YAML (embedding 64, hidden 128, dropout 0.3, Adam 1e-3, batch 2048)
RECBOLE_REFERENCE = {"loss_type": "CE", "train_mode": "prefix", "train_neg_sample_args": None}


def grid(loss_type):
    keys = list(GRID)
    settings = [dict(zip(keys, values)) for values in itertools.product(*GRID.values())]
    if loss_type == "CE":
        settings = [s for s in settings if s["final_activation"] == "linear"]
    return settings


def run_key(recipe, loss_type, setting, seed):
    return f"{recipe}|{loss_type}|{json.dumps(setting, sort_keys=True)}|{seed}"


def train_and_score(config_dict, seed, epochs):
    """Train GRU4Rec for ``epochs``; its valid and test metrics with the final weights."""
    import recbole_mamba  # noqa: F401  (registers GRU4Rec and its trainer)
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_seed

    config = Config(model="GRU4Rec", dataset="ml-100k",
                    config_dict={**COMMON, **config_dict, "seed": seed, "epochs": epochs})
    init_seed(config["seed"], config["reproducibility"])
    train_data, valid_data, test_data = data_preparation(config, create_dataset(config))
    init_seed(config["seed"], config["reproducibility"])
    model = get_model("GRU4Rec")(config, train_data._dataset)
    trainer = get_trainer(config["MODEL_TYPE"], "GRU4Rec")(config, model)
    start = time.perf_counter()
    trainer.fit(train_data, None, saved=False, show_progress=False, verbose=False)
    train_s = time.perf_counter() - start
    valid = trainer.evaluate(valid_data, load_best_model=False)
    test = trainer.evaluate(test_data, load_best_model=False)
    return {"epoch_time_s": round(train_s / epochs, 2),
            "valid": {m: round(float(valid[m]), 4) for m in METRICS},
            "test": {m: round(float(test[m]), 4) for m in METRICS}}


def chosen_setting(runs, loss_type, first_seed):
    """The grid setting with the best validation ``SELECT_BY`` (first seed); None if the grid is unfinished."""
    scored = []
    for setting in grid(loss_type):
        run = runs.get(run_key("official", loss_type, setting, first_seed))
        if run is None:
            return None
        scored.append((run["valid"][SELECT_BY], setting))
    return max(scored, key=lambda pair: pair[0])[1]


def rounded_mean_std(values):
    mean, std = mean_std(list(values))
    return {"mean": round(mean, 4), "std": round(std, 4)}


def summarise(runs, seeds):
    """One row per loss at its chosen setting, and RecBole's reference: test mean ± std over seeds."""
    rows = []
    for recipe, loss_type in [("recbole", "CE")] + [("official", loss) for loss in LOSSES]:
        setting = {} if recipe == "recbole" else chosen_setting(runs, loss_type, seeds[0])
        if setting is None:
            continue
        done = [runs[k] for k in (run_key(recipe, loss_type, setting, s) for s in seeds) if k in runs]
        if not done:
            continue
        rows.append({"recipe": recipe, "loss_type": loss_type, "setting": setting, "seeds": len(done),
                     "epoch_time_s": rounded_mean_std(r["epoch_time_s"] for r in done),
                     "valid_" + SELECT_BY: rounded_mean_std(r["valid"][SELECT_BY] for r in done),
                     "test": {m: rounded_mean_std(r["test"][m] for r in done) for m in METRICS}})
    return rows


def markdown(rows):
    lines = ["| loss | training | chosen on valid | Recall@20 | MRR@20 | Hit@10 | NDCG@10 | epoch s | seeds |",
             "|" + "---|" * 9]
    for row in rows:
        training = ("RecBole's (prefix rows, Adam 1e-3, full softmax)" if row["recipe"] == "recbole"
                    else "official (session-parallel, Adagrad+momentum)")
        chosen = ", ".join(f"{k} {v}" for k, v in row["setting"].items()) or "–"
        t = row["test"]
        lines.append(f"| {row['loss_type']} | {training} | {chosen} | "
                     + " | ".join(f"{t[m]['mean']:.4f} ± {t[m]['std']:.4f}" for m in METRICS[:4])
                     + f" | {row['epoch_time_s']['mean']:.1f} | {row['seeds']} |")
    return "\n".join(lines)


def plot(rows, epochs, path):
    bar_plot(path, [f"{r['loss_type']} ({'RecBole recipe' if r['recipe'] == 'recbole' else 'official recipe'})"
                    for r in rows],
             [r["test"]["mrr@20"]["mean"] for r in rows], [r["test"]["mrr@20"]["std"] for r in rows],
             "test MRR@20 (mean ± std over seeds)", f"GRU4Rec losses on ml-100k, {epochs} epochs, setting chosen on valid")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[2020, 2021, 2022])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--losses", nargs="+", default=list(LOSSES), choices=LOSSES)
    parser.add_argument("--no-reference", action="store_true", help="skip RecBole's own recipe")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=OUT)
    parser.add_argument("--resume", action="store_true", help="keep the runs already in --out, run the rest")
    args = parser.parse_args()
    args.out = os.path.abspath(args.out)
    sys.argv = sys.argv[:1]  # RecBole's Config would read our flags as its own

    import torch

    torch.set_num_threads(args.threads)
    report = json.load(open(args.out)) if args.resume and os.path.isfile(args.out) else {}
    if report and report.get("epochs") != args.epochs:
        raise SystemExit(f"error: {args.out} holds {report.get('epochs')}-epoch runs; "
                         f"pass --epochs {report.get('epochs')} or drop --resume")
    runs = report.get("runs", {})
    report.update({
        "what": "GRU4Rec (recbole-mamba) on ml-100k: each loss with the official training, learning rate and "
                f"final activation chosen on the validation split ({SELECT_BY}, seed {args.seeds[0]}); test "
                "metrics mean ± std over seeds; RecBole's own recipe as the reference",
        "dataset": "ml-100k from RecBole's wheel, RecBole's sequential defaults (leave-one-out, full ranking)",
        "epochs": args.epochs, "seeds": args.seeds, "common": COMMON, "official_recipe": OFFICIAL_RECIPE,
        "per_loss": PER_LOSS, "grid": {k: list(v) for k, v in GRID.items()},
        "recbole_reference": RECBOLE_REFERENCE, "threads": args.threads,
    })

    def run(recipe, loss_type, setting, seed):
        key = run_key(recipe, loss_type, setting, seed)
        if key in runs:
            return
        if recipe == "recbole":
            config = dict(RECBOLE_REFERENCE)
        else:
            config = {**OFFICIAL_RECIPE, **PER_LOSS.get(loss_type, {}), **setting, "loss_type": loss_type}
        runs[key] = train_and_score(config, seed, args.epochs)
        print(f"{recipe:8s} {loss_type:8s} {setting} seed {seed}: valid {SELECT_BY} "
              f"{runs[key]['valid'][SELECT_BY]:.4f}  ({runs[key]['epoch_time_s']:.1f} s/epoch)", flush=True)
        report["runs"] = runs
        save_json(report, args.out)  # after every run, so an interrupted run can --resume

    first = args.seeds[0]
    for loss_type in args.losses:  # the grid, first seed, chosen on valid
        for setting in grid(loss_type):
            run("official", loss_type, setting, first)
    for loss_type in args.losses:  # the chosen setting, every seed
        for seed in args.seeds[1:]:
            run("official", loss_type, chosen_setting(runs, loss_type, first), seed)
    if not args.no_reference:
        for seed in args.seeds:
            run("recbole", "CE", {}, seed)
    report["runs"] = runs
    report["summary"] = summarise(runs, args.seeds)
    save_json(report, args.out)
    print(markdown(report["summary"]))
    plot(report["summary"], args.epochs, os.path.splitext(args.out)[0] + ".png")


if __name__ == "__main__":
    main()

"""CTR benchmark on two real datasets: MDAF (thesis gate, target attention, and its static branch
alone as the ablation), DCNv3 and RecBole's DCNV2, AutoInt, DeepFM, DIN and DIEN, ≥ 3 seeds,
early stopping on valid AUC.

    python bench/ctr.py                                      # both datasets, shared budget, 3 seeds
    python bench/ctr.py --datasets ml-100k --budgets defaults shared --resume
    python bench/ctr.py --summarise                          # table / PNG from the .partial.json only
    python bench/ctr.py --variants "MDAF (gate)" --resume --piece-minutes 100   # long runs, piece by piece
    python bench/ctr.py --variants "DIN (RecBole)" --out bench/results/ctr_din.json   # side by side, then:
    python bench/ctr.py --merge bench/results/ctr_din.partial.json

Datasets (converted into bench/out/ctr/, split by time 80/10/10, labelled evaluation):
* ``taobao``: every user of ``../shared/data/taobao_userbehavior/UserBehavior_head_prefix.csv``
  (the first 815 complete users of Tianchi's UserBehavior.csv), ``python -m
  recbole_mamba.data.ctr``: one row per first behaviour on an item, history ≤ ``--history``,
  one same-day negative per positive.
* ``ml-100k``: RecBole's ml-100k as sequence-aware CTR (``python -m recbole_mamba.data
  rating-ctr``): every rating a row, label rating ≥ 4, the user's earlier ratings in time
  order as the history, user and item features as in RecBole's context setup.

Budgets: ``defaults`` runs each model at its own YAML (epochs, learner, batch); ``shared``
gives every model the same epochs, batch and learning rate (``--epochs``, ``--batch``,
``--learning-rate``).  Both stop early as RecBole's ``stopping_step`` (``--stopping-step``) says:
the (stopping-step + 1)-th evaluation in a row without a valid AUC gain ends a run; the test
uses the best checkpoint.  DIN / DIEN are RecBole sequential models: they
build their history from earlier rows of the same file, which on the Taobao rows (a
negative shares its positive's time) would hand them the label, so they run on ml-100k only.

Writes bench/results/ctr.json (every run and the table), ctr.md (README table) and ctr.png.
"""
import argparse
import contextlib
import json
import os
import statistics
import sys
import time

from common import (HERE, OUT, SHARED_DATA, bar_plot, count_trainable, machine_record, newest_checkpoint,
                    partial_path, repo_relative, slugify)

TAOBAO_INPUT = os.path.join(SHARED_DATA, "taobao_userbehavior", "UserBehavior_head_prefix.csv")
DATASETS = {"taobao": "taobao-ctr", "ml-100k": "ml-100k-ctr"}  # name in the table -> RecBole dataset

# name in the table -> (RecBole model, extra config, datasets it runs on)
VARIANTS = {
    "MDAF (gate)": ("MDAF", {}, ("taobao", "ml-100k")),
    "MDAF (gate, target attention)": ("MDAF", {"sequence_pooling": "target_attention"}, ("taobao", "ml-100k")),
    # the ablation that says what the history adds: MDAF's own static branch and head, no sequence
    "MDAF (static branch only)": ("MDAF", {"fusion": "static"}, ("taobao", "ml-100k")),
    "DCNv3": ("DCNv3", {}, ("taobao", "ml-100k")),
    "DCNV2 (RecBole)": ("DCNV2", {}, ("taobao", "ml-100k")),
    "AutoInt (RecBole)": ("AutoInt", {}, ("taobao", "ml-100k")),
    "DeepFM (RecBole)": ("DeepFM", {}, ("taobao", "ml-100k")),
    "DIN (RecBole)": ("DIN", {}, ("ml-100k",)),
    "DIEN (RecBole)": ("DIEN", {}, ("ml-100k",)),
}
SEQUENTIAL_BASELINES = ("DIN", "DIEN")


def prepare_data(dataset, history, max_users):
    """Convert the raw data into bench/out/ctr/<name>/; returns (data_path, converter summary)."""
    from recbole_mamba.data.ctr import convert, convert_ratings

    data_path = os.path.join(OUT, "ctr")
    if dataset == "taobao":
        if not os.path.isfile(TAOBAO_INPUT):
            raise SystemExit(f"error: {repo_relative(TAOBAO_INPUT)} not found (the shared UserBehavior sample)")
        summary = convert(TAOBAO_INPUT, DATASETS[dataset], data_path, history=history, max_users=max_users,
                          progress=False)
    else:
        import recbole

        inter = os.path.join(os.path.dirname(recbole.__file__), "dataset_example", "ml-100k", "ml-100k.inter")
        summary = convert_ratings(inter, DATASETS[dataset], data_path, threshold=4, history=history, progress=False)
    return data_path, repo_relative(summary)


def run_config(model_name, dataset, data_path, history, budget, args):
    """(config files, config dict) for one model on one dataset under one budget."""
    from recbole_mamba.registry import PLUGIN_MODELS, props_file

    config = {"data_path": data_path, "use_gpu": False, "show_progress": False, "state": "WARNING",
              "stopping_step": args.stopping_step, "save_latest": True, "eval_batch_size": 4096, "valid_metric": "AUC",
              "seq_len": {"item_id_list": history}}
    if budget == "shared":
        config.update({"epochs": args.epochs, "train_batch_size": args.batch, "learning_rate": args.learning_rate})
        if model_name == "MDAF":
            config["warmup_epochs"] = min(2, max(1, args.epochs // 5))
    if model_name in SEQUENTIAL_BASELINES:
        # RecBole builds their history from the user's earlier rows (named item_id_list too),
        # so the converter's list is not loaded; the user / item features are
        config.update({"load_col": {"inter": ["user_id", "item_id", "label", "timestamp"],
                                    "user": ["user_id", "age", "gender", "occupation"],
                                    "item": ["item_id", "release_year", "class"]},
                       "alias_of_item_id": None, "MAX_ITEM_LIST_LENGTH": history, "seq_len": None})
    # the plugin's dataset YAML reaches only plugin models; RecBole's get it as a file
    files = None if model_name in PLUGIN_MODELS else [props_file("dataset", DATASETS[dataset])]
    return files, config


class PieceEnds(Exception):
    """Raised at the start of an epoch once this invocation's ``--piece-minutes`` are spent."""


def run_slug(dataset, budget, name, seed):
    """A run's name in ``unfinished`` and its checkpoint folder."""
    return f"{dataset}-{budget}-{slugify(name)}-seed{seed}"


def one_run(name, dataset, budget, seed, data_path, args, unfinished):
    """Train, early-stop and test one variant; returns its row (with the gate report for MDAF),
    or None when the piece's time ran out first.  ``unfinished`` (slug -> timings) holds the
    runs an earlier piece cut: such a run resumes from its newest checkpoint, with the same
    random streams, so it ends as an uninterrupted one would.  Runs save their latest state
    after every validation (``save_latest``), so no epoch is trained twice; a checkpoint
    folder from before that holds only best checkpoints, and then the epochs after the best
    one are trained again."""
    from recbole.quick_start import run_recbole

    from recbole_mamba.checkpoints import read_checkpoint
    from recbole_mamba.gate_analysis import analyse_checkpoint
    from recbole_mamba.safe_load import trust

    model_name, extra, _ = VARIANTS[name]
    files, config = run_config(model_name, dataset, data_path, args.history, budget, args)
    slug = run_slug(dataset, budget, name, seed)
    checkpoint_dir = os.path.join(OUT, "ctr_checkpoints", slug)
    config.update({**extra, "seed": seed, "checkpoint_dir": checkpoint_dir})
    earlier = unfinished.get(slug)  # kept until the run ends or a piece ends, so an error loses nothing
    saved = [f for f in os.listdir(checkpoint_dir) if f.endswith(".pth")] if os.path.isdir(checkpoint_dir) else []
    prior_epochs, prior_scores, prior_seconds = [], [], 0.0
    if earlier and saved:
        config["resume"] = newest_checkpoint(checkpoint_dir)
        # this benchmark wrote these files itself; RecBole's DIN / DIEN pickle layer objects
        # into them, which the restricted loader refuses from a file another process wrote
        config["trust_checkpoint"] = True
        trust(config["resume"])
        resumed_epoch = read_checkpoint(config["resume"])["epoch"]
        prior_epochs = earlier["epoch_seconds"][: resumed_epoch + 1]  # any later ones are trained again
        prior_scores = earlier["valid_scores"][: resumed_epoch + 1]  # (valid AUC, one per epoch)
        prior_seconds = earlier["seconds"] * len(prior_epochs) / max(1, len(earlier["epoch_seconds"]))
        print(f"{slug}: resuming after epoch {resumed_epoch} from {repo_relative(config['resume'])}", flush=True)
    else:
        if earlier:  # its checkpoints stayed on another machine (a new checkout has none)
            print(f"{slug}: no checkpoint in {repo_relative(checkpoint_dir)}; the run starts again from epoch 0",
                  flush=True)
            earlier = None
        for f in saved:  # a crashed earlier attempt: start afresh
            os.remove(os.path.join(checkpoint_dir, f))
    start = time.time()
    try:
        with timed_training_epochs(args.deadline) as (epoch_seconds, valid_scores):
            result = run_recbole(model=model_name, dataset=DATASETS[dataset], config_file_list=files,
                                 config_dict=config)
    except PieceEnds:
        unfinished[slug] = {"epoch_seconds": prior_epochs + epoch_seconds, "valid_scores": prior_scores + valid_scores,
                            "seconds": prior_seconds + time.time() - start,
                            "pieces": (earlier or {}).get("pieces", 0) + 1}
        return None
    unfinished.pop(slug, None)
    epoch_seconds = prior_epochs + epoch_seconds
    valid_scores = prior_scores + valid_scores  # valid AUC after every epoch, over all pieces
    seconds = prior_seconds + time.time() - start
    row = {"dataset": dataset, "budget": budget, "variant": name, "model": model_name, "seed": seed,
           "seconds": seconds, "test_auc": result["test_result"]["auc"],
           "test_logloss": result["test_result"]["logloss"],
           # RecBole's best valid result is not in its checkpoint: after a resume without a new best it is None
           "best_valid_auc": max(valid_scores), "valid_scores": valid_scores}
    row["pieces"] = (earlier or {}).get("pieces", 0) + 1
    if epoch_seconds:
        row["epochs_run"] = len(epoch_seconds)
        row["seconds_per_epoch"] = statistics.mean(epoch_seconds)  # training only, evaluation not counted
    if model_name == "MDAF":
        best = newest_checkpoint(config["checkpoint_dir"], best=True)
        if read_checkpoint(best)["config"]["fusion"] == "gate":  # the trained model's, whatever set it
            row["gate"], _ = analyse_checkpoint(best, os.path.join(args.gate_reports, slug), progress=False)
    return row


@contextlib.contextmanager
def timed_training_epochs(deadline=float("inf")):
    """(seconds of every training epoch, valid score of every validation) run inside the block
    (RecBole's ``Trainer._train_epoch`` / ``_valid_epoch``, which every trainer here inherits),
    as two lists; an epoch that would start after ``deadline`` (time.time()) raises PieceEnds."""
    from recbole.trainer import Trainer

    durations, scores = [], []
    original_train, original_valid = Trainer._train_epoch, Trainer._valid_epoch

    def timed(self, *args, **kwargs):
        if time.time() > deadline:
            raise PieceEnds
        start = time.time()
        result = original_train(self, *args, **kwargs)
        durations.append(time.time() - start)  # an epoch that raised is not counted
        return result

    def scored(self, *args, **kwargs):
        score, result = original_valid(self, *args, **kwargs)
        scores.append(float(score))
        return score, result

    Trainer._train_epoch, Trainer._valid_epoch = timed, scored
    try:
        yield durations, scores
    finally:
        Trainer._train_epoch, Trainer._valid_epoch = original_train, original_valid


def merge_states(states):
    """One .partial.json state from several: every finished run once (the first file that has
    it wins), the union of parameter counts and data summaries; a run still unfinished in one
    file and finished in another counts as finished."""
    merged = {"runs": [], "params": {}, "data": {}, "unfinished": {}}
    seen = set()
    for state in states:
        for row in state.get("runs", []):
            key = (row["dataset"], row["budget"], row["variant"], row["seed"])
            if key not in seen:
                seen.add(key)
                merged["runs"].append(row)
        for field in ("params", "data", "unfinished"):
            for key, value in state.get(field, {}).items():
                merged[field].setdefault(key, value)
    finished = {run_slug(*key) for key in seen}
    merged["unfinished"] = {k: v for k, v in merged["unfinished"].items() if k not in finished}
    return merged


def summarise(runs, params):
    """One table row per (dataset, budget, variant): mean ± std over seeds."""
    table = []
    keys = sorted({(r["dataset"], r["budget"], r["variant"]) for r in runs},
                  key=lambda k: (k[0], k[1], list(VARIANTS).index(k[2])))
    for dataset, budget, name in keys:
        rows = [r for r in runs if (r["dataset"], r["budget"], r["variant"]) == (dataset, budget, name)]
        aucs, losses = [r["test_auc"] for r in rows], [r["test_logloss"] for r in rows]
        gates = [r["gate"]["mean"] for r in rows if r.get("gate")]
        per_epoch = [r["seconds_per_epoch"] for r in rows if r.get("seconds_per_epoch")]
        table.append({
            "dataset": dataset, "budget": budget, "variant": name, "seeds": [r["seed"] for r in rows],
            "params": params.get(f"{dataset}/{budget}/{name}"),
            "auc_mean": statistics.mean(aucs), "auc_std": statistics.stdev(aucs) if len(aucs) > 1 else 0.0,
            "logloss_mean": statistics.mean(losses),
            "logloss_std": statistics.stdev(losses) if len(losses) > 1 else 0.0,
            "seconds_per_epoch": statistics.mean(per_epoch) if per_epoch else None,
            "gate_mean": statistics.mean(gates) if gates else None,
        })
    return table


def markdown(table):
    lines = ["| data | budget | model | params | test AUC | test LogLoss | s / epoch | mean gate | seeds |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in table:
        gate = f"{row['gate_mean']:.3f}" if row["gate_mean"] is not None else "–"
        per_epoch = f"{row['seconds_per_epoch']:.1f}" if row["seconds_per_epoch"] else "–"
        params = f"{row['params']:,}" if row["params"] else "–"
        spread = len(row["seeds"]) > 1  # one seed has no spread to show

        def value(mean, std):
            return f"{mean:.4f} ± {std:.4f}" if spread else f"{mean:.4f}"

        lines.append(f"| {row['dataset']} | {row['budget']} | {row['variant']} | {params} | "
                     f"{value(row['auc_mean'], row['auc_std'])} | {value(row['logloss_mean'], row['logloss_std'])} | "
                     f"{per_epoch} | {gate} | {len(row['seeds'])} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--budgets", nargs="+", default=["shared"], choices=["defaults", "shared"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[2020, 2021, 2022])
    parser.add_argument("--max-users", type=int, default=815, help="Taobao users (815: the whole shared sample)")
    parser.add_argument("--history", type=int, default=50, help="history length on both datasets")
    parser.add_argument("--epochs", type=int, default=10, help="shared budget: most epochs")
    parser.add_argument("--batch", type=int, default=1024, help="shared budget: train batch size")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="shared budget: learning rate")
    parser.add_argument("--stopping-step", type=int, default=3, help="RecBole's stopping_step for every model: the (N + 1)-th evaluation in a row without a valid AUC gain stops a run")
    parser.add_argument("--mdaf", nargs="*", default=[], metavar="KEY=VALUE",
                        help="MDAF config overrides in every budget (e.g. hidden_size=64), recorded in the JSON")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--resume", action="store_true",
                        help="skip runs already in the .partial.json and continue the one a piece cut")
    parser.add_argument("--piece-minutes", type=float, default=0,
                        help="start no epoch after this many minutes; a run cut there continues with --resume "
                             "from its newest checkpoint (bench/out/ctr_checkpoints/, kept on this machine)")
    parser.add_argument("--summarise", action="store_true", help="only write table and plot from the .partial.json")
    parser.add_argument("--merge", nargs="+", metavar="PARTIAL_JSON",
                        help="add the runs of other .partial.json files (pieces run side by side with their own "
                             "--out) to --out's .partial.json, then write table and plot")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "ctr.json"))
    args = parser.parse_args()
    args.out = os.path.abspath(args.out)  # paths are resolved before the chdir into bench/out below
    args.merge = [os.path.abspath(path) for path in args.merge or []]
    args.gate_reports = os.path.join(os.path.dirname(args.out), "ctr_gates")
    mdaf_overrides = {k: json.loads(v) if v[:1] in "[{0123456789-tf" else v
                      for k, v in (item.split("=", 1) for item in args.mdaf)}
    sys.argv = sys.argv[:1]  # RecBole parses --key=value from argv

    import torch

    import recbole_mamba  # noqa: F401  (registers the plugin models)

    torch.set_num_threads(args.threads)
    os.makedirs(OUT, exist_ok=True)
    os.chdir(OUT)  # RecBole's log/ and saved/ land in the gitignored output folder
    keep = args.resume or args.summarise or args.merge  # a merge adds to --out's runs, never replaces them
    state = json.load(open(partial_path(args.out))) if keep and os.path.isfile(partial_path(args.out)) else {
        "runs": [], "params": {}, "data": {}}
    state.setdefault("unfinished", {})
    if args.merge:  # kept in --out's .partial.json, so later pieces and merges build on it
        state = merge_states([state] + [json.load(open(path)) for path in args.merge])
        with open(partial_path(args.out), "w") as f:
            json.dump(state, f, indent=1)
        args.summarise = True
    args.deadline = time.time() + 60 * args.piece_minutes if args.piece_minutes else float("inf")
    done = {(r["dataset"], r["budget"], r["variant"], r["seed"]) for r in state["runs"]}
    for dataset in ([] if args.summarise else args.datasets):
        data_path, summary = prepare_data(dataset, args.history, args.max_users)
        state["data"][dataset] = summary
        print(summary, flush=True)
        for budget in args.budgets:
            for seed in args.seeds:  # seed-major: a cut-short run still covers every variant
                for name in args.variants:
                    model_name, extra, runs_on = VARIANTS[name]
                    if dataset not in runs_on or (dataset, budget, name, seed) in done:
                        continue
                    if model_name == "MDAF":
                        VARIANTS[name] = (model_name, {**extra, **mdaf_overrides}, runs_on)
                    if time.time() > args.deadline:
                        continue
                    try:
                        row = one_run(name, dataset, budget, seed, data_path, args, state["unfinished"])
                    except Exception as error:  # a baseline that does not run on this data is reported, not fatal
                        message = repo_relative(f"{type(error).__name__}: {error}")[:500]
                        if run_slug(dataset, budget, name, seed) in state["unfinished"]:
                            # a resumed run keeps its state for the next --resume instead of an error row
                            print(f"{dataset:8s} {budget:8s} {name:32s} seed {seed}: {message}", flush=True)
                            continue
                        row = {"dataset": dataset, "budget": budget, "variant": name, "seed": seed, "error": message}
                    finally:
                        VARIANTS[name] = (model_name, extra, runs_on)
                    if row is None:  # the piece's time ran out: the run resumes with the next --resume
                        with open(partial_path(args.out), "w") as f:
                            json.dump(state, f, indent=1)
                        print(f"{dataset:8s} {budget:8s} {name:32s} seed {seed}: piece ended, "
                              "run again with --resume to continue", flush=True)
                        continue
                    if "error" not in row:
                        key = f"{dataset}/{budget}/{name}"
                        if key not in state["params"]:
                            files, config = run_config(model_name, dataset, data_path, args.history, budget, args)
                            state["params"][key] = count_trainable(
                                model_name, DATASETS[dataset], files,
                                {**config, **extra, **(mdaf_overrides if model_name == "MDAF" else {})})
                    state["runs"].append(row)
                    with open(partial_path(args.out), "w") as f:
                        json.dump(state, f, indent=1)
                    print(f"{dataset:8s} {budget:8s} {name:32s} seed {seed}: " + (
                        row["error"] if "error" in row else
                        f"AUC {row['test_auc']:.4f} LogLoss {row['test_logloss']:.4f} ({row['seconds']:.0f} s)"),
                        flush=True)
    finished = [r for r in state["runs"] if "error" not in r]
    table = summarise(finished, state["params"])
    result = {
        "benchmark": "CTR on real data: Taobao UserBehavior (shared sample) and ml-100k as sequence-aware CTR; "
                     "time-ordered 80/10/10 split, labelled evaluation, early stopping on valid AUC",
        "command": repo_relative("python bench/ctr.py " + " ".join(getattr(sys, "orig_argv", [])[2:])),
        "data": state["data"],
        "budgets": {"shared": {"epochs": args.epochs, "train_batch_size": args.batch, "learning_rate": args.learning_rate},
                    "defaults": "each model's own YAML (epochs, learner, learning_rate, train_batch_size)",
                    "stopping_step": args.stopping_step, "history": args.history, "taobao_max_users": args.max_users,
                    "mdaf_overrides": mdaf_overrides},
        "machine": machine_record(args.threads),
        "errors": [r for r in state["runs"] if "error" in r],
        "unfinished": sorted(state["unfinished"]),  # cut by --piece-minutes, continued by the next --resume
        "table": table, "runs": finished,
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
        f.write(markdown(table))
    if table:
        bar_plot(os.path.splitext(args.out)[0] + ".png",
                 [f"{r['dataset']} / {r['budget']}: {r['variant']}" + (" (1 seed)" if len(r["seeds"]) == 1 else "")
                  for r in table],
                 [r["auc_mean"] for r in table], [r["auc_std"] for r in table],
                 "test AUC (mean ± std over seeds)", "CTR: Taobao (815 users) and ml-100k (rating ≥ 4)",
                 reference=0.5, xmin=0.45)
    print(markdown(table))


if __name__ == "__main__":
    main()

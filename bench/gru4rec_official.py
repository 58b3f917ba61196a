"""GRU4Rec side by side with the official implementation on yoochoose-100k (train_full -> test).

Three rows per configuration, the same split and the same hyper-parameters:

* ``official``: hidasib/GRU4Rec_PyTorch_Official, run from its own folder (its licence is
  research-only: this script runs it, nothing of it is copied here), with its param file and
  ``-e conservative`` (a tie counts against the target);
* ``ours``: recbole-mamba's GRU4Rec with the official options (constrained embedding, item and
  GRU biases, official init, session-parallel training, Adagrad with momentum, in-batch +
  n_sample extra negatives from a sample cache, logq-corrected sampled softmax or BPR-max with
  ELU), through RecBole's data pipeline and evaluators (the session converter's protocol files);
* ``recbole``: RecBole's built-in GRU4Rec on the same files: the same layer size, embedding
  dropout, batch size and epochs, trained its own way (prefix rows, Adam 1e-3, CE for the XE
  configuration and RecBole's BPR for the BPR-max one; history cut to the last
  ``--recbole-max-len`` items, as RecBole runs every row at full padded length).

Metrics: Recall@20 and MRR@20 over the next item at every position of every test session,
test items limited to training items.  ``train_s`` is the wall time of training (the official
code's "Total training time"; ours and RecBole's: the trainer's ``fit``), on ``--threads``
torch threads.

    python bench/gru4rec_official.py --official PATH/TO/GRU4Rec_PyTorch_Official
    python bench/gru4rec_official.py --official PATH --configs rsc15_xe_shared_100_best --systems ours
    python bench/gru4rec_official.py --official PATH --max-train-sessions 800 --max-test-sessions 200 --epochs 1

Without the official code (no ``--official``, or a folder without ``run.py``) the official rows
are skipped with a message.  Slices (``--max-*-sessions``, ``--epochs``) are for checking the
script; they write to bench/out/ unless ``--out`` says otherwise.
"""
import argparse
import os
import re
import subprocess
import sys
import time

from common import OUT, RESULTS, SHARED_DATA, machine_record, repo_relative, save_json

DATA = os.path.join(SHARED_DATA, "session", "yoochoose-100k")
TRAIN_FILE, TEST_FILE = "yoochoose-clicks-100k_train_full.txt", "yoochoose-clicks-100k_test.txt"
SYSTEMS = ("official", "ours", "recbole")

# the official param files' values (paramfiles/<name>.py), checked against the files when present
CONFIGS = {
    "rsc15_xe_shared_100_best": {
        "loss": "cross-entropy", "constrained_embedding": True, "embedding": 0, "elu_param": 0, "layers": [100],
        "n_epochs": 10, "batch_size": 32, "dropout_p_embed": 0.0, "dropout_p_hidden": 0.4, "learning_rate": 0.2,
        "momentum": 0.2, "n_sample": 2048, "sample_alpha": 0.5, "bpreg": 0.0, "logq": 1.0,
    },
    "diginetica_bprmax_shared_best": {
        "loss": "bpr-max", "constrained_embedding": True, "embedding": 0, "elu_param": 1, "layers": [512],
        "n_epochs": 10, "batch_size": 128, "dropout_p_embed": 0.5, "dropout_p_hidden": 0.3, "learning_rate": 0.05,
        "momentum": 0.15, "n_sample": 2048, "sample_alpha": 0.3, "bpreg": 0.9, "logq": 0.0,
    },
}
OFFICIAL_SAMPLE_STORE = 10_000_000  # run.py's default sample store


def ours_config(params, epochs):
    """The official parameters as our GRU4Rec's config keys."""
    if params["embedding"] or not params["constrained_embedding"] or len(params["layers"]) != 1:
        raise ValueError("only the constrained-embedding, one-layer official configurations are mapped")
    elu = params["elu_param"]
    return {
        "loss_type": "CE" if params["loss"] == "cross-entropy" else "BPR-max",
        "sampled_softmax": params["loss"] == "cross-entropy",
        "logq": params["logq"] if params["loss"] == "cross-entropy" else 0.0,
        "final_activation": f"elu-{elu}" if elu else "linear",
        "constrained_embedding": True, "item_bias": True, "gru_bias": True, "weight_init": "official",
        "hidden_size": params["layers"][0], "num_layers": 1,
        "dropout_prob": params["dropout_p_embed"], "hidden_dropout_prob": params["dropout_p_hidden"],
        "train_mode": "session_parallel", "train_batch_size": params["batch_size"], "epochs": epochs,
        "learner": "adagrad_momentum", "learning_rate": params["learning_rate"], "momentum": params["momentum"],
        "n_sample": params["n_sample"], "sample_alpha": params["sample_alpha"], "bpreg": params["bpreg"],
        "sample_cache_size": OFFICIAL_SAMPLE_STORE, "train_neg_sample_args": None,
    }


def recbole_config_dict(params, epochs, max_len):
    """RecBole's own GRU4Rec with the official sizes, trained RecBole's way."""
    h = params["layers"][0]
    config = {"embedding_size": h, "hidden_size": h, "num_layers": 1, "dropout_prob": params["dropout_p_embed"],
              "train_batch_size": params["batch_size"], "epochs": epochs, "learner": "adam", "learning_rate": 0.001,
              "MAX_ITEM_LIST_LENGTH": max_len}
    if params["loss"] == "cross-entropy":
        return {**config, "loss_type": "CE", "train_neg_sample_args": None}
    return {**config, "loss_type": "BPR",
            "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1, "alpha": 1.0, "dynamic": False,
                                      "candidate_num": 0}}


# ---------------------------------------------------------------- data

def sliced_files(folder, max_train, max_test, out_dir):
    """The split as given, or its first sessions (by start time) when slicing for a check."""
    train, test = os.path.join(folder, TRAIN_FILE), os.path.join(folder, TEST_FILE)
    if not max_train and not max_test:
        return train, test
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for path, limit in ((train, max_train), (test, max_test)):
        lines = open(path, encoding="utf-8").read().splitlines()
        header, rows = lines[0], [line.split("\t") for line in lines[1:]]
        starts = {}
        for session, _, time_ in rows:
            starts[session] = min(starts.get(session, float("inf")), float(time_))
        keep = set(sorted(starts, key=starts.get)[:limit]) if limit else set(starts)
        sliced = os.path.join(out_dir, os.path.basename(path))
        with open(sliced, "w", encoding="utf-8") as f:
            f.write(header + "\n" + "".join("\t".join(r) + "\n" for r in rows if r[0] in keep))
        paths.append(sliced)
    return tuple(paths)


def converted(train, test, out_dir, max_len=None):
    """RecBole benchmark files + protocol YAML of the split (python -m recbole_mamba.data session)."""
    from recbole_mamba.data.session import convert

    name = "yoochoose-100k" if max_len is None else f"yoochoose-100k-l{max_len}"
    summary = convert(train, test, name, out_dir, max_len=max_len, progress=False)
    return name, os.path.join(out_dir, name, f"{name}.yaml"), summary


# ---------------------------------------------------------------- runs

def official_paramfile_check(official, name):
    """Differences between our copy of the values and the official param file (run as a module)."""
    import importlib.util

    path = os.path.join(official, "paramfiles", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"official_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    theirs = dict(module.gru4rec_params)
    return {k: (CONFIGS[name].get(k), theirs.get(k)) for k in set(theirs) | set(CONFIGS[name])
            if CONFIGS[name].get(k) != theirs.get(k)}


def run_official(official, name, train, test, threads, epochs, timeout):
    """The official run.py on the split; its training time and metrics from its output."""
    params = CONFIGS[name]
    if epochs != params["n_epochs"]:
        extra = ["-ps", ",".join(f"{k}={'/'.join(map(str, v)) if isinstance(v, list) else v}"
                                 for k, v in {**params, "n_epochs": epochs}.items())]
    else:
        extra = ["-pf", os.path.join(official, "paramfiles", f"{name}.py")]
    command = [sys.executable, os.path.join(official, "run.py"), train, *extra, "-t", test, "-m", "20",
               "-e", "conservative", "-d", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, cwd=OUT)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"the official run failed ({done.returncode}): {done.stderr[-2000:]}")
    train_s = float(re.search(r"Total training time: ([0-9.]+)s", done.stdout).group(1))
    metrics = re.search(r"Recall@20: ([0-9.]+) MRR@20: ([0-9.]+)", done.stdout)
    shown = [repo_relative(c.replace(official, "<official>")) for c in command[1:]]
    return {"recall@20": float(metrics.group(1)), "mrr@20": float(metrics.group(2)), "train_s": round(train_s, 1),
            "wall_s": round(wall, 1), "command": "python " + " ".join(shown)}


def run_recbole_model(model_class, trainer_class, dataset, yaml_path, data_dir, config_dict, seed):
    """Train ``model_class`` on the converted split and test it with RecBole's evaluators."""
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    saved_argv, sys.argv = sys.argv, sys.argv[:1]  # RecBole's Config parses --key=value from argv
    try:
        config = Config(model=model_class, dataset=dataset, config_file_list=[yaml_path],
                        config_dict={"data_path": data_dir, "use_gpu": False, "seed": seed, "reproducibility": True,
                                     "show_progress": False, "state": "WARNING", "eval_step": 0,
                                     "checkpoint_dir": os.path.join(OUT, "saved"), **config_dict})
    finally:
        sys.argv = saved_argv
    init_seed(config["seed"], config["reproducibility"])
    train_data, _, test_data = data_preparation(config, create_dataset(config))
    init_seed(config["seed"], config["reproducibility"])
    model = model_class(config, train_data._dataset)
    trainer = trainer_class(config, model)
    start = time.perf_counter()
    trainer.fit(train_data, None, saved=False, show_progress=False)
    train_s = time.perf_counter() - start
    with torch.no_grad():
        result = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    return {"recall@20": round(float(result["recall@20"]), 4), "mrr@20": round(float(result["mrr@20"]), 4),
            "train_s": round(train_s, 1), "test_rows": len(test_data._dataset)}


def run_ours(name, files, epochs, seed):
    import recbole_mamba  # noqa: F401  (registers the plugin's GRU4Rec)
    from recbole_mamba.model.all_positions import SequentialTrainer
    from recbole_mamba.model.gru4rec import GRU4Rec

    dataset, yaml_path, data_dir = files
    return run_recbole_model(GRU4Rec, SequentialTrainer, dataset, yaml_path, data_dir,
                             ours_config(CONFIGS[name], epochs), seed)


def run_recbole(name, files, epochs, seed, max_len):
    from recbole.model.sequential_recommender.gru4rec import GRU4Rec as RecBoleGRU4Rec
    from recbole.trainer import Trainer

    dataset, yaml_path, data_dir = files
    return run_recbole_model(RecBoleGRU4Rec, Trainer, dataset, yaml_path, data_dir,
                             recbole_config_dict(CONFIGS[name], epochs, max_len), seed)


# ---------------------------------------------------------------- report

def gaps(row):
    """Ours relative to the official: metric ratios - 1 and the time ratio."""
    official, ours = row.get("official"), row.get("ours")
    if not official or not ours:
        return None
    return {"recall@20": round(ours["recall@20"] / official["recall@20"] - 1, 4),
            "mrr@20": round(ours["mrr@20"] / official["mrr@20"] - 1, 4),
            "train_time_ratio": round(ours["train_s"] / official["train_s"], 3)}


def markdown(summary):
    lines = ["| configuration | implementation | Recall@20 | MRR@20 | training s |", "|---|---|---|---|---|"]
    for name, row in summary.items():
        for system in SYSTEMS:
            r = row.get(system)
            if r:
                lines.append(f"| {name} | {system} | {r['recall@20']:.4f} | {r['mrr@20']:.4f} | {r['train_s']:.0f} |")
            else:
                lines.append(f"| {name} | {system} | – | – | not run |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--official", help="folder of hidasib/GRU4Rec_PyTorch_Official (with run.py)")
    parser.add_argument("--data", default=DATA, help="folder with the yoochoose-100k train_full/test files")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--epochs", type=int, help="override the param files' epochs (checks only)")
    parser.add_argument("--max-train-sessions", type=int, help="first N training sessions (checks only)")
    parser.add_argument("--max-test-sessions", type=int, help="first N test sessions (checks only)")
    parser.add_argument("--recbole-max-len", type=int, default=20)
    parser.add_argument("--timeout", type=int, default=3600, help="seconds allowed to one official run")
    parser.add_argument("--out", help="JSON to write (default bench/results/gru4rec_official.json; "
                                      "bench/out/gru4rec_official_check.json for slices)")
    parser.add_argument("--resume", action="store_true", help="keep the rows already in --out")
    args = parser.parse_args()

    import json

    import torch

    torch.set_num_threads(args.threads)
    sliced = bool(args.max_train_sessions or args.max_test_sessions or args.epochs)
    out = args.out or (os.path.join(OUT, "gru4rec_official_check.json") if sliced
                       else os.path.join(RESULTS, "gru4rec_official.json"))
    if not os.path.exists(os.path.join(args.data, TRAIN_FILE)):
        print(f"skipped: no {TRAIN_FILE} in {args.data} (see ../shared/data/SOURCES.md)")
        return
    systems = list(args.systems)
    official = os.path.abspath(args.official) if args.official else None
    if "official" in systems and not (official and os.path.exists(os.path.join(official, "run.py"))):
        print(f"skipping the official rows: no official GRU4Rec code at {args.official or '(no --official given)'}; "
              "fetch hidasib/GRU4Rec_PyTorch_Official and pass its folder with --official")
        systems.remove("official")
        official = None
    if not systems:
        return
    os.makedirs(OUT, exist_ok=True)
    work = os.path.join(OUT, "gru4rec_official")
    train, test = sliced_files(args.data, args.max_train_sessions, args.max_test_sessions, os.path.join(work, "slice"))
    full_name, full_yaml, summary_full = converted(train, test, work)
    cut_name, cut_yaml, _ = converted(train, test, work, max_len=args.recbole_max_len)

    previous = json.load(open(out)) if args.resume and os.path.exists(out) else {}
    summary = previous.get("summary", {})
    checks = {}
    for name in args.configs:
        row = summary.setdefault(name, {})
        epochs = args.epochs or CONFIGS[name]["n_epochs"]
        if official:
            checks[name] = official_paramfile_check(official, name)
            if checks[name]:
                print(f"warning: {name}: our values differ from the official param file: {checks[name]}")
        for system in systems:
            print(f"{name}: {system} ...", flush=True)
            if system == "official":
                row[system] = run_official(official, name, train, test, args.threads, epochs, args.timeout)
            elif system == "ours":
                row[system] = run_ours(name, (full_name, full_yaml, work), epochs, args.seed)
            else:
                row[system] = run_recbole(name, (cut_name, cut_yaml, work), epochs, args.seed, args.recbole_max_len)
            print(f"{name}: {system}: {row[system]}", flush=True)
            row["ours_vs_official"] = gaps(row)
            result = {
                "benchmark": "GRU4Rec vs the official implementation, yoochoose-100k train_full -> test",
                "command": "python bench/gru4rec_official.py "
                           + " ".join(repo_relative(a.replace(official, "<official>") if official else a)
                                      for a in sys.argv[1:]),
                **machine_record(args.threads),
                "protocol": "next item at every position of every test session, test items limited to training "
                            "items; Recall@20 / MRR@20; official: conservative ties; ours and RecBole: RecBole's "
                            "full-ranking top-k",
                "test_positions": summary_full.predictions["test"],
                "sliced": sliced, "epochs_override": args.epochs,
                "official_params": {k: CONFIGS[k] for k in args.configs},
                "ours_config": {k: ours_config(CONFIGS[k], args.epochs or CONFIGS[k]["n_epochs"]) for k in args.configs},
                "recbole_config": {k: recbole_config_dict(CONFIGS[k], args.epochs or CONFIGS[k]["n_epochs"],
                                                          args.recbole_max_len) for k in args.configs},
                "paramfile_differences": checks,
                "summary": summary,
            }
            save_json(result, out)
    print(markdown(summary))


if __name__ == "__main__":
    main()

"""Paper scale: the seed paper's configs on ML-1M and Amazon Video Games (GPU).

    python bench/paper_scale.py                                   # on a CUDA machine: the paper budget
    python bench/paper_scale.py --epochs 20 --backend cuda        # a shorter lease
    python bench/paper_scale.py --datasets ml-1m --users 50 --epochs 1 --override MAX_ITEM_LIST_LENGTH=20 \
        train_batch_size=256 --out bench/out/paper_smoke.json                                   # CPU smoke

Config (SPEC §4.1/§4.2, ``props/model`` and ``props/dataset``): d=64, N=32, d_conv 4,
expand 2, dropout 0.2, Mamba4Rec 1 layer / BiMamba4Rec 2 layers, CE over all items,
Adam lr 1e-3, batch 2048, MAX_ITEM_LIST_LENGTH 200 (ML-1M) / 50 (Video Games), user and
item filters [5,inf), leave-one-out by time, full ranking, up to 300 epochs with early
stop 10 on valid NDCG@10.  ML-1M is ``../shared/data/ml-1m/seq/ml-1m.txt`` (time-ordered
SASRec-style 5-core copy; 6,039 of the 6,040 users: one user of 39 interactions is
missing at its source) and Video Games is SASRec's ``Video.txt``, both converted with
``python -m recbole_mamba.data seqfile`` into bench/out/.  Writes JSON (per run: test
metrics, epochs, seconds per epoch, peak GPU memory, the paper's numbers beside them).
"""
import argparse
import os
import sys
import time

from accuracy import METRICS, ML1M_NOTE, prepare_games, prepare_ml1m, run_once
from common import OUT, RESULTS, SEED_PAPER, machine_record, repo_relative, save_json

# SPEC §6: the Mamba4Rec paper on ML-1M (the seed paper's table is common.SEED_PAPER)
MAMBA4REC_PAPER_ML1M = {"hit@10": 0.3121, "ndcg@10": 0.1822, "mrr@10": 0.1425, "gpu_gb": 4.82, "s_per_epoch": 75.52}
SEED_PAPER_GPU_GB = {"Mamba4Rec": 6.02, "BiMamba4Rec": 6.86}


def parse_overrides(pairs):
    """['MAX_ITEM_LIST_LENGTH=20', 'hidden_size=16'] -> {key: int/float/str value}."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"error: --override {pair!r} is not KEY=VALUE")
        for cast in (int, float):
            try:
                value = cast(value)
                break
            except ValueError:
                continue
        overrides[key] = value
    return overrides


def run_config(args, data_path, use_gpu):
    """The protocol and paper sizes come from props/; this adds the budget and the machine."""
    return {
        "data_path": data_path, "use_gpu": use_gpu, "ssm_backend": args.backend,
        "state": "WARNING", "show_progress": False, "checkpoint_dir": os.path.join(OUT, "saved"),
        "epochs": args.epochs, "stopping_step": args.stopping_step, "eval_step": 1,
        "learning_rate": 0.001, "loss_type": "CE", "train_neg_sample_args": None,
        **parse_overrides(args.override),
    }


def compare(run):
    """Our test metrics minus the seed paper's, per metric."""
    paper = SEED_PAPER.get((run["dataset"], run["model"]))
    if not paper:
        return None
    return {m: {"ours": run["test"][m], "paper": paper[m], "diff": run["test"][m] - paper[m]} for m in METRICS}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["ml-1m", "amazon-video-games"],
                        choices=["ml-1m", "amazon-video-games"])
    parser.add_argument("--models", nargs="+", default=["Mamba4Rec", "BiMamba4Rec"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[2020])
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--stopping-step", type=int, default=10)
    parser.add_argument("--backend", default="auto", choices=["auto", "torch", "cuda"], help="ssm_backend")
    parser.add_argument("--users", type=int, default=0, help="uniform user subset for smoke runs (0 = all)")
    parser.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE",
                        help="smoke runs only: replace paper config keys (e.g. MAX_ITEM_LIST_LENGTH=20); "
                             "recorded in the JSON")
    parser.add_argument("--out", default=os.path.join(RESULTS, "paper_scale.json"))
    args = parser.parse_args()

    import torch

    use_gpu = torch.cuda.is_available()
    args.out = os.path.abspath(args.out)
    os.makedirs(OUT, exist_ok=True)
    os.chdir(OUT)  # RecBole writes ./log
    prepare = {"ml-1m": prepare_ml1m, "amazon-video-games": prepare_games}
    data_paths = {d: prepare[d](args.users)[0] for d in args.datasets}
    result = {
        "benchmark": "paper scale (seed paper configs)", **machine_record(torch.get_num_threads()),
        "command": "python bench/paper_scale.py " + " ".join(repo_relative(a) for a in sys.argv[1:]),
        "gpu": torch.cuda.get_device_name(0) if use_gpu else None,
        "budget": {"epochs": args.epochs, "stopping_step": args.stopping_step, "seeds": args.seeds,
                   "backend": args.backend, "users": args.users or "all",
                   "overrides": parse_overrides(args.override) or None},
        "notes": [ML1M_NOTE] if "ml-1m" in args.datasets else [],
        "paper": {"seed_paper": {f"{d}/{m}": v for (d, m), v in SEED_PAPER.items()}, "seed_paper_gpu_gb": SEED_PAPER_GPU_GB,
                  "mamba4rec_paper_ml1m": MAMBA4REC_PAPER_ML1M},
        "runs": [],
    }
    start = time.perf_counter()
    for seed in args.seeds:
        for dataset in args.datasets:
            for model_name in args.models:
                if use_gpu:
                    torch.cuda.reset_peak_memory_stats()
                run = run_once(model_name, dataset, seed, run_config(args, data_paths[dataset], use_gpu))
                run["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 2**30 if use_gpu else None
                run["vs_seed_paper"] = compare(run)
                result["runs"].append(run)
                result["wall_s"] = time.perf_counter() - start
                t = run["test"]
                print(f"{dataset:20s} {model_name:12s} seed {seed}  hit {t['hit@10']:.4f} ndcg {t['ndcg@10']:.4f} "
                      f"mrr {t['mrr@10']:.4f}  {run['epochs_run']} ep, {run['train_s_per_epoch']:.1f} s/ep"
                      + (f", {run['peak_gpu_gb']:.2f} GB" if use_gpu else ""), flush=True)
                save_json(result, args.out)  # after every run


if __name__ == "__main__":
    main()

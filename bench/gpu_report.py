"""The GPU section of the README from ``bench/results/gpu_*.json`` (bench/gpu_run.sh's files,
copied there after a GPU slot):

    python bench/gpu_report.py --update-readme

Without GPU results it says so, and what the prepared run needs."""
import argparse
import glob
import json
import os

from common import REPO, RESULTS
from make_readme import update_readme

START, END = "<!-- gpu:start -->", "<!-- gpu:end -->"
# two device calls: staging the first half of the wheels (<= 2 min), then the run (<= 10 min),
# plus a machine start of 1-2 min
GPU_MINUTES = 13


def load(results):
    checks = os.path.join(results, "gpu_checks.json")
    runs = []
    for path in sorted(glob.glob(os.path.join(results, "gpu_ml-1m_*.json"))):
        with open(path, encoding="utf-8") as f:
            runs += json.load(f)["runs"]
    if not os.path.exists(checks):
        return None, runs
    with open(checks, encoding="utf-8") as f:
        return json.load(f), runs


def lines(checks, runs):
    if checks is None:
        return ["No GPU run yet: no GPU has been lent to this project so far. `bench/gpu_run.sh` is the "
                f"prepared run (about {GPU_MINUTES} minutes of one GPU: two device calls, see its header); "
                "`bench/gpu_run.sh --dry-run` runs every step on a CPU at toy size."]
    shape = checks["timing_shape"]
    out = [f"GPU: **{checks['device']}**, torch {checks['torch']}, triton {checks.get('triton', '–')} "
           f"({checks['date_utc']}, `bench/gpu_run.sh`). One Mamba block forward + backward at B {shape['batch']}, "
           f"L {shape['length']}, d {shape['d_model']}, N {shape['d_state']}:", "",
           "| backend | median ms | speed-up vs torch | peak extra GPU MB | worst rel. error vs torch (output, grads) |",
           "|---|---|---|---|---|"]
    for name, t in checks["block_fwd_bwd"].items():
        agree = checks["agreement_vs_torch"].get(name, {}).get("worst")
        out.append(f"| {name} | {t['median_ms']:.1f} | {checks['speedup_vs_torch'][name]:.1f}× | "
                   f"{t['peak_extra_mb']:.0f} | {'–' if agree is None else f'{agree:.1e}'} |")
    for name, why in checks.get("not_running", {}).items():
        out.append(f"\n`{name}` did not run there: {why}")
    if runs:
        out += ["", "| model | mode | backend | test Hit / NDCG / MRR @10 | epochs (best) | train s per epoch | "
                "minutes | resumed |", "|---|---|---|---|---|---|---|---|"]
        for r in runs:
            t = r["test"]
            out.append(f"| {r['label']} | {r['config']['train_mode']} | {r.get('ssm_backend', 'auto')} | "
                       f"{t['hit@10']:.4f} / {t['ndcg@10']:.4f} / {t['mrr@10']:.4f} | {r['epochs_run']} "
                       f"({r['best_epoch']}) | {r['train_s_per_epoch'] or 0:.1f} | {r['fit_s'] / 60:.1f} | "
                       f"{'yes' if r.get('resumed_from_checkpoint') else 'no'} |")
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=RESULTS)
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args()
    text = lines(*load(args.results))
    print("\n".join(text))
    if args.update_readme:
        update_readme(os.path.join(REPO, "README.md"), text, START, END)


if __name__ == "__main__":
    main()

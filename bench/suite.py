"""The CPU benchmark suite in one command (about 20 minutes on 2 shared cores).

    python bench/suite.py                 # parameters, speed/memory, scan vs L, accuracy, README section
    python bench/suite.py --quick         # smoke run into bench/out/quick/ (1 seed, 1 epoch, ml-100k only)

Steps, each its own script writing bench/results/<name>.json and .png:
  1. params.py        ML-1M parameter counts vs the seed's Table 2
  2. scan_speed.py    scan backends (ours / plain loop / mambapy) at L = 50, 200, 800
  3. speed_memory.py  training step, peak memory, full-sort latency per model, L = 50, 200
  4. accuracy.py      Hit/NDCG/MRR@10 on ml-100k and Amazon Video Games, mean ± std over seeds
  5. make_readme.py   bench/results/README_section.md from the JSON, spliced into README.md
The paper-scale GPU runs are not part of this suite.  The accuracy step gets what is
left of ``--budget-s`` after the others (runs not started by then are skipped and
listed in accuracy_suite.json; longer accuracy runs have their own files).
Writes bench/results/suite.json (steps, wall times, budget).
"""
import argparse
import os
import subprocess
import sys
import time

from common import HERE, OUT, RESULTS, SHARED_DATA, machine_record, repo_relative, save_json


def steps(args, results):
    scan_json = os.path.join(results, "scan_speed_lengths.json")
    python = sys.executable
    if args.quick:
        return [
            ("params", [python, f"{HERE}/params.py", "--out", f"{results}/params.json"]),
            ("scan_speed", [python, f"{HERE}/scan_speed.py", "--lengths", "50", "--batch", "8", "--warmup", "0",
                            "--repeats", "1", "--out", scan_json]),
            ("speed_memory", [python, f"{HERE}/speed_memory.py", "--lengths", "50", "--batch", "16",
                              "--warmup", "0", "--repeats", "1", "--scan-json", scan_json, "--out", f"{results}/speed_memory.json"]),
            ("accuracy", [python, f"{HERE}/accuracy.py", "--datasets", "ml-100k", "--seeds", "1", "--epochs", "1",
                          "--ml100k-users", "30",
                          "--out", f"{results}/accuracy_suite.json"]),
        ]
    # a fresh clone without ../shared/data: no ML-1M (params) and no Video Games (accuracy)
    datasets = ["ml-100k", "amazon-video-games"] if os.path.isdir(SHARED_DATA) else ["ml-100k"]
    return [
        ("params", [python, f"{HERE}/params.py"]),
        ("scan_speed", [python, f"{HERE}/scan_speed.py", "--lengths", "50", "200", "800", "--batch", str(args.scan_batch),
                        "--warmup", "1", "--repeats", "2", "--threads", str(args.threads), "--out", scan_json]),
        ("speed_memory", [python, f"{HERE}/speed_memory.py", "--lengths", "50", "200", "--batch", str(args.speed_batch),
                          "--repeats", "2", "--threads", str(args.threads), "--scan-json", scan_json]),
        ("accuracy", [python, f"{HERE}/accuracy.py", "--datasets", *datasets, "--seeds", *map(str, args.seeds),
                      "--epochs", str(args.epochs),
                      "--games-users", str(args.games_users), "--ml100k-users", str(args.ml100k_users),
                      "--stopping-step", "1",
                      "--threads", str(args.accuracy_threads), "--out", f"{results}/accuracy_suite.json"]),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny shapes, 1 seed, 1 epoch")
    parser.add_argument("--budget-s", type=float, default=20 * 60, help="wall-clock budget of the whole suite")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for the speed steps (1: on shared cores a 2-thread OpenMP barrier "
                             "stalls whenever a thread is descheduled)")
    parser.add_argument("--accuracy-threads", type=int, default=1, help="torch threads for training (1 on shared cores)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--games-users", type=int, default=6000)
    parser.add_argument("--ml100k-users", type=int, default=200)
    parser.add_argument("--scan-batch", type=int, default=16)
    parser.add_argument("--speed-batch", type=int, default=64)
    parser.add_argument("--skip", nargs="*", default=[], help="step names to leave out (their old JSON is kept)")
    args = parser.parse_args()

    start = time.perf_counter()
    record = {"suite": "CPU benchmarks", **machine_record(args.threads), "budget_s": args.budget_s,
              "quick": args.quick, "not_run": "paper-scale GPU runs (issue 8 item 2): no GPU lent", "steps": []}
    results = os.path.join(OUT, "quick") if args.quick else RESULTS  # a smoke run never overwrites results
    for name, command in steps(args, results):
        if name in args.skip:
            continue
        if name == "params" and not os.path.isdir(SHARED_DATA):
            record["steps"].append({"step": name, "skipped": "needs ML-1M from ../shared/data (not in this checkout's "
                                                             "parent); the committed params.json is kept"})
            print(f"== {name}: skipped, ../shared/data not found", flush=True)
            continue
        if name == "accuracy":
            left = args.budget_s - (time.perf_counter() - start)
            command = command + ["--time-limit", str(round(max(60.0, left - 60)))]  # a minute for the last run
        print(f"== {name}: {' '.join(repo_relative(c) for c in command[1:])}", flush=True)
        step_start = time.perf_counter()
        code = subprocess.run(command).returncode
        record["steps"].append({"step": name, "command": [repo_relative(c) for c in command[1:]], "returncode": code,
                                "wall_s": time.perf_counter() - step_start})
    subprocess.run([sys.executable, f"{HERE}/make_readme.py", "--results", results]
                   + ([] if args.quick else ["--update-readme"]), check=False)
    record["wall_s"] = time.perf_counter() - start
    record["machine"]["loadavg_1_5_15_end"] = list(os.getloadavg())
    save_json(record, os.path.join(results, "suite.json"))
    failed = [s["step"] for s in record["steps"] if s.get("returncode", 0) != 0]
    if failed:
        raise SystemExit(f"failed steps: {', '.join(failed)}")


if __name__ == "__main__":
    main()

"""Markdown section from the benchmark JSON: bench/results/README_section.md.

    python bench/make_readme.py [--results bench/results] [--update-readme]

Every number in the section comes from the JSON files next to it; a missing file
leaves its part out with a note.  Every ``accuracy*.json`` gets its own table (the
suite writes ``accuracy_suite.json``; longer runs get their own names).
``--update-readme`` also replaces the part of README.md between the bench markers.
"""
import argparse
import glob
import json
import os

from common import DATASET_TITLES, REPO, RESULTS, SEED_PAPER

README_START, README_END = "<!-- bench:start -->", "<!-- bench:end -->"
CTR_START, CTR_END = "<!-- ctr:start -->", "<!-- ctr:end -->"  # the table bench/ctr_taobao.py writes
CTR_BOTH_START, CTR_BOTH_END = "<!-- ctr-both:start -->", "<!-- ctr-both:end -->"  # bench/ctr.py's table
ACCURACY_ORDER = ("accuracy_ml-100k", "accuracy_ml-100k-bert4rec", "accuracy_games", "accuracy_ml-1m", "accuracy_suite")  # then any other, by name

METRICS = ("hit@10", "ndcg@10", "mrr@10")


def load(results, name):
    path = os.path.join(results, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def pm(cell):
    return f"{cell['mean']:.4f} ± {cell['std']:.4f}"


def machine_line(result):
    m, v = result["machine"], result["versions"]
    load = m.get("loadavg_1_5_15")
    load_text = f", load average {load[0]:.1f} at start" if load else ""
    end = m.get("loadavg_1_5_15_end")
    if end:
        load_text += f" / {end[0]:.1f} at end"
    return (f"{m['cpus']} CPUs, {m['torch_threads']} torch threads{load_text}; torch {v['torch']}, "
            f"RecBole {v['recbole']}, Python {v['python']}; {result.get('date_utc', '')}")


def accuracy_files(results):
    """(stem, result) for every accuracy*.json, in ACCURACY_ORDER then by name."""
    stems = [os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(results, "accuracy*.json"))]
    rank = {stem: i for i, stem in enumerate(ACCURACY_ORDER)}
    stems.sort(key=lambda stem: (rank.get(stem, len(rank)), stem))
    return [(stem, load(results, stem + ".json")) for stem in stems]


def accuracy_section(acc, stem):
    datasets = ", ".join(acc["summary"]) or "no dataset"
    lines = [f"#### {datasets} (`{stem}.json`)", ""]
    b = acc["budget"]
    if acc.get("command"):
        lines += [f"Command: `{acc['command']}`.", ""]
    lines += [f"Budget (reduced for 2 shared CPU cores): {b['summary']}; lr {b['learning_rate']}, {b['loss']}, "
              f"layers: {b['layers']}. Protocol: {acc['protocol']}. Machine: {machine_line(acc)}. "
              f"Wall time {acc.get('wall_s', 0) / 60:.1f} min.", ""]
    subsets = b.get("subsets") or {}
    if subsets.get("amazon-video-games"):
        s = subsets["amazon-video-games"]
        lines += [f"Amazon Video Games: SASRec's `Video.txt` (2014 Games, 31,013 users) converted with "
                  f"`python -m recbole_mamba.data seqfile`, then {s['users_drawn']:,} users drawn uniformly "
                  f"(seed {s['subset_seed']}, {s['rows']:,} rows) before the [5,inf) filters.", ""]
    elif "amazon-video-games" in acc["summary"]:
        lines += ["Amazon Video Games: SASRec's `Video.txt` (2014 Games, all 31,013 users) converted with "
                  "`python -m recbole_mamba.data seqfile` (position = time), then the [5,inf) filters.", ""]
    if subsets.get("ml-100k"):
        s = subsets["ml-100k"]
        lines += [f"ml-100k: RecBole's copy, {s['users_drawn']:,} of 943 users drawn uniformly "
                  f"(seed {s['subset_seed']}, {s['rows']:,} rows) before the [5,inf) filters.", ""]
    if acc.get("notes"):
        lines += [". ".join(acc["notes"]) + ".", ""]
    if acc.get("incomplete"):
        lines += [f"**Incomplete:** {acc['incomplete']}", ""]
    if acc.get("skipped"):
        lines += [f"**Not run:** {len(acc['skipped'])} runs: "
                  + ", ".join(f"{r['model']}/{r['dataset']}/seed {r['seed']}" for r in acc["skipped"]) + ".", ""]
    for dataset, block in acc["summary"].items():
        stats = next(r["dataset_stats"] for r in acc["runs"] if r["dataset"] == dataset)
        lines += [f"**{dataset}** ({stats['users']:,} users, {stats['items']:,} items, "
                  f"{stats['interactions']:,} interactions after filtering)", "",
                  "| model | Hit@10 | NDCG@10 | MRR@10 | seeds | epochs run (mean) | train s/epoch | params |",
                  "|---|---|---|---|---|---|---|---|"]
        for model_name, row in block["models"].items():
            lines.append(f"| {model_name} | {pm(row['hit@10'])} | {pm(row['ndcg@10'])} | {pm(row['mrr@10'])} | "
                         f"{len(row['seeds'])} | {row['epochs_run_mean']:.1f} | {row['train_s_per_epoch_mean']:.1f} | "
                         f"{row['params']:,} |")
        claim = block.get("seed_claim")
        if claim:
            names = {"hit@10": "Hit@10", "ndcg@10": "NDCG@10", "mrr@10": "MRR@10"}
            parts = [f"{names.get(m, m)} "
                     f"{v['mean_diff']:+.4f} (BiMamba4Rec better on {v['bimamba_wins']}/{v['seeds']} seeds)"
                     for m, v in claim["by_metric"].items()]
            verdict = "holds" if claim["holds_on_all_metrics_in_mean"] else "does not hold on every metric"
            lines += ["", f"Seed claim *BiMamba4Rec beats Mamba4Rec* on {dataset} (paired by seed, BiMamba − Mamba): "
                      + "; ".join(parts) + f". In the mean it {verdict} at this budget."]
        lines.append("")
    return lines + [f"![accuracy]({stem}.png)", ""]


def paper_accuracy_section():
    lines = ["For context, the seed paper at paper scale (GPU, ML-1M L=200 / Video Games L=50, d=64, up to 300 "
              "epochs; not comparable with the reduced CPU budget above):", "",
              "| dataset | model | Hit@10 | NDCG@10 | MRR@10 |", "|---|---|---|---|---|"]
    for (dataset, model_name), values in SEED_PAPER.items():
        lines.append(f"| {DATASET_TITLES[dataset]} | {model_name} | "
                     + " | ".join(f"{values[m]:.4f}" for m in METRICS) + " |")
    return lines + [""]


def threads_caveat(result):
    if result["machine"].get("torch_threads", 1) > 1:
        return ("These cores were shared with other jobs: with several torch threads an OpenMP barrier stalls "
                "whenever one thread is descheduled, so a single number can be off by several times; read the "
                "ratios as rough.")
    return "One torch thread per process, so the numbers are per core; the machine's load is stated above."


def speed_section(speed, scan):
    lines = ["### Speed and memory (CPU)", ""]
    if speed:
        lines += [f"Batch {speed['batch']}, median of {speed['repeats']} after {speed['warmup']} warm-up; "
                  f"{speed['config']}. Peak memory = growth of the process's max RSS during training "
                  f"(one process per model). Machine: {machine_line(speed)}. {threads_caveat(speed)}", "",
                  "| model | L | train step ms | × SASRec | train peak MB | × SASRec | full-sort ms/batch | × SASRec |",
                  "|---|---|---|---|---|---|---|---|"]
        ratios = speed.get("ratio_vs_SASRec", {})
        for row in speed["rows"]:
            r = ratios.get(f"{row['model']}_L{row['length']}", {})

            def x(key):
                return f"{r[key]:.2f}" if r.get(key) else ("1.00" if row["model"] == "SASRec" else "–")

            lines.append(f"| {row['model']} | {row['length']} | {row['train_step_ms']:.0f} | {x('train_step_ms')} | "
                         f"{row['train_peak_extra_mb']:.0f} | {x('train_peak_extra_mb')} | "
                         f"{row['infer_batch_ms']:.1f} | {x('infer_batch_ms')} |")
        lines += ["", "![speed and memory](speed_memory.png)", ""]
    if scan:
        shape = scan["shape"]
        lines += [f"Selective-scan backends, one Mamba block forward+backward (B={shape['batch']}, d={shape['d_model']}, "
                  f"N={shape['d_state']}, expand {shape['expand']}, {scan['threads']} threads, median of "
                  f"{scan['repeats']}; `bench/scan_speed.py`):", "",
                  "| L | recbole_mamba (ms) | plain loop (ms) | mambapy pscan (ms) | loop / ours | mambapy / ours | "
                  "peak MB ours / loop / mambapy |", "|---|---|---|---|---|---|---|"]
        by = {(r["impl"], r["length"]): r for r in scan["rows"]}
        for length in sorted({r["length"] for r in scan["rows"]}):
            cells = [by.get((impl, length)) for impl in ("recbole_mamba", "plain_loop", "mambapy_pscan")]
            ms = [f"{c['median_ms']:.1f}" if c else "–" for c in cells]
            mb = [f"{c['peak_extra_mb']:.0f}" if c else "–" for c in cells]
            ratio = [f"{cells[i]['median_ms'] / cells[0]['median_ms']:.1f}×" if cells[0] and cells[i] else "–"
                     for i in (1, 2)]
            lines.append(f"| {length} | " + " | ".join(ms + ratio) + f" | {' / '.join(mb)} |")
        lines.append("")
        if scan.get("date_utc"):  # the machine record (older files have none)
            lines += [f"Machine: {machine_line(scan)}.",
                      "", "![scan cost against L](scan_speed_lengths.png)", ""]
    return lines


def summary_section(params, speed, scan, accuracies, gru_official=None):
    """The headline comparisons, each computed from the JSON below it."""
    lines = []
    for name, row in ((gru_official or {}).get("summary") or {}).items():
        gap = row.get("ours_vs_official")
        if gap:
            lines.append(f"- GRU4Rec against the official code, {name} on yoochoose-100k (`gru4rec_official.json`): "
                         f"Recall@20 {gap['recall@20']:+.1%}, MRR@20 {gap['mrr@20']:+.1%}, training time "
                         f"×{gap['train_time_ratio']:.2f}.")
    if params:
        matched = [r for r in params["rows"] if r["matches"]]
        lines.append(f"- Parameters: {len(matched)} of {sum(r['expected'] is not None for r in params['rows'])} "
                     "counts of the seed paper's Table 2 reproduced exactly ("
                     + ", ".join(f"{r['model']} {r['params']:,}" for r in matched) + ").")
    if scan:
        longest = max(r["length"] for r in scan["rows"])
        by = {r["impl"]: r for r in scan["rows"] if r["length"] == longest}
        if "recbole_mamba" in by and "mambapy_pscan" in by:
            ours, other = by["recbole_mamba"], by["mambapy_pscan"]
            lines.append(f"- Scan at L={longest} (B={scan['shape']['batch']}): "
                         f"{other['median_ms'] / ours['median_ms']:.1f}× faster than mambapy's pscan with "
                         f"{other['peak_extra_mb'] / max(ours['peak_extra_mb'], 1e-9):.1f}× less memory.")
    if speed:
        longest = max(r["length"] for r in speed["rows"])
        ratio = speed.get("ratio_vs_SASRec", {}).get(f"Mamba4Rec_L{longest}")
        if ratio:
            lines.append(f"- Mamba4Rec against RecBole's SASRec at L={longest} (CPU): training step "
                         f"{ratio['train_step_ms']:.2f}×, training memory {ratio['train_peak_extra_mb']:.2f}×, "
                         f"full-sort inference {ratio['infer_batch_ms']:.2f}× (the Mamba4Rec paper, GPU: 0.58×, "
                         "0.32×, 0.52×).")
    for stem, acc in accuracies:
        for dataset, block in acc["summary"].items():
            claim = block.get("seed_claim")
            if not claim:
                continue
            ndcg = claim["by_metric"]["ndcg@10"]
            lines.append(f"- Seed claim on {dataset} (`{stem}.json`): BiMamba4Rec − Mamba4Rec NDCG@10 "
                         f"{ndcg['mean_diff']:+.4f}, BiMamba4Rec better on {ndcg['bimamba_wins']}/{ndcg['seeds']} seeds.")
            paper = {m: v["ndcg@10"] for (d, m), v in SEED_PAPER.items() if d == dataset and m in block["models"]}
            if paper and not (acc["budget"].get("subsets") or {}).get(dataset):
                lines.append(f"  Against the seed paper's {dataset} NDCG@10 at its full budget: " + ", ".join(
                    f"{m} {block['models'][m]['ndcg@10']['mean']:.4f} (paper {value:.4f}, "
                    f"{block['models'][m]['ndcg@10']['mean'] / value:.0%})" for m, value in paper.items())
                    + f", with {acc['budget']['summary'].split(', seeds')[0]}.")
    return (["### Where we stand", ""] + lines + [""]) if lines else []


def paper_scale_section(paper):
    """Our paper-config runs beside the seed paper's numbers (bench/paper_scale.py)."""
    lines = ["### Paper scale (seed paper configs)", "",
             f"Command: `{paper['command']}` on {paper.get('gpu') or 'CPU'}; budget: up to "
             f"{paper['budget']['epochs']} epochs, early stop {paper['budget']['stopping_step']}, users "
             f"{paper['budget']['users']}, ssm_backend {paper['budget']['backend']}. "
             + (f"**Overrides of the paper config: {paper['budget']['overrides']}** (a smoke run). "
                if paper["budget"].get("overrides") else "")
             + " ".join(paper.get("notes", [])) + ".", "",
             "| dataset | model | Hit@10 (paper) | NDCG@10 (paper) | MRR@10 (paper) | epochs | s/epoch | peak GPU GB |",
             "|---|---|---|---|---|---|---|---|"]
    for run in paper["runs"]:
        versus = run.get("vs_seed_paper") or {}

        def cell(metric):
            paper_value = versus.get(metric, {}).get("paper")
            return f"{run['test'][metric]:.4f}" + (f" ({paper_value:.4f})" if paper_value is not None else "")

        gpu = f"{run['peak_gpu_gb']:.2f}" if run.get("peak_gpu_gb") is not None else "–"
        lines.append(f"| {run['dataset']} | {run['model']} | {cell('hit@10')} | {cell('ndcg@10')} | {cell('mrr@10')} | "
                     f"{run['epochs_run']} | {run['train_s_per_epoch']:.1f} | {gpu} |")
    return lines + [""]


def params_section(params):
    lines = ["### Parameters (ML-1M, paper configs)", "",
             "| model | measured | seed paper (Table 2) | match |", "|---|---|---|---|"]
    for row in params["rows"]:
        expected = f"{row['expected']:,}" if row["expected"] else "–"
        match = {True: "yes", False: "**no**", None: "–"}[row["matches"]]
        lines.append(f"| {row['model']} | {row['params']:,} | {expected} | {match} |")
    return lines + ["", "![parameters](params.png)", ""]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=RESULTS)
    parser.add_argument("--update-readme", action="store_true", help="also splice the section into README.md")
    args = parser.parse_args()
    accuracies, speed = accuracy_files(args.results), load(args.results, "speed_memory.json")
    scan, params = load(args.results, "scan_speed_lengths.json"), load(args.results, "params.json")
    paper = load(args.results, "paper_scale.json")
    lines = ["## Benchmarks", "",
             "Generated by `python bench/make_readme.py` from the JSON in `bench/results/`; re-run the CPU suite "
             "with `pip install torch==2.13.0 -e \".[bench]\" && python bench/suite.py` (budgeted at 20 minutes on "
             "2 CPU cores, `--budget-s`). Longer runs name their command next to their table.", ""]
    lines += summary_section(params, speed, scan, accuracies, load(args.results, "gru4rec_official.json"))
    if paper:
        lines += paper_scale_section(paper)
    else:
        lines += ["**Not run yet:** the paper-scale runs (`python bench/paper_scale.py`: ML-1M at L=200 and Video "
                  "Games at L=50, d=64, batch 2048, up to 300 epochs; GPU memory and time per epoch as in the "
                  "papers' efficiency tables) need a GPU, and none has been lent to this project's runs so far. "
                  "The accuracy numbers below are from a reduced CPU budget, stated with each table; the paper "
                  "configs trained on a CPU (ML-1M at L 200, Video Games at L 50) are in \"Training on every "
                  "position\" above.", ""]
    if params:
        lines += params_section(params)
    if speed or scan:
        lines += speed_section(speed, scan)
    if accuracies:
        lines += ["### Accuracy (sequential, full ranking, leave-one-out by time)", ""]
        for stem, acc in accuracies:
            lines += accuracy_section(acc, stem)
        lines += paper_accuracy_section()
    missing = [n for n, r in (("params", params), ("speed_memory", speed), ("scan_speed_lengths", scan),
                              ("accuracy", accuracies or None)) if r is None]
    if missing:
        lines += [f"(No results yet for: {', '.join(missing)}.)", ""]
    path = os.path.join(args.results, "README_section.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    print(f"wrote {path}")
    if args.update_readme:
        readme = os.path.join(REPO, "README.md")
        update_readme(readme, lines)
        for name, start, end in (("ctr_taobao.md", CTR_START, CTR_END), ("ctr.md", CTR_BOTH_START, CTR_BOTH_END)):
            table = os.path.join(args.results, name)
            if os.path.exists(table):
                with open(table, encoding="utf-8") as f:
                    update_readme(readme, f.read().splitlines(), start, end)


def update_readme(readme, lines, start=README_START, end=README_END):
    """Replace README's text between two markers; image links point into bench/results/."""
    with open(readme, encoding="utf-8") as f:
        text = f.read()
    if start not in text or end not in text:
        raise SystemExit(f"{readme}: no {start} ... {end} markers; add them where the section goes")
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    section = "\n".join(lines).replace("](", "](bench/results/").replace("](bench/results/http", "](http")
    with open(readme, "w", encoding="utf-8") as f:
        f.write(f"{head}{start}\n{section.rstrip()}\n{end}{tail}")
    print(f"updated {readme} ({start})")


if __name__ == "__main__":
    main()

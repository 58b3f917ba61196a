"""The benchmark scripts' helpers (no training): subsetting, summaries, the README section."""
import glob
import json
import os
import re
import sys

from conftest import REPO

sys.path.insert(0, os.path.join(REPO, "bench"))

import accuracy  # noqa: E402
import make_readme  # noqa: E402
import paper_scale  # noqa: E402
from common import mean_std, repo_relative  # noqa: E402

# absolute paths of a machine: committed results must not contain them
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:work|tmp|home|root|Users|mnt|var|opt|srv)/")


def test_mean_std_is_the_sample_std():
    assert mean_std([1.0]) == (1.0, 0.0)
    mean, std = mean_std([1.0, 2.0, 3.0])
    assert mean == 2.0 and abs(std - 1.0) < 1e-12


def test_subset_users_keeps_whole_histories(tmp_path):
    source = tmp_path / "in.inter"
    rows = [f"u{u}\ti{i}\t{i}" for u in range(10) for i in range(u + 1)]
    source.write_text("user_id:token\titem_id:token\ttimestamp:float\n" + "\n".join(rows) + "\n")
    out = tmp_path / "sub" / "out.inter"
    users, kept = accuracy.subset_users(str(source), str(out), 4, seed=0)
    lines = out.read_text().splitlines()
    assert users == 4 and kept == len(lines) - 1 and lines[0].startswith("user_id:token")
    chosen = {line.split("\t")[0] for line in lines[1:]}
    assert len(chosen) == 4
    for user in chosen:  # every row of a chosen user, in the file's order
        assert [line for line in lines[1:] if line.startswith(user + "\t")] == [r for r in rows if r.startswith(user + "\t")]
    assert accuracy.subset_users(str(source), str(out), 4, seed=0) == (users, kept)  # same seed, same subset


def fake_run(model, seed, ndcg):
    return {"model": model, "dataset": "ml-100k", "seed": seed, "epochs_run": 2, "train_s_per_epoch": 1.0,
            "params": 10, "dataset_stats": {"users": 5, "items": 7, "interactions": 30},
            "test": {"hit@10": 2 * ndcg, "ndcg@10": ndcg, "mrr@10": ndcg / 2}}


def test_summary_pairs_seeds_for_the_claim():
    runs = [fake_run("Mamba4Rec", s, 0.10) for s in (1, 2)] + [fake_run("BiMamba4Rec", 1, 0.12),
                                                               fake_run("BiMamba4Rec", 2, 0.09)]
    summary = accuracy.summarise(runs)["ml-100k"]
    assert summary["models"]["Mamba4Rec"]["ndcg@10"] == {"mean": 0.10, "std": 0.0}
    ndcg = summary["seed_claim"]["by_metric"]["ndcg@10"]
    assert ndcg["bimamba_wins"] == 1 and ndcg["seeds"] == 2 and abs(ndcg["mean_diff"] - 0.005) < 1e-12


def test_readme_section_comes_from_the_json(tmp_path):
    runs = [fake_run(m, 1, v) for m, v in (("Mamba4Rec", 0.1), ("BiMamba4Rec", 0.2))]
    machine = {"machine": {"cpus": 2, "torch_threads": 2, "loadavg_1_5_15": [3.0, 2.0, 1.0]},
               "versions": {"torch": "t", "recbole": "r", "python": "p"}}
    acc = {**machine, "budget": {"summary": "tiny", "learning_rate": 0.001, "loss": "CE", "layers": "x",
                                 "games_subset": None},
           "protocol": "LOO", "runs": runs, "summary": accuracy.summarise(runs), "skipped": [], "wall_s": 60}
    params = {"rows": [{"model": "Mamba4Rec", "params": 290_944, "expected": 290_944, "matches": True}]}
    longer = {**acc, "command": "python bench/accuracy.py --seeds 1", "runs": runs[:1],
              "summary": accuracy.summarise(runs[:1])}
    for name, result in (("accuracy_suite.json", acc), ("accuracy_ml-100k.json", longer), ("params.json", params)):
        (tmp_path / name).write_text(json.dumps(result))
    sys.argv = ["make_readme.py", "--results", str(tmp_path)]
    make_readme.main()
    text = (tmp_path / "README_section.md").read_text()
    assert "| Mamba4Rec | 290,944 | 290,944 | yes |" in text
    assert "0.2000 ± 0.0000" in text and "BiMamba4Rec better on 1/1 seeds" in text
    assert "No results yet for: speed_memory, scan_speed_lengths" in text
    # one table per accuracy file, the longer named run first, each with its own plot
    assert text.index("#### ml-100k (`accuracy_ml-100k.json`)") < text.index("#### ml-100k (`accuracy_suite.json`)")
    assert "Seed claim on ml-100k (`accuracy_suite.json`): BiMamba4Rec − Mamba4Rec NDCG@10 +0.1000" in text
    assert "Command: `python bench/accuracy.py --seeds 1`." in text
    assert "![accuracy](accuracy_ml-100k.png)" in text and "![accuracy](accuracy_suite.png)" in text


def test_readme_splice_replaces_only_the_marked_part(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# top\n\n{make_readme.README_START}\nold table\n{make_readme.README_END}\n\n## after\n")
    make_readme.update_readme(str(readme), ["## Benchmarks", "", "![plot](params.png) and [a link](https://x.org)"])
    text = readme.read_text()
    assert text.startswith("# top\n\n") and text.endswith(f"{make_readme.README_END}\n\n## after\n")
    assert "old table" not in text
    assert "![plot](bench/results/params.png)" in text and "[a link](https://x.org)" in text
    (tmp_path / "plain.md").write_text("# no markers\n")
    try:
        make_readme.update_readme(str(tmp_path / "plain.md"), ["x"])
    except SystemExit as error:
        assert "markers" in str(error)
    else:
        raise AssertionError("a README without markers must be refused")
    assert (tmp_path / "plain.md").read_text() == "# no markers\n"


def test_update_readme_splices_both_ctr_tables(tmp_path, monkeypatch):
    """make_readme.py --update-readme puts ctr_taobao.md and bench/ctr.py's ctr.md each between
    its own markers and leaves the text around them alone."""
    readme = tmp_path / "README.md"
    readme.write_text(f"{make_readme.README_START}\n{make_readme.README_END}\nTaobao:\n"
                      f"{make_readme.CTR_START}\nold one\n{make_readme.CTR_END}\nBoth:\n"
                      f"{make_readme.CTR_BOTH_START}\nold two\n{make_readme.CTR_BOTH_END}\nend\n")
    results = tmp_path / "results"
    results.mkdir()
    (results / "ctr_taobao.md").write_text("| taobao table |\n")
    (results / "ctr.md").write_text("| both datasets table |\n")
    monkeypatch.setattr(make_readme, "REPO", str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["make_readme.py", "--results", str(results), "--update-readme"])
    make_readme.main()
    text = readme.read_text()
    assert f"Taobao:\n{make_readme.CTR_START}\n| taobao table |\n{make_readme.CTR_END}\nBoth:\n" in text
    assert f"{make_readme.CTR_BOTH_START}\n| both datasets table |\n{make_readme.CTR_BOTH_END}\nend\n" in text
    assert "old one" not in text and "old two" not in text


def test_repo_relative_hides_the_checkout():
    from common import REPO

    parent = os.path.dirname(REPO)
    text = f"wrote {REPO}/bench/out/x.inter and {parent}/shared/data/ml-1m"
    assert repo_relative(text) == "wrote bench/out/x.inter and ../shared/data/ml-1m"
    assert not MACHINE_PATH.search(repo_relative(REPO + "/a"))


def test_committed_results_name_no_machine_paths():
    files = [p for p in glob.glob(os.path.join(REPO, "bench", "results", "**", "*"), recursive=True)
             if os.path.splitext(p)[1] in {".json", ".md", ".txt", ".csv", ".yaml", ".hyper"}]
    assert files, "bench/results/ holds the committed benchmark results"
    for path in files:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                assert not MACHINE_PATH.search(line), f"{os.path.relpath(path, REPO)}:{number} names a machine path"


def test_speed_and_scan_tables_come_from_the_json(tmp_path):
    machine = {"machine": {"cpus": 2, "torch_threads": 1, "loadavg_1_5_15": [1.0, 1.0, 1.0]},
               "versions": {"torch": "t", "recbole": "r", "python": "p"}, "date_utc": "2026-12-01T00:00:00Z"}
    speed = {**machine, "batch": 64, "repeats": 2, "warmup": 1, "config": "defaults",
             "rows": [{"model": m, "length": 50, "train_step_ms": ms, "train_peak_extra_mb": 10.0, "infer_batch_ms": 5.0}
                      for m, ms in (("Mamba4Rec", 300.0), ("SASRec", 150.0))],
             "ratio_vs_SASRec": {"Mamba4Rec_L50": {"train_step_ms": 2.0, "train_peak_extra_mb": 1.0, "infer_batch_ms": 1.0}}}
    scan = {**machine, "threads": 1, "repeats": 2, "shape": {"batch": 16, "d_model": 64, "d_state": 32, "expand": 2},
            "rows": [{"impl": impl, "length": 200, "median_ms": ms, "peak_extra_mb": mb}
                     for impl, ms, mb in (("recbole_mamba", 100.0, 30.0), ("plain_loop", 300.0, 90.0),
                                          ("mambapy_pscan", 500.0, 200.0))]}
    (tmp_path / "speed_memory.json").write_text(json.dumps(speed))
    (tmp_path / "scan_speed_lengths.json").write_text(json.dumps(scan))
    sys.argv = ["make_readme.py", "--results", str(tmp_path)]
    make_readme.main()
    text = (tmp_path / "README_section.md").read_text()
    assert "| Mamba4Rec | 50 | 300 | 2.00 | 10 | 1.00 | 5.0 | 1.00 |" in text
    assert "| 200 | 100.0 | 300.0 | 500.0 | 3.0× | 5.0× | 30 / 90 / 200 |" in text
    assert "One torch thread per process" in text and "![scan cost against L](scan_speed_lengths.png)" in text


def test_paper_scale_overrides_and_comparison():
    assert paper_scale.parse_overrides(["MAX_ITEM_LIST_LENGTH=20", "dropout_prob=0.1", "ssm_backend=torch"]) == {
        "MAX_ITEM_LIST_LENGTH": 20, "dropout_prob": 0.1, "ssm_backend": "torch"}
    try:
        paper_scale.parse_overrides(["epochs"])
    except SystemExit as error:
        assert "KEY=VALUE" in str(error)
    else:
        raise AssertionError("an override without '=' must be refused")
    run = {"dataset": "ml-1m", "model": "BiMamba4Rec", "test": {"hit@10": 0.3, "ndcg@10": 0.21, "mrr@10": 0.15}}
    versus = paper_scale.compare(run)
    assert versus["ndcg@10"]["paper"] == 0.2006 and abs(versus["ndcg@10"]["diff"] - 0.0094) < 1e-12
    assert paper_scale.compare({**run, "model": "GRU4Rec"}) is None


def test_paper_scale_table_replaces_the_not_run_note(tmp_path):
    sys.argv = ["make_readme.py", "--results", str(tmp_path)]
    make_readme.main()
    assert "**Not run yet:** the paper-scale runs" in (tmp_path / "README_section.md").read_text()
    run = {"dataset": "ml-1m", "model": "Mamba4Rec", "epochs_run": 40, "train_s_per_epoch": 12.5, "peak_gpu_gb": 3.2,
           "test": {"hit@10": 0.31, "ndcg@10": 0.18, "mrr@10": 0.14}}
    run["vs_seed_paper"] = paper_scale.compare(run)
    paper = {"command": "python bench/paper_scale.py", "gpu": "NVIDIA H200", "notes": [paper_scale.ML1M_NOTE],
             "budget": {"epochs": 300, "stopping_step": 10, "users": "all", "backend": "cuda", "overrides": None},
             "runs": [run]}
    (tmp_path / "paper_scale.json").write_text(json.dumps(paper))
    make_readme.main()
    text = (tmp_path / "README_section.md").read_text()
    assert "Not run yet" not in text and "on NVIDIA H200" in text and "6,039 of 6,040 users" in text
    assert "| ml-1m | Mamba4Rec | 0.3100 (0.3109) | 0.1800 (0.1795) | 0.1400 (0.1395) | 40 | 12.5 | 3.20 |" in text


def test_merge_joins_seeds_of_one_budget_and_refuses_others(tmp_path):
    budget = {"epochs": 1, "hidden_size": 32, "seeds": [1], "summary": "d=32, seeds [1], users drawn: ml-1m all"}

    def part(seed, ndcg, **changes):
        runs = [fake_run("Mamba4Rec", seed, ndcg), fake_run("BiMamba4Rec", seed, ndcg + 0.01)]
        return {"command": f"python bench/accuracy.py --seeds {seed}", "budget": {**budget, "seeds": [seed], **changes},
                "runs": runs, "skipped": [], "wall_s": 10.0 * seed, "summary": accuracy.summarise(runs),
                "machine": {"cpus": 2, "torch_threads": 1}}

    paths = []
    for seed, ndcg in ((1, 0.10), (2, 0.20)):
        paths.append(str(tmp_path / f"seed{seed}.json"))
        (tmp_path / f"seed{seed}.json").write_text(json.dumps(part(seed, ndcg)))
    merged = accuracy.merge(paths, str(tmp_path / "merged.json"))
    row = merged["summary"]["ml-100k"]["models"]["Mamba4Rec"]
    assert row["seeds"] == [1, 2] and abs(row["ndcg@10"]["mean"] - 0.15) < 1e-12
    assert merged["budget"]["seeds"] == [1, 2] and "seeds [1, 2]" in merged["budget"]["summary"]
    assert merged["summary"]["ml-100k"]["seed_claim"]["by_metric"]["ndcg@10"]["bimamba_wins"] == 2
    assert (tmp_path / "merged.png").exists() and merged["wall_s"] == 20.0
    (tmp_path / "other.json").write_text(json.dumps(part(3, 0.1, epochs=5)))
    try:
        accuracy.merge([paths[0], str(tmp_path / "other.json")], str(tmp_path / "bad.json"))
    except SystemExit as error:
        assert "different budgets" in str(error)
    else:
        raise AssertionError("runs of different budgets must not be merged")
    assert not (tmp_path / "bad.json").exists()


def test_paper_cpu_counts_each_pass_once_and_corrects_old_pieces():
    import paper_cpu

    loader = paper_cpu._UntilDeadline(list(range(4)), deadline=float("inf"))
    for _ in range(2):  # two whole passes: one RecBole epoch each
        assert list(loader) == [0, 1, 2, 3]
    assert loader.passes_done == 2.0
    half = paper_cpu._UntilDeadline(list(range(4)), deadline=float("inf"), slice_s=1e-9)
    assert list(half) == [] and half.cut  # a slice that ends at once yields nothing
    # pieces from before the fix counted 2k + f for k passes and a fraction f
    old = {"data_passes": 102.63, "train_s_per_data_pass": 38.0}
    fixed = paper_cpu.corrected_passes(old)
    assert abs(fixed["data_passes"] - 51.63) < 1e-9
    assert abs(fixed["train_s_per_data_pass"] - 38.0 * 102.63 / 51.63) < 1e-9
    assert paper_cpu.corrected_passes(fixed) == fixed  # marked, so never corrected twice
    assert paper_cpu.corrected_passes({"data_passes": 0.32})["data_passes"] == 0.32  # no pass completed


def test_ctr_table_pools_seeds_per_dataset_budget_and_model():
    import ctr

    runs = [{"dataset": "ml-100k", "budget": "shared", "variant": name, "seed": seed, "test_auc": auc,
             "test_logloss": 0.6, "seconds_per_epoch": 2.0, **({"gate": {"mean": 0.4}} if name.startswith("MDAF") else {})}
            for name, seed, auc in (("DCNv3", 1, 0.70), ("DCNv3", 2, 0.72), ("MDAF (gate)", 1, 0.75))]
    table = ctr.summarise(runs, {"ml-100k/shared/DCNv3": 1234})
    assert [row["variant"] for row in table] == ["MDAF (gate)", "DCNv3"]  # the order of VARIANTS
    dcn = table[1]
    assert abs(dcn["auc_mean"] - 0.71) < 1e-12 and abs(dcn["auc_std"] - mean_std([0.70, 0.72])[1]) < 1e-12
    assert dcn["params"] == 1234 and table[0]["gate_mean"] == 0.4 and table[0]["params"] is None
    lines = ctr.markdown(table).splitlines()
    assert lines[2].startswith("| ml-100k | shared | MDAF (gate) | – | 0.7500 | 0.6000 | 2.0 | 0.400 | 1 |")  # one seed: no ±
    assert "| 1,234 | 0.7100 ± 0.0141 |" in lines[3]


def test_ctr_run_cut_by_its_piece_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    """bench/ctr.py --piece-minutes: a run cut at an epoch start continues, with the next
    --resume, from its newest checkpoint and ends with the uninterrupted run's metrics (real
    Taobao sample in dataset_atomic/, DCNv3, 3 epochs)."""
    import argparse
    import time

    import torch

    import ctr
    import recbole_mamba  # noqa: F401  (registers DCNv3)

    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)  # RecBole's log/ lands here
    data_path = os.path.join(REPO, "dataset_atomic")
    args = argparse.Namespace(history=20, stopping_step=10, epochs=3, batch=512, learning_rate=1e-3,
                              gate_reports=str(tmp_path / "gates"), deadline=float("inf"))

    def run(out, unfinished, deadline=float("inf")):
        monkeypatch.setattr(ctr, "OUT", str(tmp_path / out))
        args.deadline = deadline
        return ctr.one_run("DCNv3", "taobao", "shared", 2020, data_path, args, unfinished)

    straight = run("straight", {})
    assert straight["epochs_run"] == 3 and straight["pieces"] == 1
    # cut: the piece ends when the second epoch would start (as a spent --piece-minutes does)
    unfinished = {}
    calls = {"n": 0}
    from recbole.trainer import Trainer

    original = Trainer._train_epoch

    def one_epoch_then_stop(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] > 1:
            raise ctr.PieceEnds
        return original(self, *a, **kw)

    monkeypatch.setattr(Trainer, "_train_epoch", one_epoch_then_stop)
    assert run("cut", unfinished) is None
    monkeypatch.setattr(Trainer, "_train_epoch", original)
    slug = "taobao-shared-dcnv3-seed2020"
    assert list(unfinished) == [slug] and len(unfinished[slug]["epoch_seconds"]) == 1
    assert any(f.endswith(".pth") for f in os.listdir(tmp_path / "cut" / "ctr_checkpoints" / slug))
    resumed = run("cut", unfinished)
    assert unfinished == {} and resumed["pieces"] == 2 and resumed["epochs_run"] == 3
    for key in ("test_auc", "test_logloss", "best_valid_auc"):
        assert abs(resumed[key] - straight[key]) < 1e-9, key
    # the valid curve spans the pieces: the cut piece's epoch, then the resumed piece's two
    assert len(straight["valid_scores"]) == 3 and resumed["valid_scores"] == straight["valid_scores"]
    assert straight["best_valid_auc"] == max(straight["valid_scores"])
    # a run whose checkpoints stayed on another machine (a fresh checkout) starts again from
    # epoch 0 as a run of one piece, instead of counting the lost pieces and their epochs
    lost = {slug: {"epoch_seconds": [9.0, 9.0], "valid_scores": [0.1, 0.2], "seconds": 18.0, "pieces": 1}}
    again = run("elsewhere", lost)
    assert lost == {} and again["pieces"] == 1 and again["epochs_run"] == 3
    assert abs(again["test_auc"] - straight["test_auc"]) < 1e-9 and again["valid_scores"] == straight["valid_scores"]
    # a piece whose time is already spent starts no epoch at all
    assert run("late", {}, deadline=time.time() - 1) is None


def test_ctr_static_ablation_runs_mdaf_without_its_sequence_branch(tmp_path, monkeypatch):
    """bench/ctr.py's "MDAF (static branch only)" is MDAF with fusion: static: it trains and
    tests on the real Taobao sample, builds no sequence branch or gate (fewer parameters than
    the gate variant), and its row has no gate report, which only the gate variant gets."""
    import argparse

    import torch

    import ctr
    import recbole_mamba  # noqa: F401  (registers MDAF)

    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(ctr, "OUT", str(tmp_path))
    data_path = os.path.join(REPO, "dataset_atomic")
    args = argparse.Namespace(history=10, stopping_step=10, epochs=1, batch=512, learning_rate=1e-3,
                              gate_reports=str(tmp_path / "gates"), deadline=float("inf"))
    rows = {name: ctr.one_run(name, "taobao", "shared", 2020, data_path, args, {})
            for name in ("MDAF (static branch only)", "MDAF (gate)")}
    static, gate = rows["MDAF (static branch only)"], rows["MDAF (gate)"]
    assert "gate" not in static and 0.0 <= gate["gate"]["mean"] <= 1.0
    assert 0.0 < static["test_auc"] < 1.0 and static["test_auc"] != gate["test_auc"]
    counts = {}
    for name in rows:
        model_name, extra, _ = ctr.VARIANTS[name]
        files, config = ctr.run_config(model_name, "taobao", data_path, args.history, "shared", args)
        counts[name] = ctr.count_trainable(model_name, ctr.DATASETS["taobao"], files, {**config, **extra})
    assert counts["MDAF (static branch only)"] < counts["MDAF (gate)"]


def test_ctr_merge_keeps_every_run_once_and_drops_finished_from_unfinished():
    import ctr

    def row(variant, seed, auc):
        return {"dataset": "taobao", "budget": "shared", "variant": variant, "seed": seed, "test_auc": auc}

    a = {"runs": [row("DCNv3", 1, 0.6)], "params": {"taobao/shared/DCNv3": 10}, "data": {"taobao": "a"},
         "unfinished": {"taobao-shared-mdaf-gate-seed1": {"epoch_seconds": [1.0]}}}
    b = {"runs": [row("DCNv3", 1, 0.9), row("MDAF (gate)", 1, 0.7)], "params": {"taobao/shared/MDAF (gate)": 20},
         "data": {}, "unfinished": {"taobao-shared-mdaf-gate-seed2": {"epoch_seconds": [2.0]}}}
    merged = ctr.merge_states([a, b])
    assert [(r["variant"], r["test_auc"]) for r in merged["runs"]] == [("DCNv3", 0.6), ("MDAF (gate)", 0.7)]
    assert merged["params"] == {"taobao/shared/DCNv3": 10, "taobao/shared/MDAF (gate)": 20}
    assert list(merged["unfinished"]) == ["taobao-shared-mdaf-gate-seed2"]  # seed 1 finished in b


def test_ctr_merge_command_adds_to_the_out_files_runs(tmp_path):
    """python bench/ctr.py --out X --merge Y (relative paths, as a user types them): X's
    .partial.json keeps its own runs and gains Y's, and the table shows both."""
    import subprocess

    def row(dataset, variant, auc):
        return {"dataset": dataset, "budget": "shared", "variant": variant, "seed": 1, "test_auc": auc,
                "test_logloss": 0.6, "seconds_per_epoch": 1.0}

    (tmp_path / "ctr.partial.json").write_text(json.dumps(
        {"runs": [row("taobao", "DCNv3", 0.61)], "params": {}, "data": {}, "unfinished": {"x": {}}}))
    (tmp_path / "din.partial.json").write_text(json.dumps(
        {"runs": [row("ml-100k", "DIN (RecBole)", 0.68)], "params": {}, "data": {}}))
    done = subprocess.run([sys.executable, os.path.join(REPO, "bench", "ctr.py"), "--out", "ctr.json",
                           "--merge", "din.partial.json"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    merged = json.loads((tmp_path / "ctr.partial.json").read_text())
    assert sorted(r["variant"] for r in merged["runs"]) == ["DCNv3", "DIN (RecBole)"] and "x" in merged["unfinished"]
    table = (tmp_path / "ctr.md").read_text()
    assert "| taobao | shared | DCNv3 |" in table and "| ml-100k | shared | DIN (RecBole) |" in table


def test_ctr_resumed_run_that_fails_keeps_its_state(tmp_path, monkeypatch):
    """A run an earlier piece cut keeps its unfinished state when its resume fails (here: an
    unreadable checkpoint), so the next --resume can still continue it."""
    import argparse

    import pytest

    import ctr
    from recbole_mamba.errors import CheckpointError

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(ctr, "OUT", str(tmp_path))
    slug = "taobao-shared-dcnv3-seed2020"
    folder = tmp_path / "ctr_checkpoints" / slug
    folder.mkdir(parents=True)
    (folder / "DCNv3-x.pth").write_bytes(b"not a checkpoint")
    earlier = {"epoch_seconds": [1.0], "valid_scores": [0.6], "seconds": 1.0, "pieces": 1}
    unfinished = {slug: dict(earlier)}
    args = argparse.Namespace(history=20, stopping_step=10, epochs=3, batch=512, learning_rate=1e-3,
                              gate_reports=str(tmp_path / "gates"), deadline=float("inf"))
    with pytest.raises(CheckpointError):
        ctr.one_run("DCNv3", "taobao", "shared", 2020, os.path.join(REPO, "dataset_atomic"), args, unfinished)
    assert unfinished == {slug: earlier}

"""The benchmark scripts' helpers (no training): subsetting, summaries, the README section."""
import json
import os
import sys

from conftest import REPO

sys.path.insert(0, os.path.join(REPO, "bench"))

import accuracy  # noqa: E402
import make_readme  # noqa: E402
from common import mean_std  # noqa: E402


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
    for name, result in (("accuracy.json", acc), ("params.json", params)):
        (tmp_path / name).write_text(json.dumps(result))
    sys.argv = ["make_readme.py", "--results", str(tmp_path)]
    make_readme.main()
    text = (tmp_path / "README_section.md").read_text()
    assert "| Mamba4Rec | 290,944 | 290,944 | yes |" in text
    assert "0.2000 ± 0.0000" in text and "BiMamba4Rec better on 1/1 seeds" in text
    assert "No results yet for: speed_memory, scan_speed_lengths" in text

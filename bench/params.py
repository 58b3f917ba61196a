"""Parameter counts on ML-1M at the paper configs: the seed's Table 2 (290,944 vs 457,344).

    python bench/params.py

ML-1M from ../shared/data/ml-1m/atomic-untimed (user/item ids only; after the
[5,inf) filters 6,040 users, 3,416 items), which is all a parameter count needs.
Counts every model in its default (paper) config: Mamba4Rec 1 layer, BiMamba4Rec
2 layers, d=64, N=32; GRU4Rec and SASRec at RecBole's defaults, for reference.
Writes bench/results/params.json and .png.
"""
import argparse
import os

from common import RESULTS, SHARED_DATA, machine_record, pyplot, recbole_config, repo_relative, save_json

EXPECTED = {"Mamba4Rec": 290_944, "BiMamba4Rec": 457_344}  # the seed paper's Table 2
MODELS = ("Mamba4Rec", "BiMamba4Rec", "GRU4Rec", "SASRec")


def count(model_name, data_path, cache={}):
    from recbole.data import create_dataset

    from recbole_mamba.model.base import count_parameters
    from recbole_mamba.registry import get_model

    config = recbole_config(model_name, "ml-1m", {
        "data_path": data_path, "load_col": {"inter": ["user_id", "item_id"]},
        "use_gpu": False, "state": "WARNING", "loss_type": "CE", "train_neg_sample_args": None,
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "RO", "mode": "full", "group_by": "user"}})
    if "dataset" not in cache:  # the dataset does not depend on the model: load the 1M rows once
        cache["dataset"] = create_dataset(config)
    dataset = cache["dataset"]
    model = get_model(model_name)(config, dataset)
    by_module = {}
    for name, p in model.named_parameters():
        top = name.split(".")[0]
        by_module[top] = by_module.get(top, 0) + p.numel()
    return {"model": model_name, "params": count_parameters(model), "by_module": by_module,
            "items_with_padding": dataset.item_num, "interactions": dataset.inter_num}


def plot(result, path):
    plt = pyplot()

    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar([r["model"] for r in rows], [r["params"] for r in rows], color="tab:blue", label="measured")
    for i, r in enumerate(rows):
        if r["model"] in EXPECTED:
            ax.plot([i - 0.4, i + 0.4], [EXPECTED[r["model"]]] * 2, color="tab:red", lw=2,
                    label="seed paper" if r["model"] == "Mamba4Rec" else None)
        ax.text(i, r["params"], f"{r['params']:,}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("parameters")
    ax.set_title("Parameters on ML-1M (3,416 items + padding), paper configs", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-path", default=os.path.join(SHARED_DATA, "ml-1m", "atomic-untimed"))
    parser.add_argument("--out", default=os.path.join(RESULTS, "params.json"))
    args = parser.parse_args()
    rows = []
    for model_name in MODELS:
        row = count(model_name, args.data_path)
        row["expected"] = EXPECTED.get(model_name)
        row["matches"] = None if row["expected"] is None else row["params"] == row["expected"]
        rows.append(row)
        print(f"{model_name:12s} {row['params']:>9,}" + (f"  (seed paper {row['expected']:,}: "
              f"{'match' if row['matches'] else 'MISMATCH'})" if row["expected"] else ""), flush=True)
    result = {"benchmark": "parameter counts, ML-1M, paper configs", **machine_record(1), "seed": None,
              "config": "d=64, d_state=32, d_conv=4, expand=2; Mamba4Rec 1 layer, BiMamba4Rec 2 layers; "
                        "GRU4Rec/SASRec RecBole defaults", "data": repo_relative(args.data_path), "rows": rows}
    save_json(result, args.out)
    plot(result, os.path.splitext(args.out)[0] + ".png")


if __name__ == "__main__":
    main()

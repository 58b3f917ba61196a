"""What trimming padding and length-bucketed batches buy, and BiMamba4Rec's cost over Mamba4Rec.

    python bench/padding.py                 # ML-1M (L 200) and Video Games (L 50), prefix mode
    python bench/padding.py --batches 2 --users 500 --out bench/out/padding_smoke.json

For each dataset it draws training batches of RecBole's prefix rows (batch 2048, the
protocol's) three ways and times one training step (forward, backward, Adam) per batch:

* ``padded``: random batches, every row at MAX_ITEM_LIST_LENGTH (what RecBole does);
* ``trimmed``: random batches cut to their longest row (``trim_padding``);
* ``bucketed``: length-bucketed batches (``length_bucketing``), cut to their longest row.

It also counts, exactly, the positions one epoch computes in each way (and in
``all_positions`` mode), and times BiMamba4Rec against Mamba4Rec at equal ``num_layers``
on the same batches, with the directions one after the other (the CPU default) and in
one scan (``mamba_pair(grouped=True)``, the CUDA default).  Paper config: d 64,
d_state 32, 1 thread.  ``--datasets`` adds to an existing ``--out`` file.  Writes
bench/results/padding.json.
"""
import argparse
import os
import sys
import time

import numpy as np

from accuracy import ML1M_NOTE, prepare_games, prepare_ml1m, prepared_data
from common import OUT, RESULTS, machine_record, recbole_config, repo_relative, save_json

MAX_LEN = {"ml-1m": 200, "amazon-video-games": 50}
BATCH = 2048  # rows per prefix batch (--batch)


def protocol(dataset, data_path):
    return {
        "data_path": data_path, "use_gpu": False, "state": "WARNING", "show_progress": False,
        "loss_type": "CE", "train_neg_sample_args": None, "MAX_ITEM_LIST_LENGTH": MAX_LEN[dataset],
        "train_batch_size": BATCH, "user_inter_num_interval": "[5,inf)", "item_inter_num_interval": "[5,inf)",
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
        "metrics": ["NDCG"], "topk": [10], "valid_metric": "NDCG@10",
    }


def epoch_positions(lengths, batch, max_len, rng):
    """Positions one prefix epoch computes: padded, trimmed random batches, bucketed batches."""
    from recbole_mamba.model import all_positions

    order = rng.permutation(len(lengths))
    trimmed = sum(int(lengths[order[i:i + batch]].max()) * len(order[i:i + batch]) for i in range(0, len(order), batch))

    class _Loader:  # what LengthBucketedLoader reads of RecBole's loader
        step = batch
        config = {"single_spec": True}

    bucketed = sum(int(lengths[b].max()) * len(b) for b in all_positions.LengthBucketedLoader(_Loader, lengths, 0).batches())
    return {"padded": len(lengths) * max_len, "trimmed": trimmed, "bucketed": bucketed, "valid": int(lengths.sum())}


def step_seconds(model, optimizer, batch, trim):
    model.trim_padding = trim
    start = time.perf_counter()
    optimizer.zero_grad()
    model.calculate_loss(batch).backward()
    optimizer.step()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(MAX_LEN))
    parser.add_argument("--batches", type=int, default=3, help="timed training steps per model and way")
    parser.add_argument("--users", type=int, default=0, help="uniform user subset, for smoke runs (0 = all)")
    parser.add_argument("--batch", type=int, default=2048,
                        help="rows per batch (BiMamba4Rec 2L at 2048 x 200 padded needs ~17 GB)")
    parser.add_argument("--out", default=os.path.join(RESULTS, "padding.json"))
    args = parser.parse_args()
    global BATCH
    BATCH = args.batch

    import torch

    import recbole_mamba.model.bimamba4rec as bimamba_module
    from recbole_mamba.model import all_positions
    from recbole_mamba.registry import get_model

    torch.set_num_threads(1)
    args.out = os.path.abspath(args.out)
    os.makedirs(OUT, exist_ok=True)
    os.chdir(OUT)
    previous = {}
    if os.path.exists(args.out):
        import json

        with open(args.out, encoding="utf-8") as f:
            previous = json.load(f)
    result = {"benchmark": f"padding, length buckets and BiMamba4Rec / Mamba4Rec step cost (prefix mode, batch {BATCH})",
              "batch": BATCH,
              "command": "python bench/padding.py " + " ".join(repo_relative(a) for a in sys.argv[1:]),
              **machine_record(1), "notes": [ML1M_NOTE], "datasets": dict(previous.get("datasets", {})),
              "earlier_pieces": previous.get("earlier_pieces", []) + ([{k: previous[k] for k in
                                ("command", "date_utc", "machine", "batch") if k in previous}] if previous else [])}
    import functools

    pair = bimamba_module.mamba_pair  # the default: on a CPU, one block after the other
    one_scan = functools.partial(pair, grouped=True)

    for dataset in args.datasets:
        data_path, _ = (prepare_ml1m if dataset == "ml-1m" else prepare_games)(args.users)
        config = recbole_config("Mamba4Rec", dataset, protocol(dataset, data_path))
        _, train_data, _, _ = prepared_data(config, dataset)
        inter = train_data._dataset.inter_feat
        lengths = inter["item_length"].numpy()
        rng = np.random.default_rng(0)
        positions = epoch_positions(lengths, BATCH, MAX_LEN[dataset], rng)
        windows = all_positions.window_rows(inter["user_id"].numpy(), MAX_LEN[dataset])
        positions["all_positions_windows"] = int(len(windows))
        positions["all_positions_padded"] = int(len(windows)) * MAX_LEN[dataset]
        order = rng.permutation(len(lengths))
        random_batches = [order[i * BATCH:(i + 1) * BATCH] for i in range(args.batches)]
        loader_stub = type("L", (), {"step": BATCH, "config": {"single_spec": True}})
        every_bucket = all_positions.LengthBucketedLoader(loader_stub, lengths, 1).batches()
        widths = np.array([lengths[b].max() for b in every_bucket])
        # the buckets of median width stand for an epoch of them (step time grows ~linearly with width)
        bucketed_batches = [every_bucket[i] for i in np.argsort(np.abs(widths - np.median(widths)))[: args.batches]]
        ways = {"padded": (random_batches, False), "trimmed": (random_batches, True), "bucketed": (bucketed_batches, True)}
        entry = {"batch": BATCH, "bucket_width_median": float(np.median(widths)), "bucket_width_mean": float(widths.mean()),
                 "rows_per_epoch": int(len(lengths)), "batches_per_epoch": -(-len(lengths) // BATCH),
                 "positions_per_epoch": positions, "mean_batch_width": {}, "step_s": {}, "bimamba_over_mamba": {}}
        for way, (batches, trim) in ways.items():
            entry["mean_batch_width"][way] = float(np.mean([lengths[b].max() if trim else MAX_LEN[dataset] for b in batches]))
        runs = [("Mamba4Rec", 1, pair), ("BiMamba4Rec", 1, pair), ("BiMamba4Rec", 1, one_scan),
                ("Mamba4Rec", 2, pair), ("BiMamba4Rec", 2, pair)]
        for model_name, layers, pairing in runs:
            bimamba_module.mamba_pair = pairing
            key = f"{model_name} {layers}L" + (" (one scan for both directions)" if pairing is not pair else "")
            config = recbole_config(model_name, dataset, {**protocol(dataset, data_path), "num_layers": layers})
            torch.manual_seed(0)
            model = get_model(model_name)(config, train_data._dataset)
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
            entry["step_s"][key] = {}
            if (model_name, layers, pairing) == ("Mamba4Rec", 1, pair):
                way_list = ways
            elif (model_name, layers, pairing) == ("BiMamba4Rec", 2, pair):
                way_list = {w: ways[w] for w in ("padded", "bucketed")}
            else:
                way_list = {"bucketed": ways["bucketed"]}
            for way, (batches, trim) in way_list.items():
                step_seconds(model, optimizer, inter[torch.from_numpy(batches[0][:64])], trim)  # warm-up
                seconds = [step_seconds(model, optimizer, inter[torch.from_numpy(b)], trim) for b in batches]
                entry["step_s"][key][way] = float(np.mean(seconds))
                print(f"{dataset} {key} {way}: {np.mean(seconds):.2f} s/step "
                      f"(width {entry['mean_batch_width'][way]:.0f})", flush=True)
                result["datasets"][dataset] = entry
                save_json(result, args.out)  # after every measurement
        bimamba_module.mamba_pair = pair
        result["datasets"][dataset] = entry
        result["machine"]["loadavg_1_5_15_end"] = list(os.getloadavg())
        save_json(result, args.out)


if __name__ == "__main__":
    main()

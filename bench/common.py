"""Shared pieces of the benchmark scripts: machine/version record, RecBole setup on CPU."""
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SHARED_DATA = os.path.join(os.path.dirname(REPO), "shared", "data")
RESULTS = os.path.join(HERE, "results")
OUT = os.path.join(HERE, "out")  # gitignored: converted data, checkpoints, RecBole logs

if REPO not in sys.path:
    sys.path.insert(0, REPO)

# SPEC §6: the seed paper's full-ranking @10 results at paper scale (GPU)
SEED_PAPER = {
    ("ml-1m", "Mamba4Rec"): {"hit@10": 0.3109, "ndcg@10": 0.1795, "mrr@10": 0.1395},
    ("ml-1m", "BiMamba4Rec"): {"hit@10": 0.3374, "ndcg@10": 0.2006, "mrr@10": 0.1587},
    ("amazon-video-games", "Mamba4Rec"): {"hit@10": 0.1150, "ndcg@10": 0.0612, "mrr@10": 0.0450},
    ("amazon-video-games", "BiMamba4Rec"): {"hit@10": 0.1245, "ndcg@10": 0.0629, "mrr@10": 0.0444},
}
DATASET_TITLES = {"ml-1m": "ML-1M", "amazon-video-games": "Video Games"}


def machine_record(threads):
    """Where and with what a benchmark ran; load average because the cores are shared."""
    import numpy
    import torch
    import recbole

    import recbole_mamba

    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    return {
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpus": os.cpu_count(), "torch_threads": threads, "loadavg_1_5_15": load},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "recbole": recbole.__version__, "numpy": numpy.__version__,
                     "recbole_mamba": recbole_mamba.__version__},
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def recbole_config(model_name, dataset, config_dict):
    """RecBole Config that ignores this process's argv (RecBole parses ``--key=value`` from it)."""
    import recbole_mamba  # noqa: F401  (registers the plugin models)
    from recbole.config import Config

    saved_argv = sys.argv
    sys.argv = sys.argv[:1]
    try:
        return Config(model=model_name, dataset=dataset, config_dict=config_dict)
    finally:
        sys.argv = saved_argv


def mean_std(values):
    """(mean, sample std) of a list; std 0 for one value."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    return mean, (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5


def repo_relative(text):
    """``text`` with this checkout's absolute paths written relative to the repository
    (results are committed; they must not name the machine they ran on)."""
    parent = os.path.dirname(REPO)
    return str(text).replace(REPO + os.sep, "").replace(REPO, ".").replace(parent + os.sep, "../")


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (benchmarks run headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def log_length_axis(ax, lengths):
    """Log-scaled x axis with one plain tick per measured length (no crowded minor labels)."""
    from matplotlib.ticker import NullFormatter, NullLocator

    ax.set_xscale("log")
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(sorted(set(lengths)))
    ax.set_xticklabels([str(n) for n in sorted(set(lengths))])


def bar_plot(path, labels, means, stds, xlabel, title, reference=None, xmin=None):
    """Horizontal bars with ±std whiskers, one per label (top to bottom in order);
    ``xmin`` starts the axis there (bars then start at it too)."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(7, 0.45 * len(labels) + 1.4))
    rows = range(len(labels))[::-1]
    left = 0.0 if xmin is None else xmin
    ax.barh(list(rows), [m - left for m in means], left=left, xerr=stds, capsize=3, color="#3b75af")
    if xmin is not None:
        ax.set_xlim(left=xmin)
    ax.set_yticks(list(rows))
    ax.set_yticklabels(labels, fontsize=8)
    if reference is not None:
        ax.axvline(reference, color="#c44e52", linestyle="--", linewidth=1)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=9)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}", flush=True)


def save_json(result, path):
    import json

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {path}", flush=True)


# ---------------------------------------------------------------- CTR benchmarks (ctr.py, ctr_taobao.py)

def slugify(name):
    """'MDAF (gate, target attention)' -> 'mdaf-gate-target-attention'."""
    return "-".join("".join(c if c.isalnum() else " " for c in name.lower()).split())


def newest_checkpoint(folder, best=False):
    """The most recent RecBole checkpoint (.pth) in ``folder``: what a resumed run continues
    from, a ``save_latest`` state included; with ``best``, the newest best checkpoint."""
    paths = [os.path.join(folder, f) for f in os.listdir(folder)
             if f.endswith(".pth") and not (best and f.endswith("-latest.pth"))]
    return max(paths, key=os.path.getmtime)


def partial_path(out):
    """bench/results/x.json -> bench/results/x.partial.json (finished runs of an unfinished benchmark)."""
    return os.path.splitext(out)[0] + ".partial.json"


def count_trainable(model_name, dataset, files, config_dict):
    """Trainable parameters of ``model_name`` built on ``dataset`` (RecBole's data pipeline)."""
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model

    config = Config(model=model_name, dataset=dataset, config_file_list=files, config_dict=config_dict)
    train, _, _ = data_preparation(config, create_dataset(config))
    model = get_model(model_name)(config, train._dataset)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

"""Hyper-parameter tuning with Ray Tune, in RecBole's params-file format.

    python -m recbole_mamba.tune --model=Mamba4Rec --dataset=ml-100k \\
        [--params_file=props/hyper/Mamba4Rec.hyper] [--config_files="a.yaml b.yaml"] \\
        [--metric=ndcg@10] [--num_samples=8] [--cpus_per_trial=1] [--gpus_per_trial=0] \\
        [--scheduler=asha|fifo] [--address=auto|ray://host:10001] [--output_dir=DIR] [--key=value ...]

(``run_recbole.py --tune ...`` is the same command.)  Every trial trains with
RecBole's own data preparation, model and trainer, the same steps in the same order
as ``run_recbole`` (so its best config reproduces when run again), and reports the
validation metrics after every epoch, which lets ASHA stop bad trials early; a trial
that finishes reports the test metrics of its best epoch last.  Written to
``--output_dir``: ``results.csv`` and ``results.md`` (all trials, best first),
``best_config.yaml`` (for ``run_recbole.py --config_files``) and ``curves.png``
(the metric per epoch per trial).

Params file, one parameter a line (RecBole's format; ``#`` starts a comment)::

    learning_rate loguniform -8,-5      # exp(uniform(-8, -5)), as in RecBole/hyperopt
    dropout_prob uniform 0.1,0.4
    hidden_size quniform 32,128,32      # integer bounds and step: integer values
    num_layers choice [1,2]

Bounds may be separated by commas or spaces.
"""
import argparse
import ast
import contextlib
import math
import os
import sys
import time

import yaml

from recbole_mamba.errors import ConfigError, RecboleMambaError

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
HYPER_DIR = os.path.join(PACKAGE_DIR, "props", "hyper")
PARAM_TYPES = ("choice", "uniform", "quniform", "loguniform")
EPOCH_PREFIX, VALID_PREFIX, TEST_PREFIX = "epoch", "valid_", "test_"


# --------------------------------------------------------------------------- params file
def parse_params_file(path):
    """``{name: (type, values)}`` from a RecBole params file; ConfigError names file and line."""
    if not os.path.isfile(path):
        raise ConfigError(f"params file {path!r} not found; pass --params_file=PATH "
                          f"(examples in {HYPER_DIR})")
    space = {}
    with open(path, "rb") as f:
        for number, raw_bytes in enumerate(f, start=1):
            try:
                raw = raw_bytes.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ConfigError(f"{path} line {number}: not valid UTF-8 ({error.reason}); "
                                  "re-save the params file as UTF-8") from None
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            where = f"{path} line {number}"
            parts = line.split(None, 2)
            if len(parts) < 3:
                raise ConfigError(f"{where}: expected 'name type values' (e.g. 'dropout_prob uniform 0.1,0.4'), "
                                  f"got {line!r}")
            name, kind, text = parts
            if kind not in PARAM_TYPES:
                raise ConfigError(f"{where}: unknown type {kind!r} for {name}; use one of {', '.join(PARAM_TYPES)}")
            if name in space:
                raise ConfigError(f"{where}: {name} is already set above; keep one line per parameter")
            space[name] = (kind, _parse_values(kind, text, where))
    if not space:
        raise ConfigError(f"{path} holds no parameter; add lines like 'learning_rate loguniform -8,-5'")
    return space


def _parse_values(kind, text, where):
    if kind == "choice":
        try:
            values = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise ConfigError(f"{where}: choice needs a Python list, e.g. [64,128] or ['a','b']; got {text!r}") from None
        if not isinstance(values, (list, tuple)) or not values:
            raise ConfigError(f"{where}: choice needs a non-empty list, e.g. [64,128]; got {text!r}")
        return list(values)
    wanted = 3 if kind == "quniform" else 2
    pieces = text.replace(",", " ").split()
    try:
        numbers = [float(p) for p in pieces]
    except ValueError:
        numbers = []
    if len(numbers) != wanted:
        form = "low,high,q" if wanted == 3 else "low,high"
        raise ConfigError(f"{where}: {kind} needs {wanted} numbers ({form}); got {text!r}")
    if numbers[0] >= numbers[1]:
        raise ConfigError(f"{where}: {kind} needs low < high; got {text!r}")
    if kind == "quniform" and numbers[2] <= 0:
        raise ConfigError(f"{where}: quniform needs a step q > 0; got {text!r}")
    return numbers


def search_space(space):
    """Ray Tune domains for :func:`parse_params_file`'s result (RecBole/hyperopt semantics)."""
    from ray import tune

    domains = {}
    for name, (kind, values) in space.items():
        if kind == "choice":
            domains[name] = tune.choice(values)
        elif kind == "uniform":
            domains[name] = tune.uniform(*values)
        elif kind == "loguniform":  # bounds are exponents, as hyperopt's hp.loguniform
            domains[name] = tune.loguniform(math.exp(values[0]), math.exp(values[1]))
        elif all(v == int(v) for v in values):  # quniform on integers: hidden sizes, layers
            domains[name] = tune.qrandint(int(values[0]), int(values[1]), int(values[2]))
        else:
            domains[name] = tune.quniform(*values)
    return domains


def find_params_file(params_file, model):
    """``params_file`` as given, else the packaged ``props/hyper/<name>`` or ``<model>.hyper``."""
    if params_file is None:
        params_file = f"{model}.hyper"
    if os.path.isfile(params_file):
        return os.path.abspath(params_file)
    packaged = os.path.join(HYPER_DIR, os.path.basename(params_file))
    return packaged if os.path.isfile(packaged) else os.path.abspath(params_file)


# --------------------------------------------------------------------------- one trial
def plain(value):
    """numpy scalars -> Python, tuples -> lists (YAML- and CSV-friendly), recursively."""
    if hasattr(value, "item") and type(value).__module__ == "numpy":
        return value.item()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def train_and_test(model, dataset, config_dict, on_epoch=None, saved=True):
    """RecBole's ``run_recbole`` steps, calling ``on_epoch(epoch, train_loss, valid_result)``.

    Same order of seeding, data preparation, model building and FLOPs count (which
    runs the model once and so moves the random state) as ``run_recbole``: the best
    trial's config gives the same numbers under ``run_recbole.py``.
    """
    import logging

    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.data.transform import construct_transform
    from recbole.utils import get_flops, get_model, get_trainer, init_logger, init_seed

    config = Config(model=model, dataset=dataset, config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = logging.getLogger()
    logger.info(config)
    data = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, data)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    net = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    get_flops(net, data, config["device"], logger, construct_transform(config))
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, net)

    # fit()'s callback gets the epoch's valid score only; keep the whole result too
    latest = {}
    valid_epoch = trainer._valid_epoch

    def valid_epoch_kept(*args, **kwargs):
        latest["score"], latest["result"] = valid_epoch(*args, **kwargs)
        return latest["score"], latest["result"]

    trainer._valid_epoch = valid_epoch_kept

    def callback(epoch_idx, valid_score):
        if on_epoch is not None:
            on_epoch(epoch_idx, trainer.train_loss_dict.get(epoch_idx), latest["result"])

    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, saved=saved, show_progress=config["show_progress"], callback_fn=callback)
    test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])
    return {"best_valid_score": best_valid_score, "best_valid_result": best_valid_result,
            "test_result": test_result}


def run_trial(params, fixed):
    """Ray Tune function trainable: one RecBole training, reported epoch by epoch."""
    import recbole_mamba  # noqa: F401  (registers our models in this Ray worker)
    import torch

    from recbole_mamba.compat import tune_report, tune_trial_dir

    sys.argv = sys.argv[:1]  # Ray's worker flags (--node-ip-address=...) are no RecBole config
    torch.set_num_threads(max(1, int(fixed["cpus_per_trial"])))
    config_dict = {**fixed["config_dict"], **plain(params)}
    # own checkpoint folder per trial; Ray assigns the GPU through CUDA_VISIBLE_DEVICES,
    # which RecBole would overwrite with gpu_id
    config_dict["checkpoint_dir"] = os.path.join(tune_trial_dir(), "checkpoints")
    config_dict["gpu_id"] = os.environ.get("CUDA_VISIBLE_DEVICES", "") if fixed["gpus_per_trial"] else ""
    metric = fixed["metric"]

    def report_epoch(epoch_idx, train_loss, valid_result):
        tune_report({EPOCH_PREFIX: epoch_idx + 1, "train_loss": plain(train_loss),
                        **{VALID_PREFIX + k: plain(v) for k, v in valid_result.items()}})

    result = train_and_test(fixed["model"], fixed["dataset"], config_dict, on_epoch=report_epoch)
    best_valid = result["best_valid_result"] or {}
    final = {"final": True, **{VALID_PREFIX + k: plain(v) for k, v in best_valid.items()},
             **{TEST_PREFIX + k: plain(v) for k, v in result["test_result"].items()}}
    final.setdefault(VALID_PREFIX + metric, float("nan"))
    tune_report(final)


# --------------------------------------------------------------------------- the search
@contextlib.contextmanager
def _argv(argv):
    saved = sys.argv
    sys.argv = argv
    try:
        yield
    finally:
        sys.argv = saved


@contextlib.contextmanager
def _keep_env(name):
    # RecBole's Config sets CUDA_VISIBLE_DEVICES=gpu_id; the Ray node started later
    # must still see every GPU
    saved = os.environ.get(name)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved


def resolve_config(model, dataset, config_file_list=None, config_dict=None, cmd_args=()):
    """The run's fixed config (files < config_dict < ``--key=value``) as one plain dict,
    with relative paths made absolute, plus RecBole's full Config for defaults."""
    import recbole_mamba  # noqa: F401
    from recbole.config import Config

    files = [os.path.abspath(f) for f in config_file_list or []]
    with _argv([sys.argv[0], *cmd_args]), _keep_env("CUDA_VISIBLE_DEVICES"):
        config = Config(model=model, dataset=dataset, config_file_list=files or None,
                        config_dict=dict(config_dict or {}))
    fixed = {**config.file_config_dict, **config.variable_config_dict, **config.cmd_config_dict}
    for key in ("model", "dataset", "checkpoint_dir"):  # checkpoint_dir: one per trial instead
        fixed.pop(key, None)
    if dataset != "ml-100k":  # Ray runs each trial in its own folder: data_path made absolute
        fixed["data_path"] = os.path.dirname(os.path.abspath(config["data_path"]))
    return plain(fixed), config


def _metric_and_mode(metric, config):
    from recbole.evaluator.register import smaller_metrics

    metric = (metric or config["valid_metric"]).lower()
    name, _, k = metric.partition("@")
    metrics = [m.lower() for m in (config["metrics"] if isinstance(config["metrics"], list) else [config["metrics"]])]
    topk = config["topk"] if isinstance(config["topk"], list) else [config["topk"]]
    if name not in metrics or (k and (not k.isdigit() or int(k) not in topk)):
        raise ConfigError(f"metric {metric!r} is not evaluated (metrics={config['metrics']}, topk={config['topk']}); "
                          "choose one of those or add it with --metrics/--topk")
    return metric, ("min" if name in smaller_metrics else "max")


def _init_ray(address, num_cpus=None):
    import ray

    if ray.is_initialized():
        return False
    if address:  # an existing cluster: ship this package to its workers
        ray.init(address=address, runtime_env={"py_modules": [PACKAGE_DIR]})
    else:  # local: workers import recbole_mamba from this checkout, installed or not; a new
        # instance even when `ray start` left a cluster on this machine (use --address=auto for that)
        path = os.pathsep.join(p for p in (os.path.dirname(PACKAGE_DIR), os.environ.get("PYTHONPATH")) if p)
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                 runtime_env={"env_vars": {"PYTHONPATH": path}})
    return True


def tune(model, dataset, params_file=None, config_file_list=None, config_dict=None, metric=None,
         num_samples=8, cpus_per_trial=None, gpus_per_trial=None, scheduler="asha", address=None,
         output_dir=None, cmd_args=()):
    """Run the search; returns ``{"rows", "best", "files", "metric", "mode"}`` (see the module doc)."""
    space = parse_params_file(find_params_file(params_file, model))
    fixed_config, config = resolve_config(model, dataset, config_file_list, config_dict, cmd_args)
    metric, mode = _metric_and_mode(metric, config)
    if metric != config["valid_metric"].lower():  # best epoch and early stopping by the tuned metric too
        fixed_config["valid_metric"] = metric
        fixed_config["valid_metric_bigger"] = mode == "max"
    if scheduler not in ("asha", "fifo"):
        raise ConfigError(f"scheduler={scheduler!r} is not supported; use asha or fifo")
    output_dir = os.path.abspath(output_dir or os.path.join(
        "tune_results", f"{model}-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"))
    os.makedirs(output_dir, exist_ok=True)

    import ray
    from ray import tune as ray_tune

    from recbole_mamba.compat import tune_run_config
    from ray.tune.schedulers import ASHAScheduler

    started = _init_ray(address)
    try:
        resources = ray.cluster_resources()
        if gpus_per_trial is None:
            gpus_per_trial = 1 if resources.get("GPU", 0) >= 1 else 0
        if cpus_per_trial is None:
            gpus = resources.get("GPU", 0)
            cpus_per_trial = max(1, int(resources.get("CPU", 1) // gpus)) if gpus_per_trial and gpus else 1
        fixed = {"model": model, "dataset": dataset, "config_dict": fixed_config, "metric": metric,
                 "cpus_per_trial": cpus_per_trial, "gpus_per_trial": gpus_per_trial}
        epochs = int(config["epochs"])
        # the final (test) report is one iteration past the last epoch: ASHA must not
        # stop a trial that has finished its epochs before it reports its test metrics
        asha = ASHAScheduler(time_attr="training_iteration", max_t=epochs + 1, grace_period=1, reduction_factor=2)
        trainable = ray_tune.with_resources(ray_tune.with_parameters(run_trial, fixed=fixed),
                                            {"cpu": cpus_per_trial, "gpu": gpus_per_trial})
        tuner = ray_tune.Tuner(
            trainable,
            param_space=search_space(space),
            tune_config=ray_tune.TuneConfig(metric=VALID_PREFIX + metric, mode=mode, num_samples=num_samples,
                                            scheduler=asha if scheduler == "asha" else None, reuse_actors=False),
            run_config=tune_run_config(name="ray", storage_path=output_dir, verbose=1, max_failures=0),
        )
        grid = tuner.fit()
    finally:
        if started:
            ray.shutdown()

    rows, curves = collect(grid, list(space), metric, mode)
    if not any(row["status"] == "completed" for row in rows):
        errors = [row["error"] for row in rows if row["error"]]
        raise RecboleMambaError(f"no trial finished ({len(rows)} run); first error: "
                                f"{errors[0] if errors else 'none reported'}; see {output_dir}/ray")
    best = rows[0]
    files = write_outputs(output_dir, rows, curves, best, model, dataset, fixed_config, metric, scheduler)
    return {"rows": rows, "best": best, "files": files, "metric": metric, "mode": mode}


# --------------------------------------------------------------------------- results
def collect(grid, param_names, metric, mode):
    """Rows (best first) and per-trial metric curves from Ray's ResultGrid."""
    key = VALID_PREFIX + metric
    rows, curves = [], {}
    for result in grid:
        frame = result.metrics_dataframe
        trial_id = str(result.metrics.get("trial_id") or os.path.basename(str(result.log_dir)))
        epochs = frame[frame[EPOCH_PREFIX].notna()] if frame is not None and EPOCH_PREFIX in frame else None
        curve = [] if epochs is None else [(int(e), float(v)) for e, v in zip(epochs[EPOCH_PREFIX], epochs[key])]
        curves[trial_id] = curve
        # Ray's progress.csv keeps the first report's columns only: the test metrics of
        # the final report are read from the last result instead
        last = result.metrics or {}
        finished = bool(last.get("final"))
        row = {"trial": trial_id, "status": "completed" if finished else "error" if result.error else "stopped early",
               "epochs": len(curve), **{name: plain(result.config.get(name)) for name in param_names}}
        values = [v for _, v in curve if v == v]
        row[key] = (max(values) if mode == "max" else min(values)) if values else float("nan")
        if finished:
            row.update({k: plain(v) for k, v in last.items() if k.startswith(TEST_PREFIX)})
        row["error"] = str(result.error).strip().splitlines()[-1] if result.error else ""
        row["config"] = plain(dict(result.config))
        rows.append(row)
    sign = -1 if mode == "max" else 1
    rows.sort(key=lambda r: (r[key] != r[key], sign * r[key] if r[key] == r[key] else 0))
    return rows, curves


def _columns(rows):
    columns = []
    for row in rows:
        columns += [c for c in row if c not in columns and c not in ("config", "error")]
    if any(r["error"] for r in rows):
        columns.append("error")
    return columns


def _cell(value):
    if isinstance(value, float):
        return "" if value != value else f"{value:.4g}"
    return "" if value is None else str(value)


def markdown_table(rows):
    columns = _columns(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_outputs(output_dir, rows, curves, best, model, dataset, fixed_config, metric, scheduler):
    import csv

    files = {name: os.path.join(output_dir, name)
             for name in ("results.csv", "results.md", "best_config.yaml", "curves.png")}
    columns = _columns(rows)
    with open(files["results.csv"], "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows([["" if row.get(c) != row.get(c) else row.get(c, "") for c in columns] for row in rows])
    title = (f"{model} on {dataset}: {len(rows)} trials ({scheduler}), sorted by best valid {metric}; "
             "test_* are the best epoch's test metrics of trials that finished")
    with open(files["results.md"], "w", encoding="utf-8") as f:
        f.write(f"{title}\n\n{markdown_table(rows)}\n")

    best_config = {"model": model, "dataset": dataset, **fixed_config, **best["config"]}
    header = (f"# Best of {len(rows)} Ray Tune trials ({best['trial']}): valid {metric} = {best[VALID_PREFIX + metric]:.4g}"
              f", test {metric} = {best.get(TEST_PREFIX + metric, float('nan')):.4g}\n"
              f"# python run_recbole.py --model={model} --dataset={dataset} --config_files={files['best_config.yaml']}\n")
    with open(files["best_config.yaml"], "w", encoding="utf-8") as f:
        f.write(header + yaml.safe_dump(best_config, sort_keys=False))

    plot_curves(files["curves.png"], curves, rows, metric, f"{model} on {dataset}")
    return files


def plot_curves(path, curves, rows, metric, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    status = {row["trial"]: row["status"] for row in rows}
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for trial, curve in curves.items():
        if curve:
            epochs, values = zip(*curve)
            ax.plot(epochs, values, marker="o", linestyle="-" if status.get(trial) == "completed" else "--",
                    label=f"{trial} ({status.get(trial)})")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"valid {metric}")
    ax.set_title(title)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- command line
def build_parser(prog="python -m recbole_mamba.tune"):
    parser = argparse.ArgumentParser(prog=prog, description="Tune a RecBole model with Ray Tune "
                                     "(any other --key=value is a fixed RecBole config value).")
    parser.add_argument("--model", "-m", default="BiMamba4Rec")
    parser.add_argument("--dataset", "-d", default="ml-100k")
    parser.add_argument("--config_files", default=None, help="space-separated config files")
    parser.add_argument("--params_file", default=None, help="RecBole params file (default: props/hyper/<model>.hyper)")
    parser.add_argument("--metric", default=None, help="metric to optimise, e.g. ndcg@10 (default: valid_metric)")
    parser.add_argument("--num_samples", type=int, default=8, help="number of trials")
    parser.add_argument("--cpus_per_trial", type=float, default=None, help="default: 1 (CPU share per GPU with GPUs)")
    parser.add_argument("--gpus_per_trial", type=float, default=None, help="default: 1 if the cluster has GPUs, else 0")
    parser.add_argument("--scheduler", default="asha", choices=("asha", "fifo"))
    parser.add_argument("--address", default=None, help="existing Ray cluster: auto or ray://host:10001")
    parser.add_argument("--output_dir", default=None, help="default: tune_results/<model>-<dataset>-<time>")
    return parser


def main(argv=None, prog="python -m recbole_mamba.tune"):
    argv = sys.argv[1:] if argv is None else argv
    args, rest = build_parser(prog).parse_known_args(argv)
    try:
        summary = tune(args.model, args.dataset, params_file=args.params_file,
                       config_file_list=args.config_files.split() if args.config_files else None,
                       metric=args.metric, num_samples=args.num_samples, cpus_per_trial=args.cpus_per_trial,
                       gpus_per_trial=args.gpus_per_trial, scheduler=args.scheduler, address=args.address,
                       output_dir=args.output_dir, cmd_args=rest)
    except RecboleMambaError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2)
    print(markdown_table(summary["rows"]))
    for name, path in summary["files"].items():
        print(f"{name}: {path}")
    return summary


if __name__ == "__main__":
    main()

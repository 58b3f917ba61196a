"""``run_recbole.py``: RecBole's command line with recbole-mamba's models registered.

Same flags as RecBole's own ``run_recbole.py`` (``--model``, ``--dataset``,
``--config_files``, ``--nproc``, ``--ip``, ``--port``, ``--world_size``,
``--group_offset``); every other ``--key=value`` goes to RecBole's Config as usual.
``--recommend`` switches to top-k inference from a checkpoint (:mod:`recbole_mamba.infer`),
``--tune`` to hyper-parameter tuning with Ray Tune (:mod:`recbole_mamba.tune`).
"""
import argparse
import sys

DEFAULT_MODEL = "BiMamba4Rec"
DEFAULT_DATASET = "ml-100k"  # ships inside RecBole's wheel: no download


def build_parser():
    parser = argparse.ArgumentParser(
        prog="run_recbole.py",
        description="Train and test a RecBole model; recbole-mamba's models included.",
    )
    parser.add_argument("--model", "-m", type=str, default=DEFAULT_MODEL, help="model name")
    parser.add_argument("--dataset", "-d", type=str, default=DEFAULT_DATASET, help="dataset name")
    parser.add_argument("--config_files", type=str, default=None, help="space-separated config files")
    parser.add_argument("--nproc", type=int, default=1, help="processes for distributed training")
    parser.add_argument("--ip", type=str, default="localhost", help="master address")
    parser.add_argument("--port", type=str, default="5678", help="master port")
    parser.add_argument("--world_size", type=int, default=-1, help="total processes")
    parser.add_argument("--group_offset", type=int, default=0, help="global rank offset of this node")
    return parser


def main(argv=None):
    if argv is not None:
        # RecBole's Config reads --key=value from sys.argv itself: a list passed here
        # must be what it reads
        saved_argv = sys.argv
        sys.argv = [saved_argv[0] if saved_argv else "run_recbole.py", *argv]
        try:
            return main()
        finally:
            sys.argv = saved_argv
    argv = sys.argv[1:]
    if "--recommend" in argv:
        from recbole_mamba.infer import main as recommend

        return recommend([a for a in argv if a != "--recommend"], prog="run_recbole.py --recommend")
    if "--tune" in argv:
        from recbole_mamba.tune import main as tune

        return tune([a for a in argv if a != "--tune"], prog="run_recbole.py --tune")
    args, _ = build_parser().parse_known_args(argv)

    import recbole_mamba  # noqa: F401  (registers the models, applies the compat fixes)
    from recbole.quick_start import run
    from recbole_mamba.errors import RecboleMambaError

    config_files = args.config_files.strip().split(" ") if args.config_files else None
    try:
        return run(
            args.model,
            args.dataset,
            config_file_list=config_files,
            nproc=args.nproc,
            world_size=args.world_size,
            ip=args.ip,
            port=args.port,
            group_offset=args.group_offset,
        )
    except RecboleMambaError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2)


if __name__ == "__main__":
    main()

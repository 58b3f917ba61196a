"""``python -m recbole_mamba.data``: one subcommand per raw format."""
import argparse
import sys

from recbole_mamba.errors import RecboleMambaError


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m recbole_mamba.data",
                                     description="Convert raw recommendation data to RecBole atomic files.")
    commands = parser.add_subparsers(dest="converter", required=True)

    def add(name, help_text, input_help, default_dataset=None):
        command = commands.add_parser(name, help=help_text, description=help_text)
        command.add_argument("input", help=input_help)
        command.add_argument("--dataset", default=default_dataset, required=default_dataset is None,
                             help="dataset name: files go to OUT_DIR/NAME/NAME.inter"
                                  + (f" (default {default_dataset})" if default_dataset else ""))
        command.add_argument("--out-dir", default="dataset", help="RecBole data_path (default ./dataset)")
        command.add_argument("--quiet", action="store_true", help="no progress bars")
        return command

    add("ml1m", "MovieLens-1M ratings.dat/movies.dat/users.dat", "folder holding the .dat files", "ml-1m")
    amazon = add("amazon", "Amazon ratings CSV or 5-core review JSON lines (.json / .json.gz)",
                 "ratings_<Category>.csv, <Category>.csv or <Category>_5.json[.gz]")
    amazon.add_argument("--columns", default="user,item,rating,timestamp",
                        help="CSV column order (2018 ratings CSV: item,user,rating,timestamp)")
    add("seqfile", "time-ordered sequence file ('user item' per line or 'user item item ...')",
        "sequence file (e.g. SASRec's data/Video.txt)")
    taobao = add("taobao", "Taobao UserBehavior.csv for the sequential models", "UserBehavior.csv", "taobao")
    taobao.add_argument("--behaviors", default="pv,buy,cart,fav", help="behaviours kept (default all)")
    taobao.add_argument("--keep-all-times", action="store_true",
                        help="keep rows outside the documented 2017-11-25..12-03 window")
    session = add("session", "session files of the official GRU4Rec format (SessionId<TAB>ItemId<TAB>Time, split "
                  "by time) or Diginetica's train-item-views.csv, as RecBole benchmark files plus the protocol YAML",
                  "training sessions (or Diginetica's train-item-views.csv with --format diginetica)")
    session.add_argument("--test", default=None, help="test sessions, same format (rsc15 format)")
    session.add_argument("--valid", default=None, help="held-out validation sessions (default: a monitor, see docs)")
    session.add_argument("--format", dest="fmt", choices=("rsc15", "diginetica"), default="rsc15")
    session.add_argument("--test-days", type=int, default=7, help="diginetica: the last days' sessions are the test set")
    session.add_argument("--max-len", type=int, default=None, help="item_id_list length (default: the longest session)")
    rating_ctr = add("rating-ctr", "ratings as sequence-aware CTR rows for MDAF / DCNv3 (label rating >= threshold, "
                     "history = earlier ratings), the .user / .item files copied", "a RecBole .inter with rating "
                     "and timestamp (e.g. ml-100k.inter)")
    rating_ctr.add_argument("--threshold", type=float, default=4, help="label 1 when rating >= this (default 4)")
    rating_ctr.add_argument("--history", type=int, default=50, help="earlier ratings kept per row (default 50)")
    return parser


def run(argv=None):
    args = build_parser().parse_args(argv)
    progress = not args.quiet
    if args.converter == "ml1m":
        from recbole_mamba.data import ml1m

        return ml1m.convert(args.input, args.out_dir, args.dataset, progress)
    if args.converter == "amazon":
        from recbole_mamba.data import amazon

        return amazon.convert(args.input, args.dataset, args.out_dir, args.columns, progress)
    if args.converter == "session":
        from recbole_mamba.data import session

        if args.fmt == "rsc15" and not args.test:
            raise RecboleMambaError("session: --test is required for the SessionId/ItemId/Time format; "
                                    "pass the test file split by time")
        return session.convert(args.input, args.test, args.dataset, args.out_dir, args.valid, args.max_len, args.fmt,
                               args.test_days, progress=progress)
    if args.converter == "rating-ctr":
        from recbole_mamba.data import ctr

        return ctr.convert_ratings(args.input, args.dataset, args.out_dir, args.threshold, args.history, progress)
    if args.converter == "seqfile":
        from recbole_mamba.data import seqfile

        return seqfile.convert(args.input, args.dataset, args.out_dir, progress)
    from recbole_mamba.data import taobao

    window = None if args.keep_all_times else taobao.TIME_WINDOW
    behaviors = [b.strip() for b in args.behaviors.split(",") if b.strip()]
    return taobao.convert(args.input, args.dataset, args.out_dir, behaviors, window, progress)


def main(argv=None):
    try:
        summary = run(argv)
    except (RecboleMambaError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2)
    print(summary)


if __name__ == "__main__":
    main()

"""Fuzz every file reader with malformed input (hypothesis): one-line error or a correct result.

    python bench/fuzz.py                      # 300 cases per entry point -> bench/results/fuzz.json
    python bench/fuzz.py --examples 30 --out bench/out/fuzz_smoke.json

Entry points: the atomic-file check RecBole's loads go through, the converters (ml1m,
amazon CSV and JSON, seqfile, taobao, ctr) and the Ray params-file parser.  Files are
generated from valid lines of each format, then mutated: truncated lines, wrong field
counts, bad encodings, empty files, huge ids, NaN / infinite / negative timestamps,
garbage bytes.  A case passes when the entry point returns (its result checked for what
must hold: every written row has the fields the format needs and finite timestamps) or
raises a :class:`~recbole_mamba.errors.RecboleMambaError` with a one-line message; any
other exception, or a multi-line message, is a failure.  ``tests/test_fuzz.py`` runs the
same harness with fewer cases.
"""
import argparse
import json
import math
import os
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def _strategies():
    from hypothesis import strategies as st

    ids = st.one_of(st.integers(0, 40).map(str), st.just(str(10**30)), st.just(""), st.just("-3"),
                    st.text(alphabet="abcé\t:,\" ", max_size=4))
    numbers = st.one_of(st.integers(-10**12, 10**12).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
                        st.sampled_from(["nan", "NaN", "inf", "-inf", "-1", "", "1e400", "x"]))
    return st, ids, numbers


def _file_bytes(st, line_strategy, header=None):
    """A file: mutated lines of a format, or an empty / garbage / badly encoded file."""
    mutation = st.sampled_from(["keep", "keep", "keep", "truncate", "drop_field", "extra_field", "garbage"])

    def mutate(pair):
        (line, sep), how = pair
        if how == "truncate":
            return line[: max(0, len(line) // 2)]
        if how == "drop_field":
            return sep.join(line.split(sep)[:-1])
        if how == "extra_field":
            return line + sep + "7"
        if how == "garbage":
            return "\x00é\ufffd" + line[::-1]
        return line

    lines = st.lists(st.tuples(line_strategy, mutation).map(mutate), max_size=25)
    text = lines.map(lambda ls: "\n".join(([header] if header else []) + ls) + ("\n" if ls else ""))
    encoded = text.map(lambda t: t.encode("utf-8"))
    badly_encoded = st.tuples(text, st.binary(min_size=1, max_size=4)).map(
        lambda p: p[0].encode("utf-8") + b"\xff\xfe" + p[1] + b"\n")
    return st.one_of(encoded, encoded, encoded, badly_encoded, st.just(b""), st.binary(max_size=120))


def entry_points():
    """name -> (file strategy, function(path, out_dir) -> result)."""
    import numpy as np

    from recbole_mamba import datasets
    from recbole_mamba.data import amazon, ctr, ml1m, seqfile, taobao
    from recbole_mamba.tune import parse_params_file

    st, ids, numbers = _strategies()
    behaviors = st.sampled_from(["pv", "buy", "cart", "fav", "click"])

    def csv(*fields, sep=","):
        return st.tuples(*fields).map(lambda f: (sep.join(f), sep))

    def finite_times(result, out_dir, name, column=-1):
        """Every written row of <name>.inter has a finite timestamp (NaN must not reach RecBole)."""
        path = os.path.join(out_dir, name, f"{name}.inter")
        if not os.path.exists(path):
            return result
        with open(path, encoding="utf-8") as f:
            header = f.readline().rstrip("\n").split("\t")
            index = [i for i, h in enumerate(header) if h.startswith("timestamp")]
            for line in f:
                parts = line.rstrip("\n").split("\t")
                assert len(parts) == len(header), f"row with {len(parts)} fields in {name}.inter"
                for i in index:
                    assert math.isfinite(float(parts[i])), f"non-finite timestamp {parts[i]!r} written"
        return result

    def ml1m_run(path, out):
        raw = os.path.dirname(path)
        os.replace(path, os.path.join(raw, "ratings.dat"))
        return finite_times(ml1m.convert(raw, out, "ml-1m", progress=False), out, "ml-1m")

    json_review = st.tuples(ids, ids, numbers, numbers).map(lambda f: (json.dumps(
        {"reviewerID": f[0], "asin": f[1], "overall": f[2], "unixReviewTime": f[3]}), ","))
    valid_params = st.sampled_from(["learning_rate loguniform -8,-5", "dropout_prob uniform 0.1,0.4",
                                    "hidden_size quniform 32,128,32", "num_layers choice [1,2]",
                                    "loss_type choice ['CE','BPR']"]).map(lambda line: (line, " "))
    params_line = st.one_of(
        valid_params, valid_params, valid_params,
        st.tuples(st.sampled_from(["learning_rate", "dropout_prob", "hidden_size", "num_layers", "x y"]),
                  st.sampled_from(["loguniform", "uniform", "quniform", "choice", "normal", ""]),
                  st.one_of(st.sampled_from(["-8,-5", "0.1,0.4", "32,128,32", "[1,2]", "['a','b']", "[", "1,",
                                             "nan,inf", "5,1", "[1e400]", "__import__('os')"]),
                            st.text(max_size=6))).map(lambda f: (" ".join(f), " ")))
    return {
        "atomic_reader": (
            _file_bytes(st, csv(ids, ids, numbers, numbers, sep="\t"),
                        header="user_id:token\titem_id:token\trating:float\ttimestamp:float"),
            lambda path, out: datasets.check_atomic_file(path, wanted=None, required=(("user_id", "USER_ID_FIELD"),))),
        "ml1m": (_file_bytes(st, csv(ids, ids, numbers, numbers, sep="::")), ml1m_run),
        "amazon_csv": (_file_bytes(st, csv(ids, ids, numbers, numbers)),
                       lambda path, out: finite_times(amazon.convert(path, "a", out, progress=False), out, "a")),
        "amazon_json": (_file_bytes(st, json_review),
                        lambda path, out: finite_times(amazon.convert(path, "a", out, progress=False), out, "a")),
        "seqfile": (_file_bytes(st, st.lists(ids, min_size=1, max_size=6).map(lambda f: (" ".join(f), " "))),
                    lambda path, out: finite_times(seqfile.convert(path, "s", out, progress=False), out, "s")),
        "taobao": (_file_bytes(st, csv(ids, ids, ids, behaviors, numbers)),
                   lambda path, out: finite_times(taobao.convert(path, "t", out, progress=False), out, "t")),
        "ctr": (_file_bytes(st, csv(ids, ids, ids, behaviors, numbers)),
                lambda path, out: finite_times(ctr.convert(path, "c", out, history=3, progress=False), out, "c")),
        "params_file": (_file_bytes(st, params_line), lambda path, out: parse_params_file(path)),
    }


def fuzz(examples, names=None, seed=0):
    """Run every entry point on ``examples`` generated files; counts and failure samples."""
    from hypothesis import HealthCheck, given, seed as hypothesis_seed, settings

    from recbole_mamba.errors import RecboleMambaError

    results = {}
    for name, (files, run) in entry_points().items():
        if names and name not in names:
            continue
        counts = {"cases": 0, "correct_result": 0, "one_line_error": 0, "failures": 0, "failure_samples": []}

        @hypothesis_seed(seed)
        @settings(max_examples=examples, deadline=None, database=None, derandomize=False,
                  suppress_health_check=list(HealthCheck))
        @given(content=files)
        def case(content):
            counts["cases"] += 1
            with tempfile.TemporaryDirectory() as folder:
                raw = os.path.join(folder, "raw")
                os.makedirs(raw)
                path = os.path.join(raw, "input.txt")
                with open(path, "wb") as f:
                    f.write(content)
                try:
                    run(path, os.path.join(folder, "out"))
                    counts["correct_result"] += 1
                except RecboleMambaError as error:
                    if "\n" in str(error) or not str(error).strip():
                        raise AssertionError(f"not a one-line error: {str(error)!r}")
                    counts["one_line_error"] += 1
                except Exception as error:  # noqa: BLE001 - any other exception is the finding
                    counts["failures"] += 1
                    if len(counts["failure_samples"]) < 3:
                        counts["failure_samples"].append({
                            "input": content[:200].decode("utf-8", "backslashreplace"),
                            "error": f"{type(error).__name__}: {error}"[:300],
                            "where": traceback.format_exc().strip().splitlines()[-3][:200]})

        case()
        results[name] = counts
        print(f"{name:14s} {counts['cases']:5d} cases: {counts['correct_result']} results, "
              f"{counts['one_line_error']} one-line errors, {counts['failures']} failures", flush=True)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=300)
    parser.add_argument("--only", nargs="*", help="entry point names")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "fuzz.json"))
    args = parser.parse_args()
    start = time.perf_counter()
    results = fuzz(args.examples, args.only)
    import hypothesis

    out = {"benchmark": "fuzzed readers (hypothesis)", "command": "python bench/fuzz.py " + " ".join(sys.argv[1:]),
           "hypothesis": hypothesis.__version__, "examples_per_entry_point": args.examples,
           "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "wall_s": time.perf_counter() - start,
           "entry_points": results, "total_cases": sum(r["cases"] for r in results.values()),
           "total_failures": sum(r["failures"] for r in results.values())}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    print(f"wrote {args.out}: {out['total_cases']} cases, {out['total_failures']} failures")
    return 1 if out["total_failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())

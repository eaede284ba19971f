"""Build the papers' tables from results.json files; with --run, launch the missing runs first.

    crt report table table-s7 --run --seeds 0,1,2 --data-dir ../shared/data
    crt report table table1 --run --profile smoke --seeds 0,1
    crt report table table-lt --run --profile smoke --seeds 0
    crt report table all             # rebuild every table from what is on disk

(In a checkout, `python scripts/make_tables.py ...` is the same command.)

Tables go to <output-dir>/tables/<name>.{md,tex,csv}; runs live under <output-dir>/runs (see docs/reproduce.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from crt.errors import ConfigError
from crt.report import longtail as LT
from crt.report import tables as T

TABLES = ("table1", "table-s1", "table-s7", "table-lt", "table-lt-small")


def _words(s: str | None, default: tuple[str, ...]) -> list[str]:
    return [w for w in (s or "").replace(",", " ").split() if w] or list(default)


def build(name: str, args: argparse.Namespace) -> int:
    """Run (with --run) and build one table; returns the number of failed multiruns."""
    out = Path(args.output_dir)
    runs_root, tables_dir = out / "runs", out / "tables"
    data_dir = args.data_dir or os.environ.get("CRT_DATA_DIR", "data")
    failed = 0
    if name == "table1":
        datasets, methods = _words(args.datasets, T.T1_DATASETS), _words(args.methods, T.T1_METHODS)
        spec = T.table1_spec(datasets, methods, args.profile, args.seeds)
        if args.run:
            status, failed = T.run_table1(datasets, methods, args.seeds, args.profile, str(out), data_dir,
                                          args.extra, args.dry_run)
            T.write_status(tables_dir, spec.name, status)
    elif name == "table-s7":
        methods = _words(args.methods, T.S7_METHODS)
        spec = T.table_s7_spec(methods, args.seeds)
        if args.run:
            exps = [f"table_s7_{k}_{m}" for k in (1, 5) for m in methods if T.has_config("method", m)]
            status, failed = T.run_cells(spec.name, exps, "mnist", args.seeds, str(out), data_dir, args.extra,
                                         args.dry_run)
            T.write_status(tables_dir, spec.name, status)
    elif name == "table-s1":
        spec = T.table_s1_spec(args.seeds, runs_root)
        if args.run:
            exps = [f"table_s1_{m}" for m in T.S1_METHODS]
            status, failed = T.run_cells(spec.name, exps, "toy_extreme", args.seeds, str(out), data_dir,
                                         args.extra, args.dry_run)
            T.write_status(tables_dir, spec.name, status)
    elif name == "table-lt":
        methods = _words(args.methods, LT.LT_METHODS)
        spec = LT.table_lt_spec(methods, args.profile, args.seeds)
        if args.run:
            status, failed = LT.run_table_lt(methods, args.seeds, args.profile, str(out), data_dir, args.extra,
                                             args.dry_run)
            T.write_status(tables_dir, spec.name, status)
    elif name == "table-lt-small":
        spec = LT.table_lt_small_spec(args.seeds)
        if args.run:
            status, failed = LT.run_table_lt_small(args.seeds, str(out), data_dir, args.extra, args.dry_run)
            T.write_status(tables_dir, spec.name, status)
    else:
        raise ConfigError(f"Unknown table {name!r}. Fix: choose one of {', '.join(TABLES)} or all.")
    status = T.read_status(tables_dir, spec.name)
    spec.notes += [f"{d}: {why}" for d, why in status.items()]
    df = T.aggregate(spec, T.find_runs(runs_root), status=status)
    paths = T.write_table(df, spec, tables_dir)
    print(T.to_markdown(df, spec))
    print("wrote " + ", ".join(map(str, paths)))
    return failed


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("table", choices=[*TABLES, "all"])
    p.add_argument("--run", action="store_true", help="launch the table's runs first (finished ones are skipped)")
    p.add_argument("--dry-run", action="store_true", help="with --run: print the crt run commands only")
    p.add_argument("--profile", default="full", choices=["full", "smoke", "scale"],
                   help="table1, table-lt: full or smoke; table1 also scale (scripts/scale_probe.py's runs)")
    p.add_argument("--datasets", default=None, help="table1: datasets (default: all five)")
    p.add_argument("--methods", default=None, help="methods (default: the table's)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    p.add_argument("--output-dir", default="outputs", help="paths.output_dir of the runs")
    p.add_argument("--data-dir", default=None, help="paths.data_dir (default: $CRT_DATA_DIR or data)")
    p.add_argument("--extra", nargs="*", default=[], help="more run.py overrides, e.g. trainer=gpu")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        failed = sum(build(t, args) for t in (TABLES if args.table == "all" else [args.table]))
    except ConfigError as err:
        print(f"\nerror: {err}\n", file=sys.stderr)
        return 2
    if failed:
        print(f"{failed} multirun(s) failed: their cells say 'n/a: run failed or unfinished'", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

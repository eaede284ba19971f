"""`crt report` (`python -m crt.report`): `summarize <folder>` (mean ± std over seeds of the runs under a folder)
and `table <name> [--run ...]` (the papers' tables, crt/report/build.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from crt.report.summary import summarize_folder


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["table"]:
        from crt.report.build import main as table

        return table(argv[1:], prog="crt report table")
    p = argparse.ArgumentParser(prog="crt report", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("table", help="the papers' tables: crt report table --help", add_help=False)
    s = sub.add_parser("summarize", help="table of mean ± std over seeds, grouped by the other overrides")
    s.add_argument("folder", help="a sweep folder (outputs/sweeps/<time>) or any folder holding run folders")
    args = p.parse_args(argv)
    folder = Path(args.folder)
    if not folder.is_dir():
        print(f"error: {folder} is not a folder. Fix: pass a sweep folder or a folder of runs (e.g. outputs/runs).",
              file=sys.stderr)
        return 2
    df, md = summarize_folder(folder)
    print(md, end="")
    print(f"{len(df)} group(s); written: {folder / 'summary.csv'}, {folder / 'summary.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Learning-efficiency grid on the Hénon toy (ECRT fig. 9, CRT fig. 11), in one process; see crt/report/efficiency.py.

    python scripts/efficiency.py                      # the full grid -> outputs/efficiency/{efficiency.csv,efficiency.md}
    python scripts/efficiency.py --profile smoke      # CI: 2 minority sizes, 1 majority size, 1 replicate, debug=tiny
    python scripts/efficiency.py --minority 5 200 --majority 400 --replicates 0 --variants ecrt_mp   # one slice

Cells already on disk are skipped, so an interrupted grid resumes; `make figures` draws from the CSV.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from crt.report.efficiency import PROFILES, VARIANTS, Runner, write_report  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="full", choices=sorted(PROFILES))
    p.add_argument("--output-dir", default="outputs", help="cells go to <it>/efficiency[_<profile>]/")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--minority", type=int, nargs="*", help="minority sizes n (replace the profile's)")
    p.add_argument("--majority", type=int, nargs="*", help="majority sizes N")
    p.add_argument("--replicates", type=int, nargs="*", help="replicates r (data_seed = seed = r)")
    p.add_argument("--variants", nargs="*", choices=sorted(VARIANTS))
    p.add_argument("--extra", nargs="*", default=[], help="more overrides for every cell (a different experiment: "
                   "use another --output-dir)")
    args = p.parse_args(argv)
    grid = PROFILES[args.profile]
    for key, val in (("minority", args.minority), ("majority", args.majority), ("replicates", args.replicates),
                     ("variants", args.variants)):
        if val:
            grid = replace(grid, **{key: tuple(val)})
    if args.extra:
        grid = replace(grid, overrides=(*grid.overrides, *args.extra))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    out = Path(args.output_dir) / ("efficiency" if args.profile == "full" else f"efficiency_{args.profile}")
    t0 = time.perf_counter()
    df = Runner(grid, out, data_dir=args.data_dir, cache_dir=str(Path(args.output_dir) / "cache")).run()
    path = write_report(df, out, grid)
    print(f"{len(df)} cells in {out / 'efficiency.csv'}; {path} ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

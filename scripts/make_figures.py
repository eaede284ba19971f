"""Draw the papers' figures (PNG and PDF) from the run folders under <output-dir>/runs.

    python scripts/make_figures.py                     # every figure whose runs exist
    python scripts/make_figures.py --only tsne mmd     # figures whose names start with these
    python scripts/make_figures.py --fig-dir docs/figures --dpi 100 --formats png   # the gallery's images

`make figures` first runs what the toy figures need (`make figure-runs`) and Table S1; see docs/reproduce.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from crt.errors import ConfigError
from crt.report.figures import NO_RUNS, make_all


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output-dir", default="outputs", help="paths.output_dir of the runs; figures go to <it>/figures")
    p.add_argument("--experiment", default=None, help="experiment the toy figure runs were launched with")
    p.add_argument("--only", nargs="*", default=None, help="figure name prefixes to draw")
    p.add_argument("--smoke", nargs="*", default=None, metavar="KEY=VALUE",
                   help="draw from the smoke-sized runs launched with these extra overrides (make figures PROFILE=smoke); "
                        "every figure is then marked SMOKE")
    p.add_argument("--fig-dir", default=None, help="where the figures go (default <output-dir>/figures)")
    p.add_argument("--dpi", type=int, default=None, help="PNG resolution (default 150; the gallery's images: 100)")
    p.add_argument("--formats", nargs="*", default=None, help="file formats (default: png pdf)")
    args = p.parse_args(argv)
    smoke = dict(a.split("=", 1) for a in args.smoke) if args.smoke else None
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        done = make_all(args.output_dir, args.experiment, args.only, smoke, dpi=args.dpi, fig_dir=args.fig_dir,
                        formats=args.formats)
    except ConfigError as err:
        print(f"\nerror: {err}\n", file=sys.stderr)
        return 2
    print(f"{len(done)} figure(s) in {args.fig_dir or Path(args.output_dir) / 'figures'}")
    if not set(done) - set(NO_RUNS):
        print("\nerror: no figure drawn from runs. Runs launched with extra overrides (e.g. RUN_ARGS=debug=tiny) are not the "
              "figure runs; draw from them with --smoke KEY=VALUE ... (make figures PROFILE=smoke runs and draws the "
              "debug=tiny set), or run the figure runs without extra overrides (make figures).\n", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where does ECRT help? One table of ERM, ECRT-MP and its controls from the runs on disk.

    python scripts/ecrt_regimes.py --runs outputs/runs --out outputs/tables [--datasets toy_henon mnist]

One row per (dataset, run folder without its seed), mean ± sample std over seeds of test top-1, minority F1,
held-out balanced accuracy, and from `diagnostics`: MCC of s and z against the true sources (synthetic data
only) and MMD of augmented vs oversampled minority sources against held-out real ones.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # demix_report.run_overrides

from demix_report import RUN_ONLY, run_overrides  # noqa: E402

METRICS = [("metrics", "test/top1", "top-1"), ("metrics", "test/minority_f1", "minority F1"),
           ("metrics", "val/bal_acc", "val bal. acc"), ("diagnostics", "mcc_s", "MCC s"),
           ("diagnostics", "mcc_z", "MCC z"), ("diagnostics", "mmd_augmented", "MMD aug"),
           ("diagnostics", "mmd_oversample", "MMD oversample")]


def fmt(vals: list[float]) -> str:
    if not vals:
        return ""
    if len(vals) == 1:
        return f"{vals[0]:.4f}"
    return f"{statistics.mean(vals):.4f} ± {statistics.stdev(vals):.4f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="outputs/runs")
    ap.add_argument("--out", default="outputs/tables")
    ap.add_argument("--datasets", nargs="*", default=None, help="first folder level under --runs (default: all)")
    args = ap.parse_args(argv)
    groups: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    seeds: dict[tuple[str, str], list[int]] = defaultdict(list)
    for p in sorted(Path(args.runs).rglob("results.json")):
        rel = p.relative_to(args.runs).parts  # <data>/<method>/<overrides>/seed<k>/results.json
        if args.datasets and rel[0] not in args.datasets:
            continue
        r = json.loads(p.read_text())
        label = ", ".join(o for o in run_overrides(p.parent) if o.split("=", 1)[0] not in RUN_ONLY) or rel[2]
        key = (rel[0], label)
        seeds[key].append(int(r["seed"]))
        for section, k, _ in METRICS:
            v = (r.get(section) or {}).get(k)
            if isinstance(v, (int, float)):
                groups[key][k].append(float(v))
    head = ["data", "run (overrides)", "seeds", *[m[2] for m in METRICS]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key in sorted(groups):
        lines.append("| " + " | ".join([key[0], key[1], ",".join(map(str, sorted(seeds[key]))),
                                        *[fmt(groups[key][m[1]]) for m in METRICS]]) + " |")
    md = "\n".join(lines)
    from crt.utils import atomic_write_text

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "ecrt_regimes.md", md + "\n")
    print(md)
    print("wrote", out / "ecrt_regimes.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())

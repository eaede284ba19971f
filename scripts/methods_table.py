"""Run methods × seeds on one dataset config and print a mean ± std Markdown table from their results.json files.

Each run is `python run.py method=<m> seed=<s> <overrides>` in a subprocess: the same deterministic run folders
as by hand, so finished runs are skipped and shared stages come from the cache. Example (CRT Table 1, MNIST
with one minority digit, three seeds):

    python scripts/methods_table.py --seeds 0 1 2 -- data=mnist paths.data_dir=/work/shared/data

`--from-results DIR` builds the table from existing results.json files under DIR without running anything.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["erm", "iw", "focal", "ldam", "ldam_drw", "logit_adjust", "vat", "gan", "smote", "crt", "ecrt_1p",
           "ecrt_mp", "ecrt_mp_ldam"]
LABELS = {"erm": "ERM", "iw": "IW", "focal": "FOCAL", "ldam": "LDAM", "ldam_drw": "LDAM-DRW", "vat": "VAT",
          "gan": "GAN", "smote": "SMOTE", "crt": "CRT", "ecrt_1p": "ECRT-1P", "ecrt_mp": "ECRT-MP",
          "ecrt_mp_ldam": "ECRT-MP + LDAM", "logit_adjust": "LA", "balanced_softmax": "BALANCED SOFTMAX"}
# (results.json key, column title, shown in percent)
COLUMNS = [("test/top1", "top-1 (%)", True), ("test/nll", "NLL", False), ("test/macro_f1", "macro-F1 (%)", True),
           ("test/minority_f1", "minority F1 (%)", True), ("test/minority_acc", "minority recall (%)", True)]


def run_one(method: str, seed: int, overrides: Sequence[str], threads: int | None) -> tuple[Path | None, str]:
    """One `python run.py` call; returns the results.json path it reports and its log tail."""
    cmd = [sys.executable, str(ROOT / "run.py"), f"method={method}", f"seed={seed}", "progress=false", *overrides]
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    proc = subprocess.run(cmd, check=False, cwd=ROOT, env=env, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("results: "):
            return Path(line.removeprefix("results: ").strip()), out
    return None, out


def collect(paths: Sequence[Path]) -> dict[str, list[dict[str, Any]]]:
    """results.json contents grouped by method name."""
    by_method: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in paths:
        res = json.loads(Path(p).read_text())
        by_method[res["method"]].append(res)
    return by_method


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n − 1; 0 for a single value)."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def markdown_table(by_method: dict[str, list[dict[str, Any]]], order: Sequence[str] | None = None) -> str:
    """Rows: methods (in `order`, then any others); cells: mean ± std over the runs (seeds) of each metric."""
    names = [m for m in (order or []) if m in by_method] + sorted(m for m in by_method if m not in (order or []))
    head = "| method | seeds | " + " | ".join(title for _, title, _ in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 2)]
    for m in names:
        runs = by_method[m]
        cells = []
        for key, _, pct in COLUMNS:
            vals = [r["metrics"][key] for r in runs if key in r["metrics"]]
            if not vals:
                cells.append("–")
                continue
            mu, sd = mean_std([v * 100 if pct else v for v in vals])
            cells.append(f"{mu:.2f} ± {sd:.2f}" if pct else f"{mu:.3f} ± {sd:.3f}")
        seeds = ",".join(str(r["seed"]) for r in sorted(runs, key=lambda r: r["seed"]))
        lines.append(f"| {LABELS.get(m, m)} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="+", default=METHODS, help="method configs (configs/method/*.yaml)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=1, help="runs in parallel")
    ap.add_argument("--threads", type=int, default=None, help="OMP/MKL threads per run (e.g. 1 on a busy CPU)")
    ap.add_argument("--from-results", type=Path, default=None,
                    help="build the table from every results.json under this folder, run nothing "
                         "(runs of one method are pooled: point it at one experiment's folder)")
    ap.add_argument("--output", type=Path, default=None, help="also write the table (Markdown) here")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides for every run (after --), e.g. data=mnist")
    args = ap.parse_args(argv)

    if args.from_results is not None:
        paths = sorted(args.from_results.rglob("results.json"))
    else:
        jobs = [(m, s) for m in args.methods for s in args.seeds]
        paths = []

        def work(job: tuple[str, int]) -> Path | None:
            t0 = time.perf_counter()
            path, log = run_one(job[0], job[1], args.overrides, args.threads)
            status = f"-> {path}" if path else "FAILED\n" + log[-3000:]
            print(f"[{time.perf_counter() - t0:7.1f}s] method={job[0]} seed={job[1]} {status}", flush=True)
            return path

        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            paths = [p for p in pool.map(work, jobs) if p is not None]
        if len(paths) < len(jobs):
            print(f"{len(jobs) - len(paths)} of {len(jobs)} runs failed; the table shows the others.", flush=True)
    if not paths:
        print("No results.json found.", file=sys.stderr)
        return 1
    table = markdown_table(collect(paths), args.methods)
    print(table)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Sweep summaries: mean ± std over seeds of every group of runs that differ only in the seed.

Runs are grouped by dataset, method and their overrides once seed, logger, trainer, paths and the like are
set aside (crt.report.tables.IGNORED). `python -m crt.report summarize <folder>` summarises every run under a
folder; the sweep callback (crt.sweep) does it for the runs of a multirun when it ends. Output: a table
printed, and `summary.csv` (one row per group: mean and std of each metric) and `summary.md` in the folder.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from crt.report.tables import Run, find_runs
from crt.utils import atomic_write_text

METRICS = ("test/top1", "test/bal_acc", "test/macro_f1", "test/minority_f1", "test/nll", "val/bal_acc")


def _group(run: Run) -> tuple[str, str, str]:
    res = run.results or {}
    over = {k: v for k, v in run.overrides.items() if k not in ("data", "method")}
    tag = ",".join(f"{k}={v}" for k, v in sorted(over.items())) or "default"
    parts = run.folder.parts  # runs/<data>/<method>/<overrides>/seed<k> for a run that never finished
    dataset = res.get("dataset") or (parts[-4] if len(parts) >= 4 else "?")
    method = res.get("method") or (parts[-3] if len(parts) >= 3 else "?")
    return str(dataset), str(method), tag


def summarize(runs: Sequence[Run], metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """One row per group: dataset, method, overrides, seeds, n, then `<metric> mean` and `<metric> std`
    (sample std, ddof = 1; NaN for one seed). Incomplete runs are counted in `incomplete`, not averaged."""
    groups: dict[tuple[str, str, str], list[Run]] = {}
    for r in runs:
        groups.setdefault(_group(r), []).append(r)
    rows = []
    for (dataset, method, tag), members in sorted(groups.items()):
        done = [r for r in members if r.complete]
        row: dict[str, object] = {"dataset": dataset, "method": method, "overrides": tag,
                                  "seeds": " ".join(str(r.seed) for r in sorted(done, key=lambda r: r.seed or 0)),
                                  "n": len(done), "incomplete": len(members) - len(done)}
        for m in metrics:
            vals = pd.Series([r.results["metrics"][m] for r in done if m in r.results.get("metrics", {})], dtype=float)
            row[f"{m} mean"] = float(vals.mean()) if len(vals) else math.nan
            row[f"{m} std"] = float(vals.std(ddof=1)) if len(vals) > 1 else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def to_markdown(df: pd.DataFrame, metrics: Sequence[str] = METRICS, digits: int = 4) -> str:
    """The summary as a Markdown table with `mean ± std` cells (std left out for one seed)."""
    shown = [m for m in metrics if f"{m} mean" in df and df[f"{m} mean"].notna().any()]
    head = ["dataset", "method", "overrides", "n", *shown]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 4 + ["---:"] * len(shown)) + "|"]
    for _, r in df.iterrows():
        cells = [str(r["dataset"]), str(r["method"]), str(r["overrides"]).replace("|", "\\|"),
                 f"{r['n']}" + (f" (+{r['incomplete']} incomplete)" if r["incomplete"] else "")]
        for m in shown:
            mu, sd = r[f"{m} mean"], r[f"{m} std"]
            cells.append("—" if pd.isna(mu) else f"{mu:.{digits}f}" + ("" if pd.isna(sd) else f" ± {sd:.{digits}f}"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_summary(runs: Sequence[Run], folder: str | Path, title: str = "") -> tuple[pd.DataFrame, str]:
    """Summarise, write `<folder>/summary.csv` and `summary.md` (atomically), return the table and its text."""
    folder = Path(folder)
    df = summarize(runs)
    md = to_markdown(df) if len(df) else "(no runs)\n"
    atomic_write_text(folder / "summary.csv", df.to_csv(index=False))
    atomic_write_text(folder / "summary.md", (f"# {title}\n\n" if title else "") + md)
    return df, md


def sweep_runs(folder: str | Path) -> list[Any]:
    """The runs a sweep folder lists in jobs.jsonl (each folder once, in launch order)."""
    from crt.report.tables import _read_overrides

    folders: list[str] = []
    for line in (Path(folder) / "jobs.jsonl").read_text().splitlines():
        if line.strip():
            f = json.loads(line)["run_dir"]
            if f not in folders:
                folders.append(f)
    runs = []
    for f in map(Path, folders):
        res = None
        if (f / "results.json").exists():
            res = json.loads((f / "results.json").read_text())
        runs.append(Run(f, _read_overrides(f), res))
    return runs


def summarize_folder(folder: str | Path) -> tuple[pd.DataFrame, str]:
    """Every run under `folder` (or the runs a sweep folder lists in jobs.jsonl)."""
    folder = Path(folder)
    runs = sweep_runs(folder) if (folder / "jobs.jsonl").exists() else find_runs(folder)
    return write_summary(runs, folder, title=f"Summary of {folder}")

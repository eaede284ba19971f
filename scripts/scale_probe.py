"""Run Table 1 experiments end to end at their full data size on the CPU with a cut budget, and measure them.

    python scripts/make_scale_data.py --data-dir outputs/scale-data        # once: full-size stand-ins
    python scripts/scale_probe.py --data-dir outputs/scale-data            # the five Table 1 datasets, ECRT-MP
    python scripts/scale_probe.py --methods erm,ecrt_mp --steps 4          # more methods / steps
    python scripts/scale_probe.py --growth                                 # time against N, classes and d

Each experiment runs as its own process (`python -m crt run experiment=<dataset>_<method> trainer=cpu`) with
every trained stage cut by `debug=scale` to 2 epochs of `--steps` batches (`trainer.limit_train_batches`,
`trainer.limit_val_batches`), through evaluation, diagnostics and the export of `model/`; then `crt.load`
reads the model folder back and predicts the test set in a second process, and `crt report table` builds
Table 1 over the probe's runs. Printed and written (`--write`, markdown): per-stage wall time, the time per
training step of each trained stage (the last epoch's training time over its steps), the peak RSS of each
process, and with `--growth` the log-log slope of each stage's time against N, classes and d on generated
feature files. A figure, never a pass/fail: nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ("cifar100", "cifar100_r001", "tinyimagenet", "inat2019", "arxiv")
STAGES = ("pretrain", "demix", "augment", "refine")


def _child(cmd: list[str], env: dict[str, str] | None = None) -> tuple[int, float, float, str]:
    """(exit code, wall seconds, peak RSS in MiB, output tail) of one process."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env or os.environ.copy())
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        tail = out.read()[-3000:]
    return proc.returncode, time.perf_counter() - t0, usage.ru_maxrss / 1024, tail


def run_one(experiment: str, data_dir: Path, out: Path, steps: int, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "crt", "run", f"experiment={experiment}", "debug=scale", "trainer=cpu",
           f"paths.data_dir={data_dir}", f"paths.output_dir={out}", "checkpoint_interval_s=0",
           f"trainer.limit_train_batches={steps}", f"trainer.limit_val_batches={steps}", *extra]
    code, wall, rss, tail = _child(cmd)
    row: dict = {"experiment": experiment, "exit": code, "wall_s": round(wall, 1), "peak_rss_mib": round(rss)}
    if code != 0:
        row["error"] = tail
        return row
    run_dir = _run_folder(out, f"experiment={experiment}")
    res = json.loads((run_dir / "results.json").read_text())
    row.update(n_train=res["data"]["n_train"], n_test=res["data"]["n_test"],
               classes=len(res["data"]["counts"]), stand_in=bool(res["data"].get("stand_in")),
               run_s=res["seconds"], load_rss_mib=round(res["data"].get("peak_rss_mb") or 0))
    for stage, info in res["stages"].items():
        sel = info.get("selected") or {}
        row[f"{stage}_s"] = info["seconds"]
        row[f"{stage}_rss_mib"] = round(info.get("peak_rss_mb") or 0)
        if sel.get("train_s"):
            row[f"{stage}_step_ms"] = round(1000 * sel["train_s"][-1] / steps, 1)
            row[f"{stage}_fit_s"] = sel.get("fit_seconds")
    # crt.load + predict + metrics on the test set, as a user would: `crt predict`
    code, wall, rss, tail = _child([sys.executable, "-m", "crt", "predict", f"run={run_dir}", f"data_dir={data_dir}"])
    if code == 0:
        row.update(predict_s=round(wall, 1), predict_rss_mib=round(rss))
    else:
        row["load_error"] = tail[-800:]
    return row


def _run_folder(out: Path, override: str) -> Path:
    """The newest run folder under `out`/runs launched with `override` (its .hydra/overrides.yaml)."""
    found = [p.parent for p in (out / "runs").rglob("results.json")
             if override in ((p.parent / ".hydra" / "overrides.yaml").read_text().split()
                             if (p.parent / ".hydra" / "overrides.yaml").exists() else [])]
    return max(found, key=lambda p: (p / "results.json").stat().st_mtime)


def table(out: Path, datasets: list[str], methods: list[str]) -> str:
    """`crt report table table1` over the probe's runs (its markdown, or the error)."""
    code, _, _, tail = _child([sys.executable, "-m", "crt", "report", "table", "table1", "--output-dir", str(out),
                               "--datasets", ",".join(datasets), "--methods", ",".join(methods), "--seeds", "0",
                               "--profile", "scale"])
    return tail[tail.find("## "):] if code == 0 and "## " in tail else f"(crt report table failed: exit {code})\n{tail}"


# ------------------------------------------------------------------------------------------------ growth
def _features_file(path: Path, n: int, classes: int, dim: int, rng: np.random.Generator) -> None:
    y = np.arange(n) % classes
    test = np.zeros(n, dtype=np.int64)
    test[rng.permutation(n)[: n // 10]] = 1
    means = rng.standard_normal((classes, dim), dtype=np.float32)
    np.savez(path, X=rng.standard_normal((n, dim), dtype=np.float32) + means[y], y=y, split=test)


def growth(data_dir: Path, out: Path, steps: int) -> list[dict]:
    """ECRT-MP on generated features (data=features, natural imbalance): each axis varied alone."""
    rng = np.random.default_rng(0)
    base = {"n": 100_000, "classes": 200, "dim": 512}
    grid = ([{**base, "n": n} for n in (25_000, 50_000, 100_000, 200_000)]
            + [{**base, "classes": c} for c in (50, 100, 400, 800)]
            + [{**base, "dim": d} for d in (128, 256, 1024, 2048)])
    rows = []
    for g in grid:
        path = data_dir / "growth" / f"n{g['n']}_c{g['classes']}_d{g['dim']}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            _features_file(path, g["n"], g["classes"], g["dim"], rng)
        cmd = [sys.executable, "-m", "crt", "run", "method=ecrt_mp", "data=features", f"data.path={path}",
               f"data.num_classes={g['classes']}", "data.imbalance=natural", "debug=scale", "trainer=cpu",
               f"paths.output_dir={out / 'growth'}", "checkpoint_interval_s=0", f"trainer.limit_train_batches={steps}",
               f"trainer.limit_val_batches={steps}",
               "stage.pretrain.batch_size=512", "stage.demix.batch_size=512", "stage.refine.batch_size=256"]
        code, wall, rss, tail = _child(cmd)
        row = {**g, "exit": code, "wall_s": round(wall, 1), "peak_rss_mib": round(rss)}
        if code == 0:
            res = json.loads((_run_folder(out / "growth", f"data.path={path}") / "results.json").read_text())
            row.update({f"{s}_s": v["seconds"] for s, v in res["stages"].items()}, run_s=res["seconds"])
        else:
            row["error"] = tail[-1500:]
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def slopes(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per axis and stage, the least-squares slope of log(seconds) against log(axis): 1 is linear."""
    base = {"n": 100_000, "classes": 200, "dim": 512}
    out: dict[str, dict[str, float]] = {}
    for axis in base:
        pts = [r for r in rows if r["exit"] == 0 and all(r[k] == v for k, v in base.items() if k != axis)]
        for key in [f"{s}_s" for s in STAGES] + ["run_s", "peak_rss_mib"]:
            xs = [math.log(r[axis]) for r in pts if r.get(key)]
            ys = [math.log(r[key]) for r in pts if r.get(key)]
            if len(xs) >= 3:
                out.setdefault(axis, {})[key] = round(float(np.polyfit(xs, ys, 1)[0]), 2)
    return out


def markdown(rows: list[dict], grow: list[dict], fitted: dict, steps: int, tab: str) -> str:
    cols = ["experiment", "n_train", "classes", "run_s", *[f"{s}_s" for s in STAGES],
            *[f"{s}_step_ms" for s in ("pretrain", "demix", "refine")], "load_rss_mib",
            *[f"{s}_rss_mib" for s in STAGES], "peak_rss_mib", "predict_s", "predict_rss_mib"]
    lines = [f"Budget (debug=scale): 2 epochs x {steps} training (and held-out) batches per trained stage; evaluation, "
             "diagnostics and export run on the full data.", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(str(r.get(c, "error" if c == "run_s" and r.get("exit") else "")) for c in cols)
                     + " |")
    if grow:
        gcols = ["n", "classes", "dim", "run_s", *[f"{s}_s" for s in STAGES], "peak_rss_mib"]
        lines += ["", "| " + " | ".join(gcols) + " |", "|" + "---|" * len(gcols)]
        lines += ["| " + " | ".join(str(r.get(c, "")) for c in gcols) + " |" for r in grow]
        lines += ["", "log-log slopes (1 = linear): " + json.dumps(fitted)]
    if tab:
        lines += ["", "Table 1 built over these runs (`crt report table table1`):", "", tab]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default="outputs/scale-data")
    ap.add_argument("--out", default="outputs/scale-probe")
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--methods", default="ecrt_mp")
    ap.add_argument("--steps", type=int, default=3, help="training and held-out batches per epoch")
    ap.add_argument("--growth", action="store_true", help="also time ECRT-MP against N, classes and d")
    ap.add_argument("--no-runs", action="store_true", help="only the growth runs")
    ap.add_argument("--write", default=None, help="markdown file for the tables")
    ap.add_argument("extra", nargs="*", help="more overrides for every run")
    args = ap.parse_args(argv)
    data_dir, out = Path(args.data_dir).resolve(), Path(args.out).resolve()
    rows = []
    if not args.no_runs:
        for ds in args.datasets.split(","):
            for method in args.methods.split(","):
                row = run_one(f"{ds}_{method}", data_dir, out, args.steps, args.extra)
                print(json.dumps({k: v for k, v in row.items() if k != "error"}), flush=True)
                if row.get("error"):
                    print(row["error"], file=sys.stderr)
                rows.append(row)
    grow = growth(data_dir, out, args.steps) if args.growth else []
    fitted = slopes(grow) if grow else {}
    tab = table(out, args.datasets.split(","), args.methods.split(",")) if rows else ""
    text = markdown(rows, grow, fitted, args.steps, tab)
    print(text)
    if args.write:
        Path(args.write).write_text(text)
    return 0 if all(r["exit"] == 0 for r in rows + grow) else 1


if __name__ == "__main__":
    raise SystemExit(main())

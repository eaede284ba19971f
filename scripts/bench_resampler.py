"""Time crt.CausalResampler before and after, back to back, against SMOTE (prints figures; asserts nothing).

    python scripts/bench_resampler.py                      # before = commit a2e7e07 (50 epochs), 1 pinned thread
    python scripts/bench_resampler.py --cpus all           # torch's default threads, no pinning
    python scripts/bench_resampler.py --before-root DIR --before-python DIR/.venv/bin/python --cases bc,grid

"Before" is the crt package of `--before-ref` (default a2e7e07, the last commit with the fixed 50-epoch
resampler) exported with `git archive` into a temporary folder, or the checkout `--before-root`.

Each case runs in a fresh interpreter per checkout, the "before" checkout first and this one right after
(`--cpus 1`: `taskset -c 1` and OMP_NUM_THREADS=1), so the two figures of a row share the machine's load:
compare them as ratios. Per case and checkout: the time of `import crt.resampler`, the first fit (it pays the
lazy imports: Lightning before), and the median of the warm fits that follow (`--repeats`, fewer when a
fit takes long); SMOTE's warm median in the same interpreter. `grid` is a GridSearchCV over
LogisticRegression's C (2 candidates, 3 folds, refit) of sampler -> StandardScaler -> LogisticRegression
on the digits case, once with CausalResampler and once with SMOTE. Cases (binary ones 10% minority):
bc = breast cancer, all 357 benign + 40 malignant (397 x 30); digits = classes 5-9 whole, 0-4 cut to 28
each (1047 x 64); 20kx16, 5kx64 = sklearn make_classification (8 informative features). Writes the
figures to `--out` (JSON) as well.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

CASES = ("bc", "digits", "20kx16", "5kx64", "grid")
HERE = Path(__file__).resolve().parents[1]


def data(case: str):  # noqa: ANN201
    import numpy as np
    from sklearn.datasets import load_breast_cancer, load_digits, make_classification

    rng = np.random.default_rng(0)
    if case == "bc":
        X, y = load_breast_cancer(return_X_y=True)
        keep = np.r_[np.flatnonzero(y == 1), rng.choice(np.flatnonzero(y == 0), 40, replace=False)]
    elif case in ("digits", "grid"):
        X, y = load_digits(return_X_y=True)
        keep = np.concatenate([np.flatnonzero(y == c) if c >= 5 else rng.choice(np.flatnonzero(y == c), 28, replace=False)
                               for c in range(10)])
    else:
        n, d = {"20kx16": (20000, 16), "5kx64": (5000, 64)}[case]
        X, y = make_classification(n_samples=n, n_features=d, n_informative=8, weights=[0.9, 0.1], random_state=0)
        keep = np.arange(n)
    keep = np.sort(keep)
    return X[keep], y[keep]


def worker(case: str, root: str, repeats: int, smote: bool) -> dict:
    sys.path.insert(0, root)
    t0 = time.perf_counter()
    from crt.resampler import CausalResampler

    out = {"import_s": time.perf_counter() - t0}
    from imblearn.over_sampling import SMOTE

    X, y = data(case)
    out["shape"] = list(X.shape)
    if case == "grid":
        from imblearn.pipeline import make_pipeline
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import GridSearchCV
        from sklearn.preprocessing import StandardScaler

        for name, sampler in (("crt", CausalResampler(random_state=0)), ("smote", SMOTE(random_state=0))):
            if name == "smote" and not smote:
                continue
            pipe = make_pipeline(sampler, StandardScaler(), LogisticRegression(max_iter=2000))
            grid = GridSearchCV(pipe, {"logisticregression__C": [0.1, 1.0]}, cv=3, scoring="balanced_accuracy")
            t = time.perf_counter()
            grid.fit(X, y)
            out[f"{name}_grid_s"] = time.perf_counter() - t
            out[f"{name}_grid_score"] = float(grid.best_score_)
        return out
    t = time.perf_counter()
    r = CausalResampler(random_state=0)
    r.fit_resample(X, y)
    out["first_s"] = time.perf_counter() - t
    warm = []
    while len(warm) < repeats and sum(warm) < 30:
        t = time.perf_counter()
        CausalResampler(random_state=0).fit_resample(X, y)
        warm.append(time.perf_counter() - t)
    out["warm_s"] = statistics.median(warm) if warm else None
    out["n_steps"] = getattr(r, "n_steps_", None)
    out["max_steps"] = getattr(r, "max_steps_", None)
    if smote:
        ts = []
        for _ in range(5):
            t = time.perf_counter()
            SMOTE(random_state=0).fit_resample(X, y)
            ts.append(time.perf_counter() - t)
        out["smote_s"] = statistics.median(ts)
    return out


def run(python: str, root: str, case: str, cpus: str, repeats: int, smote: bool) -> dict:
    env = {**os.environ, "PYTHONPATH": root}
    cmd = [python, str(Path(__file__).resolve()), "--worker", case, "--root", root, "--repeats", str(repeats)]
    if smote:
        cmd.append("--smote")
    if cpus == "1":
        env["OMP_NUM_THREADS"] = "1"
        cmd = ["taskset", "-c", "1", *cmd]
    res = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--before-ref", default="a2e7e07")
    p.add_argument("--before-root", help="a checkout to time as 'before' instead of --before-ref")
    p.add_argument("--before-python", default=sys.executable)
    p.add_argument("--cpus", choices=["1", "all"], default="1")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="outputs/resampler/bench.json")
    p.add_argument("--worker")
    p.add_argument("--root")
    p.add_argument("--smote", action="store_true")
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.root, args.repeats, args.smote)))
        return 0
    tmp = None
    if args.before_root is None:
        import tempfile

        tmp = tempfile.TemporaryDirectory(prefix="crt-before-")
        args.before_root = tmp.name
        tar = subprocess.run(["git", "-C", str(HERE), "archive", args.before_ref, "crt"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", args.before_root], input=tar.stdout, check=True)
    rows = {}
    for case in args.cases.split(","):
        before = run(args.before_python, args.before_root, case, args.cpus, args.repeats, smote=False)
        after = run(sys.executable, str(HERE), case, args.cpus, args.repeats, smote=True)
        rows[case] = {"before": before, "after": after}
        b, a = before, after
        if case == "grid":
            print(f"grid {tuple(a['shape'])}: CausalResampler before {b['crt_grid_s']:.2f} s, after {a['crt_grid_s']:.2f} s "
                  f"({b['crt_grid_s'] / a['crt_grid_s']:.1f}x); SMOTE {a['smote_grid_s']:.2f} s; after / SMOTE "
                  f"{a['crt_grid_s'] / a['smote_grid_s']:.1f}x; best balanced accuracy (CV) before "
                  f"{b['crt_grid_score']:.3f}, after {a['crt_grid_score']:.3f}, SMOTE {a['smote_grid_score']:.3f}", flush=True)
        else:
            print(f"{case} {tuple(a['shape'])}: import before {b['import_s']:.2f} s, after {a['import_s']:.2f} s; first fit "
                  f"before {b['first_s']:.2f} s, after {a['first_s']:.2f} s; warm fit before {b['warm_s']:.3f} s, after "
                  f"{a['warm_s']:.3f} s ({b['warm_s'] / a['warm_s']:.1f}x); steps after {a['n_steps']}/{a['max_steps']}; "
                  f"SMOTE {a['smote_s']:.4f} s (after / SMOTE {a['warm_s'] / a['smote_s']:.0f}x)", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    label = args.before_ref if tmp is not None else args.before_root
    out.write_text(json.dumps({"cpus": args.cpus, "before": label, "cases": rows}, indent=1) + "\n")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())

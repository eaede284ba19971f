"""crt.CausalResampler against imbalanced-learn's over-samplers, in the same imblearn Pipeline.

    python scripts/compare_resamplers.py                       # 5 seeds, writes outputs/resampler/comparison.{csv,md}
    python scripts/compare_resamplers.py --seeds 0 --quick     # one seed, at most 10 flow steps (a smoke check)

Data (bundled, no download): scikit-learn's digits with classes 0-4 cut to 10% of their training samples,
breast cancer with the malignant class cut to 10% of the benign one, and crt's Hénon toy (x = A z + noise,
32-D, class 0 cut to 10%). Each seed draws a stratified 50/50 train/test split, then imbalances the training
half only; the test half keeps the natural class balance. Pipelines: sampler -> StandardScaler ->
LogisticRegression or HistGradientBoostingClassifier; samplers: none, RandomOverSampler, SMOTE, ADASYN,
CausalResampler (nonparametric and parametric schemes), all with their defaults and random_state=seed.
Metrics are those of imblearn's classification_report_imbalanced (macro averages: F1, geometric mean,
index of balanced accuracy) plus balanced accuracy and the mean F1 over the minority classes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from imblearn.metrics import classification_report_imbalanced
from imblearn.over_sampling import ADASYN, SMOTE, RandomOverSampler
from imblearn.pipeline import make_pipeline
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, f1_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from crt.resampler import CausalResampler
from crt.utils import atomic_write_text


def datasets() -> dict[str, tuple[np.ndarray, np.ndarray, list[int]]]:
    from crt.data.toy import load_toy_henon

    out = {}
    X, y = load_digits(return_X_y=True)
    out["digits (0-4 at 10%)"] = (X, y, [0, 1, 2, 3, 4])
    X, y = load_breast_cancer(return_X_y=True)
    out["breast cancer (malignant at 10%)"] = (X, y, [0])
    raw = load_toy_henon(n_per_class=400, n_test_per_class=0)
    out["Hénon toy (class 0 at 10%)"] = (raw.x_train.numpy(), raw.y_train.numpy(), [0])
    return out


def imbalance(X: np.ndarray, y: np.ndarray, minority: list[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep 10% of each minority class (relative to the largest class; at least 6, so SMOTE/ADASYN have k=5)."""
    rng = np.random.default_rng(seed)
    n_max = np.bincount(y).max()
    keep = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        if c in minority:
            idx = rng.choice(idx, size=max(6, int(round(0.1 * n_max))), replace=False)
        keep.append(idx)
    keep = np.sort(np.concatenate(keep))
    return X[keep], y[keep]


def samplers(seed: int, quick: bool) -> dict[str, object]:
    extra = {"max_steps": 10} if quick else {}
    return {"none": None, "RandomOverSampler": RandomOverSampler(random_state=seed), "SMOTE": SMOTE(random_state=seed),
            "ADASYN": ADASYN(random_state=seed),
            "CausalResampler (nonparametric)": CausalResampler(random_state=seed, **extra),
            "CausalResampler (parametric)": CausalResampler(scheme="parametric", random_state=seed, **extra)}


def classifiers(seed: int) -> dict[str, object]:
    return {"logistic regression": LogisticRegression(max_iter=2000),
            "gradient boosting": HistGradientBoostingClassifier(random_state=seed)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--quick", action="store_true", help="at most 10 flow steps")
    p.add_argument("--out", default="outputs/resampler")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows, failures = [], []
    for dname, (X, y, minority) in datasets().items():
        for seed in seeds:
            Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.5, stratify=y, random_state=seed)
            Xtr, ytr = imbalance(Xtr, ytr, minority, seed)
            for sname, sampler in samplers(seed, args.quick).items():
                for cname, clf in classifiers(seed).items():
                    steps = ([sampler] if sampler is not None else []) + [StandardScaler(), clf]
                    t0 = time.perf_counter()
                    try:
                        pred = make_pipeline(*steps).fit(Xtr, ytr).predict(Xte)
                    except (RuntimeError, ValueError) as err:  # ADASYN refuses some class layouts
                        if sname != "ADASYN":
                            raise
                        failures.append(f"{sname} on {dname} seed {seed} ({cname}): {err}")
                        continue
                    rep = classification_report_imbalanced(yte, pred, output_dict=True, zero_division=0)
                    f1 = f1_score(yte, pred, average=None, labels=np.unique(y), zero_division=0)
                    rows.append({"data": dname, "classifier": cname, "sampler": sname, "seed": seed,
                                 "bal_acc": balanced_accuracy_score(yte, pred), "macro_f1": rep["avg_f1"],
                                 "geo_mean": rep["avg_geo"], "iba": rep["avg_iba"],
                                 "minority_f1": float(np.mean(f1[minority])), "seconds": time.perf_counter() - t0})
            print(f"{dname} seed {seed}: done", flush=True)
    df = pd.DataFrame(rows)
    out = Path(args.out)
    atomic_write_text(out / "comparison_runs.csv", df.to_csv(index=False))
    metrics = ["bal_acc", "macro_f1", "geo_mean", "iba", "minority_f1"]
    g = df.groupby(["data", "classifier", "sampler"], sort=False)
    mean, std = g[metrics + ["seconds"]].mean(), g[metrics].std(ddof=1)
    lines = []
    for (dname, cname), block in mean.groupby(level=[0, 1], sort=False):
        lines += [f"\n**{dname}, {cname}** ({len(seeds)} seeds, mean ± std)\n",
                  "| sampler | " + " | ".join(metrics) + " | s/fit |", "|---|" + "---:|" * (len(metrics) + 1)]
        for key, r in block.iterrows():
            sd = std.loc[key]
            cells = [f"{r[m]:.3f} ± {sd[m]:.3f}" if len(seeds) > 1 else f"{r[m]:.3f}" for m in metrics]
            lines.append(f"| {key[2]} | " + " | ".join(cells) + f" | {r['seconds']:.1f} |")
    if failures:
        lines += ["", f"Not run ({len(failures)} fits): " + "; ".join(sorted({f.split(' seed ')[0] + ': ' + f.split(': ', 1)[1]
                                                                            for f in failures}))]
    md = "\n".join(lines) + "\n"
    atomic_write_text(out / "comparison.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())

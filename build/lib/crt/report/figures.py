"""The papers' figures from run folders: results.json, the stage outputs they point to, and the CSV logs.

Every figure is written as PNG and PDF under the output folder (matplotlib, Agg backend). A figure whose
runs are absent is skipped with a message that names the make target producing them.

- per_class_f1_<data>  per-class F1 against training class size (ECRT fig. 1)
- tsne_sources         t-SNE of the test sources of a few classes, from the demix cache
- mmd_augmentation     MMD (RBF, σ = 0.5) of augmented vs real sources against minority sample size (fig. 7)
- lambda_sensitivity   test metrics against λ (fig. 11/13)
- learning_curves      refine on features vs on sources, held-out curves per epoch (fig. 10/12)
- extreme_curve        Table S1 runs per per-class sample size n, with the paper's values (CRT fig. 6)
- rho_sources          the toy source space with ρ = 0 and ρ > 0 (fig. 3)
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from crt.report.tables import (
    EXTREME_GRID,
    REPO,
    S1_METHODS,
    Run,
    _resolve_cache,
    bucket_metrics,
    find_runs,
    load_paper,
)

log = logging.getLogger(__name__)
COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]


SMOKE_MARK = ""  # set by make_all(smoke=...): stamped on every figure drawn from smoke-sized runs


def save(fig: plt.Figure, out_dir: str | Path, name: str) -> list[Path]:
    """`<out_dir>/<name>.png` and `.pdf`, each written to a temp file and renamed into place."""
    if SMOKE_MARK:
        top = fig._suptitle.get_text() if fig._suptitle is not None else ""
        fig.suptitle(f"{SMOKE_MARK} {top}".strip(), color="darkred")
        for ax in fig.axes:
            if ax.get_title():
                ax.set_title(f"{ax.get_title()} [smoke]")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        final = out_dir / f"{name}.{ext}"
        fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{name}.", suffix=f".{ext}")
        os.close(fd)
        try:
            fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight")
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        paths.append(final)
    plt.close(fig)
    return paths


def where(runs: Sequence[Run], required: Mapping[str, str], free: Sequence[str] = ()) -> list[Run]:
    """Finished runs whose overrides contain `required` and otherwise only keys in `free`."""
    out = []
    for r in runs:
        if not r.complete or any(r.overrides.get(k) != str(v) for k, v in required.items()):
            continue
        if set(r.overrides) - set(required) <= set(free):
            out.append(r)
    return out


def stage_outputs(run: Run, stage: str, runs_root: Path | None = None) -> dict[str, Any]:
    """The cached outputs of one stage of a run (`<cache>/<stage>/<key>/outputs.pt`)."""
    path = _resolve_cache(run.results["stages"][stage], stage, runs_root)
    from crt.cache import load_stage_file

    return load_stage_file(path)


@lru_cache(maxsize=4)
def _labels(data_json: str, data_dir: str) -> tuple[torch.Tensor, torch.Tensor]:
    from crt.data import build_split

    split = build_split(json.loads(data_json), data_dir)
    return split.y_train, split.y_test


def labels(run: Run) -> tuple[torch.Tensor, torch.Tensor]:
    """(y_train, y_test) of a run, rebuilt from its data config (deterministic in data_seed)."""
    return _labels(json.dumps(run.config["data"], sort_keys=True), str(run.config.get("paths", {}).get("data_dir", "")))


def stage_log(run: Run, stage: str, runs: Sequence[Run]) -> pd.DataFrame | None:
    """The per-epoch CSV log of `stage`: the run's own, or that of the run that trained the cached stage."""
    key = run.results["stages"][stage]["key"]
    for r in [run, *runs]:
        f = r.folder / "logs" / stage / "metrics.csv"
        if r.complete and r.results["stages"].get(stage, {}).get("key") == key and f.exists():
            return pd.read_csv(f)
    return None


def _mean_std(vals: Sequence[float]) -> tuple[float, float]:
    a = np.asarray([v for v in vals if v is not None and not math.isnan(v)], dtype=float)
    if not len(a):
        return math.nan, math.nan
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def _placeholder_note(name: str, why: str) -> None:
    print(f"skip {name}: {why}", flush=True)


# ------------------------------------------------------------------------------------ the figures
def per_class_f1(groups: Mapping[str, Sequence[Run]], out_dir: Path, name: str, title: str) -> list[Path]:
    """Per-class test F1 against the class's training size, binned (log scale), mean over seeds (ECRT fig. 1)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, (label, runs) in enumerate(groups.items()):
        rows = [(r.seed, p["train_count"], p["f1"]) for r in runs for p in r.results["per_class"]]
        if not rows:
            continue
        df = pd.DataFrame(rows, columns=["seed", "n", "f1"])
        first = df[df["seed"] == df["seed"].min()]
        ax.scatter(first["n"], first["f1"], s=4, alpha=0.15, color=COLORS[i % len(COLORS)])
        edges = np.unique(np.geomspace(max(1, df["n"].min()), df["n"].max() + 1, 12).round())
        df["bin"] = pd.cut(df["n"], edges, include_lowest=True)
        g = df.groupby(["bin", "seed"], observed=True)["f1"].mean().groupby(level=0, observed=True)
        centers = [iv.mid for iv in g.mean().index]
        ax.errorbar(centers, g.mean().values, yerr=g.std().fillna(0).values, marker="o", ms=4, capsize=2,
                    color=COLORS[i % len(COLORS)], label=f"{label} ({df['seed'].nunique()} seeds)")
    ax.set_xscale("log")
    ax.set_xlabel("training samples of the class")
    ax.set_ylabel("test F1 of the class")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save(fig, out_dir, name)


def tsne_sources(run: Run, out_dir: Path, runs_root: Path | None = None, n_classes: int = 6,
                 per_class: int = 300, seed: int = 0) -> list[Path]:
    """t-SNE of the test sources s = f(e(x)) of a few classes (minority classes first), from the demix cache."""
    from sklearn.manifold import TSNE

    s = stage_outputs(run, "demix", runs_root)["s_test"].float().numpy()
    _, y = labels(run)
    y = y.numpy()
    minority = list(run.results["data"]["minority_classes"])
    counts = run.results["data"]["train_counts"]
    majority = [c for c in np.argsort(counts)[::-1].tolist() if c not in minority]
    classes = (minority[: max(1, n_classes // 2)] + majority)[:n_classes]
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per_class] for c in classes])
    emb = TSNE(n_components=2, perplexity=30, init="pca", random_state=seed).fit_transform(s[idx])
    panels = [("sources s (first two dims)", s[idx][:, :2]), ("t-SNE of s", emb)]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
    for ax, (title, pts) in zip(axes, panels):
        for i, c in enumerate(classes):
            sel = y[idx] == c
            tag = "minority" if c in minority else "majority"
            ax.scatter(pts[sel, 0], pts[sel, 1], s=5, alpha=0.6, color=COLORS[i % len(COLORS)],
                       label=f"class {c} ({tag}, n={counts[c]})")
        ax.set_title(title)
    axes[0].legend(fontsize=7, markerscale=3)
    fig.suptitle(f"Test sources of {run.results['name']} (seed {run.seed}, d={s.shape[1]})")
    return save(fig, out_dir, "tsne_sources")


def mmd_augmentation(run: Run, out_dir: Path, runs_root: Path | None = None,
                     sizes: Sequence[int] = (5, 10, 20, 50, 100, 200, 400), n_aug: int = 400, repeats: int = 5,
                     sigma: float = 0.5, seed: int = 0) -> list[Path]:
    """MMD between augmented and held-out real sources of a class against the n real samples it starts from.

    For every majority class with enough data: draw n real training sources, augment them to n_aug samples
    (parametric: per-dimension Gaussian; nonparametric: per-dimension resampling), and compare with n_aug
    real test sources of the class. Oracle: n_aug fresh real test sources (the floor set by sampling noise);
    real: the n drawn samples themselves (no augmentation).
    """
    from crt.augment import augment
    from crt.metrics import mmd_rbf

    out = stage_outputs(run, "demix", runs_root)
    s_tr, s_te = out["s_train"].float(), out["s_test"].float()
    y_tr, y_te = labels(run)
    g = torch.Generator().manual_seed(seed)
    res: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    counts = torch.bincount(y_te)
    classes = [c for c in range(len(counts)) if counts[c] >= 2 * n_aug and (y_tr == c).sum() >= max(sizes)]
    for c in classes:
        tr, te = s_tr[y_tr == c], s_te[y_te == c]
        for _ in range(repeats):
            perm = torch.randperm(len(te), generator=g)
            ref, oracle = te[perm[:n_aug]], te[perm[n_aug:2 * n_aug]]
            for n in sizes:
                real = tr[torch.randperm(len(tr), generator=g)[:n]]
                yy = torch.full((n,), c)
                for kind in ("parametric", "nonparametric"):
                    xa, _ = augment(kind, real, yy, [c], n_aug, generator=g)
                    res[kind][n].append(mmd_rbf(xa, ref, sigma))
                res["real (n samples, no augmentation)"][n].append(mmd_rbf(real, ref, sigma))
                res["oracle (fresh real samples)"][n].append(mmd_rbf(oracle, ref, sigma))
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, (kind, by_n) in enumerate(res.items()):
        ms = [_mean_std(by_n[n]) for n in sizes]
        ax.errorbar(sizes, [m for m, _ in ms], yerr=[s for _, s in ms], marker="o", ms=4, capsize=2,
                    color=COLORS[i], label=kind, ls="--" if kind.startswith("oracle") else "-")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("real samples of the class n")
    ax.set_ylabel(f"MMD² to held-out real sources (RBF σ={sigma})")
    ax.set_title(f"Augmentation quality in source space, {run.results['dataset']} "
                 f"({len(classes)} classes × {repeats} draws)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return save(fig, out_dir, "mmd_augmentation")


# On the balanced test sets top-1 equals balanced accuracy, so only one of them is drawn.
LAMBDA_METRICS = (("test/top1", "top-1 (= balanced acc.)"), ("test/macro_f1", "macro-F1"),
                  ("test/minority_f1", "minority F1"))


def lambda_sensitivity(runs: Sequence[Run], out_dir: Path, title: str = "") -> list[Path]:
    """Test metrics against λ, mean ± std over seeds (ECRT fig. 11/13). λ = 0 is drawn at the left edge."""
    by_lam: dict[float, list[Run]] = defaultdict(list)
    for r in runs:
        by_lam[float(r.config["method"]["lam"])].append(r)
    lams = sorted(by_lam)
    pos = [lam if lam > 0 else min([x for x in lams if x > 0] or [1e-4]) / 10 for lam in lams]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, (key, name) in enumerate(LAMBDA_METRICS):
        ms = [_mean_std([r.results["metrics"].get(key, math.nan) for r in by_lam[lam]]) for lam in lams]
        if all(math.isnan(m) for m, _ in ms):
            continue
        ax.errorbar(pos, [m for m, _ in ms], yerr=[s for _, s in ms], marker="o", ms=4, capsize=2,
                    color=COLORS[i], label=name)
    ax.set_xscale("log")
    ax.set_xticks(pos, [("0" if lam == 0 else f"{lam:g}") for lam in lams])
    n_seeds = max(len(v) for v in by_lam.values())
    ax.set_xlabel("λ (stage.refine.weighting=" + str(runs[0].config["stage"]["refine"].get("weighting")) + ")")
    ax.set_ylabel("test metric")
    ax.set_title(title or f"λ sensitivity, {runs[0].results['name']} ({n_seeds} seeds)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save(fig, out_dir, "lambda_sensitivity")


def learning_curves(groups: Mapping[str, Sequence[Run]], all_runs: Sequence[Run], out_dir: Path,
                    stage: str = "refine") -> list[Path]:
    """Held-out CE and balanced accuracy per epoch of the predictor, one line per group (fig. 10/12)."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    cols = [(f"{stage}/train/loss", "training loss"), (f"{stage}/val/ce", "held-out CE"),
            (f"{stage}/val/bal_acc", "held-out balanced accuracy")]
    for i, (label, runs) in enumerate(groups.items()):
        curves: dict[str, list[pd.Series]] = defaultdict(list)
        for r in runs:
            df = stage_log(r, stage, all_runs)
            if df is None:
                continue
            for col, _ in cols:
                if col in df:
                    curves[col].append(df.dropna(subset=[col]).groupby("epoch")[col].mean())
        for ax, (col, name) in zip(axes, cols):
            if not curves[col]:
                continue
            m = pd.concat(curves[col], axis=1)
            mean, std = m.mean(axis=1), m.std(axis=1).fillna(0)
            ax.plot(mean.index + 1, mean.values, color=COLORS[i], label=f"{label} ({m.shape[1]} seeds)")
            ax.fill_between(mean.index + 1, (mean - std).values, (mean + std).values, color=COLORS[i], alpha=0.2)
            ax.set_title(name)
            ax.set_xlabel("epoch")
    axes[0].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle("Predictor trained on features z vs on sources s (refine stage)")
    return save(fig, out_dir, "learning_curves")


def extreme_curve(groups: Mapping[str, Sequence[Run]], out_dir: Path, runs_root: Path | None = None,
                  grid: Sequence[int] = EXTREME_GRID) -> list[Path]:
    """Top-1, top-5 and NLL per per-class sample size n, ours (solid) and the paper's (dashed) (CRT fig. 6)."""
    paper = load_paper()
    paper = paper[paper["table"] == "S1"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for i, (label, runs) in enumerate(groups.items()):
        per = [bucket_metrics(r, grid, runs_root) for r in runs]
        for ax, metric in zip(axes, ("top1", "top5", "nll")):
            ms = [_mean_std([p[n].get(metric, math.nan) for p in per]) for n in grid]
            ax.errorbar(grid, [m for m, _ in ms], yerr=[s for _, s in ms], marker="o", ms=4, capsize=2,
                        color=COLORS[i], label=f"{label} ({len(runs)} seeds)")
            pv = paper[(paper["method"] == label) & (paper["metric"] == metric)]
            if len(pv):
                xs = [int(s.split("=")[1]) for s in pv["setting"]]
                ax.plot(xs, pv["value"].values, ls="--", marker="x", color=COLORS[i], alpha=0.7,
                        label=f"{label} (paper)")
            ax.set_title({"top1": "top-1", "top5": "top-5", "nll": "NLL"}[metric])
            ax.set_xlabel("samples per class n")
            ax.set_xscale("log")
    axes[0].legend(fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle("Extreme classification toy (1000 classes): ours solid, paper dashed")
    return save(fig, out_dir, "extreme_curve")


def rho_sources(runs: Sequence[Run], out_dir: Path, runs_root: Path | None = None, per_class: int = 400,
                seed: int = 0) -> list[Path]:
    """Training sources of the toy coloured by class, one panel per ρ (ρ = 0: no likelihood regulariser)."""
    runs = sorted(runs, key=lambda r: float(r.config["method"]["rho"]))
    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 4.0), squeeze=False)
    rng = np.random.default_rng(seed)
    for ax, r in zip(axes[0], runs):
        s = stage_outputs(r, "demix", runs_root)["s_train"].float().numpy()
        y, _ = labels(r)
        y = y.numpy()
        minority = set(r.results["data"]["minority_classes"])
        for c in np.unique(y):
            idx = rng.permutation(np.flatnonzero(y == c))[:per_class]
            ax.scatter(s[idx, 0], s[idx, 1], s=4, alpha=0.5, color=COLORS[int(c) % len(COLORS)],
                       label=f"class {c}{' (minority)' if c in minority else ''}")
        ax.set_title(f"ρ = {float(r.config['method']['rho']):g}")
        ax.set_xlabel("s₁")
        ax.set_ylabel("s₂")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=6, markerscale=3)
    fig.suptitle(f"Toy source space with and without the likelihood regulariser ({runs[0].results['name']}, "
                 f"seed {runs[0].seed})")
    return save(fig, out_dir, "rho_sources")


# ------------------------------------------------------------------------------------------ driver
def _by_seed0(runs: Sequence[Run]) -> Run | None:
    return min(runs, key=lambda r: (r.seed or 0)) if runs else None


def make_all(output_dir: str | Path = "outputs", experiment: str | None = None,
             only: Sequence[str] | None = None, smoke: Mapping[str, str] | None = None) -> dict[str, list[Path]]:
    """Every figure whose runs exist under `<output_dir>/runs`; written to `<output_dir>/figures`.

    The toy figures read the runs of `make figure-runs` (the default job, ECRT-MP on the Hénon toy, with
    `sweep=lam`, `sweep=rho` and `method.refine_space=feature,source`); `experiment` names an experiment
    those runs were launched with instead.
    """
    global SMOKE_MARK
    out = Path(output_dir)
    runs_root, fig_dir = out / "runs", out / "figures"
    runs = find_runs(runs_root)
    sm = {k: str(v) for k, v in (smoke or {}).items()}  # smoke: the runs carry these extra overrides
    SMOKE_MARK = f"SMOKE RUN ({', '.join(f'{k}={v}' for k, v in sm.items())}): not the paper's sizes" if sm else ""

    def pick(runs: Sequence[Run], required: Mapping[str, str], free: Sequence[str] = ()) -> list[Run]:
        return where(runs, {**required, **sm}, free)
    fx = {"experiment": experiment} if experiment else {}
    s1 = {m: pick(runs, {"experiment": f"table_s1_{m}"}) for m in S1_METHODS}
    s1 = {m: v for m, v in s1.items() if v}
    default_rho = [r for r in pick(runs, {**fx, "sweep": "rho"}, ("method.rho",))
                   if abs(float(r.config["method"]["rho"]) - float(r.config["data"].get("rho", 0.01))) < 1e-12] \
        or [r for r in pick(runs, {**fx, "sweep": "lam"}, ("method.lam",))
            if abs(float(r.config["method"]["lam"]) - 1e-3) < 1e-12]
    jobs: dict[str, tuple[Callable[[], list[Path]] | None, str]] = {}

    def job(name: str, ok: bool, fn: Callable[[], list[Path]], why: str) -> None:
        jobs[name] = (fn if ok else None, why)

    job("per_class_f1", bool(s1), lambda: per_class_f1(s1, fig_dir, "per_class_f1_toy_extreme",
        "Per-class F1 vs training size, extreme toy (ECRT fig. 1 analogue)"), "no Table S1 runs: make table-s1")
    t1 = {}
    for d in ("cifar100", "cifar100_r001", "tinyimagenet", "inat2019", "arxiv"):
        grp = {m: pick(runs, {"experiment": f"{d}_{m}"}) for m in ("erm", "ldam", "ecrt_1p", "ecrt_mp")}
        grp = {m: v for m, v in grp.items() if v}
        if grp:
            t1[d] = grp
    for d, grp in t1.items():
        job(f"per_class_f1_{d}", True, lambda d=d, grp=grp: per_class_f1(
            grp, fig_dir, f"per_class_f1_{d}", f"Per-class F1 vs training size, {d} (ECRT fig. 1)"), "")
    s7 = pick(runs, {"experiment": "table_s7_1_ecrt_mp"})
    tsne_run = _by_seed0(s7) or _by_seed0(default_rho)
    job("tsne_sources", tsne_run is not None, lambda: tsne_sources(tsne_run, fig_dir, runs_root),
        "no run with a demix stage: make table-s7 or make figure-runs")
    job("mmd_augmentation", bool(default_rho), lambda: mmd_augmentation(_by_seed0(default_rho), fig_dir, runs_root),
        "no toy ECRT run: make figure-runs")
    lam_runs = pick(runs, {**fx, "sweep": "lam"}, ("method.lam",))
    job("lambda_sensitivity", len({float(r.config["method"]["lam"]) for r in lam_runs}) > 1,
        lambda: lambda_sensitivity(lam_runs, fig_dir), "no λ sweep: make figure-runs")
    feat = pick(runs, {**fx, "method.refine_space": "feature"})
    src = pick(runs, {**fx, "method.refine_space": "source"})
    job("learning_curves", bool(feat and src), lambda: learning_curves(
        {"features z (refine_space=feature)": feat, "sources s (refine_space=source)": src}, runs, fig_dir),
        "no refine_space=feature/source runs: make figure-runs")
    job("extreme_curve", bool(s1), lambda: extreme_curve(s1, fig_dir, runs_root), "no Table S1 runs: make table-s1")
    rho_runs = {float(r.config["method"]["rho"]): r for r in sorted(
        pick(runs, {**fx, "sweep": "rho"}, ("method.rho",)), key=lambda r: -(r.seed or 0))}
    picked = [rho_runs[k] for k in sorted(rho_runs) if k in (0.0, 0.01, 1.0)]
    job("rho_sources", len(picked) > 1 and 0.0 in rho_runs, lambda: rho_sources(picked, fig_dir, runs_root),
        "no ρ sweep with ρ = 0: make figure-runs")
    done: dict[str, list[Path]] = {}
    for name, (fn, why) in jobs.items():
        if only and not any(name.startswith(o) for o in only):
            continue
        if fn is None:
            _placeholder_note(name, why)
            continue
        try:
            done[name] = fn()
            print(f"wrote {', '.join(str(p) for p in done[name])}", flush=True)
        except (FileNotFoundError, KeyError) as err:
            _placeholder_note(name, f"{type(err).__name__}: {err}")
    return done


__all__ = [
    "REPO",
    "extreme_curve",
    "lambda_sensitivity",
    "learning_curves",
    "make_all",
    "mmd_augmentation",
    "per_class_f1",
    "rho_sources",
    "save",
    "tsne_sources",
    "where",
]

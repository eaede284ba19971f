"""The papers' figures from run folders: results.json, the stage outputs they point to, and the CSV logs.

Every figure is written as PNG and PDF under the output folder (matplotlib, Agg backend). A figure whose
runs are absent is skipped with a message that names the make target producing them.

- per_class_f1_<data>  per-class F1 against training class size (ECRT fig. 1)
- tsne_sources         t-SNE of the test sources of every class, from the demix cache
- mmd_augmentation     MMD (RBF, σ = 0.5) of augmented vs real sources against minority sample size (fig. 7)
- lambda_sensitivity   test metrics against λ (fig. 11/13)
- learning_curves      refine on features vs on sources, held-out curves per epoch (fig. 10/12)
- extreme_curve        Table S1 runs per per-class sample size n, with the paper's values (CRT fig. 6)
- rho_sources          the toy source space with ρ = 0 and ρ > 0 (fig. 3)
- efficiency           minority accuracy/F1 vs minority size n per majority size N, with and without augmentation,
                       and the effective sample size (ECRT fig. 9, CRT fig. 11; crt/report/efficiency.py)
- augmentation_comparison  each augmentation scheme's samples over the toy's true source density, MMD in the
                       legend (ECRT fig. 5, CRT fig. 7)

A class has one colour in every figure (`class_color`), a method one colour (`method_color`).
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
NLL_UNIT = "NLL (nats)"


def class_color(c: int) -> tuple[float, float, float, float]:
    """The one colour of class `c` in every figure: tab10 for classes 0-9, then tab20b/tab20c, then a hashed
    hue from the HSV circle (so class 3 is the same red in tsne_sources, rho_sources and augmentation)."""
    c = int(c)
    if c < 10:
        return matplotlib.colormaps["tab10"](c)
    if c < 50:
        cmap = matplotlib.colormaps["tab20b" if c < 30 else "tab20c"]
        return cmap((c - 10) % 20)
    return matplotlib.colormaps["hsv"]((c * 0.618033988749895) % 1.0)


METHOD_COLORS = {  # one colour per method / curve name, fixed across figures
    "erm": "#7f7f7f", "crt": "#8c564b", "crt_noaug": "#e377c2", "ecrt_1p": "#9467bd", "ecrt_mp": "#d62728",
    "ecrt_mp_noaug": "#1f77b4", "ecrt_mp_oversample": "#2ca02c", "ldam": "#ff7f0e", "iw": "#17becf",
    "nonparametric": "#d62728", "parametric": "#ff7f0e", "oversample": "#2ca02c", "smote": "#9467bd",
    "real": "#1f77b4", "oracle": "#000000",
}


def method_color(name: str, i: int = 0) -> str:
    """The fixed colour of a method or curve name (first matching key by prefix), else the i-th default colour."""
    key = str(name).lower().replace("-", "_").split(" ")[0]
    if key in METHOD_COLORS:
        return METHOD_COLORS[key]
    return COLORS[i % len(COLORS)]


def seeds_label(n: int) -> str:
    """"1 seed", "3 seeds"."""
    return f"{n} seed" if int(n) == 1 else f"{n} seeds"


def legend_outside(ax: plt.Axes, **kw: Any) -> None:
    """The axes' legend to the right of it, so that it never covers data."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, **{"fontsize": 8, **kw})


def legend_below(fig: plt.Figure, axes: Sequence[plt.Axes], ncol: int = 3, **kw: Any) -> None:
    """One legend for all panels, under the figure (the handles of every panel, each label once)."""
    seen: dict[str, Any] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    if seen:
        fig.legend(list(seen.values()), list(seen), loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=ncol,
                   **{"fontsize": 8, **kw})


SMOKE_MARK = ""  # set by make_all(smoke=...): stamped on every figure drawn from smoke-sized runs
CAPTURE: dict[str, plt.Figure] | None = None  # a dict: save() records every figure in it (tests read the axes)
DPI = 150  # PNG resolution; make_all(dpi=100, formats=("png",)) for the gallery's committed images
FORMATS: tuple[str, ...] = ("png", "pdf")


def stamp_smoke(fig: plt.Figure, mark: str) -> plt.Text:
    """The SMOKE banner above everything the figure already draws (titles, suptitle), so it overlaps nothing."""
    fig.canvas.draw()
    bbox = fig.get_tightbbox(fig.canvas.get_renderer())  # inches
    top = bbox.y1 / fig.get_figheight()
    return fig.text(0.5, top + 0.01, mark, ha="center", va="bottom", color="darkred", fontsize=9,
                    fontweight="bold")


def save(fig: plt.Figure, out_dir: str | Path, name: str) -> list[Path]:
    """`<out_dir>/<name>.png` and `.pdf`, each written to a temp file and renamed into place."""
    if SMOKE_MARK:
        stamp_smoke(fig, SMOKE_MARK)
    if CAPTURE is not None:
        CAPTURE[name] = fig
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in FORMATS:
        final = out_dir / f"{name}.{ext}"
        fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{name}.", suffix=f".{ext}")
        os.close(fd)
        try:
            fig.savefig(tmp, format=ext, dpi=DPI, bbox_inches="tight")
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        paths.append(final)
    if CAPTURE is None:
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
        color = method_color(label, i)
        ax.scatter(first["n"], first["f1"], s=4, alpha=0.15, color=color)
        edges = np.unique(np.geomspace(max(1, df["n"].min()), df["n"].max() + 1, 12).round())
        df["bin"] = pd.cut(df["n"], edges, include_lowest=True)
        g = df.groupby(["bin", "seed"], observed=True)["f1"].mean().groupby(level=0, observed=True)
        centers = [iv.mid for iv in g.mean().index]
        ax.errorbar(centers, g.mean().values, yerr=g.std().fillna(0).values, marker="o", ms=4, capsize=2,
                    color=color, label=f"{label} ({seeds_label(df['seed'].nunique())})")
    ax.set_xscale("log")
    ax.set_xlabel("training samples of the class")
    ax.set_ylabel("test F1 of the class")
    ax.set_title(title)
    legend_outside(ax)
    ax.grid(alpha=0.3)
    return save(fig, out_dir, name)


def tsne_sources(run: Run, out_dir: Path, runs_root: Path | None = None, max_classes: int = 20,
                 per_class: int = 300, seed: int = 0) -> list[Path]:
    """t-SNE of the test sources s = f(e(x)), every class (minority classes first), from the demix cache.

    Every class of the run is drawn (up to `max_classes`, minority classes first, then the largest majority
    classes; the title says when classes were left out), each in its fixed colour (`class_color`).
    """
    from sklearn.manifold import TSNE

    s = stage_outputs(run, "demix", runs_root)["s_test"].float().numpy()
    _, y = labels(run)
    y = y.numpy()
    minority = list(run.results["data"]["minority_classes"])
    counts = run.results["data"]["train_counts"]
    majority = [c for c in np.argsort(counts, kind="stable")[::-1].tolist() if c not in minority]
    present = set(np.unique(y).tolist())
    classes = [c for c in minority + majority if c in present][:max_classes]
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per_class] for c in classes])
    emb = TSNE(n_components=2, perplexity=min(30, max(5, len(idx) // 4)), init="pca",
               random_state=seed).fit_transform(s[idx])
    panels = [("sources s (first two dims)", s[idx][:, :2], ("s₁", "s₂")), ("t-SNE of s", emb,
                                                                             ("t-SNE 1", "t-SNE 2"))]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
    for ax, (title, pts, (xl, yl)) in zip(axes, panels):
        for c in classes:
            sel = y[idx] == c
            tag = "minority" if c in minority else "majority"
            ax.scatter(pts[sel, 0], pts[sel, 1], s=5, alpha=0.6, color=class_color(c),
                       label=f"class {c} ({tag}, n={counts[c]})")
        ax.set_title(title)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.grid(alpha=0.3)
    legend_below(fig, axes[:1], ncol=min(5, len(classes)), markerscale=3)
    shown = f"all {len(classes)} classes" if len(classes) == len(counts) else f"{len(classes)} of {len(counts)} classes"
    fig.suptitle(f"Test sources of {run.results['name']} (seed {run.seed}, d={s.shape[1]}, {shown})")
    fig.tight_layout()
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
                    color=method_color(kind, i), label=kind, ls="--" if kind.startswith("oracle") else "-")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("real samples of the class n")
    ax.set_ylabel(f"MMD² to held-out real sources (RBF σ={sigma})")
    ax.set_title(f"Augmentation quality in source space, {run.results['dataset']} "
                 f"({len(classes)} classes × {repeats} draws)")
    legend_outside(ax)
    ax.grid(alpha=0.3, which="both")
    rows = [{"kind": kind, "n": n, "mmd2_mean": _mean_std(by_n[n])[0], "mmd2_std": _mean_std(by_n[n])[1],
             "draws": len(by_n[n])} for kind, by_n in res.items() for n in sizes]
    paths = save(fig, out_dir, "mmd_augmentation")
    pd.DataFrame(rows).to_csv(Path(out_dir) / "mmd_augmentation.csv", index=False)  # the plotted numbers
    return [*paths, Path(out_dir) / "mmd_augmentation.csv"]


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
                    color=COLORS[i + 3], label=name)
    ax.set_xscale("log")
    ax.set_xticks(pos, [("0" if lam == 0 else f"{lam:g}") for lam in lams])
    n_seeds = max(len(v) for v in by_lam.values())
    ax.set_xlabel("λ (stage.refine.weighting=" + str(runs[0].config["stage"]["refine"].get("weighting")) + ")")
    ax.set_ylabel("test metric")
    ax.set_title(title or f"λ sensitivity, {runs[0].results['name']} ({seeds_label(n_seeds)})")
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    return save(fig, out_dir, "lambda_sensitivity")


def learning_curves(groups: Mapping[str, Sequence[Run]], all_runs: Sequence[Run], out_dir: Path,
                    stage: str = "refine") -> list[Path]:
    """Held-out CE and balanced accuracy per epoch of the predictor, one line per group (fig. 10/12)."""
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    cols = [(f"{stage}/train/loss", "training loss", "training loss (nats)"),
            (f"{stage}/val/ce", "held-out CE", "held-out CE (nats)"),
            (f"{stage}/val/bal_acc", "held-out balanced accuracy", "balanced accuracy")]
    for i, (label, runs) in enumerate(groups.items()):
        curves: dict[str, list[pd.Series]] = defaultdict(list)
        for r in runs:
            df = stage_log(r, stage, all_runs)
            if df is None:
                continue
            for col, _, _ in cols:
                if col in df:
                    curves[col].append(df.dropna(subset=[col]).groupby("epoch")[col].mean())
        color = COLORS[i % len(COLORS)]
        for ax, (col, name, ylab) in zip(axes, cols):
            ax.set_title(name)
            ax.set_xlabel("epoch")
            ax.set_ylabel(ylab)
            if not curves[col]:
                continue
            m = pd.concat(curves[col], axis=1)
            mean, std = m.mean(axis=1), m.std(axis=1).fillna(0)
            ax.plot(mean.index + 1, mean.values, color=color, marker="o", ms=3,
                    label=f"{label} ({seeds_label(m.shape[1])})")
            ax.fill_between(mean.index + 1, (mean - std).values, (mean + std).values, color=color, alpha=0.2)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    legend_below(fig, axes, ncol=2)
    fig.suptitle("Predictor trained on features z vs on sources s (refine stage; band: ± 1 std over seeds)")
    fig.tight_layout()
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
            color = method_color(label, i)
            ax.errorbar(grid, [m for m, _ in ms], yerr=[s for _, s in ms], marker="o", ms=4, capsize=2,
                        color=color, label=f"{label} ({seeds_label(len(runs))})")
            pv = paper[(paper["method"] == label) & (paper["metric"] == metric)]
            if len(pv):
                xs = [int(s.split("=")[1]) for s in pv["setting"]]
                ax.plot(xs, pv["value"].values, ls="--", marker="x", color=color, alpha=0.7,
                        label=f"{label} (paper)")
            ax.set_title({"top1": "top-1", "top5": "top-5", "nll": "NLL"}[metric])
            ax.set_ylabel({"top1": "top-1 accuracy", "top5": "top-5 accuracy", "nll": NLL_UNIT}[metric])
            ax.set_xlabel("samples per class n")
            ax.set_xscale("log")
    for ax in axes:
        ax.grid(alpha=0.3)
    legend_below(fig, axes, ncol=3)
    fig.suptitle("Extreme classification toy (1000 classes): ours solid, paper dashed")
    fig.tight_layout()
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
            ax.scatter(s[idx, 0], s[idx, 1], s=4, alpha=0.5, color=class_color(int(c)),
                       label=f"class {c}{' (minority)' if c in minority else ''}")
        ax.set_title(f"ρ = {float(r.config['method']['rho']):g}")
        ax.set_xlabel("s₁")
        ax.set_ylabel("s₂")
        ax.grid(alpha=0.3)
    legend_below(fig, axes[0][:1], ncol=7, markerscale=3)
    fig.suptitle(f"Toy source space with and without the likelihood regulariser ({runs[0].results['name']}, "
                 f"seed {runs[0].seed})")
    fig.tight_layout()
    return save(fig, out_dir, "rho_sources")


def efficiency(df: pd.DataFrame, out_dir: Path, metric: str = "test/minority_acc") -> list[Path]:
    """Minority accuracy and F1 against the minority size n, one column per majority size N, and the effective
    sample size n_eff / n of the augmented points against the no-augmentation curve (ECRT fig. 9, CRT fig. 11).

    Lines: mean over replicates; bands: ± 1 std. Bottom row: n_eff / n on the mean curves (marker), the range
    over replicates (bar), a triangle where the no-augmentation curve never reaches the point (a lower bound);
    the dashed line is the papers' "> 4×". The table of the same numbers is written beside the figure
    (`efficiency_table.md`).
    """
    from crt.report.efficiency import AUGMENTED, VARIANTS, effective_sizes, ess_markdown

    from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullLocator, ScalarFormatter

    majors = sorted(df["N"].unique())
    ess = effective_sizes(df, metric)
    fig, axes = plt.subplots(3, len(majors), figsize=(4.4 * len(majors), 10.5), squeeze=False, sharex=True,
                             sharey="row")
    grid_n = sorted(df["n"].unique())
    n_seeds = int(df.groupby(["variant", "N", "n"]).seed.nunique().max())
    for j, n_major in enumerate(majors):
        g = df[df.N == n_major]
        for row, (col, ylab) in enumerate(((metric, "minority accuracy (test)"),
                                           ("test/minority_f1", "minority F1 (test)"))):
            ax = axes[row][j]
            for i, v in enumerate(VARIANTS):
                cell = g[g.variant == v].groupby("n")[col].agg(["mean", "std"])
                if cell.empty:
                    continue
                color = method_color(v, i)
                ax.plot(cell.index, cell["mean"], marker="o", ms=4, color=color, label=VARIANTS[v][0],
                        ls="--" if v == "erm" else "-")
                ax.fill_between(cell.index, cell["mean"] - cell["std"].fillna(0), cell["mean"] + cell["std"].fillna(0),
                                color=color, alpha=0.15)
            ax.set_xscale("log")
            ax.set_ylabel(ylab)
            ax.set_title(f"N = {n_major} per majority class")
            ax.grid(alpha=0.3, which="both")
        ax = axes[2][j]
        e = ess[ess.N == n_major] if len(ess) else ess
        for i, v in enumerate(AUGMENTED):
            ev = e[e.variant == v] if len(e) else e
            if not len(ev):
                continue
            color = method_color(v, i)
            shift = 1.0 + 0.06 * (i - 0.5)  # side by side on the log axis
            xs = ev.n.to_numpy() * shift
            lo = np.clip(ev.ratio - ev.ratio_lo.fillna(ev.ratio), 0, None)
            hi = np.clip(ev.ratio_hi.fillna(ev.ratio) - ev.ratio, 0, None)
            ax.errorbar(xs, ev.ratio, yerr=[lo, hi], fmt="none", ecolor=color, alpha=0.6, capsize=2)
            inside = (ev.flag == "").to_numpy()
            ax.scatter(xs[inside], ev.ratio[inside], marker="o", color=color, s=25, label=VARIANTS[v][0])
            ax.scatter(xs[ev.flag == ">"], ev.ratio[ev.flag == ">"], marker="^", color=color, s=35,
                       label=f"{VARIANTS[v][0]}: ≥ (w/o aug. never reaches it)")
            ax.scatter(xs[ev.flag == "<"], ev.ratio[ev.flag == "<"], marker="v", color=color, s=35,
                       label=f"{VARIANTS[v][0]}: ≤ (at or below w/o aug. at n = {int(df.n.min())})")
        ax.axhline(4.0, color="black", ls="--", lw=1, label="papers: > 4×")
        ax.axhline(1.0, color="gray", ls=":", lw=1, label="no gain (1×)")
        ax.set_yscale("log")
        ax.set_ylim(0.03, 40)
        ax.yaxis.set_major_locator(FixedLocator([0.05, 0.1, 0.25, 0.5, 1, 2, 4, 10, 20]))
        ax.yaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.set_xlabel("minority samples n (train + held-out)")
        ax.set_ylabel("effective sample size n_eff / n")
        ax.set_title(f"N = {n_major}: effective minority sample size")
        ax.grid(alpha=0.3, which="both")
    for ax in axes.flat:
        ax.set_xlabel("minority samples n (train + held-out)")
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(grid_n))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.tick_params(labelleft=True, labelbottom=True)
    legend_below(fig, [axes[0][0], axes[2][0], *axes[2]], ncol=3)
    fig.suptitle(f"Learning efficiency on the Hénon toy (ECRT fig. 9 / CRT fig. 11), {seeds_label(n_seeds)}; "
                 "bands: ± 1 std", y=1.0)
    fig.tight_layout()
    paths = save(fig, out_dir, "efficiency")
    table = Path(out_dir) / "efficiency_table.md"
    table.write_text("Effective minority sample size (n_eff: the n at which ECRT-MP w/o augmentation reaches the "
                     "point's minority accuracy; per replicate: against that replicate's own curve)\n\n"
                     + ess_markdown(ess, df, metric) + "\n")
    return [*paths, table]


def augmentation_comparison(out_dir: Path, sizes: Sequence[int] = (10, 100), n_aug: int = 400, klass: int = 0,
                            repeats: int = 5, sigma: float = 0.5, seed: int = 0,
                            schemes: Sequence[str] = ("nonparametric", "parametric", "oversample", "smote"),
                            ) -> list[Path]:
    """Samples of each augmentation scheme over the true class-conditional source density of the Hénon toy
    (ECRT fig. 5, CRT fig. 7): n real sources of one class drawn from the toy's generator, n_aug augmented
    samples per scheme, drawn over the true Gaussian's 1/2/3-σ ellipses. Legend: MMD² (RBF σ = 0.5) of each
    scheme's samples to n_aug held-out true sources, mean ± std over `repeats` draws (the plotted one is
    the first); "real" is the n samples themselves, the oracle n_aug fresh true sources (title).
    """
    from matplotlib.patches import Ellipse

    from crt.augment import augment
    from crt.data.toy import HENON_MEANS, HENON_VARS
    from crt.metrics import mmd_rbf

    mu, var = torch.tensor(HENON_MEANS[klass]), torch.tensor(HENON_VARS[klass])
    g = torch.Generator().manual_seed(seed)

    def draw(n: int) -> torch.Tensor:
        return mu + var.sqrt() * torch.randn(n, 2, generator=g)

    cols = ["real", *schemes]
    fig, axes = plt.subplots(len(sizes), len(cols), figsize=(3.1 * len(cols), 3.0 * len(sizes)), squeeze=False,
                             sharex=True, sharey=True)
    oracle: list[float] = []
    rows: list[dict[str, Any]] = []
    for i, n in enumerate(sizes):
        mmd: dict[str, list[float]] = defaultdict(list)
        shown: dict[str, torch.Tensor] = {}
        for rep in range(repeats):
            real, ref = draw(n), draw(n_aug)
            if i == 0:
                oracle.append(mmd_rbf(draw(n_aug), ref, sigma))
            samples = {"real": real}
            for kind in schemes:
                samples[kind], _ = augment(kind, real, torch.full((n,), klass), [klass], n_aug, generator=g,
                                           seed=seed + rep)
            for kind, x in samples.items():
                mmd[kind].append(mmd_rbf(x.float(), ref, sigma))
                if rep == 0:
                    shown[kind] = x
        rows += [{"n": n, "scheme": k, "mmd2_mean": _mean_std(v)[0], "mmd2_std": _mean_std(v)[1]} for k, v in mmd.items()]
        for j, kind in enumerate(cols):
            ax = axes[i][j]
            for k in (1, 2, 3):
                ax.add_patch(Ellipse(mu.tolist(), 2 * k * float(var[0].sqrt()), 2 * k * float(var[1].sqrt()),
                                     fill=False, color="gray", lw=0.8, ls="-" if k == 1 else "--"))
            x = shown[kind].numpy()
            m, sd = _mean_std(mmd[kind])
            size = 14 if kind == "real" else 5
            ax.scatter(x[:, 0], x[:, 1], s=size, alpha=0.8 if kind == "real" else 0.45,
                       color=class_color(klass) if kind == "real" else method_color(kind, j),
                       label=f"MMD² = {m:.3g} ± {sd:.2g}")
            if kind != "real":
                ax.scatter(shown["real"][:, 0], shown["real"][:, 1], s=10, facecolors="none",
                           edgecolors="black", lw=0.6)
            ax.set_title(f"{kind}, n = {n}" if kind != "real" else f"real samples, n = {n}")
            ax.set_xlabel("s₁")
            ax.set_ylabel("s₂")
            ax.legend(fontsize=7, loc="upper left", handlelength=0.8, markerscale=2)
            ax.grid(alpha=0.3)
    sd = 3.3 * var.sqrt()
    axes[0][0].set_xlim(float(mu[0] - sd[0]), float(mu[0] + sd[0]))
    axes[0][0].set_ylim(float(mu[1] - sd[1]), float(mu[1] + sd[1] * 1.25))  # room for the legend
    om, osd = _mean_std(oracle)
    fig.suptitle(f"Augmentations of Hénon class {klass} over its true source density (ellipses: 1, 2, 3 σ; "
                 f"black rings: the n real samples); oracle MMD² (fresh true samples) = {om:.3g} ± {osd:.2g}")
    fig.tight_layout()
    paths = save(fig, out_dir, "augmentation_comparison")
    rows.append({"n": "oracle", "scheme": "fresh true samples", "mmd2_mean": om, "mmd2_std": osd})
    pd.DataFrame(rows).to_csv(Path(out_dir) / "augmentation_comparison.csv", index=False)  # the legends' numbers
    return [*paths, Path(out_dir) / "augmentation_comparison.csv"]


# ------------------------------------------------------------------------------------------ driver
NO_RUNS = ("augmentation_comparison",)  # drawn from the toy's generator alone, whatever runs exist
def _by_seed0(runs: Sequence[Run]) -> Run | None:
    return min(runs, key=lambda r: (r.seed or 0)) if runs else None


def make_all(output_dir: str | Path = "outputs", experiment: str | None = None,
             only: Sequence[str] | None = None, smoke: Mapping[str, str] | None = None,
             dpi: int | None = None, fig_dir: str | Path | None = None,
             formats: Sequence[str] | None = None) -> dict[str, list[Path]]:
    """Every figure whose runs exist under `<output_dir>/runs`; written to `<output_dir>/figures`.

    The toy figures read the runs of `make figure-runs` (the default job, ECRT-MP on the Hénon toy, with
    `sweep=lam`, `sweep=rho` and `method.refine_space=feature,source`); `experiment` names an experiment
    those runs were launched with instead.
    """
    global SMOKE_MARK, DPI, FORMATS
    out = Path(output_dir)
    runs_root, fig_dir = out / "runs", Path(fig_dir) if fig_dir else out / "figures"
    if dpi:
        DPI = int(dpi)
    if formats:
        FORMATS = tuple(formats)
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
    eff_csv = out / ("efficiency_smoke" if sm else "efficiency") / "efficiency.csv"
    job("efficiency", eff_csv.exists(), lambda: efficiency(pd.read_csv(eff_csv), fig_dir),
        f"no {eff_csv}: python scripts/efficiency.py" + (" --profile smoke" if sm else ""))
    job("augmentation_comparison", True, lambda: augmentation_comparison(
        fig_dir, **({"sizes": (10,), "repeats": 2, "n_aug": 200} if sm else {})), "")
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
    "NO_RUNS",
    "augmentation_comparison",
    "class_color",
    "efficiency",
    "method_color",
    "seeds_label",
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

"""Learning efficiency on the Hénon toy (ECRT fig. 9, CRT fig. 11): minority accuracy against the minority
sample size n, for several majority sizes N, with and without augmentation, and the effective sample size.

The grid runs in-process, one process for all of it. ECRT-MP pretrains the encoder and trains the flow on
the majority classes only (`pretrain.classes: majority`, `demix.classes: majority`), so for one data draw
(majority size N, replicate r) the majority data, and with them pretrain and demix, do not depend on n: they
are trained once, on the split with the largest n, and stored in the stage cache (`paths.cache_dir`, keyed as
`crt.pipeline.stage_keys` keys them). Each minority size is a nested subset of that split's minority class
(the first n_train training and n_val held-out samples, 20 % held out as the protocol does), and only augment
and refine run per (n, variant). ERM trains on all classes and runs its one stage per cell.

Replicate r uses `data.data_seed=r` (a fresh toy draw and imbalanced subset) and `seed=r` (training). Every
cell writes one JSON file `<out>/cells/N<N>/n<n>/<variant>/seed<r>.json` (skipped when present), and
`<out>/efficiency.csv` collects them (one row per cell: test minority accuracy, minority F1, top-1).

Effective sample size (the papers' reading of fig. 9): for an augmented point (N, n) with minority accuracy a,
n_eff is the minority size at which the no-augmentation curve of the same N reaches a, linearly interpolated
in log n on the curve made monotone (running maximum). Computed per replicate (the curves of one replicate
share pretrain and demix) and on the mean curves; beyond the grid's largest n it is censored (`> n_max`).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

log = logging.getLogger(__name__)

VARIANTS: dict[str, tuple[str, list[str]]] = {
    # name: (label, overrides on top of the base ECRT-MP / ERM composition)
    "ecrt_mp": ("ECRT-MP (nonparametric augmentation)", ["method=ecrt_mp"]),
    "ecrt_mp_noaug": ("ECRT-MP w/o augmentation", ["method=ecrt_mp", "method.augment=none"]),
    "ecrt_mp_oversample": ("ECRT-MP, oversampled sources", ["method=ecrt_mp", "method.augment=oversample"]),
    "erm": ("ERM", ["method=erm"]),
}
AUGMENTED = ("ecrt_mp", "ecrt_mp_oversample")  # the points whose effective sample size is read off no-aug
BASELINE = "ecrt_mp_noaug"


@dataclass(frozen=True)
class Grid:
    """What the efficiency experiment runs: the sizes, the replicates and the per-stage epochs."""

    minority: tuple[int, ...] = (5, 10, 20, 50, 100, 200)  # protocol counts n of the minority class (train + held-out)
    majority: tuple[int, ...] = (500, 1000, 2000)          # protocol counts N of each majority class
    replicates: tuple[int, ...] = (0, 1, 2)                # data_seed = seed = r
    variants: tuple[str, ...] = tuple(VARIANTS)
    overrides: tuple[str, ...] = ()                        # extra overrides for every cell (epochs, sizes)

    def describe(self) -> str:
        return (f"n = {list(self.minority)}, N = {list(self.majority)}, replicates {list(self.replicates)}, "
                f"variants {list(self.variants)}, overrides {list(self.overrides) or 'none'}")


PROFILES: dict[str, Grid] = {
    # full: the figure in docs/figures/, the configs' own epochs (docs/figures.md gives the time it took)
    "full": Grid(),
    # smoke: CI; two sizes, one majority size, one replicate, debug=tiny epochs and networks
    "smoke": Grid(minority=(5, 20), majority=(200,), replicates=(0,), overrides=("debug=tiny",)),
}


def compose(overrides: Sequence[str]) -> Any:
    """The config `python run.py <overrides>` would see."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from crt.config import register_resolvers
    from crt.report.tables import configs_dir

    register_resolvers()
    with initialize_config_dir(config_dir=str(configs_dir()), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


def cell_overrides(variant: str, n_major: int, n_minor: int, rep: int, extra: Sequence[str],
                   data_dir: str | None = None, cache_dir: str | None = None) -> list[str]:
    ov = ["data=toy_henon", *VARIANTS[variant][1], f"++data.n_max={n_major}", f"data.ratio={n_minor / n_major!r}",
          f"data.data_seed={rep}", f"seed={rep}", "progress=false", "logger=none", *extra]
    if data_dir:
        ov.append(f"paths.data_dir={data_dir}")
    if cache_dir:
        ov.append(f"paths.cache_dir={cache_dir}")
    return ov


def nested_minority(split: Any, n: int) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """`split` with its minority classes cut to the first n samples (train + held-out, 20 % held out as
    `stratified_holdout` would: at least one of each when n >= 2); the majority classes are untouched.
    Returns the sub-split and the kept training / held-out positions."""
    frac = len(split.y_val) / max(1, len(split.y_train) + len(split.y_val))
    n_val = int(round(frac * n))
    if n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    n_tr = n - n_val
    keep = []
    for y, k in ((split.y_train, n_tr), (split.y_val, n_val)):
        mask = torch.ones(len(y), dtype=torch.bool)
        for c in split.minority_classes:
            pos = torch.nonzero(y == c).flatten()
            if len(pos) < k:
                raise ValueError(f"class {c} has {len(pos)} samples, fewer than the {k} asked for")
            mask[pos[k:]] = False
        keep.append(torch.nonzero(mask).flatten())
    tr, va = keep
    counts = split.counts.clone()
    counts[split.minority_classes] = n
    sources = None
    if split.sources is not None:
        sources = {"train": split.sources["train"][tr], "val": split.sources["val"][va], "test": split.sources["test"]}
    sub = replace(split, x_train=split.x_train[tr], y_train=split.y_train[tr], x_val=split.x_val[va],
                  y_val=split.y_val[va], counts=counts, sources=sources)
    return sub, tr, va


def _sub_outputs(out: Mapping[str, Any], tr: torch.Tensor, va: torch.Tensor) -> dict[str, Any]:
    """A stage's outputs with the per-sample train/val tensors cut to the kept positions."""
    res = dict(out)
    for k, v in out.items():
        if isinstance(v, torch.Tensor) and k.endswith("_train"):
            res[k] = v[tr]
        elif isinstance(v, torch.Tensor) and k.endswith("_val"):
            res[k] = v[va]
    return res


def _score(split: Any, logits_test: torch.Tensor) -> dict[str, float]:
    from crt.metrics import classification_metrics

    m, per_class = classification_metrics(logits_test, split.y_test, split.train_counts, split.majority,
                                          split.groups, prefix="test")
    return {k: float(m[k]) for k in ("test/minority_acc", "test/minority_f1", "test/top1", "test/macro_f1") if k in m}


class Runner:
    """Runs the cells of a grid, sharing pretrain and demix per data draw through the stage cache."""

    def __init__(self, grid: Grid, out_dir: str | Path, data_dir: str | None = None, cache_dir: str | None = None):
        self.grid, self.out = grid, Path(out_dir)
        self.data_dir, self.cache_dir = data_dir, cache_dir

    def cell_path(self, variant: str, n_major: int, n_minor: int, rep: int) -> Path:
        return self.out / "cells" / f"N{n_major}" / f"n{n_minor}" / variant / f"seed{rep}.json"

    def run(self) -> pd.DataFrame:
        t0 = time.perf_counter()
        for n_major in self.grid.majority:
            for rep in self.grid.replicates:
                self._draw(n_major, rep)
        log.info("efficiency grid done in %.0f s", time.perf_counter() - t0)
        return collect(self.out)

    def _draw(self, n_major: int, rep: int) -> None:
        """Every cell of one data draw (N, replicate)."""
        todo = [(v, n) for v in self.grid.variants for n in self.grid.minority
                if not self.cell_path(v, n_major, n, rep).exists()]
        if not todo:
            return
        from crt.cache import StageCache
        from crt.config import validate
        from crt.data import build_split
        from crt.pipeline import code_version, data_fingerprint, stage_keys
        from crt.stages import RUNNERS, Context
        from crt.utils import seed_everything

        n_top = max(self.grid.minority)
        shared: dict[str, Any] = {}  # cache key -> outputs of pretrain / demix on the full split of this draw
        for variant, n in todo:
            t0 = time.perf_counter()
            cfg = compose(cell_overrides(variant, n_major, n_top, rep, self.grid.overrides, self.data_dir,
                                         self.cache_dir))
            run_cfg = validate(cfg)
            base = build_split(cfg.data, str(cfg.paths.data_dir))
            sub, tr, va = nested_minority(base, n)
            ctx = Context.from_cfg(cfg, sub, str(self.out / "logs"), progress=False)
            prev: dict[str, Any] = {}
            reused: list[str] = []
            full_keys: dict[str, str] = {}
            for i, (stage, scfg) in enumerate(run_cfg.stages.items()):
                if stage in ("pretrain", "demix") and "demix" in run_cfg.stages:
                    # majority-only stages: trained once per draw on the full split, cut to the subset
                    key = stage_keys(run_cfg, data_fingerprint(base), code_version())[stage]
                    if key not in shared:
                        cache = StageCache(cfg.paths.cache_dir, enabled=run_cfg.cache.enabled)
                        with cache.lock(stage, key):
                            got = cache.load(stage, key)
                            if got is None:
                                seed_everything(run_cfg.seed + i)
                                inputs = {s: shared[k] for s, k in full_keys.items()}
                                got = RUNNERS[stage](replace(ctx, split=base), scfg, inputs)
                                cache.save(stage, key, got, {"stage": stage, "seed": run_cfg.seed,
                                                             "code_version": code_version()})
                            else:
                                reused.append(stage)
                        shared[key] = got
                    else:
                        reused.append(stage)
                    full_keys[stage] = key
                    prev[stage] = _sub_outputs(shared[key], tr, va)
                    continue
                seed_everything(run_cfg.seed + i)
                prev[stage] = RUNNERS[stage](ctx, scfg, prev)
            last = prev[list(run_cfg.stages)[-1]]
            row = {"variant": variant, "N": n_major, "n": n, "seed": rep, "n_train_minority": int(sub.train_counts[
                sub.minority_classes].min()), **_score(sub, last["logits_test"]),
                "seconds": round(time.perf_counter() - t0, 2), "reused": reused,
                "epochs": {s: (prev[s].get("selected") or {}).get("epochs_run") for s in prev},
                "overrides": cell_overrides(variant, n_major, n, rep, self.grid.overrides)}
            path = self.cell_path(variant, n_major, n, rep)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(row, indent=1))
            tmp.replace(path)
            log.info("N=%d n=%d %s seed %d: minority acc %.3f (%.1f s)", n_major, n, variant, rep,
                     row.get("test/minority_acc", math.nan), row["seconds"])
            print(f"N={n_major} n={n} {variant} seed {rep}: minority acc {row.get('test/minority_acc', math.nan):.3f} "
                  f"F1 {row.get('test/minority_f1', math.nan):.3f} ({row['seconds']:.1f} s)", flush=True)


def collect(out_dir: str | Path) -> pd.DataFrame:
    """Every cell file under `<out_dir>/cells` as one table, written to `<out_dir>/efficiency.csv`."""
    out = Path(out_dir)
    rows = [json.loads(p.read_text()) for p in sorted((out / "cells").rglob("seed*.json"))]
    cols = ["variant", "N", "n", "seed", "n_train_minority", "test/minority_acc", "test/minority_f1", "test/top1",
            "test/macro_f1", "seconds"]
    df = pd.DataFrame([{k: r.get(k) for k in cols} for r in rows], columns=cols)
    if len(df):
        df = df.sort_values(["N", "variant", "n", "seed"]).reset_index(drop=True)
        out.mkdir(parents=True, exist_ok=True)
        df.to_csv(out / "efficiency.csv", index=False)
    return df


# ----------------------------------------------------------------------------- effective sample size
def inverse_curve(ns: Sequence[float], acc: Sequence[float], target: float) -> tuple[float, str]:
    """The n at which the curve (ns, acc) first reaches `target`: linear in log n on the running maximum.

    Returns (n_eff, flag): flag '' inside the grid, '<' when the target is at or below the first point (n_eff
    is then the smallest n, an upper bound), '>' when the curve never reaches it (n_eff is the largest n, a
    lower bound).
    """
    ns = np.asarray(ns, dtype=float)
    mono = np.maximum.accumulate(np.asarray(acc, dtype=float))
    if target <= mono[0]:
        return float(ns[0]), "<"
    if target > mono[-1]:
        return float(ns[-1]), ">"
    j = int(np.argmax(mono >= target))
    lo, hi = mono[j - 1], mono[j]
    t = 0.0 if hi == lo else (target - lo) / (hi - lo)
    return float(np.exp(np.log(ns[j - 1]) + t * (np.log(ns[j]) - np.log(ns[j - 1])))), ""


def effective_sizes(df: pd.DataFrame, metric: str = "test/minority_acc", baseline: str = BASELINE,
                    augmented: Sequence[str] = AUGMENTED) -> pd.DataFrame:
    """Per (augmented variant, N, n): accuracy mean ± std, n_eff on the mean curves, and per replicate.

    Columns: variant, N, n, acc_mean, acc_std, base_mean, base_std, n_eff, flag (of the mean-curve value),
    ratio = n_eff / n, ratio_seeds (per-replicate ratios, each with its flag), ratio_lo/ratio_hi (their
    min/max), n_seeds.
    """
    rows = []
    for n_major, g in df.groupby("N"):
        base = g[g.variant == baseline]
        if base.empty:
            continue
        bm = base.groupby("n")[metric].agg(["mean", "std"])
        ns = bm.index.to_numpy()
        for variant in augmented:
            a = g[g.variant == variant]
            if a.empty:
                continue
            for n, cell in a.groupby("n"):
                n_eff, flag = inverse_curve(ns, bm["mean"].to_numpy(), float(cell[metric].mean()))
                per = []
                for _, r in cell.iterrows():
                    b = base[base.seed == r.seed].sort_values("n")
                    if len(b) == len(ns):
                        e, f = inverse_curve(b.n.to_numpy(), b[metric].to_numpy(), float(r[metric]))
                        per.append((e / n, f))
                rows.append({"variant": variant, "N": int(n_major), "n": int(n),
                             "acc_mean": float(cell[metric].mean()), "acc_std": float(cell[metric].std(ddof=1))
                             if len(cell) > 1 else 0.0, "base_mean": float(bm.loc[n, "mean"]) if n in bm.index
                             else math.nan, "base_std": float(bm.loc[n, "std"]) if n in bm.index else math.nan,
                             "n_eff": n_eff, "flag": flag, "ratio": n_eff / n,
                             "ratio_seeds": per, "ratio_lo": min((p for p, _ in per), default=math.nan),
                             "ratio_hi": max((p for p, _ in per), default=math.nan), "n_seeds": len(cell)})
    return pd.DataFrame(rows)


def _fmt_ratio(r: float, flag: str) -> str:
    return f"≤{r:.2g}×" if flag == "<" else f"{flag}{r:.2g}×"


def paired_difference(df: pd.DataFrame, a: str, b: str, metric: str = "test/minority_acc") -> pd.DataFrame:
    """Per (N, n): mean and std over replicates of metric(a) − metric(b), paired by replicate (the two share
    pretrain and demix), and how many replicates a is ahead in."""
    x = df[df.variant == a].set_index(["N", "n", "seed"])[metric]
    y = df[df.variant == b].set_index(["N", "n", "seed"])[metric]
    d = (x - y).dropna().rename("d").reset_index()
    return d.groupby(["N", "n"]).d.agg(mean="mean", std=lambda v: v.std(ddof=1) if len(v) > 1 else 0.0,
                                        ahead=lambda v: int((v > 0).sum()), k="count")


def ess_markdown(ess: pd.DataFrame, df: pd.DataFrame, metric: str = "test/minority_acc") -> str:
    """The effective-sample-size table in Markdown: one row per (N, n), the three ECRT-MP variants' minority
    accuracy, n_eff / n of the augmented and the oversampled points (mean curves, then per replicate), the paired
    differences against both controls, and the papers' '>4×' beside every row."""
    acc = df.groupby(["variant", "N", "n"])[metric].agg(["mean", "std"])

    def a(v: str, key: tuple[int, int]) -> str:
        return f"{acc.loc[(v, *key), 'mean']:.3f} ± {acc.loc[(v, *key), 'std']:.3f}" if (v, *key) in acc.index else ""

    def r(v: str, key: tuple[int, int]) -> str:
        e = ess[(ess.variant == v) & (ess.N == key[0]) & (ess.n == key[1])]
        if e.empty:
            return ""
        e = e.iloc[0]
        return f"{_fmt_ratio(e.ratio, e.flag)} ({', '.join(_fmt_ratio(p, f) for p, f in e.ratio_seeds)})"

    dn = paired_difference(df, "ecrt_mp", BASELINE, metric)
    do = paired_difference(df, "ecrt_mp", "ecrt_mp_oversample", metric)

    def d(t: pd.DataFrame, key: tuple[int, int]) -> str:
        return f"{t.loc[key, 'mean']:+.3f} ± {t.loc[key, 'std']:.3f} ({t.loc[key, 'ahead']}/{t.loc[key, 'k']})" \
            if key in t.index else ""

    lines = ["| N | n | ECRT-MP (aug.) | oversample | w/o aug. | n_eff/n aug. (per replicate) | "
             "n_eff/n oversample (per replicate) | aug. − w/o aug. (ahead) | aug. − oversample (ahead) | paper |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for key in sorted({(int(x), int(y)) for x, y in df[["N", "n"]].itertuples(index=False)}):
        lines.append(f"| {key[0]} | {key[1]} | {a('ecrt_mp', key)} | {a('ecrt_mp_oversample', key)} | "
                     f"{a(BASELINE, key)} | {r('ecrt_mp', key)} | {r('ecrt_mp_oversample', key)} | {d(dn, key)} | "
                     f"{d(do, key)} | >4× |")
    return "\n".join(lines)


def write_report(df: pd.DataFrame, out_dir: str | Path, grid: Grid | None = None) -> Path:
    """`<out_dir>/efficiency.md`: the grid, the accuracy table and the effective-sample-size table."""
    out = Path(out_dir)
    ess = effective_sizes(df)
    acc = df.groupby(["N", "n", "variant"])[["test/minority_acc", "test/minority_f1"]].agg(["mean", "std"])
    lines = ["# Learning efficiency on the Hénon toy (ECRT fig. 9 / CRT fig. 11)", ""]
    if grid is not None:
        lines += [f"Grid: {grid.describe()}.", ""]
    lines += ["## Effective sample size (minority accuracy)", "", ess_markdown(ess, df) if len(ess) else "(none)", "",
              "## Minority accuracy and F1 per cell (mean ± std over replicates)", "",
              "| N | n | variant | minority acc. | minority F1 |", "|---|---|---|---|---|"]
    for (n_major, n, v), r in acc.iterrows():
        lines.append(f"| {n_major} | {n} | {v} | {r[('test/minority_acc', 'mean')]:.3f} ± "
                     f"{r[('test/minority_acc', 'std')]:.3f} | {r[('test/minority_f1', 'mean')]:.3f} ± "
                     f"{r[('test/minority_f1', 'std')]:.3f} |")
    path = out / "efficiency.md"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines).replace("nan", "–") + "\n")
    return path


__all__ = ["PROFILES", "VARIANTS", "Grid", "Runner", "collect", "effective_sizes", "ess_markdown", "inverse_curve",
           "nested_minority", "paired_difference", "write_report"]

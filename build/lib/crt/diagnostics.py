"""Does demix recover the sources? Ground-truth and dependence diagnostics of a run (spec: "Does it work?").

- `mcc`: mean correlation coefficient between estimated and true sources, |Pearson| or |Spearman| after
  the best one-to-one matching of dimensions (Hungarian algorithm on the |correlation| matrix). Invariant to
  permutations, sign flips and (Spearman) monotone per-dimension maps: the indeterminacies of nonlinear ICA.
- `within_class_dependence`: how far the dimensions of s (or z) are from independent given the class: mean
  |Pearson| over pairs of dimensions and mean distance correlation (Székely), averaged over classes.
- `augmentation_mmd`: Gaussian-RBF MMD between augmented minority sources and real held-out ones, beside
  the same for plain oversampling of the real training sources (the control augmentation must beat).
- `run_diagnostics`: all of the above for a finished run, the dict written to results.json as `diagnostics`
  (mcc_s / mcc_z, mcc_spearman_*, within_abs_corr_* / within_dcor_* for s, z and the true sources,
  mmd_augmented / mmd_oversample, mcc_s_val_by_epoch).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.stats import rankdata

from crt.metrics import mmd_rbf


def _as_np(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=float)


def _abs_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|Pearson correlation| between every column of a (n x d) and every column of b (n x e): d x e.
    A constant column correlates 0 with everything."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    na, nb = np.linalg.norm(a, axis=0), np.linalg.norm(b, axis=0)
    c = (a.T @ b) / np.maximum(np.outer(na, nb), 1e-300)
    c[na == 0, :] = 0.0
    c[:, nb == 0] = 0.0
    return np.abs(c)


def mcc(est: torch.Tensor | np.ndarray, true: torch.Tensor | np.ndarray, method: str = "pearson") -> float:
    """Mean |correlation| of matched pairs (est dim, true dim) under the matching that maximises it.

    method: pearson (linear) or spearman (Pearson on ranks). With fewer estimated than true dimensions (or
    the other way round) the mean is over the min(d, e) matched pairs.
    """
    a, b = _as_np(est), _as_np(true)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"mcc: {a.shape[0]} estimated vs {b.shape[0]} true samples; they must be paired")
    if method == "spearman":
        a, b = rankdata(a, axis=0), rankdata(b, axis=0)
    elif method != "pearson":
        raise ValueError(f"mcc: method={method!r} is unknown; use pearson or spearman")
    c = _abs_corr(a, b)
    rows, cols = linear_sum_assignment(c, maximize=True)
    return float(c[rows, cols].mean())


def distance_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Székely's (biased, V-statistic) distance correlation of two 1-D samples; 0 iff independent in the limit."""
    x, y = np.asarray(x, float).reshape(-1, 1), np.asarray(y, float).reshape(-1, 1)

    def centred(v: np.ndarray) -> np.ndarray:
        d = np.abs(v - v.T)
        return d - d.mean(0) - d.mean(1)[:, None] + d.mean()

    a, b = centred(x), centred(y)
    dcov2, vx, vy = (a * b).mean(), (a * a).mean(), (b * b).mean()
    if vx <= 0 or vy <= 0:
        return 0.0
    return float(np.sqrt(max(dcov2, 0.0) / np.sqrt(vx * vy)))


def _pairs(index: np.ndarray, d: int) -> list[tuple[int, int]]:
    """The pairs (i < j) at positions `index` of the lexicographic list of all pairs of d dimensions."""
    starts = np.cumsum([0] + [d - 1 - i for i in range(d - 1)])  # position of (i, i + 1)
    rows = np.searchsorted(starts, index, side="right") - 1
    return [(int(i), int(i + 1 + k - starts[i])) for i, k in zip(rows, index)]


def within_class_dependence(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray, max_per_class: int = 500,
                            max_pairs: int = 50, max_classes: int = 20, seed: int = 0) -> dict[str, float]:
    """Mean over classes of the mean |Pearson| and the mean distance correlation over pairs of dimensions.

    Cost caps (documented, deterministic by `seed`): at most `max_per_class` samples per class, `max_pairs`
    pairs of dimensions and `max_classes` classes (the largest ones first). Classes with < 3 samples are skipped.
    """
    xs, ys = _as_np(x), np.asarray(_as_np(y)).astype(int)
    d = xs.shape[1]
    rng = np.random.default_rng(seed)
    n_pairs = d * (d - 1) // 2
    if not n_pairs:
        return {"abs_corr": float("nan"), "dcor": float("nan")}
    chosen = np.arange(n_pairs) if n_pairs <= max_pairs else rng.choice(n_pairs, max_pairs, replace=False)
    pairs = _pairs(chosen, d)
    cols = np.unique(np.asarray(pairs).ravel())  # only the dimensions the pairs use: O(pairs), never d x d
    at = {c: i for i, c in enumerate(cols.tolist())}
    classes, counts = np.unique(ys, return_counts=True)
    classes = classes[np.argsort(-counts, kind="stable")][:max_classes]
    corr, dc = [], []
    for c in classes:
        xc = xs[ys == c]
        if len(xc) < 3:
            continue
        if len(xc) > max_per_class:
            xc = xc[rng.choice(len(xc), max_per_class, replace=False)]
        sub = xc[:, cols]
        cm = _abs_corr(sub, sub)
        corr.append(np.mean([cm[at[i], at[j]] for i, j in pairs]))
        dc.append(np.mean([distance_correlation(xc[:, i], xc[:, j]) for i, j in pairs]))
    if not corr:
        return {"abs_corr": float("nan"), "dcor": float("nan")}
    return {"abs_corr": float(np.mean(corr)), "dcor": float(np.mean(dc))}


def augmentation_mmd(s_aug: torch.Tensor, y_aug: torch.Tensor, s_train: torch.Tensor, y_train: torch.Tensor,
                     s_ref: torch.Tensor, y_ref: torch.Tensor, classes: Sequence[int], sigma: float = 0.5,
                     max_n: int = 1000, seed: int = 0) -> dict[str, float]:
    """Mean over minority classes of MMD^2(augmented, held-out real) and MMD^2(oversampled real train, held-out
    real), the oversampled set as large as the augmented one (capped at `max_n` per set, seeded)."""
    g = torch.Generator().manual_seed(seed)

    def cap(t: torch.Tensor) -> torch.Tensor:
        return t if len(t) <= max_n else t[torch.randperm(len(t), generator=g)[:max_n]]

    aug, over = [], []
    for c in classes:
        a, tr, ref = s_aug[y_aug == c], s_train[y_train == c], s_ref[y_ref == c]
        if len(a) == 0 or len(tr) == 0 or len(ref) < 2:
            continue
        a, ref = cap(a.float()), cap(ref.float())
        o = tr.float()[torch.randint(len(tr), (len(a),), generator=g)]
        aug.append(mmd_rbf(a, ref, sigma))
        over.append(mmd_rbf(o, ref, sigma))
    if not aug:
        return {}
    return {"mmd_augmented": float(np.mean(aug)), "mmd_oversample": float(np.mean(over))}


def run_diagnostics(split: Any, prev: dict[str, dict[str, Any]], refine_space: str = "source",
                    sigma: float = 0.5) -> dict[str, Any]:
    """Diagnostics of a finished run (on the balanced test split, which no stage selects on).

    Only single-label data; every measure is skipped when its inputs are absent (no demix: no s; no true
    sources in the split: no MCC; no source-space augmentation: no MMD).
    """
    if getattr(split, "multilabel", False):
        return {}
    out: dict[str, Any] = {}
    truth = (getattr(split, "sources", None) or {}).get("test")
    spaces = {}
    if "pretrain" in prev and "z_test" in prev["pretrain"]:
        spaces["z"] = prev["pretrain"]["z_test"]
    if "demix" in prev and "s_test" in prev["demix"]:
        spaces["s"] = prev["demix"]["s_test"]
    for name, v in spaces.items():
        if truth is not None and v.shape[1] == truth.shape[1]:
            out[f"mcc_{name}"] = mcc(v, truth, "pearson")
            out[f"mcc_spearman_{name}"] = mcc(v, truth, "spearman")
        dep = within_class_dependence(v, split.y_test)
        out[f"within_abs_corr_{name}"] = dep["abs_corr"]
        out[f"within_dcor_{name}"] = dep["dcor"]
    if truth is not None:
        dep = within_class_dependence(truth, split.y_test)
        out["within_abs_corr_true"] = dep["abs_corr"]
        out["within_dcor_true"] = dep["dcor"]
    hist = prev.get("demix", {}).get("mcc_history")
    if hist:
        out["mcc_s_val_by_epoch"] = [float(v) for v in hist]
    aug = prev.get("augment", {})
    if "s" in spaces and refine_space == "source" and aug.get("x_aug") is not None \
            and len(aug["x_aug"]) and aug["x_aug"].shape[1] == spaces["s"].shape[1]:
        m = augmentation_mmd(aug["x_aug"], aug["y_aug"], prev["demix"]["s_train"], split.y_train,
                             spaces["s"], split.y_test, split.minority_classes, sigma)
        out.update(m)
    return out

"""Top-k, NLL, macro/minority F1, per-class metrics with training counts and many/medium/few shots."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score


def classification_metrics(
    logits: torch.Tensor, y: torch.Tensor, train_counts: torch.Tensor, majority: torch.Tensor,
    groups: Sequence[str] | None = None, prefix: str = "test",
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Scalar metrics (fractions; NLL in nats) and one row per class.

    minority_f1 is the mean F1 over minority classes; acc_many/medium/few the mean per-class accuracy within
    each shot group (absent groups are left out).
    """
    logits, y = logits.float().cpu(), y.cpu()
    m = logits.shape[1]
    f1 = multiclass_f1_score(logits, y, m, average="none", zero_division=0)
    acc = multiclass_accuracy(logits, y, m, average="none")
    present = torch.bincount(y, minlength=m) > 0
    out = {
        f"{prefix}/top1": float((logits.argmax(1) == y).float().mean()),
        f"{prefix}/top5": float(multiclass_accuracy(logits, y, m, top_k=min(5, m), average="micro")),
        f"{prefix}/nll": float(F.cross_entropy(logits, y)),
        f"{prefix}/macro_f1": float(f1[present].mean()),
        f"{prefix}/bal_acc": float(acc[present].mean()),
    }
    minority = (~majority.cpu()) & present
    if minority.any():
        out[f"{prefix}/minority_f1"] = float(f1[minority].mean())
        out[f"{prefix}/minority_acc"] = float(acc[minority].mean())
    if (majority.cpu() & present).any():
        out[f"{prefix}/majority_f1"] = float(f1[majority.cpu() & present].mean())
    groups = list(groups or [])
    for g in ("many", "medium", "few"):
        sel = torch.tensor([gg == g for gg in groups], dtype=torch.bool) & present if groups else None
        if sel is not None and sel.any():
            out[f"{prefix}/acc_{g}"] = float(acc[sel].mean())
    rows = [
        {"class": c, "train_count": int(train_counts[c]), "majority": bool(majority[c]),
         "group": groups[c] if groups else None, "acc": float(acc[c]), "f1": float(f1[c])}
        for c in range(m)
    ]
    return out, rows


def mmd_rbf(x: torch.Tensor, y: torch.Tensor, sigma: float = 0.5) -> float:
    """Squared MMD (biased V-statistic) with a Gaussian RBF kernel k(a, b) = exp(-|a - b|^2 / (2 sigma^2))."""
    def k(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.exp(-torch.cdist(a, b).pow(2) / (2 * sigma**2))

    return float(k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean())

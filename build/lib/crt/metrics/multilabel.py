"""Multi-label metrics (arXiv), with the same signature as `classification_metrics`.

For logits F (N x M) and 0/1 targets Y (N x M), with t_i = argmax_l F_il the top-1 label of sample i:

- ACC (`top1`) = (1/N) sum_i Y[i, t_i]: the fraction of samples whose top-1 label is one of their labels.
- NLL (`nll`) = (1/N) sum_i sum_l BCE(F_il, Y_il), BCE(f, y) = -y log sigmoid(f) - (1 - y) log sigmoid(-f),
  in nats: the mean over samples of the binary cross-entropy summed over labels (what the `bce` loss trains).
- per-class ACC: acc_c = mean of Y[i, t_i] over the samples with Y_ic = 1 (class-conditional ACC);
  `bal_acc` is its mean over the classes with at least one positive. (Model selection on multi-label data
  uses the sample ACC, logged as `<stage>/val/bal_acc` by crt.stages.modules.ClassifierModule.)
- F1 per class of the decisions F_il > 0 (probability > 1/2); `macro_f1` its mean over classes with a
  positive, `micro_f1` from the pooled counts; `minority_f1` / `majority_f1` and `minority_acc` restrict
  the means to those classes; `acc_many/medium/few` average acc_c within each shot group.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F


def multilabel_acc(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per sample 1 if the top-1 label is a true label, else 0 (float N)."""
    return y.float().gather(1, logits.argmax(1, keepdim=True)).squeeze(1)


def multilabel_nll(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per sample BCE with logits summed over labels (nats, N)."""
    return F.binary_cross_entropy_with_logits(logits.float(), y.float(), reduction="none").sum(1)


def multilabel_metrics(
    logits: torch.Tensor, y: torch.Tensor, train_counts: torch.Tensor, majority: torch.Tensor,
    groups: Sequence[str] | None = None, prefix: str = "test",
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Scalar metrics (fractions; NLL in nats) and one row per class; definitions in the module docstring."""
    logits, y = logits.float().cpu(), y.float().cpu()
    m = y.shape[1]
    hit = multilabel_acc(logits, y)
    pos = y.sum(0)
    present = pos > 0
    acc = (y * hit[:, None]).sum(0) / pos.clamp(min=1)
    pred = (logits > 0).float()
    tp, fp, fn = (pred * y).sum(0), (pred * (1 - y)).sum(0), ((1 - pred) * y).sum(0)
    f1 = 2 * tp / (2 * tp + fp + fn).clamp(min=1)
    micro = 2 * tp.sum() / (2 * tp.sum() + fp.sum() + fn.sum()).clamp(min=1)
    out = {
        f"{prefix}/top1": float(hit.mean()),
        f"{prefix}/nll": float(multilabel_nll(logits, y).mean()),
        f"{prefix}/macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        f"{prefix}/micro_f1": float(micro),
        f"{prefix}/bal_acc": float(acc[present].mean()) if present.any() else 0.0,
    }
    majority = majority.cpu().bool()
    if (~majority & present).any():
        out[f"{prefix}/minority_f1"] = float(f1[~majority & present].mean())
        out[f"{prefix}/minority_acc"] = float(acc[~majority & present].mean())
    if (majority & present).any():
        out[f"{prefix}/majority_f1"] = float(f1[majority & present].mean())
    groups = list(groups or [])
    for g in ("many", "medium", "few"):
        if groups:
            sel = torch.tensor([gg == g for gg in groups], dtype=torch.bool) & present
            if sel.any():
                out[f"{prefix}/acc_{g}"] = float(acc[sel].mean())
    rows = [
        {"class": c, "train_count": int(train_counts[c]), "majority": bool(majority[c]),
         "group": groups[c] if groups else None, "acc": float(acc[c]), "f1": float(f1[c]), "support": int(pos[c])}
        for c in range(m)
    ]
    return out, rows

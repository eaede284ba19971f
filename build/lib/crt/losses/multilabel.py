"""Multi-label classification loss (arXiv): binary cross-entropy per label, summed over labels per sample."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from crt.losses.classification import ClassLoss, register_loss


@register_loss("bce")
class BCELoss(ClassLoss):
    """l_i = sum_l w_l BCE(f_il, y_il) with sigmoid outputs; y is N x M multi-hot (the NLL of crt.metrics.multilabel).

    `class_weights` (w_l, optional) weight the labels; `pos_weight` (optional, per label) weighs positives.
    """

    def __init__(self, counts: torch.Tensor, class_weights: torch.Tensor | None = None,
                 pos_weight: list[float] | None = None):
        super().__init__(counts, class_weights)
        pw = None if pos_weight is None else torch.as_tensor(pos_weight, dtype=torch.float)
        self.register_buffer("pos_weight", pw)

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if y.dim() == 1:  # integer labels: one-hot, so the loss also serves single-label data
            y = F.one_hot(y.long(), logits.shape[1])
        return F.binary_cross_entropy_with_logits(
            logits, y.to(logits.dtype), weight=self.class_weights, pos_weight=self.pos_weight, reduction="none"
        ).sum(1)

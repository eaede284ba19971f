"""Classification losses, per sample, so any stage can weight them; looked up by name (`method.*_loss`).

A loss gets the training class counts at construction, and its options as keyword arguments: the keyword
parameters of its constructor are its typed options (crt.registry), configured by
`method.pretrain_loss_kwargs` / `method.refine_loss_kwargs`; an unknown option is an error. Hooks:
`cosine_head` asks for a cosine-normalised last layer (LDAM), `on_epoch` lets a loss change with the
schedule (DRW), `regularizer` adds a term that needs the model itself (VAT).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from crt.errors import ConfigError
from crt.registry import LOSSES
from crt.usercode import is_import_path


class ClassLoss(nn.Module):
    """Cross-entropy, optionally with per-class weights; the base of every classification loss."""

    cosine_head: bool = False
    logit_scale: float = 1.0  # the network's outputs times this are the logits the loss trains (LDAM: s)
    weighted_mean: bool = False  # a batch's loss is Σ w_y·ℓ / Σ w_y (F.cross_entropy(weight=w)'s mean), not / B
    scheduled: bool = False  # changes with the epoch (DRW): its stage trains every epoch, without early stopping

    def __init__(self, counts: torch.Tensor, class_weights: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("counts", counts.float().clone())
        self.register_buffer("class_weights", None if class_weights is None else class_weights.float())

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, weight=self.class_weights, reduction="none")

    def batch_weight(self, y: torch.Tensor) -> torch.Tensor | int:
        """What a batch's summed per-sample losses are divided by: the batch size, or with `weighted_mean` the sum
        of the class weights of its labels (LDAM-DRW's reference code reduces its weighted CE that way)."""
        if self.weighted_mean and self.class_weights is not None:
            return self.class_weights[y].sum()
        return len(y)

    def on_epoch(self, epoch: int, max_epochs: int) -> None:
        """Called at the start of every training epoch."""

    def regularizer(self, forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                    logits: torch.Tensor) -> torch.Tensor | float:
        return 0.0


register_loss = LOSSES.register
register_loss("ce")(ClassLoss)


def build_loss(name: str, counts: torch.Tensor, class_weights: torch.Tensor | None = None,
               **options: Any) -> ClassLoss:
    """The loss registered as `name`; `options` are checked against its typed options first (`class_weights`,
    a tensor, is not a configurable option: it is passed on only when given)."""
    extra = {} if class_weights is None else {"class_weights": class_weights}
    if is_import_path(name):  # user code: method.refine_loss=my_pkg.MyLoss (crt/usercode.py)
        return user_loss(name)(counts, **extra, **options)
    LOSSES.options(name, options, f"loss {name!r}")
    return LOSSES.get(name, "loss")(counts, **extra, **options)


def user_loss(name: str) -> type[ClassLoss]:
    """The ClassLoss subclass at import path `name` (crt/usercode.py), or a ConfigError."""
    from crt.usercode import import_object

    cls = import_object(name, "method.*_loss", "a crt.losses.ClassLoss subclass")
    if not (isinstance(cls, type) and issubclass(cls, ClassLoss)):
        raise ConfigError(f"loss {name!r} is not a crt.losses.ClassLoss subclass. Fix: subclass ClassLoss and "
                          "return one loss per sample from forward(logits, y).")
    return cls

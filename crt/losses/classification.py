"""Classification losses, per sample, so any stage can weight them; looked up by name (`method.*_loss`).

A loss gets the training class counts at construction. Hooks: `cosine_head` asks for a cosine-normalised
last layer (LDAM), `on_epoch` lets a loss change with the schedule (DRW), `regularizer` adds a term that
needs the model itself (VAT).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from crt.errors import ConfigError


class ClassLoss(nn.Module):
    """Cross-entropy, optionally with per-class weights; the base of every classification loss."""

    cosine_head: bool = False
    logit_scale: float = 1.0  # the network's outputs times this are the logits the loss trains (LDAM: s)

    def __init__(self, counts: torch.Tensor, class_weights: torch.Tensor | None = None, **_: Any):
        super().__init__()
        self.register_buffer("counts", counts.float().clone())
        self.register_buffer("class_weights", None if class_weights is None else class_weights.float())

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, weight=self.class_weights, reduction="none")

    def on_epoch(self, epoch: int, max_epochs: int) -> None:
        """Called at the start of every training epoch."""

    def regularizer(self, forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                    logits: torch.Tensor) -> torch.Tensor | float:
        return 0.0


LOSSES: dict[str, type[ClassLoss]] = {"ce": ClassLoss}


def register_loss(name: str) -> Callable[[type[ClassLoss]], type[ClassLoss]]:
    def deco(cls: type[ClassLoss]) -> type[ClassLoss]:
        LOSSES[name] = cls
        return cls

    return deco


def build_loss(name: str, counts: torch.Tensor, **kwargs: Any) -> ClassLoss:
    from crt.usercode import import_object, is_import_path

    if is_import_path(name):  # user code: method.refine_loss=my_pkg.MyLoss (crt/usercode.py)
        cls = import_object(name, "method.*_loss", "a crt.losses.ClassLoss subclass")
        if not (isinstance(cls, type) and issubclass(cls, ClassLoss)):
            raise ConfigError(f"loss {name!r} is not a crt.losses.ClassLoss subclass. Fix: subclass ClassLoss and "
                              "return one loss per sample from forward(logits, y).")
        return cls(counts, **kwargs)
    if name not in LOSSES:  # baseline and multi-label losses register on import
        import crt.losses.adjusted  # noqa: F401
        import crt.losses.imbalance  # noqa: F401
        import crt.losses.multilabel  # noqa: F401
    if name not in LOSSES:
        raise ConfigError(f"Unknown loss {name!r}. Fix: use one of {', '.join(sorted(LOSSES))}.")
    return LOSSES[name](counts, **kwargs)

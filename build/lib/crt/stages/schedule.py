"""Learning-rate schedule of a trained stage: linear warm-up, then step decay at fixed epochs.

`stage.<name>.lr_schedule: {warmup_epochs: 5, milestones: [160, 180], gamma: 0.01}` is LDAM-DRW's CIFAR
recipe (Cao et al. 2019, appendix; their `adjust_learning_rate`): epoch e (0-based) trains at
lr · (e + 1) / warmup_epochs during the warm-up, then at lr · gamma^(number of milestones <= e).
The factor changes once per epoch (LambdaLR stepped at every epoch end). `null` (the default) keeps the
learning rate constant.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch

from crt.errors import ConfigError


@dataclass(frozen=True)
class LRSchedule:
    warmup_epochs: int = 0
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1

    @classmethod
    def parse(cls, node: Mapping[str, Any] | None, key: str = "stage.pretrain.lr_schedule") -> LRSchedule | None:
        """The schedule from a config mapping (None: constant learning rate); unknown keys are an error."""
        if node is None:
            return None
        if not isinstance(node, Mapping):
            raise ConfigError(f"{key}={node!r} is not a mapping. Fix: use null or "
                              "{warmup_epochs: 5, milestones: [160, 180], gamma: 0.01}.")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(node) - names)
        if unknown:
            raise ConfigError(f"{key} has unknown keys {unknown}. Fix: use only {sorted(names)}.")
        try:
            out = cls(int(node.get("warmup_epochs", 0)), tuple(int(m) for m in node.get("milestones") or ()),
                      float(node.get("gamma", 0.1)))
        except (TypeError, ValueError):
            raise ConfigError(f"{key}={dict(node)!r} has a non-numeric value. Fix: warmup_epochs an integer, "
                              "milestones a list of epochs, gamma a number.") from None
        if out.warmup_epochs < 0 or not 0 < out.gamma or any(m < 1 for m in out.milestones) \
                or list(out.milestones) != sorted(out.milestones):
            raise ConfigError(f"{key}={dict(node)!r} is out of range. Fix: warmup_epochs >= 0, gamma > 0, "
                              "milestones increasing epoch numbers >= 1 (e.g. [160, 180]).")
        return out

    def factor(self, epoch: int) -> float:
        """The multiplier of the base learning rate during 0-based `epoch`."""
        if epoch < self.warmup_epochs:
            return (epoch + 1) / self.warmup_epochs
        return self.gamma ** sum(epoch >= m for m in self.milestones)

    def scheduler(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """The Lightning lr_scheduler entry (stepped once per epoch)."""
        return {"scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, self.factor), "interval": "epoch"}

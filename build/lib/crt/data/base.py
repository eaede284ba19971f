"""The data contract between loaders, imbalance protocols and stages."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from crt.registry import DATASETS


@dataclass
class RawData:
    """A dataset as its loader reads it: full training set and the (balanced) evaluation set."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    class_names: list[str] | None = None
    multilabel: bool = False
    sources_train: torch.Tensor | None = None  # true sources of synthetic data, row-aligned with x_train
    sources_test: torch.Tensor | None = None


@dataclass
class Split:
    """The imbalanced training set, its held-out split for model selection, and the evaluation set.

    `counts` are the protocol's per-class sizes (training + held-out); `train_counts` what is fitted on.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    counts: torch.Tensor
    majority: torch.Tensor  # bool per class
    name: str = ""
    groups: list[str] = field(default_factory=list)
    class_names: list[str] | None = None
    multilabel: bool = False
    sources: dict[str, torch.Tensor] | None = None  # true sources per part (train/val/test) when known

    @property
    def train_counts(self) -> torch.Tensor:
        return self.class_counts(self.y_train)

    def class_counts(self, y: torch.Tensor) -> torch.Tensor:
        """Samples per class in labels `y` of this split's kind (multi-label: positives per label)."""
        if self.multilabel:
            return y.sum(0).long()
        return torch.bincount(y, minlength=self.num_classes)

    @property
    def minority_classes(self) -> list[int]:
        return torch.nonzero(~self.majority).flatten().tolist()

    @property
    def input_dim(self) -> int:
        return int(torch.tensor(self.x_train.shape[1:]).prod())

    def summary(self) -> str:
        tc = self.train_counts
        return (
            f"{self.name}: {self.num_classes} classes, train {len(self.y_train)} (per class {int(tc.min())}.."
            f"{int(tc.max())}), held-out {len(self.y_val)}, test {len(self.y_test)}, "
            f"minority classes {self.minority_classes[:10]}{' ...' if len(self.minority_classes) > 10 else ''}"
        )


Loader = Callable[..., RawData]
LOADERS = DATASETS  # name -> loader; a loader's keyword parameters are its typed options (`data.*`)
register = DATASETS.register


def get_loader(name: str) -> Loader:
    return DATASETS.entry(name, "data.name", hint=" (data=<name>, one YAML per dataset under configs/data/)").obj

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
    stand_in: str | None = None  # set when the files are scripts/make_scale_data.py's random stand-ins (STAND_IN_KEY)


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
    stand_in: str | None = None  # RawData.stand_in: the data are random stand-ins, not the dataset

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


STAND_IN_KEY = "crt_stand_in"
"""The marker scripts/make_scale_data.py writes into every stand-in file (an .npz array, a key of a CIFAR
pickle's dict): its value says what the file is. Loaders copy it to RawData.stand_in; a run on such data
warns at load, records `data.stand_in` in results.json, and tables label its cells."""


def stand_in_warning(name: str, note: str) -> str:
    return (f"{name}: STAND-IN DATA, not the real dataset ({note}). Runs on it measure time and memory at "
            "the real size; their metrics say nothing about the method. Point paths.data_dir at the real data "
            "for results.")


Loader = Callable[..., RawData]
LOADERS = DATASETS  # name -> loader; a loader's keyword parameters are its typed options (`data.*`)
register = DATASETS.register


def get_loader(name: str) -> Loader:
    return DATASETS.entry(name, "data.name", hint=" (data=<name>, one YAML per dataset under configs/data/)").obj

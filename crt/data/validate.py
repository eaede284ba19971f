"""Load-time checks of every dataset: what the stages assume about the data, checked before any training.

`check_raw` runs on what a loader returns (finite features, integer labels 0..C-1, at least two classes,
no class without training samples); `check_split` on the imbalanced split (every class keeps a training
and a held-out sample and appears in the test set; a majority class is left for the stages that train
on majority classes only). Each failure is a ConfigError naming the class, the count and the fix.
"""

from __future__ import annotations

from typing import Any

import torch

from crt.data.base import RawData, Split
from crt.errors import ConfigError


def _classes(ids: list[int], limit: int = 8) -> str:
    shown = ", ".join(str(c) for c in ids[:limit])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > limit else "")


def _finite(x: torch.Tensor, what: str, name: str) -> None:
    if not torch.is_floating_point(x) or len(x) == 0:
        return  # integer images (uint8) cannot hold NaN or inf
    flat = x.reshape(len(x), -1)
    rows = max(1, 2**24 // max(1, flat.shape[1]))  # blocks of ~16M values: isfinite's temporaries stay small
    bad = torch.cat([~torch.isfinite(block).all(1) for block in flat.split(rows)])
    if bad.any():
        rows = torch.nonzero(bad).flatten().tolist()
        raise ConfigError(f"{name}: {len(rows)} {what} rows hold NaN or inf (first rows {rows[:5]}). Training on them "
                          "gives NaN losses and meaningless metrics. Fix: drop or impute those rows (e.g. "
                          "numpy.nan_to_num) before saving the data.")


def _labels(y: torch.Tensor, num_classes: int, what: str, name: str, multilabel: bool) -> None:
    if multilabel:
        if y.dim() != 2 or y.shape[1] != num_classes or not bool(((y == 0) | (y == 1)).all()):
            raise ConfigError(f"{name}: multi-label {what} targets must be an N x {num_classes} 0/1 matrix. "
                              "Fix: one column per class, 1 where the sample carries the label.")
        return
    if y.dtype.is_floating_point or y.dtype == torch.bool or y.dim() != 1:
        raise ConfigError(f"{name}: {what} labels have dtype {y.dtype} and shape {tuple(y.shape)}; expected one "
                          "integer class id per sample. Fix: store y as integers 0..C-1.")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ConfigError(f"{name}: {what} labels span {int(y.min())}..{int(y.max())}, outside the classes "
                          f"0..{num_classes - 1}. Fix: relabel to 0..C-1 (numpy.unique(y, return_inverse=True)).")


def check_raw(raw: RawData, name: str) -> None:
    """Finite features, integer labels 0..C-1, >= 2 classes, every class with a training sample."""
    if raw.num_classes < 2:
        raise ConfigError(f"{name}: the data holds {raw.num_classes} class; a classifier needs at least 2. Fix: use "
                          "data with two or more classes (labels 0..C-1).")
    for what, x, y in (("training", raw.x_train, raw.y_train), ("test", raw.x_test, raw.y_test)):
        if len(x) != len(y):
            raise ConfigError(f"{name}: {len(x)} {what} samples but {len(y)} labels. Fix: one label per sample.")
        _finite(x, what, name)
        _labels(y, raw.num_classes, what, name, raw.multilabel)
    if not raw.multilabel:
        counts = torch.bincount(raw.y_train, minlength=raw.num_classes)
        empty = torch.nonzero(counts == 0).flatten().tolist()
        if empty:
            present = torch.nonzero(counts).flatten().tolist()
            raise ConfigError(
                f"{name}: {len(empty)} of the {raw.num_classes} classes have no training samples (classes "
                f"{_classes(empty)}); the labels present are {_classes(present)}. Labels must be the consecutive "
                "ids 0..C-1 of classes that occur. Fix: relabel with numpy.unique(y, return_inverse=True) (keep the "
                "original ids as class_names), or drop the unused ids from data.num_classes / class_names.")


def check_split(split: Split, cfg: Any) -> None:
    """The imbalanced split can train and select every stage of cfg.method (cfg: the run's config)."""
    name, m = split.name, split.num_classes
    if not split.multilabel:
        tr = split.class_counts(split.y_train)
        va = split.class_counts(split.y_val)
        te = split.class_counts(split.y_test)
        needs_val = float(cfg.data.get("val_fraction", 0.2) or 0.0) > 0
        short = [c for c in range(m) if tr[c] < 1 or (needs_val and va[c] < 1)]
        if short:
            c = short[0]
            raise ConfigError(
                f"{name}: class {c} has {int(split.counts[c])} sample(s) after the imbalance protocol ({int(tr[c])} to "
                f"train on, {int(va[c])} held out for model selection); {len(short)} class(es) are that short "
                f"({_classes(short)}). Every class needs at least 2 samples (one trained on, one held out), or the "
                "model cannot learn and select it. Fix: raise data.ratio or data.n_max, or add samples of those "
                "classes.")
        missing = torch.nonzero(te == 0).flatten().tolist()
        if missing:
            raise ConfigError(f"{name}: classes {_classes(missing)} have no test samples, so their accuracy is "
                              "undefined. Fix: mark some of their rows as test (the `split` array), or drop "
                              "`split` so that data.test_fraction of every class is held out.")
    stages = list(cfg.method.stages)
    majority_only = [s for s, key in (("pretrain", cfg.method.get("pretrain_classes", "majority")),
                                      ("demix", cfg.stage.demix.get("classes", "majority")))
                     if s in stages and key == "majority"]
    if majority_only and not bool(split.majority.any()):
        raise ConfigError(
            f"{name}: every one of the {m} classes is a minority class (data.minority_classes="
            f"{_classes(split.minority_classes)}), but method {cfg.method.name} trains "
            f"{' and '.join(majority_only)} on majority classes only, which would leave them zero samples. "
            "Fix: leave at least one class out of data.minority_classes, or train on every class "
            "(method.pretrain_classes=all, stage.demix.classes=all).")

"""Datasets and imbalance protocols: `build_split(cfg.data, data_dir)` gives the Split every stage uses.

Every loader registers itself in `crt.registry.DATASETS` where it is defined; this package imports every
loader module below, so a new dataset is one module here plus one YAML under configs/data/.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from crt.data import arxiv, cifar, features, inat, mnist, synthetic, tinyimagenet, toy, transforms  # noqa: F401
from crt.data.base import LOADERS, RawData, Split, get_loader, register, stand_in_warning
from crt.data.imbalance import (
    check_classes,
    majority_mask,
    select_indices,
    shot_groups,
    stratified_holdout,
    target_counts,
)
from crt.data.validate import check_raw

__all__ = ["LOADERS", "RawData", "Split", "build_split", "register", "apply_protocol"]

PROTOCOL_KEYS = ("imbalance", "minority_classes", "ratio", "n_max", "data_seed", "val_fraction", "num_classes",
                 "shot_thresholds", "majority_min_count")
"""`data.*` keys of the imbalance protocol (apply_protocol), common to every dataset."""


def get_data_loader(cfg: Mapping[str, Any]) -> Any:
    """The loader of `cfg`: the registered dataset `name`, or user code at `_target_` (crt/usercode.py)."""
    if cfg.get("_target_"):  # user code: +data._target_=my_pkg.load
        from crt.usercode import import_object

        return import_object(str(cfg["_target_"]), "data._target_", "a function returning crt.data.RawData")
    return get_loader(str(cfg.get("name")))


def takes(fn: Any, name: str) -> bool:
    """Whether `fn` accepts the keyword argument `name`."""
    import inspect

    params = inspect.signature(fn).parameters
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def loader_options(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The `data.*` entries the dataset's loader takes (its keyword parameters; all entries but name and
    _target_ for a user loader that takes **kwargs)."""
    import inspect

    params = inspect.signature(get_data_loader(cfg)).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()) and cfg.get("_target_"):
        return {k: v for k, v in dict(cfg).items() if k not in ("name", "_target_", "data_dir")}
    return {k: v for k, v in dict(cfg).items() if k in params and k not in ("name", "data_dir")}


def apply_protocol(raw: RawData, cfg: Mapping[str, Any], name: str = "") -> Split:
    """Imbalance the training set (seeded per-class shuffle, first n_c), then hold out a stratified part."""
    protocol = cfg.get("imbalance", "natural")
    seed = int(cfg.get("data_seed", 0))
    minority = list(cfg.get("minority_classes") or [])
    check_classes(minority, raw.num_classes)
    if raw.multilabel:
        idx = torch.arange(len(raw.y_train))
        counts = raw.y_train.sum(0).long()
        labels_for_split = raw.y_train.float().argmax(1)
    else:
        available = torch.bincount(raw.y_train, minlength=raw.num_classes)
        counts = target_counts(protocol, available, float(cfg.get("ratio", 1.0)), minority, cfg.get("n_max"))
        idx = select_indices(raw.y_train, counts, seed)
        labels_for_split = raw.y_train[idx]
    tr, va = stratified_holdout(labels_for_split, float(cfg.get("val_fraction", 0.2)), seed)
    mask = majority_mask(protocol, counts, minority, cfg.get("majority_min_count"))
    shots = cfg.get("shot_thresholds") or [100, 20]
    tr, va = idx[tr], idx[va]  # rows of raw: the data are copied once, straight into the two parts
    sources = None
    if raw.sources_train is not None:  # synthetic data: keep the true sources so runs can score demix
        sources = {"train": raw.sources_train[tr], "val": raw.sources_train[va], "test": raw.sources_test}
    return Split(
        x_train=raw.x_train[tr], y_train=raw.y_train[tr], x_val=raw.x_train[va], y_val=raw.y_train[va],
        x_test=raw.x_test, y_test=raw.y_test, num_classes=raw.num_classes, counts=counts, majority=mask, name=name,
        groups=shot_groups(counts, int(shots[0]), int(shots[1])), class_names=raw.class_names,
        multilabel=raw.multilabel, sources=sources, stand_in=raw.stand_in,
    )


def build_split(cfg: Mapping[str, Any], data_dir: str | None = None) -> Split:
    """Load the dataset named by cfg['name'] (or user code at cfg['_target_']) and apply its imbalance protocol."""
    name = cfg.get("name")
    loader = get_data_loader(cfg)
    kwargs = loader_options(cfg)
    if data_dir is not None and takes(loader, "data_dir"):
        kwargs["data_dir"] = data_dir
    raw = loader(**kwargs)
    if raw.stand_in:
        import logging

        logging.getLogger(__name__).warning(stand_in_warning(str(name), raw.stand_in))
    check_raw(raw, str(name))  # finite features, labels 0..C-1, no empty class (crt/data/validate.py)
    return apply_protocol(raw, cfg, name=str(name))

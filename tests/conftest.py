"""Shared fixtures: compose the real Hydra configs (configs/) with overrides, pointing outputs at tmp."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from crt.config import register_resolvers

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
MNIST_DIR = Path(os.environ.get("CRT_DATA_DIR") or SHARED_DATA)

register_resolvers()


def compose_cfg(overrides: Sequence[str] = (), tmp: Path | None = None) -> DictConfig:
    """The config run.py would see for these overrides (without Hydra's run-folder machinery)."""
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    if tmp is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp / "outputs")
            cfg.paths.cache_dir = str(tmp / "outputs" / "cache")
    return cfg


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    def make(*overrides: str, tmp: Path | None = None) -> DictConfig:
        return compose_cfg(overrides, tmp or tmp_path)

    return make


def has_mnist() -> bool:
    return (MNIST_DIR / "MNIST" / "raw" / "train-images-idx3-ubyte").exists()


requires_mnist = pytest.mark.skipif(not has_mnist(), reason=f"MNIST IDX files not found under {MNIST_DIR}/MNIST/raw")

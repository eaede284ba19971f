"""Every configs/experiment file: header with its exact command, composes, names its dataset and method."""

from __future__ import annotations

from pathlib import Path

import pytest

try:  # tests/ as a package (tests/__init__.py) or as plain modules
    from tests.conftest import ROOT, compose_cfg
except ModuleNotFoundError:
    from conftest import ROOT, compose_cfg

DATASETS = {"cifar100_r001": "cifar100", "cifar100": "cifar100", "tinyimagenet": "tinyimagenet",
            "inat2019": "inat2019", "arxiv": "arxiv"}  # MNIST (Table S7): table_s7_<k>_<method>.yaml
EXPERIMENTS = sorted(p for p in (ROOT / "configs" / "experiment").glob("*.yaml")
                     if any(p.stem.startswith(d + "_") for d in DATASETS))  # <dataset>_<method> cells


def _dataset_and_method(stem: str) -> tuple[str, str, str]:
    for prefix, data in DATASETS.items():  # longest prefixes first
        if stem.startswith(prefix + "_"):
            return prefix, data, stem[len(prefix) + 1:]
    raise AssertionError(f"{stem}: unknown dataset prefix")


def test_table1_cells_exist() -> None:
    stems = {p.stem for p in EXPERIMENTS}
    for d in ("cifar100", "cifar100_r001", "tinyimagenet", "inat2019", "arxiv"):
        for m in ("erm", "crt", "ecrt_1p", "ecrt_mp"):
            assert f"{d}_{m}" in stems


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_composes(path: Path) -> None:
    lines = path.read_text().splitlines()
    assert lines[0] == "# @package _global_"
    assert f"# python run.py experiment={path.stem}" in lines[:4]
    prefix, data, method = _dataset_and_method(path.stem)
    cfg = compose_cfg([f"experiment={path.stem}"])
    assert cfg.data.name == data and cfg.method.name == method
    assert cfg.data.feature_dim == (2 if data == "mnist" else 32)
    if prefix == "cifar100_r001":
        assert cfg.data.ratio == 0.01
    if data == "arxiv":
        assert cfg.method.pretrain_loss == "bce"

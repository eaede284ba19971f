"""Imbalance protocols: exact per-class count vectors (the imbalanced-DL test), seeding, held-out split."""

from __future__ import annotations

import pytest
import torch

from crt.data import RawData, apply_protocol, build_split
from crt.data.imbalance import majority_mask, select_indices, stratified_holdout, target_counts
from crt.errors import ConfigError

try:  # tests/ as a package (tests/__init__.py) or as plain modules
    from tests.conftest import MNIST_DIR, requires_mnist
except ModuleNotFoundError:
    from conftest import MNIST_DIR, requires_mnist


def full(m: int, n: int) -> torch.Tensor:
    return torch.full((m,), n, dtype=torch.long)


def test_cifar10_exp_001_exact_counts() -> None:
    counts = target_counts("exp", full(10, 5000), 0.01)
    assert counts.tolist() == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


@pytest.mark.parametrize("ratio,last,total", [(0.01, 5, 10847), (0.02, 10, 12608), (0.1, 50, 19573)])
def test_cifar100_exp_counts(ratio: float, last: int, total: int) -> None:
    counts = target_counts("exp", full(100, 500), ratio, n_max=500)
    assert counts[0] == 500 and counts[-1] == last and int(counts.sum()) == total
    assert (counts[:-1] >= counts[1:]).all()


def test_cifar100_step_counts() -> None:
    counts = target_counts("step", full(100, 500), 0.1, [], 500)
    assert counts[:50].tolist() == [500] * 50 and counts[50:].tolist() == [50] * 50
    assert int(counts.sum()) == 27500
    assert int(target_counts("step", full(100, 500), 0.01, [], 500).sum()) == 25250
    mask = majority_mask("step", counts, [])
    assert mask[:50].all() and not mask[50:].any()


def test_step_majority_is_the_first_half_even_when_a_class_is_short() -> None:
    counts = target_counts("step", torch.tensor([60, 45, 80, 70, 50, 90]), 0.1, [], 60)
    assert counts.tolist() == [60, 45, 60, 6, 6, 6]
    assert majority_mask("step", counts, []).tolist() == [True, True, True, False, False, False]


def test_tinyimagenet_step_counts() -> None:
    counts = target_counts("step", full(200, 500), 0.1, [], 450)
    assert counts[:100].tolist() == [450] * 100 and counts[100:].tolist() == [45] * 100
    assert int(counts.sum()) == 49500


def test_minority_protocol_caps_at_available() -> None:
    available = torch.tensor([5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])
    counts = target_counts("minority", available, 0.2, [0], 6000)
    assert counts.tolist() == [1200, 6000, 5958, 6000, 5842, 5421, 5918, 6000, 5851, 5949]
    with pytest.raises(ConfigError, match="minority_classes"):
        target_counts("minority", available, 0.2, [], 6000)


def test_natural_majority_by_count() -> None:
    counts = torch.tensor([300, 150, 120, 119, 10, 3])
    mask = majority_mask("natural", counts, [], 120)
    assert mask.tolist() == [True, True, True, False, False, False]


@pytest.mark.parametrize("bad", [0.0, 1.5, -0.1])
def test_bad_ratio(bad: float) -> None:
    with pytest.raises(ConfigError, match="ratio"):
        target_counts("step", full(4, 10), bad)


def _raw(per_class: int = 40, m: int = 6) -> RawData:
    y = torch.arange(m).repeat_interleave(per_class)
    x = torch.arange(len(y), dtype=torch.float32)[:, None]  # row id as the feature
    return RawData(x, y, x[:m], torch.arange(m), num_classes=m)


def test_same_data_seed_same_indices_other_seed_different() -> None:
    y = torch.arange(6).repeat_interleave(40)
    counts = torch.tensor([40, 40, 40, 4, 4, 4])
    a, b, c = (select_indices(y, counts, s) for s in (0, 0, 1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.bincount(y[a], minlength=6).tolist() == counts.tolist()
    cfg = {"imbalance": "step", "ratio": 0.1, "n_max": 40, "data_seed": 0, "val_fraction": 0.2}
    s0, s0b = apply_protocol(_raw(), cfg), apply_protocol(_raw(), cfg)
    s1 = apply_protocol(_raw(), {**cfg, "data_seed": 1})
    assert torch.equal(s0.x_train, s0b.x_train) and torch.equal(s0.x_val, s0b.x_val)
    assert not torch.equal(s0.x_train, s1.x_train)


def test_holdout_is_stratified_20_percent() -> None:
    y = torch.arange(4).repeat_interleave(torch.tensor([500, 100, 50, 5]))
    tr, va = stratified_holdout(y, 0.2, 0)
    assert torch.bincount(y[va], minlength=4).tolist() == [100, 20, 10, 1]
    assert torch.bincount(y[tr], minlength=4).tolist() == [400, 80, 40, 4]
    assert not set(tr.tolist()) & set(va.tolist()) and len(tr) + len(va) == len(y)
    split = apply_protocol(_raw(), {"imbalance": "step", "ratio": 0.25, "n_max": 40, "val_fraction": 0.2})
    assert (split.train_counts + torch.bincount(split.y_val, minlength=6)).tolist() == split.counts.tolist()
    assert torch.bincount(split.y_val, minlength=6).tolist() == [8, 8, 8, 2, 2, 2]
    assert not set(split.x_train.flatten().tolist()) & set(split.x_val.flatten().tolist())


@requires_mnist
@pytest.mark.parametrize("minority,expected", [
    ([0], [1200, 6000, 5958, 6000, 5842, 5421, 5918, 6000, 5851, 5949]),
    ([0, 1, 2, 3, 4], [1200] * 5 + [5421, 5918, 6000, 5851, 5949]),
])
def test_mnist_minority_digits(make_cfg, minority: list[int], expected: list[int]) -> None:
    cfg = make_cfg("data=mnist", f"data.minority_classes={minority}", f"paths.data_dir={MNIST_DIR}",
                   "data.download=false")
    split = build_split(cfg.data, str(MNIST_DIR))
    assert split.counts.tolist() == expected
    assert split.minority_classes == minority
    assert len(split.y_test) == 10_000 and split.x_train.shape[1] == 784

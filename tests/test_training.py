"""In-memory batching: epochs cover the data once, DDP shards are disjoint and equal, balanced sampling."""

from __future__ import annotations

import pytest
import torch

from crt.stages import training
from crt.stages.training import TensorBatches


def test_one_epoch_covers_every_sample_once() -> None:
    x = torch.arange(103)
    seen = torch.cat([b[0] for b in TensorBatches(x, batch_size=10, seed=3)])
    assert sorted(seen.tolist()) == list(range(103))
    assert len(TensorBatches(x, batch_size=10)) == 11
    assert len(TensorBatches(x, batch_size=10, drop_last=True)) == 10


def test_rank_shards_are_disjoint_equal_and_cover_the_permutation(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.arange(100)
    shards = []
    for rank in (0, 1):
        monkeypatch.setattr(training, "_rank_world", lambda r=rank: (r, 2))
        batches = TensorBatches(x, batch_size=8, seed=5)
        shards.append(torch.cat([b[0] for b in batches]))
        assert len(batches) == 7  # 50 per rank in batches of 8
    assert len(shards[0]) == len(shards[1]) == 50
    assert set(shards[0].tolist()).isdisjoint(shards[1].tolist())
    assert set(shards[0].tolist()) | set(shards[1].tolist()) == set(range(100))


def test_balanced_weights_draw_classes_equally() -> None:
    y = torch.cat([torch.zeros(900, dtype=torch.long), torch.ones(100, dtype=torch.long)])
    w = 1.0 / torch.bincount(y).float()[y]
    drawn = torch.cat([b[0] for b in TensorBatches(y, batch_size=100, weights=w, num_samples=20000, seed=0)])
    frac = drawn.float().mean().item()
    assert abs(frac - 0.5) < 0.02

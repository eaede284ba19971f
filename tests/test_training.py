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


def test_chunks_yield_every_batch_once_in_order() -> None:
    x = torch.arange(50.0)
    plain = TensorBatches(x, batch_size=8, seed=3)
    chunked = TensorBatches(x, batch_size=8, seed=3)
    chunked.chunk = 3
    assert len(plain) == 7 and len(chunked) == 3 and chunked.n_batches() == 7
    flat = [b for chunk in chunked for b in chunk]
    assert len(flat) == 7 and all(torch.equal(a[0], b[0]) for a, b in zip(plain, flat, strict=True))


def _stage_logs(run_dir) -> dict[str, str]:  # noqa: ANN001
    return {p.parent.name: p.read_text() for p in sorted((run_dir / "logs").glob("*/metrics.csv"))}


@pytest.mark.slow
def test_several_steps_per_lightning_step_are_bit_identical(make_cfg, tmp_path) -> None:  # noqa: ANN001
    """trainer.steps_per_call=3 against 1 (Lightning's automatic loop): same metrics, same logged curves and steps,
    with gradient clipping, a learning-rate schedule with warm-up and the refine stage's extra (augmented) stream."""
    from crt.pipeline import run

    base = ("debug=tiny", "data.n_per_class=120", "data.n_test_per_class=10", "stage.pretrain.epochs=3",
            "stage.pretrain.grad_clip=0.5", "stage.refine.grad_clip=0.5", "stage.demix.grad_clip=1.0",
            "+stage.pretrain.lr_schedule={warmup_epochs:1,milestones:[2],gamma:0.5}", "stage.pretrain.batch_size=64",
            "stage.refine.batch_size=64", "stage.demix.batch_size=64", "cache.enabled=false")
    res = {k: run(make_cfg(*base, f"trainer.steps_per_call={k}"), run_dir=tmp_path / f"k{k}") for k in (1, 3)}
    assert res[1]["metrics"] == res[3]["metrics"]
    def picked(r: dict) -> dict:
        return {s: {k: v["selected"][k] for k in ("best", "epoch", "epochs_run")} for s, v in r["stages"].items()
                if v.get("selected")}

    assert picked(res[1]) == picked(res[3]) and set(picked(res[1])) == {"pretrain", "demix", "refine"}
    logs = {k: _stage_logs(tmp_path / f"k{k}") for k in (1, 3)}
    assert set(logs[1]) >= {"pretrain", "demix", "refine"} and logs[1] == logs[3]


def test_steps_per_call_falls_back_to_one_where_lightning_must_see_every_batch() -> None:
    import lightning.pytorch as pl

    def trainer(**kw) -> pl.Trainer:  # noqa: ANN003
        return pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                          enable_model_summary=False, **kw)

    assert training.steps_per_call(trainer(), 8) == 8
    assert training.steps_per_call(trainer(), 1) == 1
    for kw in ({"limit_train_batches": 5}, {"limit_train_batches": 0.5}, {"fast_dev_run": True}, {"max_steps": 10},
               {"accumulate_grad_batches": 2}, {"overfit_batches": 2}, {"devices": 2, "strategy": "ddp_spawn"}):
        assert training.steps_per_call(trainer(**kw), 8) == 1, kw

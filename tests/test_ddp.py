"""The pipeline under simulated DDP (2 CPU processes over gloo, ddp_spawn): same metric keys, sane values."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.distributed as dist

from crt.pipeline import run
from crt.stages.training import TensorBatches, make_trainer


@pytest.mark.slow
def test_ddp_sim_runs_all_stages_with_the_same_metric_keys(make_cfg, tmp_path: Path) -> None:
    tiny = ["debug=tiny", "data.n_per_class=300", "data.n_test_per_class=50", "logger=none"]
    single = run(make_cfg(*tiny, "trainer=cpu"), run_dir=tmp_path / "single")
    ddp = run(make_cfg(*tiny, "trainer=ddp_sim", "cache.enabled=false"), run_dir=tmp_path / "ddp")
    assert list(ddp["stages"]) == ["pretrain", "demix", "augment", "refine"]
    assert set(ddp["metrics"]) == set(single["metrics"])
    for k, v in ddp["metrics"].items():
        assert math.isfinite(v)
        if k != "test/nll" and not k.endswith("/nll"):
            assert 0.0 <= v <= 1.0
    assert ddp["metrics"]["test/top1"] > 1 / 7  # better than chance even after two epochs
    assert ddp["stages"]["refine"]["selected"]["monitor"] == "refine/val/bal_acc"


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


class _TeardownProbe(pl.LightningModule):
    """A linear fit with a synced log (a gloo all_reduce of a Python tensor every step, as the stages do).
    Each spawned rank writes what it saw at the end: threads when fitting ended (gloo's worker and transport
    threads alive) and after the callbacks' teardown (crt's EndSpawnedGroup ran), and whether a group is left."""

    def __init__(self, out: str):
        super().__init__()
        self.out = out
        self.lin = torch.nn.Linear(2, 1)
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(64, 2, generator=g), torch.randn(64, 1, generator=g)

    def train_dataloader(self) -> TensorBatches:
        return TensorBatches(self.x, self.y, batch_size=8)

    def training_step(self, batch: tuple[torch.Tensor, ...], _: int) -> torch.Tensor:
        loss = torch.nn.functional.mse_loss(self.lin(batch[0]), batch[1])
        self.log("probe/loss", loss, sync_dist=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def on_fit_end(self) -> None:  # after Lightning's own teardown, before the teardown hooks
        self.seen = {"rank": dist.get_rank(), "world": dist.get_world_size(), "threads_at_fit_end": _threads()}

    def teardown(self, stage: str) -> None:  # after every callback's teardown
        self.seen.update(threads_after_teardown=_threads(), group_left=dist.is_initialized())
        Path(self.out, f"rank{self.seen['rank']}.json").write_text(json.dumps(self.seen))


@pytest.mark.slow
def test_spawned_workers_destroy_their_process_group_before_exiting(make_cfg, tmp_path: Path) -> None:
    """A spawned rank that exits with its gloo group alive can abort in interpreter finalisation ("terminate
    called without an active exception": a gloo thread frees a Python-owned tensor and needs the GIL). Every
    stage Trainer ends the group in the worker instead, which joins gloo's threads while Python is alive."""
    trainer, _ = make_trainer(make_cfg("trainer=ddp_sim").trainer, max_epochs=1, stage="probe", run_dir=str(tmp_path),
                              logger_cfg=None, monitor="probe/loss", mode="min", patience=None, progress=False)
    trainer.fit(_TeardownProbe(str(tmp_path)))
    seen = sorted((json.loads(p.read_text()) for p in tmp_path.glob("rank*.json")), key=lambda s: s["rank"])
    assert [s["rank"] for s in seen] == [0, 1] and all(s["world"] == 2 for s in seen)
    for s in seen:
        assert s["group_left"] is False, s
        # gloo's two worker threads and its transport loop (rank 0 also the store's server) were joined
        assert s["threads_at_fit_end"] - s["threads_after_teardown"] >= 3, s

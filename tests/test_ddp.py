"""The pipeline under simulated DDP (2 CPU processes over gloo, ddp_spawn): same metric keys, sane values."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from crt.pipeline import run


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

"""Loggers: CSV by default, TensorBoard, and W&B fully offline (no account, no network)."""

from __future__ import annotations

from pathlib import Path

import pytest

from crt.pipeline import run

TINY = ["method=erm", "debug=tiny", "data.n_per_class=100", "data.n_test_per_class=20"]


def test_csv_logger_writes_per_stage_metrics(make_cfg, tmp_path: Path) -> None:
    run(make_cfg(*TINY), run_dir=tmp_path / "r")
    text = (tmp_path / "r" / "logs" / "pretrain" / "metrics.csv").read_text()
    assert "pretrain/val/bal_acc" in text and "pretrain/train/loss" in text


@pytest.mark.slow
def test_wandb_runs_offline_without_account(make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    res = run(make_cfg(*TINY, "logger=wandb"), run_dir=tmp_path / "r")
    assert "test/top1" in res["metrics"]
    assert list((tmp_path / "r" / "logs").rglob("offline-run-*"))


def test_tensorboard_logger(make_cfg, tmp_path: Path) -> None:
    run(make_cfg(*TINY, "logger=tensorboard"), run_dir=tmp_path / "r")
    assert list((tmp_path / "r" / "logs" / "tensorboard").rglob("events.out.tfevents.*"))

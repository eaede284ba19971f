"""Inputs that cannot work are refused before any data is read or anything is trained, in one paragraph."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import crt.data
from crt.errors import ConfigError
from crt.pipeline import run


@pytest.fixture
def no_data(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every dataset load: a check that comes 'before the data' leaves it empty."""
    loads: list[str] = []
    orig = crt.data.build_split

    def build_split(cfg, data_dir=None):  # noqa: ANN001
        loads.append(str(cfg.get("name")))
        return orig(cfg, data_dir)

    monkeypatch.setattr(crt.data, "build_split", build_split)
    monkeypatch.setattr("crt.pipeline.build_split", build_split)
    return loads


@pytest.mark.parametrize("trainer", ["gpu", "ddp"])
def test_gpu_trainer_without_cuda_is_refused_before_the_data(make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             no_data: list[str], trainer: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ConfigError) as err:
        run(make_cfg("debug=tiny", f"trainer={trainer}"), run_dir=tmp_path / "run")
    msg = str(err.value)
    assert "asks for a GPU, but this machine has none" in msg and "Fix: use trainer=cpu" in msg and "\n" not in msg
    assert no_data == [] and not (tmp_path / "run").exists()


def test_more_gpus_than_present_is_refused(make_cfg, monkeypatch: pytest.MonkeyPatch, no_data: list[str]) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    from crt.config import validate

    with pytest.raises(ConfigError, match=r"trainer.devices=4 asks for more GPUs than this machine has \(2\)"):
        validate(make_cfg("debug=tiny", "trainer=gpu", "trainer.devices=4"))

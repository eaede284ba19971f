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
    with pytest.raises(ConfigError, match=r"trainer.devices=4 asks for more GPUs than this machine has \(2\)"):
        run(make_cfg("debug=tiny", "trainer=gpu", "trainer.devices=4"))
    assert no_data == []


def test_a_gpu_experiment_still_validates_on_a_cpu_machine(make_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    from crt.config import validate

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    validate(make_cfg("experiment=cifar100_ecrt_mp"))  # a valid configuration; only running it needs the GPU


@pytest.mark.parametrize("override,stage,fix", [
    ("data.feature_dim=100000", "demix", "a smaller data.feature_dim"),  # the flow and the per-dimension critic
    ("stage.demix.critic.hidden=60000", "demix", "stage.demix.critic.hidden"),
    ("model.predictor.hidden=[200000,200000]", "refine", "model.predictor.hidden"),
])
def test_sizes_that_cannot_fit_are_refused_before_training(make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           override: str, stage: str, fix: str) -> None:
    import crt.stages.modules

    trained: list[str] = []
    monkeypatch.setattr(crt.stages.modules.ClassifierModule, "training_step", lambda *a: trained.append("step"))
    monkeypatch.setattr("crt.sizes.available_bytes", lambda device: 16 * 2**30)  # a 16 GiB machine
    with pytest.raises(ConfigError) as err:
        run(make_cfg("debug=tiny", override), run_dir=tmp_path / "run")
    msg = str(err.value)
    assert f"this run cannot fit: stage {stage} needs about" in msg and "16.0 GiB of memory available" in msg
    assert fix in msg and "\n" not in msg and trained == []


def test_estimate_counts_parameters_and_activations_exactly_for_an_mlp() -> None:
    from torch import nn

    from crt.sizes import _activation_bytes, _params

    net = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 3))
    assert _params(net) == (10 * 20 + 20 + 20 * 3 + 3) * 4 * 4  # weights, gradients, two Adam moments
    with torch.device("meta"):
        assert _activation_bytes(net.to("meta"), torch.empty(8, 10)) == 2 * 8 * (20 + 20 + 3) * 4


def test_the_default_run_fits_comfortably(make_cfg) -> None:
    from crt.config import validate
    from crt.data import build_split
    from crt.sizes import check_fits

    cfg = make_cfg()
    est = check_fits(validate(cfg), build_split(cfg.data, None), torch.device("cpu"))
    assert set(est) == {"pretrain", "features", "demix", "diagnostics", "refine"} and max(est.values()) < 2**30

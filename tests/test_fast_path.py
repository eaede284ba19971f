"""The fast path: no host syncs in training steps, compile falls back to eager with a reason, fp32 likelihood."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import pytest
import torch
from torchmetrics import MeanMetric

from crt.errors import ConfigError
from crt.pipeline import run
from crt.stages import accel
from crt.stages.accel import Compiled, compile_mode, count_host_syncs, running_mean, static_batches
from crt.stages.configs import CriticSpec
from crt.stages.modules import ClassifierModule, DemixData, DemixModule, DemixObjective
from crt.stages.training import TensorBatches


def test_sync_counter_sees_each_kind_of_host_read_and_restores_torch() -> None:
    t = torch.arange(6.0)
    with count_host_syncs() as c:
        t.sum().item()
        t.tolist()
        bool(t.sum() > 0)
        float(t[0])
        t[t > 2]
        torch.nonzero(t)
        t.cpu()
        MeanMetric().update(t)  # default NaN check: `if nans.any() or nans_weight.any()`, two reads
    assert c == Counter({"item": 1, "tolist": 1, "__bool__": 3, "__float__": 1, "bool_mask_index": 1, "nonzero": 1,
                         "cpu": 1})
    with count_host_syncs() as c:
        m = running_mean()
        for v in (1.0, 2.0, 6.0):
            m.update(torch.tensor(v))
    assert sum(c.values()) == 0
    assert m.compute().item() == pytest.approx(3.0)
    assert "item" not in torch.Tensor.__dict__ and "__bool__" not in torch.Tensor.__dict__  # patches undone


@pytest.mark.parametrize("method", ["ecrt_mp", "crt"])
def test_training_steps_make_no_host_sync(make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         method: str) -> None:
    seen: dict[str, Counter[str]] = {}
    steps: Counter[str] = Counter()

    def counting(cls: type) -> None:  # the loss of each batch (several per Lightning step: ChunkedSteps)
        orig = cls.step_loss

        def step(self, batch):  # noqa: ANN001, ANN202
            name = getattr(self, "prefix", "demix")
            with count_host_syncs() as c:
                out = orig(self, batch)
            seen.setdefault(name, Counter()).update(c)
            steps[name] += 1
            return out

        monkeypatch.setattr(cls, "step_loss", step)

    counting(ClassifierModule)
    counting(DemixModule)
    run(make_cfg("debug=tiny", f"method={method}", "data.n_per_class=200", "data.n_test_per_class=20", "logger=none"),
        run_dir=tmp_path / "run")
    assert set(steps) == {"pretrain", "demix", "refine"} and min(steps.values()) >= 2
    assert seen == {"pretrain": Counter(), "demix": Counter(), "refine": Counter()}


def test_compile_falls_back_to_eager_with_the_reason(caplog: pytest.LogCaptureFixture) -> None:
    def f(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    with caplog.at_level(logging.WARNING, logger=accel.__name__):
        graphs = Compiled(f, "reduce-overhead", device=torch.device("cpu"), static_shapes=True, what="demix step")
        ragged = Compiled(f, "default", device=torch.device("cpu"), static_shapes=False, what="refine network")
    assert not graphs.active and graphs.reason.startswith("CUDA graphs need a CUDA device")
    assert not ragged.active and ragged.reason.startswith("dynamic shapes")
    assert "demix step: trainer.compile=reduce-overhead not applied, training eagerly: CUDA graphs" in caplog.text
    assert "refine network: trainer.compile=default not applied, training eagerly: dynamic shapes" in caplog.text
    assert graphs(torch.ones(2)).tolist() == [2.0, 2.0]
    off = Compiled(f, None, device=torch.device("cpu"), static_shapes=True, what="x")
    assert not off.active and off.reason == "trainer.compile is off"


def test_compile_error_at_first_call_trains_eagerly(monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    def broken(fn, **_):  # noqa: ANN001, ANN202 - what a compiler failure looks like at the first call
        def call(*a):  # noqa: ANN002, ANN202
            raise RuntimeError("inductor: no C++ compiler found\nlong trace")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    c = Compiled(lambda x: x + 1, "default", device=torch.device("cpu"), static_shapes=True, what="pretrain network")
    assert c.active
    with caplog.at_level(logging.WARNING, logger=accel.__name__):
        assert c(torch.zeros(1)).item() == 1.0
    assert not c.active and c.reason == "compilation failed (RuntimeError: inductor: no C++ compiler found)"
    assert caplog.text.count("not applied") == 1


def test_compile_modes_and_static_batches() -> None:
    assert [compile_mode(v) for v in (False, None, "false", True, "true", "reduce-overhead")] == \
        [None, None, None, "default", "default", "reduce-overhead"]
    with pytest.raises(ConfigError, match=r"trainer.compile='fast' is unknown. Fix: .*reduce-overhead"):
        compile_mode("fast")
    x = torch.zeros(10, 1)
    assert static_batches(TensorBatches(x, batch_size=4, drop_last=True))
    assert not static_batches(TensorBatches(x, batch_size=4))  # 4, 4, 2
    assert static_batches(TensorBatches(x, batch_size=5)) and static_batches(TensorBatches(x, batch_size=16))


def test_stage_with_reduce_overhead_on_cpu_trains_eagerly_and_says_why(make_cfg, tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    cfg = make_cfg("debug=tiny", "data.n_per_class=100", "data.n_test_per_class=10", "logger=none",
                   "trainer.compile=reduce-overhead")
    with caplog.at_level(logging.WARNING, logger=accel.__name__):
        res = run(cfg, run_dir=tmp_path / "run")
    for what in ("pretrain network", "demix step", "refine network"):
        assert f"{what}: trainer.compile=reduce-overhead not applied, training eagerly: CUDA graphs need a CUDA " \
               "device, and this stage trains on cpu" in caplog.text
    assert 0.0 <= res["metrics"]["test/bal_acc"] <= 1.0


def test_demix_likelihood_stays_fp32_under_bf16_autocast() -> None:
    from crt.models import build_maf

    torch.manual_seed(0)
    z, y = torch.randn(64, 4) * 3, torch.randint(0, 3, (64,))
    critic = CriticSpec(hidden=8, embed_dim=None, normalize=True, negatives="batch", exclude_true=False,
                        clamp=(-5.0, 15.0), impl="batched")
    m = DemixModule(build_maf(4, 2, 16, 1, False), 3, DemixData(train=(z, y), val=(z, y)),
                    DemixObjective(rho=1e-2, critic=critic))
    ref = m.objective(z, y)["nll"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m.objective(z, y)
    assert out["nll"].dtype == torch.float32
    assert out["nll"].item() == pytest.approx(ref.item(), rel=1e-6)  # bf16 would be off by ~1e-2 relative


@pytest.mark.slow
def test_fast_image_settings_give_the_same_accuracy(make_cfg, tmp_path: Path) -> None:
    """Batch x4 with the learning rate scaled by lr_ref_batch, plus channels_last, against the plain settings,
    on a small image run (10 balanced classes of synthetic 16 x 16 images, ResNet-18 at width 8, ERM, 12 epochs).
    Measured here (test balanced accuracy, plain / fast): seed 0 0.917 / 0.900, seed 1 0.897 / 0.907; the two
    plain seeds differ by 0.02, so 0.06 is three times that spread."""
    common = ["data=synthetic_images", "method=erm", "logger=none", "progress=false", "data.num_classes=10",
              "data.ratio=1.0", "data.n_per_class=100", "data.n_max=100", "data.n_test_per_class=30", "data.noise=140",
              "+data.image_size=16", "+data.encoder.width=8", "data.train_transform=null", "stage.pretrain.epochs=12",
              "stage.pretrain.patience=null", "trainer=cpu"]
    plain = run(make_cfg(*common, "stage.pretrain.batch_size=32", "+data.encoder.channels_last=false"),
                run_dir=tmp_path / "plain")
    fast = run(make_cfg(*common, "stage.pretrain.batch_size=128", "stage.pretrain.lr_ref_batch=32",
                        "+data.encoder.channels_last=true"), run_dir=tmp_path / "fast")
    assert fast["stages"]["pretrain"]["selected"]["epochs_run"] == plain["stages"]["pretrain"]["selected"]["epochs_run"]
    a, b = plain["metrics"]["test/bal_acc"], fast["metrics"]["test/bal_acc"]
    assert a > 0.8 and b > 0.8  # both learned (chance is 0.1)
    assert abs(a - b) <= 0.06, (a, b)


def test_cifar_experiment_files_run_the_fast_path() -> None:
    from tests.conftest import ROOT, compose_cfg

    stems = sorted(p.stem for p in (ROOT / "configs" / "experiment").glob("cifar100_*.yaml"))
    assert len(stems) == 24
    for stem in stems:
        cfg = compose_cfg([f"experiment={stem}"])
        pre = cfg.stage.pretrain
        assert (cfg.trainer.accelerator, cfg.trainer.precision, cfg.trainer.benchmark, cfg.trainer.fused) == \
            ("gpu", "bf16-mixed", True, True), stem
        assert cfg.data.encoder.name == "resnet18_cifar" and cfg.data.encoder.channels_last is True, stem
        assert (pre.batch_size, pre.lr_ref_batch, pre.lr) == (512, 128, 1e-3), stem  # effective lr 4e-3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (the CPU check is the test above)")
def test_training_steps_make_no_cuda_sync(make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a GPU, CUDA itself reports every synchronising call (C++ ones too) inside the steps as an error."""
    steps: Counter[str] = Counter()
    for cls in (ClassifierModule, DemixModule):
        orig = cls.training_step

        def step(self, batch, idx, _orig=orig):  # noqa: ANN001, ANN202
            torch.cuda.set_sync_debug_mode("error")
            try:
                return _orig(self, batch, idx)
            finally:
                torch.cuda.set_sync_debug_mode("default")
                steps[type(self).__name__] += 1

        monkeypatch.setattr(cls, "training_step", step)
    run(make_cfg("debug=tiny", "data.n_per_class=200", "data.n_test_per_class=20", "logger=none", "trainer=gpu"),
        run_dir=tmp_path / "run")
    assert steps["ClassifierModule"] >= 4 and steps["DemixModule"] >= 2


@pytest.mark.slow
def test_demix_and_refine_steps_run_compiled_on_cpu_with_the_eager_metrics(make_cfg, tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.compile (inductor, default mode) on the CPU: the path trainer.compile takes on a GPU, minus CUDA graphs."""
    seen: dict[str, bool] = {}
    orig = Compiled.__call__

    def call(self, *a, **k):  # noqa: ANN001, ANN202
        out = orig(self, *a, **k)
        seen[self.what] = seen.get(self.what, True) and self.active  # active after the call: no fallback
        return out

    monkeypatch.setattr(Compiled, "__call__", call)
    over = ["debug=tiny", "logger=none", "stage.refine.batch_size=128", "stage.demix.batch_size=128"]
    eager = run(make_cfg(*over, tmp=tmp_path / "e"), run_dir=tmp_path / "e" / "run")
    assert not any(seen.values())
    seen.clear()
    compiled = run(make_cfg(*over, "trainer.compile=true", tmp=tmp_path / "c"), run_dir=tmp_path / "c" / "run")
    assert seen.get("demix step") and seen.get("refine network"), seen
    for k in ("test/top1", "test/bal_acc", "test/macro_f1"):
        assert abs(compiled["metrics"][k] - eager["metrics"][k]) <= 0.02, k
    assert abs(compiled["metrics"]["test/nll"] - eager["metrics"]["test/nll"]) <= 0.05

"""scripts/bench.py: the experiment file as run, at tiny size on the CPU; projection and run order by hand."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("crt_bench", ROOT / "scripts" / "bench.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_settings_alternate_and_reverse_every_other_round() -> None:
    assert bench.run_order(["experiment", "naive"], 3) == [(0, "experiment"), (0, "naive"), (1, "naive"),
                                                           (1, "experiment"), (2, "experiment"), (2, "naive")]


def test_projection_leaves_warmup_out_of_the_steady_state() -> None:
    # 3 epochs: the first (compilation, start-up) takes 10 s, the steady ones 2 s (1.5 s training + validation);
    # the stage took 20 s in all, so 20 - 14 = 6 s are fixed costs (set-up, feature extraction).
    res = {"stages": {
        "demix": {"seconds": 20.0, "n_train": 300, "peak_gpu_mb": None,
                  "selected": {"epoch_s": [10.0, 2.0, 2.0], "train_s": [9.0, 1.5, 1.5]}},
        "augment": {"seconds": 0.5, "n_train": 0, "selected": None}}}
    demix, augment = bench.stage_rows("x", res, {"demix": 100}, warmup=1)
    assert demix["samples_per_s"] == pytest.approx(300 * 2 / 3.0)  # steady epochs only
    assert demix["projected_s"] == pytest.approx(6.0 + 10.0 + 99 * 2.0)
    assert demix["steady_epochs"] == 2
    assert augment["projected_s"] == 0.5 and augment["samples_per_s"] != augment["samples_per_s"]  # NaN: no epochs


@pytest.mark.slow
def test_bench_runs_the_experiment_file_at_tiny_size(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "scripts/bench.py", "--experiment", "cifar100_ecrt_mp", "--size", "tiny",
                          "--device", "cpu", "--epochs", "2", "--json", str(tmp_path / "bench.json")], cwd=ROOT,
                         capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "speed-up experiment / naive" in out.stdout and "samples/s" in out.stdout
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["budget"] == {"pretrain": 200, "demix": 100, "refine": 50}  # the experiment file's epochs
    rows = data["rows"]
    assert {(r["setting"], r["stage"]) for r in rows} == \
        {(s, st) for s in ("experiment", "naive") for st in ("pretrain", "demix", "augment", "refine")}
    for r in rows:
        if r["stage"] != "augment":
            assert r["epochs"] == 2 and r["steady_epochs"] == 1 and r["samples_per_s"] > 0
            assert r["projected_s"] == pytest.approx(r["fixed_s"] + r["epoch_s"][0]
                                                     + (data["budget"][r["stage"]] - 1) * r["epoch_s"][1])
    assert [r["setting"] for r in data["runs"] if r["stage"] == "pretrain"] == ["experiment", "naive"]


@pytest.mark.slow
def test_gpu_check_dry_run_goes_through_every_step_on_the_cpu(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "scripts/bench.py", "--gpu-check", "--dry", "--epochs", "1",
                          "--write", str(tmp_path / "gpu.md")], cwd=ROOT, capture_output=True, text=True, timeout=900,
                         check=False, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    text = (tmp_path / "gpu.md").read_text()
    assert text.startswith("# GPU check") and "**Unmeasured**" in text
    assert "1-epoch pipeline" in text and "argmax agreement" in text and "gloo: init + all_reduce + barrier ok" in text
    for stage in ("pretrain", "demix", "refine"):  # eager and compiled throughput per trained stage
        assert f"| {stage} | " in text


def test_gpu_check_without_a_gpu_and_without_dry_is_one_paragraph(capsys: pytest.CaptureFixture[str]) -> None:
    if __import__("torch").cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert bench.main(["--gpu-check"]) == 2
    assert "error: no CUDA device here. Fix:" in capsys.readouterr().err


def test_epoch_times_include_the_checkpoint_written_at_the_epoch_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                     ) -> None:
    import time

    from crt.pipeline import run
    from crt.stages.checkpoint import StageCheckpoint
    from tests.conftest import compose_cfg

    orig = StageCheckpoint.save

    def slow_save(self, trainer, done):  # noqa: ANN001, ANN202 - a checkpoint that takes 0.5 s more
        time.sleep(0.5)
        return orig(self, trainer, done)

    monkeypatch.setattr(StageCheckpoint, "save", slow_save)
    res = run(compose_cfg(["debug=tiny", "method=erm", "checkpoint_interval_s=0"], tmp_path), run_dir=tmp_path / "r")
    sel = res["stages"]["pretrain"]["selected"]
    assert len(sel["epoch_s"]) == 2 and all(e - t >= 0.5 for e, t in zip(sel["epoch_s"], sel["train_s"]))


@pytest.mark.slow
def test_overhead_bench_trains_the_same_models_as_the_pipeline(capsys: pytest.CaptureFixture[str]) -> None:
    """scripts/bench_overhead.py at tiny size: one row per trained stage, and its plain loop selects the very
    metric value crt's stage selected (same batches, loss, optimizer, epochs and validation)."""
    spec = importlib.util.spec_from_file_location("crt_bench_overhead", ROOT / "scripts" / "bench_overhead.py")
    bench_overhead = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_overhead)
    bench_overhead.main(["debug=tiny", "data.n_per_class=150", "data.n_test_per_class=10", "--rounds", "1"])
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()
            if line.split() and line.split()[0] in ("pretrain", "demix", "refine", "trained")}
    assert set(rows) == {"pretrain", "demix", "refine", "trained"}
    for stage in ("pretrain", "demix", "refine"):
        epochs, crt_s, plain_s, ratio, picked_crt, _, picked_plain = rows[stage][1:]
        assert int(epochs) == 2 and float(crt_s) > 0 and float(plain_s) > 0 and float(ratio) > 0
        assert picked_crt == picked_plain, stage

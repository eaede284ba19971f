"""The pipeline end to end on tiny toy data: every method, stage reuse, results.json, run folders, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from crt.errors import ConfigError
from crt.pipeline import run, run_lock

ROOT = Path(__file__).resolve().parents[1]
TINY = ["debug=tiny", "data.n_per_class=200", "data.n_test_per_class=50", "data.input_dim=8"]
METRIC_KEYS = {"test/top1", "test/top5", "test/nll", "test/macro_f1", "test/minority_f1"}


@pytest.mark.parametrize("method,stages", [
    ("erm", ["pretrain"]),
    ("crt", ["pretrain", "demix", "augment", "refine"]),
    ("ecrt_1p", ["pretrain", "demix", "augment", "refine"]),
    ("ecrt_mp", ["pretrain", "demix", "augment", "refine"]),
])
def test_every_method_runs_all_its_stages(make_cfg, tmp_path: Path, method: str, stages: list[str]) -> None:
    res = run(make_cfg(f"method={method}", *TINY), run_dir=tmp_path / "run")
    assert list(res["stages"]) == stages
    assert all(not s["reused"] and s["seconds"] >= 0 for s in res["stages"].values())
    assert METRIC_KEYS <= set(res["metrics"])
    assert all(0.0 <= res["metrics"][k] <= 1.0 for k in METRIC_KEYS - {"test/nll"})
    on_disk = json.loads((tmp_path / "run" / "results.json").read_text())
    assert on_disk["metrics"] == res["metrics"]
    assert on_disk["config"]["method"]["name"] == method
    assert len(on_disk["per_class"]) == 7
    assert on_disk["per_class"][0]["train_count"] == 16 and on_disk["per_class"][1]["train_count"] == 160
    assert {"acc", "f1", "group", "majority"} <= set(on_disk["per_class"][0])


def test_lambda_sweep_reuses_pretrain_demix_and_augment(make_cfg, tmp_path: Path) -> None:
    first = run(make_cfg(*TINY, "method.lam=1e-3"), run_dir=tmp_path / "a")
    second = run(make_cfg(*TINY, "method.lam=0.1"), run_dir=tmp_path / "b")
    assert not any(s["reused"] for s in first["stages"].values())
    assert {k: v["reused"] for k, v in second["stages"].items()} == {
        "pretrain": True, "demix": True, "augment": True, "refine": False}
    third = run(make_cfg(*TINY, "method.rho=0.5"), run_dir=tmp_path / "c")
    assert {k: v["reused"] for k, v in third["stages"].items()} == {
        "pretrain": True, "demix": False, "augment": False, "refine": False}


def test_cached_stage_gives_identical_metrics(make_cfg, tmp_path: Path) -> None:
    a = run(make_cfg(*TINY), run_dir=tmp_path / "a")
    b = run(make_cfg(*TINY), run_dir=tmp_path / "b")
    assert all(s["reused"] for s in b["stages"].values())
    assert a["metrics"] == b["metrics"]


def test_finished_run_is_skipped_and_busy_folder_refused(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg("method=erm", *TINY)
    first = run(cfg, run_dir=tmp_path / "r")
    again = run(cfg, run_dir=tmp_path / "r")
    assert again["created"] == first["created"]  # read back, not recomputed
    with run_lock(tmp_path / "busy"), pytest.raises(ConfigError, match="Another job"):
        run(make_cfg("method=erm", *TINY, "skip_completed=false"), run_dir=tmp_path / "busy")


def test_finished_run_of_another_configuration_is_redone_not_shown(make_cfg, tmp_path: Path, caplog) -> None:
    """A run folder is named by its overrides only: after a default changes, its results.json is stale."""
    first = run(make_cfg("method=erm", *TINY), run_dir=tmp_path / "r")
    changed = run(make_cfg("method=erm", *TINY, "stage.pretrain.lr=3e-3"), run_dir=tmp_path / "r")
    assert changed["stages"]["pretrain"]["key"] != first["stages"]["pretrain"]["key"]
    assert not changed["stages"]["pretrain"]["reused"]  # trained again, not read back
    assert "stage keys of pretrain differ" in caplog.text
    on_disk = json.loads((tmp_path / "r" / "results.json").read_text())
    assert on_disk["stages"]["pretrain"]["key"] == changed["stages"]["pretrain"]["key"]
    caplog.clear()
    caplog.set_level("INFO", logger="crt.pipeline")
    again = run(make_cfg("method=erm", *TINY, "stage.pretrain.lr=3e-3"), run_dir=tmp_path / "r")
    assert again["created"] == changed["created"] and "already complete, skipping" in caplog.text  # now current: read back


def _cli(*args: str, tmp: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run.py", *args, f"paths.output_dir={tmp}", "progress=false"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args,needle", [
    (["data=nonexistent"], "unknown data 'nonexistent'"),  # run.py's group check, before Hydra composes
    (["method.lam=-1"], "method.lam=-1 is negative"),      # crt.config.resolve (the rest: tests/test_config.py)
])
def test_user_mistakes_end_in_a_message_not_a_traceback(tmp_path: Path, args: list[str], needle: str) -> None:
    out = _cli(*args, tmp=tmp_path)
    assert out.returncode == 2
    text = out.stdout + out.stderr
    assert "Traceback" not in text
    assert needle in text and "Fix:" in text


@pytest.mark.slow
def test_cli_runs_and_prints_table_and_results_path(tmp_path: Path) -> None:
    out = _cli(*TINY, tmp=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "test/minority_f1" in out.stdout
    path = Path(out.stdout.strip().splitlines()[-1].split("results: ", 1)[1])
    assert path.exists() and path.is_relative_to(tmp_path)
    assert "toy_henon/ecrt_mp" in str(path) and path.parent.name == "seed0"

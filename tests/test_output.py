"""What a run prints and logs (issue 23): a quiet default, honest progress lines, the early-stop line, the whole
pipeline in every job's loggers, and user mistakes as crt's one-paragraph errors."""

from __future__ import annotations

import csv
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from crt.errors import ConfigError
from crt.pipeline import run
from crt.stages.training import (HistoryLogger, bar_metrics, bar_text, early_stop_line, epoch_line, lines_every,
                                 summary_line)

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["data.n_per_class=100", "data.n_test_per_class=20", "data.input_dim=8"]
TINY = ["debug=tiny", *SMALL]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# --- the format functions ------------------------------------------------------------------------------------

def test_bar_reads_stage_epoch_of_budget_and_the_selection_metric() -> None:
    assert bar_text("refine", 27, 30) == "[refine] epoch 28/30"
    metrics = {"refine/val/bal_acc": torch.tensor(0.71234), "refine/train/loss": 0.5, "refine/val/ce": 0.9,
               "v_num": 3}
    assert bar_metrics(metrics, "refine", "refine/val/bal_acc") == {"val/bal_acc": "0.7123", "train/loss": "0.5000"}
    assert bar_metrics({"demix/val/loss": -0.25}, "demix", "demix/val/loss") == {"val/loss": "-0.2500"}


def test_epoch_line_and_early_stop_line() -> None:
    line = epoch_line("pretrain", 5, 30, {"pretrain/train/loss": 0.75, "pretrain/val/bal_acc": 0.69, "lr-Adam": 1e-3})
    assert line == "[pretrain] epoch 6/30  train/loss=0.7500  val/bal_acc=0.6900"
    assert early_stop_line("refine", 12, 30, "refine/val/bal_acc", 10, 2, "refine/val/bal_acc", 0.72) == (
        "[refine] early stopping at epoch 13/30: refine/val/bal_acc did not improve for 10 epochs; kept the weights "
        "of epoch 3, val/bal_acc=0.7200")


def test_early_stop_line_only_when_the_stop_came_before_the_budget(caplog) -> None:
    from types import SimpleNamespace

    from lightning.pytorch.callbacks import EarlyStopping

    from crt.stages.training import EarlyStopNote, KeepBest

    caplog.set_level(logging.INFO, logger="crt.stages.training")
    es, keep = EarlyStopping(monitor="refine/val/ce", patience=10), KeepBest("refine/val/ce", "min")
    keep.best, keep.best_epoch = 0.5, 19
    trainer = SimpleNamespace(callbacks=[keep, es], max_epochs=30, is_global_zero=True)
    es.stopped_epoch = 29  # patience ran out at the last epoch: nothing was cut short
    EarlyStopNote("refine", keep).on_train_end(trainer, None)
    assert not caplog.records
    es.stopped_epoch = 25
    EarlyStopNote("refine", keep).on_train_end(trainer, None)
    assert [r.getMessage() for r in caplog.records] == [
        "[refine] early stopping at epoch 26/30: refine/val/ce did not improve for 10 epochs; kept the weights of "
        "epoch 20, val/ce=0.5000"]


def test_piped_progress_is_a_few_lines_per_stage() -> None:
    assert [lines_every(True, k) for k in (2, 5, 30, 40)] == [1, 1, 6, 8]
    assert lines_every("lines", 40) == 1


def test_summary_line_counts_parameters_per_child() -> None:
    class Demixer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.flow, self.critic = torch.nn.Linear(4, 4), torch.nn.Linear(4, 100)
            self.critic.requires_grad_(False)
            self.log_tau = torch.nn.Parameter(torch.zeros(()))

    assert summary_line("demix", Demixer()) == (
        "[demix] 521 parameters (500 frozen): flow (Linear) 20, critic (Linear) 500, log_tau 1")


def test_history_of_a_resumed_stage_keeps_the_epochs_before_its_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "partial" / "history.jsonl"
    first = HistoryLogger(path)
    for epoch in range(4):  # killed during epoch 3 (0-based), checkpoint after epoch 2
        first.trainer = type("T", (), {"current_epoch": epoch})()
        first.log_metrics({"demix/val/loss": float(epoch)}, step=10 * epoch)
    resumed = HistoryLogger(path, resume_epoch=3)
    assert [r["epoch"] for r in resumed.records()] == [0, 1, 2]
    assert [r["step"] for r in HistoryLogger(path).records()] == []  # a fresh start forgets them


# --- runs ----------------------------------------------------------------------------------------------------

def test_piped_lines_show_each_epochs_own_train_loss(make_cfg, tmp_path: Path, capsys) -> None:
    run(make_cfg("method=erm", *TINY, "progress=lines", "stage.pretrain.epochs=3"), run_dir=tmp_path / "r")
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[pretrain] epoch")]
    assert [ln.split()[2] for ln in lines] == ["1/3", "2/3", "3/3"]
    rows = [r for r in csv.DictReader((tmp_path / "r" / "logs" / "pretrain" / "metrics.csv").open())
            if r.get("pretrain/train/loss")]
    logged = {int(r["epoch"]): float(r["pretrain/train/loss"]) for r in rows}
    shown = [float(re.search(r"train/loss=(-?[\d.]+)", ln).group(1)) for ln in lines]
    assert shown == [round(logged[e], 4) for e in range(3)]  # epoch 1's loss in line 1, the last epoch's too


def test_piped_auto_progress_prints_every_kth_epoch_and_the_last(make_cfg, tmp_path: Path, capsys) -> None:
    run(make_cfg("method=erm", *TINY, "progress=true", "stage.pretrain.epochs=12"), run_dir=tmp_path / "r")
    out = capsys.readouterr().out
    assert [ln.split()[2] for ln in out.splitlines() if ln.startswith("[pretrain] epoch")] == [
        "3/12", "6/12", "9/12", "12/12"]
    assert "[pretrain] " in out and "parameters: net (FeatureClassifier)" in out  # the one-line summary
    assert "Trainable params" not in out


def test_full_model_summary_on_request(make_cfg, tmp_path: Path, capsys) -> None:
    run(make_cfg("method=erm", *TINY, "callbacks.model_summary.max_depth=1"), run_dir=tmp_path / "r")
    out = capsys.readouterr().out
    assert "Trainable params" in out and "FeatureClassifier" in out


def test_progress_bar_names_the_stage_and_its_budget(make_cfg, tmp_path: Path, capsys) -> None:
    run(make_cfg("method=erm", *TINY, "progress=bar"), run_dir=tmp_path / "r")
    captured = capsys.readouterr()
    err = captured.out + captured.err  # Lightning's TQDM bar writes to stdout
    assert "[pretrain] epoch 2/2" in err and "val/bal_acc=" in err
    assert "v_num" not in err and "Epoch 1:" not in err


def test_early_stopping_says_when_it_stopped_and_which_epoch_was_kept(make_cfg, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="crt.stages.training")
    res = run(make_cfg("method=erm", *SMALL, "stage.pretrain.epochs=40", "stage.pretrain.patience=1",
                       "progress=false"), run_dir=tmp_path / "r")
    sel = res["stages"]["pretrain"]["selected"]
    assert sel["epochs_run"] < 40  # it did stop early
    lines = [r.getMessage() for r in caplog.records if "early stopping" in r.getMessage()]
    assert lines == [f"[pretrain] early stopping at epoch {sel['epochs_run']}/40: pretrain/val/bal_acc did not "
                     f"improve for 1 epochs; kept the weights of epoch {sel['epoch'] + 1}, "
                     f"val/bal_acc={sel['best']:.4f}"]


@pytest.mark.slow
def test_default_length_run_prints_at_most_40_lines_piped(tmp_path: Path) -> None:
    """The default epoch budgets (30/40/30, early stopping) on small data, as a user sees it piped."""
    out = subprocess.run([sys.executable, "run.py", "trainer=cpu", *SMALL, f"paths.output_dir={tmp_path}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600, env=ENV, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout + out.stderr
    lines = text.splitlines()
    assert len(lines) <= 40, text
    assert "LeafSpec" not in text and "log_every_n_steps" not in text and "Warning" not in text
    assert "Trainable params" not in text
    for stage in ("pretrain", "demix", "refine"):
        assert sum(ln.startswith(f"[{stage}] ") and " parameters" in ln for ln in lines) == 1
        assert 1 <= sum(ln.startswith(f"[{stage}] epoch") for ln in lines) <= 6


# --- loggers see the whole pipeline --------------------------------------------------------------------------

def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_lambda_sweep_job_has_the_reused_stages_curves_in_tensorboard(make_cfg, tmp_path: Path) -> None:
    base = [*TINY, "logger=[csv,tensorboard]"]
    first = run(make_cfg(*base, "method.lam=1e-3"), run_dir=tmp_path / "a")
    second = run(make_cfg(*base, "method.lam=0.1"), run_dir=tmp_path / "b")
    assert [s for s, v in second["stages"].items() if v["reused"]] == ["pretrain", "demix", "augment"]
    for stage, metric in (("pretrain", "pretrain/val/bal_acc"), ("demix", "demix/val/loss")):
        trained = _scalars(tmp_path / "a" / "logs" / "tensorboard" / stage)
        replayed = _scalars(tmp_path / "b" / "logs" / "tensorboard" / stage)
        assert replayed[metric] == trained[metric] and len(trained[metric]) == 2  # both epochs, same steps
        assert replayed[f"{stage}/train/loss"] == trained[f"{stage}/train/loss"]
        assert [v for _, v in replayed[f"{stage}/reused"]] == [1.0] and f"{stage}/reused" not in trained
    assert "refine/reused" not in _scalars(tmp_path / "b" / "logs" / "tensorboard" / "refine")
    rows = list(csv.DictReader((tmp_path / "b" / "logs" / "demix" / "metrics.csv").open()))
    assert any(r.get("demix/reused") == "1.0" for r in rows) and any(r.get("demix/val/loss") for r in rows)
    assert not any(v["reused"] for v in first["stages"].values())


def test_skip_message_says_how_to_log_a_finished_run_again(make_cfg, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="crt.pipeline")
    cfg = make_cfg("method=erm", *TINY, "skip_completed=true")
    run(cfg, run_dir=tmp_path / "r")
    run(cfg, run_dir=tmp_path / "r")
    assert "already complete, skipping" in caplog.text and "skip_completed=false" in caplog.text


# --- errors on the user route --------------------------------------------------------------------------------

def _run_main(capsys, *argv: str) -> tuple[int, str]:
    from crt.cli import run_main

    with pytest.raises(SystemExit) as exit_info:
        run_main(list(argv))
    return int(exit_info.value.code), capsys.readouterr().err


def test_override_of_a_missing_key_is_crts_error_at_exit_2(capsys, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    code, err = _run_main(capsys, "method.lamda=0.1", f"paths.output_dir={tmp_path}")
    assert code == 2, err
    assert "error: method.lamda=0.1: the config has no key method.lamda (did you mean method.lam?)" in err
    assert "Fix: use method.lam=0.1" in err and "not in struct" not in err
    code, err = _run_main(capsys, "stage.demix.epoch=3", f"paths.output_dir={tmp_path}")
    assert code == 2 and "did you mean stage.demix.epochs?" in err
    assert "HYDRA_FULL_ERROR" not in os.environ  # the user's setting is restored
    assert not list(tmp_path.rglob("results.json"))


def test_rich_callbacks_without_rich_fail_at_validation(make_cfg, tmp_path: Path, monkeypatch) -> None:
    from crt.config import validate
    from crt.stages import training

    monkeypatch.setattr(training, "_installed", lambda package: package != "rich")
    with pytest.raises(ConfigError, match=r"callbacks.progress_bar .*needs the `rich` package.*pip install rich"):
        validate(make_cfg("callbacks=rich"))
    loaded = []
    monkeypatch.setattr("crt.pipeline.build_split", lambda *a, **k: loaded.append(1))
    with pytest.raises(ConfigError, match="pip install rich"):
        run(make_cfg("callbacks=rich", "progress=false"), run_dir=tmp_path / "r")  # whatever the progress mode
    assert loaded == []  # before any data is read
    validate(make_cfg("callbacks=default"))

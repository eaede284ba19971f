"""Loggers, callbacks, trainer options and progress: what a run records, read back from the files."""

from __future__ import annotations

import csv
import glob
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from crt.errors import ConfigError
from crt.pipeline import run
from crt.stages.training import build_callbacks, progress_mode, trainer_options

TINY = ["method=erm", "debug=tiny", "data.n_per_class=100", "data.n_test_per_class=20"]
ROOT = Path(__file__).resolve().parents[1]


def test_csv_logger_writes_stage_metrics_hparams_and_test_metrics(make_cfg, tmp_path: Path) -> None:
    res = run(make_cfg(*TINY), run_dir=tmp_path / "r")
    logs = tmp_path / "r" / "logs"
    text = (logs / "pretrain" / "metrics.csv").read_text()
    assert "pretrain/val/bal_acc" in text and "pretrain/train/loss" in text
    hp = yaml.safe_load((logs / "pretrain" / "hparams.yaml").read_text())
    assert hp["seed"] == 0 and hp["method"]["name"] == "erm" and hp["data"]["n_per_class"] == 100
    rows = list(csv.DictReader((logs / "test" / "metrics.csv").open()))
    assert len(rows) == 1
    for k in ("test/top1", "test/nll", "val/bal_acc"):
        assert float(rows[0][k]) == pytest.approx(res["metrics"][k], rel=1e-12)
    assert yaml.safe_load((logs / "test" / "hparams.yaml").read_text())["seed"] == 0


def test_tensorboard_holds_hparams_and_test_metrics(make_cfg, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    res = run(make_cfg(*TINY, "seed=3", "logger=tensorboard"), run_dir=tmp_path / "r")
    tb = tmp_path / "r" / "logs" / "tensorboard"
    assert list((tb / "pretrain").glob("events.out.tfevents.*"))
    ea = EventAccumulator(str(tb / "test"))
    ea.Reload()
    for k in ("test/top1", "test/nll", "test/bal_acc"):
        (event,) = ea.Scalars(k)
        assert event.value == pytest.approx(res["metrics"][k], rel=1e-6)  # stored as float32
    content = ea.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hp = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hp["seed"].number_value == 3 and hp["method/name"].string_value == "erm"
    assert hp["data/n_per_class"].number_value == 100
    assert yaml.safe_load((tb / "pretrain" / "hparams.yaml").read_text())["seed"] == 3


def wandb_records(path: Path) -> list:
    """The protobuf records of an offline W&B run file (LevelDB log format: 32 KiB blocks of chunks)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, out, buf = 7, 32768, [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        buf += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            rec = pb.Record()
            rec.ParseFromString(buf)
            out.append(rec)
            buf = b""
    return out


@pytest.mark.slow
def test_multirun_wandb_one_offline_run_per_job_and_sweep_summary(tmp_path: Path) -> None:
    env = {**os.environ, "WANDB_DIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    env.pop("WANDB_MODE", None)
    env.pop("WANDB_API_KEY", None)
    out = subprocess.run([sys.executable, "run.py", "-m", "seed=0,1", "logger=wandb", *TINY,
                          f"paths.output_dir={tmp_path}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    (sweep,) = (tmp_path / "sweeps").iterdir()
    assert (sweep / "multirun.yaml").exists()
    seen = {}
    for seed in (0, 1):
        (folder,) = glob.glob(str(tmp_path / "runs" / "toy_henon" / "erm" / "*" / f"seed{seed}"))
        results = json.loads((Path(folder) / "results.json").read_text())
        (runfile,) = Path(folder).glob("logs/wandb/offline-run-*/run-*.wandb")  # one W&B run per job
        recs = wandb_records(runfile)
        (r,) = [x.run for x in recs if x.WhichOneof("record_type") == "run"]
        seen[seed] = r.display_name
        assert r.run_group == sweep.name
        config = {u.key: json.loads(u.value_json) for x in recs if x.WhichOneof("record_type") == "config"
                  for u in x.config.update}
        assert config["seed"] == seed and config["method"]["name"] == "erm"
        summary = {u.key: json.loads(u.value_json) for x in recs if x.WhichOneof("record_type") == "summary"
                   for u in x.summary.update if u.key}
        assert summary["test/top1"] == pytest.approx(results["metrics"]["test/top1"], rel=1e-9)
        history = {i.key or "/".join(i.nested_key) for x in recs if x.WhichOneof("record_type") == "history"
                   for i in x.history.item}
        assert {"pretrain/val/bal_acc", "pretrain/lr-Adam"} <= history  # stage metrics prefixed by stage
        assert [x.exit.exit_code for x in recs if x.WhichOneof("record_type") == "exit"] == [0]  # wandb.finish()
    assert seen == {0: "toy_henon-erm-seed0", 1: "toy_henon-erm-seed1"}
    # the sweep summary: printed, and in the sweep folder
    assert "Sweep summary" in out.stdout
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert len(rows) == 1 and rows[0]["n"] == "2" and rows[0]["seeds"] == "0 1"
    assert len((sweep / "jobs.jsonl").read_text().splitlines()) == 2


def test_trainer_options_pass_through_and_unknown_ones_are_errors() -> None:
    cls, opts = trainer_options({"accelerator": "cpu", "fast_dev_run": True, "max_time": "00:00:01:00",
                                 "accumulate_grad_batches": 2, "fused": False, "compile": False})
    assert cls.__name__ == "Trainer"
    assert opts == {"accelerator": "cpu", "fast_dev_run": True, "max_time": "00:00:01:00", "accumulate_grad_batches": 2}
    with pytest.raises(ConfigError, match=r"trainer.acumulate_grad_batches=2 is not an option.*accumulate_grad_batches"):
        trainer_options({"acumulate_grad_batches": 2})
    with pytest.raises(ConfigError, match=r"trainer.max_epochs is set by crt.*stage.<stage>.epochs"):
        trainer_options({"max_epochs": 3})


def test_trainer_option_reaches_the_trainer(make_cfg, tmp_path: Path) -> None:
    """trainer.limit_train_batches=1 (outside the old whitelist's spirit: any Trainer option) is applied."""
    res = run(make_cfg(*TINY, "+trainer.max_steps=1"), run_dir=tmp_path / "r")
    rows = list(csv.DictReader((tmp_path / "r" / "logs" / "pretrain" / "metrics.csv").open()))
    assert max(int(r["step"]) for r in rows) <= 1 and res["stages"]["pretrain"]["selected"]["epochs_run"] == 1


def test_callbacks_from_config(make_cfg) -> None:
    from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor

    from crt.stages.training import StageModelSummary, StageTQDMProgressBar

    cb = dict(make_cfg().callbacks)
    built = build_callbacks(cb, stage="refine", monitor="refine/val/bal_acc", mode="max", patience=7, bar=False,
                            has_logger=True)
    assert [type(c) for c in built[:2]] == [EarlyStopping, StageModelSummary]  # Lightning's, one line by default
    assert built[1].stage == "refine" and built[1]._max_depth == 0
    assert isinstance(built[2], LearningRateMonitor) and len(built) == 3
    es = built[0]
    assert (es.monitor, es.mode, es.patience) == ("refine/val/bal_acc", "max", 7)
    assert built[2].stage == "refine" and built[2].logging_interval == "epoch"
    built = build_callbacks(cb, stage="demix", monitor="demix/val/loss", mode="min", patience=None, bar=True,
                            has_logger=False)
    assert [type(c) for c in built] == [StageModelSummary, StageTQDMProgressBar]  # no patience, no logger: dropped
    assert (built[1].stage, built[1].monitor) == ("demix", "demix/val/loss")
    with pytest.raises(ConfigError, match="callbacks.x._target_"):
        build_callbacks({"x": {"_target_": "no.such.Callback"}}, stage="s", monitor="m", mode="max", patience=1,
                        bar=False, has_logger=False)


def test_progress_mode_follows_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert progress_mode(True) == "bar"
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    assert progress_mode(True) == "lines" and progress_mode("bar") == "bar" and progress_mode(False) == "off"
    with pytest.raises(ConfigError, match="progress="):
        progress_mode("sometimes")


def test_one_line_per_epoch_when_stdout_is_not_a_terminal(make_cfg, tmp_path: Path, capsys) -> None:
    run(make_cfg(*TINY, "progress=lines", "stage.pretrain.epochs=3"), run_dir=tmp_path / "r")
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[pretrain] epoch")]
    assert [ln.split()[2] for ln in lines] == ["1/3", "2/3", "3/3"]


def test_unknown_logger_entry_is_an_error(make_cfg, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="logger.csv"):
        run(make_cfg(*TINY, "logger.csv._target_=no.such.Logger"), run_dir=tmp_path / "r")


def test_cache_keys_change_only_with_options_that_change_training(make_cfg) -> None:
    from crt.config import resolve
    from crt.pipeline import stage_keys as keys_of

    def stage_keys(cfg):  # noqa: ANN001, ANN202 - same data fingerprint and code version for every config
        return keys_of(resolve(cfg), "data", "code")

    base = stage_keys(make_cfg())
    assert stage_keys(make_cfg("callbacks.model_summary=null", "trainer.log_every_n_steps=1")) == base
    assert stage_keys(make_cfg("callbacks=none"))["pretrain"] != base["pretrain"]  # no early stopping
    assert stage_keys(make_cfg("+trainer.accumulate_grad_batches=2"))["pretrain"] != base["pretrain"]


def test_logger_list_combines_entries(make_cfg, tmp_path: Path) -> None:
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from crt import tracking

    cfg = make_cfg("logger=[csv,tensorboard]")
    with tracking.job(cfg, tmp_path / "r") as job:
        loggers = job.stage_loggers("demix")
    assert [type(lg) for lg in loggers] == [CSVLogger, TensorBoardLogger]
    assert Path(loggers[0].log_dir) == tmp_path / "r" / "logs" / "demix"
    assert Path(loggers[1].log_dir) == tmp_path / "r" / "logs" / "tensorboard" / "demix"

"""Experiment tracking for one job: loggers built from the `logger` group, shared by the job's stages.

`configs/logger/<name>.yaml` holds one or more entries `name: {_target_: <Lightning logger class>, ...}`
(`logger=[csv,tensorboard]` combines them). crt fills in where each writes:

- CSVLogger: `<run_dir>/logs/<stage>/metrics.csv` (+ `hparams.yaml`); TensorBoardLogger:
  `<run_dir>/logs/tensorboard/<stage>/`; other classes: one instance per stage with `save_dir=<run_dir>/logs`
  and `version=<stage>` where they take them.
- WandbLogger: one run per job across all stages (metrics are already prefixed by stage), named
  `<data>-<method>-seed<k>`, grouped by the sweep (`$CRT_SWEEP`, set by the sweep callback), offline unless
  the entry says `offline: false`; `wandb.finish()` when the job ends, so the next job of a multirun
  starts its own run.

Every logger receives the resolved config (with the seed) as hyperparameters, and the final test metrics
at the end (`test` version for per-stage loggers: `logs/test/metrics.csv`, `logs/tensorboard/test/`, where
TensorBoard's HParams view pairs them with the hyperparameters).
"""

from __future__ import annotations

import inspect
import logging
import math
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from crt.errors import ConfigError

log = logging.getLogger(__name__)
_JOB: ContextVar[JobTracking | None] = ContextVar("crt_job", default=None)
CSV, TB, WANDB = (f"lightning.pytorch.loggers.{c}" for c in ("CSVLogger", "TensorBoardLogger", "WandbLogger"))
_ALIASES = {"lightning.pytorch.loggers.csv_logs.CSVLogger": CSV, "lightning.pytorch.loggers.tensorboard.TensorBoardLogger": TB,
            "lightning.pytorch.loggers.wandb.WandbLogger": WANDB}


def logger_entries(logger_cfg: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The logger group as {name: {_target_, kwargs...}}; a ConfigError for anything else."""
    entries: dict[str, dict[str, Any]] = {}
    for name, node in dict(logger_cfg or {}).items():
        if node is None:
            continue
        if not isinstance(node, Mapping) or "_target_" not in node:
            raise ConfigError(f"logger.{name}={node!r} is not a logger entry. Fix: each entry of the logger group "
                              "is a mapping with _target_ (a Lightning logger class) and its arguments, e.g. "
                              "logger=csv, logger=tensorboard, logger=wandb, logger=[csv,tensorboard] or logger=none.")
        entries[str(name)] = dict(node)
    return entries


def _instantiate(entry: str, node: Mapping[str, Any], **defaults: Any) -> Any:
    from hydra.utils import get_class

    target = str(node["_target_"])
    try:
        cls = get_class(target)
    except Exception as err:  # noqa: BLE001 - hydra wraps import errors in several types
        raise ConfigError(f"logger.{entry}._target_={target!r} cannot be imported ({err}). Fix: give the import path "
                          "of a Lightning logger class, e.g. lightning.pytorch.loggers.CSVLogger.") from None
    accepted = inspect.signature(cls.__init__).parameters
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in accepted.values())
    kwargs = {k: v for k, v in node.items() if k != "_target_" and v is not None}
    for k, v in defaults.items():
        if kwargs.get(k) is None and (k in accepted or takes_kwargs):
            kwargs[k] = v
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"logger.{entry} ({target}) rejected its arguments: {err}. Fix: use only that class's "
                          "arguments in configs/logger/.") from None


class JobTracking:
    """The loggers of one job (one run folder): per-stage instances, and one W&B run shared by all stages."""

    def __init__(self, entries: dict[str, dict[str, Any]], run_dir: str | os.PathLike, hparams: dict[str, Any],
                 name: str, group: str | None = None):
        self.entries, self.run_dir, self.hparams, self.name, self.group = entries, Path(run_dir), hparams, name, group
        self.cfg: DictConfig | None = None
        self._wandb: Any = None

    @classmethod
    def from_cfg(cls, cfg: DictConfig, run_dir: str | os.PathLike) -> JobTracking:
        entries = logger_entries(OmegaConf.to_container(cfg.logger, resolve=True) if cfg.get("logger") else {})
        hparams = OmegaConf.to_container(cfg, resolve=True)  # the resolved config, seed included
        job = cls(entries, run_dir, hparams, f"{cfg.data.name}-{cfg.method.name}-seed{int(cfg.seed)}",
                  os.environ.get("CRT_SWEEP") or None)
        job.cfg = cfg
        return job

    @property
    def save_dir(self) -> str:
        return str(self.run_dir / "logs")

    def _wandb_logger(self, name: str, node: Mapping[str, Any]) -> Any:
        if self._wandb is None:
            offline = bool(node.get("offline", True)) and os.environ.get("WANDB_MODE") != "online"
            os.environ.setdefault("WANDB_SILENT", "true")
            self._wandb = _instantiate(name, {**node, "offline": offline}, save_dir=self.save_dir, name=self.name,
                                       group=self.group, dir=self.save_dir)
            self._wandb.log_hyperparams(self.hparams)
        return self._wandb

    def stage_loggers(self, stage: str) -> list[Any]:
        """The loggers for one stage's Trainer (the resolved config already logged as hyperparameters)."""
        out: list[Any] = []
        for name, node in self.entries.items():
            target = _ALIASES.get(str(node["_target_"]), str(node["_target_"]))
            if target == WANDB:
                out.append(self._wandb_logger(name, node))
                continue
            if target == CSV:
                lg = _instantiate(name, node, save_dir=self.save_dir, name="", version=stage)
            elif target == TB:
                lg = _instantiate(name, node, save_dir=self.save_dir, name="tensorboard", version=stage,
                                  default_hp_metric=False)
            else:
                lg = _instantiate(name, node, save_dir=self.save_dir, version=stage)
            lg.log_hyperparams(self.hparams)
            out.append(lg)
        return out

    def replay(self, stage: str, history: Any) -> int:
        """A stage served from the cache: what it logged when it trained (`history`, its cache entry's meta) into
        this job's loggers, and `<stage>/reused` = 1, so that a run's logs hold every stage of its pipeline. The
        entry is data: records that are not {step, metrics of finite numbers} are skipped. Returns the records
        replayed."""
        if history is None:
            log.info("stage %s: its cache entry records no logged history (written by older code); this job's loggers "
                     "get no %s curves", stage, stage)
            return 0
        records = clean_history(history)
        if not records or not self.entries:
            return 0
        last = max(r["step"] for r in records)
        for lg in self.stage_loggers(stage):
            for rec in records:
                lg.log_metrics(rec["metrics"], step=rec["step"])
            lg.log_metrics({f"{stage}/reused": 1.0}, step=last)
            lg.save()
            lg.finalize("success")
        return len(records)

    def log_results(self, metrics: Mapping[str, float]) -> None:
        """The run's final (test and held-out) metrics to every logger, with the hyperparameters beside them."""
        scalars = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        for name, node in self.entries.items():
            target = _ALIASES.get(str(node["_target_"]), str(node["_target_"]))
            if target == WANDB:
                lg = self._wandb_logger(name, node)
                lg.log_metrics(scalars)
                lg.experiment.summary.update(scalars)
                continue
            if target == TB:
                lg = _instantiate(name, node, save_dir=self.save_dir, name="tensorboard", version="test",
                                  default_hp_metric=False)
                lg.log_hyperparams(self.hparams, metrics=scalars)  # the HParams view pairs them
            else:
                lg = _instantiate(name, node, save_dir=self.save_dir, **({"name": ""} if target == CSV else {}),
                                  version="test")
                lg.log_hyperparams(self.hparams)
                lg.log_metrics(scalars, step=0)
            lg.save()
            lg.finalize("success")

    def finish(self) -> None:
        """End the job's W&B run (the next job of a multirun then starts its own)."""
        if self._wandb is not None and self._wandb._experiment is not None:
            self._wandb.experiment.finish()
        self._wandb = None


def clean_history(history: Any, limit: int = 1_000_000) -> list[dict[str, Any]]:
    """The well-formed records of a stored history, `{"step": int, "metrics": {str: finite float}}` each."""
    out: list[dict[str, Any]] = []
    if not isinstance(history, list):
        return out
    for rec in history[:limit]:
        if not isinstance(rec, Mapping) or not isinstance(rec.get("metrics"), Mapping):
            continue
        step = rec.get("step", 0)
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            continue
        metrics = {str(k)[:200]: float(v) for k, v in rec["metrics"].items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        if metrics:
            out.append({"step": step, "metrics": metrics})
    return out


@contextmanager
def job(cfg: DictConfig, run_dir: str | os.PathLike) -> Iterator[JobTracking]:
    """Make `cfg`'s loggers the current job's for every stage Trainer built inside (make_trainer)."""
    tracking = JobTracking.from_cfg(cfg, run_dir)
    token = _JOB.set(tracking)
    try:
        yield tracking
    finally:
        _JOB.reset(token)
        tracking.finish()


def current() -> JobTracking | None:
    return _JOB.get()

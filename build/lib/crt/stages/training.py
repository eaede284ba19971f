"""What every Lightning stage shares: in-memory batching, best-state model selection, trainer building."""

from __future__ import annotations

import difflib
import inspect
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback, EarlyStopping, LearningRateMonitor, ModelSummary, ProgressBar

from crt.distributed import EndSpawnedGroup

log = logging.getLogger(__name__)


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class TensorBatches:
    """Mini-batches sliced from tensors that already sit on the training device (no DataLoader, no workers).

    Shuffling draws one permutation per epoch from a seeded CPU generator, identical on every rank, and each
    rank takes its strided share (DDP without a DistributedSampler). `weights` switches to sampling with
    replacement (the class-balanced sampler); `transform` runs on whole batches (e.g. on-device crop/flip).
    """

    def __init__(self, *tensors: torch.Tensor, batch_size: int, shuffle: bool = True, drop_last: bool = False,
                 seed: int = 0, weights: torch.Tensor | None = None, num_samples: int | None = None,
                 transform: Any = None):
        self.tensors = tensors
        self.n = len(tensors[0])
        self.batch_size = max(1, int(batch_size))
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self.weights = weights
        self.num_samples = int(num_samples) if num_samples is not None else self.n
        self.transform = transform
        self.epoch = 0

    def _per_rank(self) -> int:
        rank, world = _rank_world()
        total = self.num_samples if self.weights is not None else self.n
        if world > 1 and (self.shuffle or self.weights is not None):
            return total // world
        return len(range(rank, total, world))

    def __len__(self) -> int:
        n = self._per_rank()
        return n // self.batch_size if self.drop_last and n >= self.batch_size else -(-n // self.batch_size)

    def _indices(self, epoch: int) -> torch.Tensor:
        """This rank's sample order in `epoch`: a function of (seed, epoch) only, so a resumed run redraws it."""
        rank, world = _rank_world()
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        if self.weights is not None:
            idx = torch.multinomial(self.weights.cpu().double(), self.num_samples, replacement=True, generator=g)
        elif self.shuffle:
            idx = torch.randperm(self.n, generator=g)
        else:
            idx = torch.arange(self.n)
        return idx[rank::world][:self._per_rank()].to(self.tensors[0].device, non_blocking=True)

    def _batch(self, idx: torch.Tensor, i: int) -> tuple[torch.Tensor, ...]:
        sel = idx[i * self.batch_size:(i + 1) * self.batch_size]
        batch = tuple(t[sel] for t in self.tensors)
        if self.transform is not None:
            batch = (self.transform(batch[0]), *batch[1:])
        return batch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        epoch = self.epoch  # read at the first batch (after on_train_epoch_start, see StageCheckpoint)
        self.epoch += 1
        idx = self._indices(epoch)
        for i in range(len(self)):
            yield self._batch(idx, i)

    def batch_at(self, step: int) -> tuple[torch.Tensor, ...]:
        """Batch `step` of the endless stream epoch 0, epoch 1, ... (a second stream cycled by global step)."""
        epoch, i = divmod(int(step), len(self))
        if getattr(self, "_cached", None) is None or self._cached[0] != epoch:
            self._cached = (epoch, self._indices(epoch))
        return self._batch(self._cached[1], i)


class KeepBest(Callback):
    """Model selection: remember the weights at the best held-out score, restore them when fitting ends.

    Restoring inside the (possibly spawned) training process means the weights that come back are the
    selected ones under every strategy.
    """

    def __init__(self, monitor: str, mode: str = "max"):
        self.monitor, self.mode = monitor, mode
        self.best: float | None = None
        self.best_epoch = -1
        self.state: dict[str, torch.Tensor] | None = None

    def _better(self, v: float) -> bool:
        return self.best is None or (v > self.best if self.mode == "max" else v < self.best)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        v = float(trainer.callback_metrics[self.monitor])
        if v == v and self._better(v):  # v == v: skip NaN
            self.best, self.best_epoch = v, trainer.current_epoch
            self.state = {k: t.detach().clone() for k, t in pl_module.state_dict().items()}

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.state is not None:
            pl_module.load_state_dict(self.state)
        # callback_metrics travel back from spawned DDP workers; the callback object itself does not
        trainer.callback_metrics["selected/best"] = torch.tensor(float("nan") if self.best is None else self.best)
        trainer.callback_metrics["selected/epoch"] = torch.tensor(float(self.best_epoch))

    def state_dict(self) -> dict[str, Any]:  # saved in mid-stage checkpoints
        return {"best": self.best, "best_epoch": self.best_epoch, "state": self.state}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best, self.best_epoch, self.state = state_dict["best"], state_dict["best_epoch"], state_dict["state"]

    def summary(self, trainer: pl.Trainer | None = None) -> dict[str, Any]:
        """Monitor, best value and epoch (read from the trainer's metrics when fitting ran in other processes)."""
        if self.best is None and trainer is not None and "selected/best" in trainer.callback_metrics:
            best = float(trainer.callback_metrics["selected/best"])
            return {"monitor": self.monitor, "best": None if best != best else best,
                    "epoch": int(trainer.callback_metrics["selected/epoch"])}
        return {"monitor": self.monitor, "best": self.best, "epoch": self.best_epoch}


class EpochLine(Callback):
    """Progress as one line per epoch (readable in logs and CI, unlike redrawn bars)."""

    def __init__(self, stage: str, every: int = 1):  # every epoch by default (README: one line per epoch)
        self.stage, self.every = stage, max(1, every)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        e = trainer.current_epoch
        if e % self.every and e + 1 != trainer.max_epochs:
            return
        shown = {k: float(v) for k, v in trainer.callback_metrics.items() if "/val/" in k or k.endswith("train/loss")}
        vals = "  ".join(f"{k.split('/', 1)[1]}={v:.4f}" for k, v in sorted(shown.items()))
        print(f"[{self.stage}] epoch {e + 1}/{trainer.max_epochs}  {vals}", flush=True)


def make_trainer(trainer_cfg: Mapping[str, Any], *, max_epochs: int, stage: str, run_dir: str,
                 logger_cfg: Mapping[str, Any] | None, monitor: str, mode: str, patience: int | None,
                 grad_clip: float = 0.0, progress: bool = True,
                 checkpoint: Callback | None = None) -> tuple[pl.Trainer, KeepBest]:
    """A Lightning Trainer for one stage, with best-state selection on `monitor`; `checkpoint`
    (crt.stages.checkpoint.StageCheckpoint) adds mid-stage checkpoints.

    The Trainer class and its options come from the `trainer` group (`_target_`, default
    lightning.pytorch.Trainer; an option the class does not take is a ConfigError), the callbacks from the
    `callbacks` group, the loggers from the job's tracking (crt.tracking) or, outside a job, `logger_cfg`.
    """
    from crt import tracking

    job = tracking.current()
    if job is None:  # a stage run outside pipeline.run (benchmarks): loggers without job-level state
        job = tracking.JobTracking(tracking.logger_entries(logger_cfg), run_dir, {}, os.path.basename(run_dir))
    loggers = job.stage_loggers(stage)
    cfg = job.cfg
    callbacks_cfg = _plain(cfg.get("callbacks")) if cfg is not None else DEFAULT_CALLBACKS
    mode_p = progress_mode(cfg.get("progress", True) if cfg is not None else True) if progress else "off"
    keep = KeepBest(monitor, mode)
    callbacks: list[Callback] = [keep] + ([checkpoint] if checkpoint is not None else [])
    built = build_callbacks(callbacks_cfg, stage=stage, monitor=monitor, mode=mode, patience=patience,
                            bar=mode_p == "bar", has_logger=bool(loggers))
    callbacks += built
    if mode_p == "lines":
        callbacks.append(EpochLine(stage))
    callbacks.append(EndSpawnedGroup())  # ddp_spawn workers destroy their gloo group before exiting (crt.distributed)
    if any(isinstance(c, ModelSummary) for c in built):
        _show_model_summaries()
    cls, options = trainer_options(trainer_cfg)
    kwargs: dict[str, Any] = dict(
        enable_checkpointing=False, num_sanity_val_steps=0, log_every_n_steps=10, default_root_dir=run_dir,
    )
    kwargs.update(options)
    if checkpoint is not None:  # Lightning refuses a Checkpoint callback when checkpointing is off
        kwargs["enable_checkpointing"] = True
    trainer = cls(
        max_epochs=max_epochs, callbacks=callbacks, logger=loggers or False, gradient_clip_val=grad_clip or None,
        enable_model_summary=any(isinstance(c, ModelSummary) for c in built),
        enable_progress_bar=any(isinstance(c, ProgressBar) for c in built), **kwargs,
    )
    return trainer, keep


def _show_model_summaries() -> None:
    """Lightning logs the model summary at INFO, below the level crt sets for Lightning: print it, once."""
    lg = logging.getLogger("lightning.pytorch.callbacks.model_summary")
    lg.setLevel(logging.INFO)
    if not any(getattr(h, "_crt", False) for h in lg.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._crt = True  # type: ignore[attr-defined]
        lg.addHandler(handler)
    lg.propagate = False  # not a second time through Lightning's or Hydra's handlers


def _plain(node: Any) -> Any:
    from omegaconf import DictConfig, OmegaConf

    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def progress_mode(value: Any) -> str:
    """`progress`: true/auto (a bar on a terminal, one line per epoch otherwise), bar, lines, or false."""
    if value in (False, None, "false", "off", "none"):
        return "off"
    if value in (True, "true", "auto"):
        return "bar" if sys.stdout.isatty() else "lines"
    if value in ("bar", "lines"):
        return str(value)
    from crt.errors import ConfigError

    raise ConfigError(f"progress={value!r} is unknown. Fix: use progress=true (bar on a terminal, one line per "
                      "epoch otherwise), bar, lines or false.")


# Outside a job (no config): what the callbacks group's default gives.
DEFAULT_EARLY_STOPPING = {"_target_": "lightning.pytorch.callbacks.EarlyStopping", "monitor": None, "mode": None,
                          "patience": None, "check_finite": False}
DEFAULT_CALLBACKS = {"early_stopping": DEFAULT_EARLY_STOPPING}
# Trainer arguments crt sets from elsewhere in the config, with where to set them instead.
_OWNED = {"max_epochs": "stage.<stage>.epochs", "callbacks": "the callbacks group (callbacks=...)",
          "logger": "the logger group (logger=...)", "gradient_clip_val": "stage.<stage>.grad_clip",
          "enable_progress_bar": "progress=true|bar|lines|false", "enable_model_summary": "callbacks.model_summary"}
_CRT_KEYS = {"_target_", "fused", "compile"}  # read by crt itself, not Trainer arguments


def trainer_options(trainer_cfg: Mapping[str, Any]) -> tuple[type, dict[str, Any]]:
    """The Trainer class (`_target_`) and the options to pass it; unknown or crt-owned options are errors."""
    from hydra.utils import get_class

    from crt.errors import ConfigError

    cfg = dict(_plain(trainer_cfg) or {})
    target = str(cfg.get("_target_", "lightning.pytorch.Trainer"))
    try:
        cls = get_class(target)
    except Exception as err:  # noqa: BLE001
        raise ConfigError(f"trainer._target_={target!r} cannot be imported ({err}). Fix: use "
                          "lightning.pytorch.Trainer or the import path of a subclass.") from None
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "args", "kwargs"}
    options: dict[str, Any] = {}
    for key, value in cfg.items():
        if key in _CRT_KEYS:
            continue
        if key in _OWNED:
            raise ConfigError(f"trainer.{key} is set by crt. Fix: remove it and use {_OWNED[key]}.")
        if key not in accepted:
            near = difflib.get_close_matches(key, sorted(accepted), n=3)
            raise ConfigError(f"trainer.{key}={value!r} is not an option of {target}. Fix: remove it or use one "
                              f"of its arguments{' (did you mean ' + ', '.join(near) + '?)' if near else ''}.")
        if value is not None:
            options[key] = value
    return cls, options


def check_accelerator(options: Mapping[str, Any]) -> None:
    """`trainer.accelerator=gpu|cuda` on a machine without such a device is a ConfigError (crt.pipeline.run calls
    it before any data is read; Lightning would raise it after the data loaded). Not part of validation: a GPU
    experiment is a valid configuration on a machine that cannot run it."""
    import torch

    from crt.errors import ConfigError

    acc, devices = str(options.get("accelerator", "cpu")), options.get("devices", "auto")
    if acc not in ("gpu", "cuda"):
        return
    mps = acc == "gpu" and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    have = torch.cuda.device_count() if torch.cuda.is_available() else (1 if mps else 0)
    if have == 0:
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise ConfigError(f"trainer.accelerator={acc} asks for a GPU, but this machine has none that torch "
                          f"{torch.__version__} ({build}) can use. Fix: use trainer=cpu (trainer=ddp_sim for DDP "
                          "on CPU processes), or run on a machine with a CUDA GPU.")
    if isinstance(devices, int) and not isinstance(devices, bool) and devices > have:
        raise ConfigError(f"trainer.devices={devices} asks for more GPUs than this machine has ({have}). Fix: use "
                          f"trainer.devices={have} (or -1 for all of them).")


class StageLearningRateMonitor(LearningRateMonitor):
    """Lightning's LearningRateMonitor with the stage as prefix: `refine/lr-Adam`."""

    def __init__(self, stage: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.stage = stage

    def _extract_stats(self, trainer: pl.Trainer, interval: str) -> dict[str, float]:
        return {f"{self.stage}/{k}": v for k, v in super()._extract_stats(trainer, interval).items()}


def build_callbacks(callbacks_cfg: Mapping[str, Any] | None, *, stage: str, monitor: str, mode: str,
                    patience: int | None, bar: bool, has_logger: bool) -> list[Callback]:
    """The `callbacks` group's entries for one stage (each `{_target_: class, ...}`, null drops one).

    EarlyStopping's monitor/mode/patience left null become the stage's selection metric and
    `stage.<stage>.patience` (null or 0 there: no early stopping); progress bars are used only in bar mode;
    LearningRateMonitor only when the stage has a logger.
    """
    from hydra.utils import instantiate

    from crt.errors import ConfigError

    out: list[Callback] = []
    for name, node in dict(callbacks_cfg or {}).items():
        if node is None:
            continue
        if not isinstance(node, Mapping) or "_target_" not in node:
            raise ConfigError(f"callbacks.{name}={node!r} is not a callback entry. Fix: a mapping with _target_ (a "
                              "Lightning callback class) and its arguments, or null to drop it (configs/callbacks/).")
        node = dict(node)
        try:
            from hydra.utils import get_class

            cls = get_class(str(node["_target_"]))
        except Exception as err:  # noqa: BLE001
            raise ConfigError(f"callbacks.{name}._target_={node['_target_']!r} cannot be imported ({err}). Fix: "
                              "give the import path of a Lightning callback class.") from None
        if issubclass(cls, EarlyStopping):
            node["patience"] = node.get("patience") if node.get("patience") is not None else patience
            if not node["patience"]:
                continue
            node["monitor"] = node.get("monitor") or monitor
            node["mode"] = node.get("mode") or mode
        if issubclass(cls, ProgressBar) and not bar:
            continue
        if issubclass(cls, LearningRateMonitor) and not has_logger:
            continue
        if cls is LearningRateMonitor:  # the stage's name in front, as for every other metric (one W&B run per job)
            node["_target_"] = f"{__name__}.StageLearningRateMonitor"
            node["stage"] = stage
        try:
            out.append(instantiate(node))
        except Exception as err:  # noqa: BLE001 - hydra wraps the class's own errors
            cause = err.__cause__ or err
            raise ConfigError(f"callbacks.{name} ({node['_target_']}) could not be built: {cause}. Fix: check its "
                              "arguments in configs/callbacks/ (a missing package must be installed, e.g. "
                              "`pip install rich` for RichProgressBar).") from None
    return out


# Trainer options that do not change what a stage computes (where and how fast it runs, what it prints).
_NEUTRAL_TRAINER_KEYS = {"_target_", "accelerator", "devices", "strategy", "num_nodes", "precision", "fused", "compile",
                         "log_every_n_steps", "enable_checkpointing", "default_root_dir", "benchmark", "deterministic",
                         "profiler", "barebones", "detect_anomaly", "sync_batchnorm", "use_distributed_sampler",
                         "plugins", "inference_mode", "reload_dataloaders_every_n_epochs"}
_NEUTRAL_CALLBACKS = (ModelSummary, ProgressBar, LearningRateMonitor)


def training_key(cfg: Any) -> dict[str, Any] | None:
    """What a stage's cache key must add for callbacks and Trainer options that change training: Trainer
    options beyond the neutral ones (max_time, accumulate_grad_batches, ...) and callbacks other than the
    summary / progress / LR-monitor ones when they differ from the default early stopping. None when there
    are none, so the default keys stay as they were."""
    from hydra.utils import get_class

    trainer = {k: v for k, v in dict(_plain(cfg.get("trainer")) or {}).items()
               if k not in _NEUTRAL_TRAINER_KEYS and v is not None}
    callbacks = {}
    for name, node in dict(_plain(cfg.get("callbacks")) or {}).items():
        if node is None:
            continue
        try:
            if issubclass(get_class(str(node["_target_"])), _NEUTRAL_CALLBACKS):
                continue
        except Exception:  # noqa: BLE001 - unknown classes are reported when the Trainer is built
            pass
        callbacks[name] = node
    out: dict[str, Any] = {"trainer": trainer} if trainer else {}
    if callbacks != {"early_stopping": DEFAULT_EARLY_STOPPING}:  # e.g. callbacks=none: no early stopping
        out["callbacks"] = callbacks
    return out or None

"""What every Lightning stage shares: in-memory batching, best-state model selection, trainer building."""

from __future__ import annotations

import difflib
import importlib.util
import inspect
import json
import logging
import math
import os
import sys
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import (Callback, EarlyStopping, LearningRateMonitor, ModelSummary, ProgressBar,
                                         RichProgressBar, TQDMProgressBar)
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only

from crt.distributed import EndSpawnedGroup

log = logging.getLogger(__name__)
# Lightning 2.6's own pytree helper (lightning/pytorch/utilities/_pytree.py) builds torch's deprecated LeafSpec at
# every fit; the FutureWarning is about Lightning's code, not crt's or the user's, and crt cannot fix it there.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning)
LINES_PER_STAGE = 5  # progress=true with piped output: about this many epoch lines per stage (progress=lines: all)


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
        self.chunk = 1  # batches per item: > 1 yields lists of batches (ChunkedSteps: several optimizer steps per call)

    def _per_rank(self) -> int:
        rank, world = _rank_world()
        total = self.num_samples if self.weights is not None else self.n
        if world > 1 and (self.shuffle or self.weights is not None):
            return total // world
        return len(range(rank, total, world))

    def n_batches(self) -> int:
        """Batches per epoch on this rank."""
        n = self._per_rank()
        return n // self.batch_size if self.drop_last and n >= self.batch_size else -(-n // self.batch_size)

    def __len__(self) -> int:  # items per epoch: batches, or chunks of `chunk` batches
        return -(-self.n_batches() // self.chunk)

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
        n = self.n_batches()
        if self.chunk == 1:
            for i in range(n):
                yield self._batch(idx, i)
            return
        for i in range(0, n, self.chunk):
            yield [self._batch(idx, j) for j in range(i, min(i + self.chunk, n))]

    def batch_at(self, step: int) -> tuple[torch.Tensor, ...]:
        """Batch `step` of the endless stream epoch 0, epoch 1, ... (a second stream cycled by global step)."""
        epoch, i = divmod(int(step), self.n_batches())
        if getattr(self, "_cached", None) is None or self._cached[0] != epoch:
            self._cached = (epoch, self._indices(epoch))
        return self._batch(self._cached[1], i)


def steps_per_call(trainer: pl.Trainer, wanted: int) -> int:
    """How many optimizer steps one Lightning training step makes (ChunkedSteps): `trainer.steps_per_call`, or 1
    where Lightning must see every batch: several processes (DDP syncs gradients once per forward of its wrapper),
    a cut budget (limit_train_batches, fast_dev_run, max_steps, overfit_batches), gradient accumulation or fp16 loss
    scaling (whose unscaling before clipping is Lightning's automatic loop's)."""
    full = trainer.limit_train_batches in (1.0, None) and not isinstance(trainer.limit_train_batches, int)
    scaled = getattr(trainer.precision_plugin, "scaler", None) is not None  # fp16 loss scaling: Lightning's own loop
    if (wanted <= 1 or trainer.world_size > 1 or not full or trainer.fast_dev_run or trainer.max_steps != -1
            or trainer.overfit_batches or trainer.accumulate_grad_batches != 1 or scaled):
        return 1
    return int(wanted)


class ChunkedSteps:
    """Several optimizer steps per Lightning training step, for modules trained on `TensorBatches`.

    Lightning's loop costs about 0.7 ms per training step on a small CPU (hooks, closure, precision plugin), as
    much as a whole step of the toy's networks. With `use_chunks(k)` (crt.stages.common.fit, `trainer.
    steps_per_call`) the module switches to manual optimization and each Lightning step receives k batches and
    makes k optimizer steps in the order automatic optimization makes them (forward, zero_grad, backward,
    gradient clipping, step), so the numbers are bit-identical; the learning-rate schedule steps at every epoch
    end as before, and `global_step` and the loggers' steps still count optimizer steps. `step_loss(batch)` is the
    module's loss of one batch.
    """

    chunk: int = 1
    chunk_clip: float = 0.0

    def use_chunks(self, k: int, grad_clip: float = 0.0) -> None:
        self.chunk, self.chunk_clip = int(k), float(grad_clip or 0.0)
        self.automatic_optimization = k == 1

    def chunked(self, batches: TensorBatches) -> TensorBatches:
        batches.chunk = self.chunk
        return batches

    def step_loss(self, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        raise NotImplementedError

    def training_step(self, batch: Any, _: int) -> torch.Tensor | None:
        if self.automatic_optimization:
            return self.step_loss(batch)
        opt = self.optimizers()
        for b in batch:
            loss = self.step_loss(b)
            opt.zero_grad()
            self.manual_backward(loss)
            if self.chunk_clip:
                self.clip_gradients(opt, gradient_clip_val=self.chunk_clip, gradient_clip_algorithm="norm")
            opt.step()
        # Lightning's loggers step by batches that stepped (one per call, added after this): count every batch, so
        # that logged steps are optimizer steps as with automatic optimization
        self.trainer.fit_loop.epoch_loop._batches_that_stepped += len(batch) - 1
        return None

    def step_schedules(self) -> None:
        """Manual optimization: the epoch-interval learning-rate schedule steps here (Lightning does it otherwise)."""
        if self.automatic_optimization:
            return
        sched = self.lr_schedulers()  # None, one scheduler, or a list
        for s in sched if isinstance(sched, list) else filter(None, [sched]):
            s.step()


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


def epoch_line(stage: str, epoch: int, max_epochs: int | None, metrics: Mapping[str, Any]) -> str:
    """`[stage] epoch k/K  train/loss=...  val/...=...` for 0-based `epoch`, from the trainer's callback metrics."""
    shown = {k: float(v) for k, v in metrics.items() if "/val/" in k or k.endswith("train/loss")}
    vals = "  ".join(f"{k.split('/', 1)[1]}={v:.4f}" for k, v in sorted(shown.items()))
    return f"[{stage}] epoch {epoch + 1}/{max_epochs}  {vals}".rstrip()


def lines_every(value: Any, max_epochs: int) -> int:
    """Epochs between two progress lines: 1 for progress=lines, else about LINES_PER_STAGE lines per stage."""
    return 1 if value == "lines" else max(1, math.ceil(max_epochs / LINES_PER_STAGE))


class EpochLine(Callback):
    """Progress as one line per epoch, or every `every`-th epoch and the last (readable in logs and CI).

    Lightning logs an epoch's train metrics after every `on_train_epoch_end` hook, so the line of epoch k is
    printed when epoch k+1 starts, and the last epoch's when training ends: each line shows its own epoch's loss.
    """

    def __init__(self, stage: str, every: int = 1):
        self.stage, self.every = stage, max(1, every)
        self._pending: int | None = None  # the epoch that ended and is not printed yet

    def _show(self, trainer: pl.Trainer) -> None:
        if self._pending is not None and trainer.is_global_zero:
            print(epoch_line(self.stage, self._pending, trainer.max_epochs, trainer.callback_metrics), flush=True)
        self._pending = None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._pending = trainer.current_epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending is not None and (self._pending + 1) % self.every:
            self._pending = None  # not one of the shown epochs
        self._show(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._show(trainer)  # the last epoch, always


def early_stop_line(stage: str, stopped: int, max_epochs: int | None, monitor: str, patience: int,
                    kept: int, kept_monitor: str, best: float | None) -> str:
    """The line that says where early stopping ended a stage and which epoch's weights were kept (0-based epochs)."""
    value = f", {kept_monitor.split('/', 1)[-1]}={best:.4f}" if best is not None else ""
    return (f"[{stage}] early stopping at epoch {stopped + 1}/{max_epochs}: {monitor} did not improve for {patience} "
            f"epochs; kept the weights of epoch {kept + 1}{value}")


class EarlyStopNote(Callback):
    """Logs `early_stop_line` once when the stage's EarlyStopping ended it before its epoch budget."""

    def __init__(self, stage: str, keep: KeepBest):
        self.stage, self.keep = stage, keep

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for es in trainer.callbacks:
            if not isinstance(es, EarlyStopping) or not trainer.is_global_zero:
                continue
            if es.stopped_epoch and es.stopped_epoch + 1 < (trainer.max_epochs or 0):  # a stop at the last epoch: none
                log.info(early_stop_line(self.stage, es.stopped_epoch, trainer.max_epochs, es.monitor, es.patience,
                                         self.keep.best_epoch, self.keep.monitor, self.keep.best))


def _count(n: int) -> str:
    from lightning.pytorch.utilities.model_summary.model_summary import get_human_readable_count

    return get_human_readable_count(n).strip()


def summary_line(stage: str, module: torch.nn.Module) -> str:
    """`[stage] N parameters: child (Class) n, ...`: the one-line model summary (callbacks.model_summary.max_depth=0)."""
    total = sum(p.numel() for p in module.parameters())
    frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
    parts, seen = [], 0
    for name, child in module.named_children():
        n = sum(p.numel() for p in child.parameters())
        if n:
            parts.append(f"{name} ({type(child).__name__}) {_count(n)}")
            seen += n
    own = [(name, p.numel()) for name, p in module.named_parameters(recurse=False)]
    if own and len(own) <= 3 and sum(n for _, n in own) == total - seen:
        parts += [f"{name} {_count(n)}" for name, n in own]
    elif total - seen:
        parts.append(f"other {_count(total - seen)}")
    return (f"[{stage}] {_count(total)} parameters" + (f" ({_count(frozen)} frozen)" if frozen else "")
            + (": " + ", ".join(parts) if parts else ""))


class StageModelSummary(ModelSummary):
    """Lightning's ModelSummary with a one-line default: max_depth 0 prints `summary_line`, 1 or more the full table."""

    def __init__(self, stage: str, max_depth: int = 0, **summarize_kwargs: Any):
        super().__init__(max_depth=max_depth, **summarize_kwargs)
        self.stage = stage

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._max_depth:
            _show_model_summaries()
            super().on_fit_start(trainer, pl_module)
        elif trainer.is_global_zero:
            print(summary_line(self.stage, pl_module), flush=True)


def bar_text(stage: str, epoch: int, max_epochs: int | None) -> str:
    """The progress bar's description for 0-based `epoch`: `[stage] epoch k/K`."""
    return f"[{stage}] epoch {epoch + 1}/{max_epochs}"


def bar_metrics(metrics: Mapping[str, Any], stage: str, monitor: str) -> dict[str, str]:
    """What the bar shows beside its description: the selection metric and the stage's train loss."""
    out = {}
    for key in (monitor, f"{stage}/train/loss"):
        if key in metrics:
            out[key.split("/", 1)[-1]] = f"{float(metrics[key]):.4f}"
    return out


class _StageBar:
    """A progress bar that names the stage and its epoch budget and shows the selection metric (no `v_num`)."""

    stage: str
    monitor: str

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        return bar_metrics(trainer.callback_metrics, self.stage, self.monitor)


class StageTQDMProgressBar(_StageBar, TQDMProgressBar):
    """Lightning's TQDM bar reading `[stage] epoch k/K` with the selection metric."""

    def __init__(self, stage: str, monitor: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.stage, self.monitor = stage, monitor

    def on_train_epoch_start(self, trainer: pl.Trainer, *_: Any) -> None:  # TQDMProgressBar's, with bar_text
        from lightning.pytorch.callbacks.progress.tqdm_progress import convert_inf

        if self._leave:
            self.train_progress_bar = self.init_train_tqdm()
        self.train_progress_bar.reset()
        self.train_progress_bar.total = convert_inf(self.total_train_batches)
        self.train_progress_bar.initial = 0
        self.train_progress_bar.set_description(bar_text(self.stage, trainer.current_epoch, trainer.max_epochs))


class StageRichProgressBar(_StageBar, RichProgressBar):
    """Lightning's rich bar reading `[stage] epoch k/K` with the selection metric."""

    def __init__(self, stage: str, monitor: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.stage, self.monitor = stage, monitor

    def _get_train_description(self, current_epoch: int) -> str:
        return bar_text(self.stage, current_epoch, self.trainer.max_epochs)


class HistoryLogger(Logger):
    """Records what a stage logs, `{"step", "epoch", "metrics"}` per call, so that a job that reuses the stage
    from the cache can replay it into its own loggers (crt.tracking.JobTracking.replay).

    With `path` (the stage's partial cache folder) every record is appended to a JSON-lines file as it is
    logged: the records of a spawned DDP worker reach the main process, and a resumed stage keeps those of the
    epochs before its checkpoint (`resume_epoch`: records of that epoch and later are dropped, as they are
    logged again). Without a path they stay in memory.
    """

    def __init__(self, path: str | os.PathLike | None = None, resume_epoch: int | None = None):
        super().__init__()
        self.path = Path(path) if path is not None else None
        self.trainer: pl.Trainer | None = None  # set by make_trainer: the epoch of each record
        self._records: list[dict[str, Any]] = []
        if self.path is not None and rank_zero_only.rank == 0:
            kept = [r for r in self._read() if resume_epoch is not None and r.get("epoch", 0) < resume_epoch]
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.unlink(missing_ok=True)  # a link is replaced, never written through
            with self._open() as fh:
                fh.writelines(json.dumps(r) + "\n" for r in kept)

    @property
    def name(self) -> str:
        return "history"

    @property
    def version(self) -> str:
        return "0"

    def _open(self) -> Any:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        return os.fdopen(os.open(self.path, flags, 0o666), "a")

    def _read(self) -> list[dict[str, Any]]:
        try:
            return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        except (OSError, ValueError):
            return []

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        rec = {"step": int(step or 0), "epoch": int(self.trainer.current_epoch) if self.trainer is not None else 0,
               "metrics": {str(k): float(v) for k, v in metrics.items()}}
        if self.path is None:
            self._records.append(rec)
            return
        with self._open() as fh:
            fh.write(json.dumps(rec) + "\n")

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def records(self) -> list[dict[str, Any]]:
        """Everything recorded (read back from the file when there is one)."""
        return self._read() if self.path is not None else list(self._records)


def cap_log_interval(module: pl.LightningModule, batches: int) -> None:
    """Lightning warns at every fit whose epoch has fewer batches than Trainer(log_every_n_steps): a module's
    train_dataloader caps the interval at its epoch's batches instead (crt logs per epoch; nothing else changes)."""
    trainer = getattr(module, "_trainer", None)
    if trainer is not None and 0 < batches < trainer.log_every_n_steps:
        trainer.log_every_n_steps = batches


def make_trainer(trainer_cfg: Mapping[str, Any], *, max_epochs: int, stage: str, run_dir: str,
                 logger_cfg: Mapping[str, Any] | None, monitor: str, mode: str, patience: int | None,
                 grad_clip: float = 0.0, progress: bool = True,
                 checkpoint: Callback | None = None, history: HistoryLogger | None = None
                 ) -> tuple[pl.Trainer, KeepBest]:
    """A Lightning Trainer for one stage, with best-state selection on `monitor`; `checkpoint`
    (crt.stages.checkpoint.StageCheckpoint) adds mid-stage checkpoints, `history` records what the stage logs.

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
    progress_value = cfg.get("progress", True) if cfg is not None else True
    mode_p = progress_mode(progress_value) if progress else "off"
    keep = KeepBest(monitor, mode)
    callbacks: list[Callback] = [keep] + ([checkpoint] if checkpoint is not None else [])
    built = build_callbacks(callbacks_cfg, stage=stage, monitor=monitor, mode=mode, patience=patience,
                            bar=mode_p == "bar", has_logger=bool(loggers))
    callbacks += built
    if mode_p == "lines":
        callbacks.append(EpochLine(stage, lines_every(progress_value, max_epochs)))
    if any(isinstance(c, EarlyStopping) for c in built):
        callbacks.append(EarlyStopNote(stage, keep))
    callbacks.append(EndSpawnedGroup())  # ddp_spawn workers destroy their gloo group before exiting (crt.distributed)
    cls, options = trainer_options(trainer_cfg)
    kwargs: dict[str, Any] = dict(
        enable_checkpointing=False, num_sanity_val_steps=0, log_every_n_steps=10, default_root_dir=run_dir,
    )
    kwargs.update(options)
    if checkpoint is not None:  # Lightning refuses a Checkpoint callback when checkpointing is off
        kwargs["enable_checkpointing"] = True
    trainer = cls(
        max_epochs=max_epochs, callbacks=callbacks, logger=[*loggers, *([history] if history else [])] or False,
        gradient_clip_val=grad_clip or None, enable_model_summary=any(isinstance(c, ModelSummary) for c in built),
        enable_progress_bar=any(isinstance(c, ProgressBar) for c in built), **kwargs,
    )
    if history is not None:
        history.trainer = trainer
    return trainer, keep


class _StdoutHandler(logging.StreamHandler):
    """A handler writing to whatever sys.stdout is at each record (captured output, redirected streams)."""

    @property
    def stream(self) -> Any:  # type: ignore[override]
        return sys.stdout

    @stream.setter
    def stream(self, _: Any) -> None:
        pass


def _show_model_summaries() -> None:
    """Lightning logs the model summary at INFO, below the level crt sets for Lightning: print it, once."""
    lg = logging.getLogger("lightning.pytorch.callbacks.model_summary")
    lg.setLevel(logging.INFO)
    if not any(getattr(h, "_crt", False) for h in lg.handlers):
        handler = _StdoutHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._crt = True  # type: ignore[attr-defined]
        lg.addHandler(handler)
    lg.propagate = False  # not a second time through Lightning's or Hydra's handlers


def _plain(node: Any) -> Any:
    from omegaconf import DictConfig, OmegaConf

    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def progress_mode(value: Any) -> str:
    """`progress`: true/auto (a bar on a terminal, a few lines per stage otherwise), bar, lines (one per epoch),
    or false."""
    if value in (False, None, "false", "off", "none"):
        return "off"
    if value in (True, "true", "auto"):
        return "bar" if sys.stdout.isatty() else "lines"
    if value in ("bar", "lines"):
        return str(value)
    from crt.errors import ConfigError

    raise ConfigError(f"progress={value!r} is unknown. Fix: use progress=true (bar on a terminal, about "
                      f"{LINES_PER_STAGE} lines per stage otherwise), bar, lines (one per epoch) or false.")


# Outside a job (no config): what the callbacks group's default gives.
DEFAULT_EARLY_STOPPING = {"_target_": "lightning.pytorch.callbacks.EarlyStopping", "monitor": None, "mode": None,
                          "patience": None, "check_finite": False}
DEFAULT_CALLBACKS = {"early_stopping": DEFAULT_EARLY_STOPPING}
# Trainer arguments crt sets from elsewhere in the config, with where to set them instead.
_OWNED = {"max_epochs": "stage.<stage>.epochs", "callbacks": "the callbacks group (callbacks=...)",
          "logger": "the logger group (logger=...)", "gradient_clip_val": "stage.<stage>.grad_clip",
          "enable_progress_bar": "progress=true|bar|lines|false", "enable_model_summary": "callbacks.model_summary"}
_CRT_KEYS = {"_target_", "fused", "compile", "steps_per_call"}  # read by crt itself, not Trainer arguments


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


_STAGE_BARS = {TQDMProgressBar: StageTQDMProgressBar, RichProgressBar: StageRichProgressBar}
# Callback classes (by name, along their class hierarchy) that need a package Lightning does not install.
_NEEDS = {"RichProgressBar": "rich", "RichModelSummary": "rich"}


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def check_callback_packages(callbacks_cfg: Mapping[str, Any] | None) -> None:
    """A callback whose package is missing (`callbacks=rich` without `rich`) is a ConfigError at validation, in
    every progress mode, before any data is read."""
    from hydra.utils import get_class

    from crt.errors import ConfigError

    for name, node in dict(_plain(callbacks_cfg) or {}).items():
        if not isinstance(node, Mapping) or "_target_" not in node:
            continue  # reported by build_callbacks
        try:
            mro = get_class(str(node["_target_"])).__mro__
        except Exception:  # noqa: BLE001 - an import error is reported when the Trainer is built
            continue
        for c in mro:
            package = _NEEDS.get(c.__name__)
            if package and not _installed(package):
                raise ConfigError(f"callbacks.{name} ({node['_target_']}) needs the `{package}` package, which is not "
                                  f"installed. Fix: `pip install {package}`, or use callbacks=default (the TQDM bar).")


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
        if cls is ModelSummary:  # max_depth 0: one line with the parameter count
            node["_target_"] = f"{__name__}.StageModelSummary"
            node["stage"] = stage
        if cls in _STAGE_BARS:  # `[stage] epoch k/K` with the selection metric
            node["_target_"] = f"{__name__}.{_STAGE_BARS[cls].__name__}"
            node.update(stage=stage, monitor=monitor)
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

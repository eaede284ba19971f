"""What every Lightning stage shares: in-memory batching, best-state model selection, trainer building."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback, EarlyStopping

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

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        rank, world = _rank_world()
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        self.epoch += 1
        if self.weights is not None:
            idx = torch.multinomial(self.weights.cpu().double(), self.num_samples, replacement=True, generator=g)
        elif self.shuffle:
            idx = torch.randperm(self.n, generator=g)
        else:
            idx = torch.arange(self.n)
        per_rank = self._per_rank()
        idx = idx[rank::world][:per_rank].to(self.tensors[0].device, non_blocking=True)
        for i in range(len(self)):
            sel = idx[i * self.batch_size:(i + 1) * self.batch_size]
            batch = tuple(t[sel] for t in self.tensors)
            if self.transform is not None:
                batch = (self.transform(batch[0]), *batch[1:])
            yield batch


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

    def summary(self, trainer: pl.Trainer | None = None) -> dict[str, Any]:
        """Monitor, best value and epoch (read from the trainer's metrics when fitting ran in other processes)."""
        if self.best is None and trainer is not None and "selected/best" in trainer.callback_metrics:
            best = float(trainer.callback_metrics["selected/best"])
            return {"monitor": self.monitor, "best": None if best != best else best,
                    "epoch": int(trainer.callback_metrics["selected/epoch"])}
        return {"monitor": self.monitor, "best": self.best, "epoch": self.best_epoch}


class EpochLine(Callback):
    """Progress as one line per epoch (readable in logs and CI, unlike redrawn bars)."""

    def __init__(self, stage: str, every: int = 1):
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
                 grad_clip: float = 0.0, progress: bool = True) -> tuple[pl.Trainer, KeepBest]:
    """A Lightning Trainer for one stage, with best-state selection and early stopping on `monitor`."""
    keep = KeepBest(monitor, mode)
    callbacks: list[Callback] = [keep]
    if progress:
        callbacks.append(EpochLine(stage, every=max(1, max_epochs // 10)))
    if patience:
        callbacks.append(EarlyStopping(monitor=monitor, mode=mode, patience=int(patience), check_finite=False))
    kwargs = {k: v for k, v in dict(trainer_cfg).items() if k in _TRAINER_KEYS and v is not None}
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        callbacks=callbacks,
        logger=build_logger(logger_cfg, run_dir, stage),
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        gradient_clip_val=grad_clip or None,
        num_sanity_val_steps=0,
        log_every_n_steps=int(trainer_cfg.get("log_every_n_steps", 10)),
        default_root_dir=run_dir,
        **kwargs,
    )
    return trainer, keep


_TRAINER_KEYS = {"accelerator", "devices", "strategy", "precision", "num_nodes", "limit_train_batches",
                 "limit_val_batches", "deterministic", "benchmark", "check_val_every_n_epoch"}


def build_logger(logger_cfg: Mapping[str, Any] | None, run_dir: str, stage: str) -> Any:
    """csv (default), tensorboard, wandb (offline unless WANDB_MODE says otherwise) or none."""
    kind = (logger_cfg or {}).get("kind", "csv")
    save_dir = os.path.join(run_dir, "logs")
    if kind in (None, "none", False):
        return False
    if kind == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(save_dir, name="", version=stage)
    if kind == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

        return TensorBoardLogger(save_dir, name="tensorboard", version=stage)
    if kind == "wandb":
        from lightning.pytorch.loggers import WandbLogger

        os.environ.setdefault("WANDB_MODE", str(logger_cfg.get("mode", "offline")))
        os.environ.setdefault("WANDB_SILENT", "true")
        return WandbLogger(project=logger_cfg.get("project", "crt"), save_dir=save_dir,
                           name=f"{logger_cfg.get('run_name') or os.path.basename(run_dir)}-{stage}",
                           group=logger_cfg.get("group"), offline=os.environ["WANDB_MODE"] == "offline")
    from crt.errors import ConfigError

    raise ConfigError(f"logger.kind={kind!r} is unknown. Fix: use logger=csv, tensorboard, wandb or none.")


"""What the stage runners share: the run context, batching helpers, fitting a LightningModule with selection."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from crt.data.base import Split
from crt.losses import ClassLoss, build_loss
from crt.registry import as_dict
from crt.stages.configs import Component, Numerics, Train

# Lightning and torchmetrics (crt.stages.accel / checkpoint / modules / training) are imported where a stage
# trains, not here: validating a config (crt.config) imports this module and must stay as light as torch.

log = logging.getLogger(__name__)

Outputs = dict[str, Any]


@dataclass
class Context:
    """What a stage needs beside its typed config: the data, where to log, the device, runtime trainer settings.

    `trainer` and `logger` hold the settings that do not change what is learned (devices, strategy, logging),
    so they are not part of any cache key; `seed` is (every stage key hashes it).
    """

    split: Split
    run_dir: str
    seed: int = 0
    trainer: Mapping[str, Any] = field(default_factory=dict)
    logger: Mapping[str, Any] | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    progress: bool = True
    checkpoint_dir: str | None = None  # the running stage's partial cache folder (set by the pipeline)
    checkpoint_every: int = 0          # mid-stage checkpoint every N epochs (0: off)
    checkpoint_interval_s: float = 0.0  # ... and at most one per this many seconds
    history: list[dict[str, Any]] = field(default_factory=list)  # what the running stage logged (its cache meta)

    @classmethod
    def from_cfg(cls, cfg: Any, split: Split, run_dir: str, device: torch.device | None = None,
                 progress: bool = True) -> Context:
        """The context of a composed config's run (its seed, trainer and logger settings)."""
        from omegaconf import OmegaConf

        def plain(node: Any) -> Any:
            return OmegaConf.to_container(node, resolve=True) if node is not None else None

        return cls(split=split, run_dir=str(run_dir), seed=int(cfg.seed), trainer=plain(cfg.trainer) or {},
                   logger=plain(cfg.get("logger")), device=device or torch.device("cpu"), progress=progress)


def monitor(prefix: str, metric: str) -> tuple[str, str]:
    """The logged selection metric of a classifier stage and whether larger is better."""
    return f"{prefix}/val/{metric}", "max" if metric == "bal_acc" else "min"


@torch.no_grad()
def apply_batched(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, device: torch.device,
                  batch: int = 4096) -> torch.Tensor:
    """fn over x in chunks on `device`; results on the CPU."""
    return torch.cat([fn(x[i:i + batch].to(device)).float().cpu() for i in range(0, len(x), batch)]) if len(x) \
        else torch.empty(0)


def class_mask(split: Split, y: torch.Tensor, which: str) -> torch.Tensor:
    """Samples to train on: all, or those of majority classes (multi-label: carrying a majority label)."""
    if which == "all":
        return torch.ones(len(y), dtype=torch.bool)
    return (y.bool() & split.majority).any(1) if split.multilabel else split.majority[y]


def loss_name(split: Split, name: str) -> str:
    """On multi-label data cross-entropy means the per-label binary cross-entropy."""
    return "bce" if split.multilabel and name == "ce" else name


def build_stage_loss(split: Split, loss: Component, counts: torch.Tensor) -> ClassLoss:
    """The configured loss with its typed options, for `counts` training samples per class."""
    return build_loss(loss_name(split, loss.name), counts, **as_dict(loss.options))


def optim(train: Train, numerics: Numerics) -> Any:
    from crt.stages.modules import Optim

    return Optim(name=train.optimizer, lr=train.scaled_lr, weight_decay=train.weight_decay,
                 batch_size=train.batch_size, fused=numerics.fused, nesterov=train.nesterov,
                 lr_schedule=train.lr_schedule)


def fit(ctx: Context, module: Any, stage: str, train: Train, numerics: Numerics, watch: tuple[str, str]
        ) -> dict[str, Any]:
    """Train `module` for the stage's budget with selection on `watch` (metric, mode); the selection summary."""
    from crt.stages.accel import EpochTimer
    from crt.stages.checkpoint import checkpoint_for
    from crt.stages.training import HistoryLogger, make_trainer, steps_per_call

    ckpt, resume = checkpoint_for(ctx.checkpoint_dir, stage, ctx.checkpoint_every, train.epochs,
                                  ctx.checkpoint_interval_s)
    patience = train.patience
    if patience is not None and getattr(getattr(module, "loss_fn", None), "scheduled", False):
        log.info("%s: early stopping is off (patience %s ignored): the loss %s changes during training, and every "
                 "epoch of its schedule runs; the best held-out epoch is still kept", stage, patience,
                 type(module.loss_fn).__name__)
        patience = None
    history = HistoryLogger(os.path.join(ctx.checkpoint_dir, "history.jsonl") if ctx.checkpoint_dir else None,
                            resume_epoch=ckpt.saved_epoch() if resume and ckpt is not None else None)
    trainer, keep = make_trainer(
        ctx.trainer, max_epochs=train.epochs, stage=stage, run_dir=ctx.run_dir,
        logger_cfg=ctx.logger, monitor=watch[0], mode=watch[1], patience=patience,
        grad_clip=train.grad_clip, progress=ctx.progress, checkpoint=ckpt, history=history,
    )
    module.compile = numerics.compile  # every trained stage (crt/stages/accel.py)
    k = steps_per_call(trainer, int(ctx.trainer.get("steps_per_call", 1)))  # checked at validation (Numerics)
    if k > 1 and hasattr(module, "use_chunks"):  # several optimizer steps per Lightning step (ChunkedSteps)
        module.use_chunks(k, train.grad_clip)
        trainer.gradient_clip_val = None  # clipped by the module itself (Lightning refuses it in manual optimization)
    trainer.callbacks.append(EpochTimer())  # per-epoch seconds in `selected` (scripts/bench.py)
    t0 = time.perf_counter()
    trainer.fit(module, ckpt_path=resume, weights_only=True)
    fit_seconds = time.perf_counter() - t0
    ctx.history.extend(history.records())
    module.to(ctx.device).eval()
    sel = keep.summary(trainer)
    sel["epochs_run"] = int(trainer.current_epoch)
    sel["fit_seconds"] = round(fit_seconds, 3)
    sel.update(EpochTimer.summary(trainer))
    return sel

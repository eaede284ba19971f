"""The fast path of the trained stages: metrics kept on the device, torch.compile / CUDA graphs, sync counting.

- `running_mean()`: the epoch mean of a training quantity, accumulated on the training device. torchmetrics'
  `MeanMetric` defaults to a NaN check that calls `bool(isnan(x).any())` in Python on every update: one host
  sync per logged value per step, which stops the CPU from queueing work ahead of the GPU and rules out CUDA
  graph capture. With `nan_strategy="disable"` the update is two in-place additions; the value is read once,
  when Lightning logs the epoch. A NaN loss then shows up as a NaN epoch mean instead of being dropped silently.
- `Compiled`: a step function under `torch.compile` (`trainer.compile`: true / default / reduce-overhead /
  max-autotune), or the eager function with the reason it is not compiled, logged once: CUDA-graph modes
  need a CUDA device, and every training batch must have one shape (`dynamic=False`); a compilation error at
  the first call also falls back to eager.
- `EpochTimer`: wall time per epoch (training, and with validation), for the benchmark's steady-state figures.
- `count_host_syncs()`: counts the Python-level ways a tensor's value reaches the host (tests, debugging).
  On a GPU, `torch.cuda.set_sync_debug_mode("error")` catches the syncs made inside C++ as well.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torchmetrics import MeanMetric

from crt.stages.configs import COMPILE_MODES, compile_mode  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


def running_mean() -> MeanMetric:
    """An epoch mean accumulated on the device without a host sync per update (see the module docstring)."""
    return MeanMetric(nan_strategy="disable")


def static_batches(batches: Any) -> bool:
    """Whether every training batch of a `TensorBatches` has the same shape (no ragged last batch)."""
    n, b = batches._per_rank(), batches.batch_size
    return n <= b or bool(batches.drop_last) or n % b == 0


class Compiled:
    """`fn` under torch.compile, or `fn` itself with `reason` saying why not (logged once as a warning)."""

    def __init__(self, fn: Callable[..., Any], mode: str | None, *, device: torch.device, static_shapes: bool,
                 what: str):
        self.eager, self.mode, self.what = fn, mode, what
        self.fn: Callable[..., Any] = fn
        self.reason: str | None = None
        if mode is None:
            self.reason = "trainer.compile is off"
            return
        if mode in CUDA_GRAPH_MODES and torch.device(device).type != "cuda":
            self._fall_back(f"CUDA graphs need a CUDA device, and this stage trains on {torch.device(device).type}")
        elif not static_shapes:
            self._fall_back("dynamic shapes: the training batches do not all have one shape (a ragged last batch)")
        else:
            self.fn = torch.compile(fn, mode=mode, dynamic=False)

    @property
    def active(self) -> bool:
        return self.fn is not self.eager

    def _fall_back(self, reason: str) -> None:
        self.fn, self.reason = self.eager, reason
        log.warning("%s: trainer.compile=%s not applied, training eagerly: %s", self.what, self.mode, reason)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.active:
            try:
                return self.fn(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 - any compiler/backend failure: train eagerly, say why
                self._fall_back(f"compilation failed ({type(err).__name__}: {str(err).splitlines()[0][:200]})")
        return self.eager(*args, **kwargs)


_SYNC_METHODS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__", "nonzero")


@contextmanager
def count_host_syncs() -> Iterator[Counter[str]]:
    """Count, by name, calls that copy a tensor's value to the host while the block runs: `.item()`,
    `.tolist()`, `.cpu()`, `.numpy()`, `bool/float/int(tensor)`, `.nonzero()`/`torch.nonzero` and indexing with
    a boolean mask. Python-level only: syncs made inside C++ operators are not seen (use
    `torch.cuda.set_sync_debug_mode("error")` on a GPU for those)."""
    counts: Counter[str] = Counter()
    saved: dict[str, Any] = {}

    def wrap(name: str, orig: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            return orig(*args, **kwargs)

        return counted

    orig_getitem = torch.Tensor.__getitem__

    def getitem(self: torch.Tensor, idx: Any) -> Any:
        parts = idx if isinstance(idx, tuple) else (idx,)
        if any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts):
            counts["bool_mask_index"] += 1
        return orig_getitem(self, idx)

    for name in (*_SYNC_METHODS, "__getitem__"):
        saved[name] = torch.Tensor.__dict__.get(name)
    orig_nonzero = torch.nonzero
    try:
        for name in _SYNC_METHODS:
            setattr(torch.Tensor, name, wrap(name, getattr(torch.Tensor, name)))
        torch.Tensor.__getitem__ = getitem  # type: ignore[method-assign]
        torch.nonzero = wrap("nonzero", orig_nonzero)  # type: ignore[assignment]
        yield counts
    finally:
        torch.nonzero = orig_nonzero  # type: ignore[assignment]
        for name, orig in saved.items():
            if orig is None:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, orig)


class EpochTimer(Callback):
    """Wall time of every epoch: `train_s` up to the start of validation, `epoch_s` from the epoch's start to the
    next one's (or the end of fitting), so it includes validation and whatever runs at the epoch's end: Lightning
    moves checkpoint callbacks after every other one, and their cost is part of a real epoch.

    The device is synchronised at the epoch boundaries only (never inside a step). The lists travel in
    `trainer.callback_metrics`, so they also come back from spawned DDP workers.
    """

    def __init__(self) -> None:
        self.train_s: list[float] = []
        self.epoch_s: list[float] = []
        self._t0 = self._t_val = 0.0
        self._open = False

    @staticmethod
    def _now(pl_module: pl.LightningModule) -> float:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        return time.perf_counter()

    def _close(self, t: float) -> None:
        if self._open:
            self.epoch_s.append(t - self._t0)
            self._open = False

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        t = self._now(pl_module)
        self._close(t)
        self._t0, self._t_val, self._open = t, 0.0, True

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking and not self._t_val:
            self._t_val = self._now(pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        t = self._now(pl_module)
        self.train_s.append((self._t_val or t) - self._t0)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close(self._now(pl_module))

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close(self._now(pl_module))
        trainer.callback_metrics["timing/train_s"] = torch.tensor(self.train_s, dtype=torch.float64)
        trainer.callback_metrics["timing/epoch_s"] = torch.tensor(self.epoch_s, dtype=torch.float64)

    @staticmethod
    def summary(trainer: pl.Trainer) -> dict[str, list[float]]:
        """Per-epoch seconds as plain lists (for results.json)."""
        m = trainer.callback_metrics
        return {k: [round(float(v), 4) for v in m[f"timing/{k}"].reshape(-1)] for k in ("train_s", "epoch_s")
                if f"timing/{k}" in m}

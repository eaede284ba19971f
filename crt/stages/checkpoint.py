"""Mid-stage checkpoints: a killed or preempted stage resumes from its last saved epoch on the next run.

`StageCheckpoint` is a Lightning checkpoint callback. Every `every_n_epochs` epochs (the top-level config
key `checkpoint_every`; 0 switches it off) it writes Lightning's full training checkpoint - model,
optimizer and scheduler state, loop progress (epoch, global step), the state of every callback
(early stopping; KeepBest's best-so-far score and weights) - plus the global RNG states, to
`<folder>/epoch<N>.ckpt` by temp file (in the folder itself, O_EXCL, the umask's mode) and atomic rename; then it
points `<folder>/last.json` (file name, epoch, sha256) at it by an atomic rename and deletes the older checkpoint.
A kill at any instant leaves last.json naming a complete checkpoint whose checksum matches. A partial folder that
is a symbolic link is refused (ConfigError), so no checkpoint is written or deleted outside the cache.
The folder is the stage's partial folder in the cache (`<cache>/<stage>/.<key>.partial/`): the key
hashes everything the stage depends on, so a checkpoint is only ever resumed by the same stage
configuration, and the folder is removed once the stage's outputs are stored.

Resuming reads the checkpoint with `weights_only=True` after its checksum matched; the training batches
of epoch e are a function of (seed, e) (TensorBatches), so the resumed epochs see the same batches as an
uninterrupted run and, on CPU, give bit-identical weights.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from crt.utils import atomic_write_json, remove_tree, reported, safe_path, temp_file, torch_save

log = logging.getLogger(__name__)
INFO = "last.json"


def rng_state() -> dict[str, Any]:
    """Global RNG states as plain tensors/lists (readable with weights_only=True)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [str(kind), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss),
                      float(gauss)],
            "python": [int(py_version), list(py_state), py_gauss]}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    py_version, py_state, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_state), py_gauss))


class StageCheckpoint(Checkpoint):
    """Saves the stage's training state every `every_n_epochs` epochs; `resume_path()` finds a valid one."""

    def __init__(self, folder: str | os.PathLike, stage: str, every_n_epochs: int = 1, interval_s: float = 0.0):
        self.folder, self.stage, self.every = Path(folder), stage, max(0, int(every_n_epochs))
        self.interval_s = max(0.0, float(interval_s))
        self._pending_rng: dict[str, Any] | None = None
        self._last = time.monotonic()  # the stage's start, then the last save
        self.saves = 0

    @property
    def state_key(self) -> str:
        return f"StageCheckpoint[{self.stage}]"

    def resume_path(self) -> str | None:
        """The last checkpoint if it exists and matches its recorded sha256 (else it is discarded)."""
        info = safe_path(self.folder, f"checkpoint folder of stage {self.stage}") / INFO
        if not info.exists():
            return None
        from crt.cache import sha256_file

        try:
            meta = json.loads(info.read_text())
            ckpt = self.folder / str(meta["file"])
            ok = ckpt.parent == self.folder and not ckpt.is_symlink() and meta.get("sha256") == sha256_file(ckpt)
        except (OSError, ValueError, KeyError, TypeError):
            ckpt, ok = self.folder / INFO, False
        if not ok:
            log.warning("stage %s: checkpoint %s fails its checksum; discarding it and starting from epoch 1",
                        self.stage, ckpt)
            remove_tree(self.folder)
            return None
        return str(ckpt)

    def saved_epoch(self) -> int | None:
        """Epochs completed in the checkpoint on disk (from last.json), if any."""
        try:
            return int(json.loads((self.folder / INFO).read_text())["epochs_done"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    # Lightning hooks -------------------------------------------------------------------------------
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending_rng is not None:  # resumed: continue the random streams where the checkpoint left them
            set_rng_state(self._pending_rng)
            self._pending_rng = None
        from crt.stages.training import TensorBatches

        loader = trainer.train_dataloader  # TensorBatches draws epoch e's order from (seed, e): set e before it iterates
        if isinstance(loader, TensorBatches):
            loader.epoch = trainer.current_epoch

    def due(self, epochs_done: int) -> bool:
        """An epoch boundary is due for a checkpoint when it is the `every`-th and `interval_s` seconds have passed
        since the stage started or last saved (so where epochs take milliseconds, checkpoints stay rare)."""
        return bool(self.every) and epochs_done % self.every == 0 and time.monotonic() - self._last >= self.interval_s

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        done = trainer.current_epoch + 1
        if not trainer.sanity_checking and self.due(done):
            self.save(trainer, done)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        trainer.strategy.checkpoint_io = FileCheckpointIO()

    def save(self, trainer: pl.Trainer, epochs_done: int) -> None:
        from crt.cache import sha256_file

        with reported(self.folder):
            self.folder.mkdir(parents=True, exist_ok=True)
        safe_path(self.folder, f"checkpoint folder of stage {self.stage}")  # nothing written or deleted through a link
        name = f"epoch{epochs_done}.ckpt"
        zero = trainer.is_global_zero  # every rank calls save_checkpoint, rank 0 alone writes
        tmp = Path(temp_file(self.folder / name)) if zero else self.folder / f".{name}.unused.tmp"
        try:
            trainer.save_checkpoint(tmp, weights_only=False)  # full training state (FileCheckpointIO writes it)
            if zero:
                sha = sha256_file(tmp)  # (hashing while writing measured slower: torch writes in small chunks)
                with reported(self.folder / name):
                    os.replace(tmp, self.folder / name)
                atomic_write_json(self.folder / INFO, {"stage": self.stage, "file": name, "epochs_done": epochs_done,
                                                       "max_epochs": trainer.max_epochs, "sha256": sha})
                for old in self.folder.glob("epoch*.ckpt"):
                    if old.name != name:
                        old.unlink(missing_ok=True)  # a link is unlinked, its target kept
            self._last, self.saves = time.monotonic(), self.saves + 1
        except BaseException:
            if zero:
                tmp.unlink(missing_ok=True)
            raise

    def state_dict(self) -> dict[str, Any]:
        return {"rng": rng_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending_rng = state_dict.get("rng")


class FileCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint straight to its (temp) path with crt.utils.torch_save: fsynced, with the umask's mode, and
    a write error named with its path and errno. (Lightning's own goes through a 0600 file in the system temp folder.)"""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        torch_save(checkpoint, path)


def checkpoint_for(folder: str | None, stage: str, every_n_epochs: int, max_epochs: int, interval_s: float = 0.0
                   ) -> tuple[StageCheckpoint | None, str | None]:
    """The stage's checkpoint callback (None when off) and the checkpoint to resume from (None: from scratch)."""
    if not folder or every_n_epochs <= 0:
        return None, None
    ckpt = StageCheckpoint(folder, stage, every_n_epochs, interval_s)
    resume = ckpt.resume_path()
    if resume is not None:
        done = ckpt.saved_epoch()
        log.info("stage %s: resuming from its checkpoint after epoch %s/%d: continuing at epoch %s (%s)",
                 stage, done, max_epochs, None if done is None else done + 1, resume)
    return ckpt, resume

"""Stage cache shared across runs: `<cache_dir>/<stage>/<key>/outputs.pt`, written by atomic rename.

A stage's key hashes its own configuration, its inputs' keys and the seed, so a lambda sweep reuses
pretrain, demix and augment, and a rho sweep reuses pretrain. A lock per key makes concurrent jobs that
need the same stage wait for one of them instead of training it twice.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from crt.utils import atomic_write_json


class StageCache:
    def __init__(self, root: str | os.PathLike, enabled: bool = True):
        self.root, self.enabled = Path(root), enabled

    def folder(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def load(self, stage: str, key: str) -> dict[str, Any] | None:
        f = self.folder(stage, key) / "outputs.pt"
        if not (self.enabled and f.exists()):
            return None
        try:
            return torch.load(f, map_location="cpu", weights_only=False)
        except Exception:  # a corrupt entry (disk full, foreign file) is recomputed, never trusted
            return None

    def save(self, stage: str, key: str, outputs: dict[str, Any], meta: dict[str, Any]) -> Path:
        final = self.folder(stage, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{key}.tmp"))
        try:
            torch.save(outputs, tmp / "outputs.pt")
            atomic_write_json(tmp / "meta.json", meta)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    @contextmanager
    def lock(self, stage: str, key: str) -> Iterator[None]:
        path = self.root / stage / f".{key}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def meta(self, stage: str, key: str) -> dict[str, Any] | None:
        f = self.folder(stage, key) / "meta.json"
        return json.loads(f.read_text()) if f.exists() else None

"""Stage cache shared across runs: `<cache_dir>/<stage>/<key>/outputs.pt`, written by atomic rename.

A stage's key hashes its own configuration, its inputs' keys and the seed, so a lambda sweep reuses
pretrain, demix and augment, and a rho sweep reuses pretrain. A lock per key makes concurrent jobs that
need the same stage wait for one of them instead of training it twice.

Nothing read back is trusted: `meta.json` holds the sha256 of `outputs.pt`, and a payload is loaded with
`torch.load(weights_only=True)` only after its checksum matches. A missing, foreign or damaged entry is
logged and the stage retrained; a file that would need arbitrary pickled objects is refused unread.
A stage that is being trained keeps its mid-stage checkpoints in `<cache_dir>/<stage>/.<key>.partial/`
(see crt/stages/checkpoint.py); the folder is removed once the stage's outputs are stored.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from crt.utils import atomic_folder, atomic_write_json

log = logging.getLogger(__name__)


class CacheDamaged(Exception):
    """A stored payload that fails its checksum, has none, or cannot be read with weights_only=True."""


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def load_payload(path: str | os.PathLike, sha256: str | None = None) -> dict[str, Any]:
    """Read a stage payload safely: checksum first (when given), then weights-only unpickling.

    Raises CacheDamaged naming the reason; never executes code stored in the file.
    """
    path = Path(path)
    if sha256 is not None:
        actual = sha256_file(path)
        if actual != sha256:
            raise CacheDamaged(f"{path}: sha256 {actual[:12]}... differs from the recorded {sha256[:12]}...")
    try:
        out = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError for foreign objects, RuntimeError/EOFError for broken zips
        raise CacheDamaged(f"{path}: not a weights-only payload ({type(err).__name__}: {str(err)[:200]})") from None
    if not isinstance(out, dict):
        raise CacheDamaged(f"{path}: holds a {type(out).__name__}, not a dict of stage outputs")
    return out


def load_verified(folder: str | os.PathLike) -> dict[str, Any]:
    """The outputs.pt of a cache entry, checked against the sha256 in its meta.json (report scripts use this)."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError) as err:
        raise CacheDamaged(f"{folder}/meta.json unreadable ({type(err).__name__}); the payload cannot be verified") from None
    sha = meta.get("sha256") if isinstance(meta, dict) else None
    if not isinstance(sha, str):
        raise CacheDamaged(f"{folder}/meta.json records no sha256; the payload cannot be verified")
    return load_payload(folder / "outputs.pt", sha)


def load_stage_file(path: str | os.PathLike) -> dict[str, Any]:
    """An outputs.pt found by a report script: verified against its meta.json when that records a sha256,
    always read weights-only."""
    path = Path(path)
    sha = None
    try:
        meta = json.loads((path.parent / "meta.json").read_text())
        sha = meta.get("sha256") if isinstance(meta, dict) else None
    except (OSError, ValueError):
        pass
    return load_payload(path, sha if isinstance(sha, str) else None)


class StageCache:
    def __init__(self, root: str | os.PathLike, enabled: bool = True):
        self.root, self.enabled = Path(root), enabled

    def folder(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def partial(self, stage: str, key: str) -> Path:
        """Where an unfinished stage keeps its mid-stage checkpoints (created by the checkpoint callback)."""
        return self.root / stage / f".{key}.partial"

    def load(self, stage: str, key: str) -> dict[str, Any] | None:
        """The stored outputs, or None (absent, disabled, or damaged: then logged and to be retrained)."""
        folder = self.folder(stage, key)
        if not (self.enabled and (folder / "outputs.pt").exists()):
            return None
        try:
            return load_verified(folder)
        except CacheDamaged as err:
            log.warning("stage %s: cached outputs rejected, retraining: %s", stage, err)
            return None

    def save(self, stage: str, key: str, outputs: dict[str, Any], meta: dict[str, Any]) -> Path:
        final = self.folder(stage, key)
        with atomic_folder(final) as tmp:
            torch.save(outputs, tmp / "outputs.pt")
            with open(tmp / "outputs.pt", "rb") as fh:
                os.fsync(fh.fileno())
            atomic_write_json(tmp / "meta.json", {**meta, "sha256": sha256_file(tmp / "outputs.pt")})
        shutil.rmtree(self.partial(stage, key), ignore_errors=True)  # its checkpoints are obsolete now
        return final

    @contextmanager
    def lock(self, stage: str, key: str) -> Iterator[None]:
        path = self.root / stage / f".{key}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("stage %s (key %s): another job is computing it; waiting for its lock %s", stage, key, path)
                t0 = time.perf_counter()
                fcntl.flock(fh, fcntl.LOCK_EX)
                log.info("stage %s (key %s): lock acquired after %.1f s", stage, key, time.perf_counter() - t0)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def meta(self, stage: str, key: str) -> dict[str, Any] | None:
        f = self.folder(stage, key) / "meta.json"
        return json.loads(f.read_text()) if f.exists() else None

"""Stage cache shared across runs: `<cache_dir>/<stage>/<key>/outputs.pt`, written by atomic rename.

A stage's key hashes its own configuration, its inputs' keys and the seed, so a lambda sweep reuses
pretrain, demix and augment, and a rho sweep reuses pretrain. A lock per key makes concurrent jobs that
need the same stage wait for one of them instead of training it twice.

Nothing read back is trusted: `meta.json` holds the sha256 of `outputs.pt`, and a payload is loaded with
`torch.load(weights_only=True)` only after its checksum matches. A missing, foreign or damaged entry is
logged and the stage retrained; a file that would need arbitrary pickled objects is refused unread.
A stage that is being trained keeps its mid-stage checkpoints in `<cache_dir>/<stage>/.<key>.partial/`
(see crt/stages/checkpoint.py); the folder is removed once the stage's outputs are stored.

Nothing is written or deleted through a symbolic link: a linked stage folder, lock or partial folder is refused
(ConfigError), a linked entry is rejected like a damaged one and replaced by the retrained entry. Files and
folders get the modes the umask gives. A cache this job cannot write (read-only mount, another user's files) is
reused without its lock when the entries it needs verify, and refused with the fix when a stage must be trained.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import torch

from crt.errors import ConfigError
from crt.utils import (READ_ONLY, atomic_folder, atomic_write_json, file_lock, remove_tree, safe_path, torch_save,
                       write_error)

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
    """`<root>/<stage>/<key>/` entries, their locks `<stage>/.<key>.lock` and partial folders `<stage>/.<key>.partial/`.

    Every folder is checked to be no symbolic link and to resolve inside the root before anything is written or
    deleted there (crt.utils.safe_path).
    """

    def __init__(self, root: str | os.PathLike, enabled: bool = True):
        self.root, self.enabled = Path(root), enabled

    def stage_dir(self, stage: str) -> Path:
        """`<root>/<stage>`: ConfigError if it is a link or resolves outside the root (created by the caller)."""
        return safe_path(self.root / stage, f"cache folder of stage {stage}", self.root)

    def folder(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def partial(self, stage: str, key: str) -> Path:
        """Where an unfinished stage keeps its mid-stage checkpoints (created by the checkpoint callback)."""
        return safe_path(self.stage_dir(stage) / f".{key}.partial", f"checkpoint folder of stage {stage}")

    def load(self, stage: str, key: str) -> dict[str, Any] | None:
        """The stored outputs, or None (absent, disabled, or damaged: then logged and to be retrained)."""
        folder = self.folder(stage, key)
        if not (self.enabled and (folder / "outputs.pt").exists()):
            return None
        try:
            self._no_links(folder)
            return load_verified(folder)
        except CacheDamaged as err:
            log.warning("stage %s: cached outputs rejected, retraining: %s", stage, err)
            return None

    def verified(self, stage: str, key: str) -> bool:
        """Whether the entry is there, is no link and matches its recorded sha256 (without unpickling it)."""
        folder = self.folder(stage, key)
        try:
            self._no_links(folder)
            sha = (self.meta(stage, key) or {}).get("sha256")
            return isinstance(sha, str) and sha256_file(folder / "outputs.pt") == sha
        except (OSError, CacheDamaged):
            return False

    @staticmethod
    def _no_links(folder: Path) -> None:
        for p in (folder.parent, folder, folder / "outputs.pt", folder / "meta.json"):
            if p.is_symlink():
                raise CacheDamaged(f"{p} is a symbolic link; entries are read from the cache folder only")

    def save(self, stage: str, key: str, outputs: dict[str, Any], meta: dict[str, Any]) -> Path:
        final = self.stage_dir(stage) / key
        with atomic_folder(final) as tmp:
            torch_save(outputs, tmp / "outputs.pt")
            atomic_write_json(tmp / "meta.json", {**meta, "sha256": sha256_file(tmp / "outputs.pt")})
        remove_tree(self.stage_dir(stage) / f".{key}.partial")  # its checkpoints are obsolete now (a link: unlinked)
        return final

    @contextmanager
    def lock(self, stage: str, key: str, free_key: str | None = None) -> Iterator[None]:
        """Hold `<stage>/.<key>.lock` while the entry is looked up, trained and stored (another job waits).

        A cache this job cannot write (the lock cannot be created or opened for writing: EACCES, EPERM, EROFS) is
        used without the lock when the entry - or, given `free_key` (cache.allow_other_code), an entry of other
        code - verifies; a stage that would have to be trained there is a ConfigError naming the fix. (Entries are
        stored with the cache disabled too, for the report scripts, so the lock is taken then as well.)
        """
        path = self.stage_dir(stage) / f".{key}.lock"

        def busy() -> None:
            log.info("stage %s (key %s): another job is computing it; waiting for its lock %s", stage, key, path)

        with ExitStack() as held:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                waited = held.enter_context(file_lock(path, f"lock file of stage {stage}", busy))
            except OSError as err:
                if err.errno not in READ_ONLY:
                    raise write_error(path, err) from None
                self._read_only(stage, key, free_key, path, err)
            else:
                if waited is not None:
                    log.info("stage %s (key %s): lock acquired after %.1f s", stage, key, waited)
            yield

    def _read_only(self, stage: str, key: str, free_key: str | None, path: Path, err: OSError) -> None:
        found = None
        if self.enabled:
            found = key if self.verified(stage, key) else self.find_other_code(stage, free_key) if free_key else None
        if found is not None:
            log.info("stage %s: the cache %s is read-only here (%s on %s): reusing its verified entry %s without the lock",
                     stage, self.root, err.strerror, path.name, found)
            return
        why = "it holds no finished entry of it" if self.enabled else "cache.enabled=false"
        raise ConfigError(f"The stage cache {self.root} is read-only for this job ({err.strerror}, errno {err.errno}, on "
                          f"{path}), and stage {stage} (key {key}) would have to be trained and stored there ({why}). "
                          "Fix: point paths.cache_dir at a folder you can write (e.g. paths.cache_dir=$HOME/crt-cache; "
                          "copy the entries of the shared cache there first to reuse them).")

    def meta(self, stage: str, key: str) -> dict[str, Any] | None:
        """An entry's meta.json, or None when it is absent, unreadable or not a JSON object."""
        try:
            meta = json.loads((self.folder(stage, key) / "meta.json").read_text())
        except (OSError, ValueError):
            return None
        return meta if isinstance(meta, dict) else None

    def find_other_code(self, stage: str, free_key: str) -> str | None:
        """Key of an entry of `stage` with the code-free key `free_key` (written by other code; for
        `cache.allow_other_code`). Entries whose meta.json cannot be read are skipped with a warning."""
        folder = self.root / stage
        if not folder.is_dir() or folder.is_symlink():
            return None
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith(".") or entry.is_symlink() or not (entry / "outputs.pt").is_file():
                continue
            meta = self.meta(stage, entry.name)
            if meta is None:
                log.warning("stage %s: skipping cache entry %s for cache.allow_other_code: its meta.json is missing, "
                            "unreadable or not a JSON object", stage, entry)
            elif meta.get("code_free_key") == free_key:
                return entry.name
        return None

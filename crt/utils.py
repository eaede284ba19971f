"""Small shared helpers: atomic writes that honour the umask and follow no links, lock files, hashing, seeding."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crt.errors import ConfigError


FILE_MODE, DIR_MODE = 0o666, 0o777  # before the umask, as open() and mkdir() create them
READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS)


def umask() -> int:
    """The process umask (from /proc where it is there, so that it is never changed, not even briefly)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_error(path: str | os.PathLike, err: OSError) -> ConfigError:
    """The one-paragraph error of a failed write: the path, the OS error and its errno, the fix."""
    where = Path(path).parent
    while ".tmp" in where.name and where.name.startswith("."):  # name the folder that stays, not a temp one
        where = where.parent
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = (f"free space there (df -h {where}), or point paths.output_dir / paths.cache_dir at a larger file system; "
               "then rerun the same command (finished stages are reused from the cache)")
    elif err.errno in READ_ONLY:
        fix = f"make {where} writable for this user, or point paths.output_dir / paths.cache_dir at a folder you can write"
    else:
        fix = f"check the file system that holds {where}, then rerun the same command"
    return ConfigError(f"could not write {path}: {err.strerror or err} (errno {err.errno}). Fix: {fix}.")


@contextmanager
def reported(path: str | os.PathLike) -> Iterator[None]:
    """Turn an OSError raised while writing `path` into its one-paragraph ConfigError (write_error).

    torch.save to a *path* hides the OS error behind a RuntimeError of its stream writer: when the file system
    is then full, that is reported as ENOSPC; anything else is left as it is.
    """
    try:
        yield
    except OSError as err:
        raise write_error(path, err) from None
    except RuntimeError as err:
        if ("inline_container" in str(err) or "iostream" in str(err)) and _disk_full(Path(path)):
            raise write_error(path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))) from None
        raise


def _disk_full(path: Path) -> bool:
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        st = os.statvfs(path)
    except OSError:
        return False
    return (st.f_bfree if os.geteuid() == 0 else st.f_bavail) == 0


def safe_path(path: str | os.PathLike, what: str, root: str | os.PathLike | None = None) -> Path:
    """`path`, refused with a one-paragraph ConfigError if it is a symbolic link or (given `root`) resolves
    outside `root`: nothing crt writes or deletes goes through a link out of paths.output_dir or the cache."""
    path = Path(path)
    if path.is_symlink():
        raise ConfigError(f"The {what} {path} is a symbolic link (to {os.readlink(path)}); crt writes and deletes nothing "
                          f"through links, so that everything stays inside paths.output_dir and the cache. Fix: remove "
                          f"the link (rm {path}) and rerun; to keep outputs elsewhere, point paths.output_dir or "
                          "paths.cache_dir there instead.")
    if root is not None:
        real, top = path.resolve(), Path(root).resolve()
        if not real.is_relative_to(top):
            raise ConfigError(f"The {what} {path} resolves to {real}, outside {root} (a folder on the way is a symbolic "
                              f"link). Fix: replace that link by a real folder, or point paths.output_dir / "
                              "paths.cache_dir at the place you want the files in.")
    return path


def is_under(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """Whether `path` lies in `root`, by name (links not resolved)."""
    return Path(os.path.abspath(path)).is_relative_to(os.path.abspath(root))


def open_lock(path: Path, what: str) -> int:
    """The file descriptor of lock file `path`, opened read-write and created if absent (with the umask's mode),
    never truncated and never through a symbolic link (ConfigError)."""
    try:
        return os.open(safe_path(path, what), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    except OSError as err:
        if err.errno == errno.ELOOP:  # made a link after the check
            safe_path(path, what)
        raise


@contextmanager
def file_lock(path: Path, what: str, busy: Callable[[], None]) -> Iterator[float | None]:
    """Hold an exclusive flock on `path` (open_lock). When another process holds it, `busy()` is called (it may
    raise to give up) and then the lock is waited for; yields the seconds waited (None: it was free)."""
    fd = open_lock(path, what)
    try:
        waited = None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            busy()
            t0 = time.perf_counter()
            fcntl.flock(fd, fcntl.LOCK_EX)
            waited = time.perf_counter() - t0
        yield waited
    finally:
        os.close(fd)  # releases the lock


def _temp_file(path: Path) -> tuple[int, str]:
    """A new temp file beside `path` (O_EXCL: never through a link) with the mode the umask gives."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, FILE_MODE & ~umask())
    return fd, tmp


def temp_file(path: str | os.PathLike) -> str:
    """The name of a new, empty temp file beside `path` (see _temp_file)."""
    path = Path(path)
    with reported(path):
        fd, tmp = _temp_file(path)
        os.close(fd)
    return tmp


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` via a temp file in the same folder and an atomic rename."""
    path = Path(path)
    with reported(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _temp_file(path)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def torch_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save into a Python file, fsynced: a full disk is then an OSError with its errno (torch.save to a path
    says "iostream error"), reported as a one-paragraph ConfigError naming `path`."""
    with reported(path), open(path, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> None:
    path = Path(path)
    with reported(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_file(path)
    try:
        torch_save(obj, tmp)
        with reported(path):
            os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_tree(path: str | os.PathLike) -> None:
    """Delete `path`: a link or file is unlinked (its target is kept), a folder removed without following links."""
    path = Path(path)
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def atomic_folder(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling folder to fill (mode from the umask); on success it replaces `final` (rename;
    a link there is replaced, not followed), on error it is removed. Write errors: one-paragraph ConfigError."""
    final = Path(final)
    with reported(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp"))
    try:
        with reported(final):
            os.chmod(tmp, DIR_MODE & ~umask())
            yield tmp
            remove_tree(final)
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _json_default(o: Any) -> Any:
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def stable_hash(obj: Any, n: int = 16) -> str:
    """Hash of a JSON-serialisable object, independent of key order."""
    blob = json.dumps(obj, sort_keys=True, default=_json_default).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None

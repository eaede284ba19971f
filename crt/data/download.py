"""Verified, atomic downloads of the datasets that can be downloaded (MNIST, CIFAR-10/100, Tiny ImageNet).

Used by `scripts/prepare_data.py` and by the CIFAR and MNIST loaders when a run finds its data absent. Files come from their
official URLs and are checked against their published md5. Nothing half-written is ever left in place: a
download goes to `<file>.part` and is renamed when complete and verified (and removed when it fails), an archive
is unpacked into a temporary folder beside its target and renamed into place.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MNIST_MIRRORS = ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"]
MNIST_FILES = [
    ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
    ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
    ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
]


@dataclass(frozen=True)
class Archive:
    """A dataset shipped as one archive that unpacks into `folder`."""

    url: str
    md5: str
    folder: str
    check: str  # a file inside `folder` whose presence means the dataset is complete


ARCHIVES = {
    "cifar10": Archive("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                       "c58f30108f718f92721af3b95e74349a", "cifar-10-batches-py", "test_batch"),
    "cifar100": Archive("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                        "eb9058c3a382ffc7106e4002c42a8d85", "cifar-100-python", "test"),
    "tinyimagenet": Archive("http://cs231n.stanford.edu/tiny-imagenet-200.zip",
                            "90528d7ca1a48142e341f4ef8d21d0de", "tiny-imagenet-200", "val/val_annotations.txt"),
}


class PrepareError(RuntimeError):
    """A download or unpacking step failed; the message says what to do."""


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest: Path, md5: str | None = None, timeout: float = 60.0) -> Path:
    """Fetch `url` to `dest` via `dest.part` (renamed once complete and its md5 matches); skip a good `dest`."""
    if dest.exists() and (md5 is None or md5sum(dest) == md5):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    h = hashlib.md5()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(part, "wb") as out:
            total, done = int(resp.headers.get("Content-Length") or 0), 0
            while block := resp.read(1 << 20):
                out.write(block)
                h.update(block)
                done += len(block)
                if total and sys.stderr.isatty():
                    print(f"\r  {dest.name}: {done / total:6.1%}", end="", file=sys.stderr)
        if total and sys.stderr.isatty():
            print(file=sys.stderr)
        if md5 is not None and h.hexdigest() != md5:
            raise PrepareError(f"{url} downloaded with md5 {h.hexdigest()}, expected {md5} (corrupt or changed "
                               "file). Fix: retry later, or fetch it by hand and check it.")
        os.replace(part, dest)
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        raise PrepareError(f"could not download {url} ({type(err).__name__}: {getattr(err, 'reason', err)})") from None
    finally:
        part.unlink(missing_ok=True)
    return dest


def unpack(archive: Path, data_dir: Path, folder: str) -> Path:
    """Unpack `archive` into a temporary folder in `data_dir`, then rename its `folder` to data_dir/folder."""
    target = data_dir / folder
    tmp = Path(tempfile.mkdtemp(dir=data_dir, prefix=f".{folder}.unpack-"))
    try:
        if archive.name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(tmp)
        else:
            with tarfile.open(archive) as tf:
                if hasattr(tarfile, "data_filter"):
                    tf.extractall(tmp, filter="data")
                else:  # pragma: no cover  (Python without extraction filters)
                    tf.extractall(tmp)
        if not (tmp / folder).is_dir():
            raise PrepareError(f"{archive} does not contain the folder {folder}/. Fix: delete the archive and retry.")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp / folder, target)
    except (OSError, tarfile.TarError, zipfile.BadZipFile) as err:
        raise PrepareError(f"could not unpack {archive} ({type(err).__name__}: {err}). Fix: delete it and retry; "
                           "check the free disk space.") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def prepare_archive(name: str, data_dir: Path, timeout: float = 60.0, keep: bool = False,
                    say: Callable[[str], None] = print) -> None:
    """Download, verify and unpack `ARCHIVES[name]` into `data_dir` (nothing when already present)."""
    a = ARCHIVES[name]
    if (data_dir / a.folder / a.check).exists():
        say(f"{name}: already present in {data_dir / a.folder}")
        return
    archive = data_dir / Path(a.url).name
    say(f"{name}: downloading {a.url}")
    download(a.url, archive, a.md5, timeout)
    say(f"{name}: unpacking into {data_dir / a.folder}")
    unpack(archive, data_dir, a.folder)
    if not keep:
        archive.unlink(missing_ok=True)
    say(f"{name}: ready in {data_dir / a.folder}")


def prepare_mnist(data_dir: Path, timeout: float = 60.0, say: Callable[[str], None] = print) -> None:
    """The four IDX files in torchvision's layout, <data_dir>/MNIST/raw/ (what crt.data.mnist reads)."""
    raw = data_dir / "MNIST" / "raw"
    say(f"mnist: downloading into {raw}")
    for gz_name, md5 in MNIST_FILES:
        out = raw / gz_name[:-3]
        if out.exists():
            continue
        gz = raw / gz_name
        errors = []
        for mirror in MNIST_MIRRORS:
            try:
                download(mirror + gz_name, gz, md5, timeout)
                break
            except PrepareError as err:
                errors.append(str(err))
        else:
            raise PrepareError("; ".join(errors))
        part = out.with_name(out.name + ".part")
        try:
            with gzip.open(gz, "rb") as src, open(part, "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(part, out)
        finally:
            part.unlink(missing_ok=True)
        gz.unlink(missing_ok=True)
    say(f"mnist: ready in {raw}")

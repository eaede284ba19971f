"""Download and unpack the datasets that can be downloaded; say where the others must be put by hand.

    python scripts/prepare_data.py cifar100 [--data-dir DIR]     # DIR defaults to $CRT_DATA_DIR or data/
    python scripts/prepare_data.py all

mnist, cifar10, cifar100 and tinyimagenet are fetched from their official URLs and checked against their
published md5; iNaturalist 2019 and the arXiv snapshot sit behind a licence click (Kaggle / competition
page) and are only described. Nothing half-written is ever left in place: downloads go to `<file>.part`
and are renamed when complete and verified, archives are unpacked into a temporary folder beside the
target and renamed into place.
"""

from __future__ import annotations

import argparse
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

MANUAL = {
    "inat2019": (
        ("iNaturalist 2019 (licence click; about 82 GB of images):\n"
        "  get train2019.json.tar.gz, val2019.json.tar.gz and train_val2019.tar.gz from\n"
        "  https://github.com/visipedia/inat_comp/tree/master/2019 (or Kaggle: inaturalist-2019-fgvc6)\n"
        "  and unpack them so that these exist:\n"
        "    {d}/inat2019/train2019.json\n    {d}/inat2019/val2019.json\n    {d}/inat2019/train_val2019/...\n"
        "  then: python scripts/extract_features.py inat2019 --data-dir {d}"),
        ["inat2019/train2019.json", "inat2019/val2019.json"],
    ),
    "arxiv": (
        ("arXiv metadata snapshot (Kaggle account needed):\n"
        "  download https://www.kaggle.com/datasets/Cornell-University/arxiv (arxiv-metadata-oai-snapshot.json)\n"
        "  and put it at\n    {d}/arxiv/arxiv-metadata-oai-snapshot.json\n"
        "  then: python scripts/extract_features.py arxiv --model scibert --data-dir {d}"),
        ["arxiv/arxiv-metadata-oai-snapshot.json"],
    ),
}
DATASETS = ["mnist", *ARCHIVES, *MANUAL]


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


def prepare_archive(name: str, data_dir: Path, timeout: float, keep: bool = False) -> None:
    a = ARCHIVES[name]
    if (data_dir / a.folder / a.check).exists():
        print(f"{name}: already present in {data_dir / a.folder}")
        return
    archive = data_dir / Path(a.url).name
    print(f"{name}: downloading {a.url}")
    download(a.url, archive, a.md5, timeout)
    print(f"{name}: unpacking into {data_dir / a.folder}")
    unpack(archive, data_dir, a.folder)
    if not keep:
        archive.unlink(missing_ok=True)
    print(f"{name}: ready in {data_dir / a.folder}")


def prepare_mnist(data_dir: Path, timeout: float) -> None:
    """The four IDX files in torchvision's layout, <data_dir>/MNIST/raw/ (what crt.data.mnist reads)."""
    raw = data_dir / "MNIST" / "raw"
    print(f"mnist: downloading into {raw}")
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
    print(f"mnist: ready in {raw}")


def describe_manual(name: str, data_dir: Path) -> None:
    text, needed = MANUAL[name]
    have = all((data_dir / p).exists() for p in needed)
    print(f"{name}: {'present' if have else 'must be fetched by hand'}. " + text.format(d=data_dir))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", nargs="+", choices=[*DATASETS, "all"], help="what to prepare")
    parser.add_argument("--data-dir", default=os.environ.get("CRT_DATA_DIR", "data"),
                        help="root of the datasets (default: $CRT_DATA_DIR or data/)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds before a stalled download gives up")
    parser.add_argument("--keep-archives", action="store_true", help="keep the downloaded archives")
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir).expanduser()
    names = DATASETS if "all" in args.datasets else list(dict.fromkeys(args.datasets))
    failed = []
    for name in names:
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            if name == "mnist":
                prepare_mnist(data_dir, args.timeout)
            elif name in ARCHIVES:
                prepare_archive(name, data_dir, args.timeout, args.keep_archives)
            else:
                describe_manual(name, data_dir)
        except (PrepareError, OSError) as err:
            failed.append(name)
            print(f"error: {name}: {err}\n  Fix: run this on a machine with network access and copy "
                  f"{data_dir} over, or fetch the files by hand into {data_dir} (`--help` lists the sources).",
                  file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

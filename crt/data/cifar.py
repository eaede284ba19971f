"""CIFAR-10/100 read straight from the official python pickles (uint8 images N x 3 x 32 x 32).

Layout (what `python scripts/prepare_data.py cifar100` or the tarball from cs.toronto.edu leaves):
`<data_dir>/cifar-100-python/{train,test,meta}` and `<data_dir>/cifar-10-batches-py/{data_batch_1..5,
test_batch,batches.meta}`. The pickles are read by a restricted unpickler that admits only what the official
files contain (a dict of bytes keys, lists, bytes, ints and one uint8 numpy array: `numpy.ndarray`,
`numpy.dtype` and their reconstructors); a pickle naming any other global (os.system, a `__reduce__` of
any class) is refused before anything in it runs. The rows are then checked (uint8, N x 3072, one integer
label per row, labels 0..C-1). They are not read through torchvision's dataset classes, which refuse files
whose md5 differs from the release and unpickle without restriction.
The imbalance protocols (step, exp) are applied afterwards by `crt.data.apply_protocol`.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crt.data.base import STAND_IN_KEY, RawData, register
from crt.errors import DataNotFoundError

FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
TRAIN_FILES = {"cifar10": [f"data_batch_{i}" for i in range(1, 6)], "cifar100": ["train"]}
TEST_FILES = {"cifar10": ["test_batch"], "cifar100": ["test"]}
META = {"cifar10": ("batches.meta", b"label_names"), "cifar100": ("meta", b"fine_label_names")}
LABEL_KEY = {"cifar10": b"labels", "cifar100": b"fine_labels"}
NUM_CLASSES = {"cifar10": 10, "cifar100": 100}


SAFE_GLOBALS = frozenset({
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),  # protocols 2-4
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # protocol 5
    ("_codecs", "encode"),  # bytes written by Python 3 with protocol 2
})
"""Every global the official CIFAR pickles (and numpy-written copies of them) reference: nothing that can run code."""


class UntrustedPickle(pickle.UnpicklingError):
    """A pickle that names a global outside SAFE_GLOBALS."""


class _CifarUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in SAFE_GLOBALS:
            raise UntrustedPickle(f"it names {module}.{name}, which no CIFAR file contains")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict[bytes, Any]:
    with open(path, "rb") as fh:
        out = _CifarUnpickler(fh, encoding="bytes").load()
    if not isinstance(out, dict):
        raise ValueError(f"{path.name} holds a {type(out).__name__}, not the dict of the official files")
    return out


def _read_batches(folder: Path, files: Sequence[str], label_key: bytes, num_classes: int, notes: list[str] | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for name in files:
        d = _unpickle(folder / name)
        note = d.get(STAND_IN_KEY.encode())
        if note is not None and notes is not None:
            notes.append(note.decode(errors="replace") if isinstance(note, bytes) else str(note))
        data, labels = d.get(b"data"), d.get(label_key)
        if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072):
            raise ValueError(f"{name}: b'data' is not an N x 3072 uint8 array")
        if not (isinstance(labels, list) and len(labels) == len(data)
                and all(type(v) is int and 0 <= v < num_classes for v in labels)):
            raise ValueError(f"{name}: {label_key!r} is not one class id in 0..{num_classes - 1} per row")
        xs.append(data.reshape(len(data), 3, 32, 32))
        ys.append(np.asarray(labels, dtype=np.int64))
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))


def read_cifar(root: Path, which: str) -> RawData:
    """Read the pickles of `which` (cifar10 | cifar100) under `root` into uint8 image tensors."""
    folder = root / FOLDERS[which]
    k = NUM_CLASSES[which]
    notes: list[str] = []  # stand-in markers (scripts/make_scale_data.py)
    x_tr, y_tr = _read_batches(folder, TRAIN_FILES[which], LABEL_KEY[which], k, notes)
    x_te, y_te = _read_batches(folder, TEST_FILES[which], LABEL_KEY[which], k, notes)
    names = None
    meta_file, meta_key = META[which]
    if (folder / meta_file).exists():
        raw_names = _unpickle(folder / meta_file).get(meta_key)
        if not (isinstance(raw_names, list) and len(raw_names) == k and all(isinstance(n, (bytes, str)) for n in raw_names)):
            raise ValueError(f"{meta_file}: {meta_key!r} is not a list of {k} class names")
        names = [n.decode() if isinstance(n, bytes) else n for n in raw_names]
    return RawData(x_tr, y_tr, x_te, y_te, num_classes=NUM_CLASSES[which], class_names=names,
                   stand_in=notes[0] if notes else None)


def _present(root: Path, which: str) -> bool:
    folder = root / FOLDERS[which]
    return all((folder / f).exists() for f in TRAIN_FILES[which] + TEST_FILES[which])


def _missing(root: Path, which: str, err: Exception | None = None) -> DataNotFoundError:
    files = ", ".join(TRAIN_FILES[which] + TEST_FILES[which] + [META[which][0]])
    why = f" (download failed: {type(err).__name__}: {err})" if err else ""
    return DataNotFoundError(
        f"{which.upper()} not found under {root / FOLDERS[which]}{why}. Expected the python pickles {files} "
        f"there. Fix: run `python scripts/prepare_data.py {which} --data-dir {root}` on a machine with network "
        "access (or unpack the official python tarball from https://www.cs.toronto.edu/~kriz/cifar.html "
        "there), then point paths.data_dir (or $CRT_DATA_DIR) at that folder."
    )


def load_cifar(which: str, data_dir: str = "data", download: bool = True) -> RawData:
    """Read CIFAR pickles, downloading them through torchvision first when absent and allowed."""
    root = Path(data_dir).expanduser()
    if not _present(root, which):
        if not download:
            raise _missing(root, which)
        import logging

        from crt.data.download import PrepareError, prepare_archive

        try:  # verified md5, `.part` file, unpacked beside and renamed: nothing half-written stays on failure
            prepare_archive(which, root, say=logging.getLogger(__name__).info)
        except (PrepareError, OSError) as err:  # no network, mirror down, disk full ...
            raise _missing(root, which, err) from None
        if not _present(root, which):
            raise _missing(root, which)
    try:
        return read_cifar(root, which)
    except UntrustedPickle as err:
        raise DataNotFoundError(
            f"{which.upper()} under {root / FOLDERS[which]} was refused unread: a pickle there is not an official "
            f"CIFAR file ({err}); unpickling it could run code. Fix: delete that folder and run `python "
            f"scripts/prepare_data.py {which} --data-dir {root}`, or unpack the official tarball there."
        ) from None
    except (OSError, KeyError, ValueError, pickle.UnpicklingError, EOFError) as err:
        raise DataNotFoundError(
            f"{which.upper()} under {root / FOLDERS[which]} could not be read ({type(err).__name__}: {err}). "
            f"Fix: delete that folder and run `python scripts/prepare_data.py {which} --data-dir {root}`."
        ) from None


@register("cifar100")
def load_cifar100(data_dir: str = "data", download: bool = True) -> RawData:
    """CIFAR-100 fine labels: 500 training and 100 test images per class."""
    return load_cifar("cifar100", data_dir, download)


@register("cifar10")
def load_cifar10(data_dir: str = "data", download: bool = True) -> RawData:
    """CIFAR-10: 5000 training and 1000 test images per class."""
    return load_cifar("cifar10", data_dir, download)

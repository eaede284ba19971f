"""MNIST from torchvision's on-disk layout (`<data_dir>/MNIST/raw/*-ubyte`), flattened to [0, 1] floats.

Before torchvision reads them, the four IDX headers are checked against the format (magic number, count,
28 x 28 images, file size = header + payload): a damaged file is reported as damaged, naming it, not as
"not found" nor as a traceback from inside torchvision.
"""

from __future__ import annotations

import struct
from pathlib import Path

import torch

from crt.data.base import RawData, register
from crt.errors import DataNotFoundError

IDX_FILES = {  # name: (magic, dims after the count, number of samples)
    "train-images-idx3-ubyte": (2051, (28, 28), 60000), "train-labels-idx1-ubyte": (2049, (), 60000),
    "t10k-images-idx3-ubyte": (2051, (28, 28), 10000), "t10k-labels-idx1-ubyte": (2049, (), 10000),
}


def idx_problem(path: Path, magic: int, dims: tuple[int, ...], n: int) -> str | None:
    """What is wrong with one MNIST IDX file (None: its header and size are those of the release)."""
    want_header = 4 * (2 + len(dims))
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            header = fh.read(want_header)
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"
    if len(header) < want_header:
        return f"is {size} bytes, shorter than an IDX header"
    got_magic, *got = struct.unpack(f">{2 + len(dims)}I", header)
    if got_magic != magic:
        return f"has magic number {got_magic}, not {magic} (not an MNIST IDX file, or still gzip-compressed)"
    if tuple(got) != (n, *dims):
        return f"has shape {tuple(got)}, not {(n, *dims)}"
    expected = want_header + n * (dims[0] * dims[1] if dims else 1)
    if size != expected:
        return f"is {size} bytes, not {expected} (truncated or padded)"
    return None


def _check_files(root: Path) -> None:
    raw = root / "MNIST" / "raw"
    if not all((raw / f).exists() for f in IDX_FILES):
        return  # absent: the download (or the not-found message) below
    bad = [f"{f} {why}" for f, spec in IDX_FILES.items() if (why := idx_problem(raw / f, *spec))]
    if bad:
        raise DataNotFoundError(
            f"MNIST under {raw} is damaged: {'; '.join(bad)}. Fix: delete the damaged file(s) and copy the four "
            "original IDX files there again (or run `python scripts/prepare_data.py mnist` on a machine with "
            "network access)."
        )


@register("mnist")
def load_mnist(data_dir: str = "data", download: bool = True) -> RawData:
    from torchvision.datasets import MNIST

    root = Path(data_dir).expanduser()
    _check_files(root)
    try:
        train = MNIST(str(root), train=True, download=False)
        test = MNIST(str(root), train=False, download=False)
    except RuntimeError:
        if not download:
            raise _missing(root) from None
        import logging

        from crt.data.download import PrepareError, prepare_mnist

        created = [p for p in (root / "MNIST" / "raw", root / "MNIST", root) if not p.exists()]
        try:  # verified md5, `.part` files renamed when complete (crt.data.download)
            prepare_mnist(root, say=logging.getLogger(__name__).info)
            train = MNIST(str(root), train=True, download=False)
            test = MNIST(str(root), train=False, download=False)
        except (PrepareError, OSError, RuntimeError) as err:  # no network, mirror down, disk full ...
            for p in created:  # leave data_dir as it was: remove the folders the failed download made, if empty
                if p.is_dir() and not any(p.iterdir()):
                    p.rmdir()
            raise _missing(root, err) from None

    def flat(ds: MNIST) -> torch.Tensor:
        return ds.data.reshape(len(ds.data), -1).float().div_(255.0)

    return RawData(flat(train), train.targets.long(), flat(test), test.targets.long(), num_classes=10)


def _missing(root: Path, err: Exception | None = None) -> DataNotFoundError:
    why = f" (download failed: {type(err).__name__}: {err})" if err else ""
    return DataNotFoundError(
        f"MNIST not found under {root / 'MNIST' / 'raw'}{why}. Expected the four IDX files "
        "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte "
        "there. Fix: point paths.data_dir (or $CRT_DATA_DIR) at the folder that holds MNIST/raw, or run "
        "`python scripts/prepare_data.py mnist` on a machine with network access."
    )

"""MNIST from torchvision's on-disk layout (`<data_dir>/MNIST/raw/*-ubyte`), flattened to [0, 1] floats."""

from __future__ import annotations

from pathlib import Path

import torch

from crt.data.base import RawData, register
from crt.errors import DataNotFoundError


@register("mnist")
def load_mnist(data_dir: str = "data", download: bool = True) -> RawData:
    from torchvision.datasets import MNIST

    root = Path(data_dir).expanduser()
    try:
        train = MNIST(str(root), train=True, download=False)
        test = MNIST(str(root), train=False, download=False)
    except RuntimeError:
        if not download:
            raise _missing(root) from None
        created = [p for p in (root / "MNIST" / "raw", root / "MNIST", root) if not p.exists()]
        try:
            train = MNIST(str(root), train=True, download=True)
            test = MNIST(str(root), train=False, download=True)
        except Exception as err:  # no network, mirror down, ...
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

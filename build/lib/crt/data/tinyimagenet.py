"""Tiny ImageNet 200 (official `tiny-imagenet-200` layout), trained on precomputed ResNet-18 features.

Layout: `<data_dir>/tiny-imagenet-200/wnids.txt`, `train/<wnid>/images/*.JPEG` (500 per class) and
`val/val_annotations.txt` (file, wnid, box) with `val/images/*.JPEG` (50 per class, the evaluation set).
Class c is the c-th wnid in sorted order (ImageFolder's convention). The papers train an MLP
(1024-512-32) on 512-d ResNet-18 features, which `scripts/extract_features.py tinyimagenet` writes once to
`tiny-imagenet-200/features_resnet18.npz` (X, y, split, class_names: the `features` format).
Step protocol (data.imbalance=step): classes 0-99 at 450, classes 100-199 at 45 (ratio 0.1, n_max 450).
"""

from __future__ import annotations

from pathlib import Path

from crt.data.base import RawData, register
from crt.data.features import read_features
from crt.errors import DataNotFoundError

FOLDER = "tiny-imagenet-200"
FEATURES = "features_resnet18.npz"


def read_wnids(root: Path) -> list[str]:
    """The 200 class ids, sorted."""
    return sorted(w.strip() for w in (root / "wnids.txt").read_text().split() if w.strip())


def list_images(root: Path) -> tuple[list[Path], list[int], list[Path], list[int], list[str]]:
    """(train paths, train labels, val paths, val labels, wnids) of the official layout under `root`."""
    if not (root / "wnids.txt").is_file():
        raise DataNotFoundError(
            f"Tiny ImageNet images not found: {root / 'wnids.txt'} is missing. Fix: run "
            f"`python scripts/prepare_data.py tinyimagenet --data-dir {root.parent}` (downloads and unpacks "
            "http://cs231n.stanford.edu/tiny-imagenet-200.zip)."
        )
    wnids = read_wnids(root)
    index = {w: i for i, w in enumerate(wnids)}
    tr_paths, tr_y = [], []
    for w in wnids:
        files = sorted((root / "train" / w / "images").glob("*.JPEG"))
        tr_paths += files
        tr_y += [index[w]] * len(files)
    va_paths, va_y = [], []
    ann = root / "val" / "val_annotations.txt"
    if not ann.is_file():
        raise DataNotFoundError(f"{ann} is missing. Fix: re-extract the official tiny-imagenet-200.zip there.")
    for line in ann.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and parts[1] in index:
            va_paths.append(root / "val" / "images" / parts[0])
            va_y.append(index[parts[1]])
    return tr_paths, tr_y, va_paths, va_y, wnids


@register("tinyimagenet")
def load_tinyimagenet(data_dir: str = "data", features_file: str = FEATURES, num_classes: int | None = 200) -> RawData:
    """ResNet-18 features of the official train (500/class) and val (50/class) images."""
    root = Path(data_dir).expanduser() / FOLDER
    path = root / features_file
    if not path.is_file():
        images = "present" if (root / "wnids.txt").is_file() else "absent"
        raise DataNotFoundError(
            f"Tiny ImageNet features not found: expected {path}, written once from the images in {root} "
            f"(currently {images}). Fix: `python scripts/prepare_data.py tinyimagenet --data-dir {root.parent}` "
            f"if the images are absent, then `python scripts/extract_features.py tinyimagenet --data-dir "
            f"{root.parent}` (ResNet-18 ImageNet weights, GPU if present; `make extract-features`)."
        )
    return read_features(path, num_classes=num_classes,
                         hint=f"rerun `python scripts/extract_features.py tinyimagenet --data-dir {root.parent}`.")

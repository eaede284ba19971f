"""Write full-size STAND-INS of the Table 1 datasets that cannot be downloaded here, in their real formats.

    python scripts/make_scale_data.py [cifar100 tinyimagenet inat2019 arxiv] [--data-dir outputs/scale-data]
    make scale-data                                  # the same, all four

Each file has the real dataset's on-disk format, size and class histogram, and random content: a run on it
measures time and memory at the real size (scripts/scale_probe.py, docs/scale.md), never accuracy. Every file
carries the marker `crt_stand_in` (an .npz array; a key of each CIFAR pickle's dict) saying so; loaders warn
when they read it, results.json records it (`data.stand_in`) and tables label such cells. The folder is
separate from the real data by default, and a file without the marker is never overwritten.

Sizes (what the loaders read):
- cifar100: `cifar-100-python/{train,test,meta}` pickles, 50,000 + 10,000 uint8 images, 500 / 100 per class.
- tinyimagenet: `tiny-imagenet-200/features_resnet18.npz`, 512-d, 500 train + 50 val per class, 200 classes.
- inat2019: `inat2019/features_inception_v3.npz`, 2048-d, 1010 classes, 265,213 train + 3 val per class
  (3,030); the per-class training counts are a smooth long tail from 500 down to 16 with the real total
  (the real histogram is not available offline: its total, classes and val size are the published ones).
- arxiv: `arxiv/features_scibert.npz`, 768-d, 160,000 abstracts, categories drawn from 152 labels with
  Zipf-like frequencies, 1-4 labels per paper (the real frequencies are not available offline).
Features are class means plus noise, so the pipeline has something to learn; images are uniform noise.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from crt.data.base import STAND_IN_KEY  # noqa: E402

NOTE = "random content written by scripts/make_scale_data.py at the real size; not the dataset"
INAT_TRAIN, INAT_CLASSES, INAT_MAX, INAT_MIN = 265_213, 1010, 500, 16


def _atomic(path: Path, write) -> None:
    """`write(fh)` into a temporary file beside `path`, renamed into place when complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not _is_stand_in(path):
        raise SystemExit(f"error: {path} exists and is not a stand-in (no {STAND_IN_KEY} marker); refusing to "
                         "overwrite what may be the real dataset. Fix: pass --data-dir to a folder of its own.")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _is_stand_in(path: Path) -> bool:
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                return STAND_IN_KEY in f.files
        from crt.data.cifar import _unpickle  # the restricted unpickler: a planted file runs nothing here either

        return STAND_IN_KEY.encode() in _unpickle(path)
    except Exception:  # noqa: BLE001  (unreadable: not ours)
        return False


def _features(rng: np.random.Generator, y: np.ndarray, dim: int, classes: int) -> np.ndarray:
    """Class mean + unit noise, float32, written block by block (no float64 copy of the whole matrix)."""
    means = rng.standard_normal((classes, dim), dtype=np.float32) * 0.5
    x = np.empty((len(y), dim), dtype=np.float32)
    for start in range(0, len(y), 16384):
        block = slice(start, start + 16384)
        x[block] = rng.standard_normal((len(y[block]), dim), dtype=np.float32) + means[y[block]]
    return x


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    _atomic(path, lambda fh: np.savez(fh, **arrays, **{STAND_IN_KEY: np.array(NOTE)}))
    print(f"wrote {path} ({path.stat().st_size / 2**20:.0f} MiB)")


def _feature_file(path: Path, rng: np.random.Generator, train: np.ndarray, test: np.ndarray, dim: int) -> None:
    """The `features` format of scripts/extract_features.py: training rows first, then the evaluation rows."""
    classes = len(train)
    y = np.concatenate([np.repeat(np.arange(classes), train), np.repeat(np.arange(classes), test)]).astype(np.int64)
    split = np.array(["train"] * int(train.sum()) + ["test"] * int(test.sum()))
    _save_npz(path, X=_features(rng, y, dim, classes), y=y, split=split,
              class_names=np.array([f"stand_in_{c:04d}" for c in range(classes)]))


def inat_counts() -> np.ndarray:
    """Per-class training counts: 500 * (rank / r0)^-b clipped to [16, 500], b set so the last class has 16
    and r0 (the number of classes at the 500 cap) bisected so the total is iNat 2019's 265,213."""
    rank = np.arange(1, INAT_CLASSES + 1, dtype=np.float64)
    lo, hi = 1.0, INAT_CLASSES - 1.0
    for _ in range(100):
        r0 = (lo + hi) / 2
        b = np.log(INAT_MAX / INAT_MIN) / np.log(INAT_CLASSES / r0)
        n = np.clip(np.round(INAT_MAX * np.minimum(rank / r0, INAT_CLASSES / r0) ** -b), INAT_MIN, INAT_MAX)
        n[rank <= r0] = INAT_MAX
        lo, hi = (lo, r0) if n.sum() > INAT_TRAIN else (r0, hi)
    n = n.astype(np.int64)
    n[0] += INAT_TRAIN - int(n.sum())  # exact total (a few images), on the largest class
    return n


def cifar100(root: Path, rng: np.random.Generator) -> None:
    folder = root / "cifar-100-python"
    for name, per_class in (("train", 500), ("test", 100)):
        labels = np.repeat(np.arange(100), per_class)
        rng.shuffle(labels)
        data = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
        d = {b"filenames": [f"stand_in_{i}.png".encode() for i in range(len(labels))], b"batch_label": name.encode(),
             b"fine_labels": labels.tolist(), b"coarse_labels": (labels // 5).tolist(), b"data": data,
             STAND_IN_KEY.encode(): NOTE.encode()}
        _atomic(folder / name, lambda fh, d=d: pickle.dump(d, fh, protocol=2))
        print(f"wrote {folder / name} ({len(labels)} images)")
    meta = {b"fine_label_names": [f"stand_in_{c}".encode() for c in range(100)],
            b"coarse_label_names": [f"stand_in_super_{c}".encode() for c in range(20)], STAND_IN_KEY.encode(): NOTE.encode()}
    _atomic(folder / "meta", lambda fh: pickle.dump(meta, fh, protocol=2))


def tinyimagenet(root: Path, rng: np.random.Generator) -> None:
    _feature_file(root / "tiny-imagenet-200" / "features_resnet18.npz", rng, np.full(200, 500), np.full(200, 50), 512)


def inat2019(root: Path, rng: np.random.Generator) -> None:
    _feature_file(root / "inat2019" / "features_inception_v3.npz", rng, inat_counts(), np.full(INAT_CLASSES, 3), 2048)


def arxiv(root: Path, rng: np.random.Generator, n: int = 160_000, labels: int = 152, dim: int = 768) -> None:
    freq = 1.0 / np.arange(1, labels + 1) ** 1.1
    freq /= freq.sum()
    k = rng.choice([1, 2, 3, 4], size=n, p=[0.45, 0.35, 0.15, 0.05])
    names = np.array([f"sa.{c:03d}" for c in range(labels)])
    first = rng.choice(labels, size=n, p=freq)  # each paper's primary category drives its feature mean
    cats = []
    for i in range(n):
        extra = rng.choice(labels, size=k[i] - 1, p=freq) if k[i] > 1 else []
        cats.append(" ".join(dict.fromkeys([names[first[i]], *names[extra]])))
    _save_npz(root / "arxiv" / "features_scibert.npz", X=_features(rng, first, dim, labels),
              ids=np.array([f"stand-in.{i:06d}" for i in range(n)]), categories=np.array(cats))


MAKERS = {"cifar100": cifar100, "tinyimagenet": tinyimagenet, "inat2019": inat2019, "arxiv": arxiv}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("datasets", nargs="*", help=f"any of {', '.join(MAKERS)} (default: all)")
    ap.add_argument("--data-dir", default="outputs/scale-data", help="where to write (default outputs/scale-data)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    root = Path(args.data_dir).expanduser()
    unknown = sorted(set(args.datasets) - set(MAKERS))
    if unknown:
        ap.error(f"unknown dataset(s) {unknown}; stand-ins exist for {', '.join(MAKERS)}")
    for i, name in enumerate(args.datasets or list(MAKERS)):
        MAKERS[name](root, np.random.default_rng(args.seed + i))
    print(f"stand-ins under {root}: run with paths.data_dir={root} (every run warns that the data are stand-ins)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

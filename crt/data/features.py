"""Precomputed feature vectors from an `.npz` file: `python run.py data=features data.path=FILE.npz`.

The file holds `X` (N x D), `y` (N integer labels) and optionally `split` (N entries, 'train'/'test' or
0/1 with 1 = test) and `class_names`. Without `split`, a stratified `test_fraction` of every class (20% by
default) is held out as the evaluation set, drawn with `data_seed`. scripts/extract_features.py writes
this format (with `split`), so the Tiny ImageNet and iNaturalist loaders are this one with fixed paths.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np
import torch

from crt.data.base import STAND_IN_KEY, RawData, register
from crt.data.imbalance import stratified_holdout
from crt.errors import ConfigError, DataNotFoundError

log = logging.getLogger(__name__)


def _split_mask(split: np.ndarray, path: Path) -> np.ndarray:
    """Boolean 'is test' per row from strings ('train'/'test', also 'val') or integers (1 = test)."""
    if split.dtype.kind in "US":
        s = np.char.lower(split.astype(str))
        bad = sorted(set(s.tolist()) - {"train", "test", "val"})
        if bad:
            raise ConfigError(f"{path}: `split` has values {bad[:5]}; expected 'train' and 'test'. "
                              "Fix: write split as 'train'/'test' strings or 0/1 (1 = test).")
        return s != "train"
    if split.dtype.kind in "iub":
        return split.astype(np.int64) != 0
    raise ConfigError(f"{path}: `split` has dtype {split.dtype}. Fix: use 'train'/'test' strings or 0/1.")


def _integer_labels(y: np.ndarray, path: Path) -> np.ndarray:
    """y as int64. Whole-number floats are converted (with a log line); fractions, NaN and strings are refused."""
    if y.ndim != 1:
        raise ConfigError(f"{path}: y has shape {y.shape}; expected one label per row. Fix: save y as a 1-D array.")
    if y.dtype.kind in "iub":
        return y.astype(np.int64)
    if y.dtype.kind == "f":
        whole = np.isfinite(y) & (y == np.round(y))
        if not whole.all():
            bad = np.flatnonzero(~whole)
            raise ConfigError(f"{path}: y holds {len(bad)} labels that are not whole numbers (e.g. {y[bad[0]]!r} at row "
                              f"{bad[0]}); truncating them would silently move samples between classes. Fix: store "
                              "integer class ids 0..C-1.")
        log.info("%s: y is stored as %s; its whole-number values are used as integer class ids", path, y.dtype)
        return y.astype(np.int64)
    raise ConfigError(f"{path}: y has dtype {y.dtype} (e.g. {y[0]!r}); expected integer class ids 0..C-1. Fix: map "
                      "names to ids, e.g. names, y = numpy.unique(y, return_inverse=True), and save "
                      "numpy.savez(path, X=X, y=y, class_names=names).")


def read_features(path: Path, test_fraction: float = 0.2, data_seed: int = 0,
                  num_classes: int | None = None, hint: str = "") -> RawData:
    """Read X, y (and split, class_names) from `path` into RawData; see the module docstring."""
    if not path.is_file():
        raise DataNotFoundError(
            f"Feature file {path} not found. Fix: {hint or 'point data.path at an .npz with arrays X and y'}"
        )
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise DataNotFoundError(f"{path} is not a readable .npz ({type(err).__name__}: {err}). "
                                f"Fix: {hint or 'rewrite it with numpy.savez(path, X=..., y=...)'}") from None
    missing = [k for k in ("X", "y") if k not in arrays]
    if missing:
        raise ConfigError(f"{path} has arrays {sorted(arrays)} but lacks {missing}. Fix: save the features as X "
                          "(N x D floats) and the labels as y (N integers), e.g. numpy.savez(path, X=X, y=y).")
    try:
        x = torch.from_numpy(np.ascontiguousarray(arrays["X"], dtype=np.float32))
    except (TypeError, ValueError):
        raise ConfigError(f"{path}: X has dtype {arrays['X'].dtype}, not numbers. Fix: save X as an N x D float "
                          "array.") from None
    x = x.reshape(len(x), -1)
    y = torch.from_numpy(_integer_labels(np.asarray(arrays["y"]), path))
    if len(x) != len(y):
        raise ConfigError(f"{path}: X has {len(x)} rows but y has {len(y)}. Fix: one label per feature row.")
    if len(y) and int(y.min()) < 0:
        raise ConfigError(f"{path}: y has negative labels. Fix: use labels 0..M-1.")
    names = [str(n) for n in arrays["class_names"].tolist()] if "class_names" in arrays else None
    m = max(int(y.max()) + 1 if len(y) else 0, len(names or []))
    if num_classes is not None and int(num_classes) != m:
        raise ConfigError(f"{path} holds {m} classes but data.num_classes={num_classes}. Fix: set "
                          f"data.num_classes={m}, or regenerate the file from the complete dataset.")
    if "split" in arrays:
        test = torch.from_numpy(_split_mask(np.asarray(arrays["split"]), path))
        if len(test) != len(y):
            raise ConfigError(f"{path}: split has {len(test)} entries for {len(y)} rows. Fix: one entry per row.")
        tr, te = torch.nonzero(~test).flatten(), torch.nonzero(test).flatten()
    else:
        tr, te = stratified_holdout(y, float(test_fraction), int(data_seed) + 1)
    if len(te) == 0 or len(tr) == 0:
        raise ConfigError(f"{path}: the train/test split leaves {len(tr)} training and {len(te)} test rows. "
                          "Fix: mark some rows as test in `split`, or drop `split` to hold out data.test_fraction.")
    stand_in = str(arrays[STAND_IN_KEY]) if STAND_IN_KEY in arrays else None
    del arrays
    n = len(tr)
    if bool((tr == torch.arange(n)).all()) and bool((te == torch.arange(n, len(y))).all()):
        # training rows first (extract_features' order): the training part is a view (no copy of X; the
        # protocol copies what it keeps), the evaluation part a copy of its own, so X is freed with RawData
        x_tr, x_te = x[:n], x[n:].clone()
    else:
        x_tr, x_te = x[tr], x[te]
    return RawData(x_tr, y[tr], x_te, y[te], num_classes=m, class_names=names, stand_in=stand_in)


@register("features")
def load_features(path: str | None = None, data_dir: str = "data", test_fraction: float = 0.2,
                  data_seed: int = 0, num_classes: int | None = None) -> RawData:
    """Any precomputed features; a relative `path` is looked up under the working directory, then data_dir."""
    if not path:
        raise ConfigError("data=features needs data.path. Fix: pass data.path=/path/to/features.npz "
                          "(arrays X, y and optionally split).")
    p = Path(str(path)).expanduser()
    if not p.is_absolute() and not p.exists():
        p = Path(data_dir).expanduser() / p
    return read_features(p, test_fraction, data_seed, num_classes)

"""Predict with (and evaluate) a trained run: `python -m crt.predict run=<run_dir> [data=...] [out=preds.csv]`.

Arguments (key=value):
  run=DIR          a run folder written by run.py (holds model/)
  data=NAME|FILE   the run's dataset (rebuilt with the run's data settings; the default), or an .npz file
                   with X (N x the model's input shape) and optionally y (labels 0..C-1; multi-label: N x C 0/1)
  split=test       with a dataset name: test (default), val or train (the run's imbalanced split)
  data_dir=DIR     where the dataset's files live (default: $CRT_DATA_DIR, else ./data); the data folder
                   recorded in the model folder is never used
  out=FILE         where to write one row per sample: index, [y], pred, pred_name, p_<class>... (CSV)
  trust_code=true  allow user code named in the model folder (an encoder or dataset loader given by import
                   path) to be imported and run; without it such a model is refused
When labels are known the metrics of results.json are printed (as JSON). Errors exit with status 2.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from crt.errors import ConfigError
from crt.export import TrainedPipeline, load
from crt.utils import atomic_write_text

KEYS = ("run", "data", "split", "data_dir", "out", "trust_code")
log = logging.getLogger(__name__)


def parse(argv: list[str]) -> dict[str, str]:
    args: dict[str, str] = {}
    for a in argv:
        key, sep, value = a.partition("=")
        if not sep or key not in KEYS:
            raise ConfigError(f"argument {a!r} is not understood. Fix: pass key=value with key one of "
                              f"{', '.join(KEYS)}, e.g. `python -m crt.predict run=outputs/runs/... out=preds.csv` "
                              "(--help lists them).")
        args[key] = value
    if "run" not in args:
        raise ConfigError("run= is missing. Fix: `python -m crt.predict run=<run folder> [data=...] [out=...]`.")
    args["trust_code"] = args.get("trust_code", "false").lower()
    if args["trust_code"] not in ("true", "false"):
        raise ConfigError(f"trust_code={args['trust_code']!r} is not true or false. Fix: trust_code=true or leave it out.")
    return args


def _npz(path: str, model: TrainedPipeline) -> tuple[torch.Tensor, torch.Tensor | None]:
    """X (and y) of an .npz, checked against the model's spec as training data is (crt/data/validate.py)."""
    from crt.data.features import _integer_labels
    from crt.data.validate import _finite, _labels

    a = model.arch
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in ("X", "y") if k in f.files}
            files = sorted(f.files)
    except Exception as err:  # noqa: BLE001 - not a zip, object arrays (need pickle), truncated
        raise ConfigError(f"data={path!r} cannot be read as an .npz ({type(err).__name__}: "
                          f"{str(err).splitlines()[0][:200] if str(err) else ''}). Fix: save it with "
                          "numpy.savez(path, X=..., y=...) from numeric arrays.") from None
    if "X" not in arrays:
        raise ConfigError(f"data={path!r} has no array X (it has {files}). Fix: save the inputs as X (N x features), "
                          "labels (optional) as y.")
    x, y = arrays["X"], arrays.get("y")
    shape = tuple(a.input_shape)
    if x.dtype.kind not in "biuf":
        raise ConfigError(f"{path}: X has dtype {x.dtype}, not numbers. Fix: save X as a numeric array.")
    if x.ndim < 1 or len(x) == 0 or tuple(x.shape[1:]) != shape:
        raise ConfigError(f"{path}: X has shape {x.shape}; this model takes N x {' x '.join(map(str, shape))} inputs "
                          "(N >= 1). Fix: save one row per sample, shaped like the run's data.")
    want = getattr(torch, a.input_dtype)
    if not want.is_floating_point:
        info = np.iinfo(a.input_dtype)
        if (x.dtype.kind == "f" and not bool(np.all(np.isfinite(x) & (x == np.round(x))))) or \
                (x.size and (x.min() < info.min or x.max() > info.max)):
            raise ConfigError(f"{path}: X must hold whole numbers in {info.min}..{info.max} ({a.input_dtype}, like the "
                              "run's data). Fix: save the raw values (e.g. uint8 pixels), not normalised ones.")
    xt = torch.from_numpy(np.ascontiguousarray(x)).to(want)
    _finite(xt, "input", path)
    if y is None:
        return xt, None
    if y.ndim == 0 or len(y) != len(x):
        raise ConfigError(f"{path}: X has {len(x)} rows but y has {y.shape}. Fix: one label per row of X (or drop y).")
    if a.multilabel:
        if y.dtype.kind not in "biuf":
            raise ConfigError(f"{path}: y has dtype {y.dtype}. Fix: save y as an N x {a.num_classes} 0/1 matrix.")
        yt = torch.from_numpy(np.ascontiguousarray(y)).float()
    else:
        yt = torch.from_numpy(np.ascontiguousarray(_integer_labels(y, Path(path))))
    _labels(yt, a.num_classes, "y", path, a.multilabel)
    return xt, yt


def inputs(model: TrainedPipeline, args: dict[str, str]) -> tuple[Any, Any, str]:
    """(x, y or None, description) for the data argument."""
    dcfg = model.config.get("data")
    name = str(dcfg.get("name")) if isinstance(dcfg, Mapping) else ""
    data = args.get("data") or name
    if data.endswith(".npz"):
        if not Path(data).is_file():
            raise ConfigError(f"data={data!r}: no such file. Fix: give the path of an .npz with X (and y).")
        return (*_npz(data, model), data)
    if data != name:
        raise ConfigError(f"data={data!r}: this run was trained on {name!r}, whose classes it predicts. "
                          f"Fix: data={name} (split=test|val|train), or an .npz file with X (and y).")
    which = args.get("split", "test")
    if which not in ("test", "val", "train"):
        raise ConfigError(f"split={which!r} is unknown. Fix: use split=test, val or train.")
    split = model.data_split(args.get("data_dir"))
    return getattr(split, f"x_{which}"), getattr(split, f"y_{which}"), f"{data} ({which})"


def table(model: TrainedPipeline, x: Any, y: Any) -> pd.DataFrame:
    proba = model.predict_proba(x)
    pred = model.predict(x)
    names = model.class_names
    df = pd.DataFrame({"index": np.arange(len(proba))})
    if y is not None and not model.arch.multilabel:
        df["y"] = np.asarray(y)
    if model.arch.multilabel:
        df["pred"] = [";".join(names[j] for j in np.flatnonzero(r)) for r in pred]
    else:
        df["pred"] = pred
        df["pred_name"] = [names[i] for i in pred]
    probs = pd.DataFrame(proba, columns=[f"p_{n}" for n in names])
    return pd.concat([df, probs], axis=1)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help", "help") for a in argv):
        print(__doc__)
        return {}
    args = parse(argv)
    model = load(args["run"], trust_code=args.get("trust_code") == "true")
    x, y, what = inputs(model, args)
    df = table(model, x, y)
    report: dict[str, Any] = {"run": args["run"], "data": what, "n": len(df)}
    if y is not None:
        report["metrics"] = model.evaluate(x, y)
    if args.get("out"):
        atomic_write_text(args["out"], df.to_csv(index=False, float_format="%.9g"))
        report["out"] = args["out"]
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        main()
    except ConfigError as err:
        print(f"\nerror: {err}\n", file=sys.stderr)
        sys.exit(2)

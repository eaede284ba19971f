"""Predict with (and evaluate) a trained run: `python -m crt.predict run=<run_dir> [data=...] [out=preds.csv]`.

Arguments (key=value):
  run=DIR        a run folder written by run.py (holds model/)
  data=NAME|FILE the run's dataset (rebuilt with the run's data settings; the default), or an .npz file
                 with X (and optionally y)
  split=test     with a dataset name: test (default), val or train (the run's imbalanced split)
  data_dir=DIR   where the dataset's files live (default: the run's paths.data_dir)
  out=FILE       where to write one row per sample: index, [y], pred, pred_name, p_<class>... (CSV)
When labels are known the metrics of results.json are printed (as JSON).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crt.errors import ConfigError
from crt.export import TrainedPipeline, load
from crt.utils import atomic_write_text

KEYS = ("run", "data", "split", "data_dir", "out")


def parse(argv: list[str]) -> dict[str, str]:
    args: dict[str, str] = {}
    for a in argv:
        key, sep, value = a.partition("=")
        if not sep or key not in KEYS:
            raise ConfigError(f"argument {a!r} is not understood. Fix: pass key=value with key one of "
                              f"{', '.join(KEYS)}, e.g. `python -m crt.predict run=outputs/runs/... out=preds.csv`.")
        args[key] = value
    if "run" not in args:
        raise ConfigError("run= is missing. Fix: `python -m crt.predict run=<run folder> [data=...] [out=...]`.")
    return args


def inputs(model: TrainedPipeline, args: dict[str, str]) -> tuple[Any, Any, str]:
    """(x, y or None, description) for the data argument."""
    data = args.get("data") or model.config["data"]["name"]
    if data.endswith(".npz"):
        if not Path(data).exists():
            raise ConfigError(f"data={data!r}: no such file. Fix: give the path of an .npz with X (and y).")
        with np.load(data, allow_pickle=False) as f:
            if "X" not in f:
                raise ConfigError(f"data={data!r} has no array X (it has {sorted(f.files)}). Fix: save the "
                                  "inputs as X (N x features), labels (optional) as y.")
            return f["X"], (f["y"] if "y" in f else None), data
    from crt.data import build_split

    dcfg = dict(model.config["data"])
    if data != dcfg["name"]:
        raise ConfigError(f"data={data!r}: this run was trained on {dcfg['name']!r}, whose classes it predicts. "
                          f"Fix: data={dcfg['name']} (split=test|val|train), or an .npz file with X (and y).")
    split = build_split(dcfg, args.get("data_dir") or model.config["paths"]["data_dir"])
    which = args.get("split", "test")
    if which not in ("test", "val", "train"):
        raise ConfigError(f"split={which!r} is unknown. Fix: use split=test, val or train.")
    return getattr(split, f"x_{which}"), getattr(split, f"y_{which}"), f"{data} ({which})"


def table(model: TrainedPipeline, x: Any, y: Any) -> pd.DataFrame:
    proba = model.predict_proba(x)
    pred = model.predict(x)
    names = model.class_names
    df = pd.DataFrame({"index": np.arange(len(proba))})
    if y is not None and not model.arch["multilabel"]:
        df["y"] = np.asarray(y)
    if model.arch["multilabel"]:
        df["pred"] = [";".join(names[j] for j in np.flatnonzero(r)) for r in pred]
    else:
        df["pred"] = pred
        df["pred_name"] = [names[i] for i in pred]
    probs = pd.DataFrame(proba, columns=[f"p_{n}" for n in names])
    return pd.concat([df, probs], axis=1)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(sys.argv[1:] if argv is None else argv)
    model = load(args["run"])
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
    try:
        main()
    except ConfigError as err:
        print(f"\nerror: {err}\n", file=sys.stderr)
        sys.exit(2)

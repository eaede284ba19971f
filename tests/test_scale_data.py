"""Full-size stand-ins (scripts/make_scale_data.py): real formats, marked, never mistaken for the data."""

from __future__ import annotations

import importlib.util
import json
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from crt.data import apply_protocol, build_split
from crt.data.base import STAND_IN_KEY
from crt.data.features import read_features
from crt.report import tables as T

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("make_scale_data", ROOT / "scripts" / "make_scale_data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _npz(path: Path, marked: bool, n: int = 60) -> Path:
    y = np.arange(n) % 3
    split = np.array(["train"] * (n - 12) + ["test"] * 12)
    extra = {STAND_IN_KEY: np.array("random")} if marked else {}
    np.savez(path, X=np.random.default_rng(0).standard_normal((n, 4)).astype(np.float32), y=y, split=split, **extra)
    return path


def test_marker_reaches_the_split_and_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert read_features(_npz(tmp_path / "real.npz", False)).stand_in is None
    path = _npz(tmp_path / "s.npz", True)
    assert read_features(path).stand_in == "random"
    with caplog.at_level(logging.WARNING):
        split = build_split({"name": "features", "path": str(path), "imbalance": "natural", "val_fraction": 0.2})
    assert split.stand_in == "random"
    assert any("STAND-IN DATA" in r.getMessage() for r in caplog.records)


def test_training_rows_first_are_a_view_and_the_test_rows_their_own(tmp_path: Path) -> None:
    """No copy of X for the training part; the test part owns its rows, so nothing keeps X alive later."""
    raw = read_features(_npz(tmp_path / "s.npz", True))
    assert (len(raw.y_train), len(raw.y_test)) == (48, 12)
    assert raw.x_train.untyped_storage().nbytes() == 60 * 4 * 4  # the whole file's X, not a copy of 48 rows
    assert raw.x_test.untyped_storage().nbytes() == 12 * 4 * 4


def test_protocol_copies_each_part_once_with_the_same_rows(tmp_path: Path) -> None:
    """apply_protocol indexes the loader's rows straight into train / held-out: same rows as before."""
    from crt.data.base import RawData

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 5, generator=g), torch.arange(300) % 3
    raw = RawData(x, y, x[:30], y[:30], num_classes=3, sources_train=x[:, :2] * 2, sources_test=x[:30, :2])
    sp = apply_protocol(raw, {"imbalance": "step", "ratio": 0.5, "minority_classes": [2], "data_seed": 0})
    assert torch.bincount(sp.y_train, minlength=3).tolist() == [80, 80, 40]
    assert torch.bincount(sp.y_val, minlength=3).tolist() == [20, 20, 10]
    rows = {tuple(r.tolist()): i for i, r in enumerate(x)}  # every kept row, with its label and sources
    for xs, ys, ss in ((sp.x_train, sp.y_train, sp.sources["train"]), (sp.x_val, sp.y_val, sp.sources["val"])):
        idx = torch.tensor([rows[tuple(r.tolist())] for r in xs])
        assert torch.equal(y[idx], ys) and torch.equal(x[idx, :2] * 2, ss)
    assert len(set(rows[tuple(r.tolist())] for r in torch.cat([sp.x_train, sp.x_val]))) == 250


def test_inat_histogram_has_the_published_total_and_a_long_tail() -> None:
    n = _script().inat_counts()
    assert len(n) == 1010 and int(n.sum()) == 265_213
    assert int(n.max()) == 500 and int(n.min()) == 16
    assert bool((np.diff(n[1:]) <= 0).all())  # non-increasing after the largest class
    assert 100 < int((n >= 120).sum()) < 1010  # majority_min_count=120 leaves a real minority


def test_refuses_to_overwrite_real_data(tmp_path: Path) -> None:
    mod = _script()
    real = _npz(tmp_path / "x.npz", False)
    with pytest.raises(SystemExit, match="not a stand-in"):
        mod._atomic(real, lambda fh: fh.write(b""))
    marked = _npz(tmp_path / "y.npz", True)
    mod._atomic(marked, lambda fh: np.savez(fh, X=np.zeros((1, 1))))  # a stand-in may be rewritten
    assert np.load(marked)["X"].shape == (1, 1)


@pytest.mark.slow
def test_cifar100_stand_in_is_read_by_the_real_loader(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The full-size pickles pass the restricted unpickler and its content checks; 500 / 100 per class."""
    _script().cifar100(tmp_path, np.random.default_rng(0))
    with open(tmp_path / "cifar-100-python" / "train", "rb") as fh:
        assert STAND_IN_KEY.encode() in pickle.load(fh, encoding="bytes")
    with caplog.at_level(logging.WARNING):
        split = build_split({"name": "cifar100", "download": False, "imbalance": "step", "ratio": 0.1,
                             "minority_classes": [], "data_seed": 0, "val_fraction": 0.2}, str(tmp_path))
    assert split.stand_in and any("STAND-IN DATA" in r.getMessage() for r in caplog.records)
    assert split.counts.tolist() == [500] * 50 + [50] * 50 and len(split.y_test) == 10_000


def test_tables_label_stand_in_cells(tmp_path: Path) -> None:
    for i, stand_in in enumerate((None, "random")):
        folder = tmp_path / "runs" / "tinyimagenet" / "ecrt_mp" / f"t{i}" / "seed0"
        (folder / ".hydra").mkdir(parents=True)
        exp = ["experiment=tinyimagenet_ecrt_mp", "debug=scale"] if stand_in else ["experiment=tinyimagenet_ecrt_mp"]
        (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([*exp, "seed=0", "checkpoint_interval_s=0"]))
        (folder / "results.json").write_text(json.dumps({
            "seed": 0, "created": "2026-01-01", "metrics": {"test/top1": 0.5}, "per_class": [],
            "data": {"stand_in": stand_in}, "config": {}}))
    runs = T.find_runs(tmp_path / "runs")
    full = T.aggregate(T.table1_spec(["tinyimagenet"], ["ecrt_mp"]), runs)
    scale = T.aggregate(T.table1_spec(["tinyimagenet"], ["ecrt_mp"], profile="scale"), runs)
    assert set(full["label"]) == {"tinyimagenet"} and int(full["n_seeds"].max()) == 1
    assert set(scale["label"]) == {"tinyimagenet [scale probe: cut budget] [STAND-IN data: not a result]"}
    assert int(scale["n_seeds"].max()) == 1

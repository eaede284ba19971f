"""Cache keys: a stage's key hashes exactly its typed config, the data (config and content), the seed, the code
version and the keys of the stages before it; reusing an entry of other code needs cache.allow_other_code."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

import crt.pipeline as pipeline
from crt.config import resolve
from crt.pipeline import run, stage_keys

STAGES = ["pretrain", "demix", "augment", "refine"]


def _keys(make_cfg, *overrides: str, fp: str = "data0", code: str | None = "code0") -> dict[str, str]:
    return stage_keys(resolve(make_cfg(*overrides)), fp, code)


@pytest.mark.parametrize("override,first", [
    ("stage.pretrain.epochs=3", "pretrain"),
    ("stage.pretrain.sampler=balanced", "pretrain"),
    ("model.head.hidden=[32]", "pretrain"),
    ("data.encoder.hidden=[16,16]", "pretrain"),
    ("data.ratio=0.2", "pretrain"),
    ("method.pretrain_classes=all", "pretrain"),
    ("stage.selection.metric=ce", "pretrain"),  # pretrain and refine both select on it
    ("trainer.precision=bf16-mixed", "pretrain"),
    ("stage.demix.flow.hidden=64", "demix"),
    ("stage.demix.critic.negatives=classes", "demix"),
    ("method.rho=0.5", "demix"),
    ("method.prior=single", "demix"),
    ("method.augment=parametric", "augment"),
    ("stage.augment.n_per_class=50", "augment"),
    ("method.lam=0.1", "refine"),
    ("model.predictor.hidden=[32]", "refine"),
    ("stage.refine.weighting=paper", "refine"),
    ("stage.refine.lr=0.01", "refine"),
    ("method.refine_loss=ldam", "refine"),
])
def test_an_option_changes_its_stage_key_and_those_after_only(make_cfg, override: str, first: str) -> None:
    base, changed = _keys(make_cfg), _keys(make_cfg, override)
    i = STAGES.index(first)
    assert [base[s] == changed[s] for s in STAGES] == [True] * i + [False] * (len(STAGES) - i)


def test_refine_loss_options_touch_only_refine(make_cfg) -> None:
    """The issue's example: an LDAM margin for the refine loss used to retrain all four stages."""
    a = _keys(make_cfg, "method.refine_loss=ldam")
    b = _keys(make_cfg, "method.refine_loss=ldam", "+method.refine_loss_kwargs.max_m=0.3")
    assert [a[s] == b[s] for s in STAGES] == [True, True, True, False]


@pytest.mark.parametrize("override", ["logger=none", "progress=false", "trainer.log_every_n_steps=5",
                                      "stage.demix.epochs=7 method=erm", "paths.output_dir=/elsewhere"])
def test_runtime_and_unread_settings_change_no_key(make_cfg, override: str) -> None:
    extra = override.split()
    base = ["method=erm"] if "method=erm" in extra else []
    assert _keys(make_cfg, *base) == _keys(make_cfg, *extra)


def test_data_content_code_version_and_seed_change_every_key(make_cfg) -> None:
    base = _keys(make_cfg)
    for other in (_keys(make_cfg, fp="data1"), _keys(make_cfg, code="code1"), _keys(make_cfg, "seed=1")):
        assert all(base[s] != other[s] for s in STAGES)
    assert _keys(make_cfg, code=None) != base  # the code-free key is a separate key


# --- end to end: rewriting a data file in place, or other code, retrains -------------------------------------------

def _write_features(path: Path, shift: float) -> None:
    g = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 60)
    x = g.normal(size=(len(y), 6)).astype(np.float32) + y[:, None] * 1.5 + shift
    np.savez(path, X=x, y=y)


def _features_cfg(make_cfg, path: Path, *extra: str):
    return make_cfg("data=features", f"data.path={path}", "data.imbalance=minority", "data.minority_classes=[0]",
                    "data.ratio=0.3", "data.feature_dim=2", "data.encoder.hidden=[8]", "debug=tiny", "logger=none",
                    "skip_completed=false", *extra)


def _reused(res: dict) -> list[bool]:
    return [res["stages"][s]["reused"] for s in STAGES]


@pytest.mark.slow
def test_rewritten_data_file_and_other_code_retrain(make_cfg, tmp_path: Path, monkeypatch, caplog) -> None:
    npz = tmp_path / "features.npz"
    _write_features(npz, 0.0)
    first = run(_features_cfg(make_cfg, npz), run_dir=tmp_path / "r1")
    assert _reused(first) == [False] * 4
    assert _reused(run(_features_cfg(make_cfg, npz), run_dir=tmp_path / "r2")) == [True] * 4

    _write_features(npz, 0.25)  # same path, same shapes, new contents
    moved = run(_features_cfg(make_cfg, npz), run_dir=tmp_path / "r3")
    assert _reused(moved) == [False] * 4 and moved["data_fingerprint"] != first["data_fingerprint"]

    monkeypatch.setattr(pipeline, "code_version", lambda: "0.1.0+othercode")
    other = run(_features_cfg(make_cfg, npz), run_dir=tmp_path / "r4")
    assert _reused(other) == [False] * 4 and other["code_version"] == "0.1.0+othercode"

    # entries of the real code exist for this data: with the opt-in they are reused, and that is recorded
    monkeypatch.setattr(pipeline, "code_version", lambda: "0.1.0+thirdcode")
    with caplog.at_level(logging.WARNING, logger="crt.pipeline"):
        allowed = run(_features_cfg(make_cfg, npz, "cache.allow_other_code=true"), run_dir=tmp_path / "r5")
    assert _reused(allowed) == [True] * 4 and allowed["cache_allow_other_code"] is True
    assert all(allowed["stages"][s]["other_code"]["code_version"] != "0.1.0+thirdcode" for s in STAGES)
    assert "written by other code" in caplog.text
    on_disk = json.loads((tmp_path / "r5" / "results.json").read_text())
    assert on_disk["stages"]["pretrain"]["other_code"] == allowed["stages"]["pretrain"]["other_code"]

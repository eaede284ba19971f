"""Export and load: a run folder alone reproduces results.json; the predict CLI writes the same predictions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import crt
from crt.errors import ConfigError
from crt.pipeline import run
from crt.predict import main as predict_main

TINY = ["debug=tiny", "data.n_per_class=100", "data.n_test_per_class=20"]


@pytest.mark.parametrize("method", ["ecrt_mp", "erm"])
def test_load_reproduces_results_after_cache_is_deleted(make_cfg, tmp_path: Path, method: str) -> None:
    res = run(make_cfg(*TINY, f"method={method}"), run_dir=tmp_path / "r")
    shutil.rmtree(tmp_path / "outputs" / "cache")
    moved = tmp_path / "elsewhere"
    shutil.copytree(tmp_path / "r", moved)  # the folder is self-contained
    shutil.rmtree(tmp_path / "r")
    model = crt.load(moved)
    split = model.data_split(model.config["paths"]["data_dir"])  # the run's own split, rebuilt
    assert split.train_counts.tolist() == res["data"]["train_counts"] and len(split.y_test) == len(split.x_test)
    m = model.evaluate(split.x_test, split.y_test)
    assert m["test/top1"] == res["metrics"]["test/top1"]
    assert m["test/nll"] == res["metrics"]["test/nll"]
    assert m == {k: v for k, v in res["metrics"].items() if k.startswith("test/")}
    z = model.features(split.x_test[:5])
    assert isinstance(z, np.ndarray) and z.shape == (5, 2) and z.dtype == np.float32  # numpy, like predict_proba
    np.testing.assert_allclose(model.logits(split.x_test[:5].numpy()), model.logits(split.x_test[:5]))
    if method == "ecrt_mp":
        s = model.sources(split.x_test[:5])
        assert isinstance(s, np.ndarray) and s.shape == (5, 2) and not np.array_equal(s, z)
        with torch.no_grad():
            np.testing.assert_allclose(model.flow.inverse(torch.from_numpy(s))[0].numpy(), z, atol=1e-4, rtol=1e-4)
    else:
        with pytest.raises(ConfigError, match="no demix stage"):
            model.sources(split.x_test[:5])
    p = model.predict_proba(split.x_test)
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(model.predict(split.x_test), p.argmax(1))
    meta = json.loads((moved / "model" / "model.json").read_text())
    assert meta["classes"]["minority"] == [0] and meta["seed"] == 0 and meta["config"]["method"]["name"] == method
    assert meta["check"] == {"inputs": 32} and meta["format"] == 2
    assert not list(moved.glob(".model.tmp*"))


def test_predict_cli_writes_the_same_predictions(make_cfg, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    res = run(make_cfg(*TINY), run_dir=tmp_path / "r")
    out = tmp_path / "preds.csv"
    report = predict_main([f"run={tmp_path / 'r'}", "data=toy_henon", f"out={out}"])
    assert report["metrics"]["test/top1"] == res["metrics"]["test/top1"]
    assert report["metrics"]["test/nll"] == res["metrics"]["test/nll"]
    df = pd.read_csv(out)
    model = crt.load(tmp_path / "r")
    from crt.data import build_split

    split = build_split(model.config["data"], model.config["paths"]["data_dir"])
    assert len(df) == 7 * 20 and list(df.columns[:4]) == ["index", "y", "pred", "pred_name"]
    np.testing.assert_array_equal(df["pred"].to_numpy(), model.predict(split.x_test))
    np.testing.assert_array_equal(df["y"].to_numpy(), split.y_test.numpy())
    assert (df["pred"] == df["y"]).mean() == pytest.approx(res["metrics"]["test/top1"])
    np.testing.assert_allclose(df[[f"p_{c}" for c in range(7)]].to_numpy(), model.predict_proba(split.x_test), rtol=1e-6)
    # an npz without labels: predictions only, the same ones
    np.savez(tmp_path / "x.npz", X=split.x_test[:10].numpy())
    out2 = tmp_path / "p2.csv"
    report = predict_main([f"run={tmp_path / 'r'}", f"data={tmp_path / 'x.npz'}", f"out={out2}"])
    assert "metrics" not in report
    np.testing.assert_array_equal(pd.read_csv(out2)["pred"].to_numpy(), df["pred"].to_numpy()[:10])


def test_predict_cli_errors_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="run="):
        predict_main(["data=toy_henon"])
    with pytest.raises(ConfigError, match="not understood"):
        predict_main([f"run={tmp_path}", "colour=red"])
    with pytest.raises(ConfigError, match="holds no trained model"):
        predict_main([f"run={tmp_path}"])


@pytest.mark.parametrize("method", ["decoupled_crt", "decoupled_lws", "decoupled_tau_norm", "logit_adjust_posthoc", "ldam"])
def test_other_predictor_kinds_reload_exactly(make_cfg, tmp_path: Path, method: str) -> None:
    """Decoupled heads (LWS, tau-norm, post-hoc adjustment) and LDAM's scaled cosine head rebuild exactly."""
    res = run(make_cfg(*TINY, f"method={method}", "stage.pretrain.epochs=1", "stage.refine.epochs=1",
                       "model.predictor.hidden=[5]"),  # cRT's classifier has the head's shape, not the predictor's
              run_dir=tmp_path / "r")
    meta = json.loads((tmp_path / "r" / "model" / "model.json").read_text())
    assert meta["check"] == {"inputs": 32}
    model = crt.load(tmp_path / "r")
    from crt.data import build_split

    split = build_split(model.config["data"], model.config["paths"]["data_dir"])
    assert model.evaluate(split.x_test, split.y_test)["test/nll"] == res["metrics"]["test/nll"]

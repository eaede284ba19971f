"""User code by import path: an encoder, a loss and a dataset loader from a module outside crt."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import crt
from crt.errors import ConfigError
from crt.pipeline import run

USER_MODULE = textwrap.dedent('''
    import torch
    from torch import nn
    from crt.data import RawData
    from crt.losses import ClassLoss

    CALLS = {"encoder": 0, "loss": 0, "load": 0}

    class TinyEnc(nn.Module):
        def __init__(self, in_dim, out_dim, width=5, **_):
            super().__init__()
            CALLS["encoder"] += 1
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_dim, width), nn.Tanh(), nn.Linear(width, out_dim))

        def forward(self, x):
            return self.net(x)

    class HalfCE(ClassLoss):
        def forward(self, logits, y):
            CALLS["loss"] += 1
            return 0.5 * nn.functional.cross_entropy(logits, y, reduction="none")

    def load(data_dir=None, n=60, **_):
        CALLS["load"] += 1
        g = torch.Generator().manual_seed(0)
        y = torch.arange(3).repeat_interleave(n)
        x = torch.randn(3 * n, 4, generator=g) + y[:, None].float()
        return RawData(x_train=x, y_train=y, x_test=x[::3], y_test=y[::3], num_classes=3)
''')
TINY = ["debug=tiny", "method=erm", "data.n_per_class=100", "data.n_test_per_class=20"]


@pytest.fixture
def usermod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    pkg = tmp_path / "userpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("userpkg", None)
    import userpkg

    yield userpkg
    sys.modules.pop("userpkg", None)


def test_user_encoder_loss_and_dataset(make_cfg, tmp_path: Path, usermod) -> None:
    cfg = make_cfg(*TINY, "+data.encoder._target_=userpkg.TinyEnc", "+data.encoder.width=7", "~data.encoder.hidden",
                   "method.pretrain_loss=userpkg.HalfCE", "+data._target_=userpkg.load", "data.minority_classes=[2]",
                   "data.num_classes=3", "data.input_dim=4")
    res = run(cfg, run_dir=tmp_path / "r")
    assert usermod.CALLS["load"] == 1 and usermod.CALLS["encoder"] >= 1 and usermod.CALLS["loss"] > 0
    assert res["data"]["counts"][2] < res["data"]["counts"][0]  # the protocol applied to the user's data
    model = crt.load(tmp_path / "r", trust_code=True)  # user code in a model folder: only with the opt-in
    assert type(model.encoder).__name__ == "TinyEnc" and model.encoder.net[1].out_features == 7


def test_bad_import_path_names_the_key(make_cfg, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data.encoder._target_='nowhere.Enc' cannot be imported"):
        run(make_cfg(*TINY, "+data.encoder._target_=nowhere.Enc"), run_dir=tmp_path / "r")
    with pytest.raises(ConfigError, match="is not a crt.losses.ClassLoss subclass"):
        run(make_cfg(*TINY, "method.pretrain_loss=torch.nn.CrossEntropyLoss"), run_dir=tmp_path / "r2")


@pytest.mark.slow
def test_run_py_sees_modules_in_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / "userpkg").mkdir()
    (tmp_path / "userpkg" / "__init__.py").write_text(USER_MODULE)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    out = subprocess.run([sys.executable, str(root / "run.py"), *TINY, "logger=none", "+data.encoder._target_=userpkg.TinyEnc",
                          f"paths.output_dir={tmp_path / 'out'}"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    (res,) = (tmp_path / "out").rglob("results.json")
    assert json.loads(res.read_text())["config"]["data"]["encoder"]["_target_"] == "userpkg.TinyEnc"


def _edit(usermod, old: str, new: str) -> None:
    """Change the user's module on disk and re-import it, as a user editing their code between two runs would."""
    path = Path(usermod.__file__)
    path.write_text(path.read_text().replace(old, new))
    sys.modules.pop("userpkg", None)
    import userpkg  # noqa: F401


def test_editing_user_code_retrains_the_stages_that_run_it(make_cfg, tmp_path: Path, usermod) -> None:
    enc = ["+data.encoder._target_=userpkg.TinyEnc", "~data.encoder.hidden", "skip_completed=true"]
    cfg = make_cfg(*TINY, *enc)
    first = run(cfg, run_dir=tmp_path / "r")
    again = run(cfg, run_dir=tmp_path / "r")
    assert again["created"] == first["created"]  # unchanged code: the finished run is skipped
    _edit(usermod, "nn.Tanh()", "nn.ReLU()")
    edited = run(make_cfg(*TINY, *enc), run_dir=tmp_path / "r")
    assert not edited["stages"]["pretrain"]["reused"]
    assert edited["stages"]["pretrain"]["key"] != first["stages"]["pretrain"]["key"]


def test_editing_a_user_refine_loss_retrains_refine_only(make_cfg, tmp_path: Path, usermod) -> None:
    over = ["debug=tiny", "method=ecrt_mp", "method.refine_loss=userpkg.HalfCE"]
    first = run(make_cfg(*over), run_dir=tmp_path / "a")
    _edit(usermod, "0.5 * nn.functional", "0.25 * nn.functional")
    edited = run(make_cfg(*over), run_dir=tmp_path / "b")
    st = edited["stages"]
    assert [st[s]["reused"] for s in ("pretrain", "demix", "augment", "refine")] == [True, True, True, False]
    assert st["refine"]["key"] != first["stages"]["refine"]["key"]


def test_user_code_options_are_checked_against_its_signature_before_training(make_cfg, tmp_path: Path, usermod,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from crt.config import validate

    with pytest.raises(ConfigError, match=r"method.refine_loss_kwargs.gamma is not an option of 'HalfCE'"):
        validate(make_cfg("method=ecrt_mp", "method.refine_loss=userpkg.HalfCE", "+method.refine_loss_kwargs.gamma=2"))
    with pytest.raises(ConfigError, match=r"data.encoder.depht is not an option of 'TinyEnc' .*did you mean 'depth'"):
        (Path(usermod.__file__)).write_text(USER_MODULE.replace("width=5, **_", "width=5, depth=1"))
        sys.modules.pop("userpkg", None)
        validate(make_cfg(*TINY, "+data.encoder._target_=userpkg.TinyEnc", "+data.encoder.depht=2"))


def test_the_datasets_own_encoder_options_stay_behind_for_a_user_encoder(make_cfg, tmp_path: Path, usermod) -> None:
    """toy_henon's MLP encoder has `hidden`; TinyEnc takes width only: no `~data.encoder.hidden` needed."""
    (Path(usermod.__file__)).write_text(USER_MODULE.replace("width=5, **_", "width=5"))
    sys.modules.pop("userpkg", None)
    from crt.config import validate

    run_cfg = validate(make_cfg(*TINY, "+data.encoder._target_=userpkg.TinyEnc", "+data.encoder.width=3"))
    assert run_cfg.stages["pretrain"].encoder.options == {"width": 3}

"""A model folder is data with a closed spec: nothing read from it runs code, sizes are checked before
allocation, every malformed file is one paragraph, and results.json's metrics come from its weights."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import textwrap
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import crt
from crt.errors import ConfigError
from crt.pipeline import run
from crt.predict import main as predict_main
from tests.conftest import ROOT, compose_cfg

TINY = ["debug=tiny", "data.n_per_class=100", "data.n_test_per_class=20"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished ecrt_mp run (every part: encoder, head, flow, prior, predictor), copied by `folder`."""
    tmp = tmp_path_factory.mktemp("trained")
    run(compose_cfg([*TINY, "method=ecrt_mp"], tmp), run_dir=tmp / "r")
    return tmp / "r"


@pytest.fixture
def folder(trained: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained, tmp_path / "r"))


def edit_json(folder: Path, change: Callable[[dict[str, Any]], Any]) -> None:
    path = folder / "model" / "model.json"
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def edit_weights(folder: Path, change: Callable[[dict[str, Any]], Any]) -> None:
    path = folder / "model" / "weights.pt"
    w = torch.load(path, weights_only=True)
    change(w)
    torch.save(w, path)


def refused(call: Callable[[], Any], *names: str) -> str:
    """The one-paragraph ConfigError of `call`, which names each of `names` and a fix."""
    with pytest.raises(ConfigError) as info:
        call()
    msg = str(info.value)
    assert "\n" not in msg and "Fix" in msg, msg
    for name in names:
        assert name in msg, msg
    return msg


@pytest.fixture
def evil(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Modules on sys.path that write the marker when imported (evil_import) or called (evil_class.Writer)."""
    marker = tmp_path / "marker"
    (tmp_path / "evil_import.py").write_text(f"open({str(marker)!r}, 'w').write('imported')\nEnc = load = object\n")
    (tmp_path / "evil_class.py").write_text(textwrap.dedent("""
        from pathlib import Path

        class Writer:
            def __init__(self, path, **kwargs):
                Path(path).write_text("called")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield marker
    for name in ("evil_import", "evil_class"):
        sys.modules.pop(name, None)


@pytest.mark.parametrize("encoder", [
    {"_target_": "logging.basicConfig", "filename": "MARKER", "force": True},  # stdlib, keyword arguments
    {"_target_": "evil_import.Enc"},  # code that runs on import
    {"_target_": "evil_class.Writer", "path": "MARKER"},  # a class whose constructor writes a file
])
def test_import_path_in_model_json_runs_nothing(folder: Path, evil: Path, encoder: dict[str, Any]) -> None:
    spec = {k: str(evil) if v == "MARKER" else v for k, v in encoder.items()}
    edit_json(folder, lambda m: m["arch"].update(encoder=spec))
    refused(lambda: crt.load(folder), "model.json", "arch.encoder._target_", "trust_code")
    refused(lambda: predict_main([f"run={folder}"]), "model.json", "trust_code")
    assert not evil.exists() and "evil_import" not in sys.modules and "evil_class" not in sys.modules


USER = textwrap.dedent('''
    import os
    import torch
    from torch import nn
    from crt.data import RawData

    open(os.environ["USERPKG_MARKER"], "a").write("imported\\n")

    class TinyEnc(nn.Module):
        def __init__(self, in_dim, out_dim, width=5):
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_dim, width), nn.Tanh(), nn.Linear(width, out_dim))

        def forward(self, x):
            return self.net(x)

    def load(data_dir=None, n=60):
        g = torch.Generator().manual_seed(0)
        y = torch.arange(3).repeat_interleave(n)
        x = torch.randn(3 * n, 4, generator=g) + y[:, None].float()
        return RawData(x_train=x, y_train=y, x_test=x[::3], y_test=y[::3], num_classes=3)
''')


@pytest.mark.parametrize("part", ["encoder", "data"])
def test_user_code_runs_only_with_trust_code(make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             caplog: pytest.LogCaptureFixture, part: str) -> None:
    """A run's own user encoder (or data loader) is refused by crt.load / predict unless trusted."""
    (tmp_path / "userpkg.py").write_text(USER)
    sys.modules.pop("userpkg", None)  # another test's
    marker = tmp_path / "imported"
    monkeypatch.setenv("USERPKG_MARKER", str(marker))
    monkeypatch.syspath_prepend(str(tmp_path))
    user = ["+data._target_=userpkg.load", "data.minority_classes=[2]", "data.num_classes=3", "data.input_dim=4"]
    if part == "encoder":
        user += ["+data.encoder._target_=userpkg.TinyEnc", "+data.encoder.width=7", "~data.encoder.hidden"]
    run(make_cfg(*TINY, "method=erm", *user), run_dir=tmp_path / "r")
    sys.modules.pop("userpkg")
    marker.unlink()
    if part == "encoder":
        refused(lambda: crt.load(tmp_path / "r"), "model.json", "userpkg.TinyEnc", "trust_code")
    refused(lambda: predict_main([f"run={tmp_path / 'r'}"]), "model.json", "userpkg", "trust_code")
    assert not marker.exists() and "userpkg" not in sys.modules
    with caplog.at_level("WARNING"):
        model = crt.load(tmp_path / "r", trust_code=True)
        report = predict_main([f"run={tmp_path / 'r'}", "trust_code=True"])
    if part == "encoder":
        assert type(model.encoder).__name__ == "TinyEnc" and model.encoder.net[1].out_features == 7
        assert "module 'userpkg'" in caplog.text
    assert marker.exists() and report["n"] == 60 and "test/top1" in report["metrics"]


def test_huge_sizes_in_model_json_are_refused_before_allocation(folder: Path) -> None:
    edit_json(folder, lambda m: m["arch"].update(input_dim=1e10))
    refused(lambda: crt.load(folder), "model.json", "input_dim")
    edit_json(folder, lambda m: m["arch"].update(input_dim=10**10, input_shape=[10**10]))  # consistent, and 2.5 TB
    rss, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
    refused(lambda: crt.load(folder), "weights.pt", "10000000000")
    assert time.perf_counter() - t0 < 10
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 200 * 1024  # KiB: nothing big was allocated


@pytest.mark.parametrize("mib", [1024, 64])  # larger than the file may be / small enough on disk, not expanded
def test_zip_bomb_weights_are_refused_unread(folder: Path, monkeypatch: pytest.MonkeyPatch, mib: int) -> None:
    path = folder / "model" / "weights.pt"
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as z:
        prefix = z.namelist()[0].split("/")[0]
        with z.open(f"{prefix}/data/999", "w", force_zip64=True) as f:  # deflated ~1000:1
            for _ in range(mib // 64):
                f.write(bytes(64 << 20))
    with zipfile.ZipFile(path) as z:
        assert path.stat().st_size < mib << 11 and sum(i.file_size for i in z.infolist()) > mib << 20

    def unread(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", unread)
    refused(lambda: crt.load(folder), "weights.pt", "not read")


@pytest.mark.parametrize("how", ["nan", "inf"])
def test_non_finite_weights_are_refused(folder: Path, how: str) -> None:
    edit_weights(folder, lambda w: w["predictor"]["1.weight"].__setitem__((0, 0), float(how)))
    refused(lambda: crt.load(folder), "weights.pt", "NaN or inf in predictor.1.weight")


@pytest.mark.parametrize("what", ["weight", "check"])
def test_tampered_weights_or_check_are_refused(folder: Path, what: str) -> None:
    def tamper(w: dict[str, Any]) -> None:
        t = w["predictor"]["1.weight"] if what == "weight" else w["check"]["logits"]
        t[0] += 0.5

    edit_weights(folder, tamper)
    refused(lambda: crt.load(folder), "weights.pt", "recorded check")


def _truncate(folder: Path) -> None:
    p = folder / "model" / "weights.pt"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


MALFORMED: dict[str, tuple[Callable[[Path], Any], str]] = {
    "garbled json": (lambda f: (f / "model" / "model.json").write_text('{"format": 2, "arch": {'), "model.json"),
    "json list": (lambda f: (f / "model" / "model.json").write_text("[1, 2]"), "model.json"),
    "NaN literal": (lambda f: edit_json(f, lambda m: m["arch"]["head"].update(logit_scale=float("nan"))), "model.json"),
    "wrong type": (lambda f: edit_json(f, lambda m: m["arch"].update(feature_dim="two")), "arch.feature_dim"),
    "unknown key": (lambda f: edit_json(f, lambda m: m["arch"].update(colour="red")), "arch.colour"),
    "encoder option": (lambda f: edit_json(f, lambda m: m["arch"]["encoder"].update(hiddenn=[3])), "hiddenn"),
    "unknown encoder": (lambda f: edit_json(f, lambda m: m["arch"]["encoder"].update(name="nope")), "nope"),
    "inconsistent": (lambda f: edit_json(f, lambda m: m["arch"].pop("flow")), "flow"),
    "old format": (lambda f: edit_json(f, lambda m: m.update(format=1)), "model.json"),
    "missing weights": (lambda f: (f / "model" / "weights.pt").unlink(), "weights.pt"),
    "truncated weights": (_truncate, "weights.pt"),
    "not a zip": (lambda f: (f / "model" / "weights.pt").write_bytes(os.urandom(3000)), "weights.pt"),
    "extra tensor": (lambda f: edit_weights(f, lambda w: w["head"].update(extra=torch.zeros(2))), "extra"),
    "missing tensor": (lambda f: edit_weights(f, lambda w: w["flow"].popitem()), "flow"),
    "wrong shape": (lambda f: edit_weights(f, lambda w: w["head"].update({"1.weight": torch.zeros(3, 3)})), "1.weight"),
    "pickled object": (lambda f: edit_weights(f, lambda w: w.update(extra=Path("x"))), "weights.pt"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_model_files_are_one_paragraph(folder: Path, case: str) -> None:
    damage, name = MALFORMED[case]
    damage(folder)
    refused(lambda: crt.load(folder), name)
    refused(lambda: predict_main([f"run={folder}", f"data={folder}/x.npz"]), name)


def test_deleted_or_invalid_model_is_rebuilt_by_a_rerun(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg(*TINY, "method=erm")
    first = run(cfg, run_dir=tmp_path / "r")
    for damage in (lambda: shutil.rmtree(tmp_path / "r" / "model"),
                   lambda: (tmp_path / "r" / "model" / "model.json").write_text("garbled")):
        damage()
        refused(lambda: crt.load(tmp_path / "r"), "rerun")
        again = run(cfg, run_dir=tmp_path / "r")
        assert all(s["reused"] for s in again["stages"].values()) and again["metrics"] == first["metrics"]
        crt.load(tmp_path / "r")
    assert run(cfg, run_dir=tmp_path / "r")["created"] == again["created"]  # a valid model/: skipped as before


def test_forged_cache_entry_cannot_change_the_metrics(make_cfg, tmp_path: Path) -> None:
    from crt.cache import load_verified
    from crt.metrics import classification_metrics

    first = run(make_cfg(*TINY, "method=ecrt_mp"), run_dir=tmp_path / "r")
    entry = Path(first["stages"]["refine"]["cache"])
    out = load_verified(entry)
    model = crt.load(tmp_path / "r")
    from crt.data import build_split

    split = build_split(model.config["data"])
    # on the CPU the metrics are bit for bit those of the stage's own logits (what results.json held before)
    m, _ = classification_metrics(out["logits_test"], split.y_test, split.train_counts, split.majority, split.groups)
    assert m == {k: v for k, v in first["metrics"].items() if k.startswith("test/")}
    # an attacker with write access to the cache: perfect logits, and a matching checksum
    out["logits_test"] = torch.nn.functional.one_hot(split.y_test, 7).float() * 10
    torch.save(out, entry / "outputs.pt")
    meta = json.loads((entry / "meta.json").read_text())
    meta["sha256"] = hashlib.sha256((entry / "outputs.pt").read_bytes()).hexdigest()
    (entry / "meta.json").write_text(json.dumps(meta))
    results = (tmp_path / "r" / "results.json").read_text()
    refused(lambda: run(make_cfg(*TINY, "method=ecrt_mp", "skip_completed=false"), run_dir=tmp_path / "r"),
            f"stage refine ({entry})", "inconsistent with its weights", f"delete {entry}")
    assert (tmp_path / "r" / "results.json").read_text() == results
    crt.load(tmp_path / "r")  # model/ was left as it was


NPZ: dict[str, tuple[dict[str, Any], str]] = {
    "nan row": ({"X": "nan"}, "NaN or inf"),
    "strings": ({"X": np.array([["a"] * 32])}, "not numbers"),
    "wrong shape": ({"X": np.zeros((4, 31), np.float32)}, "shape"),
    "empty": ({"X": np.zeros((0, 32), np.float32)}, "N >= 1"),
    "no X": ({"X": None, "x": np.zeros((4, 32))}, "no array X"),
    "y length": ({"y": np.zeros(3, int)}, "one label per row"),
    "y fractions": ({"y": np.full(10, 0.5)}, "not whole numbers"),
    "y negative": ({"y": -np.ones(10, int)}, "outside the classes"),
    "y too large": ({"y": np.full(10, 7)}, "outside the classes"),
    "y strings": ({"y": np.array(["a"] * 10)}, "dtype"),
    "y matrix": ({"y": np.zeros((10, 7), int)}, "one label per row"),
}


@pytest.mark.parametrize("case", list(NPZ))
def test_npz_inputs_are_checked_like_training_data(folder: Path, case: str) -> None:
    arrays, words = NPZ[case]
    x = np.random.default_rng(0).normal(size=(10, 32)).astype(np.float32)
    if isinstance(arrays.get("X"), str):
        x[3, 5] = np.nan
        arrays = {"X": x}
    path = folder / "x.npz"
    np.savez(path, **{k: v for k, v in {"X": x, **arrays}.items() if v is not None})
    refused(lambda: predict_main([f"run={folder}", f"data={path}"]), str(path), words)


def test_npz_labels_stored_as_whole_floats_are_accepted(folder: Path) -> None:
    x = np.random.default_rng(0).normal(size=(10, 32)).astype(np.float32)
    np.savez(folder / "x.npz", X=x.astype(np.float64), y=np.arange(10) % 7 * 1.0)
    assert predict_main([f"run={folder}", f"data={folder / 'x.npz'}"])["n"] == 10


def test_predict_takes_no_data_folder_or_import_path_from_the_file(folder: Path, evil: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import crt.data

    seen: list[Any] = []
    real = crt.data.build_split
    monkeypatch.setattr(crt.data, "build_split", lambda cfg, data_dir=None: seen.append(data_dir) or real(cfg, data_dir))
    edit_json(folder, lambda m: m["config"]["paths"].update(data_dir="/somebody/elses/data"))
    monkeypatch.setenv("CRT_DATA_DIR", str(folder / "env_data"))
    predict_main([f"run={folder}"])
    predict_main([f"run={folder}", f"data_dir={folder / 'cli_data'}"])
    assert seen == [str(folder / "env_data"), str(folder / "cli_data")]
    edit_json(folder, lambda m: m["config"]["data"].update(_target_="evil_import.load"))
    refused(lambda: predict_main([f"run={folder}"]), "config.data._target_", "evil_import", "trust_code")
    assert not evil.exists()
    edit_json(folder, lambda m: m["config"]["data"].update(_target_=None, name="not_a_dataset"))
    refused(lambda: predict_main([f"run={folder}", "data=not_a_dataset"]), "model.json", "not_a_dataset")


@pytest.mark.slow
def test_predict_cli_help_and_exit_status(folder: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "crt.predict", "--help"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "run=DIR" in out.stdout and "trust_code" in out.stdout, out.stderr
    x = np.zeros((3, 32), np.float32)
    x[1, 0] = np.nan
    np.savez(folder / "x.npz", X=x)
    out = subprocess.run([sys.executable, "-m", "crt.predict", f"run={folder}", f"data={folder / 'x.npz'}"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "NaN or inf" in out.stderr and "Traceback" not in out.stderr, out.stderr

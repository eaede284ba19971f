"""Runs you can trust (issue 11), in-process: the cache executes no code and trusts no damaged payload,
interrupted stages resume to the same result, nonsense data ends in a one-paragraph ConfigError,
damaged results.json is redone, run-folder names stay short."""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import signal
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from crt.cache import CacheDamaged, StageCache, load_stage_file, sha256_file
from crt.config import TAG_MAX, _tag
from crt.errors import ConfigError
from crt.interrupt import Interrupted
from crt.pipeline import keys_for as stage_keys  # the keys run(cfg) uses (typed configs + data + code)
from crt.pipeline import run
from crt.stages.modules import ClassifierModule, DemixModule

TINY = ["debug=tiny", "data.n_per_class=200", "data.n_test_per_class=50", "data.input_dim=8",
        "checkpoint_interval_s=0"]  # a checkpoint at every epoch, whatever its length
ERM = ["method=erm", *TINY]


class Payload:
    """Unpickling this runs `touch <marker>` (what an attacker plants in a shared cache)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plant(folder: Path, obj: object, with_sha: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"encoder": obj}, folder / "outputs.pt")  # torch.save pickles it like any payload
    meta = {"stage": "pretrain", "sha256": sha256_file(folder / "outputs.pt")} if with_sha else {"stage": "pretrain"}
    (folder / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("with_sha", [True, False])
def test_planted_pickle_in_the_cache_is_not_executed_and_the_stage_retrained(
        make_cfg, tmp_path: Path, caplog: pytest.LogCaptureFixture, with_sha: bool) -> None:
    cfg = make_cfg(*ERM)
    key = stage_keys(cfg)["pretrain"]
    entry = Path(cfg.paths.cache_dir) / "pretrain" / key
    marker = tmp_path / "pwned"
    _plant(entry, Payload(marker), with_sha)  # even a correct checksum (the attacker can compute it) is not enough
    with caplog.at_level(logging.WARNING, logger="crt.cache"):
        res = run(cfg, run_dir=tmp_path / "run")
    assert not marker.exists()
    assert res["stages"]["pretrain"]["reused"] is False
    assert "cached outputs rejected" in caplog.text
    with pytest.raises(CacheDamaged):  # the report scripts' reader refuses it too
        _plant(entry, Payload(marker))
        load_stage_file(entry / "outputs.pt")
    assert not marker.exists()


def _scramble_a_tensor(path: Path) -> None:
    """Overwrite bytes inside the first tensor storage of a torch zip file, leaving the zip structure intact."""
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if "/data/" in i.filename and i.file_size >= 64)
    raw = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    raw[start:start + 32] = bytes(range(200, 232))
    path.write_bytes(bytes(raw))


def test_scrambled_payload_is_detected_and_the_stage_retrained(make_cfg, tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    cfg = make_cfg(*ERM)
    first = run(cfg, run_dir=tmp_path / "a")
    entry = Path(first["stages"]["pretrain"]["cache"]) / "outputs.pt"
    _scramble_a_tensor(entry)
    torch.load(entry, weights_only=True)  # the zip still opens and unpickles: only the checksum can tell
    with caplog.at_level(logging.WARNING, logger="crt.cache"):
        second = run(cfg, run_dir=tmp_path / "b")
    assert "differs from the recorded" in caplog.text
    assert second["stages"]["pretrain"]["reused"] is False
    assert second["metrics"] == first["metrics"]  # retrained, bit-identical on CPU
    third = run(cfg, run_dir=tmp_path / "c")  # the rewritten entry verifies again
    assert third["stages"]["pretrain"]["reused"] is True


def test_cache_entries_record_their_sha256(tmp_path: Path) -> None:
    cache = StageCache(tmp_path)
    folder = cache.save("demix", "k", {"s_test": torch.arange(5.0)}, {"stage": "demix"})
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["sha256"] == sha256_file(folder / "outputs.pt") and len(meta["sha256"]) == 64
    assert torch.equal(cache.load("demix", "k")["s_test"], torch.arange(5.0))


class _Kill(Exception):
    """Stands in for a kill: leaves the stage unfinished, its cache entry unwritten."""


def _crash_at(monkeypatch: pytest.MonkeyPatch, module: type, epoch: int) -> None:
    orig = module.training_step

    def step(self, batch, i):  # noqa: ANN001
        if self.current_epoch == epoch:
            raise _Kill
        return orig(self, batch, i)

    monkeypatch.setattr(module, "training_step", step)


@pytest.mark.parametrize("module,stage,extra", [
    (DemixModule, "demix", []),
    (ClassifierModule, "refine", []),
    (ClassifierModule, "pretrain", ["method=erm", "stage.pretrain.epochs=5",  # with an LR scheduler to restore
                                    "+stage.pretrain.lr_schedule={warmup_epochs: 2, milestones: [3], gamma: 0.1}"]),
])
def test_interrupted_stage_resumes_from_its_checkpoint_with_identical_results(
        make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        module: type, stage: str, extra: list[str]) -> None:
    rho = [] if "method=erm" in extra else ["method.rho=0.5"]  # erm has no demix stage, so no method.rho key
    over = [*TINY, "stage.demix.epochs=5", "stage.refine.epochs=5", *rho, "stage.selection.metric=ce", *extra]
    whole = run(make_cfg(*over, "checkpoint_every=0", tmp=tmp_path / "whole"), run_dir=tmp_path / "whole" / "run")
    cfg = make_cfg(*over, tmp=tmp_path / "cut")
    with monkeypatch.context() as m:
        _crash_at(m, module, epoch=3)  # 0-based: dies in epoch 4 of 5, after the checkpoint of epoch 3
        with pytest.raises(_Kill):
            run(cfg, run_dir=tmp_path / "cut" / "run")
    partial = StageCache(cfg.paths.cache_dir).partial(stage, stage_keys(cfg)[stage])
    assert json.loads((partial / "last.json").read_text())["epochs_done"] == 3
    with caplog.at_level(logging.INFO, logger="crt.stages.checkpoint"):
        resumed = run(cfg, run_dir=tmp_path / "cut" / "run")
    assert f"stage {stage}: resuming from its checkpoint after epoch 3/5: continuing at epoch 4" in caplog.text
    assert not partial.exists()  # removed once the outputs are cached
    assert resumed["stages"][stage]["selected"]["epochs_run"] == 5
    assert resumed["metrics"] == whole["metrics"]
    history = resumed["diagnostics"].get("mcc_s_val_by_epoch")  # the whole history, not the epochs after the resume
    assert history == whole["diagnostics"].get("mcc_s_val_by_epoch") and (stage == "pretrain" or len(history) == 5)
    for name in resumed["stages"]:  # the stored outputs themselves are bit-identical
        a = load_stage_file(Path(whole["stages"][name]["cache"]) / "outputs.pt")
        b = load_stage_file(Path(resumed["stages"][name]["cache"]) / "outputs.pt")
        assert all(torch.equal(a[k], b[k]) for k in a if isinstance(a[k], torch.Tensor))


def test_damaged_checkpoint_is_discarded_and_the_stage_restarts(make_cfg, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    cfg = make_cfg(*TINY, "stage.demix.epochs=4")
    with monkeypatch.context() as m:
        _crash_at(m, DemixModule, epoch=2)
        with pytest.raises(_Kill):
            run(cfg, run_dir=tmp_path / "run")
    partial = StageCache(cfg.paths.cache_dir).partial("demix", stage_keys(cfg)["demix"])
    ckpt = partial / json.loads((partial / "last.json").read_text())["file"]
    ckpt.write_bytes(ckpt.read_bytes()[:-100])
    with caplog.at_level(logging.INFO):
        res = run(cfg, run_dir=tmp_path / "run")
    assert "fails its checksum; discarding it and starting from epoch 1" in caplog.text
    assert "resuming" not in caplog.text and res["stages"]["demix"]["selected"]["epochs_run"] == 4


def test_sigint_names_the_stage_and_its_checkpoint(make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    orig = DemixModule.training_step

    def step(self, batch, i):  # noqa: ANN001
        if self.current_epoch == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return orig(self, batch, i)

    monkeypatch.setattr(DemixModule, "training_step", step)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(Interrupted) as err:
        run(make_cfg(*TINY, "stage.demix.epochs=4"), run_dir=tmp_path / "run")
    assert signal.getsignal(signal.SIGINT) is handler  # restored
    e = err.value
    assert (e.exit_code, e.stage, e.checkpoint_epoch) == (130, "demix", 2)
    assert "interrupted by SIGINT during stage demix" in e.message()
    assert "resumes stage demix from its checkpoint after epoch 2" in e.message()
    assert not (tmp_path / "run" / "results.json").exists()
    assert not list(Path(tmp_path / "outputs" / "cache" / "demix").glob(".*.tmp*"))  # no half-written entry


# ---------------------------------------------------------------- data validation


def _npz(tmp_path: Path, **arrays: object) -> str:
    path = tmp_path / "f.npz"
    np.savez(path, **arrays)
    return str(path)


def _features(tmp_path: Path, x: np.ndarray | None = None, y: np.ndarray | None = None, **arrays: object) -> str:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 30) if y is None else y
    x = rng.normal(size=(len(y), 4)).astype(np.float32) if x is None else x
    return _npz(tmp_path, X=x, y=y, **arrays)


def _bad(make_cfg, tmp_path: Path, path: str, *extra: str) -> str:
    cfg = make_cfg("data=features", f"data.path={path}", "method=erm", *TINY[:1], *extra)
    with pytest.raises(ConfigError) as err:
        run(cfg, run_dir=tmp_path / "run")
    msg = str(err.value)
    assert "Fix:" in msg and "\n" not in msg
    return msg


def test_nan_or_inf_features_are_refused(make_cfg, tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(size=(90, 4)).astype(np.float32)
    x[:10, 1], x[10:12, 0] = np.nan, np.inf  # 12 rows of class 0; at most 6 of them go to the test split
    msg = _bad(make_cfg, tmp_path, _features(tmp_path, x=x))
    assert re.search(r"\b([6-9]|1[0-2]) training rows hold NaN or inf", msg), msg


def test_sparse_label_ids_are_refused_with_the_empty_classes(make_cfg, tmp_path: Path) -> None:
    msg = _bad(make_cfg, tmp_path, _features(tmp_path, y=np.repeat([3, 7, 100], 30)))
    assert "98 of the 101 classes have no training samples" in msg and "3, 7, 100" in msg


def test_fractional_float_labels_are_refused_whole_floats_accepted(make_cfg, tmp_path: Path) -> None:
    y = np.repeat(np.arange(3), 30).astype(np.float64)
    y[7] = 1.5
    msg = _bad(make_cfg, tmp_path, _features(tmp_path, y=y))
    assert "not whole numbers" in msg and "1.5" in msg and "row 7" in msg
    ok = run(make_cfg("data=features", f"data.path={_features(tmp_path, y=np.repeat(np.arange(3.0), 30))}",
                      "method=erm", "debug=tiny"), run_dir=tmp_path / "ok")
    assert ok["data"]["n_train"] + ok["data"]["n_val"] == 72 and len(ok["per_class"]) == 3


def test_string_labels_and_a_single_class_are_refused(make_cfg, tmp_path: Path) -> None:
    msg = _bad(make_cfg, tmp_path, _features(tmp_path, y=np.repeat(np.array(["cat", "dog", "eel"]), 30)))
    assert "dtype <U3" in msg and "numpy.unique" in msg
    msg = _bad(make_cfg, tmp_path, _features(tmp_path, y=np.zeros(90, dtype=np.int64)))
    assert "holds 1 class" in msg


def test_a_class_with_a_single_sample_is_refused(make_cfg, tmp_path: Path) -> None:
    y = np.concatenate([np.repeat(np.arange(3), 30), [3]])
    split = np.array(["train"] * 91)
    split[:90:5] = "test"  # classes 0-2: 6 test rows each; class 3: its single sample is for training
    x = np.random.default_rng(0).normal(size=(len(y), 4)).astype(np.float32)
    msg = _bad(make_cfg, tmp_path, _npz(tmp_path, X=x, y=y, split=split))
    assert "class 3 has 1 sample(s)" in msg and "1 to train on, 0 held out" in msg


def test_every_class_minority_is_refused_for_majority_only_stages(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg(*TINY, "data.minority_classes=[0,1,2,3,4,5,6]")
    with pytest.raises(ConfigError, match="every one of the 7 classes is a minority class"):
        run(cfg, run_dir=tmp_path / "run")


def test_missing_mnist_dir_is_left_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import urllib.error

    import crt.data.download as dl
    from crt.data.mnist import load_mnist
    from crt.errors import DataNotFoundError

    def offline(*_a, **_k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(dl.urllib.request, "urlopen", offline)
    for root in (tmp_path / "absent", tmp_path / "empty"):
        if root.name == "empty":
            root.mkdir()
        with pytest.raises(DataNotFoundError, match="MNIST not found"):
            load_mnist(str(root), download=True)
    assert not (tmp_path / "absent").exists()
    assert list((tmp_path / "empty").iterdir()) == []


# ---------------------------------------------------------------- results.json, run folders, locks


@pytest.mark.parametrize("damage", ["truncated", "empty-object", "directory"])
def test_damaged_results_json_is_reported_and_the_run_redone(make_cfg, tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture, damage: str) -> None:
    cfg = make_cfg(*ERM)
    first = run(cfg, run_dir=tmp_path / "run")
    path = tmp_path / "run" / "results.json"
    if damage == "truncated":
        path.write_text(path.read_text()[:200])
    elif damage == "empty-object":
        path.write_text("{}")
    else:
        path.unlink()
        path.mkdir()
    with caplog.at_level(logging.WARNING, logger="crt.pipeline"):
        again = run(cfg, run_dir=tmp_path / "run")
    assert "is damaged or unreadable" in caplog.text and "the run is redone" in caplog.text
    assert again["created"] >= first["created"] and again["metrics"] == first["metrics"]
    assert json.loads(path.read_text())["metrics"] == first["metrics"]
    assert (tmp_path / "run" / "results.json.damaged").exists()


def test_run_folder_tag_stays_short_legal_and_unique() -> None:
    assert _tag("") == "default" and _tag("method.lam=0.1") == "method.lam=0.1"
    assert _tag("data=features,data.path=/a/b.npz") == "data=features,data.path=_a_b.npz"
    many = "data.minority_classes=[" + ",".join(map(str, range(80))) + "]"
    tag = _tag(many)
    assert len(tag.encode()) <= TAG_MAX and "/" not in tag and tag.startswith("data.minority_classes=[0,1,2")
    assert _tag(many.replace("79", "78")) != tag  # the hash tells long lists apart
    assert _tag("x" * 81) != _tag("x" * 82) and len(_tag("é" * 100).encode()) <= TAG_MAX


def test_a_job_waiting_on_a_stage_lock_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = StageCache(tmp_path)
    held = threading.Event()

    def holder() -> None:
        with cache.lock("demix", "k"):
            held.set()
            time.sleep(0.3)

    t = threading.Thread(target=holder)
    t.start()
    held.wait()
    with caplog.at_level(logging.INFO, logger="crt.cache"), cache.lock("demix", "k"):
        pass
    t.join()
    assert "another job is computing it; waiting for its lock" in caplog.text
    assert "lock acquired after" in caplog.text


def test_stage_payloads_hold_only_weights_only_types(make_cfg, tmp_path: Path) -> None:
    res = run(make_cfg(*TINY), run_dir=tmp_path / "run")
    for stage in res["stages"]:
        path = Path(res["stages"][stage]["cache"]) / "outputs.pt"
        assert isinstance(torch.load(path, weights_only=True), dict)
    torch.save({"x": Payload(tmp_path / "m")}, tmp_path / "bad.pt")
    with pytest.raises(pickle.UnpicklingError):  # what the loader refuses
        torch.load(tmp_path / "bad.pt", weights_only=True)
    assert not (tmp_path / "m").exists()


def test_slurm_launcher_resubmits_a_timed_out_job_which_then_resumes() -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="optional extra: pip install -e '.[slurm]'")
    from hydra import compose, initialize_config_dir
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher

    from tests.conftest import ROOT

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["hydra/launcher=submitit_slurm"], return_hydra_config=True)
    assert cfg.hydra.launcher.max_num_timeout >= 1 and cfg.hydra.launcher.signal_delay_s > 0
    assert cfg.checkpoint_every == 1  # the resubmitted job finds a checkpoint at most one epoch old
    assert callable(getattr(BaseSubmititLauncher, "checkpoint", None))  # submitit requeues checkpointable jobs


def test_sigterm_while_storing_a_stage_leaves_no_entry_and_the_rerun_finishes_it(
        make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    over = [*TINY, "stage.demix.epochs=3", "stage.selection.metric=ce"]
    whole = run(make_cfg(*over, "checkpoint_every=0", tmp=tmp_path / "whole"), run_dir=tmp_path / "whole" / "run")
    import crt.cache

    real_save = torch.save

    def save(obj, f, *a, **k):  # noqa: ANN001
        if isinstance(obj, dict) and "flow" in obj:  # the demix payload: the signal lands mid-write
            real_save(obj, f, *a, **k)
            os.kill(os.getpid(), signal.SIGTERM)
        return real_save(obj, f, *a, **k)

    cfg = make_cfg(*over, tmp=tmp_path / "cut")
    monkeypatch.setattr(crt.cache.torch, "save", save)
    with pytest.raises(Interrupted) as err:
        run(cfg, run_dir=tmp_path / "cut" / "run")
    monkeypatch.undo()
    assert (err.value.exit_code, err.value.stage, err.value.checkpoint_epoch) == (143, "demix", 3)
    demix = Path(cfg.paths.cache_dir) / "demix"
    assert not (demix / stage_keys(cfg)["demix"]).exists() and not list(demix.glob(".*.tmp*"))
    again = run(cfg, run_dir=tmp_path / "cut" / "run")  # resumes from the checkpoint after the last epoch
    assert again["stages"]["pretrain"]["reused"] and not again["stages"]["demix"]["reused"]
    assert again["metrics"] == whole["metrics"]


# ---------------------------------------------------------------- nonsense configuration (checked by crt.config)


@pytest.mark.parametrize("override,needle", [
    ("method.lam=nan", "method.lam"),
    ("method.lam=inf", "method.lam"),
    ("method.rho=nan", "method.rho"),
    ("stage.pretrain.epochs=0", "epochs"),
    ("stage.demix.epochs=-1", "epochs"),
    ("stage.refine.batch_size=0", "batch_size"),
    ("stage.pretrain.lr=nan", "lr"),
    ("seed=abc", "seed"),
    ("seed=1.5", "seed"),
    ("data.feature_dim=0", "feature_dim"),
    ("data.minority_classes=1", "minority_classes"),
    ("+method.lamda=0.1", "lamda"),
])
def test_nonsense_config_is_refused_before_training(make_cfg, tmp_path: Path, override: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        run(make_cfg(*TINY, override), run_dir=tmp_path / "run")
    msg = str(err.value)
    assert needle in msg and "Fix" in msg and "\n" not in msg, msg
    assert not (tmp_path / "outputs" / "cache").exists()  # nothing trained


def test_checkpoints_are_due_by_epochs_and_wall_clock(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from crt.stages import checkpoint as C

    now = [100.0]
    monkeypatch.setattr(C.time, "monotonic", lambda: now[0])
    ck = C.StageCheckpoint(tmp_path, "demix", every_n_epochs=2, interval_s=60)
    assert not ck.due(2)  # the 2nd epoch, but 0 s since the stage started
    now[0] += 61
    assert not ck.due(3) and ck.due(4)  # only every 2nd epoch, once 60 s have passed
    assert not C.StageCheckpoint(tmp_path, "demix", every_n_epochs=0, interval_s=0).due(4)  # off
    assert C.StageCheckpoint(tmp_path, "demix", every_n_epochs=1, interval_s=0).due(1)  # every epoch


def test_the_default_policy_writes_no_checkpoint_where_epochs_are_fast(make_cfg, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from crt.stages.checkpoint import StageCheckpoint

    saves: list[int] = []
    monkeypatch.setattr(StageCheckpoint, "save", lambda self, trainer, done: saves.append(done))
    run(make_cfg("debug=tiny"), run_dir=tmp_path / "run")  # every stage well under checkpoint_interval_s (300 s)
    assert saves == []
    run(make_cfg("debug=tiny", "checkpoint_interval_s=0", tmp=tmp_path / "b"), run_dir=tmp_path / "b" / "run")
    assert saves == [1, 2, 1, 2, 1, 2]  # pretrain, demix, refine: every epoch

"""Every write stays where it belongs (issue 20): no symlink is followed out of the output folder or the cache,
files honour the umask, a read-only shared cache is reused, and write errors name the path and the OS error."""

from __future__ import annotations

import builtins
import errno
import io
import logging
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

import crt.pipeline
from crt.cache import StageCache
from crt.config import validate
from crt.errors import ConfigError
from crt.pipeline import keys_for, run, run_lock
from crt.stages.modules import ClassifierModule
from crt.utils import atomic_folder, atomic_write_json

TINY = ["debug=tiny", "data.n_per_class=200", "data.n_test_per_class=50", "data.input_dim=8",
        "checkpoint_interval_s=0"]  # a checkpoint at every epoch, whatever its length
ERM = ["method=erm", *TINY]


def _victim(tmp_path: Path) -> Path:
    """A file outside every crt folder that a planted link points at."""
    victim = tmp_path / "elsewhere" / "precious.txt"
    victim.parent.mkdir(parents=True, exist_ok=True)
    victim.write_text("keep me\n")
    return victim


def test_symlinked_run_lock_and_run_folder_are_refused_and_their_targets_untouched(tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    run_dir = tmp_path / "out" / "runs" / "r"
    run_dir.mkdir(parents=True)
    (run_dir / ".lock").symlink_to(victim)
    with pytest.raises(ConfigError, match=r"run lock file .*\.lock is a symbolic link .*Fix: remove the link"):
        with run_lock(run_dir):
            pass
    assert victim.read_text() == "keep me\n"  # the old open(..., "w") truncated it

    (tmp_path / "out" / "runs" / "linked").symlink_to(victim.parent, target_is_directory=True)
    with pytest.raises(ConfigError, match="run folder .* is a symbolic link"), run_lock(tmp_path / "out" / "runs" / "linked"):
        pass
    (tmp_path / "out" / "runs" / "toy").symlink_to(victim.parent, target_is_directory=True)  # a link on the way
    with pytest.raises(ConfigError, match="resolves to .* outside"), run_lock(tmp_path / "out" / "runs" / "toy" / "r",
                                                                               tmp_path / "out"):
        pass
    assert sorted(p.name for p in victim.parent.iterdir()) == ["precious.txt"]


def test_symlinked_cache_lock_and_stage_folder_are_refused_and_their_targets_untouched(tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    cache = StageCache(tmp_path / "cache")
    (tmp_path / "cache" / "demix").mkdir(parents=True)
    (tmp_path / "cache" / "demix" / ".k.lock").symlink_to(victim)
    with pytest.raises(ConfigError, match=r"lock file of stage demix .* is a symbolic link"), cache.lock("demix", "k"):
        pass
    assert victim.read_text() == "keep me\n"
    (tmp_path / "cache" / "refine").symlink_to(victim.parent, target_is_directory=True)
    with pytest.raises(ConfigError, match="cache folder of stage refine .* is a symbolic link"), cache.lock("refine", "k"):
        pass
    assert sorted(p.name for p in victim.parent.iterdir()) == ["precious.txt"]  # no lock file created there

    planted = StageCache(tmp_path / "elsewhere").save("demix", "k2", {"s_test": torch.ones(2)}, {"stage": "demix"})
    (tmp_path / "cache" / "demix" / "k2").symlink_to(planted, target_is_directory=True)  # a linked, valid entry
    assert cache.load("demix", "k2") is None  # rejected like a damaged one (logged), so the stage is retrained
    cache.save("demix", "k2", {"s_test": torch.zeros(2)}, {"stage": "demix"})  # replaces the link, not its target
    assert not (tmp_path / "cache" / "demix" / "k2").is_symlink()
    assert torch.equal(cache.load("demix", "k2")["s_test"], torch.zeros(2))
    assert sorted(p.name for p in planted.iterdir()) == ["meta.json", "outputs.pt"]


def test_symlinked_partial_folder_is_refused_and_nothing_is_written_or_deleted_outside(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg(*ERM)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "epoch1.ckpt").write_text("someone's checkpoint\n")  # what the old code deleted as an "older" one
    stage_dir = Path(cfg.paths.cache_dir) / "pretrain"
    stage_dir.mkdir(parents=True)
    (stage_dir / f".{keys_for(cfg)['pretrain']}.partial").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ConfigError, match=r"checkpoint folder of stage pretrain .*\.partial is a symbolic link"):
        run(cfg, run_dir=tmp_path / "run")
    assert sorted(p.name for p in outside.iterdir()) == ["epoch1.ckpt"]
    assert (outside / "epoch1.ckpt").read_text() == "someone's checkpoint\n"


@pytest.mark.parametrize("override", ["method.name=../../x", "data.name=../..", "method.name=" + "m" * 300])
def test_a_name_that_is_no_folder_name_is_refused_by_the_config_check(make_cfg, override: str) -> None:
    with pytest.raises(ConfigError, match=r"names a folder of the run .*Fix: use 1 to 100 letters"):
        validate(make_cfg(*ERM, override))


def _modes(*roots: Path) -> dict[str, set[str]]:
    """Permission bits of everything under `roots`: {'files': {...}, 'dirs': {...}} as octal strings."""
    out: dict[str, set[str]] = {"files": set(), "dirs": set()}
    for root in roots:
        for p in [root, *root.rglob("*")]:
            out["dirs" if p.is_dir() else "files"].add(f"{p.stat().st_mode & 0o777:o}")
    return out


@contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


class _Crash(Exception):
    """Stands in for a kill: the stage stays unfinished, its checkpoint kept."""


@pytest.mark.parametrize("mask,file_mode,dir_mode", [(0o022, "644", "755"), (0o077, "600", "700")])
def test_files_and_folders_honour_the_umask(make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            mask: int, file_mode: str, dir_mode: str) -> None:
    cfg = make_cfg(*ERM, "stage.pretrain.epochs=3")
    run_dir, cache = tmp_path / "run", Path(cfg.paths.cache_dir)
    orig = ClassifierModule.training_step

    def step(self, batch, i):  # noqa: ANN001 - dies in epoch 2, after the checkpoint of epoch 1
        if self.current_epoch == 1:
            raise _Crash
        return orig(self, batch, i)

    with _umask(mask):
        with monkeypatch.context() as m:
            m.setattr(ClassifierModule, "training_step", step)
            with pytest.raises(_Crash):
                run(cfg, run_dir=run_dir)
        partial = StageCache(cache).partial("pretrain", keys_for(cfg)["pretrain"])
        assert {p.name for p in partial.iterdir()} == {"epoch1.ckpt", "last.json", "history.jsonl"}  # + what the stage logged
        assert _modes(partial) == {"files": {file_mode}, "dirs": {dir_mode}}  # checkpoints too
        res = run(cfg, run_dir=run_dir)
    entry = Path(res["stages"]["pretrain"]["cache"])
    for p in (run_dir / "results.json", run_dir / "model" / "weights.pt", entry / "outputs.pt", entry / "meta.json"):
        assert f"{p.stat().st_mode & 0o777:o}" == file_mode, p
    assert list((run_dir / "logs").rglob("metrics.csv"))
    assert _modes(run_dir, cache) == {"files": {file_mode}, "dirs": {dir_mode}}  # everything: model/, logs, locks


@contextmanager
def _read_only(root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make the file system under `root` read-only for this process (EROFS on every write), even as root."""
    root = Path(os.path.abspath(root))
    writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def under(path: object) -> bool:
        return isinstance(path, (str, os.PathLike)) and Path(os.path.abspath(path)).is_relative_to(root)

    def refuse(path: object) -> OSError:
        return OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir

    def fake_open(file, mode="r", *a, **k):  # noqa: ANN001, ANN002, ANN003
        if under(file) and any(c in mode for c in "wax+"):
            raise refuse(file)
        return real_open(file, mode, *a, **k)

    def fake_os_open(path, flags, *a, **k):  # noqa: ANN001, ANN002, ANN003
        if under(path) and flags & writes:
            raise refuse(path)
        return real_os_open(path, flags, *a, **k)

    def fake_mkdir(path, *a, **k):  # noqa: ANN001, ANN002, ANN003
        if under(path):
            raise FileExistsError(errno.EEXIST, "exists", str(path)) if os.path.isdir(path) else refuse(path)
        return real_mkdir(path, *a, **k)

    with monkeypatch.context() as m:
        for target, name, fake in ((builtins, "open", fake_open), (io, "open", fake_open), (os, "open", fake_os_open),
                                   (os, "mkdir", fake_mkdir)):
            m.setattr(target, name, fake)
        yield


def test_a_read_only_cache_with_a_finished_entry_is_reused_and_one_without_is_refused(
        make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    cfg = make_cfg(*ERM)
    first = run(cfg, run_dir=tmp_path / "first")
    cache = Path(cfg.paths.cache_dir)
    before = sorted(str(p) for p in cache.rglob("*"))
    with _read_only(cache, monkeypatch), caplog.at_level(logging.INFO, logger="crt.cache"):
        again = run(cfg, run_dir=tmp_path / "again")
    assert again["stages"]["pretrain"]["reused"] and again["metrics"] == first["metrics"]
    assert "is read-only here" in caplog.text and "without the lock" in caplog.text
    assert sorted(str(p) for p in cache.rglob("*")) == before

    other = make_cfg(*ERM, tmp=tmp_path / "b")
    empty = Path(other.paths.cache_dir)
    empty.mkdir(parents=True)
    with _read_only(empty, monkeypatch), pytest.raises(ConfigError) as err:
        run(other, run_dir=tmp_path / "third")
    msg = str(err.value)
    assert "is read-only for this job" in msg and "stage pretrain (key" in msg and "Fix: point paths.cache_dir" in msg
    assert "\n" not in msg and not (tmp_path / "third" / "results.json").exists()


def test_garbled_meta_json_is_skipped_with_a_warning_when_reusing_other_code(
        make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    cfg = make_cfg(*ERM, "cache.allow_other_code=true")
    first = run(cfg, run_dir=tmp_path / "first")
    entry = Path(first["stages"]["pretrain"]["cache"])
    garbled = entry.parent / ("0" * 16)  # sorts before the real entry
    garbled.mkdir()
    shutil.copy(entry / "outputs.pt", garbled / "outputs.pt")
    (garbled / "meta.json").write_text('{"code_free_key": ')
    monkeypatch.setattr(crt.pipeline, "code_version", lambda: "0.0+othercode")  # so the entry is other code's
    with caplog.at_level(logging.WARNING):
        res = run(cfg, run_dir=tmp_path / "second")
    assert f"skipping cache entry {garbled}" in caplog.text and "meta.json is missing, unreadable" in caplog.text
    assert res["stages"]["pretrain"]["other_code"]["key"] == entry.name and res["metrics"] == first["metrics"]


def _full_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every torch.save to a file or path hits a full disk (/dev/full: ENOSPC from the kernel)."""
    real = torch.save

    def save(obj, f, *a, **k):  # noqa: ANN001, ANN002, ANN003
        if isinstance(f, io.BytesIO):
            return real(obj, f, *a, **k)
        if isinstance(f, (str, os.PathLike)):
            return real(obj, "/dev/full", *a, **k)
        with open("/dev/full", "wb") as full:
            return real(obj, full, *a, **k)

    monkeypatch.setattr(torch, "save", save)


@pytest.mark.parametrize("every,written", [(0, r"pretrain/\.[0-9a-f]+\.tmp\w+/outputs\.pt"),
                                           (1, r"\.partial/\.epoch1\.ckpt\.\w+\.tmp")])
def test_a_full_disk_names_the_path_and_the_errno(make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  every: int, written: str) -> None:
    cfg = make_cfg(*ERM, f"checkpoint_every={every}")
    _full_disk(monkeypatch)
    with pytest.raises(ConfigError) as err:
        run(cfg, run_dir=tmp_path / "run")
    msg = str(err.value)
    assert re.search(rf"^could not write \S*{written}: No space left on device \(errno 28\)\. Fix: free space", msg), msg
    stage_dir = Path(cfg.paths.cache_dir) / "pretrain"
    assert [p.name for p in stage_dir.iterdir() if not p.name.endswith((".lock", ".partial"))] == []  # no entry, no temp
    assert not (tmp_path / "run" / "results.json").exists()


def test_atomic_writers_report_a_full_disk_with_the_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_fdopen = os.fdopen

    def full(fd: int, mode: str = "r", *a, **k):  # noqa: ANN002, ANN003
        os.close(fd)
        return real_fdopen(os.open("/dev/full", os.O_WRONLY), mode, *a, **k)

    with monkeypatch.context() as m:
        m.setattr(os, "fdopen", full)
        with pytest.raises(ConfigError, match=rf"could not write {tmp_path}/results.json: No space left on device "
                                              r"\(errno 28\)\. Fix: free space there \(df -h"):
            atomic_write_json(tmp_path / "results.json", {"metrics": {}})
    assert list(tmp_path.iterdir()) == []  # no temp file left

    with monkeypatch.context() as m:  # torch.save to a path (model export) hides the errno: a full disk is found out
        _full_disk(m)
        m.setattr(os, "statvfs", lambda p: os.statvfs_result((4096,) * 2 + (100, 0, 0, 10, 0, 0, 0, 255)))
        with pytest.raises(ConfigError, match=rf"could not write {tmp_path}/model: No space left on device \(errno 28\)"):
            with atomic_folder(tmp_path / "model") as tmp:
                torch.save({"w": torch.zeros(10)}, tmp / "weights.pt")
    assert list(tmp_path.iterdir()) == []

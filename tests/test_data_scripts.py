"""Verified, atomic downloads (crt.data.download: scripts/prepare_data.py and a run's own CIFAR download; clear
offline failure) and run.py's missing-data error."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import urllib.error
from pathlib import Path

import pytest

import crt.data.download as dl
from crt.data.cifar import load_cifar100
from crt.errors import DataNotFoundError

try:  # tests/ as a package (tests/__init__.py) or as plain modules
    from tests.test_datasets import write_cifar100
except ModuleNotFoundError:
    from test_datasets import write_cifar100

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import prepare_data


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _cifar_tarball(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    write_cifar100(src, per_class=2, test_per_class=1)
    tgz = tmp_path / "cifar-100-python.tar.gz"
    with tarfile.open(tgz, "w:gz") as tf:
        tf.add(src / "cifar-100-python", arcname="cifar-100-python")
    return tgz


def test_download_verifies_md5_and_leaves_nothing_half_written(tmp_path: Path) -> None:
    src = tmp_path / "file.bin"
    src.write_bytes(os.urandom(3000))
    dest = tmp_path / "out" / "file.bin"
    dl.download(src.as_uri(), dest, _md5(src))
    assert dest.read_bytes() == src.read_bytes()
    bad = tmp_path / "out" / "bad.bin"
    with pytest.raises(dl.PrepareError, match="md5"):
        dl.download(src.as_uri(), bad, "0" * 32)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["file.bin"]  # no bad.bin, no .part
    with pytest.raises(dl.PrepareError, match="could not download"):
        dl.download((tmp_path / "absent").as_uri(), tmp_path / "out" / "x")


def test_prepare_cifar100_from_a_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tgz = _cifar_tarball(tmp_path)
    arch = dl.Archive(tgz.as_uri(), _md5(tgz), "cifar-100-python", "test")
    monkeypatch.setitem(dl.ARCHIVES, "cifar100", arch)
    data = tmp_path / "data"
    assert prepare_data.main(["cifar100", "--data-dir", str(data)]) == 0
    assert sorted(p.name for p in data.iterdir()) == ["cifar-100-python"]  # archive and temp folder removed
    raw = load_cifar100(data_dir=str(data), download=False)
    assert raw.x_train.shape == (200, 3, 32, 32)
    assert prepare_data.main(["cifar100", "--data-dir", str(data)]) == 0  # second time: already present


def test_a_run_downloads_cifar_atomically_and_a_bad_archive_leaves_nothing(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    tgz = _cifar_tarball(tmp_path)
    data = tmp_path / "data"
    monkeypatch.setitem(dl.ARCHIVES, "cifar100", dl.Archive(tgz.as_uri(), "0" * 32, "cifar-100-python", "test"))
    with pytest.raises(DataNotFoundError, match="md5") as err:  # corrupt download: refused, nothing left behind
        load_cifar100(data_dir=str(data), download=True)
    assert "prepare_data.py cifar100" in str(err.value)
    assert not list(data.iterdir())  # no archive, no .part, no half-unpacked folder
    monkeypatch.setitem(dl.ARCHIVES, "cifar100", dl.Archive(tgz.as_uri(), _md5(tgz), "cifar-100-python", "test"))
    raw = load_cifar100(data_dir=str(data), download=True)
    assert raw.x_train.shape == (200, 3, 32, 32)
    assert sorted(p.name for p in data.iterdir()) == ["cifar-100-python"]  # the archive removed once unpacked


def test_offline_fails_with_a_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture) -> None:
    def offline(*_, **__):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(dl.urllib.request, "urlopen", offline)
    rc = prepare_data.main(["mnist", "cifar100", "tinyimagenet", "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    assert "could not download https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz" in err
    assert "tiny-imagenet-200.zip" in err and "mnist" in err and "Fix:" in err
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_manual_datasets_are_described(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert prepare_data.main(["inat2019", "arxiv", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "inat2019" / "train2019.json") in out and "must be fetched by hand" in out
    assert str(tmp_path / "arxiv" / "arxiv-metadata-oai-snapshot.json") in out and "kaggle" in out.lower()


@pytest.mark.slow
def test_run_py_without_data_says_where_and_how(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run(
        [sys.executable, "run.py", "experiment=cifar100_ecrt_mp", "trainer=cpu", f"paths.data_dir={empty}",
         "data.download=false",
         f"paths.output_dir={tmp_path / 'outputs'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Traceback" not in text
    assert str(empty / "cifar-100-python") in text and "python scripts/prepare_data.py cifar100" in text

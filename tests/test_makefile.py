"""Makefile: PY= or an active virtual environment skips the install step (read from `make -n`)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")


def dry(*args: str, **env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PY")}
    return subprocess.run(["make", "-n", *args], cwd=ROOT, env={**base, **env}, capture_output=True, text=True,
                          check=True).stdout


def test_py_given_skips_install() -> None:
    out = dry("run", "PY=/opt/py/bin/python")
    assert "venv" not in out and "pip" not in out
    assert "/opt/py/bin/python run.py" in out


def test_active_virtualenv_skips_install() -> None:
    out = dry("test", VIRTUAL_ENV="/opt/env")
    assert "pip" not in out and "/opt/env/bin/python -m pytest" in out


def test_without_py_make_installs_into_venv(tmp_path: Path) -> None:
    if (ROOT / ".venv" / ".installed").exists():
        pytest.skip("this checkout's .venv is already installed")
    out = dry("run")
    assert "python3 -m venv .venv" in out and ".venv/bin/pip install" in out


def test_figures_smoke_profile_runs_tiny_and_marks_figures() -> None:
    out = dry("figures", "PROFILE=smoke", "PY=python")
    lines = [ln for ln in out.splitlines() if "run.py -m" in ln]
    assert len(lines) == 3 and all("debug=tiny" in ln and "seed=0" in ln for ln in lines)
    assert "table-s1 --run" in out and "--extra debug=tiny" in out
    assert "make_figures.py --output-dir outputs --smoke debug=tiny" in out


def test_make_figures_fails_when_it_draws_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_figures", ROOT / "scripts" / "make_figures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--output-dir", str(tmp_path)]) == 1
    assert "PROFILE=smoke" in capsys.readouterr().err

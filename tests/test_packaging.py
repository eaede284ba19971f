"""crt as an installed product: a wheel in a fresh environment runs experiments and predicts from any folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _sh(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    out = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env={**env, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, f"{' '.join(args)} -> {out.returncode}\n{out.stdout[-1500:]}\n{out.stderr[-3000:]}"
    return out


@pytest.mark.slow
def test_the_wheel_runs_and_predicts_from_an_unrelated_folder(tmp_path: Path) -> None:
    src = tmp_path / "src"  # a copy: building in the checkout would leave build/ there
    for name in ("crt", "configs"):  # crt/configs stays a link to ../configs
        shutil.copytree(ROOT / name, src / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    _sh([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"),
         str(src)], cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("crt_imbalance-*.whl")
    env = tmp_path / "env"
    _sh([sys.executable, "-m", "venv", str(env)], cwd=tmp_path)
    py, bin_dir = env / "bin" / "python", env / "bin"
    site = Path(_sh([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path).stdout.strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # reuse the installed dependencies only
    _sh([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], cwd=tmp_path)
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = _sh([str(py), "-c", "import crt; print(crt.__file__)"], work).stdout.strip()
    assert where.startswith(str(env)), where  # the wheel's crt, not the checkout's
    assert "crt run" in _sh([str(bin_dir / "crt"), "--help"], work).stdout
    assert "crt run" in _sh([str(py), "-m", "crt", "--help"], work).stdout
    job = _sh([str(bin_dir / "crt"), "run", "experiment=table_s7_1_erm", "--cfg", "job"], work).stdout
    assert "name: mnist" in job and "name: erm" in job
    _sh([str(bin_dir / "crt"), "run", "debug=tiny", "logger=none", "paths.output_dir=out"], work)
    (res,) = (work / "out" / "runs").rglob("results.json")
    run_dir = res.parent
    metrics = json.loads(res.read_text())["metrics"]
    pred = json.loads(_sh([str(bin_dir / "crt"), "predict", f"run={run_dir}", "data=toy_henon", "out=preds.csv"],
                          work).stdout)
    assert pred["metrics"]["test/top1"] == metrics["test/top1"] and (work / "preds.csv").exists()

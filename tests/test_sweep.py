"""A 2 x 2 λ x ρ multirun on the toy: each ρ trains demix once, each λ only refine; a rerun trains nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def _sweep(out: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "run.py", "-m", "sweep=lam_rho", "debug=tiny", "method.lam=1e-3,1e-1",
           "method.rho=0,1e-2", f"paths.output_dir={out}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env, check=False)


def test_lam_rho_sweep_reuses_stages_and_skips_finished_runs(tmp_path: Path) -> None:
    first = _sweep(tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    files = sorted((tmp_path / "runs").rglob("results.json"))
    assert len(files) == 4, files  # the command-line lists replace the preset's 4 x 4 grid
    res = [json.loads(f.read_text()) for f in files]
    grid = {(r["config"]["method"]["lam"], r["config"]["method"]["rho"]) for r in res}
    assert grid == {(1e-3, 0.0), (1e-3, 1e-2), (1e-1, 0.0), (1e-1, 1e-2)}
    for r in res:  # deterministic folders: dataset/method/overrides/seed
        assert "sweep=lam_rho" in r["run_dir"] and r["run_dir"].endswith("seed0")

    def trained(stage: str) -> int:
        return sum(not r["stages"][stage]["reused"] for r in res)

    assert trained("pretrain") == 1  # shared by the whole grid
    assert trained("demix") == 2 and trained("augment") == 2  # once per ρ
    assert trained("refine") == 4  # every (λ, ρ)
    for rho in (0.0, 1e-2):
        same = [r for r in res if r["config"]["method"]["rho"] == rho]
        assert len({r["stages"]["demix"]["key"] for r in same}) == 1
        assert len({r["stages"]["refine"]["key"] for r in same}) == 2
        # the λ run that came second reused everything but refine
        assert any(r["stages"]["demix"]["reused"] and not r["stages"]["refine"]["reused"] for r in same)

    stamps = {f: f.stat().st_mtime_ns for f in files}
    again = _sweep(tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {f: f.stat().st_mtime_ns for f in files} == stamps  # finished runs are skipped, not rewritten
    assert "training (key" not in again.stdout + again.stderr

"""The benchmark runs on the CPU at tiny size and reports every stage for both settings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_tiny_cpu(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "scripts/bench.py", "--size", "tiny", "--device", "cpu", "--epochs", "1",
                          "--json", str(tmp_path / "bench.json")], cwd=ROOT, capture_output=True, text=True,
                         timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "speed-up fast / naive" in out.stdout and "samples/s" in out.stdout
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    got = {(r["setting"], r["stage"]) for r in rows}
    assert {(s, st) for s in ("fast", "naive") for st in ("pretrain", "demix", "augment", "refine")} <= got
    assert all(r["samples_per_s"] > 0 for r in rows if r["stage"] != "augment")

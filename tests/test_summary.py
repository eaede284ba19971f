"""Sweep summaries: mean ± std over seeds, grouped by the other overrides (crt.report.summary)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from crt.report.__main__ import main as report_main


def _fake_run(root: Path, tag: str, seed: int, top1: float, method: str = "erm") -> None:
    folder = root / "runs" / "toy_henon" / method / tag / f"seed{seed}"
    folder.mkdir(parents=True)
    res = {"dataset": "toy_henon", "method": method, "seed": seed,
           "metrics": {"test/top1": top1, "test/nll": 1.0 + seed, "val/bal_acc": 0.5}}
    (folder / "results.json").write_text(json.dumps(res))


def test_summarize_cli_mean_std_by_group(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for seed, v in enumerate([0.5, 0.7, 0.9]):
        _fake_run(tmp_path, "method.lam=0.1", seed, v)
    _fake_run(tmp_path, "method.lam=0.01,logger=wandb", 0, 0.4)  # logger is set aside: another group by lam only
    (tmp_path / "runs" / "toy_henon" / "erm" / "method.lam=0.01,logger=wandb" / "seed1").mkdir()
    (tmp_path / "runs" / "toy_henon" / "erm" / "method.lam=0.01,logger=wandb" / "seed1" / ".hydra").mkdir()
    (tmp_path / "runs" / "toy_henon" / "erm" / "method.lam=0.01,logger=wandb" / "seed1" / ".hydra" /
     "overrides.yaml").write_text("- method.lam=0.01\n- logger=wandb\n- seed=1\n")  # started, never finished
    assert report_main(["summarize", str(tmp_path)]) == 0
    rows = {r["overrides"]: r for r in csv.DictReader((tmp_path / "summary.csv").open())}
    assert set(rows) == {"method.lam=0.1", "method.lam=0.01"}
    a = rows["method.lam=0.1"]
    assert a["n"] == "3" and a["seeds"] == "0 1 2"
    assert float(a["test/top1 mean"]) == pytest.approx(0.7)
    assert float(a["test/top1 std"]) == pytest.approx(0.2)  # sample std of 0.5, 0.7, 0.9
    assert float(a["test/nll mean"]) == pytest.approx(2.0)
    b = rows["method.lam=0.01"]
    assert b["n"] == "1" and b["incomplete"] == "1" and b["test/top1 std"] == ""
    md = (tmp_path / "summary.md").read_text()
    assert "0.7000 ± 0.2000" in md and "1 (+1 incomplete)" in md
    assert "0.7000 ± 0.2000" in capsys.readouterr().out


def test_summarize_cli_rejects_a_missing_folder(tmp_path: Path) -> None:
    assert report_main(["summarize", str(tmp_path / "nope")]) == 2

"""scripts/demix_report.py and scripts/ecrt_regimes.py on run folders written here by hand."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import demix_report  # noqa: E402
import ecrt_regimes  # noqa: E402


def _run(root: Path, data: str, method: str, overrides: list[str], seed: int, metrics: dict, diagnostics: dict,
         demix_epochs: int = 20) -> None:
    run_dir = root / data / method / ",".join(overrides) / f"seed{seed}"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([*overrides, f"seed={seed}"]))
    stages = {"demix": {"selected": {"epoch": demix_epochs - 1}}} if method != "erm" else {}
    (run_dir / "results.json").write_text(json.dumps({
        "dataset": data, "seed": seed, "metrics": metrics, "diagnostics": diagnostics, "stages": stages,
        "config": {"stage": {"demix": {"epochs": demix_epochs}}}}))


def test_ecrt_regimes_table_groups_seeds_and_averages(tmp_path: Path, capsys) -> None:
    runs = tmp_path / "runs"
    for seed, (top1, f1) in enumerate([(0.70, 0.60), (0.72, 0.64), (0.74, 0.68)]):
        _run(runs, "toy_henon", "ecrt_mp", ["data=toy_henon", "method=ecrt_mp", "cache.allow_other_code=true"], seed,
             {"test/top1": top1, "test/minority_f1": f1, "val/bal_acc": 0.5}, {"mcc_s": 0.9, "mcc_z": 0.5})
    _run(runs, "toy_henon", "erm", ["data=toy_henon", "method=erm"], 0,
         {"test/top1": 0.6, "test/minority_f1": 0.4, "val/bal_acc": 0.55}, {"mcc_z": 0.5})
    assert ecrt_regimes.main(["--runs", str(runs), "--out", str(tmp_path / "tables")]) == 0
    md = (tmp_path / "tables" / "ecrt_regimes.md").read_text()
    row = next(line for line in md.splitlines() if "method=ecrt_mp" in line)
    assert "allow_other_code" not in row  # where stage outputs came from is not part of the row's label
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == "0,1,2"
    assert cells[3] == "0.7200 ± 0.0200" and cells[4] == "0.6400 ± 0.0400"  # mean ± sample std by hand
    erm = next(line for line in md.splitlines() if "method=erm" in line)
    assert "| 0.6000 | 0.4000 | 0.5500 |" in erm


def test_demix_report_lists_every_run_with_its_demix_epochs_and_draws_the_figure(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for epochs, mcc_s in ((20, 0.88), (200, 0.96)):
        _run(runs, "toy_henon", "ecrt_mp", ["data=toy_henon_identity", "method=ecrt_mp", f"stage.demix.epochs={epochs}",
                                            "method.rho=1.0"], 0, {},
             {"mcc_s": mcc_s, "mcc_z": 0.5, "mcc_s_val_by_epoch": [0.5, 0.7, mcc_s]}, demix_epochs=epochs)
    assert demix_report.main(["--runs", str(runs), "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "demix_mcc.md").read_text().splitlines()
    rows = [line for line in md if line.startswith("| toy_henon_identity")]
    assert len(rows) == 2
    by_epochs = {r.split("|")[4].strip(): r.split("|")[5].strip() for r in rows}
    assert by_epochs == {"20": "0.880", "200": "0.960"}
    assert all("method.rho=1.0" in r for r in rows)
    assert (tmp_path / "out" / "demix_mcc_by_epoch.png").stat().st_size > 0

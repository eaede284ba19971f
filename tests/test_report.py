"""Tables and figures from results.json files; the sweep, Optuna and SLURM launcher configs compose."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from crt.report import tables as T
from tests.conftest import ROOT

SHARED_PAPER = ROOT.parent / "shared" / "spec" / "paper_results.csv"


def fake_run(root: Path, overrides: list[str], seed: int, metrics: dict[str, float], *, dataset: str = "toy_henon",
             method: str = "erm", per_class: list[dict[str, Any]] | None = None, finished: bool = True,
             extra: dict[str, Any] | None = None) -> Path:
    """A run folder as run.py -m leaves it: .hydra/overrides.yaml and (when finished) results.json."""
    tag = ",".join(sorted(overrides)) or "default"
    folder = root / dataset / method / tag / f"seed{seed}"
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([*overrides, f"seed={seed}", "paths.output_dir=x"]))
    if finished:
        res = {"name": f"{dataset}-{method}", "dataset": dataset, "method": method, "seed": seed, "data_seed": 0,
               "created": f"2026-01-01T00:00:0{seed}", "stages": {}, "metrics": {f"test/{k}": v for k, v in metrics.items()},
               "per_class": per_class or [], "data": {}, "config": {"method": {"name": method}}, **(extra or {})}
        (folder / "results.json").write_text(json.dumps(res))
    return folder


# ------------------------------------------------------------------------------------------- runs
def test_split_overrides_keeps_lists_together() -> None:
    tag = "data.minority_classes=[0,1,2],experiment=table_s7_5_erm,method.lam=0.1"
    assert T.split_overrides(tag) == ["data.minority_classes=[0,1,2]", "experiment=table_s7_5_erm", "method.lam=0.1"]
    assert T.split_overrides("default") == []


def test_normalise_overrides_drops_where_and_how_a_run_ran() -> None:
    got = T.normalise_overrides(["experiment=a", "seed=2", "paths.output_dir=/x", "trainer=gpu", "trainer.devices=4",
                                 "+method.lam=0.1", "progress=false", "logger=csv"])
    assert got == {"experiment": "a", "method.lam": "0.1"}


def test_find_and_select_runs(tmp_path: Path) -> None:
    for s in (0, 1):
        fake_run(tmp_path, ["experiment=x"], s, {"top1": 0.5})
    fake_run(tmp_path, ["experiment=x", "method.lam=0.1"], 0, {"top1": 0.9})  # a sweep run: another cell
    fake_run(tmp_path, ["experiment=y"], 0, {}, finished=False)
    runs = T.find_runs(tmp_path)
    assert len(runs) == 4
    assert [r.seed for r in T.select(runs, {"experiment": "x"})] == [0, 1]
    assert len(T.select(runs, {"experiment": "x", "method.lam": "0.1"})) == 1
    assert T.select(runs, {"experiment": "y"}) == [] and len(T.incomplete(runs, {"experiment": "y"})) == 1


# ------------------------------------------------------------------------------------------ tables
def test_shipped_paper_csv_matches_the_spec() -> None:
    if not SHARED_PAPER.exists():
        pytest.skip("no ../shared/spec/paper_results.csv beside the checkout")
    assert T.PAPER_CSV.read_text() == SHARED_PAPER.read_text()


def test_paper_value_aliases() -> None:
    paper = T.load_paper()
    assert T.paper_value(paper, ("T1",), "cifar100", "", ("ecrt_mp", "ecrt"), ("top1",)) == 53.00
    assert T.paper_value(paper, ("T1",), "arxiv", "", ("ecrt_mp", "ecrt"), ("top1", "acc")) == 48.33
    assert T.paper_value(paper, ("S7",), "mnist", "minority=5", ("crt",), ("nll",)) == 0.257
    assert T.paper_value(paper, ("S7",), "mnist", "minority=5", ("ecrt_mp",), ("nll",)) is None


def test_table1_aggregates_seeds_in_paper_units_and_marks_absent_cells(tmp_path: Path) -> None:
    runs_root = tmp_path / "runs"
    fake_run(runs_root, ["experiment=cifar100_erm"], 0, {"top1": 0.50, "top5": 0.80, "nll": 2.0, "macro_f1": 0.4},
             dataset="cifar100")
    fake_run(runs_root, ["experiment=cifar100_erm"], 1, {"top1": 0.52, "top5": 0.82, "nll": 2.2, "macro_f1": 0.5},
             dataset="cifar100")
    fake_run(runs_root, ["experiment=cifar100_iw"], 0, {}, dataset="cifar100", finished=False)
    spec = T.table1_spec(["cifar100", "arxiv"], ["erm", "iw", "ecrt_mp"], seeds="0,1")
    df = T.aggregate(spec, T.find_runs(runs_root), status={"arxiv": "n/a: data absent (arxiv features missing)"})
    row = df[(df.dataset == "cifar100") & (df.method == "erm") & (df.metric == "top1")].iloc[0]
    assert row.n_seeds == 2 and math.isclose(row["mean"], 51.0) and math.isclose(row["std"], math.sqrt(2))
    assert row.paper == 49.29 and math.isclose(row["diff"], 51.0 - 49.29)
    nll = df[(df.dataset == "cifar100") & (df.method == "erm") & (df.metric == "nll")].iloc[0]
    assert math.isclose(nll["mean"], 2.1) and nll.paper == 2.95  # NLL is not scaled
    assert df[(df.method == "iw") & (df.dataset == "cifar100")].status.iloc[0] == "n/a: run failed or unfinished"
    assert df[(df.method == "ecrt_mp") & (df.dataset == "cifar100")].status.iloc[0] == "n/a: not run"
    arx = df[(df.dataset == "arxiv") & (df.method == "erm")]
    assert set(arx.status) == {"n/a: data absent"} and arx[arx.metric == "top1"].paper.iloc[0] == 44.64
    # every cell stays in the table, absent or not
    assert len(df) == len(spec.cells) * len(spec.metrics)

    paths = T.write_table(df, spec, tmp_path / "tables")
    assert [p.suffix for p in paths] == [".md", ".tex", ".csv"] and all(p.exists() for p in paths)
    md = paths[0].read_text()
    assert "| cifar100 | erm | 51.00 ± 1.41 | 49.29 | +1.71 |" in md
    assert "n/a: data absent" in md and "n/a: run failed or unfinished" in md
    tex = paths[1].read_text()
    assert r"\begin{tabular}" in tex and r"51.00 $\pm$ 1.41" in tex and "ecrt\\_mp" in tex
    back = pd.read_csv(paths[2], keep_default_na=False)
    assert {"dataset", "setting", "method", "metric", "mean", "std", "paper", "diff", "status"} <= set(back.columns)
    assert not list((tmp_path / "tables").glob(".*.tmp"))  # atomic writes leave no temp files


def test_table1_smoke_profile_is_labelled_and_keeps_the_paper_columns(tmp_path: Path) -> None:
    fake_run(tmp_path, ["experiment=smoke_table1", "method=erm"], 0, {"top1": 0.3, "top5": 0.9, "nll": 1.5})
    spec = T.table1_spec(["cifar100", "tinyimagenet"], ["erm"], profile="smoke")
    df = T.aggregate(spec, T.find_runs(tmp_path))
    assert spec.name == "table1_smoke" and "SMOKE" in spec.notes[0]
    top1 = df[df.metric == "top1"]
    assert list(top1.label) == ["cifar100 [smoke: toy_henon]", "tinyimagenet [smoke: toy_henon]"]
    assert list(top1["mean"]) == [30.0, 30.0] and list(top1.paper) == [49.29, 58.52]
    with pytest.raises(T.ConfigError, match="PROFILE"):
        T.table1_spec(profile="quick")


def test_table_s7_cells_and_fraction_units(tmp_path: Path) -> None:
    fake_run(tmp_path, ["experiment=table_s7_5_crt"], 0, {"top1": 0.95, "nll": 0.25}, dataset="mnist", method="crt")
    spec = T.table_s7_spec()
    assert {c.match["experiment"] for c in spec.cells} == {f"table_s7_{k}_{m}" for k in (1, 5) for m in T.S7_METHODS}
    df = T.aggregate(spec, T.find_runs(tmp_path))
    r = df[(df.setting == "minority=5") & (df.method == "crt") & (df.metric == "top1")].iloc[0]
    assert r["mean"] == 0.95 and r.paper == 0.950 and r["diff"] == pytest.approx(0.0)


def test_experiment_files_exist_for_every_supplement_cell() -> None:
    exp = ROOT / "configs" / "experiment"
    for c in T.table_s7_spec().cells + T.table_s1_spec().cells:
        assert (exp / f"{c.match['experiment']}.yaml").exists(), c


@pytest.mark.parametrize("count,bucket", [(5, 5), (7, 5), (8, 10), (15, 10), (16, 20), (62, 50), (63, 75),
                                          (125, 100), (126, 150), (150, 150)])
def test_bucket_of(count: int, bucket: int) -> None:
    assert T.bucket_of(count) == bucket


def _extreme_run(root: Path, seed: int, with_cache: bool) -> Path:
    """A finished toy_extreme run with 40 classes; its cached refine logits favour the true class."""
    from crt.data import build_split

    data = {"name": "toy_extreme", "num_classes": 40, "imbalance": "natural", "minority_classes": [],
            "majority_min_count": 100, "ratio": 1.0, "data_seed": 0, "val_fraction": 0.2, "min_per_class": 5,
            "max_per_class": 150, "n_test_per_class": 4, "std": 0.1}
    split = build_split(data)
    y = split.y_test
    logits = torch.full((len(y), 40), -5.0)
    right = torch.arange(len(y)) % 2 == 0  # half right (top-1), the other half second best (top-5 only)
    logits[torch.arange(len(y)), y] = torch.where(right, 5.0, 0.0)
    logits[~right, (y[~right] + 1) % 40] = 1.0
    cache = root / "cache" / "refine" / f"k{seed}"
    if with_cache:
        cache.mkdir(parents=True)
        torch.save({"logits_test": logits}, cache / "outputs.pt")
    per_class = [{"class": c, "train_count": int(n), "acc": 0.5, "f1": 0.5} for c, n in enumerate(split.train_counts)]
    return fake_run(root / "runs", ["experiment=table_s1_crt"], seed, {"top1": 0.5}, dataset="toy_extreme",
                    method="crt", per_class=per_class, extra={
                        "data": {"counts": split.counts.tolist()},
                        "stages": {"refine": {"key": f"k{seed}", "cache": str(cache)}},
                        "config": {"method": {"name": "crt", "stages": ["refine"]}, "data": data, "paths": {}}})


def test_bucket_metrics_from_the_cached_logits(tmp_path: Path) -> None:
    _extreme_run(tmp_path, 0, with_cache=True)
    run = T.find_runs(tmp_path / "runs")[0]
    got = T.bucket_metrics(run, runs_root=tmp_path / "runs")
    filled = [v for v in got.values() if v["n_classes"]]
    assert sum(v["n_classes"] for v in got.values()) == 40 and filled
    for v in filled:
        assert v["top1"] == pytest.approx(0.5) and v["top5"] == pytest.approx(1.0) and v["nll"] > 0
    spec = T.table_s1_spec(runs_root=tmp_path / "runs")
    df = T.aggregate(spec, [run])
    crt = df[(df.method == "crt") & (df.metric == "top1") & (df.n_seeds > 0)]
    assert len(crt) and set(crt.paper.notna()) == {True}


def test_bucket_metrics_without_cache_falls_back_to_per_class_accuracy(tmp_path: Path) -> None:
    _extreme_run(tmp_path, 0, with_cache=False)
    run = T.find_runs(tmp_path / "runs")[0]
    got = T.bucket_metrics(run, runs_root=tmp_path / "runs")
    filled = [v for v in got.values() if v["n_classes"]]
    assert all(v["top1"] == 0.5 and "nll" not in v for v in filled)


def test_data_absent_is_found_without_running(tmp_path: Path) -> None:
    why = T.data_absent("cifar100_erm", str(tmp_path))
    assert why is not None and why.startswith("n/a: data absent")


def test_status_file_roundtrip(tmp_path: Path) -> None:
    T.write_status(tmp_path, "table1", {"arxiv": "n/a: data absent (x)"})
    T.write_status(tmp_path, "table_s7", {})
    assert T.read_status(tmp_path, "table1") == {"arxiv": "n/a: data absent (x)"}
    assert T.read_status(tmp_path, "table_s7") == {}


# ----------------------------------------------------------------------------------------- figures
def test_figures_from_fake_runs(tmp_path: Path) -> None:
    from crt.report import figures as F

    runs = []
    for seed in (0, 1):
        for lam in (0.0, 1e-3, 1e-1):
            pc = [{"class": c, "train_count": n, "f1": 0.3 + 0.1 * c} for c, n in enumerate((10, 40, 160, 640))]
            fake_run(tmp_path, ["sweep=lam", f"method.lam={lam}"], seed, {"top1": 0.5 + lam, "macro_f1": 0.4},
                     method="ecrt_mp", per_class=pc,
                     extra={"config": {"method": {"lam": lam}, "stage": {"refine": {"weighting": "code"}}}})
    runs = T.find_runs(tmp_path)
    lam_runs = F.where(runs, {"sweep": "lam"}, ("method.lam",))
    assert len(lam_runs) == 6
    paths = F.lambda_sensitivity(lam_runs, tmp_path / "fig")
    paths += F.per_class_f1({"ECRT-MP": lam_runs}, tmp_path / "fig", "per_class_f1_test", "test")
    assert sorted(p.name for p in paths) == ["lambda_sensitivity.pdf", "lambda_sensitivity.png",
                                             "per_class_f1_test.pdf", "per_class_f1_test.png"]
    assert all(p.stat().st_size > 1000 for p in paths)
    # no runs: every figure that needs runs is skipped, nothing raises
    assert set(F.make_all(tmp_path / "nothing")) == set(F.NO_RUNS)


# ---------------------------------------------------------------------------------- configs, make
def _compose(overrides: list[str]) -> Any:
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize("preset,keys", [("lam", {"method.lam"}), ("rho", {"method.rho"}),
                                         ("lam_rho", {"method.lam", "method.rho"})])
def test_sweep_presets_compose(preset: str, keys: set[str]) -> None:
    cfg = _compose([f"sweep={preset}"])
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    assert set(params) == keys and all(len(str(v).split(",")) >= 4 for v in params.values())


def test_optuna_preset() -> None:
    text = (ROOT / "configs" / "sweep" / "optuna.yaml").read_text()
    assert "override /hydra/sweeper: optuna" in text and "tag(log, interval(" in text
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="optional extra: pip install -e '.[optuna]'")
    cfg = _compose(["sweep=optuna"])
    assert "optuna" in cfg.hydra.sweeper._target_.lower() and cfg.hydra.sweeper.direction == "maximize"


def test_slurm_launcher_composes_and_follows_the_trainer() -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="optional extra: pip install -e '.[slurm]'")
    cfg = _compose(["hydra/launcher=submitit_slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"])
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert launcher.tasks_per_node == 4 and launcher.gpus_per_node == 4 and launcher.nodes == 2
    for key in ("partition", "timeout_min", "mem_gb", "cpus_per_task", "array_parallelism"):
        assert key in launcher
    cpu = _compose(["hydra/launcher=submitit_slurm"]).hydra.launcher  # trainer=cpu: one task, no num_nodes key
    assert cpu.tasks_per_node == 1 and cpu.nodes == 1


def test_slurm_launcher_from_the_command_line() -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="optional extra: pip install -e '.[slurm]'")
    out = subprocess.run([sys.executable, "run.py", "hydra/launcher=submitit_slurm", "--cfg", "hydra"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert "_target_: hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher" in out.stdout


def test_report_make_targets_are_documented() -> None:
    text = (ROOT / "make" / "report.mk").read_text()
    targets = re.findall(r"^([a-z0-9-]+):.*?## (.+)$", text, flags=re.MULTILINE)
    names = {t for t, _ in targets}
    assert {"table1", "table-s1", "table-s7", "figures", "sweep-lam", "sweep-rho", "sweep-lam-rho"} <= names


@pytest.mark.slow
def test_make_tables_smoke_end_to_end(tmp_path: Path) -> None:
    """The Table 1 smoke profile runs tiny toy jobs and writes all three formats with the paper's columns."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "scripts/make_tables.py", "table1", "--run", "--profile", "smoke", "--seeds", "0",
           "--datasets", "cifar100 arxiv", "--methods", "erm,ecrt_mp", "--output-dir", str(tmp_path)]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env, check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    tables = tmp_path / "tables"
    md = (tables / "table1_smoke.md").read_text()
    assert "SMOKE" in md and "cifar100 [smoke: toy_henon]" in md and "| 53.00 |" in md  # ECRT-MP's paper top-1
    df = pd.read_csv(tables / "table1_smoke.csv", keep_default_na=False)
    got = df[(df.metric == "top1") & (df.method.isin(["erm", "ecrt_mp"]))]
    assert (got.n_seeds == 1).all() and (got.status == "").all()
    assert (tables / "table1_smoke.tex").exists()

"""The long-tail experiments and tables (issue 14): every CIFAR-LT cell composes with LDAM-DRW's recipe, the
table specs pick the right runs and published values, and `make table-lt PROFILE=smoke` runs end to end."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from crt.report import longtail as LT
from crt.report import tables as T

try:  # tests/ as a package (tests/__init__.py) or as plain modules
    from tests.conftest import ROOT, compose_cfg
    from tests.test_report import fake_run
except ModuleNotFoundError:
    from conftest import ROOT, compose_cfg
    from test_report import fake_run

CELLS = sorted(p.stem for p in (ROOT / "configs" / "experiment").glob("lt_cifar*_if*_*.yaml"))


def test_every_cifar_lt_cell_has_a_file() -> None:
    want = {LT.lt_experiment(d, f, m) for d in LT.LT_DATASETS for f in LT.LT_FACTORS for m in LT.LT_METHODS}
    assert set(CELLS) == want and len(want) == 66


@pytest.mark.parametrize("stem", CELLS)
def test_cifar_lt_cell_composes_with_the_ldam_drw_recipe(stem: str) -> None:
    lines = (ROOT / "configs" / "experiment" / f"{stem}.yaml").read_text().splitlines()
    assert lines[0] == "# @package _global_" and lines[2].startswith(f"# python run.py experiment={stem}")
    _, dataset, factor, method = stem.split("_", 3)
    cfg = compose_cfg([f"experiment={stem}"])
    assert cfg.data.name == dataset and cfg.method.name == method
    assert cfg.data.imbalance == "exp" and cfg.data.data_seed == 0 and cfg.data.train_transform == "crop_flip"
    assert cfg.data.ratio == pytest.approx(1.0 / int(factor[2:]))
    assert cfg.data.n_max == (5000 if dataset == "cifar10" else 500)
    assert cfg.data.encoder.name == "resnet32_cifar" and cfg.data.encoder.depth == 32 and cfg.data.feature_dim == 64
    assert list(cfg.model.head.hidden) == [] and list(cfg.model.predictor.hidden) == []
    p = cfg.stage.pretrain
    assert (p.optimizer, p.nesterov, p.lr, p.weight_decay, p.batch_size, p.epochs, p.patience) == \
        ("sgd", False, 0.1, 2e-4, 128, 200, None)
    assert dict(p.lr_schedule) == {"warmup_epochs": 5, "milestones": [160, 180], "gamma": 0.01}
    from crt.config import validate

    validate(cfg)


@pytest.mark.parametrize("exp", ["lt_smoke", "lt_toy", "lt_toy_extreme", "lt_mnist", "lt_mnist5"])
def test_small_and_smoke_experiments_compose(exp: str) -> None:
    cfg = compose_cfg([f"experiment={exp}", "method=ecrt_mp", "method.refine_loss=logit_adjust"])
    assert cfg.method.refine_loss == "logit_adjust"
    assert cfg.trainer.accelerator == "cpu"
    if exp != "lt_smoke":
        assert cfg.method.pretrain_classes == "all"


def test_table_lt_puts_runs_beside_published_values(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    stem = LT.lt_experiment("cifar100", 100, "logit_adjust")
    for seed, acc in ((0, 0.40), (1, 0.42)):
        fake_run(runs, [f"experiment={stem}"], seed, {"top1": acc, "acc_few": 0.1}, dataset="cifar100",
                 method="logit_adjust")
    paper = pd.DataFrame([{"table": "LT", "dataset": "cifar100_lt", "method": "logit_adjust", "setting": "IF=100",
                           "metric": "top1", "value": 43.5}])
    spec = LT.table_lt_spec(seeds="0,1")
    assert len(spec.cells) == 66 and all(c.status == "" for c in spec.cells)
    df = T.aggregate(spec, T.find_runs(runs), paper=paper)
    row = df[(df.dataset == "cifar100") & (df.setting == "IF=100") & (df.method == "logit_adjust") & (df.metric == "top1")]
    assert row.n_seeds.item() == 2 and row["mean"].item() == pytest.approx(41.0) and row.paper.item() == 43.5
    assert row["diff"].item() == pytest.approx(-2.5)
    other = df[(df.setting == "IF=50") & (df.method == "logit_adjust") & (df.metric == "top1")]
    assert (other.n_seeds == 0).all() and other.paper.isna().all()


def test_every_published_lt_value_cites_its_table_and_page() -> None:
    """Each cited CIFAR-LT row names a table and a page, fits a cell of the table, and matches its printed number."""
    lt = pd.read_csv(T.PAPER_LT_CSV, dtype=str, keep_default_na=False)
    assert list(lt.columns) == ["table", "dataset", "method", "setting", "metric", "value", "printed", "source"]
    assert len(lt) == 26 and not lt.duplicated(["dataset", "method", "setting", "metric"]).any()
    assert set(lt.table) == {"LT"} and set(lt.metric) == {"top1"}
    assert set(lt.dataset) <= {f"{d}_lt" for d in LT.LT_DATASETS}
    assert set(lt.setting) <= {f"IF={f}" for f in LT.LT_FACTORS}
    assert set(lt.method) <= set(LT.LT_METHODS)
    for r in lt.itertuples():
        assert re.search(r"\bTable \d+\b", r.source) and re.search(r"(\bp\. \d+\b|page not determined)", r.source), r
        value = float(r.value)
        assert 0 <= value <= 100, r
        printed = float(re.search(r"(error|accuracy) (\d+\.\d+)", r.printed).group(2))
        # an error e is entered as 100 - e, an accuracy as printed
        assert value == pytest.approx(100 - printed if "error" in r.printed else printed, abs=1e-9), r
    # the paper column of the old tables stays the spec's file: no LT row there
    assert "LT" not in set(pd.read_csv(T.PAPER_CSV, dtype=str, keep_default_na=False).table)


def test_load_paper_adds_the_cited_lt_rows_to_the_spec_rows() -> None:
    main = pd.read_csv(T.PAPER_CSV, dtype=str, keep_default_na=False)
    paper = T.load_paper()
    assert len(paper) == len(main) + 26 and paper["value"].dtype.kind == "f"
    assert (paper[paper.table != "LT"].source == "").all() and (paper[paper.table == "LT"].source != "").all()
    assert T.paper_value(paper, ("LT",), "cifar100_lt", "IF=100", ("ldam_drw",), ("top1",)) == 42.04
    assert T.paper_value(paper, ("LT",), "cifar100_lt", "IF=50", ("ldam_drw",), ("top1",)) is None
    assert T.paper_value(paper, ("T1",), "cifar100", "", ("erm",), ("top1",)) == 49.29


def test_table_lt_renders_the_published_value_in_its_cell_and_cites_it(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    stem = LT.lt_experiment("cifar100", 100, "ldam_drw")
    for seed, acc in ((0, 0.40), (1, 0.42)):
        fake_run(runs, [f"experiment={stem}"], seed, {"top1": acc}, dataset="cifar100", method="ldam_drw")
    spec = LT.table_lt_spec(seeds="0,1")
    df = T.aggregate(spec, T.find_runs(runs))  # the shipped paper numbers
    top1 = df[df.metric == "top1"].set_index(["dataset", "setting", "method"])
    assert top1.loc[("cifar100", "IF=100", "ldam_drw"), "paper"] == 42.04
    assert top1.loc[("cifar100", "IF=100", "ldam_drw"), "diff"] == pytest.approx(41.0 - 42.04)
    assert top1.loc[("cifar10", "IF=10", "decoupled_lws"), "paper"] == 91.1
    assert top1.loc[("cifar100", "IF=100", "logit_adjust"), "paper"] == 43.89
    assert top1["paper"].notna().sum() == 26
    assert pd.isna(top1.loc[("cifar100", "IF=50", "ldam_drw"), "paper"])  # no paper reports IF 50
    assert pd.isna(top1.loc[("cifar100", "IF=100", "ecrt_mp"), "paper"])
    assert df[df.metric == "acc_few"]["paper"].isna().all()  # only top-1 is published
    md = T.to_markdown(df, spec)
    assert "| CIFAR-100-LT | IF=100 | ldam_drw | 41.00 ± 1.41 | 42.04 | -1.04 |" in md
    assert "| CIFAR-10-LT | IF=100 | erm | n/a: not run | 70.36 | — |" in md
    assert "> paper column from Cao et al., NeurIPS 2019 (arXiv:1906.07413v2), Table 2, p. 8: erm (IF 100, 10), " \
           "ldam_drw (IF 100, 10)." in md
    assert "Ren et al., NeurIPS 2020 (arXiv:2007.10740v3), Table 5, p. 9: balanced_softmax (IF 100, 10)" in md
    # the smoke table keeps the real paper column
    smoke = LT.table_lt_spec(profile="smoke")
    sdf = T.aggregate(smoke, [])
    row = sdf[(sdf.dataset == "cifar10") & (sdf.setting == "IF=100") & (sdf.method == "decoupled_crt") & (sdf.metric == "top1")]
    assert row.paper.item() == 82.0
    assert any("Menon et al., ICLR 2021 (arXiv:2007.07314v2), Table 3, p. 9" in n for n in smoke.notes)


def test_published_notes_name_each_dataset_when_their_factors_differ() -> None:
    paper = pd.DataFrame([
        {"table": "LT", "dataset": "cifar10_lt", "method": "erm", "setting": "IF=100", "metric": "top1", "value": 70.0,
         "printed": "x", "source": "A et al., Table 1, p. 2"},
        {"table": "LT", "dataset": "cifar100_lt", "method": "erm", "setting": "IF=10", "metric": "top1", "value": 50.0,
         "printed": "x", "source": "A et al., Table 1, p. 2"},
        {"table": "T1", "dataset": "cifar100", "method": "erm", "setting": "", "metric": "top1", "value": 49.0,
         "printed": "", "source": ""},
    ])
    notes = LT.published_notes(paper)
    assert notes[0] == "paper column from A et al., Table 1, p. 2: erm (CIFAR-10-LT IF 100; CIFAR-100-LT IF 10)."
    assert len(notes) == 2 and "100 − e" in notes[1]
    assert LT.published_notes(paper[paper.table == "T1"]) == []


def test_table_lt_small_cells_include_the_compositions() -> None:
    spec = LT.table_lt_small_spec()
    matches = [dict(c.match) for c in spec.cells if c.dataset == "mnist (5 minority digits)"]
    assert {"experiment": "lt_mnist5", "method": "ecrt_mp_la"} in matches
    assert {"experiment": "lt_mnist5", "method": "ecrt_mp", "method.pretrain_loss": "logit_adjust"} in matches
    assert {"experiment": "lt_mnist5", "method": "ecrt_mp", "method.augment": "none"} in matches
    assert len(spec.cells) == 4 * len(LT.SMALL_ROWS)
    assert {c.match["experiment"] for c in spec.cells} == {"lt_toy", "lt_toy_extreme", "lt_mnist", "lt_mnist5"}


@pytest.mark.parametrize(("exp", "minority", "n_classes"),
                         [("lt_mnist", [0], 10), ("lt_mnist5", [0, 1, 2, 3, 4], 10), ("lt_toy_extreme", [], 1000)])
def test_small_settings_are_the_papers_protocols(exp: str, minority: list[int], n_classes: int) -> None:
    cfg = compose_cfg([f"experiment={exp}", "method=erm"])
    assert list(cfg.data.minority_classes) == minority and cfg.data.num_classes == n_classes
    assert cfg.method.pretrain_classes == "all"
    epochs = {cfg.stage[s].epochs for s in ("pretrain", "demix", "refine")}
    assert epochs == ({15} if exp.startswith("lt_mnist") else {10})


def test_table_lt_make_targets_are_documented() -> None:
    text = (ROOT / "make" / "report.mk").read_text()
    assert "table-lt: install ##" in text and "table-lt-small: install ##" in text


@pytest.mark.slow
def test_make_table_lt_smoke_end_to_end(tmp_path: Path) -> None:
    """`make table-lt PROFILE=smoke`: every method on synthetic images, aggregated into all three formats."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "scripts/make_tables.py", "table-lt", "--run", "--profile", "smoke", "--seeds", "0",
           "--output-dir", str(tmp_path)]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env, check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    tables = tmp_path / "tables"
    md = (tables / "table_lt_smoke.md").read_text()
    assert "SMOKE" in md and "CIFAR-100-LT [smoke: synthetic_images]" in md
    df = pd.read_csv(tables / "table_lt_smoke.csv", keep_default_na=False)
    top1 = df[df.metric == "top1"]
    assert set(top1.method) == set(LT.LT_METHODS) and (top1.n_seeds == 1).all() and (top1.status == "").all()
    assert (tables / "table_lt_smoke.tex").exists()


def test_run_table_lt_small_launches_every_row_of_every_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each cell of the spec is filled by exactly one launched multirun (plain methods together, extras apart)."""
    launched: list[list[str]] = []
    monkeypatch.setattr(LT, "data_absent", lambda exp, data_dir: None)
    monkeypatch.setattr(LT, "multirun", lambda args, dry_run=False: launched.append(list(args)) or 0)
    status, failed = LT.run_table_lt_small("0,1,2", "/out", "/data")
    assert (status, failed) == ({}, 0)
    assert len(launched) == 4 * (1 + sum(1 for _, _, e in LT.SMALL_ROWS if e))
    covered = set()
    for args in launched:
        assert "seed=0,1,2" in args and "paths.output_dir=/out" in args and "paths.data_dir=/data" in args
        exp = next(a.split("=", 1)[1] for a in args if a.startswith("experiment="))
        methods = next(a.split("=", 1)[1] for a in args if a.startswith("method=")).split(",")
        extra = tuple(sorted(a for a in args if a.split("=")[0] not in ("experiment", "method", "seed")
                             and not a.startswith("paths.")))
        covered |= {(exp, m, extra) for m in methods}
    for cell in LT.table_lt_small_spec().cells:
        m = dict(cell.match)
        extra = tuple(sorted(f"{k}={v}" for k, v in m.items() if k not in ("experiment", "method")))
        assert (m["experiment"], m["method"], extra) in covered, cell

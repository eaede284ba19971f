"""Every experiment file composes and passes validation; those whose data needs no download run at debug size."""

from __future__ import annotations

from pathlib import Path

import pytest

from crt.config import resolve
from crt.pipeline import run

try:  # tests/ as a package (tests/__init__.py) or as plain modules
    from tests.conftest import MNIST_DIR, ROOT, compose_cfg, has_mnist
except ModuleNotFoundError:
    from conftest import MNIST_DIR, ROOT, compose_cfg, has_mnist

EXPERIMENTS = sorted(p.stem for p in (ROOT / "configs" / "experiment").glob("*.yaml"))


def test_shared_budgets_live_in_base_and_cells_name_their_command() -> None:
    folder = ROOT / "configs" / "experiment"
    assert {p.stem for p in (folder / "_base").glob("*.yaml")} >= {"cifar100", "table_s7", "table_s1", "lt"}
    assert not [e for e in EXPERIMENTS if e.endswith("_common")]  # budgets are in _base/, not beside the cells
    for e in EXPERIMENTS:
        text = (folder / f"{e}.yaml").read_text()
        assert text.startswith("# @package _global_\n"), e
        if e.startswith(("cifar100_", "inat2019_", "tinyimagenet_", "arxiv_", "table_s", "lt_cifar")):
            assert f"experiment={e}" in text, f"{e}: the header names the command that runs it"
            assert "stage:" not in text, f"{e}: budgets belong in _base/"


@pytest.mark.slow
def test_every_experiment_composes_and_validates() -> None:
    """One test over all files (composition is the cost): a failing file is named with its error."""
    failed = {}
    for e in EXPERIMENTS:
        try:
            run_cfg = resolve(compose_cfg([f"experiment={e}", "debug=tiny"]))
            assert run_cfg.stages, e
        except Exception as err:  # noqa: BLE001 - collected, reported together
            failed[e] = f"{type(err).__name__}: {err}"
    assert not failed, "\n".join(f"{k}: {v}" for k, v in failed.items())


RUNNABLE = [  # data generated or on disk; at debug size (debug=tiny, small data)
    ("smoke_table1", ["method=ecrt_mp"]),
    ("lt_smoke", ["method=decoupled_crt"]),
    ("lt_toy", ["method=ecrt_mp_la", "data.n_per_class=200", "data.n_test_per_class=50"]),
    ("table_s1_crt_noaug", ["data.num_classes=50", "data.majority_min_count=60"]),
    ("table_s7_5_ecrt_mp", ["data.n_max=200"]),
]


@pytest.mark.slow
@pytest.mark.parametrize("experiment,extra", RUNNABLE, ids=[e for e, _ in RUNNABLE])
def test_experiment_runs_at_debug_size(make_cfg, tmp_path: Path, experiment: str, extra: list[str]) -> None:
    if experiment.startswith("table_s7") and not has_mnist():
        pytest.skip(f"MNIST not found under {MNIST_DIR}")
    cfg = make_cfg(f"experiment={experiment}", "debug=tiny", "logger=none", f"paths.data_dir={MNIST_DIR}", *extra)
    res = run(cfg, run_dir=tmp_path / "run", progress=False)
    assert list(res["stages"]) == list(cfg.method.stages)
    assert 0.0 <= res["metrics"]["test/top1"] <= 1.0

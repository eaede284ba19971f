"""The method works: on the Hénon toy with one minority class (200 vs 2000), ECRT-MP beats ERM on
minority F1 averaged over three seeds. Default configuration, nothing tuned for the test."""

from __future__ import annotations

from pathlib import Path

import pytest

from crt.pipeline import run


@pytest.mark.slow
def test_ecrt_mp_beats_erm_on_minority_f1(make_cfg, tmp_path: Path) -> None:
    scores: dict[str, list[float]] = {"erm": [], "ecrt_mp": []}
    for seed in (0, 1, 2):
        for method in scores:
            cfg = make_cfg(f"method={method}", f"seed={seed}", "progress=false", "logger=none")
            assert cfg.data.ratio == 0.1 and cfg.data.n_per_class == 2000
            res = run(cfg, run_dir=tmp_path / f"{method}-{seed}")
            scores[method].append(res["metrics"]["test/minority_f1"])
    erm, ecrt = (sum(v) / 3 for v in scores.values())
    print(f"minority F1 over 3 seeds: ERM {scores['erm']} mean {erm:.3f}; ECRT-MP {scores['ecrt_mp']} mean {ecrt:.3f}")
    assert ecrt > erm + 0.05

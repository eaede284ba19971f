"""The efficiency experiment (crt/report/efficiency.py): nested minority subsets and the effective sample size."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from crt.report import efficiency as E


def test_inverse_curve_interpolates_in_log_n_and_flags_the_edges() -> None:
    ns, acc = [5, 10, 20, 40], [0.2, 0.4, 0.6, 0.8]
    n, flag = E.inverse_curve(ns, acc, 0.5)
    assert flag == "" and n == pytest.approx(math.sqrt(10 * 20))  # halfway in log n between 10 and 20
    assert E.inverse_curve(ns, acc, 0.4) == (pytest.approx(10.0), "")
    assert E.inverse_curve(ns, acc, 0.1) == (5.0, "<")
    assert E.inverse_curve(ns, acc, 0.9) == (40.0, ">")
    # a dip is ignored (running maximum): 0.5 is first reached between 5 and 10
    n, flag = E.inverse_curve([5, 10, 20], [0.4, 0.6, 0.5], 0.5)
    assert flag == "" and 5 < n < 10


def _df() -> pd.DataFrame:
    rows = []
    for seed in (0, 1, 2):
        for n, base in ((5, 0.2), (10, 0.4), (20, 0.6), (40, 0.8)):
            rows.append({"variant": "ecrt_mp_noaug", "N": 100, "n": n, "seed": seed, "test/minority_acc": base})
            # the augmented curve is the baseline shifted by one grid step (2x), seed 2 by two
            shifted = {5: 0.4, 10: 0.6, 20: 0.8, 40: 0.9}[n] if seed < 2 else {5: 0.6, 10: 0.8, 20: 0.9, 40: 0.9}[n]
            rows.append({"variant": "ecrt_mp", "N": 100, "n": n, "seed": seed, "test/minority_acc": shifted})
            rows.append({"variant": "ecrt_mp_oversample", "N": 100, "n": n, "seed": seed, "test/minority_acc": base})
    return pd.DataFrame(rows)


def test_effective_sizes_per_replicate_and_on_the_mean_curves() -> None:
    ess = E.effective_sizes(_df())
    aug = ess[(ess.variant == "ecrt_mp")].set_index("n")
    assert aug.loc[5, "n_seeds"] == 3
    assert [round(r, 6) for r, _ in aug.loc[5, "ratio_seeds"]] == [2.0, 2.0, 4.0]
    assert aug.loc[5, "ratio_lo"] == pytest.approx(2.0) and aug.loc[5, "ratio_hi"] == pytest.approx(4.0)
    assert aug.loc[40, "flag"] == ">"  # 0.9 is beyond the no-aug curve: a lower bound
    over = ess[ess.variant == "ecrt_mp_oversample"].set_index("n")
    assert over.loc[10, "ratio"] == pytest.approx(1.0) and over.loc[5, "flag"] == "<"
    md = E.ess_markdown(ess, _df())
    assert md.count("| >4× |") == 4  # one row per (N, n)
    assert "| 100 | 5 | 0.467 ± 0.115 | 0.200 ± 0.000 | 0.200 ± 0.000 | 2.5× (2×, 2×, 4×) | ≤1× (≤1×, ≤1×, ≤1×) |" in md
    d = E.paired_difference(_df(), "ecrt_mp", "ecrt_mp_noaug").loc[(100, 5)]
    assert d["mean"] == pytest.approx(0.2667, abs=1e-4) and d["ahead"] == 3 and d["k"] == 3


def test_nested_minority_keeps_the_majority_and_nests_the_minority() -> None:
    from crt.data import build_split

    cfg = {"name": "toy_henon", "imbalance": "minority", "minority_classes": [0], "ratio": 0.1, "n_per_class": 400,
           "n_test_per_class": 10, "input_dim": 4, "data_seed": 0, "val_fraction": 0.2}
    base = build_split(cfg)
    assert int(base.counts[0]) == 40
    prev_rows = None
    for n in (5, 10, 40):
        sub, tr, va = E.nested_minority(base, n)
        assert int((sub.y_train == 0).sum()) + int((sub.y_val == 0).sum()) == n and int(sub.counts[0]) == n
        assert int((sub.y_val == 0).sum()) >= 1
        for c in range(1, 7):  # majority classes: the very same samples
            assert torch.equal(sub.x_train[sub.y_train == c], base.x_train[base.y_train == c])
        rows = {tuple(r) for r in sub.x_train[sub.y_train == 0].tolist()}
        assert prev_rows is None or prev_rows <= rows  # nested
        prev_rows = rows
        assert torch.equal(sub.sources["train"], base.sources["train"][tr])
    with pytest.raises(ValueError, match="fewer"):
        E.nested_minority(base, 41)

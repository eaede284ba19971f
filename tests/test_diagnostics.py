"""Source-recovery diagnostics by hand, and the ground-truth generators they score."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crt.data import build_split
from crt.data.toy import InvertibleMLP, load_toy_henon, load_toy_ica
from crt.diagnostics import augmentation_mmd, distance_correlation, mcc, within_class_dependence


def _sources(n: int = 2000, d: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("method", ["pearson", "spearman"])
def test_mcc_of_identity_is_one(method: str) -> None:
    s = _sources()
    assert mcc(s, s, method) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("method", ["pearson", "spearman"])
def test_mcc_undoes_a_permutation_with_sign_flips(method: str) -> None:
    s = _sources()
    est = s[:, [2, 0, 3, 1]] * torch.tensor([-1.0, 1.0, -1.0, 1.0]) * torch.tensor([3.0, 0.5, 1.0, 2.0]) + 7.0
    assert mcc(est, s, method) == pytest.approx(1.0, abs=1e-6)  # float32 rescaling may create rank ties


def test_spearman_mcc_is_one_under_monotone_maps_where_pearson_is_not() -> None:
    s = _sources()
    est = torch.stack([torch.exp(2 * s[:, 1]), -s[:, 0] ** 3, s[:, 3], torch.tanh(s[:, 2])], 1)
    assert mcc(est, s, "spearman") == pytest.approx(1.0, abs=1e-12)
    assert mcc(est, s, "pearson") < 0.95


def test_mcc_of_an_independent_draw_is_near_zero() -> None:
    # n = 20000: |corr| of independent pairs ~ 0.006; the best matching of 4x4 can only pick the largest few
    assert mcc(_sources(20000, seed=1), _sources(20000, seed=2)) < 0.02


def test_mcc_matching_is_the_best_not_the_greedy_one() -> None:
    # |corr| matrix [[0.9, 0.8], [0.8, 0.1]]: greedy takes 0.9 then 0.1 (mean 0.5); best is 0.8 + 0.8 (0.8)
    rng = np.random.default_rng(0)
    n = 200_000
    t = rng.standard_normal((n, 2))
    # est_0 = a t0 + b t1 + c e, est_1 = 0.8 t0 + ... built so the population |corr| matrix is as above
    e = rng.standard_normal((n, 2))
    est0 = 0.9 * t[:, 0] + 0.8 * t[:, 1] + np.sqrt(max(1 - 0.81 - 0.64, 0) + 0.0) * e[:, 0]
    est0 /= est0.std()
    est1 = 0.8 * t[:, 0] + 0.1 * t[:, 1] + np.sqrt(1 - 0.64 - 0.01) * e[:, 1]
    est = np.stack([est0, est1], 1)
    c = np.abs(np.corrcoef(est.T, t.T)[:2, 2:])
    assert mcc(est, t) == pytest.approx((c[0, 1] + c[1, 0]) / 2, abs=1e-9)
    assert mcc(est, t) > (c[0, 0] + c[1, 1]) / 2 + 0.1


def test_distance_correlation_detects_dependence_that_correlation_misses() -> None:
    x = np.linspace(-1, 1, 401)
    assert abs(np.corrcoef(x, x**2)[0, 1]) < 1e-9
    assert distance_correlation(x, x**2) > 0.4
    assert distance_correlation(x, 2 * x + 1) == pytest.approx(1.0, abs=1e-9)


def test_within_class_dependence_is_low_for_independent_and_high_for_mixed() -> None:
    s = _sources(3000, d=3)
    y = torch.arange(3).repeat_interleave(1000)
    mixed = torch.stack([s[:, 0] + s[:, 1], s[:, 1] - s[:, 2], s[:, 0] * s[:, 2]], 1)
    ind, dep = within_class_dependence(s, y), within_class_dependence(mixed, y)
    assert ind["abs_corr"] < 0.06 and ind["dcor"] < 0.12
    # population: |corr| 0.5 for the pair (0, 1), 0 for the others (the product pair is uncorrelated but
    # dependent, which distance correlation sees)
    assert dep["abs_corr"] > 0.15 and dep["dcor"] > 0.2


def test_augmentation_mmd_is_zero_for_the_reference_and_larger_for_a_shifted_set() -> None:
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(400, 2, generator=g)
    y = torch.zeros(400, dtype=torch.long)
    train = torch.randn(400, 2, generator=g)
    same = augmentation_mmd(ref, y, train, y, ref, y, [0])
    shifted = augmentation_mmd(ref + 2.0, y, train, y, ref, y, [0])
    assert same["mmd_augmented"] == pytest.approx(0.0, abs=1e-6)
    assert shifted["mmd_augmented"] > 10 * shifted["mmd_oversample"]


def test_invertible_mlp_round_trips() -> None:
    mix = InvertibleMLP(4, 3, torch.Generator().manual_seed(0))
    s = _sources(1000).double().float()
    assert torch.allclose(mix.inverse(mix(s)), s, atol=1e-4)
    # and is not (close to) linear: a linear fit leaves a clear residual
    x = mix(s)
    coef = torch.linalg.lstsq(torch.cat([s, torch.ones(len(s), 1)], 1), x).solution
    resid = x - torch.cat([s, torch.ones(len(s), 1)], 1) @ coef
    assert resid.pow(2).mean() / x.var(0).mean() > 0.01


def test_toy_ica_sources_are_independent_within_class_and_mixing_invertible() -> None:
    raw = load_toy_ica(n_per_class=1000, n_test_per_class=10)
    assert raw.num_classes == 12 > 2 * 4 and raw.x_train.shape == raw.sources_train.shape == (12000, 4)
    dep = within_class_dependence(raw.sources_train, raw.y_train)
    assert dep["abs_corr"] < 0.06
    # the observations are dependent within class (the mixing couples the sources) ...
    assert within_class_dependence(raw.x_train, raw.y_train)["abs_corr"] > 0.2
    # ... and recover the sources exactly through the generator's inverse (same seed -> same mixing)
    g = torch.Generator().manual_seed(30_000)
    from crt.data.toy import ica_class_params

    ica_class_params(12, 4, 1.0, 1.0, g)
    mix = InvertibleMLP(4, 3, g, 0.2)
    x = mix(raw.sources_train)
    mean, std = x.mean(0), x.std(0)
    assert torch.allclose((x - mean) / std, raw.x_train, atol=1e-5)
    assert torch.allclose(mix.inverse(raw.x_train * std + mean), raw.sources_train, atol=1e-3)
    # class-modulated variances: per-class std of a source differs across classes by > 2x
    per_class = torch.stack([raw.sources_train[raw.y_train == c].std(0) for c in range(12)])
    assert (per_class.max(0).values / per_class.min(0).values > 2).all()


def test_split_keeps_sources_aligned_with_samples() -> None:
    cfg = {"name": "toy_henon", "imbalance": "minority", "minority_classes": [0], "ratio": 0.1,
           "n_per_class": 300, "n_test_per_class": 50, "project": False, "noise": 0.0, "val_fraction": 0.2}
    sp = build_split(cfg)
    raw = load_toy_henon(n_per_class=300, n_test_per_class=50, project=False, noise=0.0)
    from crt.data.toy import henon_features

    for part in ("train", "val"):  # x = standardised Hénon(sources): recompute from the kept sources
        z = henon_features(sp.sources[part], 30.0, 0.3)
        full = henon_features(raw.sources_train, 30.0, 0.3)
        assert torch.allclose((z - full.mean(0)) / full.std(0), getattr(sp, f"x_{part}"), atol=1e-5)
    assert sp.sources["test"] is raw.sources_test or torch.equal(sp.sources["test"], raw.sources_test)
    assert len(sp.sources["train"]) == len(sp.y_train) and len(sp.sources["val"]) == len(sp.y_val)


def test_run_diagnostics_scores_s_and_z_of_a_run_against_the_kept_sources() -> None:
    from types import SimpleNamespace

    from crt.diagnostics import run_diagnostics

    s = _sources(600, d=2)
    y = torch.arange(3).repeat_interleave(200)
    split = SimpleNamespace(multilabel=False, sources={"test": s}, y_test=y, y_train=y,
                            minority_classes=[0])
    z = torch.stack([s[:, 0] + s[:, 1], s[:, 0] - s[:, 1]], 1)  # a rotation: MCC 1/sqrt(2) per pair
    prev = {"pretrain": {"z_test": z},
            "demix": {"s_test": -s[:, [1, 0]], "s_train": s, "mcc_history": [0.5, 0.9]},
            "augment": {"x_aug": s[y == 0], "y_aug": y[y == 0]}}
    d = run_diagnostics(split, prev)
    assert d["mcc_s"] == pytest.approx(1.0) and d["mcc_spearman_s"] == pytest.approx(1.0)
    assert d["mcc_z"] == pytest.approx(2 ** -0.5, abs=0.05)
    assert d["within_abs_corr_s"] == pytest.approx(d["within_abs_corr_true"])
    assert d["mcc_s_val_by_epoch"] == [0.5, 0.9]
    assert set(d) >= {"mmd_augmented", "mmd_oversample", "within_dcor_z", "within_dcor_s"}
    assert "mmd_augmented" not in run_diagnostics(split, prev, refine_space="feature")

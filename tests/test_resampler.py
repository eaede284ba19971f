"""crt.CausalResampler: imbalanced-learn's sampler checks, a Pipeline, and what the new samples look like."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from imblearn.pipeline import make_pipeline
from imblearn.utils.estimator_checks import parametrize_with_checks
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

import crt
from crt.resampler import CausalResampler

SMALL = dict(random_state=0, max_steps=4, flow_hidden=8, critic_hidden=8, batch_size=128)

# The checks that do not run for this sampler (imbalanced-learn yields them only for samplers whose tags
# claim that input kind): check_samplers_string (categorical strings: a flow has no density over
# categories) and check_samplers_nan (missing values: the flow cannot transform NaN). Sparse input is
# densified for the flow and returned in its own format, so the sparse checks run.
NOT_APPLICABLE = {"check_samplers_string", "check_samplers_nan"}


@parametrize_with_checks([CausalResampler(**SMALL)])
def test_imblearn_sampler_checks(estimator, check) -> None:
    check(estimator)


def test_not_applicable_checks_are_exactly_the_ones_not_generated() -> None:
    from imblearn.utils.estimator_checks import _yield_sampler_checks

    ran = {c.__name__ for c in _yield_sampler_checks(CausalResampler())}
    assert not ran & NOT_APPLICABLE
    assert len(ran) == 15 and {"check_samplers_sparse", "check_samplers_preserve_dtype"} <= ran


def _imbalanced(n_min: int = 30) -> tuple[np.ndarray, np.ndarray]:
    X, y = load_breast_cancer(return_X_y=True)
    keep = np.r_[np.flatnonzero(y == 1), np.flatnonzero(y == 0)[:n_min]]
    return X[keep], y[keep]


def test_counts_real_rows_and_determinism() -> None:
    X, y = _imbalanced()
    r = CausalResampler(sampling_strategy={0: 100}, **SMALL)
    Xr, yr = r.fit_resample(X, y)
    assert Counter(yr.tolist()) == {1: 357, 0: 100}
    np.testing.assert_array_equal(Xr[:len(X)], X)  # real samples unchanged, new ones appended
    np.testing.assert_array_equal(yr[:len(y)], y)
    assert (yr[len(y):] == 0).all() and np.isfinite(Xr).all()
    Xr2, _ = CausalResampler(sampling_strategy={0: 100}, **SMALL).fit_resample(X, y)
    np.testing.assert_array_equal(Xr, Xr2)
    Xr3, _ = CausalResampler(sampling_strategy={0: 100}, **{**SMALL, "random_state": 1}).fit_resample(X, y)
    assert not np.allclose(Xr[len(X):], Xr3[len(X):])


@pytest.mark.parametrize("scheme", ["nonparametric", "parametric"])
def test_new_samples_look_like_the_minority_class(scheme: str) -> None:
    """A classifier fitted on the real data calls (almost) all new samples minority, and their mean is the
    minority mean (within a quarter of a within-class standard deviation in every feature)."""
    X, y = _imbalanced()
    r = CausalResampler(scheme=scheme, random_state=0)
    Xr, yr = r.fit_resample(X, y)
    new = Xr[len(X):]
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, y)
    assert (clf.predict(new) == 0).mean() >= 0.9
    mu, sd = X[y == 0].mean(0), X[y == 0].std(0)
    assert np.all(np.abs(new.mean(0) - mu) <= 0.25 * sd)


def test_flow_inverse_round_trip_and_pca_encoder() -> None:
    X, y = _imbalanced()
    r = CausalResampler(encoder=5, **SMALL)
    Xr, yr = r.fit_resample(X, y)
    assert r.encoder_.n_components == 5 and Xr.shape == (2 * 357, 30)
    z = torch.as_tensor(r.encoder_.transform(r.scaler_.transform(X)), dtype=torch.float32)
    with torch.no_grad():
        back = r.flow_.inverse(r.flow_(z)[0])[0]
    torch.testing.assert_close(back, z, atol=1e-4, rtol=1e-4)


def test_runs_in_an_imblearn_pipeline_and_as_crt_attribute() -> None:
    X, y = _imbalanced()
    pipe = make_pipeline(crt.CausalResampler(**SMALL), StandardScaler(), LogisticRegression(max_iter=2000))
    pipe.fit(X, y)
    assert pipe.predict(X).shape == y.shape  # samplers are skipped at predict time
    assert Counter(pipe[0].fit_resample(X, y)[1].tolist()) == {0: 357, 1: 357}
    assert pipe.score(X, y) > 0.9


def test_majority_flow_classes_needs_two_classes() -> None:
    X, y = _imbalanced()
    with pytest.raises(ValueError, match="flow_classes"):
        CausalResampler(flow_classes="majority", **SMALL).fit_resample(X, y)


def test_early_stopping_stops_before_the_budget_and_restores_the_best_weights() -> None:
    """With a generous budget the held-out objective stops improving long before it is spent; training then
    stops after n_iter_no_change evaluations without improvement, and the weights are those of the best one."""
    X, y = _imbalanced()
    r = CausalResampler(random_state=0, max_steps=2000, n_iter_no_change=5, flow_hidden=16, critic_hidden=16)
    r.fit_resample(X, y)
    v = r.validation_loss_
    assert r.n_steps_ < r.max_steps_ == 2000
    assert len(v) == r.n_steps_ // r.eval_every_ and r.best_step_ == (int(np.argmin(v)) + 1) * r.eval_every_
    assert r.n_steps_ - r.best_step_ == 5 * r.eval_every_  # stopped n_iter_no_change evaluations after the best
    assert min(v) < v[0]


def test_best_weights_are_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    """The flow that generates is the flow of the best evaluation, not of the last step."""
    from crt import resampler

    X, y = _imbalanced()
    seen: list[dict[str, torch.Tensor]] = []
    orig = resampler.CausalResampler._train

    def train(self, model, *args):  # noqa: ANN001, ANN202
        orig(self, model, *args)
        seen.append({k: t.clone() for k, t in model.state_dict().items()})

    monkeypatch.setattr(resampler.CausalResampler, "_train", train)
    tiny = dict(random_state=0, lr=5e-2, n_iter_no_change=1000, flow_hidden=8, critic_hidden=8)
    r = CausalResampler(max_steps=30, **tiny)
    r.fit_resample(X, y)
    assert r.n_steps_ == 30 and r.best_step_ < 30  # a large lr: the held-out objective turns up before the end
    best = CausalResampler(max_steps=r.best_step_, **tiny)
    best.fit_resample(X, y)  # the same run stopped at the best step: the same weights
    for k, t in seen[0].items():
        torch.testing.assert_close(t, seen[1][k], rtol=0, atol=0, msg=k)


@pytest.mark.parametrize("n, budget", [(300, 20), (2000, 63), (50000, 400)])
def test_auto_budget_scales_with_n_and_is_respected(n: int, budget: int) -> None:
    from crt.resampler import _auto_steps

    assert _auto_steps(n, min(256, n)) == budget
    X, y = _imbalanced()
    r = CausalResampler(random_state=0, max_steps=7, n_iter_no_change=1000, flow_hidden=8, critic_hidden=8)
    r.fit_resample(X, y)
    assert r.n_steps_ == r.max_steps_ == 7
    r = CausalResampler(validation_fraction=0.0, **SMALL)
    r.fit_resample(X, y)  # no held-out part: the whole budget on all samples, nothing evaluated
    assert r.n_steps_ == 4 and r.validation_loss_ == [] and r.best_step_ is None


def test_no_lightning_on_the_resampler_path() -> None:
    """`import crt` and a whole fit_resample import neither Lightning nor torchmetrics (a fresh interpreter)."""
    import subprocess
    import sys

    code = ("import sys, numpy as np\n"
            "import crt\n"
            "assert 'torch' not in sys.modules, 'import crt imports torch'\n"
            "X = np.random.default_rng(0).normal(size=(120, 4)); y = np.r_[np.zeros(100), np.ones(20)].astype(int)\n"
            "crt.CausalResampler(random_state=0, max_steps=3).fit_resample(X, y)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning', 'torchmetrics'))\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_n_jobs_sets_torch_threads_for_the_fit_only() -> None:
    X, y = _imbalanced()
    before = torch.get_num_threads()
    seen = []
    r = CausalResampler(n_jobs=1, **SMALL)
    orig = r._train
    r._train = lambda *a: (seen.append(torch.get_num_threads()), orig(*a))  # type: ignore[method-assign]
    r.fit_resample(X, y)
    assert seen == [1] and torch.get_num_threads() == before
    with pytest.raises(ValueError, match="n_jobs"):
        CausalResampler(n_jobs=0).fit_resample(X, y)

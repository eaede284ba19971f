"""ECRT as an imbalanced-learn over-sampler: demix the features with a flow, augment in source space, map back.

`CausalResampler().fit_resample(X, y)` standardises X, optionally encodes it (any scikit-learn transformer
with `inverse_transform`, e.g. PCA), trains the demixing flow z -> s with the ECRT/CRT contrastive objective
plus rho times the flow likelihood (`crt.models.demixer`, the objective the pipeline's demix stage trains)
in a plain torch loop (no Lightning) with early stopping on a stratified held-out part, draws new samples
of every class that `sampling_strategy` selects in source space (`nonparametric`: each source coordinate
from the class's real values; `parametric`: a diagonal Gaussian per class), and maps them back through the
flow's inverse (then the encoder's and the scaler's inverses). The real samples are returned unchanged,
followed by the new ones, as imbalanced-learn's over-samplers do.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from scipy import sparse
import torch
from imblearn.over_sampling.base import BaseOverSampler
from sklearn.base import clone
from sklearn.preprocessing import StandardScaler
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions

AUTO_EPOCHS, AUTO_MIN_STEPS, AUTO_MAX_STEPS = 8, 20, 400  # max_steps='auto' (see _auto_steps)


class CausalResampler(BaseOverSampler):
    """Over-sample by source-space augmentation through a demixing normalizing flow (ECRT).

    Parameters
    ----------
    sampling_strategy : float, str, dict or callable, default='auto'
        Which classes to over-sample and to what size (imbalanced-learn's meaning).
    random_state : int, RandomState instance or None, default=None
        Seeds the flow's initialisation, its mini-batches and the source-space draws.
    scheme : {'nonparametric', 'parametric'}, default='nonparametric'
        How new sources are drawn for a class: each coordinate from the class's real source values, or
        from a diagonal Gaussian fitted to them.
    encoder : None, int or transformer, default=None
        None: the flow runs on the standardised features. int k: on their first k principal components
        (PCA). A transformer with `fit_transform` and `inverse_transform`: on its codes. New samples are
        decoded by `inverse_transform`, so what an encoder discards is absent from them.
    loss : {'fdv', 'gcl'}, default='fdv'
        Demixing objective: FDV (ECRT) or GCL (CRT).
    prior : {'multi', 'single'}, default='multi'
        Source prior: a learnable Gaussian per class, or one standard normal.
    rho : float, default=1e-2
        Weight of the flow's log-likelihood in the demixing objective.
    flow_classes : {'all', 'majority'}, default='all'
        Classes that train the flow: all, or only those `sampling_strategy` does not over-sample (the
        papers' transfer setting; needs at least two such classes).
    flow_blocks, flow_hidden : int, default=2, 64
        MADE blocks of the flow and hidden units per MADE layer.
    critic_hidden : int, default=64
        Hidden units of the per-dimension critic.
    max_steps : int or 'auto', default='auto'
        Budget of Adam steps. 'auto': the steps of 8 passes over the training part at `batch_size`, at least
        20 and at most 400 (300 samples: 20 full-batch steps; 2000: 63; 20k and more: 400).
    batch_size, lr : int, float, default=256, 1e-2
        Mini-batch size (full-batch when the training part is no larger) and Adam's learning rate.
    validation_fraction : float in [0, 1), default=0.15
        Share of every class held out (floor(fraction * n_c)) to evaluate the objective on; 0: no early
        stopping, the whole budget is trained on all samples. The held-out samples are still resampled from.
    n_iter_no_change, tol : int, float, default=10, 1e-4
        Training stops after `n_iter_no_change` evaluations of the held-out objective without an improvement
        by more than `tol`, and the weights of the best evaluation are restored. The objective is evaluated
        every step where the held-out part is small (every round(2 * n_val / batch) steps otherwise).
    n_jobs : int or None, default=None
        torch threads during the fit: None keeps torch's setting (one per physical core by default), -1 all
        CPUs, k > 0 k threads (scikit-learn's convention).

    Attributes
    ----------
    n_steps_, best_step_, max_steps_, eval_every_ : int
        Steps trained, the step whose weights were kept (None without a held-out part), the budget, and the
        steps between evaluations.
    validation_loss_ : list of float
        The held-out objective at every evaluation.
    """

    _parameter_constraints: dict = {
        **BaseOverSampler._parameter_constraints,
        "scheme": [StrOptions({"nonparametric", "parametric"})],
        "encoder": [None, Interval(numbers.Integral, 1, None, closed="left"),
                    HasMethods(["fit_transform", "inverse_transform"])],
        "loss": [StrOptions({"fdv", "gcl"})],
        "prior": [StrOptions({"multi", "single"})],
        "rho": [Interval(numbers.Real, 0, None, closed="left")],
        "flow_classes": [StrOptions({"all", "majority"})],
        "flow_blocks": [Interval(numbers.Integral, 1, None, closed="left")],
        "flow_hidden": [Interval(numbers.Integral, 1, None, closed="left")],
        "critic_hidden": [Interval(numbers.Integral, 1, None, closed="left")],
        "max_steps": [Interval(numbers.Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "batch_size": [Interval(numbers.Integral, 2, None, closed="left")],
        "lr": [Interval(numbers.Real, 0, None, closed="neither")],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="left")],
        "n_iter_no_change": [Interval(numbers.Integral, 1, None, closed="left")],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
        "n_jobs": [None, Interval(numbers.Integral, None, -1, closed="right"),
                   Interval(numbers.Integral, 1, None, closed="left")],
    }

    def __init__(self, *, sampling_strategy="auto", random_state=None, scheme="nonparametric", encoder=None,
                 loss="fdv", prior="multi", rho=1e-2, flow_classes="all", flow_blocks=2, flow_hidden=64,
                 critic_hidden=64, max_steps="auto", batch_size=256, lr=1e-2, validation_fraction=0.15,
                 n_iter_no_change=10, tol=1e-4, n_jobs=None):
        super().__init__(sampling_strategy=sampling_strategy)
        self.random_state = random_state
        self.scheme, self.encoder, self.loss, self.prior, self.rho = scheme, encoder, loss, prior, rho
        self.flow_classes, self.flow_blocks, self.flow_hidden = flow_classes, flow_blocks, flow_hidden
        self.critic_hidden, self.max_steps, self.batch_size, self.lr = critic_hidden, max_steps, batch_size, lr
        self.validation_fraction, self.n_iter_no_change, self.tol = validation_fraction, n_iter_no_change, tol
        self.n_jobs = n_jobs

    def _encoder(self):
        if self.encoder is None:
            return None
        if isinstance(self.encoder, numbers.Integral):
            from sklearn.decomposition import PCA

            return PCA(n_components=int(self.encoder))
        return clone(self.encoder)

    def _fit_resample(self, X, y):
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(np.iinfo(np.int32).max))
        classes, y_idx = np.unique(y, return_inverse=True)
        dense = X.toarray() if sparse.issparse(X) else X  # the flow works on dense features
        Xc = np.ascontiguousarray(dense, dtype=np.float64)  # same numbers whatever the memory layout of X
        self.scaler_ = StandardScaler().fit(Xc)
        z = self.scaler_.transform(Xc)
        self.encoder_ = self._encoder()
        if self.encoder_ is not None:
            z = self.encoder_.fit_transform(z)
        targets = {int(np.searchsorted(classes, c)): int(n) for c, n in self.sampling_strategy_.items() if n > 0}
        with torch.random.fork_rng(devices=[]), _threads(self.n_jobs):
            torch.manual_seed(seed)
            z_t = torch.as_tensor(np.asarray(z), dtype=torch.float32)
            y_t = torch.as_tensor(y_idx, dtype=torch.long)
            flow, s = self._fit_flow(z_t, y_t, len(classes), set(targets))
            self.flow_ = flow
            z_new, y_new = self._generate(flow, s, y_t, targets, seed)
        x_new = np.zeros((0, X.shape[1]))
        if len(z_new):  # decode (nothing to decode when the classes are already balanced)
            x_new = z_new.numpy().astype(np.float64)
            if self.encoder_ is not None:
                x_new = self.encoder_.inverse_transform(x_new)
            x_new = self.scaler_.inverse_transform(x_new)
        x_new = x_new.astype(X.dtype, copy=False)
        X_res = sparse.vstack([X, sparse.csr_matrix(x_new)], format=X.format) if sparse.issparse(X) else np.vstack([X, x_new])
        y_res = np.hstack([y, classes[y_new.numpy()].astype(y.dtype, copy=False)])
        return X_res, y_res

    def _fit_flow(self, z: torch.Tensor, y: torch.Tensor, num_classes: int,
                  oversampled: set[int]) -> tuple[torch.nn.Module, torch.Tensor]:
        """Train flow, critic and prior on (z, y) by the demix objective; sources s = f(z) in eval mode."""
        from crt.models.demixer import Demixer
        from crt.models.flow import build_maf, calibrate_batchnorm

        keep = torch.ones(len(y), dtype=torch.bool)
        if self.flow_classes == "majority":
            keep = ~torch.isin(y, torch.tensor(sorted(oversampled), dtype=torch.long))
            if len(torch.unique(y[keep])) < 2:
                raise ValueError("flow_classes='majority' needs at least two classes that are not over-sampled. "
                                 "Fix: use flow_classes='all' or over-sample fewer classes.")
        zf, yf = z[keep], y[keep]
        d = z.shape[1]
        flow = build_maf(d, int(self.flow_blocks), int(self.flow_hidden), 2, True)
        model = Demixer(flow, num_classes, d, loss=self.loss, prior=self.prior, rho=float(self.rho),
                        hidden=int(self.critic_hidden), embed_dim=None, normalize=True, negatives="batch",
                        exclude_true=False, clamp=(-5.0, 15.0), impl="batched")
        g = torch.Generator().manual_seed(int(torch.initial_seed()) % (2**31))
        train, val = _holdout(yf, float(self.validation_fraction), g)
        self._train(model, zf[train], yf[train], None if val is None else (zf[val], yf[val]), g)
        flow.eval()
        calibrate_batchnorm(flow, zf)
        with torch.no_grad():
            s = flow(z)[0]
        self.prior_ = model.prior.eval()
        return flow, s

    def _train(self, model: torch.nn.Module, z: torch.Tensor, y: torch.Tensor,
               val: tuple[torch.Tensor, torch.Tensor] | None, g: torch.Generator) -> None:
        """Adam on (z, y) for at most `max_steps_` steps; with a held-out `val`, its objective is evaluated every
        `eval_every_` steps, training stops after `n_iter_no_change` evaluations without an improvement
        by more than `tol`, and the weights of the best evaluation are restored."""
        n = len(z)
        bs = min(int(self.batch_size), n)
        self.max_steps_ = _auto_steps(n, bs) if self.max_steps == "auto" else int(self.max_steps)
        # the held-out pass costs about a sixth of the training between two of them (a forward pass is ~1/3
        # of a training step's forward + backward): every step where the held-out part is small
        self.eval_every_ = 1 if val is None else max(1, round(2 * len(val[0]) / bs))
        opt = torch.optim.Adam(model.parameters(), lr=float(self.lr), fused=True)
        self.validation_loss_: list[float] = []
        best, best_state, since, step = float("inf"), None, 0, 0
        self.best_step_ = None
        model.train()
        perm, pos = torch.arange(n), n  # full batches only: batch-norm needs > 1 sample
        while step < self.max_steps_:
            if bs < n:
                if pos + bs > n:
                    perm, pos = torch.randperm(n, generator=g), 0
                idx = perm[pos:pos + bs]
                pos += bs
                loss = model.objective(z[idx], y[idx])["loss"]
            else:
                loss = model.objective(z, y)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if val is None or (step % self.eval_every_ and step < self.max_steps_):
                continue
            model.eval()
            with torch.no_grad():
                v = float(model.objective(*val)["loss"])
            model.train()
            self.validation_loss_.append(v)
            if v < best - float(self.tol):
                best, since, self.best_step_ = v, 0, step
                best_state = {k: t.detach().clone() for k, t in model.state_dict().items()}
            else:
                since += 1
                if since >= int(self.n_iter_no_change):
                    break
        self.n_steps_ = step
        if best_state is not None:
            model.load_state_dict(best_state)
        model.eval()

    def _generate(self, flow: torch.nn.Module, s: torch.Tensor, y: torch.Tensor, targets: dict[int, int],
                  seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        from crt.augment import augment

        g = torch.Generator().manual_seed(seed)
        parts, labels = [], []
        for c, n in sorted(targets.items()):
            s_new, y_new = augment(self.scheme, s, y, [c], n, generator=g)
            parts.append(s_new)
            labels.append(y_new)
        if not parts:
            return torch.zeros(0, s.shape[1]), torch.zeros(0, dtype=torch.long)
        s_new = torch.cat(parts)
        with torch.no_grad():
            z_new = flow.inverse(s_new)[0]
        return z_new, torch.cat(labels)


@contextmanager
def _threads(n_jobs: int | None) -> Iterator[None]:
    """torch's intra-op threads for the duration of a fit: None keeps torch's setting (by default one per
    physical core), k > 0 uses k, k < 0 uses cpu_count + 1 + k (-1: all), as scikit-learn's n_jobs."""
    if n_jobs is None:
        yield
        return
    k = int(n_jobs) if n_jobs > 0 else max(1, (os.cpu_count() or 1) + 1 + int(n_jobs))
    before = torch.get_num_threads()
    torch.set_num_threads(k)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _holdout(y: torch.Tensor, fraction: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Stratified split of the indices of y: floor(fraction * n_c) of each class held out (at random), so a
    class with fewer than 1 / fraction samples trains only; None when fewer than 2 samples would be held out."""
    train, val = [], []
    for c in torch.unique(y):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = int(fraction * len(idx))
        val.append(idx[:k])
        train.append(idx[k:])
    val_idx = torch.cat(val)
    if len(val_idx) < 2:
        return torch.arange(len(y)), None
    return torch.sort(torch.cat(train)).values, torch.sort(val_idx).values


def _auto_steps(n: int, batch_size: int) -> int:
    """`max_steps='auto'`: the steps of AUTO_EPOCHS passes over the n training samples at this batch size,
    at least AUTO_MIN_STEPS (small data: full-batch steps are cheap) and at most AUTO_MAX_STEPS (large data
    converge in a bounded number of steps, so the cost stops growing with n)."""
    return int(min(AUTO_MAX_STEPS, max(AUTO_MIN_STEPS, math.ceil(AUTO_EPOCHS * n / batch_size))))

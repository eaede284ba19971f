"""ECRT as an imbalanced-learn over-sampler: demix the features with a flow, augment in source space, map back.

`CausalResampler().fit_resample(X, y)` standardises X, optionally encodes it (any scikit-learn transformer
with `inverse_transform`, e.g. PCA), trains the demixing flow z -> s with the ECRT/CRT contrastive objective
plus rho times the flow likelihood (the same `DemixModule.objective` the pipeline's demix stage trains),
draws new samples of every class that `sampling_strategy` selects in source space (`nonparametric`: each
source coordinate from the class's real values; `parametric`: a diagonal Gaussian per class), and maps
them back through the flow's inverse (then the encoder's and the scaler's inverses). The real samples are
returned unchanged, followed by the new ones, as imbalanced-learn's over-samplers do.
"""

from __future__ import annotations

import numbers

import numpy as np
from scipy import sparse
import torch
from imblearn.over_sampling.base import BaseOverSampler
from sklearn.base import clone
from sklearn.preprocessing import StandardScaler
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions


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
    epochs, batch_size, lr : int, int, float, default=50, 256, 1e-3
        Adam training of the flow, critic and prior.
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
        "epochs": [Interval(numbers.Integral, 1, None, closed="left")],
        "batch_size": [Interval(numbers.Integral, 2, None, closed="left")],
        "lr": [Interval(numbers.Real, 0, None, closed="neither")],
    }

    def __init__(self, *, sampling_strategy="auto", random_state=None, scheme="nonparametric", encoder=None,
                 loss="fdv", prior="multi", rho=1e-2, flow_classes="all", flow_blocks=2, flow_hidden=64,
                 critic_hidden=64, epochs=50, batch_size=256, lr=1e-3):
        super().__init__(sampling_strategy=sampling_strategy)
        self.random_state = random_state
        self.scheme, self.encoder, self.loss, self.prior, self.rho = scheme, encoder, loss, prior, rho
        self.flow_classes, self.flow_blocks, self.flow_hidden = flow_classes, flow_blocks, flow_hidden
        self.critic_hidden, self.epochs, self.batch_size, self.lr = critic_hidden, epochs, batch_size, lr

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
        with torch.random.fork_rng(devices=[]):
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
        from crt.models import build_maf, calibrate_batchnorm
        from crt.stages.configs import CriticSpec
        from crt.stages.modules import DemixData, DemixModule, DemixObjective, Optim, make_optimizer

        keep = torch.ones(len(y), dtype=torch.bool)
        if self.flow_classes == "majority":
            keep = ~torch.isin(y, torch.tensor(sorted(oversampled), dtype=torch.long))
            if len(torch.unique(y[keep])) < 2:
                raise ValueError("flow_classes='majority' needs at least two classes that are not over-sampled. "
                                 "Fix: use flow_classes='all' or over-sample fewer classes.")
        zf, yf = z[keep], y[keep]
        d = z.shape[1]
        flow = build_maf(d, int(self.flow_blocks), int(self.flow_hidden), 2, True)
        critic = CriticSpec(hidden=int(self.critic_hidden), embed_dim=None, normalize=True, negatives="batch",
                            exclude_true=False, clamp=(-5.0, 15.0), impl="batched")
        module = DemixModule(flow, num_classes, DemixData(train=(zf, yf), val=(zf, yf)),
                             DemixObjective(self.loss, self.prior, float(self.rho), critic),
                             Optim(lr=float(self.lr), batch_size=int(self.batch_size)))
        opt = make_optimizer("adam", module.parameters(), float(self.lr), 0.0)
        g = torch.Generator().manual_seed(int(torch.initial_seed()) % (2**31))
        bs = min(int(self.batch_size), len(zf))
        module.train()
        for _ in range(int(self.epochs)):
            perm = torch.randperm(len(zf), generator=g)
            for i in range(0, len(zf) - bs + 1, bs):  # full batches only: batch-norm needs > 1 sample
                idx = perm[i:i + bs]
                loss = module.objective(zf[idx], yf[idx])["loss"]
                opt.zero_grad()
                loss.backward()
                opt.step()
        flow.eval()
        calibrate_batchnorm(flow, zf)
        with torch.no_grad():
            s = flow(z)[0]
        self.prior_ = module.prior.eval()
        return flow, s

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

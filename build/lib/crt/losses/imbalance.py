"""Baseline losses for imbalanced classification (Table 1 of CRT/ECRT): IW, focal, LDAM, LDAM-DRW, VAT.

All are per-sample (reduction none) and registered by name for `method.pretrain_loss` / `method.refine_loss`;
their options (keyword parameters) come from `method.pretrain_loss_kwargs` / `method.refine_loss_kwargs`.
Classes with zero training samples (pretraining on majority classes only) get weight 0 and the largest margin,
never inf or nan: such classes never occur as a target.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from crt.errors import ConfigError
from crt.losses.classification import ClassLoss, register_loss


def _check(ok: bool, key: str, value: Any, fix: str) -> None:
    if not ok:
        raise ConfigError(f"loss option {key}={value!r} is out of range. Fix: {fix}")


def _mean_one(w: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Scale w so that its mean over the classes present in training is 1; absent classes get 0."""
    w = torch.where(present, w, torch.zeros_like(w))
    return w * present.sum() / w.sum() if present.any() else torch.ones_like(w)


def inverse_frequency_weights(counts: torch.Tensor) -> torch.Tensor:
    """IW class weights w_c ∝ 1/n_c, normalised to mean 1 over the classes with n_c > 0 (0 for n_c = 0).

    With mean 1 the weighted loss has the scale of plain cross-entropy on a balanced training set, so the
    learning rate tuned for ERM carries over.
    """
    counts = counts.float()
    present = counts > 0
    return _mean_one(1.0 / counts.clamp(min=1.0), present)


def class_balanced_weights(counts: torch.Tensor, beta: float = 0.9999) -> torch.Tensor:
    """Class-balanced weights (1 − β)/(1 − β^n_c) (Cui et al. 2019, the DRW weights of Cao et al. 2019).

    Normalised to mean 1 over the classes with n_c > 0 (LDAM-DRW's code: sum = number of classes); 0 for n_c = 0.
    """
    counts = counts.double()
    present = counts > 0
    w = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(beta, dtype=torch.double), counts.clamp(min=1.0)))
    return _mean_one(w, present).float()


def ldam_margins(counts: torch.Tensor, max_m: float = 0.5) -> torch.Tensor:
    """LDAM margins Δ_c = C · n_c^(−1/4) with C such that max_c Δ_c = max_m (Cao et al. 2019, eq. 12).

    Classes with n_c = 0 get max_m (the margin of the rarest possible class).
    """
    counts = counts.float()
    present = counts > 0
    raw = torch.where(present, counts.clamp(min=1.0).pow(-0.25), torch.zeros_like(counts))
    if not present.any():
        return torch.full_like(counts, float(max_m))
    m = raw * (float(max_m) / raw.max())
    return torch.where(present, m, torch.full_like(m, float(max_m)))


@register_loss("iw")
class ImportanceWeightedLoss(ClassLoss):
    """IW: cross-entropy with class weights ∝ 1/n_c (mean 1 over present classes), per sample w_y · CE."""

    def __init__(self, counts: torch.Tensor):
        super().__init__(counts, class_weights=inverse_frequency_weights(counts))


@register_loss("focal")
class FocalLoss(ClassLoss):
    """Focal loss −(1 − p_y)^γ log p_y (Lin et al. 2017, eq. 4 without α); γ = 0 is cross-entropy."""

    def __init__(self, counts: torch.Tensor, gamma: float = 1.0):
        super().__init__(counts)
        _check(float(gamma) >= 0, "gamma", gamma, "use gamma >= 0 (0 is cross-entropy, the papers use 1).")
        self.gamma = float(gamma)

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(logits.float(), dim=1).gather(1, y[:, None]).squeeze(1)
        if self.gamma == 0:
            return -logp
        return -(1.0 - logp.exp()).clamp(min=0.0).pow(self.gamma) * logp


@register_loss("ldam")
class LDAMLoss(ClassLoss):
    """LDAM (Cao et al. 2019, eq. 13): CE(s · (logits − Δ_y e_y), y) on cosine logits, Δ_c ∝ n_c^(−1/4).

    The margin is subtracted from the true-class logit before scaling by s. `cosine_head` makes the pipeline
    build a cosine-normalised last layer (logits in [−1, 1]), as LDAM's reference setup does. The network's
    own logits stay unscaled; `logit_scale` (= s) is what turns them into the softmax the loss trains.
    """

    cosine_head = True

    def __init__(self, counts: torch.Tensor, max_m: float = 0.5, s: float = 30.0,
                 class_weights: torch.Tensor | None = None):
        super().__init__(counts, class_weights=class_weights)
        _check(float(max_m) >= 0, "max_m", max_m, "use a non-negative largest margin (the paper uses 0.5).")
        _check(float(s) > 0, "s", s, "use a positive logit scale (the paper uses 30).")
        self.s = self.logit_scale = float(s)
        self.register_buffer("margins", ldam_margins(counts, float(max_m)))

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shifted = logits.float() - F.one_hot(y, logits.shape[1]).float() * self.margins[y][:, None]
        return F.cross_entropy(self.s * shifted, y, weight=self.class_weights, reduction="none")


@register_loss("ldam_drw")
class LDAMDRWLoss(LDAMLoss):
    """LDAM-DRW (Cao et al. 2019, Alg. 1): LDAM, with class-balanced weights (1 − β)/(1 − β^n_c) switched on
    from epoch ⌊drw_start · max_epochs⌋ (default 0.8: 160 of 200 epochs in the paper); unweighted before.
    A batch's loss is the weighted mean Σ w_y·ℓ / Σ w_y, as the reference code's F.cross_entropy(weight=w) reduces
    it (dividing by the batch size instead would shrink the re-weighted phase's gradients by the mean weight).
    """

    weighted_mean = True
    scheduled = True  # early stopping could end the stage before the re-weighted phase starts

    def __init__(self, counts: torch.Tensor, max_m: float = 0.5, s: float = 30.0, beta: float = 0.9999,
                 drw_start: float = 0.8):
        _check(0.0 <= float(beta) < 1.0, "beta", beta, "use 0 <= beta < 1 (the paper uses 0.9999).")
        _check(0.0 <= float(drw_start) <= 1.0, "drw_start", drw_start,
               "give the start of the re-weighting phase as a fraction of the epochs, in [0, 1] (default 0.8).")
        super().__init__(counts, max_m=max_m, s=s, class_weights=torch.ones(len(counts)))
        self.drw_start = float(drw_start)
        self.register_buffer("drw_weights", class_balanced_weights(counts, float(beta)))
        self.drw_active = False

    def on_epoch(self, epoch: int, max_epochs: int) -> None:
        """Switch the class-balanced weights on at epoch ⌊drw_start · max_epochs⌋ (ones before)."""
        self.drw_active = epoch >= int(self.drw_start * max_epochs)
        self.class_weights.copy_(self.drw_weights if self.drw_active else torch.ones_like(self.drw_weights))


@contextmanager
def _frozen_batchnorm_stats(net: nn.Module) -> Iterator[None]:
    """Forward passes on perturbed inputs must not move the batch-norm running statistics."""
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom


def _unit(d: torch.Tensor) -> torch.Tensor:
    """Each sample's perturbation scaled to unit L2 norm (over all its non-batch dimensions)."""
    flat = d.reshape(len(d), -1)
    return (flat / (flat.norm(dim=1, keepdim=True) + 1e-12)).reshape(d.shape)


def _kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """Per-sample KL(softmax(p) || softmax(q))."""
    logp, logq = F.log_softmax(p_logits, dim=1), F.log_softmax(q_logits, dim=1)
    return (logp.exp() * (logp - logq)).sum(1)


def _float_input(x: torch.Tensor) -> torch.Tensor:
    """The network input as floats on the scale encoders read: uint8 images become [0, 1]."""
    x = x.detach()
    return x.float() if x.is_floating_point() else x.float().div(255.0)


@register_loss("vat")
class VATLoss(ClassLoss):
    """CE + α · VAT (Miyato et al. 2018, eq. 5 and 7): KL(p(·|x) || p(·|x + r_adv)), the clean prediction fixed.

    r_adv = ε · unit(g) with g the gradient of KL(p(·|x) || p(·|x + ξ d)) at a random unit d: one power
    iteration. The perturbation acts on the network input x; defaults ξ = 10, ε = 1, α = 1.
    """

    def __init__(self, counts: torch.Tensor, eps: float = 1.0, xi: float = 10.0, alpha: float = 1.0,
                 power_iterations: int = 1):
        super().__init__(counts)
        _check(float(eps) > 0, "eps", eps, "use a positive perturbation norm (default 1).")
        _check(float(xi) > 0, "xi", xi, "use a positive finite-difference step (default 10).")
        _check(float(alpha) >= 0, "alpha", alpha, "use a non-negative weight of the VAT term (default 1).")
        _check(int(power_iterations) >= 1, "power_iterations", power_iterations, "use at least 1.")
        self.eps, self.xi, self.alpha, self.power_iterations = float(eps), float(xi), float(alpha), int(power_iterations)

    def adversarial_direction(self, forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                              logits: torch.Tensor) -> torch.Tensor:
        """r_adv with ‖r_adv‖ = ε per sample, by power iteration on the KL's curvature around x."""
        x = _float_input(x)
        target = logits.detach().float()
        d = _unit(torch.randn_like(x))
        for _ in range(self.power_iterations):
            d = (self.xi * d).requires_grad_(True)
            with torch.enable_grad():
                kl = _kl(target, forward(x + d).float()).sum()
                (grad,) = torch.autograd.grad(kl, d)
            d = _unit(grad.detach())
        return self.eps * d

    def regularizer(self, forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                    logits: torch.Tensor) -> torch.Tensor | float:
        if self.alpha == 0:
            return 0.0
        net = forward if isinstance(forward, nn.Module) else nn.Identity()
        with _frozen_batchnorm_stats(net):
            r_adv = self.adversarial_direction(forward, x, logits)
            lds = _kl(logits.detach().float(), forward(_float_input(x) + r_adv).float()).mean()
        return self.alpha * lds


__all__ = ["FocalLoss", "ImportanceWeightedLoss", "LDAMDRWLoss", "LDAMLoss", "VATLoss", "class_balanced_weights",
           "inverse_frequency_weights", "ldam_margins"]

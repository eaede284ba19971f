"""Prior-adjusted softmax losses of the long-tail literature: logit adjustment and balanced softmax.

- `logit_adjust` (Menon et al., ICLR 2021, eq. 10): CE(logits + τ · log π, y), π the training class prior.
- `balanced_softmax` (Ren et al., NeurIPS 2020, eq. 4): CE(logits + log n, y), n the training class counts.
- `posthoc_adjust`: the post-hoc form of logit adjustment (Menon et al., eq. 9), logits − τ · log π at
  prediction time; used by the `posthoc` refine variant (crt.stages.decoupled).

With τ = 1 the two losses are the same function (log n and log π differ by the constant log N, which softmax
ignores); both are kept because each paper's name is what users look for. The network's own logits are
what is evaluated: the adjustment exists only inside the training loss. Classes with no training sample
(pretraining on the majority classes only) are treated as having one, so no log 0 appears; such classes never
occur as a target. Options (`method.pretrain_loss_kwargs` / `method.refine_loss_kwargs`) are the keyword
parameters of each loss (crt.registry): an unknown key is a ConfigError.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F

from crt.errors import ConfigError
from crt.losses.classification import ClassLoss, register_loss


def log_prior(counts: torch.Tensor) -> torch.Tensor:
    """log π_c = log(n_c / Σ n), with classes of zero count counted as one sample."""
    n = counts.double().clamp(min=1.0)
    return (n / n.sum()).log().float()


def posthoc_adjust(logits: torch.Tensor, counts: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """Post-hoc logit adjustment: logits − τ · log π (argmax: the balanced-error Bayes rule for calibrated logits)."""
    return logits - float(tau) * log_prior(counts).to(logits.device, logits.dtype)


@dataclass(frozen=True)
class AdjustOptions:
    """Options of the prior-adjusted losses (`method.*_loss_kwargs`)."""

    tau: float = 1.0

    @classmethod
    def parse(cls, loss: str, kwargs: dict[str, Any], allowed: tuple[str, ...]) -> AdjustOptions:
        known = {f.name for f in fields(cls)} & set(allowed)
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ConfigError(
                f"loss options {unknown} are not taken by the {loss} loss (it takes "
                f"{sorted(known) or 'no options'}). Fix: remove them from method.pretrain_loss_kwargs / "
                "method.refine_loss_kwargs.")
        opts = cls(**{k: float(v) for k, v in kwargs.items()})
        if not (math.isfinite(opts.tau) and opts.tau >= 0):
            raise ConfigError(f"loss option tau={opts.tau!r} is out of range. Fix: use tau >= 0 "
                              "(1 is the paper's default; 0 is plain cross-entropy).")
        return opts


class _PriorShiftLoss(ClassLoss):
    """CE on logits shifted by a per-class offset (a buffer, so it moves with the module)."""

    def __init__(self, counts: torch.Tensor, offset: torch.Tensor):
        super().__init__(counts)
        self.register_buffer("offset", offset.float())

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float() + self.offset, y, reduction="none")


@register_loss("logit_adjust")
class LogitAdjustedLoss(_PriorShiftLoss):
    """Logit-adjusted loss: CE(f(x) + τ · log π, y) (Menon et al. 2021, eq. 10), τ = 1 by default."""

    def __init__(self, counts: torch.Tensor, tau: float = 1.0):
        opts = AdjustOptions.parse("logit_adjust", {"tau": tau}, ("tau",))
        super().__init__(counts, opts.tau * log_prior(counts))
        self.tau = opts.tau


@register_loss("balanced_softmax")
class BalancedSoftmaxLoss(_PriorShiftLoss):
    """Balanced softmax: CE(f(x) + log n, y) (Ren et al. 2020, eq. 4: softmax weighted by the class counts)."""

    def __init__(self, counts: torch.Tensor):
        super().__init__(counts, counts.double().clamp(min=1.0).log().float())

"""Source priors p(s | y): `single` (standard normal) or `multi` (a learnable diagonal Gaussian per class)."""

from __future__ import annotations

import math

import torch
from torch import nn

from crt.errors import ConfigError

LOG_2PI = math.log(2 * math.pi)


class ClassPrior(nn.Module):
    """log p(s | y) = sum_a log N(s_a; mu_{y,a}, sigma_{y,a}^2); `single` fixes mu = 0, sigma = 1."""

    def __init__(self, kind: str, dim: int, num_classes: int):
        super().__init__()
        if kind not in ("single", "multi"):
            raise ConfigError(f"method.prior={kind!r} is unknown. Fix: use method.prior=single or multi.")
        self.kind = kind
        if kind == "multi":
            self.mean = nn.Parameter(torch.zeros(num_classes, dim))
            self.log_std = nn.Parameter(torch.zeros(num_classes, dim))

    def log_prob(self, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.kind == "single":
            return -0.5 * (s.pow(2) + LOG_2PI).sum(1)
        mu, log_std = self.mean[y], self.log_std[y]
        return (-0.5 * ((s - mu) * torch.exp(-log_std)).pow(2) - log_std - 0.5 * LOG_2PI).sum(1)

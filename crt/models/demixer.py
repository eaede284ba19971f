"""The demixer's parts (flow f, per-dimension critic, class priors) and its objective, in plain torch.

One definition for both trainers: the pipeline's demix stage (`crt.stages.modules.DemixModule`, Lightning)
and `crt.CausalResampler` (`Demixer`, a plain loop), so the resampler trains exactly the stage's objective
without importing Lightning.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from crt.errors import ConfigError
from crt.losses.contrastive import fdv_loss, fdv_scores, gcl_loss
from crt.models.critic import BatchedCritic
from crt.models.prior import ClassPrior


class DemixObjectiveMixin:
    """For an nn.Module: `init_demixer` registers flow, critic, prior (FDV: label embeddings and a temperature);
    `objective(z, y)` is CRT eq. 1 / ECRT eq. 4 plus the likelihood term, L - rho * mean_i log p(z_i | y_i),
    with log p(z | y) = log|det df/dz| + log p(s | y)."""

    def init_demixer(self, flow: nn.Module, num_classes: int, dim: int, *, loss: str, prior: str, rho: float,
                     hidden: int, embed_dim: int | None, normalize: bool, negatives: str, exclude_true: bool,
                     clamp: tuple[float, float], impl: str) -> None:
        if impl not in ("batched", "loop"):
            raise ConfigError(f"critic.impl={impl!r} is unknown. Fix: use batched (default) or loop (naive).")
        self.critic_impl = impl
        if loss not in ("gcl", "fdv"):
            raise ConfigError(f"method.loss={loss!r} is unknown. Fix: use method.loss=gcl (CRT) or fdv (ECRT).")
        if negatives not in ("batch", "classes"):
            raise ConfigError(f"critic.negatives={negatives!r} is unknown. Fix: use batch or classes.")
        k = num_classes if (loss == "gcl" or not embed_dim) else int(embed_dim)
        self.flow, self.critic = flow, BatchedCritic(dim, k, hidden)
        self.prior = ClassPrior(prior, dim, num_classes)
        self.loss_name, self.rho, self.normalize, self.negatives = loss, float(rho), normalize, negatives
        self.exclude_true, self.clamp = exclude_true, tuple(clamp)
        if loss == "fdv":
            emb = torch.eye(num_classes, k) if k == num_classes else torch.randn(num_classes, k) / math.sqrt(k)
            self.label_emb = nn.Parameter(emb)
            self.log_tau = nn.Parameter(torch.zeros(()))

    def objective(self, z: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.autocast(z.device.type, enabled=False):  # the likelihood term in fp32, also under bf16-mixed
            s, logdet = self.flow(z.float())
            logp = self.prior.log_prob(s, y)
        g = self.critic(s) if self.critic_impl == "batched" else self.critic.forward_looped(s)
        u = g.sum(1)  # B x k: sum over dimensions of g_a(s_a)
        if self.loss_name == "gcl":
            contrastive = gcl_loss(u, y, exclude_true=self.exclude_true)
        else:
            tau = self.log_tau.exp()
            if self.negatives == "batch":
                scores = fdv_scores(u, self.label_emb[y], tau, self.normalize)
                pos = torch.arange(len(y), device=y.device)
            else:
                scores, pos = fdv_scores(u, self.label_emb, tau, self.normalize), y
            contrastive, _ = fdv_loss(scores, pos, self.clamp)
        nll = -(logdet + logp).mean() / s.shape[1]
        return {"loss": contrastive + self.rho * nll * s.shape[1], "contrastive": contrastive, "nll": nll}


class Demixer(DemixObjectiveMixin, nn.Module):
    """The demixer as a plain module: `objective(z, y)` to train, `forward(z)` -> sources s = f(z)."""

    def __init__(self, flow: nn.Module, num_classes: int, dim: int, **spec: object):
        super().__init__()
        self.init_demixer(flow, num_classes, dim, **spec)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.flow(z)[0]

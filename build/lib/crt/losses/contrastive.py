"""Contrastive objectives of the demix stage: GCL (CRT eq. 1) and the FDV energy loss (ECRT eq. 4)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gcl_loss(
    u: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None, exclude_true: bool = False,
    perm: torch.Tensor | None = None,
) -> torch.Tensor:
    """Generalized contrastive learning, CRT eq. 1, with r(s, y) = sum_a g_a(s_a)[y] = u[y].

    L = mean softplus(-r(s_i, y_i)) + mean softplus(r(s_i, y_pi(i))), pi a random in-batch permutation;
    `exclude_true` redraws negatives equal to the true label uniformly among the other classes.
    u: B x k critic outputs summed over dimensions; y: B labels.
    """
    b, k = u.shape
    if perm is None:
        perm = torch.randperm(b, device=u.device, generator=generator)
    y_neg = y[perm]
    if exclude_true:
        clash = y_neg == y
        shift = torch.randint(1, k, (b,), device=u.device, generator=generator)
        y_neg = torch.where(clash, (y + shift) % k, y_neg)
    r_pos = u.gather(1, y[:, None]).squeeze(1)
    r_neg = u.gather(1, y_neg[:, None]).squeeze(1)
    return F.softplus(-r_pos).mean() + F.softplus(r_neg).mean()


def fdv_scores(u: torch.Tensor, emb: torch.Tensor, tau: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Bilinear critic S = <norm(u), norm(emb)^T> / tau (one matmul): B x B for in-batch label embeddings,
    B x M for all class embeddings."""
    if normalize:
        u, emb = F.normalize(u, dim=-1), F.normalize(emb, dim=-1)
    return u @ emb.T / tau


def fdv_loss(
    scores: torch.Tensor, pos: torch.Tensor, clamp: tuple[float, float] = (-5.0, 15.0),
) -> tuple[torch.Tensor, torch.Tensor]:
    """FDV energy loss, ECRT eq. 4, with the FlatNCE gradient.

    scores: B x N critic values, pos: B indices of each row's positive column (the diagonal for in-batch
    negatives, the true class for `classes` negatives). Per sample the value is
    -DV_i = -S_i,pos + logsumexp_j S_ij - log N, and the gradient is that of
    l_i = logsumexp_{j != pos}(S_ij - S_i,pos), through sg(value) + exp(l - sg(l)) - 1. Samples whose value
    leaves `clamp` contribute their clamped value and no gradient.
    Returns (loss to minimise, mean of the unclamped values -DV for logging).
    """
    b, n = scores.shape
    rows = torch.arange(b, device=scores.device)
    s_pos = scores[rows, pos]
    value = -s_pos + torch.logsumexp(scores, dim=1) - math.log(n)
    diff = scores - s_pos[:, None]
    diff = diff.masked_fill(F.one_hot(pos, n).bool(), float("-inf"))
    lse = torch.logsumexp(diff, dim=1)
    inside = (value.detach() > clamp[0]) & (value.detach() < clamp[1])
    flat = value.detach().clamp(*clamp) + (torch.exp(lse - lse.detach()) - 1.0) * inside
    return flat.mean(), value.detach().mean()

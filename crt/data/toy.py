"""Synthetic data of the CRT supplement: the Hénon toy (D.1) and the extreme-classification toy (D.2)."""

from __future__ import annotations

import math

import torch

from crt.data.base import RawData, register

HENON_MEANS = [[-0.5, -1.0], [2.0, 1.0], [5.0, 2.0], [1.0, 3.0], [-2.0, 1.0], [-3.5, 4.0], [-4.0, -1.0]]
HENON_VARS = [[0.5, 0.5], [3.0, 1.0], [1.0, 2.0], [0.3, 2.0], [1.0, 0.2], [1.0, 1.0], [2.0, 0.3]]


def henon_sources(n_per_class: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-conditional 2-D Gaussian sources s ~ N(mu_y, diag(var_y)), n_per_class of each of 7 classes."""
    mu, var = torch.tensor(HENON_MEANS), torch.tensor(HENON_VARS)
    y = torch.arange(len(mu)).repeat_interleave(n_per_class)
    s = mu[y] + var[y].sqrt() * torch.randn(len(y), 2, generator=g)
    return s, y


def henon_features(s: torch.Tensor, rotation_deg: float, scale: float) -> torch.Tensor:
    """Rotate and scale the sources, then the Hénon map: z1 = 1 - 1.4 s1^2 + s2, z2 = 0.3 s1."""
    t = math.radians(rotation_deg)
    rot = torch.tensor([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    u = scale * s @ rot.T
    return torch.stack([1 - 1.4 * u[:, 0] ** 2 + u[:, 1], 0.3 * u[:, 0]], dim=1)


@register("toy_henon")
def load_toy_henon(
    n_per_class: int = 2000,
    n_test_per_class: int = 1000,
    input_dim: int = 32,
    noise: float = 1.0,
    rotation_deg: float = 30.0,
    scale: float = 0.3,
    data_seed: int = 0,
    **_: object,
) -> RawData:
    """x = A z + eps with z the standardised Hénon features; A (input_dim x 2) fixed by data_seed."""
    g = torch.Generator().manual_seed(10_000 + int(data_seed))
    a = torch.randn(input_dim, 2, generator=g)
    s_tr, y_tr = henon_sources(n_per_class, g)
    s_te, y_te = henon_sources(n_test_per_class, g)
    z_tr, z_te = henon_features(s_tr, rotation_deg, scale), henon_features(s_te, rotation_deg, scale)
    mean, std = z_tr.mean(0), z_tr.std(0)
    z_tr, z_te = (z_tr - mean) / std, (z_te - mean) / std
    x_tr = z_tr @ a.T + noise * torch.randn(len(z_tr), input_dim, generator=g)
    x_te = z_te @ a.T + noise * torch.randn(len(z_te), input_dim, generator=g)
    return RawData(x_tr, y_tr, x_te, y_te, num_classes=len(HENON_MEANS))


@register("toy_extreme")
def load_toy_extreme(
    num_classes: int = 1000,
    min_per_class: int = 5,
    max_per_class: int = 150,
    n_test_per_class: int = 20,
    std: float = 0.1,
    data_seed: int = 0,
    **_: object,
) -> RawData:
    """1000 2-D Gaussians with means U(-4, 4)^2 and std 0.1; n_c uniform in [5, 150] (natural imbalance)."""
    g = torch.Generator().manual_seed(20_000 + int(data_seed))
    means = torch.rand(num_classes, 2, generator=g) * 8 - 4
    n = torch.randint(min_per_class, max_per_class + 1, (num_classes,), generator=g)
    y_tr = torch.arange(num_classes).repeat_interleave(n)
    y_te = torch.arange(num_classes).repeat_interleave(n_test_per_class)
    x_tr = means[y_tr] + std * torch.randn(len(y_tr), 2, generator=g)
    x_te = means[y_te] + std * torch.randn(len(y_te), 2, generator=g)
    return RawData(x_tr, y_tr, x_te, y_te, num_classes=num_classes)

"""Synthetic data: the Hénon toy (CRT supplement D.1), the extreme-classification toy (D.2), and a harder
ground-truth demixing benchmark (toy_ica: d Gaussian sources, class-modulated, random invertible MLP mixing)."""

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
    project: bool = True,
    data_seed: int = 0,
) -> RawData:
    """x = A z + eps with z the standardised Hénon features; A (input_dim x 2) fixed by data_seed.

    `project: false` gives x = z + eps (2-D; with noise 0 and the identity encoder: the authors' toy code).
    The true sources are kept (RawData.sources_*) so every run can score its demix stage.
    """
    g = torch.Generator().manual_seed(10_000 + int(data_seed))
    a = torch.randn(input_dim, 2, generator=g)
    s_tr, y_tr = henon_sources(n_per_class, g)
    s_te, y_te = henon_sources(n_test_per_class, g)
    z_tr, z_te = henon_features(s_tr, rotation_deg, scale), henon_features(s_te, rotation_deg, scale)
    mean, std = z_tr.mean(0), z_tr.std(0)
    z_tr, z_te = (z_tr - mean) / std, (z_te - mean) / std
    if project:
        x_tr = z_tr @ a.T + noise * torch.randn(len(z_tr), input_dim, generator=g)
        x_te = z_te @ a.T + noise * torch.randn(len(z_te), input_dim, generator=g)
    else:
        x_tr = z_tr + noise * torch.randn(len(z_tr), 2, generator=g)
        x_te = z_te + noise * torch.randn(len(z_te), 2, generator=g)
    return RawData(x_tr, y_tr, x_te, y_te, num_classes=len(HENON_MEANS), sources_train=s_tr, sources_test=s_te)


class InvertibleMLP:
    """A random invertible MLP R^d -> R^d (the nonlinear-ICA benchmarks' mixing): `layers` affine maps
    W_l x + b_l with W_l = Q diag(sv) Q' (random orthogonal Q, Q', singular values in [0.5, 1.5], so every
    W_l is well conditioned), a leaky ReLU (slope `slope`) between them, none after the last."""

    def __init__(self, dim: int, layers: int, g: torch.Generator, slope: float = 0.2):
        self.slope = float(slope)
        self.weights, self.biases = [], []
        for _ in range(layers):
            q1, _r = torch.linalg.qr(torch.randn(dim, dim, generator=g))
            q2, _r = torch.linalg.qr(torch.randn(dim, dim, generator=g))
            sv = 0.5 + torch.rand(dim, generator=g)
            self.weights.append(q1 @ torch.diag(sv) @ q2)
            self.biases.append(0.1 * torch.randn(dim, generator=g))

    def __call__(self, s: torch.Tensor) -> torch.Tensor:
        x = s
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = x @ w.T + b
            if i < len(self.weights) - 1:
                x = torch.where(x > 0, x, self.slope * x)
        return x

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        s = x
        for i in reversed(range(len(self.weights))):
            if i < len(self.weights) - 1:
                s = torch.where(s > 0, s, s / self.slope)
            s = torch.linalg.solve(self.weights[i], (s - self.biases[i]).T).T
        return s


def ica_class_params(num_classes: int, dim: int, mean_scale: float, log_std_range: float,
                     g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Class parameters mu ~ N(0, mean_scale^2), log sigma ~ U(-r, r) per (class, dimension), then
    s | y ~ N(mu_y, diag(sigma_y^2)): independent dimensions given the class, class-modulated variances."""
    mu = mean_scale * torch.randn(num_classes, dim, generator=g)
    log_std = (2 * torch.rand(num_classes, dim, generator=g) - 1) * log_std_range
    return mu, log_std


@register("toy_ica")
def load_toy_ica(
    num_classes: int = 12,
    num_sources: int = 4,
    n_per_class: int = 2000,
    n_test_per_class: int = 1000,
    mixing_layers: int = 3,
    slope: float = 0.2,
    mean_scale: float = 1.0,
    log_std_range: float = 1.0,
    data_seed: int = 0,
) -> RawData:
    """Harder ground-truth demixing benchmark: d class-conditionally independent Gaussian sources with
    class-modulated means and variances (more classes than 2d, the identifiability condition of GCL/TCL),
    mixed by a random invertible MLP; x = mix(s) standardised with the training mean and std. Both the
    class parameters and the mixing are fixed by data_seed; the true sources are kept in the split."""
    g = torch.Generator().manual_seed(30_000 + int(data_seed))
    mu, log_std = ica_class_params(num_classes, num_sources, mean_scale, log_std_range, g)
    y_tr = torch.arange(num_classes).repeat_interleave(n_per_class)
    y_te = torch.arange(num_classes).repeat_interleave(n_test_per_class)
    mix = InvertibleMLP(num_sources, mixing_layers, g, slope)
    s_tr = mu[y_tr] + log_std[y_tr].exp() * torch.randn(len(y_tr), num_sources, generator=g)
    s_te = mu[y_te] + log_std[y_te].exp() * torch.randn(len(y_te), num_sources, generator=g)
    x_tr, x_te = mix(s_tr), mix(s_te)
    mean, std = x_tr.mean(0), x_tr.std(0)
    return RawData((x_tr - mean) / std, y_tr, (x_te - mean) / std, y_te, num_classes=num_classes,
                   sources_train=s_tr, sources_test=s_te)


@register("toy_extreme")
def load_toy_extreme(
    num_classes: int = 1000,
    min_per_class: int = 5,
    max_per_class: int = 150,
    n_test_per_class: int = 20,
    std: float = 0.1,
    data_seed: int = 0,
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

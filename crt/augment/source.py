"""Source-space augmentation of minority classes (CRT/ECRT stage 3).

Because the sources of a class are independent given the class, drawing each dimension separately from
that class's real values yields new, plausible samples (`nonparametric`); `parametric` fits a diagonal
Gaussian per class; `oversample` resamples whole real vectors (the rebalancing-only control); `none`
returns nothing (the "w/o aug" ablation). Every augmenter has the signature
fn(x, y, classes, n_per_class, generator, **kwargs) -> (x_new, y_new).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from crt.errors import ConfigError

Augmenter = Callable[..., tuple[torch.Tensor, torch.Tensor]]
AUGMENTERS: dict[str, Augmenter] = {}


def register_augmenter(name: str) -> Callable[[Augmenter], Augmenter]:
    def deco(fn: Augmenter) -> Augmenter:
        AUGMENTERS[name] = fn
        return fn

    return deco


def _per_class(x: torch.Tensor, y: torch.Tensor, classes: Sequence[int], n: int,
               draw: Callable[[torch.Tensor, int], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for c in classes:
        xc = x[y == c]
        if len(xc) == 0:
            continue
        xs.append(draw(xc, n))
        ys.append(torch.full((n,), int(c), dtype=torch.long, device=x.device))
    if not xs:
        return x.new_zeros((0, *x.shape[1:])), torch.zeros(0, dtype=torch.long, device=x.device)
    return torch.cat(xs), torch.cat(ys)


@register_augmenter("nonparametric")
def nonparametric(x: torch.Tensor, y: torch.Tensor, classes: Sequence[int], n_per_class: int,
                  generator: torch.Generator | None = None, **_: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Each coordinate of each new sample is drawn (with replacement) from the class's real values of it."""
    def draw(xc: torch.Tensor, n: int) -> torch.Tensor:
        idx = torch.randint(len(xc), (n, xc.shape[1]), generator=generator).to(xc.device)
        return xc.gather(0, idx)

    return _per_class(x, y, classes, n_per_class, draw)


@register_augmenter("parametric")
def parametric(x: torch.Tensor, y: torch.Tensor, classes: Sequence[int], n_per_class: int,
               generator: torch.Generator | None = None, **_: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """New samples from N(mean_c, diag(std_c^2)) fitted to the class's real sources."""
    def draw(xc: torch.Tensor, n: int) -> torch.Tensor:
        std = xc.std(0, unbiased=True) if len(xc) > 1 else torch.zeros_like(xc[0])
        eps = torch.randn(n, xc.shape[1], generator=generator).to(xc.device)
        return xc.mean(0) + std * eps

    return _per_class(x, y, classes, n_per_class, draw)


@register_augmenter("oversample")
def oversample(x: torch.Tensor, y: torch.Tensor, classes: Sequence[int], n_per_class: int,
               generator: torch.Generator | None = None, **_: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole real vectors resampled with replacement (rebalancing without per-dimension mixing)."""
    def draw(xc: torch.Tensor, n: int) -> torch.Tensor:
        return xc[torch.randint(len(xc), (n,), generator=generator).to(xc.device)]

    return _per_class(x, y, classes, n_per_class, draw)


@register_augmenter("none")
def no_augmentation(x: torch.Tensor, y: torch.Tensor, classes: Sequence[int], n_per_class: int,
                    generator: torch.Generator | None = None, **_: Any) -> tuple[torch.Tensor, torch.Tensor]:
    return _per_class(x, y, [], n_per_class, lambda xc, n: xc)


def augment(kind: str, x: torch.Tensor, y: torch.Tensor, classes: Sequence[int], n_per_class: int,
            generator: torch.Generator | None = None, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if kind not in AUGMENTERS:
        import crt.augment.feature  # noqa: F401  (SMOTE, GAN register on import)
    if kind not in AUGMENTERS:
        raise ConfigError(f"method.augment={kind!r} is unknown. Fix: use one of {', '.join(sorted(AUGMENTERS))}.")
    return AUGMENTERS[kind](x, y, classes, n_per_class, generator=generator, **kwargs)

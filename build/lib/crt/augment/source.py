"""Source-space augmentation of minority classes (CRT/ECRT stage 3).

Because the sources of a class are independent given the class, drawing each dimension separately from
that class's real values yields new, plausible samples (`nonparametric`); `parametric` fits a diagonal
Gaussian per class; `oversample` resamples whole real vectors (the rebalancing-only control); `none`
returns nothing (the "w/o aug" ablation). Every augmenter has the signature
fn(x, y, classes, n_per_class, generator, [num_classes, seed, device,] **options) -> (x_new, y_new) and
registers itself in `crt.registry.AUGMENTERS` with its typed options (`method.augment_kwargs`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch

from crt.registry import AUGMENTERS, as_dict

Augmenter = Callable[..., tuple[torch.Tensor, torch.Tensor]]
register_augmenter = AUGMENTERS.register


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
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each coordinate of each new sample is drawn (with replacement) from the class's real values of it."""
    def draw(xc: torch.Tensor, n: int) -> torch.Tensor:
        idx = torch.randint(len(xc), (n, xc.shape[1]), generator=generator).to(xc.device)
        return xc.gather(0, idx)

    return _per_class(x, y, classes, n_per_class, draw)


@register_augmenter("parametric")
def parametric(x: torch.Tensor, y: torch.Tensor, classes: Sequence[int], n_per_class: int,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """New samples from N(mean_c, diag(std_c^2)) fitted to the class's real sources."""
    def draw(xc: torch.Tensor, n: int) -> torch.Tensor:
        std = xc.std(0, unbiased=True) if len(xc) > 1 else torch.zeros_like(xc[0])
        eps = torch.randn(n, xc.shape[1], generator=generator).to(xc.device)
        return xc.mean(0) + std * eps

    return _per_class(x, y, classes, n_per_class, draw)


@register_augmenter("oversample")
def oversample(x: torch.Tensor, y: torch.Tensor, classes: Sequence[int], n_per_class: int,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole real vectors resampled with replacement (rebalancing without per-dimension mixing)."""
    def draw(xc: torch.Tensor, n: int) -> torch.Tensor:
        return xc[torch.randint(len(xc), (n,), generator=generator).to(xc.device)]

    return _per_class(x, y, classes, n_per_class, draw)


@register_augmenter("none")
def no_augmentation(x: torch.Tensor, y: torch.Tensor, classes: Sequence[int], n_per_class: int,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    return _per_class(x, y, [], n_per_class, lambda xc, n: xc)


def augment(kind: str, x: torch.Tensor, y: torch.Tensor, classes: Sequence[int], n_per_class: int,
            generator: torch.Generator | None = None, *, num_classes: int | None = None, seed: int = 0,
            device: torch.device | str = "cpu", **options: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Run augmenter `kind`; `options` are checked against its typed options (`method.augment_kwargs`)."""
    entry = AUGMENTERS.entry(kind, "method.augment")
    opts = AUGMENTERS.options(kind, options, "method.augment_kwargs")
    params = inspect.signature(entry.obj).parameters
    context = {k: v for k, v in {"num_classes": num_classes, "seed": seed, "device": device}.items() if k in params}
    return entry.obj(x, y, classes, n_per_class, generator=generator, **context, **as_dict(opts))

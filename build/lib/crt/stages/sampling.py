"""How the classifier stages draw and weight their samples: samplers (`stage.<stage>.sampler`) and the refine
stage's λ weightings (`stage.refine.weighting`), each registered by name in crt.registry.
"""

from __future__ import annotations

import torch

from crt.data.base import Split
from crt.registry import SAMPLERS, WEIGHTINGS


@SAMPLERS.register("natural")
def natural(split: Split, y: torch.Tensor) -> torch.Tensor | None:
    """Every sample once per epoch, shuffled (no sampling weights)."""
    return None


@SAMPLERS.register("balanced")
def balanced(split: Split, y: torch.Tensor) -> torch.Tensor | None:
    """Class-balanced sampling weights 1/n_c (multi-label: 1/n of the sample's rarest label)."""
    counts = split.class_counts(y).float().clamp(min=1)
    if split.multilabel:
        inv = torch.where(y.bool(), 1.0 / counts, torch.zeros(()))
        return inv.max(1).values.clamp(min=1.0 / float(counts.max()))
    return 1.0 / counts[y]


@WEIGHTINGS.register("code")
def code(minority: torch.Tensor, lam: float, has_aug: bool) -> tuple[torch.Tensor, float]:
    """The authors' code: real minority samples at λ (at 1 when nothing was augmented), augmented ones at 1."""
    w = torch.where(minority, torch.tensor(lam if has_aug else 1.0), torch.tensor(1.0))
    return w, 1.0


@WEIGHTINGS.register("paper")
def paper(minority: torch.Tensor, lam: float, has_aug: bool) -> tuple[torch.Tensor, float]:
    """The formula as printed: CE over real samples + λ · CE over augmented ones."""
    return torch.ones(len(minority)), lam

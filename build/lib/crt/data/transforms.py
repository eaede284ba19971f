"""Training-time image augmentation on whole batches, on the batch's device (no per-image Python loop).

`crop_flip` is the standard CIFAR augmentation (He et al. 2016; LDAM-DRW): zero-pad 4 pixels on every
side, take a random crop of the original size, flip horizontally with probability 1/2. Crop and flip are
one gather with per-image offsets, so a batch of uint8 images on the GPU stays there and stays uint8.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from crt.errors import ConfigError
from crt.registry import TRANSFORMS


class CropFlip:
    """Random crop after `padding`-pixel zero padding, and a random horizontal flip, per image."""

    def __init__(self, padding: int = 4, flip: bool = True, generator: torch.Generator | None = None):
        self.padding, self.flip, self.generator = int(padding), bool(flip), generator

    def _rand(self, high: int, n: int, device: torch.device) -> torch.Tensor:
        if self.generator is not None:  # a CPU generator gives reproducible draws on any device
            return torch.randint(high, (n,), generator=self.generator).to(device)
        return torch.randint(high, (n,), device=device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ConfigError(
                f"data.train_transform=crop_flip needs image batches N x C x H x W, got shape {tuple(x.shape)}. "
                "Fix: set data.train_transform=null for datasets of feature vectors."
            )
        n, c, h, w = x.shape
        p, dev = self.padding, x.device
        padded = F.pad(x, (p, p, p, p)) if p > 0 else x  # zeros, any dtype
        oy, ox = self._rand(2 * p + 1, n, dev), self._rand(2 * p + 1, n, dev)
        rows = oy[:, None] + torch.arange(h, device=dev)  # N x H
        cols = torch.arange(w, device=dev).expand(n, w)
        if self.flip:
            flipped = self._rand(2, n, dev).bool()
            cols = torch.where(flipped[:, None], cols.flip(1), cols)
        cols = ox[:, None] + cols  # N x W
        i = torch.arange(n, device=dev)[:, None, None, None]
        ch = torch.arange(c, device=dev)[None, :, None, None]
        return padded[i, ch, rows[:, None, :, None], cols[:, None, None, :]]


@TRANSFORMS.register("crop_flip")
def crop_flip() -> CropFlip:
    return CropFlip(padding=4, flip=True)


@TRANSFORMS.register("crop")
def crop() -> CropFlip:
    return CropFlip(padding=4, flip=False)


@TRANSFORMS.register("flip")
def flip() -> CropFlip:
    return CropFlip(padding=0, flip=True)


def build_transform(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The batch transform named by `data.train_transform` (null in the config: none)."""
    return TRANSFORMS.get(name, "data.train_transform")()

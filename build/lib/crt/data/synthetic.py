"""Synthetic CIFAR-shaped images (uint8, 3 x 32 x 32) for benchmarks: no download, learnable classes.

Each class has a fixed random 8 x 8 colour template, upsampled to 32 x 32; images are the template plus
pixel noise, so a ResNet learns them quickly while the tensors and the cost per step match CIFAR-100.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from crt.data.base import RawData, register


@register("synthetic_images")
def load_synthetic_images(num_classes: int = 100, n_per_class: int = 500, n_test_per_class: int = 100,
                          image_size: int = 32, noise: float = 48.0, data_seed: int = 0) -> RawData:
    g = torch.Generator().manual_seed(30_000 + int(data_seed))
    templates = torch.rand(num_classes, 3, 8, 8, generator=g) * 255
    templates = F.interpolate(templates, size=image_size, mode="bilinear", align_corners=False)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(num_classes).repeat_interleave(n)
        x = templates[y] + noise * torch.randn(len(y), 3, image_size, image_size, generator=g)
        return x.clamp_(0, 255).to(torch.uint8), y

    x_tr, y_tr = draw(n_per_class)
    x_te, y_te = draw(n_test_per_class)
    return RawData(x_tr, y_tr, x_te, y_te, num_classes=num_classes)

"""Image encoders: ResNet-18 with the CIFAR stem (He et al. 2016, sec. 4.2 / LDAM-DRW), and a pixel MLP.

Both take the uint8 batches the CIFAR loader returns (or floats in [0, 1]) and normalise inside, so the
images stay uint8 on the device until the first layer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
import torch
from torch import nn

from crt.models.mlp import MLP, register_encoder

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


class Normalize(nn.Module):
    """uint8 -> float / 255, then (x - mean) / std per channel; float inputs are taken to be in [0, 1]."""

    def __init__(self, mean: Sequence[float] = CIFAR_MEAN, std: Sequence[float] = CIFAR_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().div(255.0) if not x.is_floating_point() else x
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


def _as_images(x: torch.Tensor, channels: int = 3) -> torch.Tensor:
    """N x C x H x W as is; flat N x (C*H*W) square images reshaped."""
    if x.dim() == 4:
        return x
    side = math.isqrt(x[0].numel() // channels)
    return x.reshape(len(x), channels, side, side)


class ResNetCifar(nn.Module):
    """torchvision ResNet-18, 3x3 stride-1 first convolution, no max-pool, fc: 512 -> out_dim."""

    def __init__(self, out_dim: int, channels_last: bool = False, mean: Sequence[float] = CIFAR_MEAN,
                 std: Sequence[float] = CIFAR_STD, width: int = 64):
        super().__init__()
        from torchvision.models import resnet18

        net = resnet18(weights=None)
        if width != 64:  # narrower variant for tests: every stage scaled by width / 64
            from torchvision.models.resnet import BasicBlock, ResNet

            net = ResNet(BasicBlock, [2, 2, 2, 2])
            net.inplanes = width
            net.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
            net.bn1 = nn.BatchNorm2d(width)
            net.layer1 = net._make_layer(BasicBlock, width, 2)
            net.layer2 = net._make_layer(BasicBlock, 2 * width, 2, stride=2)
            net.layer3 = net._make_layer(BasicBlock, 4 * width, 2, stride=2)
            net.layer4 = net._make_layer(BasicBlock, 8 * width, 2, stride=2)
        net.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
        net.fc = nn.Linear(8 * width, out_dim)
        self.norm, self.net, self.out_dim = Normalize(mean, std), net, out_dim
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(_as_images(x))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)


@register_encoder("resnet18_cifar")
def resnet18_cifar(in_dim: int, out_dim: int, channels_last: bool = False, width: int = 64) -> nn.Module:
    """ResNet-18 (CIFAR stem) + FC out_dim (32 in the papers); `in_dim` is implied by the images."""
    return ResNetCifar(out_dim, channels_last=channels_last, width=width)


class PixelMLP(nn.Module):
    """Normalised pixels -> MLP: a cheap image encoder for smoke tests and linear-probe baselines."""

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int, batch_norm: bool = False):
        super().__init__()
        self.norm, self.mlp, self.out_dim = Normalize(), MLP(in_dim, list(hidden), out_dim, batch_norm), out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.norm(_as_images(x)))


@register_encoder("mlp_image")
def mlp_image(in_dim: int, out_dim: int, hidden: Sequence[int] = (32, 32), batch_norm: bool = False) -> nn.Module:
    """MLP on uint8 images (normalised by the CIFAR mean/std inside)."""
    return PixelMLP(in_dim, hidden, out_dim, batch_norm)


class _BlockA(nn.Module):
    """Basic block of the CIFAR ResNets (He et al. 2016, sec. 4.2) with the parameter-free option-A shortcut:
    stride-2 subsampling and zero-padded channels where the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.stride, self.pad = stride, c_out - c_in

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1 and self.pad == 0:
            return x
        x = x[:, :, ::self.stride, ::self.stride]
        return nn.functional.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNetCifarSmall(nn.Module):
    """The CIFAR ResNet-(6n+2) of He et al. (2016, sec. 4.2): 3x3 conv 16, three stages of n basic blocks at
    16/32/64 channels (stride 2 between stages, option-A shortcuts), global average pooling -> 64 features.

    ResNet-32 is n = 5 (the backbone of LDAM-DRW, logit adjustment and balanced softmax on CIFAR-LT; 0.46M
    parameters with its 10-class linear classifier). The encoder ends at the pooled 64-d features when
    out_dim = 64 (the classifier is the stage's head); another out_dim adds a linear map 64 -> out_dim.
    Kaiming-normal initialisation of the convolutions, as in LDAM-DRW's code.
    """

    def __init__(self, out_dim: int = 64, n: int = 5, width: int = 16, mean: Sequence[float] = CIFAR_MEAN,
                 std: Sequence[float] = CIFAR_STD, channels_last: bool = False):
        super().__init__()
        widths = (width, 2 * width, 4 * width)
        self.norm = Normalize(mean, std)
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        blocks: list[nn.Module] = []
        c_in = width
        for i, c in enumerate(widths):
            for j in range(n):
                blocks.append(_BlockA(c_in, c, 2 if (i > 0 and j == 0) else 1))
                c_in = c
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Identity() if out_dim == widths[-1] else nn.Linear(widths[-1], out_dim)
        self.out_dim = out_dim
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(_as_images(x))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.blocks(torch.relu(self.bn1(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))


@register_encoder("resnet32_cifar")
def resnet32_cifar(in_dim: int, out_dim: int, width: int = 16, depth: int = 32, channels_last: bool = False) -> nn.Module:
    """ResNet-32 of He et al. for CIFAR (depth = 6n + 2; `width` < 16 only for tests and smoke runs;
    `channels_last`: NHWC memory layout, as for resnet18_cifar)."""
    if (int(depth) - 2) % 6 or int(depth) < 8:
        from crt.errors import ConfigError

        raise ConfigError(f"data.encoder.depth={depth!r} is not 6n+2. Fix: use 20, 32, 44, 56 or 110 (32: ResNet-32).")
    return ResNetCifarSmall(out_dim, n=(int(depth) - 2) // 6, width=int(width), channels_last=bool(channels_last))

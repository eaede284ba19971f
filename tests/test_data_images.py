"""On-device crop/flip augmentation and the CIFAR ResNet-18 encoder."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from crt.data.transforms import CropFlip, build_transform
from crt.errors import ConfigError
from crt.models.mlp import build_encoder


def _all_views(img: torch.Tensor, p: int = 4) -> list[torch.Tensor]:
    padded = F.pad(img, (p, p, p, p))
    h, w = img.shape[1:]
    crops = [padded[:, i:i + h, j:j + w] for i in range(2 * p + 1) for j in range(2 * p + 1)]
    return crops + [c.flip(-1) for c in crops]


def test_crop_flip_outputs_are_padded_crops_or_their_mirror() -> None:
    torch.manual_seed(0)
    x = torch.randint(1, 256, (16, 3, 12, 10), dtype=torch.uint8)
    out = build_transform("crop_flip")(x)
    assert out.shape == x.shape and out.dtype == torch.uint8 and out.device == x.device
    for img, o in zip(x, out):
        assert any(torch.equal(o, v) for v in _all_views(img))


def test_crop_flip_is_random_per_image_and_seedable() -> None:
    x = torch.arange(3 * 8 * 8, dtype=torch.float32).reshape(1, 3, 8, 8).repeat(256, 1, 1, 1) + 1
    out = CropFlip(generator=torch.Generator().manual_seed(1))(x)
    assert len({o.sum().item() for o in out}) > 20  # offsets differ between images of one batch
    zeros = (out == 0).flatten(1).any(1).float().mean()  # some crops reach into the zero padding
    assert zeros > 0.5  # 80 of the 81 offsets shift the image
    flipped = torch.tensor([any(torch.equal(o, v.flip(-1)) for v in _all_views(x[0])[:81]) for o in out[:64]])
    assert 0.2 < flipped.float().mean() < 0.8
    again = CropFlip(generator=torch.Generator().manual_seed(1))(x)
    assert torch.equal(out, again)


def test_flip_only_and_errors() -> None:
    x = torch.rand(64, 3, 5, 5)
    out = build_transform("flip")(x)
    assert all(torch.equal(o, i) or torch.equal(o, i.flip(-1)) for o, i in zip(out, x))
    with pytest.raises(ConfigError, match="unknown"):
        build_transform("rotate")
    with pytest.raises(ConfigError, match="N x C x H x W"):
        build_transform("crop_flip")(torch.rand(4, 10))


def test_resnet18_cifar_architecture() -> None:
    enc = build_encoder({"name": "resnet18_cifar"}, 3072, 32)
    net = enc.net
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    assert isinstance(net.maxpool, nn.Identity)
    assert isinstance(net.fc, nn.Linear) and net.fc.in_features == 512 and net.fc.out_features == 32
    assert 11_000_000 < sum(p.numel() for p in enc.parameters()) < 11_300_000


def test_resnet_uint8_float_flat_and_channels_last_agree() -> None:
    torch.manual_seed(0)
    enc = build_encoder({"name": "resnet18_cifar", "width": 8}, 3072, 32).eval()
    cl = build_encoder({"name": "resnet18_cifar", "width": 8, "channels_last": True}, 3072, 32).eval()
    cl.load_state_dict(enc.state_dict())
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        a = enc(x)
        assert a.shape == (4, 32)
        torch.testing.assert_close(enc(x.float() / 255), a)
        torch.testing.assert_close(enc(x.reshape(4, -1)), a)
        torch.testing.assert_close(cl(x), a, rtol=1e-4, atol=1e-4)
    enc.train()
    enc(x).sum().backward()  # trainable from uint8 inputs
    assert enc.net.conv1.weight.grad is not None


def test_normalisation_uses_cifar_statistics() -> None:
    enc = build_encoder({"name": "mlp_image", "hidden": [8]}, 3 * 4 * 4, 5)
    x = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    z = enc.norm(x)
    torch.testing.assert_close(z[0, :, 0, 0], -torch.tensor([0.4914, 0.4822, 0.4465]) / torch.tensor([0.2470, 0.2435, 0.2616]))
    assert enc(x).shape == (2, 5)

"""Source-space augmentation of the minority classes."""

import torch

from crt.augment import augment


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 3, generator=g) * torch.tensor([1.0, 2.0, 0.5]) + torch.tensor([1.0, -1.0, 3.0])
    y = torch.cat([torch.zeros(250, dtype=torch.long), torch.ones(50, dtype=torch.long)])
    return x, y


def test_nonparametric_takes_each_coordinate_from_the_class_real_values() -> None:
    x, y = _data()
    xa, ya = augment("nonparametric", x, y, [1], 2000, generator=torch.Generator().manual_seed(1))
    assert xa.shape == (2000, 3) and torch.all(ya == 1)
    real = x[y == 1]
    for a in range(3):
        assert torch.isin(xa[:, a], real[:, a]).all()
        assert not torch.isin(xa[:, a], x[y == 0][:, a]).any()
    # coordinates are mixed across samples: most augmented rows are not real rows
    is_real_row = (xa[:, None, :] == real[None]).all(-1).any(1)
    assert is_real_row.float().mean() < 0.2


def test_parametric_matches_class_mean_and_std() -> None:
    x, y = _data()
    xa, _ = augment("parametric", x, y, [1], 20000, generator=torch.Generator().manual_seed(2))
    real = x[y == 1]
    assert torch.allclose(xa.mean(0), real.mean(0), atol=0.05)
    assert torch.allclose(xa.std(0), real.std(0), rtol=0.03)


def test_oversample_copies_whole_rows_and_none_adds_nothing() -> None:
    x, y = _data()
    xa, _ = augment("oversample", x, y, [1], 100, generator=torch.Generator().manual_seed(3))
    assert (xa[:, None, :] == x[y == 1][None]).all(-1).any(1).all()
    xn, yn = augment("none", x, y, [1], 100)
    assert len(xn) == 0 and len(yn) == 0


def test_majority_classes_are_never_augmented() -> None:
    x, y = _data()
    _, ya = augment("nonparametric", x, y, [1], 10)
    assert set(ya.tolist()) == {1}

"""Feature-space augmentation baselines of CRT/ECRT Table 1: SMOTE and a conditional GAN.

Both run on the frozen encoder's features z (`method.refine_space: feature`) and, like the source-space
augmenters, return only the new minority samples: `n_per_class` per minority class, majority classes untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from crt.registry import AUGMENTERS

log = logging.getLogger(__name__)


def _empty(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x.new_zeros((0, *x.shape[1:])), torch.zeros(0, dtype=torch.long, device=x.device)


@dataclass(frozen=True)
class SmoteOptions:
    """`method.augment_kwargs` of smote."""

    k_neighbors: int = field(default=5, metadata={"ge": 1, "fix": "use k_neighbors >= 1 (imbalanced-learn's default is 5)"})


@AUGMENTERS.register("smote", options=SmoteOptions)
def smote(x: torch.Tensor, y: torch.Tensor, classes: Sequence[int], n_per_class: int,
          generator: torch.Generator | None = None, seed: int = 0,
          k_neighbors: int = SmoteOptions.k_neighbors) -> tuple[torch.Tensor, torch.Tensor]:
    """SMOTE (Chawla et al. 2002) by imbalanced-learn: each new point lies on a segment between a real minority
    sample and one of its k nearest same-class neighbours. k = min(k_neighbors, n_c − 1) per class; a class
    with a single sample is duplicated (its only "segment" is a point); empty classes are skipped.
    """
    from imblearn.over_sampling import SMOTE

    n = int(n_per_class)
    xs, ys = [], []
    x_np, y_np = x.detach().cpu().numpy(), y.detach().cpu().numpy()
    rng = np.random.RandomState(int(seed))
    for c in classes:
        c = int(c)
        n_c = int((y_np == c).sum())
        if n_c == 0 or n <= 0:
            continue
        if n_c == 1:
            log.warning("SMOTE: class %d has one training sample; its %d new samples are copies of it.", c, n)
            new = np.repeat(x_np[y_np == c], n, axis=0)
        else:
            # A two-class problem (c against everything else) so imbalanced-learn accepts it; neighbours are
            # searched among class c only, and the synthetic points come after the originals.
            y_bin = (y_np == c).astype(np.int64)
            if y_bin.min() == 1:  # nothing else in the data: add one dummy row of the other label
                x_in, y_bin = np.concatenate([x_np, x_np[:1]]), np.concatenate([y_bin, [0]])
            else:
                x_in = x_np
            sm = SMOTE(sampling_strategy={1: n_c + n}, k_neighbors=min(int(k_neighbors), n_c - 1), random_state=rng)
            x_res, _ = sm.fit_resample(x_in, y_bin)
            new = x_res[len(x_in):]
        xs.append(torch.as_tensor(new, dtype=x.dtype))
        ys.append(torch.full((n,), c, dtype=torch.long))
    if not xs:
        return _empty(x)
    return torch.cat(xs).to(x.device), torch.cat(ys).to(x.device)


def _fc_stack(in_dim: int, out_dim: int, hidden: int, slope: float) -> nn.Sequential:
    """in -> FC hidden -> LeakyReLU -> FC hidden -> LeakyReLU -> out (the GAN baseline's FC256-LeakyReLU ×2)."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.LeakyReLU(slope), nn.Linear(hidden, hidden),
                         nn.LeakyReLU(slope), nn.Linear(hidden, out_dim))


class ConditionalGAN(nn.Module):
    """Conditional GAN on feature vectors (Mirza & Osindero 2014): G(noise, onehot y) -> z, D(z, onehot y) -> logit.

    Features are standardised per dimension with the training mean/std; `sample` maps back to feature units.
    """

    def __init__(self, dim: int, num_classes: int, noise_dim: int = 32, hidden: int = 256, slope: float = 0.2):
        super().__init__()
        self.dim, self.num_classes, self.noise_dim = dim, num_classes, noise_dim
        self.generator = _fc_stack(noise_dim + num_classes, dim, hidden, slope)
        self.discriminator = _fc_stack(dim + num_classes, 1, hidden, slope)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def generate(self, y: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Standardised fake features for labels y."""
        return self.generator(torch.cat([noise, F.one_hot(y, self.num_classes).float()], 1))

    def critic(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Discriminator logit (real vs fake) of standardised features z with labels y."""
        return self.discriminator(torch.cat([z, F.one_hot(y, self.num_classes).float()], 1)).squeeze(1)

    @torch.no_grad()
    def sample(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Features (in the encoder's units) for labels y."""
        noise = torch.randn(len(y), self.noise_dim, generator=generator).to(self.mean.device)
        return self.generate(y.to(self.mean.device), noise) * self.std + self.mean


def train_cgan(x: torch.Tensor, y: torch.Tensor, num_classes: int, *, noise_dim: int = 32, hidden: int = 256,
               steps: int = 2000, batch_size: int = 256, lr: float = 2e-4, balanced: bool = True, seed: int = 0,
               device: torch.device | str = "cpu") -> ConditionalGAN:
    """Fit a ConditionalGAN to (x, y) with Adam (β = 0.5, 0.999) and the non-saturating GAN loss.

    Batches are drawn class-balanced by default so that rare classes' conditionals get trained as often as the
    others (`balanced: false` draws in proportion to the data).
    """
    device = torch.device(device)
    g = torch.Generator().manual_seed(int(seed))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        gan = ConditionalGAN(x.shape[1], num_classes, noise_dim, hidden)
    x, y = x.detach().float().cpu(), y.detach().long().cpu()
    gan.mean.copy_(x.mean(0))
    gan.std.copy_(x.std(0).clamp(min=1e-6) if len(x) > 1 else torch.ones(x.shape[1]))
    xs = ((x - gan.mean) / gan.std).to(device)
    y_dev = y.to(device)
    gan.to(device).train()
    counts = torch.bincount(y, minlength=num_classes).double()
    weights = (1.0 / counts[y]) if balanced else torch.ones(len(y), dtype=torch.double)
    opt_g = torch.optim.Adam(gan.generator.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(gan.discriminator.parameters(), lr=lr, betas=(0.5, 0.999))
    bce = F.binary_cross_entropy_with_logits
    for _ in range(int(steps)):
        idx = torch.multinomial(weights, batch_size, replacement=True, generator=g).to(device)
        real, yb = xs[idx], y_dev[idx]
        noise = torch.randn(batch_size, noise_dim, generator=g).to(device)
        fake = gan.generate(yb, noise)
        d_real, d_fake = gan.critic(real, yb), gan.critic(fake.detach(), yb)
        loss_d = bce(d_real, torch.ones_like(d_real)) + bce(d_fake, torch.zeros_like(d_fake))
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        d_gen = gan.critic(fake, yb)
        loss_g = bce(d_gen, torch.ones_like(d_gen))
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
    return gan.eval()


def _positive(default: object) -> object:
    return field(default=default, metadata={"gt": 0})


@dataclass(frozen=True)
class GANOptions:
    """`method.augment_kwargs` of gan (noise dim: MNIST 32, CIFAR 64, iNat/Tiny 128)."""

    noise_dim: int = _positive(32)
    hidden: int = _positive(256)
    steps: int = _positive(2000)
    batch_size: int = _positive(256)
    lr: float = _positive(2e-4)
    balanced: bool = True


@AUGMENTERS.register("gan", options=GANOptions)
def gan(x: torch.Tensor, y: torch.Tensor, classes: Sequence[int], n_per_class: int,
        generator: torch.Generator | None = None, num_classes: int | None = None, seed: int = 0,
        device: torch.device | str = "cpu", noise_dim: int = GANOptions.noise_dim, hidden: int = GANOptions.hidden,
        steps: int = GANOptions.steps, batch_size: int = GANOptions.batch_size, lr: float = GANOptions.lr,
        balanced: bool = GANOptions.balanced) -> tuple[torch.Tensor, torch.Tensor]:
    """GAN baseline: a conditional GAN trained on all real features (every class), then `n_per_class`
    generated features for each minority class.
    """
    m = int(num_classes) if num_classes is not None else int(y.max()) + 1
    present = [int(c) for c in classes if bool((y == int(c)).any())]
    if not present or int(n_per_class) <= 0 or len(x) == 0:
        return _empty(x)
    model = train_cgan(x, y, m, noise_dim=int(noise_dim), hidden=int(hidden), steps=int(steps),
                       batch_size=int(batch_size), lr=float(lr), balanced=bool(balanced), seed=int(seed),
                       device=device)
    y_new = torch.tensor(present, dtype=torch.long).repeat_interleave(int(n_per_class))
    g = torch.Generator().manual_seed(int(seed) + 1)
    x_new = model.sample(y_new, generator=g).to(x.dtype).cpu()
    return x_new.to(x.device), y_new.to(x.device)


__all__ = ["ConditionalGAN", "gan", "smote", "train_cgan"]

"""The per-dimension critic is evaluated in one batched op equal to a loop over dimensions."""

import torch

from crt.models import BatchedCritic


def test_batched_critic_equals_per_dimension_loop() -> None:
    torch.manual_seed(0)
    critic = BatchedCritic(dim=5, out=7, hidden=32)
    s = torch.randn(11, 5)
    out = critic(s)
    assert out.shape == (11, 5, 7)
    looped = torch.stack([critic.dimension(a)(s[:, a:a + 1]) for a in range(5)], dim=1)
    assert torch.allclose(out, looped, atol=1e-5)
    assert torch.allclose(out, critic.forward_looped(s), atol=1e-5)


def test_each_output_depends_only_on_its_own_dimension() -> None:
    torch.manual_seed(0)
    critic = BatchedCritic(dim=3, out=4, hidden=16)
    s = torch.randn(2, 3, requires_grad=True)
    critic(s)[:, 1].sum().backward()
    assert s.grad[:, 0].abs().sum() == 0 and s.grad[:, 2].abs().sum() == 0 and s.grad[:, 1].abs().sum() > 0

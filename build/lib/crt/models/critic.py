"""The per-dimension critic g_a: R -> R^k (1 -> h -> h -> k), all d MLPs evaluated in one batched op."""

from __future__ import annotations

import math

import torch
from torch import nn


class BatchedCritic(nn.Module):
    """d independent MLPs with stacked weights; forward(s: B x d) -> B x d x k, g_a applied to s[:, a].

    Equal to looping over dimensions with one nn.Sequential per dimension, but a single einsum per layer.
    """

    def __init__(self, dim: int, out: int, hidden: int = 512):
        super().__init__()
        self.dim, self.out, self.hidden = dim, out, hidden
        self.w1 = nn.Parameter(torch.empty(dim, hidden))
        self.b1 = nn.Parameter(torch.empty(dim, hidden))
        self.w2 = nn.Parameter(torch.empty(dim, hidden, hidden))
        self.b2 = nn.Parameter(torch.empty(dim, hidden))
        self.w3 = nn.Parameter(torch.empty(dim, hidden, out))
        self.b3 = nn.Parameter(torch.empty(dim, out))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Linear's default init, per dimension: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        for w, b, fan_in in ((self.w1, self.b1, 1), (self.w2, self.b2, self.hidden), (self.w3, self.b3, self.hidden)):
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(w, -bound, bound)
            nn.init.uniform_(b, -bound, bound)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        h = torch.relu(s.unsqueeze(-1) * self.w1 + self.b1)  # B x d x h
        h = torch.relu(torch.einsum("bdh,dhk->bdk", h, self.w2) + self.b2)
        return torch.einsum("bdh,dhk->bdk", h, self.w3) + self.b3  # B x d x k

    def forward_looped(self, s: torch.Tensor) -> torch.Tensor:
        """The naive form: one small MLP call per dimension in a Python loop (for benchmarks only)."""
        outs = []
        for a in range(self.dim):
            h = torch.relu(s[:, a:a + 1] * self.w1[a] + self.b1[a])
            h = torch.relu(h @ self.w2[a] + self.b2[a])
            outs.append(h @ self.w3[a] + self.b3[a])
        return torch.stack(outs, dim=1)

    def dimension(self, a: int) -> nn.Sequential:
        """The a-th MLP as a stand-alone nn.Sequential (shares no storage; for tests and inspection)."""
        net = nn.Sequential(nn.Linear(1, self.hidden), nn.ReLU(), nn.Linear(self.hidden, self.hidden), nn.ReLU(),
                            nn.Linear(self.hidden, self.out))
        with torch.no_grad():
            net[0].weight.copy_(self.w1[a].unsqueeze(1))
            net[0].bias.copy_(self.b1[a])
            net[2].weight.copy_(self.w2[a].T)
            net[2].bias.copy_(self.b2[a])
            net[4].weight.copy_(self.w3[a].T)
            net[4].bias.copy_(self.b3[a])
        return net

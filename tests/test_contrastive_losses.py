"""GCL (CRT eq. 1) and FDV (ECRT eq. 4) against hand computations on a 4-sample batch."""

import math

import torch
import torch.nn.functional as F

from crt.losses import fdv_loss, gcl_loss
from crt.losses.contrastive import fdv_scores


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_gcl_value_by_hand() -> None:
    u = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0], [2.0, 2.0, 2.0], [-1.0, 0.0, 1.0]])
    y = torch.tensor([0, 1, 2, 0])
    perm = torch.tensor([1, 2, 3, 0])  # negatives: labels y[perm] = [1, 2, 0, 0]
    pos = [1.0, 3.0, 2.0, -1.0]
    neg = [-2.0, -1.0, 2.0, -1.0]
    expected = sum(softplus(-r) for r in pos) / 4 + sum(softplus(r) for r in neg) / 4
    assert math.isclose(float(gcl_loss(u, y, perm=perm)), expected, rel_tol=1e-6)


def test_gcl_exclude_true_never_uses_the_true_label() -> None:
    torch.manual_seed(0)
    y = torch.zeros(64, dtype=torch.long)
    u = torch.zeros(64, 3)
    u[:, 0] = 100.0  # a negative equal to the true label would cost softplus(100) = 100
    assert float(gcl_loss(u, y, exclude_true=True)) < 1.0
    assert float(gcl_loss(u, y, exclude_true=False)) > 50.0


def _scores() -> tuple[torch.Tensor, torch.Tensor]:
    s = torch.tensor([[2.0, 0.5, -1.0, 0.0], [0.3, 1.0, 0.2, -0.5], [-1.0, 0.0, 3.0, 1.0], [0.5, 0.5, 0.5, 0.5]])
    return s, torch.arange(4)


def test_fdv_value_by_hand() -> None:
    s, pos = _scores()
    loss, value = fdv_loss(s.clone().requires_grad_(), pos)
    rows = s.tolist()
    by_hand = [-r[i] + math.log(sum(math.exp(v) for v in r)) - math.log(4) for i, r in enumerate(rows)]
    assert math.isclose(float(value), sum(by_hand) / 4, rel_tol=1e-6)
    assert math.isclose(float(loss), sum(by_hand) / 4, rel_tol=1e-6)  # flat term is exactly 0 in value


def test_fdv_gradient_is_that_of_logsumexp_over_negatives() -> None:
    s, pos = _scores()
    a = s.clone().requires_grad_()
    fdv_loss(a, pos)[0].backward()
    b = s.clone().requires_grad_()
    mask = torch.eye(4, dtype=torch.bool)
    ref = torch.logsumexp((b - b.diagonal()[:, None]).masked_fill(mask, float("-inf")), dim=1).mean()
    ref.backward()
    assert torch.allclose(a.grad, b.grad, atol=1e-6)


def test_fdv_clamp_stops_gradient_outside_range() -> None:
    s = torch.tensor([[-30.0, 0.0], [0.0, -30.0]])  # positives far below negatives: value ~ 29.3 > 15
    a = s.clone().requires_grad_()
    loss, value = fdv_loss(a, torch.arange(2))
    loss.backward()
    assert float(value) > 29 and math.isclose(float(loss), 15.0, rel_tol=1e-6)
    assert torch.all(a.grad == 0)
    big = 300 * torch.eye(200)  # value -> -log 200 < -5: clamped from below
    b = big.clone().requires_grad_()
    loss, _ = fdv_loss(b, torch.arange(200))
    loss.backward()
    assert math.isclose(float(loss), -5.0, rel_tol=1e-6) and torch.all(b.grad == 0)


def test_bilinear_critic_normalises_and_divides_by_tau() -> None:
    u = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    emb = torch.tensor([[0.0, 2.0], [1.0, 1.0]])
    s = fdv_scores(u, emb, torch.tensor(0.5))
    expected = (F.normalize(u, dim=1) @ F.normalize(emb, dim=1).T) / 0.5
    assert torch.allclose(s, expected)
    assert math.isclose(float(s[0, 0]), 0.8 / 0.5, rel_tol=1e-6)


def test_batch_and_class_negatives_agree_when_every_class_appears_once() -> None:
    torch.manual_seed(0)
    u = torch.randn(5, 5)
    emb = torch.randn(5, 5)
    y = torch.tensor([3, 0, 4, 1, 2])
    tau = torch.tensor(0.7)
    batch = fdv_loss(fdv_scores(u, emb[y], tau), torch.arange(5))
    classes = fdv_loss(fdv_scores(u, emb, tau), y)
    assert torch.allclose(batch[0], classes[0]) and torch.allclose(batch[1], classes[1])

"""The demixing flow: exact log-determinant, invertibility, batch-norm calibration, priors."""

import math

import torch

from crt.models import ClassPrior, build_maf, calibrate_batchnorm


def _trained_like_flow(dim: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    flow = build_maf(dim, blocks=4, hidden=32)
    with torch.no_grad():  # move away from the near-identity init so the test is not trivial
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    flow.train()
    flow(torch.randn(256, dim) * 2 + 1)  # populate batch-norm statistics
    return flow.eval()


def test_maf_logdet_matches_autograd_jacobian() -> None:
    flow = _trained_like_flow(3)
    z = torch.randn(5, 3, dtype=torch.float64)
    flow = flow.double()
    _, logdet = flow(z)
    for i in range(len(z)):
        jac = torch.autograd.functional.jacobian(lambda v: flow(v[None])[0][0], z[i])
        assert torch.allclose(logdet[i], torch.linalg.slogdet(jac).logabsdet, atol=1e-8)
        assert not torch.allclose(jac, torch.eye(3, dtype=torch.float64), atol=1e-2)


def test_maf_is_autoregressive_and_inverts() -> None:
    flow = _trained_like_flow(4).double()
    z = torch.randn(64, 4, dtype=torch.float64)
    s, logdet = flow(z)
    z_back, logdet_inv = flow.inverse(s)
    assert torch.allclose(z_back, z, atol=1e-6)
    assert torch.allclose(logdet_inv, -logdet, atol=1e-6)


def test_structure_four_made_blocks_reversed_with_batchnorm() -> None:
    from nflows.transforms import BatchNorm, MaskedAffineAutoregressiveTransform, ReversePermutation

    flow = build_maf(2)
    kinds = [type(t) for t in flow._transforms]
    assert kinds.count(MaskedAffineAutoregressiveTransform) == 4
    assert kinds.count(ReversePermutation) == 3
    assert kinds.count(BatchNorm) == 4
    made = flow._transforms[0].autoregressive_net
    hidden = [m for m in made.modules() if isinstance(m, torch.nn.Linear)]
    assert [layer.out_features for layer in hidden][:2] == [128, 128] and len(hidden) == 3  # 2 hidden + output


def test_calibrated_batchnorm_standardises_training_features() -> None:
    torch.manual_seed(1)
    flow = build_maf(2, blocks=2, hidden=16)
    z = torch.randn(2000, 2) * torch.tensor([3.0, 0.5]) + 4
    calibrate_batchnorm(flow, z)
    s, _ = flow.eval()(z)
    assert torch.allclose(s.mean(0), torch.zeros(2), atol=1e-4)
    assert torch.allclose(s.std(0), torch.ones(2), atol=1e-3)


def test_priors_match_normal_log_density() -> None:
    s = torch.tensor([[0.5, -1.0], [2.0, 0.0]])
    y = torch.tensor([0, 1])
    single = ClassPrior("single", 2, 3)
    expected = -0.5 * (s**2).sum(1) - math.log(2 * math.pi)
    assert torch.allclose(single.log_prob(s, y), expected)
    multi = ClassPrior("multi", 2, 3)
    with torch.no_grad():
        multi.mean[1] = torch.tensor([1.0, 1.0])
        multi.log_std[1] = torch.log(torch.tensor([2.0, 0.5]))
    normal = torch.distributions.Normal(torch.tensor([1.0, 1.0]), torch.tensor([2.0, 0.5]))
    assert torch.allclose(multi.log_prob(s[1:], y[1:]), normal.log_prob(s[1]).sum()[None])

"""The core that trains and selects: DemixModule's objective, KeepBest, StageCache, classification_metrics
(all by hand), and contract tests over every registered loss, augmenter, encoder and generated dataset."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from crt.augment import augment
from crt.cache import StageCache
from crt.errors import ConfigError
from crt.losses import build_loss
from crt.metrics import classification_metrics
from crt.models import build_encoder
from crt.registry import AUGMENTERS, DATASETS, ENCODERS, LOSSES
from crt.stages.configs import CriticSpec
from crt.stages.modules import DemixData, DemixModule, DemixObjective
from crt.stages.training import KeepBest

LOG_2PI = math.log(2 * math.pi)


class IdentityFlow(nn.Module):
    """s = z, log|det| = 0: the objective's flow terms become hand-computable."""

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return z, torch.zeros(len(z))


def _critic(negatives: str = "classes") -> CriticSpec:
    return CriticSpec(hidden=4, embed_dim=None, normalize=True, negatives=negatives, exclude_true=False,
                      clamp=(-50.0, 50.0), impl="batched")


@pytest.mark.parametrize("prior", ["single", "multi"])
def test_demix_objective_by_hand(prior: str) -> None:
    torch.manual_seed(0)
    z, y = torch.tensor([[0.5, -1.0], [2.0, 0.0], [-0.3, 0.4]]), torch.tensor([0, 1, 2])
    rho = 0.25
    m = DemixModule(IdentityFlow(), 3, DemixData(train=(z, y), val=(z, y)),
                    DemixObjective(loss="fdv", prior=prior, rho=rho, critic=_critic()))
    if prior == "multi":
        with torch.no_grad():
            m.prior.mean.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
            m.prior.log_std.copy_(torch.tensor([[0.0, math.log(2.0)], [0.0, 0.0], [0.0, 0.0]]))
    out = m.objective(z, y)
    # log p(s | y): diagonal Gaussians, written out per sample
    mu = torch.zeros(3, 2) if prior == "single" else torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    sd = torch.ones(3, 2) if prior == "single" else torch.tensor([[1.0, 2.0], [1.0, 1.0], [1.0, 1.0]])
    logp = (-0.5 * ((z - mu[y]) / sd[y]) ** 2 - torch.log(sd[y]) - 0.5 * LOG_2PI).sum(1)
    nll = -logp.mean() / 2
    # FDV with all-class negatives, tau = 1, identity label embeddings: -S_iy + logsumexp_j S_ij - log M
    u = m.critic(z).sum(1)
    s = F.normalize(u, dim=1) @ torch.eye(3).T
    fdv = (-s[torch.arange(3), y] + torch.logsumexp(s, 1) - math.log(3)).mean()
    torch.testing.assert_close(out["nll"], nll)
    torch.testing.assert_close(out["contrastive"], fdv)
    torch.testing.assert_close(out["loss"], fdv + rho * nll * 2)


def test_demix_gcl_objective_is_softplus_contrast() -> None:
    torch.manual_seed(1)
    z, y = torch.randn(4, 2), torch.tensor([0, 1, 1, 0])
    m = DemixModule(IdentityFlow(), 2, DemixData(train=(z, y), val=(z, y)),
                    DemixObjective(loss="gcl", prior="single", rho=0.0, critic=_critic("batch")))
    torch.manual_seed(5)
    got = m.objective(z, y)["contrastive"]
    torch.manual_seed(5)
    perm = torch.randperm(4)
    u = m.critic(z).sum(1)
    want = F.softplus(-u[torch.arange(4), y]).mean() + F.softplus(u[torch.arange(4), y[perm]]).mean()
    torch.testing.assert_close(got, want)


def _trainer(epoch: int, value: float | None) -> SimpleNamespace:
    metrics = {} if value is None else {"refine/val/bal_acc": torch.tensor(value)}
    return SimpleNamespace(sanity_checking=False, callback_metrics=metrics, current_epoch=epoch)


@pytest.mark.parametrize("mode,values,best,epoch", [
    ("max", [0.5, 0.7, float("nan"), 0.6], 0.7, 1),
    ("min", [0.5, 0.7, 0.2, 0.2], 0.2, 2),  # ties keep the first
])
def test_keep_best_restores_the_best_state(mode: str, values: list[float], best: float, epoch: int) -> None:
    net = nn.Linear(1, 1, bias=False)
    keep = KeepBest("refine/val/bal_acc", mode)
    states = []
    for e, v in enumerate(values):
        with torch.no_grad():
            net.weight.fill_(float(e))  # the weight remembers the epoch
        states.append(e)
        keep.on_validation_end(_trainer(e, v), net)
    keep.on_validation_end(_trainer(len(values), None), net)  # a missing metric changes nothing
    trainer = _trainer(len(values), None)
    keep.on_fit_end(trainer, net)
    assert net.weight.item() == float(epoch)
    assert keep.summary() == {"monitor": "refine/val/bal_acc", "best": pytest.approx(best), "epoch": epoch}
    assert float(trainer.callback_metrics["selected/epoch"]) == epoch


def test_stage_cache_round_trip_disabled_and_damaged(tmp_path: Path) -> None:
    cache = StageCache(tmp_path)
    out = {"z_train": torch.arange(6.0).reshape(3, 2), "n_train": 3, "selected": {"best": 0.5}}
    folder = cache.save("pretrain", "k1", out, {"stage": "pretrain"})
    assert folder == tmp_path / "pretrain" / "k1" and (folder / "outputs.pt").exists()
    back = cache.load("pretrain", "k1")
    assert torch.equal(back["z_train"], out["z_train"]) and back["n_train"] == 3
    assert cache.meta("pretrain", "k1")["stage"] == "pretrain"
    assert cache.load("pretrain", "other") is None
    assert StageCache(tmp_path, enabled=False).load("pretrain", "k1") is None
    (folder / "outputs.pt").write_bytes(b"not a torch file")
    assert cache.load("pretrain", "k1") is None  # damaged: retrained, never trusted


def test_classification_metrics_by_hand() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    y = torch.tensor([0, 1, 2, 2, 1])  # predictions 0, 1, 1, 2, 0: hits on samples 0, 1, 3
    majority = torch.tensor([True, True, False])
    m, rows = classification_metrics(logits, y, torch.tensor([50, 40, 5]), majority, ["many", "many", "few"])
    assert m["test/top1"] == pytest.approx(3 / 5)
    assert m["test/bal_acc"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    # F1: class 0 P=1/2 R=1 -> 2/3; class 1 P=1/2 R=1/2 -> 1/2; class 2 P=1 R=1/2 -> 2/3
    assert m["test/macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 2 / 3) / 3)
    assert m["test/minority_f1"] == pytest.approx(2 / 3) and m["test/minority_acc"] == pytest.approx(0.5)
    assert m["test/nll"] == pytest.approx(float(F.cross_entropy(logits, y)))
    assert m["test/acc_many"] == pytest.approx(0.75) and m["test/acc_few"] == pytest.approx(0.5)
    assert m["test/top5"] == 1.0
    assert [r["train_count"] for r in rows] == [50, 40, 5] and rows[2]["majority"] is False


# --- contracts over every registered component ------------------------------------------------------------

@pytest.mark.parametrize("name", LOSSES.names())
def test_every_loss_builds_from_defaults_and_rejects_unknown_options(name: str) -> None:
    counts = torch.tensor([5, 3, 1])
    loss = build_loss(name, counts)
    logits, y = torch.randn(4, 3, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 0])
    out = loss(logits, y)
    assert out.shape == (4,) and torch.isfinite(out).all()
    with pytest.raises(ConfigError, match="no_such_option"):
        build_loss(name, counts, no_such_option=1)


AUG_OPTIONS = {"gan": {"steps": 5, "hidden": 8, "batch_size": 8}}


@pytest.mark.parametrize("name", AUGMENTERS.names())
def test_every_augmenter_returns_minority_samples_only(name: str) -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(30, 3, generator=g), torch.arange(30) % 3
    x_new, y_new = augment(name, x, y, [2], 4, generator=g, num_classes=3, seed=0, device=torch.device("cpu"),
                           **AUG_OPTIONS.get(name, {}))
    n = 0 if name == "none" else 4
    assert x_new.shape == (n, 3) and y_new.tolist() == [2] * n
    with pytest.raises(ConfigError, match="no_such_option"):
        augment(name, x, y, [2], 4, generator=g, no_such_option=1)


ENCODER_INPUTS = {  # name -> (options, input batch, in_dim)
    "mlp": ({}, torch.randn(2, 12), 12),
    "identity": ({}, torch.randn(2, 6), 6),
    "mlp_image": ({}, torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8), 3072),
    "resnet18_cifar": ({"width": 4}, torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8), 3072),
    "resnet32_cifar": ({"width": 4, "depth": 8}, torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8), 3072),
}


@pytest.mark.parametrize("name", ENCODERS.names())
def test_every_encoder_maps_inputs_to_feature_dim(name: str) -> None:
    assert name in ENCODER_INPUTS, f"add {name} to ENCODER_INPUTS"
    options, x, in_dim = ENCODER_INPUTS[name]
    out_dim = in_dim if name == "identity" else 5
    enc = build_encoder({"name": name, **options}, in_dim, out_dim).eval()
    with torch.no_grad():
        assert enc(x).shape == (2, out_dim)
    with pytest.raises(ConfigError, match="no_such_option"):
        build_encoder({"name": name, "no_such_option": 1}, in_dim, out_dim)


GENERATED = {"toy_henon": {"n_per_class": 10, "n_test_per_class": 4},
             "toy_extreme": {"num_classes": 6, "min_per_class": 5, "max_per_class": 9, "n_test_per_class": 2},
             "toy_ica": {"n_per_class": 10, "n_test_per_class": 4},
             "synthetic_images": {"num_classes": 3, "n_per_class": 4, "n_test_per_class": 2}}


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_generated_datasets_have_the_declared_shapes(name: str) -> None:
    raw = DATASETS.get(name)(**GENERATED[name])
    assert len(raw.x_train) == len(raw.y_train) and len(raw.x_test) == len(raw.y_test)
    assert int(raw.y_train.max()) < raw.num_classes and set(raw.y_test.tolist()) == set(range(raw.num_classes))
    assert torch.isfinite(raw.x_train.float()).all()

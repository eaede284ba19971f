"""Baselines of Table 1 (IW, FOCAL, LDAM, LDAM-DRW, VAT, GAN, SMOTE) and ECRT-MP + LDAM: losses, augmenters, runs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from crt.augment import augment
from crt.augment.feature import train_cgan
from crt.errors import ConfigError
from crt.losses import ClassLoss, build_loss
from crt.losses.imbalance import class_balanced_weights, inverse_frequency_weights, ldam_margins
from crt.models import build_encoder

try:  # tests/ as a package (tests/__init__.py) or as plain modules
    from tests.conftest import MNIST_DIR, ROOT, requires_mnist
except ModuleNotFoundError:
    from conftest import MNIST_DIR, ROOT, requires_mnist

BASELINES = ["iw", "focal", "ldam", "ldam_drw", "vat", "smote", "gan", "ecrt_mp_ldam"]


def _batch(m: int = 4, n: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, m, generator=g), torch.arange(n) % m


# --- losses ---------------------------------------------------------------------------------------------------

def test_focal_gamma_zero_is_cross_entropy() -> None:
    logits, y = _batch()
    loss = build_loss("focal", torch.tensor([50, 20, 5, 1]), gamma=0.0)
    torch.testing.assert_close(loss(logits, y), F.cross_entropy(logits, y, reduction="none"))


def test_focal_matches_formula() -> None:
    logits, y = _batch()
    p = logits.softmax(1)[torch.arange(len(y)), y]
    loss = build_loss("focal", torch.tensor([50, 20, 5, 1]))  # gamma default 1
    torch.testing.assert_close(loss(logits, y), -(1 - p) * p.log())


def test_iw_weights_inverse_frequency_mean_one() -> None:
    counts = torch.tensor([1000, 100, 10, 0])
    w = inverse_frequency_weights(counts)
    inv = torch.tensor([1e-3, 1e-2, 1e-1])
    torch.testing.assert_close(w[:3], inv / inv.mean())
    assert w[3] == 0 and math.isclose(float(w[:3].mean()), 1.0, rel_tol=1e-6)
    logits, y = _batch()
    y = y % 3
    loss = build_loss("iw", counts)
    torch.testing.assert_close(loss(logits, y), w[y] * F.cross_entropy(logits, y, reduction="none"))


def test_ldam_margins_formula() -> None:
    counts = torch.tensor([5000, 500, 50, 5])
    expected = torch.tensor([5000.0, 500, 50, 5]).pow(-0.25)
    expected = 0.5 * expected / expected.max()
    torch.testing.assert_close(ldam_margins(counts), expected)
    torch.testing.assert_close(ldam_margins(counts, max_m=0.3).max(), torch.tensor(0.3))
    assert math.isclose(float(ldam_margins(counts)[0]), 0.5 * (5 / 5000) ** 0.25, rel_tol=1e-6)


def test_ldam_subtracts_margin_from_true_logit_then_scales() -> None:
    counts = torch.tensor([5000, 500, 50, 5])
    loss = build_loss("ldam", counts)
    assert loss.cosine_head and loss.s == 30.0
    logits = torch.tensor([[0.2, 0.1, -0.3, 0.5], [0.9, -0.1, 0.0, 0.1], [-0.5, 0.4, 0.3, 0.2]])
    y = torch.tensor([3, 0, 2])
    delta = 0.5 * (counts.float() / 5).pow(-0.25)
    for i in range(len(y)):  # hand computation, one sample at a time
        z = [float(v) for v in logits[i]]
        z[int(y[i])] -= float(delta[y[i]])
        z = [30.0 * v for v in z]
        lse = max(z) + math.log(sum(math.exp(v - max(z)) for v in z))
        assert math.isclose(float(loss(logits[i:i + 1], y[i:i + 1])), lse - z[int(y[i])], rel_tol=1e-5, abs_tol=1e-5)
    # the same, batched: only the true-class logit moves, by exactly its margin, before the scale s
    shifted = logits.clone()
    shifted[torch.arange(3), y] -= delta[y]
    torch.testing.assert_close(loss(logits, y), F.cross_entropy(30 * shifted, y, reduction="none"))


def test_ldam_drw_weights_switch_on_late() -> None:
    counts = torch.tensor([4000, 400, 40, 0])
    beta = 0.9999
    loss = build_loss("ldam_drw", counts, beta=beta, drw_start=0.8)
    plain = build_loss("ldam", counts)
    logits, y = _batch()
    y = y % 3
    loss.on_epoch(7, 10)  # before 0.8 * 10
    assert not loss.drw_active
    torch.testing.assert_close(loss.class_weights, torch.ones(4))
    torch.testing.assert_close(loss(logits, y), plain(logits, y))
    loss.on_epoch(8, 10)
    assert loss.drw_active
    raw = torch.tensor([(1 - beta) / (1 - beta ** n) for n in (4000, 400, 40)], dtype=torch.float64)
    expected = (raw / raw.mean()).float()
    torch.testing.assert_close(loss.class_weights[:3], expected)
    torch.testing.assert_close(class_balanced_weights(counts, beta)[:3], expected)
    assert loss.class_weights[3] == 0
    torch.testing.assert_close(loss(logits, y), expected[y] * plain(logits, y))


@pytest.mark.parametrize("name", ["ce", "iw", "focal", "ldam", "ldam_drw", "vat"])
def test_zero_count_classes_stay_finite(name: str) -> None:
    counts = torch.tensor([300, 200, 0, 0])  # pretraining on the majority classes only
    loss = build_loss(name, counts)
    assert isinstance(loss, ClassLoss) and loss.counts.tolist() == counts.tolist()  # registered class, not a helper
    loss.on_epoch(9, 10)
    for buf in loss.buffers():
        assert torch.isfinite(buf).all()
    logits, y = _batch()
    out = loss(logits, y % 2)
    assert out.shape == (len(y),) and torch.isfinite(out).all()


def test_bad_loss_kwargs_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="gamma"):
        build_loss("focal", torch.tensor([3, 1]), gamma=-1)
    with pytest.raises(ConfigError, match="beta"):
        build_loss("ldam_drw", torch.tensor([3, 1]), beta=1.5)


def _vat_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 32), nn.Tanh(), nn.Linear(32, 3))


def test_vat_perturbation_norm_and_adversarial() -> None:
    net = _vat_model()
    x = torch.randn(64, 5, generator=torch.Generator().manual_seed(1)) * 3
    loss = build_loss("vat", torch.tensor([10, 10, 10]), eps=1.0)
    logits = net(x)
    torch.manual_seed(2)
    r_adv = loss.adversarial_direction(net, x, logits)
    torch.testing.assert_close(r_adv.norm(dim=1), torch.ones(64))

    def kl(r: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            p = logits.log_softmax(1)
            return (p.exp() * (p - net(x + r).log_softmax(1))).sum(1)

    g = torch.Generator().manual_seed(3)
    rand = [F.normalize(torch.randn(64, 5, generator=g), dim=1) for _ in range(5)]
    kl_rand = torch.stack([kl(r) for r in rand])
    assert kl(r_adv).mean() >= kl_rand.mean(1).max()  # defaults (xi = 10): better than any random direction
    # with a small finite-difference step the power iteration finds each sample's own worst direction
    torch.manual_seed(2)
    r_small = build_loss("vat", torch.tensor([10, 10, 10]), xi=1e-2).adversarial_direction(net, x, logits)
    assert (kl(r_small) >= kl_rand.max(0).values).float().mean() > 0.8


def test_vat_regularizer_trains_the_model_and_keeps_batchnorm_stats() -> None:
    net = nn.Sequential(nn.Linear(5, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
    x = torch.randn(32, 5)
    loss = build_loss("vat", torch.tensor([10, 10, 10]))
    logits = net(x)
    mean_before = net[1].running_mean.clone()
    reg = loss.regularizer(net, x, logits)
    torch.testing.assert_close(net[1].running_mean, mean_before)
    assert reg.ndim == 0 and reg > 0
    reg.backward()
    assert net[0].weight.grad is not None and net[0].weight.grad.abs().sum() > 0
    assert build_loss("vat", torch.tensor([1, 1, 1]), alpha=0.0).regularizer(net, x, logits) == 0.0



def test_vat_on_uint8_images_perturbs_the_unit_scale() -> None:
    net = _vat_model()
    x = torch.randint(0, 256, (8, 5), dtype=torch.uint8)
    loss = build_loss("vat", torch.tensor([10, 10, 10]))
    logits = net(x.float() / 255)
    r_adv = loss.adversarial_direction(net, x, logits)
    assert r_adv.dtype == torch.float32
    torch.testing.assert_close(r_adv.norm(dim=1), torch.ones(8))
    assert torch.isfinite(loss.regularizer(net, x, logits))

# --- feature-space augmenters ------------------------------------------------------------------------------------

def _blobs(sizes: list[int], dim: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(len(sizes), dim, generator=g) * 6
    y = torch.arange(len(sizes)).repeat_interleave(torch.tensor(sizes))
    return centres[y] + torch.randn(len(y), dim, generator=g), y


def _dist_to_segment(p: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Distance from p (dim,) to every segment a_i b_i (rows of a, b)."""
    ab = b - a
    t = ((p - a) * ab).sum(1) / (ab * ab).sum(1).clamp(min=1e-12)
    return (a + t.clamp(0, 1)[:, None] * ab - p).norm(dim=1)


def test_smote_points_on_segments_between_minority_neighbours() -> None:
    x, y = _blobs([200, 12, 3, 150])
    minority = [1, 2]
    x_new, y_new = augment("smote", x, y, minority, 25, seed=0)
    assert x_new.shape == (50, 2) and x_new.dtype == x.dtype
    assert torch.equal(torch.bincount(y_new, minlength=4), torch.tensor([0, 25, 25, 0]))  # only minority grows
    for c, k in ((1, 5), (2, 2)):  # class 2 has 3 samples: k_neighbors adapts to 2
        xc = x[y == c]
        knn = torch.cdist(xc, xc).argsort(1)[:, 1:k + 1]
        a, b = xc.repeat_interleave(k, 0), xc[knn.reshape(-1)]
        for p in x_new[y_new == c]:
            assert _dist_to_segment(p, a, b).min() < 1e-5
    again, _ = augment("smote", x, y, minority, 25, seed=0)
    torch.testing.assert_close(again, x_new)  # random_state from the seed


def test_smote_edge_cases() -> None:
    x, y = _blobs([50, 1, 0, 40])
    x_new, y_new = augment("smote", x, y, [1, 2], 4, seed=0)  # one sample: copies; none: skipped
    assert y_new.tolist() == [1] * 4 and torch.equal(x_new, x[y == 1].repeat(4, 1))
    with pytest.raises(ConfigError, match="k_neighbors"):
        augment("smote", x, y, [1], 4, k_neighbors=0)


def test_gan_generates_class_conditional_features_of_encoder_width() -> None:
    d = 8
    encoder = build_encoder({"name": "mlp", "hidden": [16]}, 5, d)
    with torch.no_grad():
        _ = encoder(torch.randn(2, 5))  # the encoder's output width is the feature width d
    x, y = _blobs([300, 300, 60], dim=d, seed=1)
    gan = train_cgan(x, y, 3, noise_dim=32, steps=500, seed=0)  # 500 Adam steps suffice for 3 blobs
    assert gan.generator[0].in_features == 32 + 3 and gan.generator[-1].out_features == d
    centres = torch.stack([x[y == c].mean(0) for c in range(3)])
    for c in range(3):
        fake = gan.sample(torch.full((200,), c))
        assert fake.shape == (200, d)
        assert torch.cdist(fake.mean(0, keepdim=True), centres).argmin() == c  # conditional on the label
    x_new, y_new = augment("gan", x, y, [2], 40, num_classes=3, seed=0, device=torch.device("cpu"), steps=20)
    assert x_new.shape == (40, d) and y_new.tolist() == [2] * 40


# --- configs and end-to-end runs ----------------------------------------------------------------------------------

def test_ecrt_mp_ldam_is_ecrt_mp_with_ldam_refine(make_cfg) -> None:
    named = make_cfg("method=ecrt_mp_ldam").method
    composed = make_cfg("method=ecrt_mp", "method.refine_loss=ldam").method
    assert OmegaConf.to_container(named, resolve=True) == {**OmegaConf.to_container(composed, resolve=True),
                                                           "name": "ecrt_mp_ldam"}


TOY = ["data=toy_henon", "debug=tiny", "logger=none", "data.n_per_class=300", "data.n_test_per_class=50"]


def _method(name: str) -> list[str]:
    """method=<name>, with a short GAN (20 steps) to keep the runs fast."""
    return [f"method={name}"] + (["method.augment_kwargs.steps=20"] if name == "gan" else [])


def _run(make_cfg, tmp_path: Path, *overrides: str) -> dict:
    from crt.pipeline import run

    res = run(make_cfg(*overrides), run_dir=tmp_path / "run", progress=False)
    m = res["metrics"]
    for key in ("test/top1", "test/nll", "test/macro_f1", "test/minority_f1"):
        assert math.isfinite(m[key]), key
    return res


@pytest.mark.slow
@pytest.mark.parametrize("name", BASELINES)
def test_baseline_runs_on_toy(name: str, make_cfg, tmp_path: Path) -> None:
    res = _run(make_cfg, tmp_path, *TOY, *_method(name))
    assert res["method"] == name
    assert list(res["stages"]) == list(make_cfg(f"method={name}").method.stages)


@pytest.mark.slow
def test_ecrt_mp_composes_with_ldam_refine(make_cfg, tmp_path: Path) -> None:
    res = _run(make_cfg, tmp_path, *TOY, "method=ecrt_mp", "method.refine_loss=ldam")
    assert res["config"]["method"]["refine_loss"] == "ldam"


@pytest.mark.slow
@requires_mnist
@pytest.mark.parametrize("name", BASELINES)
def test_baseline_runs_on_mnist(name: str, make_cfg, tmp_path: Path) -> None:
    res = _run(make_cfg, tmp_path, "data=mnist", f"paths.data_dir={MNIST_DIR}", "debug=tiny", "logger=none",
               "data.n_max=600", *_method(name))
    assert res["dataset"] == "mnist" and res["method"] == name


def test_methods_table_mean_and_sample_std_per_method() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("methods_table", ROOT / "scripts" / "methods_table.py")
    mt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mt)
    metrics = {"test/top1": 0.5, "test/nll": 1.0, "test/macro_f1": 0.4, "test/minority_f1": 0.2, "test/minority_acc": 0.1}
    runs = {"ldam": [{"seed": 1, "metrics": {**metrics, "test/minority_acc": 0.3}}, {"seed": 0, "metrics": metrics}],
            "erm": [{"seed": 0, "metrics": {"test/top1": 0.7}}]}
    lines = mt.markdown_table(runs, ["erm", "ldam"]).splitlines()
    assert lines[0] == ("| method | seeds | top-1 (%) | NLL | macro-F1 (%) | minority F1 (%) | minority recall (%) |")
    assert lines[2] == "| ERM | 0 | 70.00 ± 0.00 | – | – | – | – |"  # missing metrics are dashes, never 0
    # minority recall 10 % and 30 %: mean 20, sample std sqrt(((10-20)^2 + (30-20)^2) / 1) = 14.14
    assert lines[3] == "| LDAM | 0,1 | 50.00 ± 0.00 | 1.000 ± 0.000 | 40.00 ± 0.00 | 20.00 ± 0.00 | 20.00 ± 14.14 |"


@pytest.mark.parametrize("name,stage", [("iw", "pretrain"), ("focal", "pretrain"), ("ldam", "pretrain"),
                                        ("ldam_drw", "pretrain"), ("vat", "pretrain"), ("ecrt_mp_ldam", "refine")])
def test_baseline_config_changes_the_loss_its_stage_trains(name: str, stage: str, make_cfg) -> None:
    """The method's loss (with its typed options) is what the stage builds, and it is not cross-entropy."""
    from types import SimpleNamespace

    from crt.config import resolve
    from crt.stages.common import build_stage_loss

    counts = torch.tensor([40, 10, 2])
    loss = build_stage_loss(SimpleNamespace(multilabel=False), resolve(make_cfg(f"method={name}")).stages[stage].loss,
                            counts)
    ce = build_loss("ce", counts)
    logits, y = _batch(m=3, n=12)
    logits = logits.clamp(-1, 1)  # cosine-scale logits, valid for every head
    if name == "vat":  # same per-sample CE, plus the adversarial term on the model
        net = _vat_model()
        x = torch.randn(12, 5, generator=torch.Generator().manual_seed(2))
        assert float(loss.regularizer(net, x, net(x))) > 0.0
        return
    assert not torch.allclose(loss(logits, y), ce(logits, y))
    from crt.registry import LOSSES

    assert type(loss) is LOSSES["ldam" if name == "ecrt_mp_ldam" else name]


def test_ldam_drw_batch_loss_is_the_weighted_mean_of_the_reference() -> None:
    """In the re-weighted phase a training step's loss is Σ w_y ℓ / Σ w_y (F.cross_entropy(weight=w)'s mean, as
    LDAM-DRW's code reduces it), not Σ w_y ℓ / B; before it, the plain mean."""
    import warnings

    from crt.stages.modules import ClassifierData, ClassifierModule, Optim

    counts = torch.tensor([4000, 400, 40])
    loss = build_loss("ldam_drw", counts)
    net = nn.Identity()
    x = torch.tensor([[0.9, 0.1, -0.2], [0.3, 0.5, 0.1], [-0.4, 0.2, 0.8], [0.6, -0.1, 0.2]])
    y = torch.tensor([0, 0, 1, 2])
    data = ClassifierData(train=(x, y, torch.ones(4)), val=(x, y))
    module = ClassifierModule(net, loss, 3, data, Optim(batch_size=4), prefix="pretrain")
    shifted = x.clone()
    shifted[torch.arange(4), y] -= ldam_margins(counts)[y]
    for epoch, drw in ((0, False), (9, True)):
        loss.on_epoch(epoch, 10)
        assert loss.drw_active is drw
        w = loss.class_weights.clone()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # self.log outside a Trainer
            got = module.training_step((x, y, torch.ones(4)), 0)
        torch.testing.assert_close(got, F.cross_entropy(30 * shifted, y, weight=w))
        if drw:  # the weights differ across the batch, so dividing by B would give another number
            assert not torch.allclose(got, (w[y] * F.cross_entropy(30 * shifted, y, reduction="none")).mean())


def test_cosine_head_starts_with_unit_norm_class_vectors() -> None:
    from crt.models.mlp import NormedLinear

    head = NormedLinear(64, 100)
    torch.testing.assert_close(head.weight.norm(dim=0), torch.ones(100))
    assert head.weight.abs().max() < 1  # still a random direction per class, not a constant
    assert torch.linalg.matrix_rank(head.weight) == 64


@pytest.mark.parametrize(("method", "runs_all"), [("ldam_drw", True), ("erm", False)])
def test_a_scheduled_loss_trains_through_its_schedule(make_cfg, tmp_path: Path, method: str, runs_all: bool) -> None:
    """Early stopping must not end LDAM-DRW before its re-weighted phase (epoch 0.8 * 30 here): with patience 1
    ERM stops early on this split, LDAM-DRW runs all 30 epochs (and still keeps its best held-out epoch)."""
    from crt.pipeline import run

    res = run(make_cfg(f"method={method}", "debug=tiny", "stage.pretrain.epochs=30", "stage.pretrain.patience=1",
                       "method.stages=[pretrain]", "method.pretrain_classes=all"), run_dir=tmp_path / "run")
    sel = res["stages"]["pretrain"]["selected"]
    assert (sel["epochs_run"] == 30) is runs_all, sel
    assert 0 <= sel["epoch"] < 30


def test_cosine_head_computes_in_float32_under_autocast() -> None:
    from crt.models.mlp import NormedLinear

    torch.manual_seed(0)
    head, x = NormedLinear(16, 10), torch.randn(32, 16)
    ref = head(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(x.bfloat16())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, head(x.bfloat16().float()))  # only the input's own rounding remains
    assert (out - ref).abs().max() < 0.02

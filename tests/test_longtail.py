"""Long-tail baselines (issue 14): logit adjustment, balanced softmax, decoupled cRT / LWS / tau-norm, post-hoc
adjustment, ResNet-32, the LDAM-DRW learning-rate schedule, and ECRT composed with them."""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from crt.data import build_split
from crt.errors import ConfigError
from crt.losses import build_loss
from crt.losses.adjusted import log_prior, posthoc_adjust
from crt.models import build_encoder
from crt.models.mlp import build_predictor
from crt.pipeline import run
from crt.config import resolve
from crt.stages import RUNNERS, Context
from crt.stages.decoupled import DecoupledOptions, ScaledHead, TauNormHead, tau_normalised_weight
from crt.stages.schedule import LRSchedule

TINY = ["debug=tiny", "data.n_per_class=200", "data.n_test_per_class=50", "data.input_dim=8", "data.ratio=0.1"]
LOGITS = torch.tensor([[2.0, 1.0, 0.5], [0.1, 0.3, -1.0], [1.0, 1.0, 1.0], [-2.0, 0.0, 3.0]])
Y = torch.tensor([0, 1, 2, 1])


@dataclass
class _Ctx:
    """A composed config with its split (the tests read cfg and split; the stages read typed configs)."""

    cfg: Any
    split: Any
    run_dir: str


def _run(ctx: _Ctx, stage: str, prev: dict) -> dict:
    c = Context.from_cfg(ctx.cfg, ctx.split, ctx.run_dir, progress=False)
    return RUNNERS[stage](c, resolve(ctx.cfg).stages[stage], prev)


def _ce_by_hand(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.log(torch.exp(row).sum()) - row[t] for row, t in zip(logits, y)])


# --- losses -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("tau", [1.0, 0.5, 0.0])
def test_logit_adjusted_loss_is_cross_entropy_on_adjusted_logits(tau: float) -> None:
    counts = torch.tensor([60, 30, 10])
    prior = torch.tensor([0.6, 0.3, 0.1])
    expected = _ce_by_hand(LOGITS + tau * prior.log(), Y)
    got = build_loss("logit_adjust", counts, tau=tau)(LOGITS, Y)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(log_prior(counts), prior.log())
    if tau == 0.0:
        torch.testing.assert_close(got, F.cross_entropy(LOGITS, Y, reduction="none"))


def test_balanced_softmax_on_balanced_counts_is_cross_entropy() -> None:
    got = build_loss("balanced_softmax", torch.tensor([7, 7, 7]))(LOGITS, Y)
    torch.testing.assert_close(got, F.cross_entropy(LOGITS, Y, reduction="none"))


def test_balanced_softmax_adds_log_counts_and_equals_logit_adjustment_at_tau_one() -> None:
    counts = torch.tensor([100, 10, 1])
    bs = build_loss("balanced_softmax", counts)(LOGITS, Y)
    # softmax with weights n_j: -log(n_y e^{z_y} / sum_j n_j e^{z_j})
    w = counts.float()
    by_hand = torch.stack([-torch.log(w[t] * row[t].exp() / (w * row.exp()).sum()) for row, t in zip(LOGITS, Y)])
    torch.testing.assert_close(bs, by_hand)
    torch.testing.assert_close(bs, build_loss("logit_adjust", counts, tau=1.0)(LOGITS, Y))


def test_posthoc_adjustment_changes_predictions_as_by_hand() -> None:
    logits = torch.tensor([[2.0, 1.5], [3.0, 0.0]])
    counts = torch.tensor([90, 10])
    # log pi = (log 0.9, log 0.1) = (-0.1054, -2.3026): row 1 -> (2.1054, 3.8026), class 1 now wins;
    # row 2 -> (3.1054, 2.3026), class 0 stays
    adjusted = posthoc_adjust(logits, counts, tau=1.0)
    torch.testing.assert_close(adjusted, torch.tensor([[2.0 - math.log(0.9), 1.5 - math.log(0.1)],
                                                       [3.0 - math.log(0.9), 0.0 - math.log(0.1)]]))
    assert logits.argmax(1).tolist() == [0, 0] and adjusted.argmax(1).tolist() == [1, 0]
    assert posthoc_adjust(logits, counts, tau=0.0).argmax(1).tolist() == [0, 0]


def test_adjusted_losses_check_options_and_absent_classes() -> None:
    with pytest.raises(ConfigError, match="max_m"):
        build_loss("logit_adjust", torch.tensor([5, 1]), max_m=0.5)
    with pytest.raises(ConfigError, match="tau"):
        build_loss("balanced_softmax", torch.tensor([5, 1]), tau=1.0)
    with pytest.raises(ConfigError, match="tau >= 0"):
        build_loss("logit_adjust", torch.tensor([5, 1]), tau=-1.0)
    loss = build_loss("logit_adjust", torch.tensor([50, 0, 5]))  # class 1 absent: counted as one sample
    out = loss(LOGITS, torch.tensor([0, 2, 2, 0]))
    assert torch.isfinite(out).all()
    # the offset itself is finite (log 0 = -inf would pass the check above: class 1 is never a target there)
    torch.testing.assert_close(loss.offset, torch.log(torch.tensor([50.0, 1.0, 5.0]) / 56.0))
    assert torch.isfinite(log_prior(torch.tensor([50, 0, 5]))).all()


# --- ResNet-32 and the schedule -----------------------------------------------------------------------------

def test_resnet32_has_046m_parameters() -> None:
    enc = build_encoder({"name": "resnet32_cifar"}, 3 * 32 * 32, 64)
    head = build_predictor(64, 10, [])
    n_enc = sum(p.numel() for p in enc.parameters())
    assert n_enc == 463_504  # 31 convolutions + batch norms; option-A shortcuts have no parameters
    assert n_enc + sum(p.numel() for p in head.parameters()) == 464_154  # "0.46M" with the CIFAR-10 classifier
    assert len([m for m in enc.modules() if isinstance(m, nn.Conv2d)]) == 31  # + the classifier = 32 layers
    out = enc(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
    assert out.shape == (2, 64)
    with pytest.raises(ConfigError, match="6n"):
        build_encoder({"name": "resnet32_cifar", "depth": 30}, 3072, 64)


def test_ldam_schedule_factors_by_hand() -> None:
    s = LRSchedule.parse({"warmup_epochs": 5, "milestones": [160, 180], "gamma": 0.01})
    want = {0: 0.2, 1: 0.4, 4: 1.0, 5: 1.0, 159: 1.0, 160: 0.01, 179: 0.01, 180: 1e-4, 199: 1e-4}
    for e, f in want.items():
        assert math.isclose(s.factor(e), f, rel_tol=1e-12), e
    assert LRSchedule.parse(None) is None
    with pytest.raises(ConfigError, match="unknown keys"):
        LRSchedule.parse({"warmup": 5})
    with pytest.raises(ConfigError, match="out of range"):
        LRSchedule.parse({"milestones": [180, 160]})


def test_schedule_drives_the_optimizer_each_epoch(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg("method=erm", *TINY, "stage.pretrain.epochs=3", "stage.pretrain.optimizer=sgd",
                   "stage.pretrain.lr=0.1", "+stage.pretrain.nesterov=false",
                   "+stage.pretrain.lr_schedule={warmup_epochs: 2, milestones: [2], gamma: 0.1}")
    seen: list[float] = []
    import lightning.pytorch as pl

    class Spy(pl.Callback):
        def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
            seen.append(trainer.optimizers[0].param_groups[0]["lr"])
            assert trainer.optimizers[0].param_groups[0]["nesterov"] is False

    from crt.stages import training

    orig = training.make_trainer

    def spying(*a, **k):  # noqa: ANN002, ANN003
        trainer, keep = orig(*a, **k)
        trainer.callbacks.append(Spy())
        return trainer, keep

    training.make_trainer = spying  # crt.stages.common.fit imports it from here when a stage trains
    try:
        sp = build_split(cfg.data, str(cfg.paths.data_dir))
        _run(_Ctx(cfg, sp, str(tmp_path)), "pretrain", {})
    finally:
        training.make_trainer = orig
    # warm-up 0.1 * 1/2, 0.1 * 2/2, then epoch 2 >= milestone 2: 0.1 * 0.1
    assert seen == pytest.approx([0.05, 0.1, 0.01])


# --- decoupled classifiers --------------------------------------------------------------------------------------

def _pretrained(make_cfg, tmp_path: Path, method: str, *extra: str) -> tuple[_Ctx, dict]:
    cfg = make_cfg(f"method={method}", *TINY, *extra)
    sp = build_split(cfg.data, str(cfg.paths.data_dir))
    ctx = _Ctx(cfg, sp, str(tmp_path))
    torch.manual_seed(0)
    return ctx, {"pretrain": _run(ctx, "pretrain", {})}


def test_crt_keeps_encoder_bit_identical_and_retrains_classifier(make_cfg, tmp_path: Path) -> None:
    ctx, prev = _pretrained(make_cfg, tmp_path, "decoupled_crt", "stage.refine.epochs=3")
    before = copy.deepcopy(prev["pretrain"])
    out = _run(ctx, "refine", prev)
    for k, v in before["encoder"].items():
        assert torch.equal(prev["pretrain"]["encoder"][k], v), k
    for k in ("z_train", "z_val", "z_test"):
        assert torch.equal(prev["pretrain"][k], before[k])
    head, pred = before["head"], out["predictor"]
    assert head.keys() == pred.keys()  # the classifier has the stage-1 head's architecture ...
    assert all(not torch.equal(head[k], pred[k]) for k in head)  # ... and new weights
    net = build_predictor(before["z_train"].shape[1], ctx.split.num_classes, list(ctx.cfg.model.head.hidden))
    net.load_state_dict(pred)
    torch.testing.assert_close(out["logits_test"], net(before["z_test"]).detach())
    assert out["selected"]["kind"] == "crt" and out["n_train"] == len(ctx.split.y_train)


def test_lws_learns_only_per_class_scales(make_cfg, tmp_path: Path) -> None:
    ctx, prev = _pretrained(make_cfg, tmp_path, "decoupled_lws", "stage.refine.epochs=3", "stage.refine.lr=0.05")
    out = _run(ctx, "refine", prev)
    head = prev["pretrain"]["head"]
    pred = out["predictor"]
    assert set(pred) == {f"head.{k}" for k in head} | {"scales"}
    for k, v in head.items():
        assert torch.equal(pred[f"head.{k}"], v), k
    scales = out["scales"]
    assert scales.shape == (ctx.split.num_classes,) and not torch.equal(scales, torch.ones_like(scales))
    base = build_predictor(prev["pretrain"]["z_test"].shape[1], ctx.split.num_classes, list(ctx.cfg.model.head.hidden))
    base.load_state_dict(head)
    torch.testing.assert_close(out["logits_test"], (base(prev["pretrain"]["z_test"]) * scales).detach())
    wrapped = ScaledHead(base, ctx.split.num_classes)
    assert [n for n, p in wrapped.named_parameters() if p.requires_grad] == ["scales"]


def test_tau_norm_by_hand() -> None:
    head = nn.Sequential(nn.Flatten(), nn.Linear(2, 2))
    with torch.no_grad():
        head[1].weight.copy_(torch.tensor([[3.0, 4.0], [1.0, 0.0]]))  # row norms 5 and 1
        head[1].bias.copy_(torch.tensor([10.0, -10.0]))  # dropped by tau-normalisation
    z = torch.tensor([[1.0, 1.0]])
    torch.testing.assert_close(TauNormHead(head, 1.0)(z), torch.tensor([[1.4, 1.0]]))  # (0.6, 0.8) . z, (1, 0) . z
    torch.testing.assert_close(TauNormHead(head, 0.0)(z), torch.tensor([[7.0, 1.0]]))
    torch.testing.assert_close(TauNormHead(head, 0.5)(z), torch.tensor([[7.0 / math.sqrt(5.0), 1.0]]))
    torch.testing.assert_close(tau_normalised_weight(torch.tensor([[0.0, 2.0]]), 2.0), torch.tensor([[0.0, 0.5]]))


def test_tau_norm_and_posthoc_runs_pick_and_apply_tau(make_cfg, tmp_path: Path) -> None:
    ctx, prev = _pretrained(make_cfg, tmp_path, "decoupled_tau_norm", "stage.pretrain.epochs=8")
    out = _run(ctx, "refine", prev)
    tau = out["tau"]
    assert tau in DecoupledOptions.parse({"kind": "tau_norm"}).tau_grid and out["n_train"] == 0
    base = build_predictor(prev["pretrain"]["z_test"].shape[1], ctx.split.num_classes, list(ctx.cfg.model.head.hidden))
    base.load_state_dict(prev["pretrain"]["head"])
    torch.testing.assert_close(out["logits_test"], TauNormHead(base, tau)(prev["pretrain"]["z_test"]).detach())
    # tau is the held-out argmax (smallest on ties), computed here by hand, and the test labels play no part
    def bal_acc(logits: torch.Tensor, y: torch.Tensor) -> float:
        pred = logits.argmax(1)
        return float(torch.stack([(pred[y == c] == c).float().mean() for c in y.unique()]).mean())

    grid = DecoupledOptions.parse({"kind": "tau_norm"}).tau_grid
    accs = [bal_acc(TauNormHead(base, t)(prev["pretrain"]["z_val"]).detach(), ctx.split.y_val) for t in grid]
    assert tau == grid[max(range(len(grid)), key=lambda i: (accs[i] - 1e-12 * i, -i))]
    assert max(accs) - min(accs) > 0  # the grid matters on this split
    scrambled = _Ctx(ctx.cfg, dataclasses.replace(ctx.split, y_test=ctx.split.y_test.flip(0)), str(tmp_path))
    assert _run(scrambled, "refine", prev)["tau"] == tau
    ctx2 = _Ctx(make_cfg("method=logit_adjust_posthoc", *TINY), ctx.split, str(tmp_path))
    post = _run(ctx2, "refine", prev)
    counts = ctx.split.train_counts  # pretrain_classes=all: the prior of stage 1's training set
    assert post["tau"] == 1.0
    torch.testing.assert_close(post["prior_counts"], counts)  # the fitted counts, not the protocol's (+ held-out)
    assert not torch.equal(counts, ctx.split.counts)
    torch.testing.assert_close(post["logits_test"], prev["pretrain"]["logits_test"] - log_prior(counts))


def test_decoupled_options_are_checked(make_cfg) -> None:
    with pytest.raises(ConfigError, match="unknown keys"):
        DecoupledOptions.parse({"kind": "crt", "epochs": 3})
    with pytest.raises(ConfigError, match="kind"):
        DecoupledOptions.parse({"kind": "ncm"})
    with pytest.raises(ConfigError, match="not an option"):
        DecoupledOptions.parse({"kind": "lws", "tau": 1.0})
    assert DecoupledOptions.parse({"kind": "posthoc"}).tau == 1.0  # Menon et al.'s default
    assert DecoupledOptions.parse({"kind": "posthoc", "tau": None}).tau is None  # null: chosen on held-out data
    from crt.config import validate

    with pytest.raises(ConfigError, match="method.decoupled"):
        validate(make_cfg("method=decoupled_crt", "method.decoupled.kind=knn"))
    with pytest.raises(ConfigError, match="lr_schedule"):
        validate(make_cfg("+stage.pretrain.lr_schedule={warmup_epochs: -1}"))


# --- ECRT composed ----------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("overrides", [
    ["method=ecrt_mp", "method.refine_loss=logit_adjust"],
    ["method=ecrt_mp", "method.refine_loss=balanced_softmax", "method.pretrain_loss=balanced_softmax",
     "method.pretrain_classes=all"],
    ["method=ecrt_mp_la", "method.pretrain_loss=logit_adjust", "method.pretrain_classes=all"],
])
def test_ecrt_composes_with_adjusted_losses(make_cfg, tmp_path: Path, overrides: list[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The composed run trains all four stages, and the adjusted losses get the real training counts (after the
    held-out split) in stage 1 and in ECRT's refine stage."""
    import crt.stages as stages

    built: list[tuple[str, torch.Tensor]] = []
    real = stages.build_stage_loss

    def record(split, loss, counts):
        built.append((loss.name, counts.clone()))
        return real(split, loss, counts)

    monkeypatch.setattr(stages, "build_stage_loss", record)
    cfg = make_cfg(*overrides, *TINY)
    res = run(cfg, run_dir=tmp_path / "run")
    assert list(res["stages"]) == ["pretrain", "demix", "augment", "refine"]
    assert math.isfinite(res["metrics"]["test/nll"]) and res["metrics"]["test/top1"] > 1 / 7  # above chance
    sp = build_split(cfg.data, str(cfg.paths.data_dir))
    names = [n for n, _ in built]
    assert names == [cfg.method.pretrain_loss, cfg.method.refine_loss]
    stage1 = sp.train_counts if cfg.method.pretrain_classes == "all" else sp.train_counts * sp.majority
    torch.testing.assert_close(built[0][1], stage1)
    torch.testing.assert_close(built[1][1], sp.train_counts)  # refine: every class's real training samples
    assert not torch.equal(sp.train_counts, sp.counts)  # the held-out part is not counted


def test_cache_keys_share_stage_one_and_separate_every_variant(make_cfg) -> None:
    """ERM, post-hoc and the decoupled variants share the stage-1 entry; no two variants share a refine entry
    (a refine key that ignored refine_loss once made ecrt_mp_la/_bs silently reuse ecrt_mp's predictor)."""
    from crt.pipeline import stage_keys as keys_of

    def stage_keys(cfg):  # noqa: ANN001, ANN202 - one data fingerprint and code version for all
        return keys_of(resolve(cfg), "data", "code")

    keys = {m: stage_keys(make_cfg(f"method={m}", "method.pretrain_classes=all"))
            for m in ("erm", "logit_adjust_posthoc", "decoupled_crt", "decoupled_lws", "decoupled_tau_norm",
                      "ecrt_mp", "ecrt_mp_la", "ecrt_mp_bs")}
    assert len({k["pretrain"] for k in keys.values()}) == 1
    refine = [k["refine"] for m, k in keys.items() if m != "erm"]
    assert len(set(refine)) == len(refine)
    assert keys["ecrt_mp"]["demix"] == keys["ecrt_mp_la"]["demix"] == keys["ecrt_mp_bs"]["demix"]
    on_la = stage_keys(make_cfg("method=ecrt_mp", "method.pretrain_classes=all", "method.pretrain_loss=logit_adjust"))
    assert on_la["pretrain"] == stage_keys(make_cfg("method=logit_adjust"))["pretrain"] != keys["ecrt_mp"]["pretrain"]


def test_posthoc_refuses_classes_stage_one_never_saw(make_cfg, tmp_path: Path) -> None:
    ctx, prev = _pretrained(make_cfg, tmp_path, "logit_adjust_posthoc", "method.pretrain_classes=majority")
    with pytest.raises(ConfigError, match="pretrain_classes=all"):
        _run(ctx, "refine", prev)

"""The four stages of CRT/ECRT as functions from explicit inputs to explicit outputs.

Each `run_<stage>(ctx, config, prev)` takes the run context, the stage's typed config (crt.stages.configs:
the only configuration it reads, and what its cache key hashes) and the outputs of the earlier stages (a
dict of dicts keyed by stage name), and returns a dict of tensors and state dicts, which the pipeline
caches. Each stage registers itself in `crt.registry.STAGES` with its config class and resolver.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from crt.augment import augment
from crt.data import Split
from crt.models import build_encoder, build_maf, calibrate_batchnorm
from crt.models.mlp import build_predictor
from crt.registry import SAMPLERS, STAGES, WEIGHTINGS, as_dict
from crt.stages import optim as _optim  # noqa: F401  (register the optimizers)
from crt.stages import sampling  # noqa: F401  (register samplers and weightings)
from crt.stages.common import (
    Context,
    Outputs,
    apply_batched,
    build_stage_loss,
    class_mask,
    fit,
    loss_name,
    monitor,
    optim,
)
from crt.stages.configs import RESOLVERS, AugmentConfig, DemixConfig, PretrainConfig, RefineConfig
from crt.usercode import is_import_path


def single_labels(split: Split, y: torch.Tensor) -> torch.Tensor:
    """One class per sample for the contrastive demix objective: the identity for single-label data; for
    multi-label data the most frequent of the sample's majority labels (else of all its labels)."""
    if not split.multilabel:
        return y
    score = y.float() * (1.0 + split.counts.float() / (split.counts.max().float() + 1))
    score = score + y.float() * split.majority.float() * 2.0  # majority labels first
    return score.argmax(1)


class FeatureClassifier(nn.Module):
    def __init__(self, encoder: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def run_pretrain(ctx: Context, cfg: PretrainConfig, prev: dict[str, Outputs]) -> Outputs:
    """Stage 1: encoder + feature predictor by the method's classification loss (majority classes by default)."""
    from crt.stages.modules import ClassifierData, ClassifierModule  # Lightning: imported when a stage trains

    sp, tr = ctx.split, cfg.train
    keep_tr = class_mask(sp, sp.y_train, cfg.classes)
    keep_va = class_mask(sp, sp.y_val, cfg.classes)
    x, y = sp.x_train[keep_tr], sp.y_train[keep_tr]
    counts = sp.class_counts(y)
    loss = build_stage_loss(sp, cfg.loss, counts)
    key = "_target_" if is_import_path(cfg.encoder.name) else "name"  # user code (crt/usercode.py) or registered
    encoder = build_encoder({key: cfg.encoder.name, **as_dict(cfg.encoder.options)}, sp.input_dim, cfg.feature_dim)
    head = build_predictor(cfg.feature_dim, sp.num_classes, list(cfg.head_hidden), cosine=loss.cosine_head)
    net = FeatureClassifier(encoder, head)
    watch = monitor("pretrain", cfg.selection)
    transform = None
    if cfg.transform:
        from crt.data.transforms import build_transform

        transform = build_transform(cfg.transform)
    data = ClassifierData(train=(x, y, torch.ones(len(y))), val=(sp.x_val[keep_va], sp.y_val[keep_va]),
                          sampler_weights=SAMPLERS.get(tr.sampler)(sp, y), transform=transform,
                          multilabel=sp.multilabel)
    module = ClassifierModule(net, loss, sp.num_classes, data, optim(tr, cfg.numerics), prefix="pretrain",
                              seed=ctx.seed, compile=cfg.numerics.compile)
    selected = fit(ctx, module, "pretrain", tr, cfg.numerics, watch)
    enc, hd = net.encoder.eval(), net.head.eval()
    z = {k: apply_batched(enc, getattr(sp, f"x_{k}"), ctx.device) for k in ("train", "val", "test")}
    logits = {k: apply_batched(hd, z[k], ctx.device) * loss.logit_scale for k in ("val", "test")}
    return {"encoder": enc.state_dict(), "head": hd.state_dict(), "selected": selected, "n_train": len(y),
            **{f"z_{k}": v for k, v in z.items()}, **{f"logits_{k}": v for k, v in logits.items()}}


def run_demix(ctx: Context, cfg: DemixConfig, prev: dict[str, Outputs]) -> Outputs:
    """Stage 2: the flow z -> s trained by GCL or FDV plus rho times the flow likelihood (majority by default)."""
    from crt.stages.modules import DemixData, DemixModule, DemixObjective

    sp, tr, pre = ctx.split, cfg.train, prev["pretrain"]
    d = cfg.feature_dim
    keep_tr = class_mask(sp, sp.y_train, tr.classes)
    keep_va = class_mask(sp, sp.y_val, tr.classes)
    f = tr.flow
    flow = build_maf(d, f.blocks, f.hidden, f.made_layers, f.batch_norm)
    z_tr, y_tr = pre["z_train"][keep_tr], single_labels(sp, sp.y_train[keep_tr])
    data = DemixData(train=(z_tr, y_tr), val=(pre["z_val"][keep_va], single_labels(sp, sp.y_val[keep_va])),
                     probe=(pre["z_val"], sp.sources["val"]) if sp.sources is not None else None)
    module = DemixModule(flow, sp.num_classes, data,
                         DemixObjective(loss=cfg.loss, prior=cfg.prior, rho=cfg.rho, critic=tr.critic),
                         optim(tr, cfg.numerics), seed=ctx.seed, compile=cfg.numerics.compile)
    selected = fit(ctx, module, "demix", tr, cfg.numerics, ("demix/val/loss", "min"))
    module.flow.to(ctx.device)
    calibrate_batchnorm(module.flow, z_tr.to(ctx.device))
    s = {k: apply_batched(lambda z: module.flow(z)[0], pre[f"z_{k}"], ctx.device) for k in ("train", "val", "test")}
    return {"flow": module.flow.state_dict(), "critic": module.critic.state_dict(),
            "prior": module.prior.state_dict(), "selected": selected, "n_train": len(y_tr),
            "mcc_history": module.mcc_history, **{f"s_{k}": v for k, v in s.items()}}


def _space(space: str, prev: dict[str, Outputs]) -> tuple[str, Outputs]:
    return ("s", prev["demix"]) if space == "source" else ("z", prev["pretrain"])


def run_augment(ctx: Context, cfg: AugmentConfig, prev: dict[str, Outputs]) -> Outputs:
    """Stage 3: new minority samples in source space (or feature space for the ablation and SMOTE/GAN)."""
    sp = ctx.split
    key, src = _space(cfg.space, prev)
    x, y = src[f"{key}_train"], sp.y_train
    if sp.multilabel:  # one row per (sample, minority label) pair; augmented samples carry that one label
        pairs = torch.nonzero(y.bool() & ~sp.majority, as_tuple=False)
        x, y = x[pairs[:, 0]], pairs[:, 1]
    tc = sp.train_counts
    n = cfg.n_per_class
    n = int(n) if n else int(round(float(tc[sp.majority].float().mean()))) if sp.majority.any() else int(tc.max())
    g = torch.Generator().manual_seed(ctx.seed + 12345)
    x_aug, y_aug = augment(cfg.augmenter.name, x, y, sp.minority_classes, n, generator=g,
                           num_classes=sp.num_classes, seed=ctx.seed, device=ctx.device,
                           **as_dict(cfg.augmenter.options))
    if sp.multilabel:
        y_aug = torch.nn.functional.one_hot(y_aug, sp.num_classes).float()
    return {"x_aug": x_aug.cpu(), "y_aug": y_aug.cpu(), "n_per_class": n}


def run_refine(ctx: Context, cfg: RefineConfig, prev: dict[str, Outputs]) -> Outputs:
    """Stage 4: a new predictor on sources (or features), real samples plus the augmented minority."""
    if cfg.decoupled is not None:  # cRT / LWS / tau-norm / post-hoc adjustment on the stage-1 features
        from crt.stages.decoupled import run_decoupled

        return run_decoupled(ctx, cfg, prev)
    from crt.stages.modules import ClassifierData, ClassifierModule
    sp, tr = ctx.split, cfg.train
    key, src = _space(cfg.space, prev)
    x, y = src[f"{key}_train"], sp.y_train
    aug = prev.get("augment", {})
    x_aug, y_aug = aug.get("x_aug"), aug.get("y_aug")
    has_aug = x_aug is not None and len(x_aug) > 0
    minority = (y.bool() & ~sp.majority).any(1) if sp.multilabel else ~sp.majority[y]
    w, extra_weight = WEIGHTINGS.get(tr.weighting)(minority, cfg.lam, has_aug)
    bs = tr.batch_size
    n_min = len(sp.minority_classes)
    extra_batch = max(1, round(bs * n_min / sp.num_classes)) if has_aug else 0
    assert cfg.loss is not None  # set whenever the refine stage trains (crt.stages.configs.resolve_refine)
    loss = build_stage_loss(sp, cfg.loss, sp.class_counts(y))
    predictor = build_predictor(x.shape[1], sp.num_classes, list(cfg.predictor_hidden), cosine=loss.cosine_head)
    watch = monitor("refine", cfg.selection)
    data = ClassifierData(train=(x, y, w), val=(src[f"{key}_val"], sp.y_val),
                          extra=(x_aug, y_aug) if has_aug else None, extra_weight=extra_weight,
                          extra_batch=extra_batch, sampler_weights=SAMPLERS.get(tr.sampler)(sp, y),
                          multilabel=sp.multilabel)
    module = ClassifierModule(predictor, loss, sp.num_classes, data, optim(tr, cfg.numerics),
                              prefix="refine", seed=ctx.seed, compile=cfg.numerics.compile)
    selected = fit(ctx, module, "refine", tr, cfg.numerics, watch)
    pred = module.net.eval()
    logits = {k: apply_batched(pred, src[f"{key}_{k}"], ctx.device) * loss.logit_scale for k in ("val", "test")}
    return {"predictor": pred.state_dict(), "selected": selected, "n_train": len(y),
            **{f"logits_{k}": v for k, v in logits.items()}}


@dataclass(frozen=True)
class StageDef:
    """A stage: `resolve(view)` builds its typed config from the composed config (crt.stages.configs),
    `run(ctx, config, prev)` trains it. Registered in crt.registry.STAGES with its config class."""

    run: Callable[[Context, Any, dict[str, Outputs]], Outputs]
    resolve: Callable[[Any], Any]


for _name, _runner, _config in (("pretrain", run_pretrain, PretrainConfig), ("demix", run_demix, DemixConfig),
                                ("augment", run_augment, AugmentConfig), ("refine", run_refine, RefineConfig)):
    STAGES.register(_name, options=_config)(StageDef(_runner, RESOLVERS[_name]))

RUNNERS: dict[str, Callable[[Context, Any, dict[str, Outputs]], Outputs]] = {n: STAGES.get(n).run for n in STAGES}
__all__ = ["RUNNERS", "Context", "Outputs", "StageDef", "apply_batched", "loss_name", "single_labels"]

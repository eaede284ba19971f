"""The four stages of CRT/ECRT as functions from explicit inputs to explicit outputs.

Each `run_<stage>(ctx, prev)` takes the run context and the outputs of the earlier stages (a dict of
dicts keyed by stage name) and returns a dict of tensors and state dicts, which the pipeline caches.
`spec(stage, cfg)` is the part of the configuration the stage depends on: its cache key hashes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from crt.augment import augment
from crt.data import Split
from crt.errors import ConfigError
from crt.losses import build_loss
from crt.models import build_encoder, build_maf, calibrate_batchnorm
from crt.models.mlp import build_predictor
from crt.stages.decoupled import DecoupledOptions, run_decoupled
from crt.stages.accel import EpochTimer, compile_mode
from crt.stages.checkpoint import checkpoint_for
from crt.stages.modules import ClassifierModule, DemixModule
from crt.stages.schedule import LRSchedule
from crt.stages.training import make_trainer

Outputs = dict[str, Any]


@dataclass
class Context:
    cfg: DictConfig
    split: Split
    run_dir: str
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    progress: bool = True
    checkpoint_dir: str | None = None  # the running stage's partial cache folder (set by the pipeline)
    checkpoint_every: int = 0          # mid-stage checkpoint every N epochs (0: off)

    @property
    def method(self) -> DictConfig:
        return self.cfg.method

    def stage_cfg(self, name: str) -> DictConfig:
        return self.cfg.stage[name]


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def spec(stage: str, cfg: DictConfig) -> dict[str, Any]:
    """The configuration `stage` depends on (what its cache key hashes, beside its inputs' keys and the seed)."""
    m, st = cfg.method, cfg.stage
    numerics = {"precision": str(cfg.trainer.get("precision", "32"))}
    if stage == "pretrain":
        return {"data": _plain(cfg.data), "model": _plain(cfg.model), "train": _plain(st.pretrain),
                "loss": m.pretrain_loss, "loss_kwargs": _plain(m.get("loss_kwargs", {})),
                "classes": m.pretrain_classes, "selection": _plain(st.selection), **numerics}
    if stage == "demix":
        return {"train": _plain(st.demix), "loss": m.loss, "prior": m.prior, "rho": float(m.rho), **numerics}
    if stage == "augment":
        return {"kind": m.augment, "space": m.get("refine_space", "source"), "train": _plain(st.augment),
                "kwargs": _plain(m.get("augment_kwargs", {}))}
    if stage == "refine":
        return {"train": _plain(st.refine), "lam": float(m.lam), "weighting_v": 2,  # 2: augmented losses summed / B_real
                "loss": m.refine_loss, "space": m.get("refine_space", "source"),
                "loss_kwargs": _plain(m.get("loss_kwargs", {})), "predictor": _plain(cfg.model.predictor),
                "selection": _plain(st.selection), **numerics,
                **({"decoupled": _plain(m.decoupled), "head": _plain(cfg.model.head)} if m.get("decoupled") else {})}
    raise ConfigError(f"Unknown stage {stage!r} in method.stages. Fix: use pretrain, demix, augment, refine.")


def _monitor(prefix: str, sel: DictConfig) -> tuple[str, str]:
    metric = sel.get("metric", "bal_acc")
    if metric not in ("bal_acc", "ce"):
        raise ConfigError(f"stage.selection.metric={metric!r} is unknown. Fix: use bal_acc or ce.")
    return f"{prefix}/val/{metric}", "max" if metric == "bal_acc" else "min"


@torch.no_grad()
def apply_batched(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, device: torch.device,
                  batch: int = 4096) -> torch.Tensor:
    """fn over x in chunks on `device`; results on the CPU."""
    return torch.cat([fn(x[i:i + batch].to(device)).float().cpu() for i in range(0, len(x), batch)]) if len(x) \
        else torch.empty(0)


def _class_mask(split: Split, y: torch.Tensor, which: str) -> torch.Tensor:
    """Samples to train on: all, or those of majority classes (multi-label: carrying a majority label)."""
    if which == "all":
        return torch.ones(len(y), dtype=torch.bool)
    if which == "majority":
        return (y.bool() & split.majority).any(1) if split.multilabel else split.majority[y]
    raise ConfigError(f"classes={which!r} is unknown. Fix: use majority or all.")


def single_labels(split: Split, y: torch.Tensor) -> torch.Tensor:
    """One class per sample for the contrastive demix objective: the identity for single-label data; for
    multi-label data the most frequent of the sample's majority labels (else of all its labels)."""
    if not split.multilabel:
        return y
    score = y.float() * (1.0 + split.counts.float() / (split.counts.max().float() + 1))
    score = score + y.float() * split.majority.float() * 2.0  # majority labels first
    return score.argmax(1)


def loss_name(split: Split, name: str) -> str:
    """On multi-label data cross-entropy means the per-label binary cross-entropy."""
    return "bce" if split.multilabel and name == "ce" else name


def _lr(tcfg: DictConfig) -> float:
    """Learning rate, scaled linearly with the batch size when `lr_ref_batch` is set (large-batch fast path)."""
    ref = tcfg.get("lr_ref_batch")
    return float(tcfg.lr) * (int(tcfg.batch_size) / int(ref) if ref else 1.0)


def _fit(ctx: Context, module: Any, stage: str, tcfg: DictConfig, monitor: str, mode: str) -> dict[str, Any]:
    ckpt, resume = checkpoint_for(ctx.checkpoint_dir, stage, ctx.checkpoint_every, int(tcfg.epochs))
    trainer, keep = make_trainer(
        ctx.cfg.trainer, max_epochs=int(tcfg.epochs), stage=stage, run_dir=ctx.run_dir,
        logger_cfg=_plain(ctx.cfg.logger), monitor=monitor, mode=mode, patience=tcfg.get("patience"),
        grad_clip=float(tcfg.get("grad_clip", 0.0) or 0.0), progress=ctx.progress, checkpoint=ckpt,
    )
    module.compile = compile_mode(ctx.cfg.trainer.get("compile"))  # every trained stage (crt/stages/accel.py)
    trainer.callbacks.append(EpochTimer())  # per-epoch seconds in `selected` (scripts/bench.py)
    t0 = time.perf_counter()
    trainer.fit(module, ckpt_path=resume, weights_only=True)
    fit_seconds = time.perf_counter() - t0
    module.to(ctx.device).eval()
    sel = keep.summary(trainer)
    sel["epochs_run"] = int(trainer.current_epoch)
    sel["fit_seconds"] = round(fit_seconds, 3)
    sel.update(EpochTimer.summary(trainer))
    return sel


class FeatureClassifier(nn.Module):
    def __init__(self, encoder: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def _image_transform(ctx: Context) -> Callable[[torch.Tensor], torch.Tensor] | None:
    name = ctx.cfg.data.get("train_transform")
    if not name:
        return None
    from crt.data.transforms import build_transform

    return build_transform(name)


def run_pretrain(ctx: Context, prev: dict[str, Outputs]) -> Outputs:
    """Stage 1: encoder + feature predictor by the method's classification loss (majority classes by default)."""
    sp, tcfg, m = ctx.split, ctx.stage_cfg("pretrain"), ctx.method
    d = int(ctx.cfg.data.feature_dim)
    keep_tr = _class_mask(sp, sp.y_train, m.pretrain_classes)
    keep_va = _class_mask(sp, sp.y_val, m.pretrain_classes)
    x, y = sp.x_train[keep_tr], sp.y_train[keep_tr]
    counts = sp.class_counts(y)
    loss = build_loss(loss_name(sp, m.pretrain_loss), counts, **_plain(m.get("loss_kwargs", {})))
    encoder = build_encoder(_plain(ctx.cfg.data.encoder), sp.input_dim, d)
    head = build_predictor(d, sp.num_classes, list(ctx.cfg.model.head.hidden), cosine=loss.cosine_head)
    net = FeatureClassifier(encoder, head)
    monitor, mode = _monitor("pretrain", ctx.cfg.stage.selection)
    module = ClassifierModule(
        net, loss, sp.num_classes, prefix="pretrain", train=(x, y, torch.ones(len(y))),
        val=(sp.x_val[keep_va], sp.y_val[keep_va]), batch_size=int(tcfg.batch_size), lr=_lr(tcfg),
        weight_decay=float(tcfg.get("weight_decay", 0.0)), seed=int(ctx.cfg.seed),
        optimizer=str(tcfg.get("optimizer", "adam")), transform=_image_transform(ctx),
        sampler_weights=_sampler_weights(sp, y, tcfg.get("sampler", "natural")),
        fused=bool(ctx.cfg.trainer.get("fused", False)), compile=ctx.cfg.trainer.get("compile", False),
        multilabel=sp.multilabel, nesterov=bool(tcfg.get("nesterov", True)),
        lr_schedule=LRSchedule.parse(tcfg.get("lr_schedule"), "stage.pretrain.lr_schedule"),
    )
    selected = _fit(ctx, module, "pretrain", tcfg, monitor, mode)
    enc, hd = net.encoder.eval(), net.head.eval()
    z = {k: apply_batched(enc, getattr(sp, f"x_{k}"), ctx.device) for k in ("train", "val", "test")}
    logits = {k: apply_batched(hd, z[k], ctx.device) * loss.logit_scale for k in ("val", "test")}
    return {"encoder": enc.state_dict(), "head": hd.state_dict(), "selected": selected, "n_train": len(y),
            **{f"z_{k}": v for k, v in z.items()}, **{f"logits_{k}": v for k, v in logits.items()}}


def run_demix(ctx: Context, prev: dict[str, Outputs]) -> Outputs:
    """Stage 2: the flow z -> s trained by GCL or FDV plus rho times the flow likelihood (majority by default)."""
    sp, tcfg, m, pre = ctx.split, ctx.stage_cfg("demix"), ctx.method, prev["pretrain"]
    d = int(ctx.cfg.data.feature_dim)
    keep_tr = _class_mask(sp, sp.y_train, tcfg.get("classes", "majority"))
    keep_va = _class_mask(sp, sp.y_val, tcfg.get("classes", "majority"))
    f = tcfg.flow
    flow = build_maf(d, int(f.blocks), int(f.hidden), int(f.made_layers), bool(f.batch_norm))
    c = tcfg.critic
    z_tr, y_tr = pre["z_train"][keep_tr], single_labels(sp, sp.y_train[keep_tr])
    module = DemixModule(
        flow, d, sp.num_classes, loss=str(m.loss), prior=str(m.prior), rho=float(m.rho),
        critic_hidden=int(c.hidden), embed_dim=c.get("embed_dim"), normalize=bool(c.normalize),
        negatives=str(c.negatives), exclude_true=bool(c.get("exclude_true", False)), clamp=tuple(c.clamp),
        train=(z_tr, y_tr), val=(pre["z_val"][keep_va], single_labels(sp, sp.y_val[keep_va])),
        batch_size=int(tcfg.batch_size),
        lr=_lr(tcfg), weight_decay=float(tcfg.get("weight_decay", 0.0)), seed=int(ctx.cfg.seed),
        fused=bool(ctx.cfg.trainer.get("fused", False)), critic_impl=str(c.get("impl", "batched")),
        probe=(pre["z_val"], sp.sources["val"]) if sp.sources is not None else None,
    )
    selected = _fit(ctx, module, "demix", tcfg, "demix/val/loss", "min")
    module.flow.to(ctx.device)
    calibrate_batchnorm(module.flow, z_tr.to(ctx.device))
    s = {k: apply_batched(lambda z: module.flow(z)[0], pre[f"z_{k}"], ctx.device) for k in ("train", "val", "test")}
    return {"flow": module.flow.state_dict(), "critic": module.critic.state_dict(),
            "prior": module.prior.state_dict(), "selected": selected, "n_train": len(y_tr),
            "mcc_history": module.mcc_history, **{f"s_{k}": v for k, v in s.items()}}


def _space(ctx: Context, prev: dict[str, Outputs]) -> tuple[str, Outputs]:
    space = ctx.method.get("refine_space", "source")
    if space == "source":
        if "demix" not in prev:
            raise ConfigError("method.refine_space=source needs the demix stage. Fix: add demix to method.stages "
                              "or set method.refine_space=feature.")
        return "s", prev["demix"]
    if space == "feature":
        return "z", prev["pretrain"]
    raise ConfigError(f"method.refine_space={space!r} is unknown. Fix: use source or feature.")


def run_augment(ctx: Context, prev: dict[str, Outputs]) -> Outputs:
    """Stage 3: new minority samples in source space (or feature space for the ablation and SMOTE/GAN)."""
    sp, acfg, m = ctx.split, ctx.stage_cfg("augment"), ctx.method
    key, src = _space(ctx, prev)
    x, y = src[f"{key}_train"], sp.y_train
    if sp.multilabel:  # one row per (sample, minority label) pair; augmented samples carry that one label
        pairs = torch.nonzero(y.bool() & ~sp.majority, as_tuple=False)
        x, y = x[pairs[:, 0]], pairs[:, 1]
    tc = sp.train_counts
    n = acfg.get("n_per_class")
    n = int(n) if n else int(round(float(tc[sp.majority].float().mean()))) if sp.majority.any() else int(tc.max())
    g = torch.Generator().manual_seed(int(ctx.cfg.seed) + 12345)
    x_aug, y_aug = augment(str(m.augment), x, y, sp.minority_classes, n, generator=g,
                           num_classes=sp.num_classes, seed=int(ctx.cfg.seed), device=ctx.device,
                           **_plain(m.get("augment_kwargs", {}) or {}))
    if sp.multilabel:
        y_aug = torch.nn.functional.one_hot(y_aug, sp.num_classes).float()
    return {"x_aug": x_aug.cpu(), "y_aug": y_aug.cpu(), "n_per_class": n}


def _sampler_weights(sp: Split, y: torch.Tensor, sampler: str) -> torch.Tensor | None:
    """Class-balanced sampling weights 1/n_c (multi-label: 1/n of the sample's rarest label)."""
    if sampler == "natural":
        return None
    if sampler == "balanced":
        counts = sp.class_counts(y).float().clamp(min=1)
        if sp.multilabel:
            inv = torch.where(y.bool(), 1.0 / counts, torch.zeros(()))
            return inv.max(1).values.clamp(min=1.0 / float(counts.max()))
        return 1.0 / counts[y]
    raise ConfigError(f"sampler={sampler!r} is unknown. Fix: use balanced or natural.")


def run_refine(ctx: Context, prev: dict[str, Outputs]) -> Outputs:
    """Stage 4: a new predictor on sources (or features), real samples plus the augmented minority."""
    sp, tcfg, m = ctx.split, ctx.stage_cfg("refine"), ctx.method
    decoupled = DecoupledOptions.parse(_plain(m.get("decoupled")))
    if decoupled is not None:  # cRT / LWS / tau-norm / post-hoc adjustment on the stage-1 features
        return run_decoupled(ctx, prev, decoupled)
    key, src = _space(ctx, prev)
    lam = float(m.lam)
    x, y = src[f"{key}_train"], sp.y_train
    aug = prev.get("augment", {})
    x_aug, y_aug = aug.get("x_aug"), aug.get("y_aug")
    has_aug = x_aug is not None and len(x_aug) > 0
    weighting = tcfg.get("weighting", "code")
    minority = (y.bool() & ~sp.majority).any(1) if sp.multilabel else ~sp.majority[y]
    if weighting == "code":  # real minority at lambda, augmented minority at 1 (the authors' code)
        w = torch.where(minority, torch.tensor(lam if has_aug else 1.0), torch.tensor(1.0))
        extra_weight = 1.0
    elif weighting == "paper":  # CE over real samples + lambda * CE over augmented ones (as printed)
        w, extra_weight = torch.ones(len(y)), lam
    else:
        raise ConfigError(f"stage.refine.weighting={weighting!r} is unknown. Fix: use code or paper.")
    bs = int(tcfg.batch_size)
    n_min = len(sp.minority_classes)
    extra_batch = max(1, round(bs * n_min / sp.num_classes)) if has_aug else 0
    loss = build_loss(loss_name(sp, str(m.refine_loss)), sp.class_counts(y), **_plain(m.get("loss_kwargs", {})))
    predictor = build_predictor(x.shape[1], sp.num_classes, list(ctx.cfg.model.predictor.hidden),
                                cosine=loss.cosine_head)
    monitor, mode = _monitor("refine", ctx.cfg.stage.selection)
    module = ClassifierModule(
        predictor, loss, sp.num_classes, prefix="refine", train=(x, y, w), val=(src[f"{key}_val"], sp.y_val),
        extra=(x_aug, y_aug) if has_aug else None, extra_weight=extra_weight, extra_batch=extra_batch,
        batch_size=bs, lr=_lr(tcfg), weight_decay=float(tcfg.get("weight_decay", 0.0)), seed=int(ctx.cfg.seed),
        sampler_weights=_sampler_weights(sp, y, tcfg.get("sampler", "balanced")),
        fused=bool(ctx.cfg.trainer.get("fused", False)), multilabel=sp.multilabel,
    )
    selected = _fit(ctx, module, "refine", tcfg, monitor, mode)
    pred = module.net.eval()
    logits = {k: apply_batched(pred, src[f"{key}_{k}"], ctx.device) * loss.logit_scale for k in ("val", "test")}
    return {"predictor": pred.state_dict(), "selected": selected, "n_train": len(y),
            **{f"logits_{k}": v for k, v in logits.items()}}


RUNNERS: dict[str, Callable[[Context, dict[str, Outputs]], Outputs]] = {
    "pretrain": run_pretrain, "demix": run_demix, "augment": run_augment, "refine": run_refine,
}

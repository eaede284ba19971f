"""The typed configuration of every stage: what the stage reads, and exactly what its cache key hashes.

`resolve_<stage>(view)` builds a stage's config from the composed Hydra config (`view` records which
`method.*` keys were read, so keys no stage reads are reported as errors). Every choice is checked against
its registry (crt.registry) and every number against the bounds declared here, before any data is read.
Runtime settings that do not change what is learned (devices, strategy, loggers, progress output, paths)
are not part of a stage config; numerics that do (precision, fused optimizers, torch.compile) are.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from crt.errors import ConfigError
from crt.registry import AUGMENTERS, ENCODERS, LOSSES, OPTIMIZERS, SAMPLERS, TRANSFORMS, WEIGHTINGS, as_dict, build
from crt.stages.schedule import LRSchedule
from crt.usercode import is_import_path

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_mode(value: Any) -> str | None:
    """`trainer.compile` as a torch.compile mode: false/null -> None (eager), true -> 'default'."""
    if value is None or value is False or str(value).lower() in ("false", "none", "off", "eager"):
        return None
    if value is True or str(value).lower() == "true":
        return "default"
    if str(value) in COMPILE_MODES:
        return str(value)
    raise ConfigError(f"trainer.compile={value!r} is unknown. Fix: use false (eager), true (= default) or one of "
                      f"{', '.join(COMPILE_MODES)} (reduce-overhead adds CUDA graphs).")


STAGE_ORDER = ("pretrain", "demix", "augment", "refine")
KINDS = ("crt", "lws", "tau_norm", "posthoc")  # decoupled refine variants (crt/stages/decoupled.py)
DEFAULT_TAU_GRID = tuple(round(0.1 * i, 1) for i in range(21))  # 0.0, 0.1, ..., 2.0
POSITIVE = {"gt": 0}


def _f(**meta: Any) -> Any:
    """A required dataclass field with validation metadata (see crt.registry.build)."""
    return field(metadata=meta)


@dataclass(frozen=True, kw_only=True)
class Train:
    """`stage.<stage>` training settings shared by the trained stages."""

    epochs: int = _f(ge=1, fix="use at least 1 epoch")
    batch_size: int = _f(ge=1, fix="use a batch size of at least 1")
    lr: float = _f(gt=0, fix="use a positive learning rate, e.g. 1e-3")
    lr_ref_batch: int | None = _f(ge=1, fix="use null, or the batch size the learning rate was tuned for")
    weight_decay: float = _f(ge=0, fix="use weight_decay >= 0")
    optimizer: str = _f(choices=OPTIMIZERS)
    patience: int | None = _f(ge=1, fix="use null (no early stopping) or at least 1 epoch")
    grad_clip: float = _f(ge=0, fix="use 0 (off) or a positive gradient-norm bound")
    nesterov: bool = True  # sgd only
    lr_schedule: LRSchedule | None = None  # warm-up + step decay (crt/stages/schedule.py); null: constant

    @property
    def scaled_lr(self) -> float:
        """lr, scaled linearly with the batch size when `lr_ref_batch` is set (large-batch fast path)."""
        return self.lr * (self.batch_size / self.lr_ref_batch if self.lr_ref_batch else 1.0)


@dataclass(frozen=True, kw_only=True)
class PretrainTrain(Train):
    sampler: str = _f(choices=SAMPLERS)


@dataclass(frozen=True, kw_only=True)
class RefineTrain(Train):
    weighting: str = _f(choices=WEIGHTINGS)
    sampler: str = _f(choices=SAMPLERS)


@dataclass(frozen=True)
class FlowSpec:
    """`stage.demix.flow`: the masked autoregressive flow z -> s."""

    blocks: int = _f(ge=1)
    hidden: int = _f(ge=1)
    made_layers: int = _f(ge=1)
    batch_norm: bool = _f()


@dataclass(frozen=True)
class CriticSpec:
    """`stage.demix.critic`: the per-dimension critic g_a and the contrastive objective's details."""

    hidden: int = _f(ge=1)
    embed_dim: int | None = _f(ge=1, fix="use null (k = number of classes) or a positive embedding size")
    normalize: bool = _f()
    negatives: Literal["batch", "classes"] = _f()
    exclude_true: bool = _f()
    clamp: tuple[float, ...] = _f()
    impl: Literal["batched", "loop"] = _f()

    def __post_init__(self) -> None:
        if len(self.clamp) != 2 or self.clamp[0] >= self.clamp[1]:
            raise ConfigError(f"stage.demix.critic.clamp={list(self.clamp)} is not an interval. Fix: give [low, high] "
                              "with low < high, e.g. [-5.0, 15.0].")


@dataclass(frozen=True, kw_only=True)
class DemixTrain(Train):
    classes: Literal["majority", "all"] = _f()
    flow: FlowSpec = _f()
    critic: CriticSpec = _f()


@dataclass(frozen=True)
class AugmentTrain:
    n_per_class: int | None = _f(ge=1, fix="use null (mean majority class size) or a positive count")


@dataclass(frozen=True)
class Component:
    """A registered component chosen by name, with its typed options."""

    name: str
    options: Any


@dataclass(frozen=True)
class Numerics:
    """Trainer settings that change the numbers a stage computes (so they are part of its key)."""

    precision: str
    fused: bool
    compile: str | None = None  # torch.compile mode of trainer.compile (crt/stages/accel.py); None: eager


@dataclass(frozen=True)
class PretrainConfig:
    """Stage 1: encoder + feature head by a classification loss."""

    classes: str
    loss: Component
    encoder: Component
    feature_dim: int
    head_hidden: tuple[int, ...]
    transform: str | None
    selection: str
    train: PretrainTrain
    numerics: Numerics


@dataclass(frozen=True)
class DemixConfig:
    """Stage 2: the flow z -> s, trained by GCL or FDV plus rho times the flow log-likelihood."""

    feature_dim: int
    loss: str
    prior: str
    rho: float
    train: DemixTrain
    numerics: Numerics


@dataclass(frozen=True)
class AugmentConfig:
    """Stage 3: new minority samples in source (or feature) space."""

    augmenter: Component
    space: str
    n_per_class: int | None


@dataclass(frozen=True)
class DecoupledOptions:
    """`method.decoupled`: which variant, and τ for tau_norm / posthoc."""

    kind: str
    tau: float | None = None
    tau_grid: tuple[float, ...] = DEFAULT_TAU_GRID

    @classmethod
    def parse(cls, node: Mapping[str, Any] | None) -> DecoupledOptions | None:
        if node is None:
            return None
        if not isinstance(node, Mapping) or "kind" not in node:
            raise ConfigError(f"method.decoupled={node!r} is invalid. Fix: use null, or a mapping with kind: "
                              f"one of {', '.join(KINDS)} (e.g. method=decoupled_crt).")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(node) - names)
        if unknown:
            raise ConfigError(f"method.decoupled has unknown keys {unknown}. Fix: use only {sorted(names)}.")
        kind = str(node["kind"])
        if kind not in KINDS:
            raise ConfigError(f"method.decoupled.kind={kind!r} is unknown. Fix: use one of {', '.join(KINDS)}.")
        tau = node.get("tau")
        grid = tuple(float(t) for t in (node.get("tau_grid") or DEFAULT_TAU_GRID))
        if kind == "posthoc" and "tau" not in node:
            tau = 1.0  # Menon et al.'s default; an explicit tau: null chooses it on the held-out split
        if tau is not None and not (math.isfinite(float(tau)) and float(tau) >= 0):
            raise ConfigError(f"method.decoupled.tau={tau!r} is out of range. Fix: use tau >= 0, or null to "
                              "choose it on the held-out split from tau_grid.")
        if tau is not None and kind in ("crt", "lws"):
            raise ConfigError(f"method.decoupled.tau is not an option of {kind}. Fix: remove it (it applies to "
                              "tau_norm and posthoc).")
        if not grid or any(t < 0 for t in grid):
            raise ConfigError(f"method.decoupled.tau_grid={list(grid)} is invalid. Fix: a non-empty list of "
                              "values >= 0.")
        return cls(kind, None if tau is None else float(tau), grid)


@dataclass(frozen=True)
class Decoupled:
    """A decoupled refine variant (crt/stages/decoupled.py) and what it reads of stage 1 to rebuild its head."""

    options: DecoupledOptions
    pretrain_loss: Component
    pretrain_classes: str
    head_hidden: tuple[int, ...]


@dataclass(frozen=True)
class RefineConfig:
    """Stage 4: a new predictor on sources (or features), real samples plus the augmented minority; or, with
    `decoupled`, a classifier variant on the frozen stage-1 features (cRT, LWS, tau-norm, post-hoc)."""

    lam: float
    loss: Component | None
    space: str
    predictor_hidden: tuple[int, ...]
    selection: str
    train: RefineTrain
    numerics: Numerics
    decoupled: Decoupled | None = None


class View:
    """The composed config, as the stage resolvers see it: `method(key, stage)` records what each stage reads."""

    def __init__(self, cfg: Mapping[str, Any], stages: tuple[str, ...]):
        self.cfg, self.stages = cfg, stages
        self.method_values: dict[str, Any] = dict(cfg["method"])
        self.read: dict[str, str] = {"name": "pipeline", "stages": "pipeline"}

    def method(self, key: str, stage: str) -> Any:
        if key not in self.method_values:
            name = self.method_values.get("name", "<method>")
            raise ConfigError(f"method.{key} is missing, and the {stage} stage of method {name!r} reads it. Fix: "
                              f"add `{key}: ...` to configs/method/{name}.yaml (configs/method/ecrt_mp.yaml has "
                              f"every key with a comment), or pass +method.{key}=... on the command line.")
        self.read.setdefault(key, stage)
        return self.method_values[key]

    def stage(self, name: str, cls: type, key: str | None = None) -> Any:
        block = (self.cfg.get("stage") or {}).get(name)
        if block is None:
            raise ConfigError(f"stage.{name} is missing. Fix: compose configs/stage/default.yaml (run through run.py).")
        out = build(cls, block, key or f"stage.{name}")
        if getattr(out, "lr_schedule", None) is not None:  # its own range checks
            LRSchedule.parse(as_dict(out.lr_schedule), f"stage.{name}.lr_schedule")
        return out

    def selection(self) -> str:
        metric = ((self.cfg.get("stage") or {}).get("selection") or {}).get("metric")
        if metric not in ("bal_acc", "ce"):
            raise ConfigError(f"stage.selection.metric={metric!r} is not a known selection metric. "
                              "Fix: use bal_acc or ce.")
        return str(metric)

    def numerics(self) -> Numerics:
        tr = self.cfg.get("trainer") or {}
        fused = tr.get("fused", False)
        if not isinstance(fused, bool):
            raise ConfigError(f"trainer.fused={fused!r} is not true or false. Fix: use true or false.")
        spc = tr.get("steps_per_call", 1)
        if isinstance(spc, bool) or not isinstance(spc, int) or spc < 1:
            raise ConfigError(f"trainer.steps_per_call={spc!r} is not a whole number of at least 1. Fix: use 1 (one "
                              "optimizer step per Lightning step) or more, e.g. the default 8.")
        return Numerics(str(tr.get("precision", "32")), fused, compile_mode(tr.get("compile", False)))

    def component(self, registry: Any, name_key: str, options_key: str, stage: str) -> Component:
        name = self.method(name_key, stage)
        options = self.method(options_key, stage) if options_key in self.method_values else None
        if registry is LOSSES and is_import_path(name):  # user code (crt/usercode.py): options as given
            from crt.losses.classification import user_loss
            from crt.usercode import check_options

            check_options(user_loss(name), f"method.{options_key}", dict(options or {}), fixed=("counts",))
            return Component(name, dict(options or {}))
        registry.entry(name, f"method.{name_key}")
        return Component(name, registry.options(name, options, f"method.{options_key}"))


def _space(view: View, stage: str) -> str:
    space = view.method("refine_space", stage)
    if space not in ("source", "feature"):
        raise ConfigError(f"method.refine_space={space!r} is not a known space. Fix: use source or feature.")
    if space == "source" and "demix" not in view.stages:
        raise ConfigError("method.refine_space=source needs the demix stage. Fix: add demix to method.stages "
                          "or set method.refine_space=feature.")
    return space


def _loss(view: View, which: str, stage: str) -> Component:
    """The loss and its typed options; the loss is built once on dummy counts so its range checks run now."""
    comp = view.component(LOSSES, f"{which}_loss", f"{which}_loss_kwargs", stage)
    if is_import_path(comp.name):
        return comp
    import torch

    from crt.registry import as_dict

    try:
        LOSSES.get(comp.name)(torch.ones(2), **as_dict(comp.options))
    except ConfigError as err:
        raise ConfigError(f"method.{which}_loss_kwargs: {err}") from None
    return comp


def _feature_dim(data: Mapping[str, Any], minimum: int, why: str) -> int:
    d = data.get("feature_dim")
    if isinstance(d, bool) or not isinstance(d, int) or d < minimum:
        raise ConfigError(f"data.feature_dim={d!r} is invalid: {why}. Fix: use an integer >= {minimum} "
                          "(the papers use 32, or 2 on the toy data and MNIST).")
    return d


def resolve_pretrain(view: View) -> PretrainConfig:
    data = view.cfg["data"]
    classes = view.method("pretrain_classes", "pretrain")
    if classes not in ("majority", "all"):
        raise ConfigError(f"method.pretrain_classes={classes!r} is not known. Fix: use majority or all.")
    enc = dict(data.get("encoder") or {})
    name = enc_name = enc.pop("name", None)
    if enc.get("_target_"):  # user code (crt/usercode.py): its options as given
        from crt.usercode import check_options, import_object

        name = str(enc.pop("_target_"))
        cls = import_object(name, "data.encoder._target_", "an encoder class (nn.Module)")
        if default := ENCODERS.entry(enc_name).options if enc_name in ENCODERS else None:  # the dataset's own encoder's
            # options (e.g. data=features' hidden) stay behind unless the user's encoder takes them too
            inherited = {f.name for f in fields(default)}
            enc = {k: v for k, v in enc.items() if k not in inherited or _takes(cls, k)}
        check_options(cls, "data.encoder", enc, fixed=("in_dim", "out_dim"))
        encoder = Component(name, enc)
    else:
        ENCODERS.entry(name, "data.encoder.name")
        encoder = Component(name, ENCODERS.options(name, enc, "data.encoder"))
    transform = data.get("train_transform")
    if transform is not None:
        TRANSFORMS.entry(transform, "data.train_transform")
    head = ((view.cfg.get("model") or {}).get("head") or {}).get("hidden")
    return PretrainConfig(
        classes=classes, loss=_loss(view, "pretrain", "pretrain"),
        encoder=encoder,
        feature_dim=_feature_dim(data, 1, "the encoder needs at least one output"),
        head_hidden=_hidden(head, "model.head.hidden"), transform=transform, selection=view.selection(),
        train=view.stage("pretrain", PretrainTrain), numerics=view.numerics(),
    )


def _takes(fn: Any, name: str) -> bool:
    import inspect

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return True
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _hidden(value: Any, key: str) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or any(isinstance(v, bool) or not isinstance(v, int) or v < 1
                                                   for v in value):
        raise ConfigError(f"{key}={value!r} is not a list of layer widths. Fix: give positive integers, e.g. [64], "
                          "or [] for a linear layer.")
    return tuple(int(v) for v in value)


def _nonneg(view: View, key: str, stage: str, fix: str) -> float:
    v = view.method(key, stage)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v == v or v in (float("inf"), float("-inf")):
        raise ConfigError(f"method.{key}={v!r} is not a finite number. Fix: {fix}")
    if v < 0:
        raise ConfigError(f"method.{key}={v} is negative. Fix: {fix}")
    return float(v)


def resolve_demix(view: View) -> DemixConfig:
    loss = view.method("loss", "demix")
    if loss not in ("gcl", "fdv"):
        raise ConfigError(f"method.loss={loss!r} is not a known demix objective. Fix: use gcl (CRT) or fdv (ECRT).")
    prior = view.method("prior", "demix")
    if prior not in ("single", "multi"):
        raise ConfigError(f"method.prior={prior!r} is not a known prior. Fix: use single or multi.")
    rho = _nonneg(view, "rho", "demix", "use rho >= 0, e.g. method.rho=1e-2 (0 switches the likelihood term off).")
    return DemixConfig(
        feature_dim=_feature_dim(view.cfg["data"], 2, "the demixing flow needs at least 2 dimensions"),
        loss=loss, prior=prior, rho=rho, train=view.stage("demix", DemixTrain), numerics=view.numerics(),
    )


def resolve_augment(view: View) -> AugmentConfig:
    space = _space(view, "augment")
    return AugmentConfig(augmenter=view.component(AUGMENTERS, "augment", "augment_kwargs", "augment"), space=space,
                         n_per_class=view.stage("augment", AugmentTrain).n_per_class)


def _decoupled(view: View) -> Decoupled | None:
    if "decoupled" not in view.method_values:
        return None
    opts = DecoupledOptions.parse(view.method("decoupled", "refine"))
    if opts is None:
        return None
    if view.stages != ("pretrain", "refine") or view.method("refine_space", "refine") != "feature":
        raise ConfigError("method.decoupled works on the frozen stage-1 features. Fix: set method.refine_space=feature "
                          "and method.stages=[pretrain, refine].")
    head = ((view.cfg.get("model") or {}).get("head") or {}).get("hidden")
    classes = view.method("pretrain_classes", "refine")
    return Decoupled(opts, _loss(view, "pretrain", "refine"), classes, _hidden(head, "model.head.hidden"))


def resolve_refine(view: View) -> RefineConfig:
    decoupled = _decoupled(view)
    space = _space(view, "refine")
    trains = decoupled is None or decoupled.options.kind in ("crt", "lws")
    lam = 0.0 if decoupled is not None else \
        _nonneg(view, "lam", "refine", "use lambda >= 0, e.g. method.lam=1e-3 (the papers' value).")
    pred = ((view.cfg.get("model") or {}).get("predictor") or {}).get("hidden")
    return RefineConfig(
        lam=lam, loss=_loss(view, "refine", "refine") if trains else None, space=space,
        predictor_hidden=_hidden(pred, "model.predictor.hidden"), selection=view.selection(),
        train=view.stage("refine", RefineTrain), numerics=view.numerics(), decoupled=decoupled,
    )


STAGE_BLOCKS = {"pretrain": PretrainTrain, "demix": DemixTrain, "augment": AugmentTrain, "refine": RefineTrain}
"""The typed `stage.<stage>` block of every stage."""

RESOLVERS = {"pretrain": resolve_pretrain, "demix": resolve_demix, "augment": resolve_augment,
             "refine": resolve_refine}

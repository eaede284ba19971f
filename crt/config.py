"""From the composed Hydra config to the typed configuration of a run, checked before anything is trained.

`resolve(cfg)` (also called `validate`) returns a `RunConfig`: the seed, the typed data config and, for every
stage the method names, its typed config (crt.stages.configs). Every component name is looked up in its
registry (crt.registry), every option and number is checked against its declared type and range, the stage
order is checked, and keys that nothing reads are reported - each as a one-paragraph `ConfigError` naming
the key, the bad value and the fix. It reads no data and builds nothing heavy, so a typo costs seconds.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

import crt.augment  # noqa: F401  (every component registers on import)
import crt.data
import crt.losses  # noqa: F401
import crt.models  # noqa: F401
import crt.stages  # noqa: F401
from crt.data.imbalance import PROTOCOLS, check_classes
from crt.errors import ConfigError
from crt.registry import DATASETS, STAGES, as_dict, build
from crt.stages.configs import STAGE_BLOCKS, STAGE_ORDER, View

STAGES_ORDER = STAGE_ORDER


TAG_MAX = 80  # bytes; a file name may have 255, and the folder also has to fit in PATH_MAX with its parents


def _tag(override_dirname: str) -> str:
    """Run-folder component for the command-line overrides ('default' when there are none).

    Short override lists are used as they are ('/' becomes '_'); longer ones become a readable prefix plus a
    hash of the whole list, so the name stays short, legal and unique. The full overrides are kept in the
    folder (.hydra/overrides.yaml, and the resolved config in results.json).
    """
    if not override_dirname:
        return "default"
    tag = override_dirname.replace("/", "_")
    if len(tag.encode()) <= TAG_MAX and tag not in (".", ".."):
        return tag
    digest = hashlib.sha256(override_dirname.encode()).hexdigest()[:12]
    prefix = tag.encode()[:TAG_MAX - len(digest) - 1].decode(errors="ignore").rstrip(",")
    return f"{prefix}-{digest}"


NAME_MAX = 100
_NAME = re.compile(r"[A-Za-z0-9_+=,@-][A-Za-z0-9._+=,@-]*")


def check_name(key: str, value: Any) -> str:
    """`value` of config key `key` if it can be one folder name of a run (crt.name); else a ConfigError."""
    text = "" if value is None else str(value)
    if _NAME.fullmatch(text) and len(text) <= NAME_MAX:
        return text
    why = (f"is {len(text)} characters long" if len(text) > NAME_MAX else "is not set" if value is None
           else "would leave or misname its folder")
    shown = text if len(text) <= 60 else f"{text[:40]}...{text[-10:]}"
    raise ConfigError(f"{key}={shown!r} {why}: it names a folder of the run (paths.output_dir/runs/<data.name>/"
                      f"<method.name>/<overrides>/seed<seed>). Fix: use 1 to {NAME_MAX} letters, digits and . _ - + = , @ "
                      f"(no '/', not starting with '.'), e.g. {key}={'0' if key == 'seed' else 'my_' + key.split('.')[0]}.")


class NameRefused(BaseException):
    """A run-folder name refused while Hydra names the run folder, before it creates it. A BaseException, so that
    Hydra's error report (which prints any Exception with a traceback and exits 1) lets it through to run.py,
    which prints `error` as one paragraph and exits 2."""

    def __init__(self, error: ConfigError):
        super().__init__(str(error))
        self.error = error


def _name(key: str, *, _root_: Any) -> str:
    """Resolver `${crt.name:<key>}`: the value of `key`, checked to be a legal folder name (check_name)."""
    try:
        return check_name(key, OmegaConf.select(_root_, key))
    except ConfigError as err:
        raise NameRefused(err) from None


def _inside(root: str, rel: str, joined: bool = True) -> str:
    """Resolver `${crt.inside:<root>,<rel>}` (configs/hydra): `root/rel` (`rel` itself when `joined` is false),
    after checking that no folder of `rel` that exists already is a symbolic link or leads out of `root`, so that
    Hydra, which writes .hydra/ there before crt runs, follows no planted link either."""
    from crt.utils import safe_path

    path = Path(root)
    try:
        for part in Path(str(rel)).parts:
            path = path / part
            if path.is_symlink() or path.exists():
                safe_path(path, "run folder" if path.name.startswith("seed") else "folder", root)
    except ConfigError as err:
        raise NameRefused(err) from None
    return str(Path(root) / rel) if joined else str(rel)


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("crt.tag"):
        OmegaConf.register_new_resolver("crt.tag", _tag)
    if not OmegaConf.has_resolver("crt.name"):
        OmegaConf.register_new_resolver("crt.name", _name)
    if not OmegaConf.has_resolver("crt.inside"):
        OmegaConf.register_new_resolver("crt.inside", _inside)


@dataclass(frozen=True)
class Protocol:
    """`data.*` keys of the imbalance protocol, common to every dataset (crt.data.apply_protocol)."""

    imbalance: str = field(metadata={"choices": PROTOCOLS})
    minority_classes: tuple[int, ...] = field(default=(), metadata={
        "ge": 0, "distinct": True, "fix": "list distinct class ids, e.g. data.minority_classes=[0,1]"})
    ratio: float = field(default=1.0, metadata={
        "gt": 0, "le": 1, "fix": "give the minority size divided by the majority size, in (0, 1], e.g. data.ratio=0.1"})
    n_max: int | None = field(default=None, metadata={"ge": 1, "fix": "use null (largest class) or a positive count"})
    data_seed: int = 0
    val_fraction: float = field(default=0.2, metadata={"ge": 0, "lt": 1, "fix": "use a fraction in [0, 1), e.g. 0.2"})
    num_classes: int | None = field(default=None, metadata={"ge": 2, "fix": "use null (from the data) or >= 2"})
    shot_thresholds: tuple[int, ...] = (100, 20)
    majority_min_count: int | None = field(default=None, metadata={"ge": 1})

    def __post_init__(self) -> None:
        if self.num_classes is not None:
            check_classes(list(self.minority_classes), self.num_classes)
        if len(self.shot_thresholds) != 2:
            raise ConfigError(f"data.shot_thresholds={list(self.shot_thresholds)} is not two numbers. Fix: give "
                              "[many, few], e.g. [100, 20].")


STAGE_DATA_KEYS = ("name", "encoder", "feature_dim", "train_transform")
"""`data.*` keys the stages read (the encoder belongs to the dataset)."""
METHOD_DEFAULT_KEYS = ("rho", "lam", "gan_noise_dim")
"""`data.*` keys that only supply per-dataset defaults to `method.*` keys (by interpolation)."""


@dataclass(frozen=True)
class DataConfig:
    """What the data stage reads: the dataset, its loader's typed options and the imbalance protocol."""

    name: str
    loader: Any
    protocol: Protocol


@dataclass(frozen=True)
class CacheConfig:
    enabled: bool = True
    allow_other_code: bool = False


@dataclass(frozen=True)
class RunConfig:
    """A run, resolved: the only configuration the pipeline and the stages read."""

    seed: int
    data: DataConfig
    stages: dict[str, Any]
    cache: CacheConfig
    training: dict[str, Any] | None = None  # Trainer options / callbacks that change training (crt.stages.training)


def _container(node: Any, key: str) -> Any:
    try:
        return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
    except Exception as err:  # noqa: BLE001 - interpolation errors of any kind
        raise ConfigError(f"{key} cannot be resolved ({type(err).__name__}: {str(err).splitlines()[0]}). Fix: check "
                          f"the ${{...}} references in {key} (e.g. method.rho: ${{data.rho}} needs data.rho).") from None


def resolve_data(data: Mapping[str, Any]) -> DataConfig:
    name = data.get("name")
    protocol_keys = {f.name for f in fields(Protocol)}
    if data.get("_target_"):  # user code (crt/usercode.py): its keyword parameters are its options
        from crt.data import get_data_loader, loader_options
        from crt.registry import options_from_signature

        fn = get_data_loader(data)
        opts = loader_options(data)
        if set(opts) <= {f.name for f in fields(options_from_signature(fn, ("data_dir",)))}:
            opts = as_dict(build(options_from_signature(fn, ("data_dir",)), opts, "data"))
        protocol = build(Protocol, {k: v for k, v in data.items() if k in protocol_keys}, "data")
        return DataConfig(str(name), {"_target_": str(data["_target_"]), **opts}, protocol)
    entry = DATASETS.entry(name, "data.name", hint=" (data=<name>, one YAML per dataset under configs/data/)")
    loader_keys = {f.name for f in fields(entry.options)}
    known = loader_keys | protocol_keys | set(STAGE_DATA_KEYS) | set(METHOD_DEFAULT_KEYS)
    for k in data:
        if k not in known:
            from crt.registry import _suggest

            raise ConfigError(f"data.{k} is not read by dataset {name!r}{_suggest(k, sorted(known))}. Fix: remove it, "
                              f"or use one of its keys: {', '.join(sorted(known))}.")
    loader = build(entry.options, {k: v for k, v in data.items() if k in loader_keys}, "data")
    protocol = build(Protocol, {k: v for k, v in data.items() if k in protocol_keys}, "data")
    return DataConfig(str(name), loader, protocol)


def _seed(value: Any, key: str = "seed") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}={value!r} is not an integer. Fix: give a whole number, e.g. {key}=0.")
    return int(value)


def _stages(value: Any) -> tuple[str, ...]:
    fix = f"list stages from {', '.join(STAGE_ORDER)} in that order, starting with pretrain"
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"method.stages={value!r} is not a list of stages. Fix: {fix}.")
    for s in value:
        STAGES.entry(s, "method.stages")
    stages = tuple(str(s) for s in value)
    order = [STAGE_ORDER.index(s) for s in stages]
    if order != sorted(set(order)):
        raise ConfigError(f"method.stages={list(stages)} is out of order or repeats a stage. Fix: {fix}.")
    if stages[0] != "pretrain":
        raise ConfigError(f"method.stages={list(stages)} does not start with pretrain (every later stage reads its "
                          "features). Fix: put pretrain first.")
    if "augment" in stages and "refine" not in stages:
        raise ConfigError("method.stages has augment without refine. Fix: add refine after augment.")
    if stages[-1] not in ("refine", "pretrain"):
        raise ConfigError("method.stages must end with a stage that predicts (pretrain or refine). Fix: add refine.")
    return stages


def resolve(cfg: DictConfig | Mapping[str, Any]) -> RunConfig:
    """The typed, checked configuration of a run (see the module docstring); raises ConfigError."""
    for group in ("data", "method", "stage", "model", "trainer", "paths"):
        if group not in cfg or cfg[group] is None:
            raise ConfigError(f"The config has no '{group}' group. Fix: run through run.py, or compose "
                              "configs/config.yaml with Hydra so its defaults are applied.")
    plain = {k: _container(cfg[k], k) for k in ("data", "method", "stage", "model", "trainer")}
    plain["logger"] = _container(cfg.get("logger"), "logger")
    for group in ("data", "method"):  # folder names of the run (configs/hydra), checked for crt.pipeline.run too
        check_name(f"{group}.name", plain[group].get("name") if isinstance(plain[group], Mapping) else None)
    seed = _seed(cfg.get("seed", 0))
    cache_cfg = cfg.get("cache", {})
    if not isinstance(cache_cfg, (Mapping, DictConfig)):
        raise ConfigError(f"cache={cache_cfg!r} is not a mapping. Fix: use cache.enabled=true|false and "
                          "cache.allow_other_code=true|false.")
    cache = build(CacheConfig, _container(cache_cfg, "cache"), "cache")
    data = resolve_data(plain["data"])
    stages = _stages(plain["method"].get("stages"))
    view = View(plain, stages)
    configs = {s: STAGES.get(s).resolve(view) for s in stages}
    for s, block in STAGE_BLOCKS.items():  # the other stages' blocks are checked too (typos, ranges)
        if s not in stages and (plain["stage"] or {}).get(s) is not None:
            view.stage(s, block)
    unread = [k for k in view.method_values if k not in view.read]
    if unread:
        from crt.registry import _suggest

        k = unread[0]
        name = view.method_values.get("name")
        raise ConfigError(f"method.{k} is not read by any stage of method {name!r} (stages: {', '.join(stages)})"
                          f"{_suggest(k, sorted(view.read))}. Fix: remove it (or correct its spelling); the keys "
                          f"this method reads are {', '.join(sorted(view.read))}.")
    # The trainer options and progress mode fail here, not at stage 1. They need Lightning (a second or more to
    # import), so they come after every check that needs only the registries: a misspelt name fails fast.
    from crt.stages.training import check_callback_packages, progress_mode, trainer_options, training_key

    progress_mode(cfg.get("progress", True))
    trainer_options(plain["trainer"])
    check_callback_packages(cfg.get("callbacks"))  # callbacks=rich without rich: here, not once the data loaded
    return RunConfig(seed=seed, data=data, stages=configs, cache=cache, training=training_key(cfg))


validate = resolve

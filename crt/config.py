"""Configuration checks that turn user mistakes into one-paragraph errors, and the OmegaConf resolvers."""

from __future__ import annotations

import hashlib

from omegaconf import DictConfig, OmegaConf

from crt.data.imbalance import PROTOCOLS, check_classes, check_ratio
from crt.errors import ConfigError

STAGES = ("pretrain", "demix", "augment", "refine")


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


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("crt.tag"):
        OmegaConf.register_new_resolver("crt.tag", _tag)


def _number(value: object, key: str, fix: str) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={value!r} is not a number. Fix: {fix}") from None


def validate(cfg: DictConfig) -> None:
    """Fail fast, before any data is read, on settings that cannot work."""
    from crt.data import LOADERS

    for group in ("data", "method", "stage", "model", "trainer", "paths"):
        if group not in cfg or cfg[group] is None:
            raise ConfigError(f"The config has no '{group}' group. Fix: run through run.py, or compose "
                              "configs/config.yaml with Hydra so its defaults are applied.")
    d, m = cfg.data, cfg.method
    if d.get("name") not in LOADERS and not d.get("_target_"):  # _target_: a user loader (crt/usercode.py)
        raise ConfigError(f"Unknown dataset {d.get('name')!r}. Fix: choose data=<name> with one of "
                          f"{', '.join(sorted(LOADERS))} (configs/data/).")
    if d.get("imbalance") not in PROTOCOLS:
        raise ConfigError(f"data.imbalance={d.get('imbalance')!r} is unknown. Fix: choose one of "
                          f"{', '.join(PROTOCOLS)}.")
    if d.imbalance in ("step", "exp", "minority"):
        check_ratio(d.get("ratio"))
    minority = list(d.get("minority_classes") or [])
    if d.get("num_classes") is not None:
        check_classes(minority, int(d.num_classes))
    stages = list(m.get("stages") or [])
    bad = [s for s in stages if s not in STAGES]
    if not stages or bad:
        raise ConfigError(f"method.stages={stages} is invalid. Fix: list stages from {', '.join(STAGES)} in order.")
    lam = _number(m.get("lam", 0.0), "method.lam", "pass a non-negative number, e.g. method.lam=1e-3.")
    if lam < 0:
        raise ConfigError(f"method.lam={lam} is negative. Fix: use lambda >= 0 (the papers use 1e-3).")
    rho = _number(m.get("rho", 0.0), "method.rho", "pass a non-negative number, e.g. method.rho=1e-2.")
    if rho < 0:
        raise ConfigError(f"method.rho={rho} is negative. Fix: use rho >= 0 (0 switches the likelihood term off).")
    if m.get("loss") not in ("gcl", "fdv"):
        raise ConfigError(f"method.loss={m.get('loss')!r} is unknown. Fix: use gcl (CRT) or fdv (ECRT).")
    if m.get("prior") not in ("single", "multi"):
        raise ConfigError(f"method.prior={m.get('prior')!r} is unknown. Fix: use single or multi.")
    if "augment" in stages and "refine" not in stages:
        raise ConfigError("method.stages has augment without refine. Fix: add refine after augment.")
    if stages[-1] not in ("refine", "pretrain"):
        raise ConfigError("method.stages must end with a stage that predicts (pretrain or refine).")
    from crt.stages.decoupled import DecoupledOptions  # typed options of the long-tail components
    from crt.stages.schedule import LRSchedule

    def plain(node: object) -> object:
        return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node

    DecoupledOptions.parse(plain(m.get("decoupled")))  # type: ignore[arg-type]
    for s in STAGES:
        if cfg.stage.get(s) is not None:
            LRSchedule.parse(plain(cfg.stage[s].get("lr_schedule")), f"stage.{s}.lr_schedule")  # type: ignore[arg-type]

"""Every named component a config can choose, in one place, and the typed options each one takes.

A component registers where it is defined, with a dataclass of its options (or, by default, the keyword
parameters of its own signature turned into one). Its package imports the defining module eagerly, so a
name is known as soon as its package is imported. `Registry.options(name, values, key)` turns the
configured options into that dataclass: unknown option names, wrong types and values outside the declared
range are `ConfigError`s naming the key, the value and the fix.

This module is a leaf: it imports nothing from `crt` but `crt.errors`, so every component module can import
it without cycles.

Field metadata understood by `build` (dataclasses.field(metadata=...)):
  ge / gt / le / lt   numeric bounds;   choices   a tuple of allowed values, or a Registry;
  distinct            list elements must be distinct;   fix   the fix sentence of the error message.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from crt.errors import ConfigError

T = TypeVar("T")


def _plain(values: Any) -> Any:
    """OmegaConf containers as plain dicts/lists (no import of omegaconf needed: duck-typed)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(values, (DictConfig, ListConfig)):
            return OmegaConf.to_container(values, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    return values


def _suggest(word: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(str(word), list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_type_name(a) for a in args) + " or null"
    if origin in (list, tuple, Sequence):
        args = typing.get_args(tp)
        elem = {int: "integers", float: "numbers", str: "names", bool: "booleans"}.get(args[0], "values") if args else "values"
        return f"a list of {elem}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _fail(key: str, value: Any, problem: str, fix: str) -> ConfigError:
    return ConfigError(f"{key}={value!r} {problem}. Fix: {fix.rstrip('.')}.")


def _coerce(tp: Any, value: Any, key: str, fix: str) -> Any:
    """`value` checked against the annotation `tp` (int, float, bool, str, list/tuple of those, Optional,
    Literal, a nested dataclass, Any)."""
    if tp is Any or tp is object:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, key, fix)
            except ConfigError as err:
                errors.append(err)
        raise _fail(key, value, f"is not {_type_name(tp)}", fix)
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise _fail(key, value, f"is not one of {', '.join(map(str, allowed))}{_suggest(value, allowed)}",
                        fix or f"use one of {', '.join(map(str, allowed))}")
        return value
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _fail(key, value, f"is not {_type_name(tp)}", fix or f"give {_type_name(tp)}, e.g. [1, 2]")
        args = typing.get_args(tp)
        elem = args[0] if args else Any
        return tuple(_coerce(elem, v, f"{key}[{i}]", fix) for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise _fail(key, value, "is not a mapping", fix or f"give the options of {key} as key: value pairs")
        return build(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise _fail(key, value, "is not true or false", fix or "use true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(key, value, "is not an integer", fix or "give a whole number, e.g. 1")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(key, value, "is not a number", fix or "give a number, e.g. 1e-3")
        if not math.isfinite(float(value)):
            raise _fail(key, value, "is not finite", fix or "give a finite number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _fail(key, value, "is not a string", fix or "give a name")
        return value
    return value


def _bounds(value: Any, meta: Mapping[str, Any], key: str, fix: str) -> None:
    if value is None or not isinstance(value, (int, float)) or isinstance(value, bool):
        items = value if isinstance(value, tuple) else ()
        if meta.get("distinct") and len(set(items)) != len(items):
            raise _fail(key, list(items), "repeats an entry", fix or "list every entry once")
        if isinstance(value, tuple) and any(k in meta for k in ("ge", "gt", "le", "lt")):
            for i, v in enumerate(value):
                _bounds(v, meta, f"{key}[{i}]", fix)
        choices = meta.get("choices")
        if choices is not None and value is not None and not isinstance(value, tuple):
            names = choices.names() if isinstance(choices, Registry) else tuple(choices)
            if value not in names:
                what = f"unknown: not a registered {choices.kind}" if isinstance(choices, Registry) \
                    else f"not one of {', '.join(names)}"
                raise _fail(key, value, f"is {what}{_suggest(value, names)}",
                            fix or f"use one of {', '.join(map(str, names))}")
        return
    for op, test, words in (("ge", lambda a, b: a >= b, "below"), ("gt", lambda a, b: a > b, "not above"),
                            ("le", lambda a, b: a <= b, "above"), ("lt", lambda a, b: a < b, "not below")):
        if op in meta and not test(value, meta[op]):
            bound = meta[op]
            rel = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}[op]
            raise _fail(key, value, f"is {words} {bound}", fix or f"use a value {rel} {bound}")


def build(cls: type[T], values: Mapping[str, Any] | None, key: str, owner: str = "") -> T:
    """An instance of dataclass `cls` from `values`: unknown names, missing values, wrong types and values
    out of the declared bounds raise one ConfigError naming `key.<name>` (`owner`: whose options these are)."""
    raw = _plain(values) or {}
    if not isinstance(raw, Mapping):
        raise _fail(key, raw, "is not a mapping", "give the options as key: value pairs")
    values = dict(raw)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in values if k not in fields]
    if unknown:
        k = unknown[0]
        whose = owner or key
        if not fields:
            raise ConfigError(f"{key}.{k} is set, but {whose} takes no options. Fix: remove {key}.{k}.")
        raise ConfigError(f"{key}.{k} is not an option of {whose}{_suggest(k, fields)}. Fix: remove it or use one of "
                          f"{', '.join(fields)}.")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, f in fields.items():
        fix = f.metadata.get("fix", "")
        if name not in values:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{key}.{name} is missing. Fix: set it ({_type_name(hints[name])}"
                                  f"{'; ' + fix if fix else ''}).")
            continue
        v = _coerce(hints[name], values[name], f"{key}.{name}", fix)
        _bounds(v, f.metadata, f"{key}.{name}", fix)
        kwargs[name] = v
    return cls(**kwargs)


def options_from_signature(fn: Callable[..., Any], skip: Sequence[str] = ()) -> type:
    """A frozen dataclass of `fn`'s keyword parameters with defaults (names in `skip` and *args/**kwargs left
    out): the typed options of a function- or class-defined component, with one source of truth."""
    target = fn.__init__ if inspect.isclass(fn) else fn
    sig = inspect.signature(target)
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # noqa: BLE001 - unresolvable annotations: accept any type
        hints = {}
    spec = []
    for p in sig.parameters.values():
        if p.name in ("self", *skip) or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is inspect.Parameter.empty:
            continue
        default = p.default
        tp = hints.get(p.name, Any)
        if isinstance(default, (list, dict, set)):
            spec.append((p.name, tp, dataclasses.field(default_factory=lambda d=default: type(d)(d))))
        else:
            spec.append((p.name, tp, dataclasses.field(default=default)))
    name = f"{getattr(fn, '__name__', 'component')}_options"
    return dataclasses.make_dataclass(name, spec, frozen=True)


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    obj: Any
    options: type


class Registry:
    """Named components of one kind (`kind`, chosen by the config key `key`)."""

    def __init__(self, kind: str, key: str, skip: Sequence[str] = ()):
        self.kind, self.key, self.skip = kind, key, tuple(skip)
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, options: type | None = None) -> Callable[[T], T]:
        """Decorator: register `obj` under `name` with the options dataclass `options` (default: from its signature)."""
        def deco(obj: T) -> T:
            if name in self._entries and self._entries[name].obj is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name, obj, options or options_from_signature(obj, self.skip))
            return obj

        return deco

    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._entries))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> typing.Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, name: str) -> Any:
        return self._entries[name].obj

    def entry(self, name: Any, key: str | None = None, hint: str = "") -> Entry:
        if name not in self._entries:
            names = self.names()
            raise ConfigError(f"{key or self.key}={name!r} is unknown: not a registered {self.kind}{_suggest(name, names)}. "
                              f"Fix: use one of {', '.join(names)}{hint}.")
        return self._entries[name]

    def get(self, name: Any, key: str | None = None) -> Any:
        return self.entry(name, key).obj

    def options(self, name: Any, values: Mapping[str, Any] | None, key: str) -> Any:
        """The typed options of component `name` from the configured `values` (at config key `key`)."""
        return build(self.entry(name).options, values, key, owner=f"{self.kind} {name!r}")


def as_dict(obj: Any) -> Any:
    """Dataclass instances (nested) as plain dicts, tuples as lists: what cache keys and results.json hold."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: as_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [as_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: as_dict(v) for k, v in obj.items()}
    return obj


# The registries. Each is filled by the module that defines its components (imported by its package).
DATASETS = Registry("dataset", "data", skip=("data_dir",))
ENCODERS = Registry("encoder", "data.encoder.name", skip=("in_dim", "out_dim"))
LOSSES = Registry("loss", "method.pretrain_loss / method.refine_loss", skip=("counts", "class_weights"))
AUGMENTERS = Registry("augmenter", "method.augment",
                      skip=("x", "y", "classes", "n_per_class", "generator", "num_classes", "seed", "device"))
SAMPLERS = Registry("sampler", "stage.<stage>.sampler", skip=("split", "y"))
WEIGHTINGS = Registry("weighting", "stage.refine.weighting", skip=("minority", "lam", "has_aug"))
OPTIMIZERS = Registry("optimizer", "stage.<stage>.optimizer", skip=("params", "lr", "weight_decay", "fused"))
TRANSFORMS = Registry("transform", "data.train_transform")
STAGES = Registry("stage", "method.stages")

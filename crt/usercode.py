"""User code named by import path in the config: an encoder, a loss, or a dataset loader, without editing crt.

- `data.encoder._target_=my_pkg.Enc`: `Enc(in_dim=..., out_dim=..., **other data.encoder keys)` is the
  encoder (an nn.Module mapping a batch of inputs to N x out_dim features; `name` is ignored).
- `method.pretrain_loss=my_pkg.MyLoss` / `method.refine_loss=...`: a `crt.losses.ClassLoss` subclass, built as
  `MyLoss(train_class_counts, **method.<stage>_loss_kwargs)`, returning one loss per sample.
- `+data._target_=my_pkg.load`: `load(data_dir=..., **other data keys)` returns a `crt.data.RawData`; the
  imbalance protocol of the data config is applied to it as for the built-in datasets.
run.py puts the working directory on the import path, so modules there are found.

An import path read from a file (a model folder's model.json, the config stored in it) is never imported
unless the caller opts in (`crt.load(path, trust_code=True)`, `python -m crt.predict ... trust_code=true`):
`allow_user_code` refuses it with one paragraph, or logs the module it will import.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from crt.errors import ConfigError

log = logging.getLogger(__name__)


def is_import_path(name: Any) -> bool:
    return isinstance(name, str) and "." in name.strip(".")


def import_object(path: str, key: str, what: str) -> Any:
    """The object at `path` (module.attr), or a ConfigError naming the config key."""
    from hydra.utils import get_object

    try:
        return get_object(path)
    except Exception as err:  # noqa: BLE001 - hydra raises ImportError/ValueError variants
        why = " ".join(str(err).split())  # hydra's message spans several lines: one paragraph
        raise ConfigError(f"{key}={path!r} cannot be imported ({type(err).__name__}: {why}). Fix: give the import "
                          f"path of {what} (module.name) in a module Python can import: installed, on PYTHONPATH, "
                          "or in the working directory when running run.py.") from None


def named_user_code(config: Any) -> list[str]:
    """Import paths of the user code a typed config (in `as_dict` form) names: `_target_` entries and components
    (`{"name": ..., "options": ...}`) whose name is an import path."""
    found: list[str] = []
    if isinstance(config, dict):
        for k, v in config.items():
            if is_import_path(v) and (k == "_target_" or (k == "name" and "options" in config)):
                found.append(str(v))
            else:
                found += named_user_code(v)
    elif isinstance(config, list):
        for v in config:
            found += named_user_code(v)
    return sorted(set(found))


def source_fingerprint(paths: list[str]) -> dict[str, str]:
    """{import path: sha256 of the source file of the module it lives in}: an edit to that file changes the
    cache keys of the stages that run it (and so the skip check), so they retrain."""
    import hashlib
    import inspect
    import sys

    out = {}
    for path in paths:
        try:
            obj = import_object(path, path, "user code")
        except ConfigError:  # the stage that builds it reports it under its own config key
            continue
        module = sys.modules.get(getattr(obj, "__module__", "") or "")
        try:
            source = inspect.getsourcefile(module or obj)
        except TypeError:  # built-in: no file to hash
            source = None
        blob = open(source, "rb").read() if source else repr(getattr(module, "__version__", None)).encode()
        out[path] = hashlib.sha256(blob).hexdigest()[:16]
    return out


def allow_user_code(target: Any, key: str, where: str | os.PathLike, trust_code: bool | str, quiet: bool = False) -> None:
    """Refuse the import path `target` found at `key` of `where` unless `trust_code` is True or is `target`
    itself; when allowed, log the module that will be imported and run (`quiet`: at debug level)."""
    module = str(target).rpartition(".")[0] or str(target)
    if trust_code is True or (isinstance(trust_code, str) and trust_code == str(target)):
        level = logging.DEBUG if quiet else logging.INFO if isinstance(trust_code, str) else logging.WARNING
        log.log(level, "%s: %s=%r is user code: importing and running module %r (trust_code)", where, key, target, module)
        return
    raise ConfigError(f"{where}: {key}={target!r} is an import path; using it would import module {module!r} and run "
                      "its code, so nothing was imported or called. Fix: if you trust this folder and that module, opt "
                      "in with crt.load(path, trust_code=True) in Python or trust_code=true on the `python -m "
                      "crt.predict` command line; otherwise use a model or data config that names registered "
                      "components only.")


def check_options(obj: Any, key: str, options: dict[str, Any], fixed: tuple[str, ...] = ()) -> None:
    """The options configured for user code `obj` (built as `obj(<fixed>..., **options)`) against its signature:
    an option it does not take is a ConfigError now, not a TypeError once earlier stages have trained."""
    import inspect

    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):  # no signature to read (a builtin): checked when it is called
        return
    params = sig.parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    takes = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in fixed]
    unknown = [k for k in options if k not in takes]
    if unknown:
        from crt.registry import _suggest

        k = unknown[0]
        raise ConfigError(f"{key}.{k} is not an option of {getattr(obj, '__qualname__', obj)!r} (user code; it takes "
                          f"{', '.join(takes) or 'no options'}){_suggest(k, takes)}. Fix: remove {key}.{k} or add the "
                          "parameter to its signature.")

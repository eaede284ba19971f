"""User code named by import path in the config: an encoder, a loss, or a dataset loader, without editing crt.

- `data.encoder._target_=my_pkg.Enc`: `Enc(in_dim=..., out_dim=..., **other data.encoder keys)` is the
  encoder (an nn.Module mapping a batch of inputs to N x out_dim features; `name` is ignored).
- `method.pretrain_loss=my_pkg.MyLoss` / `method.refine_loss=...`: a `crt.losses.ClassLoss` subclass, built as
  `MyLoss(train_class_counts, **method.<stage>_loss_kwargs)`, returning one loss per sample.
- `+data._target_=my_pkg.load`: `load(data_dir=..., **other data keys)` returns a `crt.data.RawData`; the
  imbalance protocol of the data config is applied to it as for the built-in datasets.
run.py puts the working directory on the import path, so modules there are found.
"""

from __future__ import annotations

from typing import Any

from crt.errors import ConfigError


def is_import_path(name: Any) -> bool:
    return isinstance(name, str) and "." in name.strip(".")


def import_object(path: str, key: str, what: str) -> Any:
    """The object at `path` (module.attr), or a ConfigError naming the config key."""
    from hydra.utils import get_object

    try:
        return get_object(path)
    except Exception as err:  # noqa: BLE001 - hydra raises ImportError/ValueError variants
        raise ConfigError(f"{key}={path!r} cannot be imported ({type(err).__name__}: {err}). Fix: give the import "
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

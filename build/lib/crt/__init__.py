"""crt: causal representation transfer (CRT / ECRT) for imbalanced data."""

from typing import Any

from crt.errors import ConfigError, DataNotFoundError

__all__ = ["CausalResampler", "ConfigError", "DataNotFoundError", "load"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:  # torch-heavy parts load on first use, not on `import crt`
    if name == "CausalResampler":
        from crt.resampler import CausalResampler

        return CausalResampler
    if name == "load":
        from crt.export import load

        return load
    raise AttributeError(f"module 'crt' has no attribute {name!r}")

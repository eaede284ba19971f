"""crt: causal representation transfer (CRT / ECRT) for imbalanced data."""

from crt.errors import ConfigError, DataNotFoundError

__all__ = ["ConfigError", "DataNotFoundError"]
__version__ = "0.1.0"

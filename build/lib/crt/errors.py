"""User-facing errors: each names the problem and the fix, and run.py prints it without a traceback."""


class ConfigError(ValueError):
    """A user mistake in the configuration (unknown dataset, bad ratio, ...)."""


class DataNotFoundError(ConfigError):
    """Dataset files are absent and cannot be downloaded here."""

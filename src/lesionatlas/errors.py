"""Every exception and warning lesionatlas raises.

Each error carries a short ``code`` (shown as ``error [code]: message`` by the command line) so that a
user can look it up; the codes are listed in the README.
"""
from __future__ import annotations


class LesionAtlasError(Exception):
    """Base class of lesionatlas errors; ``code`` is a short stable slug."""

    code = "lesionatlas"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class DataError(LesionAtlasError):
    """The input data cannot be used as it is (missing files or columns, bad values, ...)."""

    code = "data"


class FormatError(DataError):
    """The input format could not be detected or read."""

    code = "format"


class ConfigError(LesionAtlasError):
    """A configuration value or argument is not allowed."""

    code = "config"


class ConvergenceError(LesionAtlasError):
    """An estimator could not produce a usable estimate."""

    code = "convergence"


class LesionAtlasWarning(UserWarning):
    """Base class of lesionatlas warnings."""


class DataWarning(LesionAtlasWarning):
    """The data are usable but dirty (duplicates dropped, sites not mapped, ...)."""


class ExclusionWarning(LesionAtlasWarning):
    """Patients or lesions were excluded from an analysis."""


class ConvergenceWarning(LesionAtlasWarning):
    """An estimator stopped before its convergence criteria were met."""

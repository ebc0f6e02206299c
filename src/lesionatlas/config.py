"""Configuration: frozen dataclasses, one per stage, with the defaults of ``defaults.toml``."""
from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError

#: Short axis = long axis / AXIS_RATIO (Zhou et al. 2024, ref. 56).
DEFAULT_AXIS_RATIO = 1.31
#: Volumes below this (mm3) are below the quantification limit (Zhou et al. 2024, ref. 59).
DEFAULT_LIMIT_MM3 = 200.0


@dataclass(frozen=True)
class CohortConfig:
    """How diameters become volumes.

    Parameters
    ----------
    axis_ratio : float
        Ratio of the longest diameter to the short axis, ``S = L / axis_ratio``.
    limit_mm3 : float
        Quantification limit; measured volumes below it are flagged ``below_limit``.
    """

    axis_ratio: float = DEFAULT_AXIS_RATIO
    limit_mm3: float = DEFAULT_LIMIT_MM3

    def __post_init__(self) -> None:
        if not self.axis_ratio > 0:
            raise ConfigError(f"axis_ratio must be > 0, got {self.axis_ratio!r}")
        if not self.limit_mm3 >= 0:
            raise ConfigError(f"limit_mm3 must be >= 0, got {self.limit_mm3!r}")


@dataclass(frozen=True)
class SelectionConfig:
    """The paper's inclusion criteria.

    Parameters
    ----------
    require_target_measurements : bool
        Exclude patients without a target-lesion longitudinal measurement (at least ``min_target_scans``
        scans of one target lesion).
    min_target_scans : int
        Scans a target lesion needs to count as longitudinal.
    max_baseline_days_before : float
        Exclude patients whose baseline scan is more than this many days before day 0 (12 weeks).
    """

    require_target_measurements: bool = True
    min_target_scans: int = 2
    max_baseline_days_before: float = 84.0

    def __post_init__(self) -> None:
        if self.min_target_scans < 1:
            raise ConfigError(f"min_target_scans must be >= 1, got {self.min_target_scans!r}")
        if not self.max_baseline_days_before >= 0:
            raise ConfigError(
                f"max_baseline_days_before must be >= 0, got {self.max_baseline_days_before!r}"
            )

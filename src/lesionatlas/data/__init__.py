"""The data layer: the canonical Cohort, readers, validation, selection and the simulator."""
from .cohort import Cohort, diameter_from_volume, volume_from_diameter
from .organs import ORGAN_GROUPS, OrganMap, load_organ_map, map_sites
from .readers import RawTables, detect_format, read_cohort, read_raw
from .validate import ValidationReport, validate_cohort

__all__ = [
    "ORGAN_GROUPS",
    "Cohort",
    "OrganMap",
    "RawTables",
    "ValidationReport",
    "detect_format",
    "diameter_from_volume",
    "load_organ_map",
    "map_sites",
    "read_cohort",
    "read_raw",
    "validate_cohort",
    "volume_from_diameter",
]

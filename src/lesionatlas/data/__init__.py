"""The data layer: the canonical Cohort, readers, validation, selection and the simulator."""
from .cohort import Cohort, diameter_from_volume, volume_from_diameter
from .organs import ORGAN_GROUPS, OrganMap, load_organ_map, map_sites
from .readers import RawTables, detect_format, read_cohort, read_raw
from .select import Selection, select_patients
from .simulate import PRESETS, SimulatedCohort, Truth, simulate_cohort, write_simulation
from .validate import ValidationReport, validate_cohort, validate_tables

__all__ = [
    "PRESETS",
    "SimulatedCohort",
    "Truth",
    "simulate_cohort",
    "write_simulation",
    "ORGAN_GROUPS",
    "Cohort",
    "OrganMap",
    "RawTables",
    "Selection",
    "ValidationReport",
    "detect_format",
    "diameter_from_volume",
    "load_organ_map",
    "map_sites",
    "read_cohort",
    "read_raw",
    "select_patients",
    "validate_cohort",
    "validate_tables",
    "volume_from_diameter",
]

"""Readers: every input format into the canonical Cohort."""
from .base import RawTables
from .detect import FORMATS, cohort_from_raw, detect_format, read_cohort, read_raw

__all__ = ["FORMATS", "RawTables", "cohort_from_raw", "detect_format", "read_cohort", "read_raw"]

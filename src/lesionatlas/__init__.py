"""lesionatlas: lesion-level response and progression dynamics of metastatic cancer cohorts.

Public names are imported lazily, so ``import lesionatlas`` stays light (no jax until a fit is made).
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Cohort": "lesionatlas.data",
    "read_cohort": "lesionatlas.data",
    "validate_cohort": "lesionatlas.data",
    "select_patients": "lesionatlas.data",
    "simulate_cohort": "lesionatlas.data",
    "TGIModel": "lesionatlas.tgi",
    "TGIFit": "lesionatlas.tgi",
    "derive_events": "lesionatlas.events",
    "LesionEvents": "lesionatlas.events",
    "EventRules": "lesionatlas.events",
    "MixedCox": "lesionatlas.hazards",
    "MixedCoxFit": "lesionatlas.hazards",
    "fit_organ_hazards": "lesionatlas.hazards",
    "OrganHazards": "lesionatlas.hazards",
    "classify_organs": "lesionatlas.phenotypes",
    "OrganPhenotypes": "lesionatlas.phenotypes",
    "cluster_sequences": "lesionatlas.patterns",
    "ProgressionPatterns": "lesionatlas.patterns",
    "baseline_features": "lesionatlas.patterns",
    "train_group_predictor": "lesionatlas.patterns",
    "GroupPredictor": "lesionatlas.patterns",
    "compare_survival": "lesionatlas.survival",
    "lesion_parameter_statistics": "lesionatlas.stats",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lesionatlas' has no attribute {name!r}")


__all__ = sorted(_LAZY)

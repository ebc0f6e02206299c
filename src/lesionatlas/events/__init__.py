"""Lesion events: each lesion's time to response and to progression, and each patient's organ sequence.

Target lesions from their fitted growth curves (:mod:`.target`), non-target and new lesions from their
assessments (:mod:`.assessed`), organ progression sequences (:mod:`.sequence`), all put together by
:func:`derive_events` into a :class:`LesionEvents` (:mod:`.derive`). The rules are an :class:`EventRules`.
"""
from .assessed import new_lesion_days, nontarget_days
from .derive import COVARIATES, LesionEvents, derive_events, lesion_parameters
from .rules import RECIST, EventRules
from .sequence import organ_sequences, sequence_tuples
from .target import Crossings, crossing_days, curve_volume

__all__ = [
    "COVARIATES",
    "RECIST",
    "Crossings",
    "EventRules",
    "LesionEvents",
    "crossing_days",
    "curve_volume",
    "derive_events",
    "lesion_parameters",
    "new_lesion_days",
    "nontarget_days",
    "organ_sequences",
    "sequence_tuples",
]

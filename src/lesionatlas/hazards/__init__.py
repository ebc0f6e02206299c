"""Hazards: the mixed-effects Cox model (coxme's method).

Public names: :class:`MixedCox` (the spec) and :class:`MixedCoxFit` (its result); the pure numerical
core is :mod:`lesionatlas.hazards.partial_likelihood`.
"""
from .mixed_cox import MixedCox, MixedCoxFit

__all__ = ["MixedCox", "MixedCoxFit"]

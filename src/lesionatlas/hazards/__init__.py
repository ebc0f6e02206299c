"""Hazards: the mixed-effects Cox model (coxme's method).

Public names: :class:`MixedCox` (the spec) and :class:`MixedCoxFit` (its result); the pure numerical
core is :mod:`lesionatlas.hazards.partial_likelihood`; :func:`fit_organ_hazards` (covariate selection, organ
hazard ratios, stratified models) returns an :class:`OrganHazards`.
"""
from .mixed_cox import MixedCox, MixedCoxFit
from .selection import DEFAULT_CANDIDATES, OrganHazards, fit_organ_hazards

__all__ = ["DEFAULT_CANDIDATES", "MixedCox", "MixedCoxFit", "OrganHazards", "fit_organ_hazards"]

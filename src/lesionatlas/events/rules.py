"""The event rules: when a lesion responds and when it progresses (configuration, no logic beyond checks).

The paper's rules (Zhou et al. 2024, Methods; FACTS.md step 5) are the defaults of :class:`EventRules`;
:data:`RECIST` (or ``EventRules.recist()``) holds the volume equivalents of RECIST 1.1's diameter rules.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from ..errors import ConfigError

Reference = Literal["day0", "first_measurement"]

#: RECIST's -30% diameter as a volume change: 1 - 0.7**3 (volume scales with the cube of the diameter).
RECIST_RESPONSE_FRACTION: float = 1.0 - 0.7**3  # 0.657
#: RECIST's +20% diameter as a volume change: 1.2**3 - 1.
RECIST_PROGRESSION_FRACTION: float = 1.2**3 - 1.0  # 0.728


@dataclass(frozen=True)
class EventRules:
    r"""Rules that turn curves and assessments into lesion response and progression days.

    Parameters
    ----------
    response_fraction : float
        A target lesion responds on the first day :math:`t \ge 0` with
        :math:`V(t) \le (1 - \text{response\_fraction})\, B` (paper: 0.20), :math:`B` the baseline volume.
    progression_fraction : float
        A target lesion progresses on the first day :math:`t \ge 0` with
        :math:`V(t) \ge (1 + \text{progression\_fraction})\, N(t)` (paper: 0.30) ...
    progression_mm3 : float or None
        ... **or** :math:`V(t) \ge N(t) + \text{progression\_mm3}` (paper: 200 mm3); ``None`` switches the
        absolute rule off. :math:`N(t)` is the running nadir, the smallest volume since the reference.
        Either rule suffices, so the threshold is :math:`\min((1 + p) N, N + a)`.
    reference : {"day0", "first_measurement"}
        What the baseline :math:`B` and the start of the running nadir are. ``"day0"`` (default): the
        fitted curve at treatment start, :math:`B = V(0) = V_0 e^{-K_g T_0}`, nadir over :math:`t \ge 0`
        (the simulator's convention, ``truth.json``, so that planted truth is recovered).
        ``"first_measurement"``: the baseline scan's volume :math:`B = V_0` (the regressor of the model,
        observed on day :math:`T_0 \le 0`), and the running nadir starts from it,
        :math:`N(t) = \min(V_0, \min_{0 \le s \le t} V(s))`.
    response_statuses : tuple of str
        Assessment statuses that mark a non-target lesion's response (paper: PR/CR; "absent" is how
        some trials record a lesion that has gone). Only those before the lesion's first progression count.
    progression_statuses : tuple of str
        Statuses that mark a non-target lesion's progression (unequivocal progression, ``PD``).
    new_statuses : tuple of str
        Statuses that mark when a new lesion is seen; a new lesion without one progresses at its first
        assessment.
    name : str
        A label for reports (``"paper"``, ``"recist"``, ...).

    Examples
    --------
    >>> EventRules().progression_mm3
    200.0
    >>> round(EventRules.recist().response_fraction, 3)
    0.657
    """

    response_fraction: float = 0.20
    progression_fraction: float = 0.30
    progression_mm3: float | None = 200.0
    reference: Reference = "day0"
    response_statuses: tuple[str, ...] = ("CR", "PR", "absent")
    progression_statuses: tuple[str, ...] = ("PD",)
    new_statuses: tuple[str, ...] = ("new",)
    name: str = "paper"

    def __post_init__(self) -> None:
        if not (isinstance(self.response_fraction, (int, float)) and 0.0 < self.response_fraction < 1.0):
            raise ConfigError(f"EventRules.response_fraction must be in (0, 1), got {self.response_fraction!r}")
        if not (isinstance(self.progression_fraction, (int, float)) and 0.0 < self.progression_fraction
                and math.isfinite(self.progression_fraction)):
            raise ConfigError(
                f"EventRules.progression_fraction must be a finite number > 0, got {self.progression_fraction!r}"
            )
        if self.progression_mm3 is not None and not (
            isinstance(self.progression_mm3, (int, float)) and self.progression_mm3 > 0
        ):
            raise ConfigError(f"EventRules.progression_mm3 must be > 0 or None, got {self.progression_mm3!r}")
        if self.reference not in ("day0", "first_measurement"):
            raise ConfigError(
                f"EventRules.reference must be 'day0' or 'first_measurement', got {self.reference!r}"
            )
        for name in ("response_statuses", "progression_statuses", "new_statuses"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"EventRules.{name} must be a tuple of status strings, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        if set(self.response_statuses) & set(self.progression_statuses):
            raise ConfigError("EventRules.response_statuses and progression_statuses must not overlap")

    @classmethod
    def recist(cls, **changes: Any) -> EventRules:
        """Volume equivalents of RECIST 1.1: -30% diameter (-65.7% volume), +20% diameter (+72.8% volume).

        RECIST's absolute rule (+5 mm on the *sum* of diameters) has no per-lesion volume equivalent, so
        the absolute rule is off (``progression_mm3=None``) unless given in ``changes``.
        """
        base: dict[str, Any] = {
            "response_fraction": RECIST_RESPONSE_FRACTION,
            "progression_fraction": RECIST_PROGRESSION_FRACTION,
            "progression_mm3": None,
            "name": "recist",
        }
        base.update(changes)
        return cls(**base)

    def to_dict(self) -> dict[str, Any]:
        """The rules as JSON-ready values (tuples as lists)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EventRules:
        """Inverse of :meth:`to_dict` (unknown keys raise :class:`ConfigError`)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"EventRules: unknown settings {unknown}; allowed are {sorted(known)}")
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items()})


#: The RECIST preset.
RECIST: EventRules = EventRules.recist()

__all__ = ["RECIST", "RECIST_PROGRESSION_FRACTION", "RECIST_RESPONSE_FRACTION", "EventRules", "Reference"]

r"""Target lesions: response and progression days from each lesion's tumor growth curve.

For :math:`t \ge 0` the curve is :math:`V(t) = V_s\, g(t)` with :math:`V_s = V_0 e^{-K_g T_0} = V(0)` and

.. math:: g(t) = F e^{K_g t} + (1 - F) e^{-K_d t}, \qquad h(t) = \log g(t).

:math:`h` is convex (a log-sum of exponentials of linear functions), with
:math:`h'(t) = K_g w - K_d (1 - w)`, :math:`w = \operatorname{expit}(\operatorname{logit} F + (K_g + K_d) t)`,
so :math:`g` has a single minimum, at

.. math:: t^* = \max\left(0, \frac{\log[(1 - F) K_d / (F K_g)]}{K_g + K_d}\right),

the nadir (:math:`t^* = \infty` when :math:`F = 0`). The running nadir is therefore
:math:`N(t) = V(\min(t, t^*))` (and, with ``reference="first_measurement"``, the baseline volume :math:`V_0`
too). With baseline :math:`B`:

- **response** is the root of :math:`h(t) = \log((1 - r) B / V_s)` on the decreasing branch
  :math:`[0, t^*]` (none when :math:`h(t^*)` stays above it);
- **progression** is the root of :math:`h(t) = \log(\min((1 + p) N, N + a) / V_s)` on the increasing
  branch :math:`(t^*, \infty)`, :math:`N = N(t^*)`: before the nadir a volume is its own running nadir
  and cannot be 30% above it.

Both roots are found by Newton's method on :math:`h`, vectorised over lesions (a loop over iterations
only): from the side where a convex function lies above its target Newton's iterates converge
monotonically and never overshoot the root (response from :math:`t = 0`, progression from
:math:`t_R = \max(t^*, (\log \text{target} - \log F)/K_g)`, where :math:`g \ge F e^{K_g t}` is already above
it); working with :math:`h = \log g` keeps long follow-up from overflowing and makes the increasing branch
nearly linear, so a few steps suffice. This is the convention of the simulator's
``_crossing_times`` (baseline and nadir from day 0, "or" of the two progression rules), so planted truth
is recovered exactly.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.special import expit

from .rules import EventRules

#: Newton iterations at most; the loop stops earlier once every lesion has converged.
MAX_ITER = 200
#: Relative step below which an iterate counts as converged.
RTOL = 1e-13


class Crossings(NamedTuple):
    """Latent (uncensored) event days of target-lesion curves; ``inf`` when the curve never crosses."""

    response_day: np.ndarray
    progression_day: np.ndarray
    nadir_day: np.ndarray
    baseline_mm3: np.ndarray
    nadir_mm3: np.ndarray


def _h(t: np.ndarray, log_f: np.ndarray, log_1mf: np.ndarray, kg: np.ndarray, kd: np.ndarray) -> np.ndarray:
    return np.logaddexp(log_f + kg * t, log_1mf - kd * t)


def _dh(t: np.ndarray, logit_f: np.ndarray, kg: np.ndarray, kd: np.ndarray) -> np.ndarray:
    w = expit(logit_f + (kg + kd) * t)
    return kg * w - kd * (1.0 - w)


def crossing_days(
    kg: np.ndarray,
    kd: np.ndarray,
    f: np.ndarray,
    v0: np.ndarray,
    t0: np.ndarray,
    rules: EventRules | None = None,
) -> Crossings:
    r"""Exact first response and progression days of tumor growth curves (days from treatment start).

    Parameters
    ----------
    kg, kd : array_like
        Growth and decay rates (1/day, > 0).
    f : array_like
        Resistant fraction, in [0, 1].
    v0, t0 : array_like
        Baseline volume (mm3) and its day (<= 0): :math:`V(0) = V_0 e^{-K_g T_0}`.
    rules : EventRules
        Thresholds and reference (default: the paper's).

    Returns
    -------
    Crossings
        ``response_day``, ``progression_day`` (``inf`` when never), ``nadir_day`` (:math:`t^*`, ``inf``
        when the curve decreases for ever), ``baseline_mm3`` (:math:`B`) and ``nadir_mm3``
        (:math:`N(t^*)`, the lowest volume the running nadir reaches).

    Notes
    -----
    Pure numpy, vectorised over lesions; parameters that are not finite give ``nan`` days.

    Examples
    --------
    >>> import numpy as np
    >>> c = crossing_days(np.array([0.01]), np.array([-np.log(0.8) / 50]), np.array([0.0]),
    ...                   np.array([1000.0]), np.array([0.0]))
    >>> float(np.round(c.response_day[0], 9)), float(c.progression_day[0])
    (50.0, inf)
    """
    rules = rules or EventRules()
    kg, kd, f, v0, t0 = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (kg, kd, f, v0, t0)))
    kg, kd, f, v0, t0 = (np.array(a, dtype=np.float64) for a in (kg, kd, f, v0, t0))
    valid = (np.isfinite(kg) & np.isfinite(kd) & np.isfinite(f) & np.isfinite(v0) & np.isfinite(t0)
             & (kg > 0) & (kd > 0) & (f >= 0) & (f <= 1) & (v0 > 0))
    # neutral values for invalid rows (their results are set to nan at the end)
    kg = np.where(valid, kg, 0.01)
    kd = np.where(valid, kd, 0.01)
    f = np.where(valid, f, 0.5)
    v0 = np.where(valid, v0, 1.0)
    t0 = np.where(valid, t0, 0.0)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        log_f = np.log(f)
        log_1mf = np.log1p(-f)
        logit_f = log_f - log_1mf
        log_vs = np.log(v0) - kg * t0  # log V(0)
        # ---- nadir
        t_star = np.where(f == 0, np.inf,
                          np.where(f == 1, 0.0, np.maximum(0.0, (np.log(kd / kg) - logit_f) / (kg + kd))))
        finite_star = np.isfinite(t_star)
        h_star = np.where(finite_star, _h(np.where(finite_star, t_star, 0.0), log_f, log_1mf, kg, kd), -np.inf)
        baseline = np.exp(log_vs) if rules.reference == "day0" else v0
        log_b = np.log(baseline)

        # ---- response: h(t) = log((1 - r) B / Vs) on [0, t*]
        log_r = np.log1p(-rules.response_fraction) + log_b - log_vs
        immediate = log_r >= 0.0  # h(0) = 0: already at or below the threshold on day 0
        responds = (h_star <= log_r) & ~immediate
        t = np.zeros_like(kg)
        active = responds.copy()
        for _ in range(MAX_ITER):
            if not active.any():
                break
            ta = t[active]
            step = (_h(ta, log_f[active], log_1mf[active], kg[active], kd[active]) - log_r[active]) / _dh(
                ta, logit_f[active], kg[active], kd[active])
            new = np.minimum(ta - step, t_star[active])
            new = np.where(np.isnan(new), t_star[active], new)  # a flat tangent at a double root
            done = ~(np.abs(new - ta) > RTOL * (1.0 + np.abs(new)))  # nan counts as done
            t[active] = new
            idx = np.nonzero(active)[0]
            active[idx[done]] = False
        response = np.where(immediate, 0.0, np.where(responds, t, np.inf))

        # ---- progression: h(t) = log(threshold(N) / Vs) on (t*, inf)
        v_star = np.exp(log_vs + h_star)
        nadir = v_star if rules.reference == "day0" else np.minimum(v0, v_star)
        first_nadir = np.exp(log_vs) if rules.reference == "day0" else np.minimum(v0, np.exp(log_vs))

        def threshold(n: np.ndarray) -> np.ndarray:
            up = (1.0 + rules.progression_fraction) * n
            return up if rules.progression_mm3 is None else np.minimum(up, n + rules.progression_mm3)

        at_start = np.exp(log_vs) >= threshold(first_nadir)  # only with a baseline below V(0)
        log_p = np.log(threshold(nadir)) - log_vs
        grows = (f > 0) & ~at_start
        t = np.maximum(t_star, (log_p - log_f) / kg)
        t = np.where(grows & np.isfinite(t), t, 0.0)
        active = grows.copy()
        for _ in range(MAX_ITER):
            if not active.any():
                break
            ta = t[active]
            step = (_h(ta, log_f[active], log_1mf[active], kg[active], kd[active]) - log_p[active]) / _dh(
                ta, logit_f[active], kg[active], kd[active])
            new = np.maximum(ta - np.maximum(step, 0.0), t_star[active])
            new = np.where(np.isnan(new), ta, new)
            done = ~(np.abs(new - ta) > RTOL * (1.0 + np.abs(new)))
            t[active] = new
            idx = np.nonzero(active)[0]
            active[idx[done]] = False
        progression = np.where(at_start, 0.0, np.where(grows, t, np.inf))

    nan = np.full_like(kg, np.nan)
    return Crossings(
        response_day=np.where(valid, response, nan),
        progression_day=np.where(valid, progression, nan),
        nadir_day=np.where(valid, t_star, nan),
        baseline_mm3=np.where(valid, baseline, nan),
        nadir_mm3=np.where(valid, nadir, nan),
    )


def curve_volume(t: np.ndarray, kg: np.ndarray, kd: np.ndarray, f: np.ndarray, v0: np.ndarray,
                 t0: np.ndarray) -> np.ndarray:
    """The model volume (mm3) on days ``t >= 0`` (numpy; broadcasting), for checks and plots."""
    with np.errstate(divide="ignore"):
        log_f, log_1mf = np.log(f), np.log1p(-np.asarray(f, dtype=float))
    return np.exp(np.log(v0) - kg * t0 + _h(np.asarray(t, dtype=float), log_f, log_1mf, kg, kd))


__all__ = ["Crossings", "crossing_days", "curve_volume"]

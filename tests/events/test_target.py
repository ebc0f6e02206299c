"""Target lesions: exact crossing days of the tumor growth curve (lesionatlas.events.target).

Tolerances: roots agree with closed forms to 1e-9 days (Newton to machine precision on log g); against a
grid of step ``STEP`` days the first grid day at or past the threshold lies within two steps after the root
(the grid's running nadir is at most one step late, which can delay its threshold by at most that).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lesionatlas.errors import ConfigError
from lesionatlas.events import RECIST, EventRules, crossing_days, curve_volume


def one(**kw):
    args = {"kg": 0.01, "kd": 0.02, "f": 0.1, "v0": 1000.0, "t0": 0.0}
    rules = kw.pop("rules", None)
    args.update(kw)
    c = crossing_days(*(np.array([args[k]], dtype=float) for k in ("kg", "kd", "f", "v0", "t0")), rules)
    return type(c)(*(x[0] for x in c))


# ------------------------------------------------------------------ hand-made curves with known days
def test_pure_decay_hits_exactly_80_percent_at_day_50():
    c = one(kg=0.01, kd=-math.log(0.8) / 50.0, f=0.0)
    assert c.response_day == pytest.approx(50.0, abs=1e-9)
    assert c.progression_day == math.inf
    assert c.nadir_day == math.inf


def test_pure_growth_relative_rule_at_day_40():
    # V(0) = 100: 1.3 x 100 = 130 < 100 + 200, so the relative rule fires first
    c = one(kg=math.log(1.3) / 40.0, f=1.0, v0=100.0)
    assert c.progression_day == pytest.approx(40.0, abs=1e-9)
    assert c.response_day == math.inf
    assert c.nadir_day == 0.0


def test_pure_growth_absolute_rule_fires_first_on_large_lesions():
    # V(0) = 1000: nadir + 200 = 1200 < 1300
    kg = 0.01
    c = one(kg=kg, f=1.0, v0=1000.0)
    assert c.progression_day == pytest.approx(math.log(1.2) / kg, abs=1e-9)
    # without the absolute rule: 1.3
    c = one(kg=kg, f=1.0, v0=1000.0, rules=EventRules(progression_mm3=None))
    assert c.progression_day == pytest.approx(math.log(1.3) / kg, abs=1e-9)


def test_baseline_before_day0_uses_curve_at_day0():
    # V(0) = V0 exp(-kg T0); with F = 1 and T0 = -20 the relative rule from V(0) still needs 1.3x
    kg = math.log(1.3) / 40.0
    c = one(kg=kg, f=1.0, v0=50.0, t0=-20.0)
    assert c.baseline_mm3 == pytest.approx(50.0 * math.exp(20 * kg))
    assert c.progression_day == pytest.approx(40.0, abs=1e-9)
    # reference = first measurement: the nadir starts at V0 = 50, so V reaches 1.3 x 50 at day 40 - 20 = 20
    c = one(kg=kg, f=1.0, v0=50.0, t0=-20.0, rules=EventRules(reference="first_measurement"))
    assert c.baseline_mm3 == 50.0
    assert c.progression_day == pytest.approx(20.0, abs=1e-9)


def test_first_measurement_reference_can_progress_on_day0():
    # grew 1.5x between the baseline scan and day 0: already 30% above the baseline-scan nadir
    kg = math.log(1.5) / 30.0
    c = one(kg=kg, kd=0.05, f=0.5, v0=100.0, t0=-30.0, rules=EventRules(reference="first_measurement"))
    assert c.progression_day == 0.0


def test_nadir_and_both_crossings_on_a_v_shaped_curve():
    kg, kd, f, v0 = 0.01, 0.05, 0.05, 2000.0
    c = one(kg=kg, kd=kd, f=f, v0=v0)
    t_star = math.log((1 - f) * kd / (f * kg)) / (kg + kd)
    assert c.nadir_day == pytest.approx(t_star, rel=1e-12)
    g = lambda t: f * math.exp(kg * t) + (1 - f) * math.exp(-kd * t)  # noqa: E731
    assert g(c.response_day) == pytest.approx(0.8, rel=1e-10)
    nadir = v0 * g(t_star)
    assert c.nadir_mm3 == pytest.approx(nadir, rel=1e-12)
    assert v0 * g(c.progression_day) == pytest.approx(min(1.3 * nadir, nadir + 200.0), rel=1e-10)
    assert c.response_day < t_star < c.progression_day


def test_shallow_response_never_reaches_threshold():
    c = one(kg=0.01, kd=0.01, f=0.45)  # nadir well above 0.8 V(0)
    assert c.response_day == math.inf
    assert math.isfinite(c.progression_day)


def test_recist_preset_values():
    assert RECIST.response_fraction == pytest.approx(0.657, abs=5e-4)
    assert RECIST.progression_fraction == pytest.approx(0.728, abs=5e-4)
    assert RECIST.progression_mm3 is None
    kg = 0.01
    c = one(kg=kg, f=1.0, v0=1e5, rules=RECIST)
    assert c.progression_day == pytest.approx(math.log(1.2**3) / kg, abs=1e-9)
    kd = 0.01
    c = one(kd=kd, f=0.0, rules=RECIST)
    assert c.response_day == pytest.approx(math.log(1 / 0.7**3) / kd, abs=1e-9)


def test_invalid_parameters_give_nan():
    kg = np.array([np.nan, 0.01, -1.0, 0.01, 0.01])
    kd = np.array([0.01, 0.01, 0.01, 0.01, 0.01])
    f = np.array([0.1, 1.5, 0.1, 0.1, 0.1])
    v0 = np.array([100.0, 100.0, 100.0, 0.0, 100.0])
    c = crossing_days(kg, kd, f, v0, np.zeros(5))
    assert np.isnan(c.response_day[:4]).all() and np.isnan(c.progression_day[:4]).all()
    assert np.isfinite(c.nadir_day[4])


@pytest.mark.parametrize(
    "kw",
    [{"response_fraction": 0.0}, {"response_fraction": 1.0}, {"progression_fraction": -0.1},
     {"progression_mm3": 0.0}, {"reference": "nadir"}, {"response_statuses": "PR"},
     {"response_statuses": ("PD",)}],
)
def test_rules_are_checked(kw):
    with pytest.raises(ConfigError):
        EventRules(**kw)


def test_rules_round_trip_dict():
    r = EventRules.recist(progression_mm3=100.0)
    assert EventRules.from_dict(r.to_dict()) == r
    with pytest.raises(ConfigError):
        EventRules.from_dict({"bogus": 1})


# ------------------------------------------------------------------ against a fine grid
STEP = 0.02
HORIZON = 1500.0


def _grid_days(kg, kd, f, v0, t0, rules):
    t = np.arange(0.0, HORIZON, STEP)
    v = curve_volume(t[None, :], kg[:, None], kd[:, None], f[:, None], v0[:, None], t0[:, None])
    v_start = v[:, :1]
    base = v_start if rules.reference == "day0" else v0[:, None]
    nadir = np.minimum.accumulate(v, axis=1)
    if rules.reference == "first_measurement":
        nadir = np.minimum(nadir, v0[:, None])
    up = (1 + rules.progression_fraction) * nadir
    thr = up if rules.progression_mm3 is None else np.minimum(up, nadir + rules.progression_mm3)
    resp_hit = v <= (1 - rules.response_fraction) * base
    prog_hit = v >= thr
    first = lambda hit: np.where(hit.any(axis=1), t[hit.argmax(axis=1)], np.inf)  # noqa: E731
    return first(resp_hit), first(prog_hit)


@pytest.mark.parametrize("rules", [EventRules(), RECIST, EventRules(reference="first_measurement")],
                         ids=["paper", "recist", "first_measurement"])
def test_agrees_with_fine_grid(rules):
    rng = np.random.default_rng(7)
    n = 300
    kg = np.exp(rng.uniform(np.log(1e-3), np.log(0.025), n))
    kd = np.exp(rng.uniform(np.log(1e-3), np.log(0.2), n))
    f = np.concatenate([[0.0, 1.0], 1 / (1 + np.exp(-rng.normal(-2.5, 2.0, n - 2)))])
    v0 = np.exp(rng.uniform(np.log(50), np.log(1e5), n))
    t0 = -rng.uniform(0, 40, n)
    c = crossing_days(kg, kd, f, v0, t0, rules)
    g_resp, g_prog = _grid_days(kg, kd, f, v0, t0, rules)
    for exact, grid in ((c.response_day, g_resp), (c.progression_day, g_prog)):
        inside = exact < HORIZON - 1.0
        assert np.array_equal(np.isfinite(grid[inside]), np.ones(inside.sum(), bool))
        assert np.all(grid[inside] >= exact[inside] - 1e-9)
        assert np.all(grid[inside] <= exact[inside] + 2 * STEP + 1e-9)
        assert np.all(np.isinf(grid[~inside]) | (grid[~inside] >= HORIZON - 1.0 - 2 * STEP))
    assert np.isfinite(c.response_day).sum() > 50 and np.isfinite(c.progression_day).sum() > 50


# ------------------------------------------------------------------ properties
params = st.tuples(
    st.floats(1e-4, 0.05),  # kg
    st.floats(1e-4, 0.3),  # kd
    st.one_of(st.just(0.0), st.just(1.0), st.floats(0.0, 1.0)),  # f
    st.floats(10.0, 1e6),  # v0
    st.floats(-100.0, 0.0),  # t0
)
rule_sets = st.sampled_from([EventRules(), RECIST, EventRules(reference="first_measurement"),
                             EventRules(progression_mm3=None, response_fraction=0.5)])


def _v(t, kg, kd, f, v0, t0):
    return float(curve_volume(np.array(t), kg, kd, f, v0, t0))


@settings(max_examples=300, deadline=None)
@given(params, rule_sets)
def test_crossing_invariants(p, rules):
    kg, kd, f, v0, t0 = p
    c = one(kg=kg, kd=kd, f=f, v0=v0, t0=t0, rules=rules)
    r, q, ts = c.response_day, c.progression_day, c.nadir_day
    # response (if any) on the decreasing branch, progression (if any) on the increasing one
    assert r >= 0 and q >= 0
    if math.isfinite(r):
        assert r <= ts + 1e-9
    if math.isfinite(q) and q > 0:
        assert q >= ts - 1e-9
    if math.isfinite(r) and math.isfinite(q) and q > 0:
        assert r < q
    # exact thresholds at the roots
    base = c.baseline_mm3
    if math.isfinite(r) and r > 0:
        assert _v(r, *p) == pytest.approx((1 - rules.response_fraction) * base, rel=1e-8)
        assert _v(0.999 * r, *p) > (1 - rules.response_fraction) * base
    if math.isfinite(q) and q > 0 and q < 5e4:
        n = c.nadir_mm3
        thr = (1 + rules.progression_fraction) * n
        if rules.progression_mm3 is not None:
            thr = min(thr, n + rules.progression_mm3)
        assert _v(q, *p) == pytest.approx(thr, rel=1e-7)
        assert _v(max(ts, 0.999 * q), *p) <= thr * (1 + 1e-12)
    # f = 0 never progresses after day 0 (day 0 itself: pre-treatment growth above a baseline-scan nadir)
    if f == 0.0:
        assert q == math.inf or (q == 0.0 and rules.reference == "first_measurement")
    if f == 1.0 and rules.reference == "day0":
        assert r == math.inf


@settings(max_examples=150, deadline=None)
@given(params, st.floats(0.05, 0.9), st.floats(0.05, 0.9), st.floats(0.05, 2.0), st.floats(0.05, 2.0))
def test_stricter_thresholds_are_later(p, r1, r2, p1, p2):
    kg, kd, f, v0, t0 = p
    lo_r, hi_r = sorted((r1, r2))
    lo_p, hi_p = sorted((p1, p2))
    a = one(kg=kg, kd=kd, f=f, v0=v0, t0=t0, rules=EventRules(response_fraction=lo_r, progression_fraction=lo_p))
    b = one(kg=kg, kd=kd, f=f, v0=v0, t0=t0, rules=EventRules(response_fraction=hi_r, progression_fraction=hi_p))
    for later, earlier in ((b.response_day, a.response_day), (b.progression_day, a.progression_day)):
        assert later == math.inf if earlier == math.inf else later >= earlier - 1e-9 * (1 + earlier)


@settings(max_examples=150, deadline=None)
@given(params, st.floats(1.0, 100.0))
def test_scale_invariance_and_absolute_rule(p, scale):
    kg, kd, f, v0, t0 = p
    relative = EventRules(progression_mm3=None)
    a = one(kg=kg, kd=kd, f=f, v0=v0, t0=t0, rules=relative)
    b = one(kg=kg, kd=kd, f=f, v0=v0 * scale, t0=t0, rules=relative)
    assert b.response_day == pytest.approx(a.response_day, rel=1e-9, abs=1e-9)
    assert b.progression_day == pytest.approx(a.progression_day, rel=1e-9, abs=1e-9)
    # with the absolute +200 mm3 rule a bigger lesion progresses no later
    a = one(kg=kg, kd=kd, f=f, v0=v0, t0=t0)
    b = one(kg=kg, kd=kd, f=f, v0=v0 * scale, t0=t0)
    assert b.progression_day <= a.progression_day + 1e-9 * (1 + a.progression_day)


def test_vectorised_equals_one_by_one_and_float32_inputs():
    rng = np.random.default_rng(3)
    kg, kd = rng.uniform(1e-3, 0.02, 20), rng.uniform(1e-3, 0.1, 20)
    f, v0, t0 = rng.uniform(0, 1, 20), rng.uniform(100, 5000, 20), -rng.uniform(0, 20, 20)
    c = crossing_days(kg, kd, f, v0, t0)
    for i in range(0, 20, 5):
        ci = one(kg=kg[i], kd=kd[i], f=f[i], v0=v0[i], t0=t0[i])
        assert ci.response_day == c.response_day[i] or (math.isinf(ci.response_day) and math.isinf(c.response_day[i]))
    c32 = crossing_days(*(a.astype(np.float32) for a in (kg, kd, f, v0, t0)))
    assert c32.response_day.dtype == np.float64
    fin = np.isfinite(c.progression_day)
    np.testing.assert_allclose(c32.progression_day[fin], c.progression_day[fin], rtol=1e-5)

"""The TGI volume formula (FACTS.md step 3) and its parameter transforms."""
from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tgi_simulate import true_volume

from lesionatlas.tgi.model import log_volume, log_volume_phi, params_to_phi, phi_to_params, volume


@pytest.mark.usefixtures("x64")
def test_hand_computed_points():
    # before treatment: V0 exp(Kg (t - T0)) = 1000 exp(0.01 * 5)
    assert float(volume(-5.0, 0.01, 0.03, 0.2, 1000.0, -10.0)) == pytest.approx(1000 * math.exp(0.05), rel=1e-12)
    # after: V0 exp(-Kg T0) [F exp(Kg t) + (1 - F) exp(-Kd t)]
    expected = 1000 * math.exp(0.1) * (0.2 * math.exp(1.0) + 0.8 * math.exp(-3.0))
    assert float(volume(100.0, 0.01, 0.03, 0.2, 1000.0, -10.0)) == pytest.approx(expected, rel=1e-12)
    # at the baseline day the model returns V0
    assert float(volume(-10.0, 0.01, 0.03, 0.2, 1000.0, -10.0)) == pytest.approx(1000.0, rel=1e-12)


@pytest.mark.usefixtures("x64")
def test_continuous_at_zero():
    args = (0.004, 0.05, 0.3, 5000.0, -14.0)
    left = float(volume(-1e-9, *args))
    right = float(volume(0.0, *args))
    assert left == pytest.approx(right, rel=1e-9)


@pytest.mark.usefixtures("x64")
@settings(max_examples=60, deadline=None)
@given(
    t=st.floats(-60, 1500),
    kg=st.floats(1e-4, 0.05),
    kd=st.floats(1e-4, 0.2),
    f=st.floats(0.001, 0.999),
    v0=st.floats(10.0, 1e6),
    t0=st.floats(-60, 0),
)
def test_log_space_matches_naive(t, kg, kd, f, v0, t0):
    naive = true_volume(t, kg, kd, f, v0, t0)
    ours = float(jnp.exp(log_volume(t, kg, kd, f, v0, t0)))
    assert ours == pytest.approx(float(naive), rel=1e-10)


@pytest.mark.usefixtures("x64")
def test_log_space_survives_extremes():
    # exp(Kg t) overflows and exp(-Kd t) underflows naively; the log volume stays finite and exact
    lv = float(log_volume(1e5, 0.02, 0.5, 0.1, 1000.0, -10.0))
    assert lv == pytest.approx(math.log(1000.0) + 0.2 + math.log(0.1) + 0.02 * 1e5, rel=1e-12)
    lv = float(log_volume(1e4, 1e-6, 0.5, 1e-12, 1000.0, 0.0))
    assert np.isfinite(lv)


def test_float32_close_to_float64():
    t = np.linspace(-20, 400, 50)
    v32 = np.asarray(volume(t, 0.005, 0.03, 0.1, 3000.0, -7.0))
    assert v32.dtype == np.float32
    naive = true_volume(t, 0.005, 0.03, 0.1, 3000.0, -7.0)
    np.testing.assert_allclose(v32, naive, rtol=1e-5)


@pytest.mark.usefixtures("x64")
def test_transforms_round_trip():
    phi = params_to_phi(0.005, 0.03, 0.1)
    np.testing.assert_allclose(np.asarray(phi), [math.log(0.005), math.log(0.03), math.log(0.1 / 0.9)], rtol=1e-12)
    kg, kd, f = phi_to_params(phi)
    assert (float(kg), float(kd), float(f)) == pytest.approx((0.005, 0.03, 0.1), rel=1e-12)
    direct = log_volume_phi(50.0, phi, math.log(2000.0), -5.0)
    assert float(direct) == pytest.approx(float(log_volume(50.0, 0.005, 0.03, 0.1, 2000.0, -5.0)), rel=1e-12)

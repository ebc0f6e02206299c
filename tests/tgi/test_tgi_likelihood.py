"""Residual error models, censoring terms and the marginal likelihood of one lesion."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy import optimize, stats
from tgi_simulate import true_volume

from lesionatlas.tgi.fit import LesionArrays, row_width
from lesionatlas.tgi.likelihood import (
    TGIData,
    lesion_loglik,
    log_ndtr,
    log_ndtr_diff,
    observation_loglik,
    prepare_data,
)
from lesionatlas.tgi.model import log1p_unit, log_sigmoid_pair, logaddexp, params_to_phi
from lesionatlas.tgi.saem import SAEMConfig, importance_loglik, importance_loglik_jit

pytestmark = pytest.mark.usefixtures("x64")


def _ll(log_v, y, lower, cens, error, model="proportional", **kw):
    ll, clipped = observation_loglik(
        jnp.asarray(log_v), jnp.asarray(y), jnp.asarray(lower), jnp.asarray(cens), jnp.asarray(error), error_model=model, **kw
    )
    return np.asarray(ll), np.asarray(clipped)


def test_density_matches_scipy():
    v = np.array([100.0, 500.0, 3000.0])
    y = np.array([120.0, 430.0, 3500.0])
    lower = np.full(3, -np.inf)
    cens = np.zeros(3, bool)
    ll, _ = _ll(np.log(v), y, lower, cens, [0.0, 0.25])
    np.testing.assert_allclose(ll, stats.norm.logpdf(y, v, 0.25 * v), rtol=1e-12)
    ll, _ = _ll(np.log(v), y, lower, cens, [40.0, 0.0], "constant")
    np.testing.assert_allclose(ll, stats.norm.logpdf(y, v, 40.0), rtol=1e-12)
    ll, _ = _ll(np.log(v), y, lower, cens, [40.0, 0.1], "combined")
    np.testing.assert_allclose(ll, stats.norm.logpdf(y, v, 40.0 + 0.1 * v), rtol=1e-12)


def test_m3_and_interval_match_scipy():
    v = np.array([50.0, 180.0, 400.0, 2000.0])
    limit = np.full(4, 200.0)
    cens = np.ones(4, bool)
    b = 0.3
    ll, _ = _ll(np.log(v), limit, np.full(4, -np.inf), cens, [0.0, b])
    np.testing.assert_allclose(ll, stats.norm.logcdf(limit, v, b * v), rtol=1e-10)
    # Monolix LIMIT = 0: the observation lies in (0, 200]
    ll, _ = _ll(np.log(v), limit, np.zeros(4), cens, [0.0, b])
    expected = np.log(stats.norm.cdf(limit, v, b * v) - stats.norm.cdf(0.0, v, b * v))
    np.testing.assert_allclose(ll, expected, rtol=1e-10)
    # a far upper-tail interval, where log(cdf(u) - cdf(l)) would be log(0)
    ll, _ = _ll(np.log([1.0]), [200.0], [150.0], [True], [0.0, 0.3])
    zl, zu = (150.0 - 1.0) / 0.3, (200.0 - 1.0) / 0.3
    expected = stats.norm.logsf(zl) + np.log1p(-np.exp(stats.norm.logsf(zu) - stats.norm.logsf(zl)))
    assert np.isfinite(ll[0])
    np.testing.assert_allclose(ll, [expected], rtol=1e-10)


def test_log_ndtr_diff_both_tails():
    for zl, zu in [(-40.0, -38.0), (-1.0, 2.0), (8.0, 9.0), (30.0, 31.0), (-3.0, -2.999)]:
        got = float(log_ndtr_diff(zu, zl))
        if zl > 0:
            ref = stats.norm.logsf(zl) + np.log1p(-np.exp(stats.norm.logsf(zu) - stats.norm.logsf(zl)))
        else:
            ref = stats.norm.logcdf(zu) + np.log1p(-np.exp(stats.norm.logcdf(zl) - stats.norm.logcdf(zu)))
        assert got == pytest.approx(ref, rel=1e-8, abs=1e-12), (zl, zu)


def test_log_ndtr_matches_scipy():
    """Both tails: relative accuracy 1e-12 above z = -20 (the upper tail included, where log Phi is tiny)
    and below it the asymptotic series JAX uses (good to 4e-9 absolute at the switch, 1e-11 relative
    further down); gradients phi(z) / Phi(z) to 1e-7 and finite everywhere (also across the branches)."""
    z = np.concatenate([np.linspace(-60, 38, 98001), [-20.0, 0.0, -0.0, 1e-300, -1e-300, 8.0, 8.3]])
    ref = stats.norm.logcdf(z)
    got = np.asarray(jax.jit(log_ndtr)(jnp.asarray(z)))
    upper = z > -20
    np.testing.assert_allclose(got[upper], ref[upper], rtol=1e-12, atol=1e-307)  # XLA flushes subnormals
    np.testing.assert_allclose(got, ref, rtol=1e-11, atol=5e-9)
    grad = np.asarray(jax.jit(jax.vmap(jax.grad(log_ndtr)))(jnp.asarray(z)))
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad, np.exp(stats.norm.logpdf(z) - ref), rtol=1e-7, atol=1e-307)
    with jax.enable_x64(False):
        z32 = np.asarray(log_ndtr(jnp.asarray(z, jnp.float32)), float)
    assert np.all(np.isfinite(z32))
    np.testing.assert_allclose(z32, ref, rtol=2e-5, atol=3e-4)


def test_fast_log1p_and_logaddexp():
    """log1p on [0, 1] within 2.3e-16 absolute (what matters: it is always added to a term of order one
    or more), an exact derivative; logaddexp and log_sigmoid equal to JAX's to rounding."""
    x = np.concatenate([np.linspace(0, 1, 100001), np.geomspace(1e-300, 1, 1001), [math.sqrt(2) - 1]])
    got = np.asarray(jax.jit(log1p_unit)(jnp.asarray(x)))
    np.testing.assert_allclose(got, np.log1p(x), rtol=0, atol=2.3e-16)
    grad = np.asarray(jax.vmap(jax.grad(log1p_unit))(jnp.asarray(x)))
    np.testing.assert_allclose(grad, 1 / (1 + x), rtol=1e-15)
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 30, 10000), rng.normal(0, 30, 10000)
    np.testing.assert_allclose(np.asarray(logaddexp(a, b)), np.logaddexp(a, b), rtol=1e-15, atol=4e-16)
    lf, l1 = log_sigmoid_pair(jnp.asarray(a))
    np.testing.assert_allclose(np.asarray(lf), np.asarray(jax.nn.log_sigmoid(a)), rtol=1e-14, atol=4e-16)
    np.testing.assert_allclose(np.asarray(l1), np.asarray(jax.nn.log_sigmoid(-a)), rtol=1e-14, atol=4e-16)


def _lesion_arrays(n=60, max_obs=11, seed=0, interval=False):
    """Dense padded arrays of ``n`` lesions with 1..max_obs observations (a long tail), some censored."""
    rng = np.random.default_rng(seed)
    counts = np.minimum(rng.geometric(0.25, n), max_obs)
    m = 16
    t, y = np.zeros((n, m)), np.ones((n, m))
    lower, cens, mask = np.full((n, m), -np.inf), np.zeros((n, m), bool), np.zeros((n, m), bool)
    v0, t0 = np.exp(rng.normal(8, 1, n)), -rng.integers(1, 20, n).astype(float)
    for i, c in enumerate(counts):
        day = np.cumsum(rng.integers(30, 60, c)).astype(float)
        vol = np.exp(rng.normal(np.log(v0[i]), 1.5, c))
        below = vol < 200
        t[i, :c], y[i, :c], mask[i, :c] = day, np.where(below, 200.0, vol), True
        cens[i, :c] = below
        lower[i, :c] = np.where(below, 0.0 if interval else -np.inf, -np.inf)
    return LesionArrays(lesion_id=np.arange(n).astype(str), t=t, y=y, lower=lower, censored=cens, obs_mask=mask,
                        v0=v0, t0=t0, n_lesions=n)


@pytest.mark.parametrize("interval", [False, True])
@pytest.mark.parametrize("width", [None, 2, 3])
def test_folded_rows_match_dense(interval, width):
    """Observations folded into rows of ``width`` (continuation rows for longer lesions), with log|y| and
    the censored-cell index, give the per-lesion log-likelihoods and outlier counts of the plain dense
    arrays, for every error model."""
    arrays = _lesion_arrays(interval=interval)
    folded = arrays.to_data(jnp.float64, width=width)
    if width is not None:
        assert folded.t.shape[1] == width and folded.row_lesion is not None
    n = len(arrays.v0)
    dense = TGIData(t=jnp.asarray(arrays.t), y=jnp.asarray(arrays.y), lower=jnp.asarray(arrays.lower),
                    censored=jnp.asarray(arrays.censored), obs_mask=jnp.asarray(arrays.obs_mask),
                    log_v0=jnp.asarray(np.log(arrays.v0)), t0=jnp.asarray(arrays.t0),
                    lesion_mask=jnp.ones(n, bool), design=jnp.ones((n, 1)))
    phi = jnp.asarray(np.random.default_rng(1).normal([-5, -3.5, -2], [1.5, 1.5, 3], (2, n, 3)))
    for model in ("proportional", "constant", "combined"):
        err = jnp.asarray([30.0, 0.3])
        a, ca = lesion_loglik(phi, folded, err, error_model=model)
        b, cb = lesion_loglik(phi, dense, err, error_model=model)
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-9)
        np.testing.assert_array_equal(np.asarray(ca), np.asarray(cb))
    # the index alone (no folding) too
    a, _ = lesion_loglik(phi, prepare_data(dense), err)
    b, _ = lesion_loglik(phi, dense, err)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-9)


def test_row_width():
    """The width follows the typical lesion, not the longest: every lesion with 5 observations -> 5; a
    long tail of a few lesions goes to continuation rows; small data sets take the longest series (the
    continuation rows would be padded to a bucket of 256)."""
    assert row_width(np.full(19180, 5), 19456) == 5
    counts = np.r_[np.full(18000, 4), np.full(1000, 8), np.full(180, 21)]
    assert row_width(counts, 19456) < 8
    assert row_width(np.r_[np.full(400, 3), [6]], 512) == 6
    assert row_width(np.zeros(3, int), 256) == 1


def test_outlier_guard():
    # an observation predicted at 1e-20 of its value: flagged, finite, bounded by the relative-residual cap
    ll, clipped = _ll([np.log(1e-20 * 5000.0)], [5000.0], [-np.inf], [False], [0.0, 0.2])
    assert clipped[0]
    v = 5000.0 / 4.0  # floored at DV / (1 + 3)
    assert ll[0] == pytest.approx(stats.norm.logpdf(5000.0, v, 0.2 * v), rel=1e-10)
    # ordinary observations are not touched
    _, clipped = _ll([np.log(1000.0)], [1500.0], [-np.inf], [False], [0.0, 0.2])
    assert not clipped[0]


def _one_lesion(censor_last=True, interval=False):
    t = np.array([[42.0, 85.0, 130.0, 170.0, 0.0]])
    kg, kd, f, v0, t0 = 0.006, 0.035, 0.15, 2500.0, -7.0
    v = true_volume(t, kg, kd, f, v0, t0)
    y = v * np.array([[1.1, 0.85, 1.05, 1.0, 1.0]])
    cens = np.zeros_like(t, bool)
    if censor_last:
        cens[0, 3] = True
        y[0, 3] = 200.0
    lower = np.where(cens, 0.0 if interval else -np.inf, -np.inf)
    mask = np.array([[True, True, True, True, False]])
    data = TGIData(
        t=jnp.asarray(t),
        y=jnp.asarray(y),
        lower=jnp.asarray(lower),
        censored=jnp.asarray(cens),
        obs_mask=jnp.asarray(mask),
        log_v0=jnp.asarray([math.log(v0)]),
        t0=jnp.asarray([t0]),
        lesion_mask=jnp.asarray([True]),
        design=jnp.ones((1, 1)),
    )
    return data


def test_padding_is_ignored():
    data = _one_lesion()
    phi = params_to_phi(0.006, 0.035, 0.15)[None]
    ll, _ = lesion_loglik(phi, data, jnp.asarray([0.0, 0.2]))
    t = np.asarray(data.t)[0, :4]
    y = np.asarray(data.y)[0, :4]
    v = true_volume(t, 0.006, 0.035, 0.15, 2500.0, -7.0)
    ref = stats.norm.logpdf(y[:3], v[:3], 0.2 * v[:3]).sum() + stats.norm.logcdf(200.0, v[3], 0.2 * v[3])
    assert float(ll[0]) == pytest.approx(ref, rel=1e-10)


@pytest.mark.parametrize("model", ["proportional", "combined"])
def test_gradients(model):
    data = _one_lesion(interval=True)
    phi0 = params_to_phi(0.006, 0.035, 0.15)[None]
    err0 = jnp.asarray([5.0, 0.2])

    def f(phi, err):
        return lesion_loglik(phi, data, err, error_model=model)[0].sum()

    check_grads(f, (phi0, err0), order=2, modes=["rev"], eps=1e-5, atol=1e-5, rtol=1e-5)
    g = jax.grad(f, argnums=(0, 1))(phi0, err0)
    assert all(np.all(np.isfinite(np.asarray(x))) for x in g)


def _marginal_by_grid(data, mu, omega, b, n_grid=81):
    """log p(y) = log of the integral over phi of p(y | phi) N(phi; mu, omega^2), by a 3-D trapezoid
    grid (numpy / scipy only) spanning +-8 posterior SDs around the posterior mode."""
    t = np.asarray(data.t)[0]
    y = np.asarray(data.y)[0]
    cens = np.asarray(data.censored)[0]
    lower = np.asarray(data.lower)[0]
    mask = np.asarray(data.obs_mask)[0]
    v0, t0 = math.exp(float(data.log_v0[0])), float(data.t0[0])
    t, y, cens, lower = t[mask], y[mask], cens[mask], lower[mask]

    def log_joint(phi):  # phi (..., 3)
        kg, kd = np.exp(phi[..., 0:1]), np.exp(phi[..., 1:2])
        f = 1 / (1 + np.exp(-phi[..., 2:3]))
        v = true_volume(t, kg, kd, f, v0, t0)
        sd = b * v
        dens = stats.norm.logpdf(y, v, sd)
        up = stats.norm.cdf(y, v, sd)
        lo = np.where(np.isfinite(lower), stats.norm.cdf(np.where(np.isfinite(lower), lower, 0.0), v, sd), 0.0)
        with np.errstate(divide="ignore"):
            cen = np.log(up - lo)
        ll = np.where(cens, cen, dens).sum(-1)
        return ll + stats.norm.logpdf(phi, mu, omega).sum(-1)

    res = optimize.minimize(lambda p: -log_joint(p), mu, method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-10})
    mode = res.x
    hess = optimize.approx_fprime(mode, lambda p: optimize.approx_fprime(p, lambda q: -log_joint(q), 1e-5), 1e-5)
    sd = np.sqrt(np.diag(np.linalg.inv((hess + hess.T) / 2)))
    axes = [np.linspace(m - 8 * s, m + 8 * s, n_grid) for m, s in zip(mode, sd)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    lj = log_joint(grid)
    top = lj.max()
    integral = np.trapezoid(np.trapezoid(np.trapezoid(np.exp(lj - top), axes[2], axis=2), axes[1], axis=1), axes[0])
    # the conditional mean and covariance on the same grid (what the fit estimates from its MCMC draws)
    w = np.exp(lj - top) / np.exp(lj - top).sum()
    mean = np.einsum("ijk,ijkp->p", w, grid)
    dev = grid - mean
    cov = np.einsum("ijk,ijkp,ijkq->pq", w, dev, dev)
    return top + math.log(integral), mean, cov


@pytest.mark.parametrize("proposal", ["sd", "cov"])
@pytest.mark.parametrize("interval", [False, True])
def test_importance_sampling_matches_quadrature(interval, proposal):
    """The IS estimate of one lesion's marginal log-likelihood (3 random effects integrated out) agrees
    with an independent 3-D grid integral to 0.02 on the log scale (the grid error is far smaller), with
    the conditional mean and full covariance as the fit uses them (the parameters of a lesion are correlated
    in its conditional distribution; 20,000 draws, a Monte-Carlo SE of about 0.007 here) or a poorer
    diagonal proposal (SDs, off-centre; 100,000 draws for about 0.009)."""
    data = _one_lesion(censor_last=True, interval=interval)
    mu = np.array([math.log(0.005), math.log(0.03), math.log(0.1 / 0.9)])
    omega = np.array([0.6, 0.7, 1.0])
    b = 0.2
    ref, post_mean, post_cov = _marginal_by_grid(data, mu, omega, b)
    # proposal centred near the posterior (in the fit it comes from the MCMC draws)
    prop_mean = jnp.asarray(mu)[None] * 0.5 + params_to_phi(0.006, 0.035, 0.15)[None] * 0.5
    prop_sd = jnp.asarray([[0.4, 0.4, 0.8]])
    if proposal == "cov":
        prop_mean, prop_sd = jnp.asarray(post_mean)[None], jnp.asarray(post_cov)[None]
    ll, rel_se = importance_loglik(
        jax.random.key(1),
        jnp.asarray(mu)[None],
        jnp.asarray(omega) ** 2,
        jnp.asarray([0.0, b]),
        data,
        prop_mean,
        prop_sd,
        20_000 if proposal == "cov" else 100_000,
        SAEMConfig(),
        chunk=1000,
    )
    assert float(rel_se[0]) < 0.012
    assert float(ll[0]) == pytest.approx(ref, abs=0.02)


def _is_runs(data, mu, omega, b, mean, cov, n_runs, **kw):
    return np.array([
        float(importance_loglik_jit(
            jax.random.key(s), jnp.asarray(mu)[None], jnp.asarray(omega) ** 2, jnp.asarray([0.0, b]), data,
            jnp.asarray(mean)[None], jnp.asarray(cov)[None], 1000, SAEMConfig(), chunk=100, **kw,
        )[0][0])
        for s in range(n_runs)
    ])


def test_importance_sampling_defensive_mixture_survives_a_poor_proposal():
    """With a proposal too narrow (a tenth of the conditional covariance) and off-centre (1.5 conditional
    SDs in log Kg), as MCMC moments from few draws can be, the pure Student-t's weights are heavy-tailed:
    its estimates scatter widely and fall low on average. The defensive component (10% of the draws from
    the population distribution) and the bias correction bring the mean of 16 runs of 1,000 draws to the
    grid integral and cut the spread of the runs by more than half."""
    data = _one_lesion(censor_last=True)
    mu = np.array([math.log(0.005), math.log(0.03), math.log(0.1 / 0.9)])
    omega = np.array([0.6, 0.7, 1.0])
    b = 0.2
    ref, post_mean, post_cov = _marginal_by_grid(data, mu, omega, b)
    bad_mean = post_mean + np.array([1.5, 0.0, 0.0]) * np.sqrt(np.diag(post_cov))
    plain = _is_runs(data, mu, omega, b, bad_mean, 0.1 * post_cov, 16, defensive=0.0, bias_correction=False) - ref
    robust = _is_runs(data, mu, omega, b, bad_mean, 0.1 * post_cov, 16) - ref
    assert abs(robust.mean()) < 0.1
    assert robust.std(ddof=1) < 0.5 * plain.std(ddof=1)
    assert plain.mean() < robust.mean()
    # a pilot that refits the proposal to the weighted draws keeps the estimate on the integral
    piloted = _is_runs(data, mu, omega, b, bad_mean, 0.1 * post_cov, 8, n_pilot=300) - ref
    assert abs(piloted.mean()) < 0.1


@pytest.mark.parametrize("defensive", [0.0, 0.1])
def test_importance_sampling_full_omega_with_zero_correlations_is_the_diagonal(defensive):
    """The full-covariance path (the population component and the prior through the Cholesky factor of
    the correlation matrix) reproduces the diagonal one when the correlations are zero."""
    data = _one_lesion(censor_last=True)
    mu = jnp.asarray([[math.log(0.005), math.log(0.03), math.log(0.1 / 0.9)]])
    args = (jax.random.key(3), mu, jnp.asarray([0.36, 0.49, 1.0]), jnp.asarray([0.0, 0.2]), data, mu,
            jnp.asarray([[0.3, 0.3, 0.6]]) ** 2 * jnp.eye(3)[None], 500, SAEMConfig())
    diag = importance_loglik_jit(*args, defensive=defensive)
    full = importance_loglik_jit(*args, defensive=defensive, omega_corr=jnp.zeros(3))
    np.testing.assert_allclose(np.asarray(full[0]), np.asarray(diag[0]), rtol=1e-10)
    np.testing.assert_allclose(np.asarray(full[1]), np.asarray(diag[1]), rtol=1e-8)

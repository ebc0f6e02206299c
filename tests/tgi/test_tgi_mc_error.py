"""The Monte-Carlo error of the SAEM estimate and the bias correction of Louis' formula."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from tgi_simulate import TRUTH, simulate, to_data

from lesionatlas.tgi import TGIModel, saem
from lesionatlas.tgi.fit import _mc_recursion

MU = np.log([TRUTH["kg"], TRUTH["kd"], TRUTH["f"] / (1 - TRUTH["f"])])
OMEGA = np.array([TRUTH["omega_kg"], TRUTH["omega_kd"], TRUTH["omega_f"]])


def _smoothing(k: int) -> np.ndarray:
    return np.concatenate([np.ones(40), 1.0 / np.arange(1, k + 1)])


def test_recursion_without_missing_information_is_the_plain_average():
    """G = I (the draws carry all the information): SAEM's 1/k average of the K smoothing iterations (the
    first, with step 1, is the exploratory phase's end) has covariance (P0 + (K - 1) Q) / K^2, with P0
    the spread of the exploratory phase's second half: Q / K when that spread is the draws' own."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 3))
    i_c = a @ a.T + 3 * np.eye(3)
    v = np.diag([1.0, 2.0, 0.5])
    trace = rng.normal(size=(240, 3))  # only its first 40 rows (gamma 1) are read
    p = _mc_recursion(i_c, i_c, v, _smoothing(200), trace)
    q = np.linalg.solve(i_c, np.linalg.solve(i_c, v).T)
    p0 = np.cov(trace[20:41], rowvar=False)  # second half of the 41 iterations with step 1
    np.testing.assert_allclose(p, (p0 + 199 * q) / 200**2, rtol=1e-10, atol=1e-14)


def test_recursion_with_missing_information_decays_as_theory_says():
    """Scalar G = lambda: about Q / (K (2 lambda - 1)) above 1/2; below it the start's spread decays only
    like K^(-2 lambda), so four times the iterations do not divide it by four."""
    for lam, k in ((0.8, 4000),):
        p = _mc_recursion(np.array([[lam]]), np.array([[1.0]]), np.array([[1.0]]), _smoothing(k),
                          np.zeros((40 + k, 1)))
        np.testing.assert_allclose(p[0, 0], 1.0 / (k * (2 * lam - 1)), rtol=0.02)
    lam = 0.3
    start = np.random.default_rng(1).normal(size=(40, 1))
    short = _mc_recursion(np.array([[lam]]), np.array([[1.0]]), np.array([[1.0]]), _smoothing(200),
                          np.concatenate([start, np.zeros((200, 1))]))
    long = _mc_recursion(np.array([[lam]]), np.array([[1.0]]), np.array([[1.0]]), _smoothing(800),
                         np.concatenate([start, np.zeros((800, 1))]))
    assert 4 ** (-2 * lam) * 0.8 < long[0, 0] / short[0, 0] < 4 ** (-2 * lam) * 1.25  # not 1/4


def test_long_run_covariance_of_the_score_matches_replicates(x64):
    """``score_lrv / n_iter`` is the Monte-Carlo covariance of the draws' mean score: compare it with
    the spread of ``score_mean`` over independent replicates of the posterior phase. Each replicate starts
    at the simulated parameters (a draw from the posterior at the truth, so the chains are stationary from
    the start) and runs its own warm-up. Batch means of 50 iterations (the default 200 / 4) measured
    0.6-0.9 of the replicates' variance here: slightly low, as batch means are when the chains' memory
    is not short against the batch."""
    sim = simulate(60, seed=4)
    data = to_data(sim, n_pad=64)
    config = saem.SAEMConfig()
    state = saem.init(None, data, mu=jnp.asarray(MU), omega=jnp.asarray(OMEGA), error=jnp.asarray([1.0, 0.2]),
                      n_chains=2)

    def with_phi(phi):
        log_v = saem._predict_t(phi, data)
        return state._replace(phi=phi, log_v=log_v, loglik=saem._loglik_at(log_v, data, state.error, config)[0])

    phi0 = np.broadcast_to(MU[:, None, None], (3, 2, 64)).copy()
    phi0[:, :, :60] = sim.phi.T[:, None, :]
    start = with_phi(jnp.asarray(phi0))
    n_iter = 200
    keep = [0, 1, 2, 3, 4, 5, 7]  # B, omega, b (the constant error term a is not in the model)
    scores, predicted = [], []
    for r in range(24):
        warm = saem.sample_posterior_jit(jax.random.key(1000 + r), start, data, 60, config, fisher=False)
        post = saem.sample_posterior_jit(jax.random.key(r), with_phi(jnp.moveaxis(warm.phi_last, -1, 0)), data,
                                         n_iter, config)
        scores.append(np.asarray(post.score_mean)[keep])
        predicted.append(np.diag(np.asarray(post.score_lrv))[keep] / n_iter)
    ratio = np.mean(predicted, axis=0) / np.var(scores, axis=0, ddof=1)
    assert np.all((ratio > 0.3) & (ratio < 2.5)), ratio
    assert 0.5 < np.exp(np.mean(np.log(ratio))) < 1.4, ratio


def test_fit_reports_the_monte_carlo_error_and_wider_intervals():
    measurements = simulate(300, seed=5).tables()[2]
    fit = TGIModel(baseline_observation="drop", n_is_draws=0).fit(measurements, seed=1)
    pop = fit.population.set_index("parameter")
    assert fit.diagnostics["louis_bias_corrected"]
    assert np.all(pop["se_mc"] > 0) and np.all(pop["se_mc"] < pop["se"] * 3)
    z = 1.959963984540054
    for name in ("omega_kg", "omega_kd", "omega_f", "b"):
        row = pop.loc[name]
        half = np.hypot(row["se"], row["se_mc"]) * z
        np.testing.assert_allclose([row["ci_lower"], row["ci_upper"]],
                                   [row["estimate"] - half, row["estimate"] + half], rtol=1e-12)
    off = TGIModel(baseline_observation="drop", n_is_draws=0, n_posterior_iter=30).fit(measurements, seed=1)
    assert off.population["se_mc"].isna().all()  # too few draws for batch means: no MC error, Fisher CIs

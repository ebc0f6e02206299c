"""SAEM: planted-truth recovery, determinism, censoring, the outlier guard.

All fits here share one shape bucket (512 lesions x 6 observations) and one SAEM configuration so that
JAX compiles each piece once per test session.
"""
from __future__ import annotations

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize
from tgi_simulate import TRUTH, simulate, to_data

from lesionatlas.data.cohort import Cohort
from lesionatlas.errors import ConvergenceWarning, ExclusionWarning
from lesionatlas.tgi import TGIFit, TGIModel
from lesionatlas.tgi import saem
from lesionatlas.tgi.likelihood import lesion_loglik

TRUE_ROWS = {
    "kg_pop": TRUTH["kg"],
    "kd_pop": TRUTH["kd"],
    "f_pop": TRUTH["f"],
    "omega_kg": TRUTH["omega_kg"],
    "omega_kd": TRUTH["omega_kd"],
    "omega_f": TRUTH["omega_f"],
    "b": TRUTH["b"],
}
# the simulator's V0 is exact and its baseline row carries no residual: leave that row out of the fit
SPEC = TGIModel(baseline_observation="drop")
QUICK = TGIModel(baseline_observation="drop", n_explore=95, n_smooth=50, n_is_draws=0)


def _cohort(sim) -> Cohort:
    return Cohort.from_tables(*sim.tables())


@pytest.fixture(scope="module")
def recovery_fit() -> TGIFit:
    return SPEC.fit(_cohort(simulate(400, seed=3)), seed=0)


def test_recovers_planted_truth(recovery_fit):
    """400 lesions, 2,136 observations (12% censored): every population parameter within its 95% CI
    (1.96 SE, Louis' formula) of the truth, and within 10% of it (20% for omega_f, whose RSE is 5%)."""
    pop = recovery_fit.population.set_index("parameter")
    assert list(pop.index) == list(TRUE_ROWS)
    for name, truth in TRUE_ROWS.items():
        est, se = pop.loc[name, "estimate"], pop.loc[name, "se"]
        assert np.isfinite(se) and se > 0, name
        assert abs(est - truth) < 1.96 * se, (name, est, se, truth)
        assert pop.loc[name, "ci_lower"] < truth < pop.loc[name, "ci_upper"], name
        assert abs(est / truth - 1) < (0.2 if name == "omega_f" else 0.1), (name, est)
    assert recovery_fit.diagnostics["fisher_positive_definite"]
    assert recovery_fit.diagnostics["n_clipped_final"] == 0


def test_individual_estimates(recovery_fit):
    sim = simulate(400, seed=3)
    ind = recovery_fit.individual
    assert len(ind) == 400 and ind["lesion_id"].is_unique
    # conditional modes are stationary points, and track the planted individual parameters
    assert recovery_fit.diagnostics["mode_max_gradient"] < 1e-3
    order = ind["lesion_id"].str[1:].astype(int).to_numpy()
    true_phi = sim.phi[order]
    est = np.stack([np.log(ind["kg"]), np.log(ind["kd"]), np.log(ind["f"] / (1 - ind["f"]))], axis=1)
    for k in range(3):
        assert np.corrcoef(est[:, k], true_phi[:, k])[0, 1] > 0.7
    # shrinkage in [0, 100) percent; at the estimate the conditional means average to the typical value
    for value in recovery_fit.diagnostics["shrinkage_mode_percent"].values():
        assert 0 <= value < 100
    kg_pop = recovery_fit.population.set_index("parameter").loc["kg_pop", "estimate"]
    assert abs(np.log(ind["kg_mean"]).mean() - math.log(kg_pop)) < 0.05
    # conditional mean and mode close for well-informed lesions
    assert np.median(np.abs(np.log(ind["kg_mean"] / ind["kg"]))) < 0.2


def test_loglik_aic_bic(recovery_fit):
    ll = recovery_fit.loglik
    assert ll is not None and np.isfinite(ll)
    assert recovery_fit.diagnostics["is_relative_se"] < 5.0
    # the second-order bias correction is half the summed relative variances: at most half the SE squared
    correction = recovery_fit.diagnostics["is_bias_correction"]
    assert 0 < correction <= 0.5 * recovery_fit.diagnostics["is_relative_se"] ** 2 * (1 + 1e-9)
    assert recovery_fit.aic == pytest.approx(-2 * ll + 2 * 7)
    assert recovery_fit.bic == pytest.approx(-2 * ll + 7 * math.log(400))


def test_same_seed_same_numbers(tmp_path):
    cohort = _cohort(simulate(400, seed=4))
    one = QUICK.fit(cohort, seed=11)
    two = QUICK.fit(cohort, seed=11)
    assert one.equals(two)
    other = QUICK.fit(cohort, seed=12)
    assert not other.population["estimate"].equals(one.population["estimate"])
    back = TGIFit.from_dir(one.to_dir(tmp_path / "fit"))
    assert back.equals(one)
    # a folder written before is_inflate existed reads as the fit it was: made with the proposal unwidened
    meta_path = tmp_path / "fit" / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["spec"]["is_inflate"]
    meta_path.write_text(json.dumps(meta))
    assert TGIFit.from_dir(tmp_path / "fit").spec == dataclasses.replace(one.spec, is_inflate=1.0)


CENSORING_DATA_SEEDS = (5, 6, 7)


def test_censoring_beats_dropping():
    """About a quarter of the observations are below 200 mm3. Leaving them out biases F (and Kd): the
    deepest responses vanish from the data; M3 keeps the estimates unbiased.

    The claim is about the estimator, so it is checked on three simulated data sets rather than one: a
    single data set's maximum-likelihood estimate can itself sit near a 2.5-SE bound (data seed 5's
    kg_pop lies about 2.2 SE from the truth), and then SAEM's Monte-Carlo noise alone decided the old
    one-data-set version of this test. Pooled, the standardized error ``sum_r (est_r - truth) / SE_r /
    sqrt(3)`` is N(0, 1) for an unbiased estimator, so the 2.5 bound keeps its 99% level. Checked:
    on every data set M3's total log error of (kg, kd, f) is below dropping's; pooled, every M3 estimate
    is within 2.5 SE of the truth, while dropping's F is more than 2.5 SE above it and its Kd more than
    2.5 SE below. Seen (pooled z) with SAEM seed 0: M3 kg +0.2, kd -1.4, f -1.5, b -0.2; dropped f +6.8,
    kd -3.2. Over SAEM seeds 0-5 the largest pooled M3 |z| was 1.5; dropped f +5.8 to +6.9, kd -3.1
    to -4.1.
    """
    spec = TGIModel(baseline_observation="drop", n_is_draws=0)
    dropped = TGIModel(baseline_observation="drop", n_is_draws=0, censoring="drop")
    names = ("kg_pop", "kd_pop", "f_pop", "b")
    z_m3 = dict.fromkeys(names, 0.0)
    z_drop = dict.fromkeys(names, 0.0)

    def error(est):
        return sum(abs(math.log(est[n] / TRUE_ROWS[n])) for n in ("kg_pop", "kd_pop", "f_pop"))

    for data_seed in CENSORING_DATA_SEEDS:
        sim = simulate(500, seed=data_seed, v0_median=1500.0)
        assert 0.18 < sim.censored_fraction < 0.35
        cohort = _cohort(sim)
        m3 = spec.fit(cohort, seed=0).population.set_index("parameter")
        with pytest.warns(ExclusionWarning, match="left out"):  # lesions with only censored rows
            drop = dropped.fit(cohort, seed=0).population.set_index("parameter")
        assert error(m3["estimate"]) < error(drop["estimate"]), data_seed
        for name in names:
            z_m3[name] += (m3.loc[name, "estimate"] - TRUE_ROWS[name]) / m3.loc[name, "se"]
            z_drop[name] += (drop.loc[name, "estimate"] - TRUE_ROWS[name]) / drop.loc[name, "se"]
    scale = math.sqrt(len(CENSORING_DATA_SEEDS))
    for name in names:
        assert abs(z_m3[name] / scale) < 2.5, (name, z_m3[name] / scale)
    assert z_drop["f_pop"] / scale > 2.5, z_drop["f_pop"] / scale
    assert z_drop["kd_pop"] / scale < -2.5, z_drop["kd_pop"] / scale


def test_absurd_observation_does_not_blow_up_b():
    """One observation 1e20 times its model value: without the guard the first M-step sends b to about
    1e18; with it b stays near the truth, and the fit says so."""
    sim = simulate(400, seed=6)
    j = int(np.argmax(~sim.censored[0] & sim.obs_mask[0]))
    sim.y[0, j] *= 1e20
    with pytest.warns(ConvergenceWarning, match="max_relative_residual"):
        fit = QUICK.fit(_cohort(sim), seed=0)
    b = fit.population.set_index("parameter").loc["b", "estimate"]
    assert 0.15 < b < 0.25
    assert fit.diagnostics["n_clipped_final"] >= 1
    # the same data without the guard
    with jax.enable_x64(True):
        data = to_data(sim, n_pad=512)
        config = saem.SAEMConfig(max_relative_residual=1e300)
        mu0 = jnp.log(jnp.asarray([0.01, 0.01, 0.1 / 0.9]))
        state = saem.init(None, data, mu=mu0, omega=jnp.ones(3), error=jnp.asarray([1.0, 0.3]), config=config)
        # the first M-step at the initial (typical) parameters, before any MH move: deterministic, it does
        # not depend on whether a chain happens to climb towards the absurd value in the first iterations
        still = dict(n_burn_in=0, n_prior_kernel=0, n_component_kernel=0, n_joint_kernel=0)
        first, _ = saem.run_jit(jax.random.key(0), state, data, 1, config._replace(**still))
        assert float(first.error[1]) > 1e6
        # with the guard the same step keeps b bounded
        guarded, _ = saem.run_jit(jax.random.key(0), state, data, 1, saem.SAEMConfig(**still))
        assert float(guarded.error[1]) < 1.0
        # and the unguarded fit never recovers: annealing lets b^2 shrink by at most 5% per iteration
        state, _ = saem.run_jit(jax.random.key(0), first, data, 10, config)
        assert float(state.error[1]) > 1e6


def test_fisher_information_matches_autodiff():
    """The observed Fisher information as sample_posterior accumulates it (lesion sums, the prior block
    in closed form) equals Louis' formula from per-lesion automatic derivatives of
    complete_loglik_lesion at the same draws (one iteration, two chains, padding lesions included)."""
    with jax.enable_x64(True):
        data = to_data(simulate(60, seed=8), n_pad=64)
        config = saem.SAEMConfig()
        mu = jnp.log(jnp.asarray([0.005, 0.03, 0.1 / 0.9]))
        state = saem.init(None, data, mu=mu, omega=jnp.asarray([0.6, 0.6, 1.0]), error=jnp.asarray([1.0, 0.2]),
                          n_chains=2, config=config)
        post = saem.sample_posterior(jax.random.key(3), state, data, 1, config)
        theta = saem.pack_theta(state.coef, state.omega2, state.error)

        def per_lesion(fun):
            one = lambda phi_i, lesion: fun(lambda th: saem.complete_loglik_lesion(th, phi_i, lesion, config))(theta)
            return jax.vmap(jax.vmap(one), in_axes=(0, None))(post.phi_last, data)

        g = per_lesion(jax.grad) * data.lesion_mask[None, :, None]  # (C, N, T)
        h = per_lesion(jax.hessian) * data.lesion_mask[None, :, None, None]
        g_mean = g.mean(axis=0)
        expected = -(h.mean(axis=0).sum(axis=0) + jnp.einsum("cnt,cns->ts", g, g) / 2) + g_mean.T @ g_mean
        np.testing.assert_allclose(np.asarray(post.fisher), np.asarray(expected), rtol=1e-9, atol=1e-8)


def test_conditional_mode_matches_scipy():
    """Each lesion's conditional mode (damped Newton with the closed-form 3 x 3 solve) is the minimum
    scipy's BFGS finds for the same objective, to 1e-5."""
    with jax.enable_x64(True):
        data = to_data(simulate(40, seed=9), n_pad=64)
        config = saem.SAEMConfig()
        coef = jnp.log(jnp.asarray([[0.005, 0.03, 0.1 / 0.9]]))
        omega2 = jnp.asarray([0.6, 0.6, 1.0]) ** 2
        error = jnp.asarray([1.0, 0.2])
        start = jnp.broadcast_to(coef, (64, 3))
        mode, grad_norm = saem.conditional_mode(coef, omega2, error, data, start, config)
        assert float(jnp.max(grad_norm)) < 1e-5

        def objective(phi_i, i):
            lesion = jax.tree_util.tree_map(lambda x: x[i : i + 1], data)
            ll, _ = lesion_loglik(jnp.asarray(phi_i)[None], lesion, error)
            return float(-(ll[0] + saem.log_prior(jnp.asarray(phi_i), coef[0], omega2)))

        for i in range(0, 40, 4):
            res = optimize.minimize(objective, np.asarray(coef[0]), args=(i,), method="BFGS", options={"gtol": 1e-9})
            np.testing.assert_allclose(np.asarray(mode[i]), res.x, atol=1e-5)


def test_independence_sampler_keeps_the_posterior():
    """The fourth kernel alone, with a proposal deliberately off-centre (log Kg + 0.5) and too narrow,
    draws the same conditional distributions as the prior kernel alone (an independence sampler from the
    population distribution, exact by construction): per-lesion conditional means agree to Monte-Carlo
    error, with no pull towards the proposal. Without the proposal-density correction log Kg moves by
    +0.23 here."""
    with jax.enable_x64(True):
        data = to_data(simulate(60, seed=11), n_pad=64)
        mu = jnp.log(jnp.asarray([TRUTH["kg"], TRUTH["kd"], TRUTH["f"] / (1 - TRUTH["f"])]))
        omega2 = jnp.asarray([TRUTH["omega_kg"], TRUTH["omega_kd"], TRUTH["omega_f"]]) ** 2
        error = jnp.asarray([1.0, TRUTH["b"]])
        state = saem.init(None, data, mu=mu, omega=jnp.sqrt(omega2), error=error, n_chains=8)
        mean_t = saem.population_mean(state.coef, data).T
        prop_mean = mean_t.at[0].add(0.5)
        prop_cov = jnp.stack([jnp.full(64, 0.25 * omega2[k] if k == j else 0.0) for k, j in saem._PAIRS])
        off = dict(n_prior_kernel=0, n_component_kernel=0, n_joint_kernel=0)

        def draws(config, key):
            def body(chain, k):
                chain, _ = saem._kernels(jax.random.fold_in(key, k), chain, data, mean_t, omega2, error,
                                         state.rw_scale, state.joint_scale, config, prop_mean, prop_cov)
                return chain, chain.phi

            chain = saem._Chain(state.phi, state.loglik, state.log_v)
            _, phi = jax.lax.scan(body, chain, jnp.arange(1500))
            return phi[300:].mean(axis=(0, 2))[:, :60]  # (3, lesions)

        indep = jax.jit(lambda k: draws(saem.SAEMConfig(**off, n_independent_kernel=2), k))(jax.random.key(1))
        prior = jax.jit(lambda k: draws(saem.SAEMConfig(**{**off, "n_prior_kernel": 2}, n_independent_kernel=0),
                                        k))(jax.random.key(2))
    diff = np.asarray(indep) - np.asarray(prior)
    assert abs(diff[0].mean()) < 0.04, diff[0].mean()
    for k in range(3):
        assert np.abs(diff[k]).mean() < 0.1, (k, np.abs(diff[k]).mean())


def test_a_second_fit_in_the_same_bucket_compiles_nothing():
    """Compiled once per shape bucket: fitting other data of the same shapes, with another seed, runs
    every phase (SAEM chunks, posterior, Fisher information, modes, -2LL) without one new XLA
    compilation. The listener is live: a new program in the same window is counted."""
    from jax._src import dispatch

    sim = simulate(400, seed=12)
    first = _cohort(sim)
    sim.y = sim.y * 1.05  # other values, the same layout
    second = _cohort(sim)
    spec = dataclasses.replace(QUICK, n_is_draws=200)
    events: list[str] = []

    def listen(event, duration, **kwargs):
        if event == dispatch.BACKEND_COMPILE_EVENT:
            events.append(event)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        spec.fit(first, seed=0)
        events.clear()
        fit = spec.fit(second, seed=1)
        assert events == [], f"{len(events)} compilation(s) in the second fit"
        assert fit.loglik is not None
        jax.jit(lambda x: jnp.sin(x) * 3.25)(jnp.arange(7.0))
        assert len(events) >= 1
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)

"""A full covariance of the random effects (``TGIModel(covariance="full")``): the density, the M-step, the
MH kernels, the Fisher information, the conditional modes, and a fit that finds planted correlations."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize, stats
from tgi_simulate import TRUTH, simulate, to_data

from lesionatlas.errors import ConfigError
from lesionatlas.tgi import TGIModel, saem
from lesionatlas.tgi.likelihood import lesion_loglik

FULL = saem.SAEMConfig(full_covariance=True)
MU = np.log([TRUTH["kg"], TRUTH["kd"], TRUTH["f"] / (1 - TRUTH["f"])])
OMEGA = np.array([TRUTH["omega_kg"], TRUTH["omega_kd"], TRUTH["omega_f"]])
CORR = np.array([0.6, -0.3, 0.2])  # kg-kd, kg-f, kd-f


def _omega_matrix(omega=OMEGA, corr=CORR) -> np.ndarray:
    r = np.eye(3)
    for m, (k, j) in enumerate(((0, 1), (0, 2), (1, 2))):
        r[k, j] = r[j, k] = corr[m]
    return r * np.outer(omega, omega)


def test_full_prior_density_matches_scipy(x64):
    rng = np.random.default_rng(0)
    phi = MU + rng.normal(size=(50, 3)) * 1.5
    ours = saem.log_prior(jnp.asarray(phi), jnp.asarray(MU), jnp.asarray(OMEGA**2), jnp.asarray(CORR))
    ref = stats.multivariate_normal(MU, _omega_matrix()).logpdf(phi)
    np.testing.assert_allclose(np.asarray(ours), ref, rtol=1e-12)
    # parameter-major, batched over chains, as the kernels call it
    phi_t = jnp.asarray(phi.T.reshape(3, 5, 10))
    mean_t = jnp.broadcast_to(jnp.asarray(MU)[:, None], (3, 10))
    batched = saem._log_prior_t(phi_t, mean_t, jnp.asarray(OMEGA**2), jnp.asarray(CORR))
    np.testing.assert_allclose(np.asarray(batched).reshape(-1), ref, rtol=1e-12)
    # with zero correlations it is the diagonal density
    zero = saem.log_prior(jnp.asarray(phi), jnp.asarray(MU), jnp.asarray(OMEGA**2), jnp.zeros(3))
    np.testing.assert_allclose(np.asarray(zero), np.asarray(saem.log_prior(jnp.asarray(phi), MU, OMEGA**2)), rtol=1e-12)


def _design_data(n: int = 60, n_pad: int = 64):
    """Data with an intercept and two covariates (a binary and a continuous one)."""
    data = to_data(simulate(n, seed=21), n_pad=n_pad)
    rng = np.random.default_rng(5)
    x = np.zeros((n_pad, 3))
    x[:n] = np.column_stack([np.ones(n), rng.integers(0, 2, n) - 0.5, rng.normal(size=n)])
    return data._replace(design=jnp.asarray(x))


def test_m_step_returns_the_parameters_of_its_statistics(x64):
    """The statistics that a given (B, Omega) implies give back exactly that (B, Omega) in the M-step,
    also when the covariates differ between parameters (generalised least squares; ordinary least
    squares per parameter would not return B here)."""
    data = _design_data()
    mask = np.array([[True, True, True], [True, False, False], [False, True, True]])
    coef = np.array([MU, [0.4, 0.0, 0.0], [0.0, -0.2, 0.3]])
    state = saem.init(None, data, mu=jnp.asarray(MU), omega=jnp.asarray(OMEGA), error=jnp.asarray([1.0, 0.2]),
                      coef_mask=jnp.asarray(mask), config=FULL, omega_corr=jnp.asarray(CORR))
    state = state._replace(coef=jnp.asarray(coef))
    stats_ = saem._stats_from_params(state.coef, state.omega2, state.error, data, FULL, state.omega_corr)
    new_coef, omega2, corr, error = saem._m_step(stats_, state, data, jnp.asarray(False), FULL)
    np.testing.assert_allclose(np.asarray(new_coef), coef, atol=1e-10)
    np.testing.assert_allclose(np.asarray(omega2), OMEGA**2, rtol=1e-10)
    np.testing.assert_allclose(np.asarray(corr), CORR, atol=1e-10)
    np.testing.assert_allclose(np.asarray(error), [1.0, 0.2], rtol=1e-10)
    # with the same free covariates on every parameter GLS is OLS
    xtx = saem._design(data).T @ saem._design(data)
    s_phi = jnp.asarray(np.random.default_rng(1).normal(size=(3, 3)))
    all_free = jnp.ones((3, 3), bool)
    gls = saem._solve_coef_gls(xtx, s_phi, all_free, jnp.linalg.inv(jnp.asarray(_omega_matrix())))
    np.testing.assert_allclose(np.asarray(gls), np.asarray(saem._solve_coef(xtx, s_phi, all_free)), atol=1e-10)


@pytest.mark.parametrize("kernel", ["prior", "joint", "component"])
def test_kernels_keep_the_correlated_population_distribution(kernel):
    """With no observations a lesion's conditional distribution is the population distribution; each
    kernel alone, run from it, keeps it: the draws' correlations match Omega's (to Monte-Carlo error,
    ~0.02 here)."""
    with jax.enable_x64(True):
        data = to_data(simulate(256, seed=4))
        data = data._replace(obs_mask=jnp.zeros_like(data.obs_mask), censored=jnp.zeros_like(data.censored))
        moves = {"prior": dict(n_prior_kernel=2, n_component_kernel=0, n_joint_kernel=0),
                 "joint": dict(n_prior_kernel=0, n_component_kernel=0, n_joint_kernel=2),
                 "component": dict(n_prior_kernel=0, n_component_kernel=2, n_joint_kernel=0)}[kernel]
        config = saem.SAEMConfig(full_covariance=True, **moves)
        state = saem.init(None, data, mu=jnp.asarray(MU), omega=jnp.asarray(OMEGA), error=jnp.asarray([1.0, 0.2]),
                          n_chains=4, config=config, omega_corr=jnp.asarray(CORR))
        start = np.random.default_rng(2).multivariate_normal(MU, _omega_matrix(), size=(4, 256))
        phi0 = jnp.asarray(np.moveaxis(start, -1, 0))
        chain = saem._Chain(phi0, state.loglik, state.log_v)
        mean_t = saem.population_mean(state.coef, data).T

        def body(c, k):
            c, _ = saem._kernels(jax.random.fold_in(jax.random.key(7), k), c, data, mean_t, state.omega2,
                                 state.error, jnp.full(3, 1.0), jnp.asarray(0.8), config, corr=state.omega_corr)
            return c, c.phi[:, :, ::8]

        _, draws = jax.jit(lambda c: jax.lax.scan(body, c, jnp.arange(300)))(chain)
    draws = np.asarray(draws).transpose(1, 0, 2, 3).reshape(3, -1)  # (3, draws)
    np.testing.assert_allclose(np.corrcoef(draws)[[0, 0, 1], [1, 2, 2]], CORR, atol=0.05)
    np.testing.assert_allclose(draws.std(axis=1), OMEGA, rtol=0.05)


def _posterior(config, corr, n_chains=2):
    data = to_data(simulate(60, seed=8), n_pad=64)
    state = saem.init(None, data, mu=jnp.asarray(MU), omega=jnp.asarray(OMEGA), error=jnp.asarray([1.0, 0.2]),
                      n_chains=n_chains, config=config, omega_corr=None if corr is None else jnp.asarray(corr))
    return data, state, saem.sample_posterior(jax.random.key(3), state, data, 1, config)


def test_fisher_information_of_a_full_covariance_matches_autodiff(x64):
    """Louis' formula as sample_posterior accumulates it (the prior block by forward-mode derivatives of
    the batched density, over B, omega and the correlations) equals the formula from per-lesion automatic
    derivatives of complete_loglik_lesion at the same draws."""
    data, state, post = _posterior(FULL, CORR)
    theta = saem.pack_theta(state.coef, state.omega2, state.error, state.omega_corr)
    assert theta.shape == (3 + 3 + 3 + 2,)

    def per_lesion(fun):
        one = lambda phi_i, lesion: fun(lambda th: saem.complete_loglik_lesion(th, phi_i, lesion, FULL))(theta)
        return jax.vmap(jax.vmap(one), in_axes=(0, None))(post.phi_last, data)

    g = per_lesion(jax.grad) * data.lesion_mask[None, :, None]
    h = per_lesion(jax.hessian) * data.lesion_mask[None, :, None, None]
    g_mean = g.mean(axis=0)
    expected = -(h.mean(axis=0).sum(axis=0) + jnp.einsum("cnt,cns->ts", g, g) / 2) + g_mean.T @ g_mean
    np.testing.assert_allclose(np.asarray(post.fisher), np.asarray(expected), rtol=1e-9, atol=1e-8)


def test_full_covariance_at_zero_correlation_reduces_to_the_diagonal_model(x64):
    """At zero correlations the full model draws the same chains as the diagonal one, and its Fisher
    information restricted to (B, omega, a, b) is the diagonal model's closed-form one."""
    _, _, diag = _posterior(saem.SAEMConfig(), None)
    _, _, full = _posterior(FULL, np.zeros(3))
    np.testing.assert_array_equal(np.asarray(full.phi_last), np.asarray(diag.phi_last))
    keep = [0, 1, 2, 3, 4, 5, 9, 10]
    np.testing.assert_allclose(np.asarray(full.fisher)[np.ix_(keep, keep)], np.asarray(diag.fisher),
                               rtol=1e-9, atol=1e-8)


def test_conditional_mode_with_a_full_covariance_matches_scipy(x64):
    data = to_data(simulate(40, seed=9), n_pad=64)
    coef, omega2, corr = jnp.asarray(MU)[None], jnp.asarray(OMEGA**2), jnp.asarray(CORR)
    error = jnp.asarray([1.0, 0.2])
    start = jnp.broadcast_to(coef, (64, 3))
    mode, grad_norm = saem.conditional_mode(coef, omega2, error, data, start, FULL, omega_corr=corr)
    assert float(jnp.max(grad_norm)) < 1e-5
    prior = stats.multivariate_normal(MU, _omega_matrix())

    def objective(phi_i, i):
        lesion = jax.tree_util.tree_map(lambda x: x[i : i + 1], data)
        ll, _ = lesion_loglik(jnp.asarray(phi_i)[None], lesion, error)
        return float(-(ll[0] + prior.logpdf(phi_i)))

    for i in range(0, 40, 5):
        res = optimize.minimize(objective, MU, args=(i,), method="BFGS", options={"gtol": 1e-9})
        np.testing.assert_allclose(np.asarray(mode[i]), res.x, atol=1e-5)


def test_bad_covariance_is_a_config_error():
    with pytest.raises(ConfigError, match="covariance"):
        TGIModel(covariance="unstructured").fit(simulate(5, seed=0).tables()[2])


CORR_TRUTH = {**TRUTH, "corr_kg_kd": 0.6, "corr_kg_f": -0.3, "corr_kd_f": 0.0}


@pytest.fixture(scope="module")
def correlated_fits():
    """400 lesions with correlated random effects, fitted with the full and the diagonal covariance."""
    measurements = simulate(400, seed=21, truth=CORR_TRUTH).tables()[2]
    fits = {}
    for covariance in ("full", "diagonal"):
        spec = TGIModel(covariance=covariance, baseline_observation="drop", n_is_draws=500)
        fits[covariance] = spec.fit(measurements, seed=3)
    return fits


def test_full_fit_recovers_the_planted_correlations(correlated_fits):
    fit = correlated_fits["full"]
    pop = fit.population.set_index("parameter")
    assert list(pop.index) == ["kg_pop", "kd_pop", "f_pop", "omega_kg", "omega_kd", "omega_f",
                               "corr_kg_kd", "corr_kg_f", "corr_kd_f", "b"]
    for name in ("corr_kg_kd", "corr_kg_f", "corr_kd_f"):
        row = pop.loc[name]
        assert row["ci_lower"] < CORR_TRUTH[name] < row["ci_upper"], name
        assert 0.0 < row["se"] < 0.2
    for name in ("kg", "kd", "f"):
        row = pop.loc[f"{name}_pop"]
        assert row["ci_lower"] < CORR_TRUTH[name] < row["ci_upper"], name
    assert fit.n_parameters == 10  # AIC/BIC count the correlations
    assert fit.diagnostics["fisher_positive_definite"]
    assert {"corr_kg_kd", "corr_kg_f", "corr_kd_f"} <= set(fit.trace.columns)


def test_full_covariance_fits_correlated_data_better_than_the_diagonal(correlated_fits):
    full, diag = correlated_fits["full"], correlated_fits["diagonal"]
    assert "corr_kg_kd" not in set(diag.population["parameter"])
    # three more parameters and a likelihood-ratio statistic far beyond chi2(3)'s 99.9% point (16.3)
    assert -2 * diag.loglik - (-2 * full.loglik) > 16.3
    assert full.aic < diag.aic and full.bic < diag.bic


def test_full_fit_round_trips_and_simulates_with_its_correlations(correlated_fits, tmp_path):
    from lesionatlas.tgi import TGIFit
    from lesionatlas.tgi.diagnostics import _design, simulate_observations

    fit = correlated_fits["full"]
    back = TGIFit.from_dir(fit.to_dir(tmp_path / "fit"))
    assert back.equals(fit) and back.spec.covariance == "full"
    pop = fit.population.set_index("parameter")["estimate"]
    factor = _design(fit).corr_factor
    implied = factor @ factor.T
    np.testing.assert_allclose(implied[[0, 0, 1], [1, 2, 2]],
                               pop[["corr_kg_kd", "corr_kg_f", "corr_kd_f"]].to_numpy(float), atol=1e-12)
    sims = simulate_observations(fit, n_simulations=20, seed=1)
    assert sims.shape == (20, len(fit.observations)) and np.isfinite(sims).all()

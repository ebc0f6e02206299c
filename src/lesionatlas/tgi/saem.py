r"""SAEM for the TGI mixed-effects model, as Monolix runs it, vectorised over lesions (pure JAX).

Model (normal scale): :math:`\phi_i = X_i B + \eta_i`, :math:`\eta_i \sim N(0, \operatorname{diag}\omega^2)`,
:math:`\phi_i = (\log K_g, \log K_d, \operatorname{logit} F)_i`, observations as in
:mod:`lesionatlas.tgi.likelihood`. Without covariates :math:`X_i = 1` and :math:`B = \mu`.

One iteration (:func:`step`) is

1. **Simulation** -- Metropolis-Hastings kernels on every lesion (and chain) at once, with the censored
   likelihood (M3 / interval): ``n_prior_kernel`` draws from the population distribution (independence
   sampler), ``n_component_kernel`` sweeps of a one-dimensional random walk on each parameter in turn,
   ``n_joint_kernel`` joint random-walk moves with covariance proportional to :math:`\Omega`. The
   random-walk scales adapt towards an acceptance rate of 0.4 during burn-in and the exploratory phase
   (``s <- s (1 + 0.4 (rate - 0.4))``, saemix's rule) and stay fixed during smoothing.
2. **Imputation** of censored observations: each censored row gets a value drawn from the residual
   distribution truncated to its interval, given the current :math:`\phi` (Samson, Lavielle & Mentré
   2006). With the imputed values the residual-error M-step is closed form; the MH kernels still use the
   exact censored likelihood, so :math:`\phi` is drawn from its marginal posterior.
3. **Stochastic approximation** of the sufficient statistics
   :math:`S \leftarrow S + \gamma_k (s(\phi, y^*) - S)` with :math:`\gamma_k = 0` during burn-in
   (MCMC only), :math:`1` in the exploratory phase and :math:`(k - K_0 - K_1)^{-\alpha}` in the
   smoothing phase (:math:`\alpha = 1` by default).
4. **M-step**: :math:`B` by (masked) least squares of :math:`\phi` on :math:`X`, :math:`\omega^2` from
   the residual second moments, :math:`b^2 = \overline{r^2}` (proportional; :math:`a^2 = \overline{e^2}`
   for constant error; for combined error a few Newton steps on :math:`(\log a, \log b)` followed by a
   stochastic-approximation update of the values, saemix's approach). During the exploratory phase the
   variances are annealed: :math:`\omega^2_k \ge \tau\, \omega^{2}_{k-1}` and the same for the residual
   variance (:math:`\tau` = ``annealing_factor`` = 0.95), so they shrink slowly, as Monolix's simulated
   annealing does.

``n_explore`` lives in the state (not the static config) so that a shell may end the exploratory phase
early, between chunks of iterations, without recompiling. :func:`run` iterates :func:`step` with
``jax.lax.scan``; iteration ``k`` uses the key ``fold_in(key, k)``, so running 500 iterations at once or
in chunks of 50 gives the same numbers.

After convergence, :func:`sample_posterior` runs the same kernels at the fixed estimate and collects the
conditional means and SDs of :math:`\phi_i` and the per-lesion derivatives needed by Louis' formula
(the stochastic approximation of the Fisher information, as Monolix's "stochastic approximation" does);
:func:`importance_loglik` estimates the log-likelihood by importance sampling with a Student-t proposal
centred on each lesion's conditional mean (Monolix's method); :func:`conditional_mode` finds each
lesion's MAP by damped Newton steps.

References
----------
Delyon, Lavielle & Moulines (1999), Ann Stat 27:94-128. Kuhn & Lavielle (2005), CSDA 49:1020-1038.
Samson, Lavielle & Mentré (2006), CSDA 51:1562-1574. Comets, Lavenu & Lavielle (2017), saemix, J Stat
Softw 80(3). Louis (1982), JRSS B 44:226-233.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from .likelihood import (
    DEFAULT_MAX_RELATIVE_RESIDUAL,
    ErrorModel,
    TGIData,
    lesion_loglik,
    observation_terms,
    predict_log_volume,
)

N_PHI = 3
_LOG_2PI = math.log(2.0 * math.pi)


class SAEMConfig(NamedTuple):
    """Static settings of the SAEM core (hashable: a change recompiles).

    Attributes
    ----------
    error_model : ``"proportional" | "constant" | "combined"``
    max_relative_residual : outlier guard of the likelihood (see :mod:`lesionatlas.tgi.likelihood`).
    n_burn_in : MCMC-only iterations before the first M-step (Monolix: 5).
    n_prior_kernel, n_component_kernel, n_joint_kernel : MH moves of each kernel per iteration.
    target_acceptance, adapt_rate : random-walk scale adaptation.
    annealing_factor : lower bound of the per-iteration variance ratio in the exploratory phase.
    step_exponent : :math:`\\alpha` of the smoothing step :math:`(k - K)^{-\\alpha}`.
    n_newton_error : Newton steps of the combined-error M-step.
    """

    error_model: ErrorModel = "proportional"
    max_relative_residual: float = DEFAULT_MAX_RELATIVE_RESIDUAL
    n_burn_in: int = 5
    n_prior_kernel: int = 2
    n_component_kernel: int = 2
    n_joint_kernel: int = 2
    target_acceptance: float = 0.4
    adapt_rate: float = 0.4
    annealing_factor: float = 0.95
    step_exponent: float = 1.0
    n_newton_error: int = 8


class SufficientStats(NamedTuple):
    """Stochastic-approximation averages of the complete-data sufficient statistics."""

    s_phi: Array  # (P, 3): X^T phi
    s_phi2: Array  # (3,): sum_i phi_i^2
    s_err: Array  # (2,): (sum e^2, sum r^2) for constant / proportional; (a, b) values for combined


class SAEMState(NamedTuple):
    """State of the SAEM chain; every field is an array (a pytree ``jax.lax.scan`` can carry)."""

    iteration: Array  # iterations done (int)
    n_explore: Array  # K1, length of the exploratory phase (int, may be lowered by a shell)
    phi: Array  # (C, N, 3) current individual parameters of each chain
    loglik: Array  # (C, N) log p(y_i | phi_i) at phi
    coef: Array  # (P, 3) B; row 0 = mu without covariates
    omega2: Array  # (3,) variances of the random effects
    error: Array  # (2,) (a, b)
    stats: SufficientStats
    rw_scale: Array  # (3,) component-wise random-walk scale (in units of omega)
    joint_scale: Array  # () joint random-walk scale (in units of omega)
    coef_mask: Array  # (P, 3) bool, free coefficients (row 0 always free)


class SAEMInfo(NamedTuple):
    """What one iteration did (stacked over iterations by :func:`run`)."""

    iteration: Array
    gamma: Array
    coef: Array
    omega2: Array
    error: Array
    acceptance: Array  # (3,) prior, component-wise (mean), joint
    n_clipped: Array  # observations hitting the outlier guard (summed over chains)
    complete_loglik: Array  # sum_i log p(y_i, phi_i) averaged over chains (for trajectories)


# ----------------------------------------------------------------------------- helpers
def _n_lesions(data: TGIData) -> Array:
    return jnp.sum(data.lesion_mask).astype(data.t.dtype)


def _n_obs(data: TGIData) -> Array:
    return jnp.sum(data.obs_mask & data.lesion_mask[:, None]).astype(data.t.dtype)


def _design(data: TGIData) -> Array:
    return data.design * data.lesion_mask[:, None].astype(data.design.dtype)


def population_mean(coef: Array, data: TGIData) -> Array:
    """Normal-scale typical values of each lesion, ``X B`` (N, 3)."""
    return data.design @ coef


def log_prior(phi: Array, mean: Array, omega2: Array) -> Array:
    """:math:`\\log N(\\phi; m, \\operatorname{diag}\\omega^2)` summed over the 3 parameters."""
    return -0.5 * jnp.sum(_LOG_2PI + jnp.log(omega2) + (phi - mean) ** 2 / omega2, axis=-1)


def _loglik(phi: Array, data: TGIData, error: Array, config: SAEMConfig) -> tuple[Array, Array]:
    return lesion_loglik(
        phi, data, error, error_model=config.error_model, max_relative_residual=config.max_relative_residual
    )


def _masked_mean(x: Array, weight: Array) -> Array:
    return jnp.sum(x * weight) / jnp.maximum(jnp.sum(weight), 1.0)


def _mh_accept(key: Array, log_alpha: Array) -> Array:
    u = jax.random.uniform(key, log_alpha.shape, dtype=log_alpha.dtype)
    return jnp.log(u) < log_alpha


def _solve_coef(xtx: Array, s_phi: Array, mask: Array) -> Array:
    """Least squares per parameter with only the free coefficients (others fixed at 0)."""

    def one(s_k: Array, m_k: Array) -> Array:
        m = m_k.astype(xtx.dtype)
        a = xtx * m[:, None] * m[None, :] + jnp.diag(1.0 - m)
        return jnp.linalg.solve(a, s_k * m)

    return jax.vmap(one, in_axes=(1, 1), out_axes=1)(s_phi, mask)


def _stats_from_params(coef: Array, omega2: Array, error: Array, data: TGIData, config: SAEMConfig) -> SufficientStats:
    """Statistics whose M-step returns exactly ``coef, omega2, error`` (used at init)."""
    x = _design(data)
    xtx = x.T @ x
    s_phi = xtx @ coef
    s_phi2 = _n_lesions(data) * omega2 + jnp.einsum("pk,pq,qk->k", coef, xtx, coef)
    n_obs = _n_obs(data)
    if config.error_model == "combined":
        s_err = error
    else:
        s_err = n_obs * error**2
    return SufficientStats(s_phi=s_phi, s_phi2=s_phi2, s_err=s_err)


# ----------------------------------------------------------------------------- init
def init(
    key: Array,
    data: TGIData,
    *,
    mu: Array,
    omega: Array,
    error: Array,
    n_chains: int = 1,
    n_explore: int = 300,
    coef_mask: Array | None = None,
    config: SAEMConfig = SAEMConfig(),
) -> SAEMState:
    """Initial state: population values ``mu`` (normal scale, (3,)), ``omega`` (SDs), ``error = (a, b)``.

    Individual parameters start at the typical values (:math:`\\eta = 0`), as in Monolix; covariate
    coefficients start at 0. ``key`` is accepted for a uniform signature and not used.
    """
    del key
    dtype = data.t.dtype
    n_cov = data.design.shape[1]
    coef = jnp.zeros((n_cov, N_PHI), dtype).at[0].set(jnp.asarray(mu, dtype))
    if coef_mask is None:
        coef_mask = jnp.zeros((n_cov, N_PHI), bool).at[0].set(True)
    coef_mask = jnp.asarray(coef_mask, bool).at[0].set(True)
    omega2 = jnp.asarray(omega, dtype) ** 2
    error = jnp.asarray(error, dtype)
    mean = population_mean(coef, data)
    phi = jnp.broadcast_to(mean, (n_chains, *mean.shape))
    ll, _ = _loglik(phi, data, error, config)
    return SAEMState(
        iteration=jnp.asarray(0, jnp.int32),
        n_explore=jnp.asarray(n_explore, jnp.int32),
        phi=phi,
        loglik=ll,
        coef=coef,
        omega2=omega2,
        error=error,
        stats=_stats_from_params(coef, omega2, error, data, config),
        rw_scale=jnp.full((N_PHI,), 0.4, dtype),
        joint_scale=jnp.asarray(0.3, dtype),
        coef_mask=coef_mask,
    )


# ----------------------------------------------------------------------------- simulation step
class _Chain(NamedTuple):
    phi: Array
    loglik: Array


def _kernels(
    key: Array,
    chain: _Chain,
    data: TGIData,
    mean: Array,
    omega2: Array,
    error: Array,
    rw_scale: Array,
    joint_scale: Array,
    config: SAEMConfig,
) -> tuple[_Chain, Array]:
    """All MH moves of one iteration; returns the chain and acceptance rates (prior, component, joint)."""
    omega = jnp.sqrt(omega2)
    weight = jnp.broadcast_to(data.lesion_mask, chain.loglik.shape).astype(chain.loglik.dtype)
    dtype = chain.phi.dtype
    k_prior, k_comp, k_joint = jax.random.split(key, 3)

    def prior_move(c: _Chain, k: Array) -> tuple[_Chain, Array]:
        k1, k2 = jax.random.split(k)
        prop = mean + omega * jax.random.normal(k1, c.phi.shape, dtype)
        ll_new, _ = _loglik(prop, data, error, config)
        acc = _mh_accept(k2, ll_new - c.loglik)
        return _Chain(jnp.where(acc[..., None], prop, c.phi), jnp.where(acc, ll_new, c.loglik)), _masked_mean(
            acc, weight
        )

    def rw_move(c: _Chain, k: Array, step: Array) -> tuple[_Chain, Array]:
        k1, k2 = jax.random.split(k)
        prop = c.phi + step * jax.random.normal(k1, c.phi.shape, dtype)
        ll_new, _ = _loglik(prop, data, error, config)
        log_alpha = ll_new - c.loglik + log_prior(prop, mean, omega2) - log_prior(c.phi, mean, omega2)
        acc = _mh_accept(k2, log_alpha)
        return _Chain(jnp.where(acc[..., None], prop, c.phi), jnp.where(acc, ll_new, c.loglik)), _masked_mean(
            acc, weight
        )

    # each kernel is one scanned body (not unrolled), so the likelihood is traced three times only
    def prior_body(c: _Chain, k: Array) -> tuple[_Chain, Array]:
        return prior_move(c, k)

    def comp_body(c: _Chain, xs: tuple[Array, Array]) -> tuple[_Chain, Array]:
        k, j = xs
        unit = (jnp.arange(N_PHI) == j).astype(dtype)
        return rw_move(c, k, unit * rw_scale * omega)

    def joint_body(c: _Chain, k: Array) -> tuple[_Chain, Array]:
        return rw_move(c, k, joint_scale * omega)

    nan = jnp.asarray(jnp.nan, dtype)
    prior_rate = comp_rate = joint_rate = None
    if config.n_prior_kernel:
        chain, r = jax.lax.scan(prior_body, chain, jax.random.split(k_prior, config.n_prior_kernel))
        prior_rate = jnp.mean(r)
    n_comp = config.n_component_kernel * N_PHI
    if n_comp:
        which = jnp.tile(jnp.arange(N_PHI), config.n_component_kernel)
        chain, r = jax.lax.scan(comp_body, chain, (jax.random.split(k_comp, n_comp), which))
        comp_rate = jnp.mean(r.reshape(config.n_component_kernel, N_PHI), axis=0)
    if config.n_joint_kernel:
        chain, r = jax.lax.scan(joint_body, chain, jax.random.split(k_joint, config.n_joint_kernel))
        joint_rate = jnp.mean(r)
    rates = jnp.concatenate(
        [
            (nan if prior_rate is None else prior_rate)[None],
            jnp.full((N_PHI,), nan) if comp_rate is None else comp_rate,
            (nan if joint_rate is None else joint_rate)[None],
        ]
    )
    return chain, rates


# ----------------------------------------------------------------------------- M-step pieces
def _residual_statistics(key: Array, phi: Array, data: TGIData, error: Array, config: SAEMConfig) -> tuple[Array, Array]:
    """Standardized residuals (censored rows imputed) and predictions, (C, N, M) each."""
    log_v = predict_log_volume(phi, data)
    terms = observation_terms(
        log_v,
        data.y,
        data.lower,
        data.censored,
        error,
        error_model=config.error_model,
        max_relative_residual=config.max_relative_residual,
    )
    if data.cens_lesion is None:
        upper = jnp.where(data.censored, terms.z, jnp.inf)
        lower = jnp.where(data.censored, terms.z_lower, -jnp.inf)
        upper = jnp.maximum(upper, lower)
        z_imp = jax.random.truncated_normal(key, lower, upper, terms.z.shape, terms.z.dtype)
        z = jnp.where(data.censored, z_imp, terms.z)
    else:  # draw on the censored cells only (their index), the other cells keep their residual
        i, j = data.cens_lesion, data.cens_obs
        upper = terms.z[..., i, j]
        lower = terms.z_lower[..., i, j]
        upper = jnp.maximum(upper, lower)
        z_imp = jax.random.truncated_normal(key, lower, upper, upper.shape, upper.dtype)
        z_imp = jnp.where(data.cens_valid, z_imp, terms.z[..., i, j])
        z = terms.z.at[..., i, j].set(z_imp)
    z = jnp.where(data.obs_mask, z, 0.0)
    return z, terms.log_v


def _combined_error_update(error: Array, y_star: Array, log_v: Array, weight: Array, n_newton: int) -> Array:
    """Maximise sum log N(y*; V, (a + bV)^2) over (log a, log b) by damped Newton steps."""

    def objective(theta: Array) -> Array:
        log_sd = jnp.logaddexp(theta[0], theta[1] + log_v)
        v = jnp.exp(log_v)
        return jnp.sum(weight * (log_sd + 0.5 * ((y_star - v) / jnp.exp(log_sd)) ** 2))

    grad, hess = jax.grad(objective), jax.hessian(objective)

    def body(theta: Array, _: None) -> tuple[Array, None]:
        g, h = grad(theta), hess(theta)
        h = h + 1e-6 * jnp.eye(2, dtype=h.dtype) * (1.0 + jnp.abs(jnp.diag(h)))
        step = jnp.linalg.solve(h, g)
        step = jnp.clip(step, -1.0, 1.0)
        new = theta - step
        better = objective(new) < objective(theta)
        theta = jnp.where(better & jnp.all(jnp.isfinite(new)), new, theta)
        return theta, None

    theta, _ = jax.lax.scan(body, jnp.log(error), None, length=n_newton)
    return jnp.exp(theta)


def _m_step(
    stats: SufficientStats, state: SAEMState, data: TGIData, exploring: Array, config: SAEMConfig
) -> tuple[Array, Array, Array]:
    x = _design(data)
    xtx = x.T @ x
    coef = _solve_coef(xtx, stats.s_phi, state.coef_mask)
    n_les = _n_lesions(data)
    omega2 = (stats.s_phi2 - 2.0 * jnp.sum(coef * stats.s_phi, axis=0) + jnp.einsum("pk,pq,qk->k", coef, xtx, coef)) / n_les
    tiny = jnp.asarray(1e-8, omega2.dtype)
    omega2 = jnp.maximum(omega2, tiny)
    tau = config.annealing_factor
    omega2 = jnp.where(exploring, jnp.maximum(omega2, tau * state.omega2), omega2)
    if config.error_model == "combined":
        error = stats.s_err
        error = jnp.where(exploring, jnp.maximum(error, jnp.sqrt(tau) * state.error), error)
    else:
        var = stats.s_err / _n_obs(data)
        var = jnp.where(exploring, jnp.maximum(var, tau * state.error**2), var)
        error = jnp.sqrt(jnp.maximum(var, tiny))
        unused = 1 if config.error_model == "constant" else 0
        error = error.at[unused].set(state.error[unused])
    return coef, omega2, error


# ----------------------------------------------------------------------------- one iteration
def step(key: Array, state: SAEMState, data: TGIData, config: SAEMConfig = SAEMConfig()) -> tuple[SAEMState, SAEMInfo]:
    """One SAEM iteration (simulation, imputation, stochastic approximation, M-step)."""
    dtype = state.phi.dtype
    k = state.iteration + 1
    burn = k <= config.n_burn_in
    exploring = k <= config.n_burn_in + state.n_explore
    k_smooth = jnp.maximum(k - config.n_burn_in - state.n_explore, 1).astype(dtype)
    gamma = jnp.where(burn, 0.0, jnp.where(exploring, 1.0, k_smooth ** (-config.step_exponent))).astype(dtype)

    key_mcmc, key_imp = jax.random.split(key)
    mean = population_mean(state.coef, data)
    chain, rates = _kernels(
        key_mcmc,
        _Chain(state.phi, state.loglik),
        data,
        mean,
        state.omega2,
        state.error,
        state.rw_scale,
        state.joint_scale,
        config,
    )
    # adaptation of the random-walk scales (burn-in and exploratory phase only)
    adapt = 1.0 + config.adapt_rate * (rates - config.target_acceptance)
    adapt = jnp.where(exploring & jnp.isfinite(adapt), adapt, 1.0)
    rw_scale = jnp.clip(state.rw_scale * adapt[1:4], 1e-3, 10.0)
    joint_scale = jnp.clip(state.joint_scale * adapt[4], 1e-3, 10.0)

    # sufficient statistics of this iteration (averaged over chains)
    n_chains = chain.phi.shape[0]
    x = _design(data)
    phi_bar = jnp.mean(chain.phi, axis=0)
    w = data.lesion_mask.astype(dtype)
    s_phi = x.T @ phi_bar
    s_phi2 = jnp.sum(w[:, None] * jnp.mean(chain.phi**2, axis=0), axis=0)
    z, log_v = _residual_statistics(key_imp, chain.phi, data, state.error, config)
    obs_w = (data.obs_mask & data.lesion_mask[:, None]).astype(dtype)
    if config.error_model == "combined":
        log_sd = jnp.logaddexp(jnp.log(state.error[0]), jnp.log(state.error[1]) + log_v)
        y_star = jnp.exp(log_v) + jnp.exp(log_sd) * z
        new_err = _combined_error_update(
            state.error, y_star, log_v, jnp.broadcast_to(obs_w, log_v.shape) / n_chains, config.n_newton_error
        )
        s_err = new_err
    else:
        scale = state.error[1] if config.error_model == "proportional" else state.error[0]
        sum_sq = jnp.sum(obs_w * jnp.mean((scale * z) ** 2, axis=0))
        s_err = jnp.zeros((2,), dtype).at[1 if config.error_model == "proportional" else 0].set(sum_sq)
    new = SufficientStats(s_phi=s_phi, s_phi2=s_phi2, s_err=s_err)
    stats = jax.tree_util.tree_map(lambda old, cur: old + gamma * (cur - old), state.stats, new)
    coef, omega2, error = _m_step(stats, state, data, exploring & ~burn, config)
    coef = jnp.where(burn, state.coef, coef)
    omega2 = jnp.where(burn, state.omega2, omega2)
    error = jnp.where(burn, state.error, error)

    # the cached log-likelihood must follow the new error parameters
    ll, n_clipped = _loglik(chain.phi, data, error, config)
    mean_new = population_mean(coef, data)
    complete = jnp.sum(w * jnp.mean(ll + log_prior(chain.phi, mean_new, omega2), axis=0))
    new_state = SAEMState(
        iteration=k,
        n_explore=state.n_explore,
        phi=chain.phi,
        loglik=ll,
        coef=coef,
        omega2=omega2,
        error=error,
        stats=stats,
        rw_scale=rw_scale,
        joint_scale=joint_scale,
        coef_mask=state.coef_mask,
    )
    info = SAEMInfo(
        iteration=k,
        gamma=gamma,
        coef=coef,
        omega2=omega2,
        error=error,
        acceptance=jnp.concatenate([rates[:1], jnp.nanmean(rates[1:4])[None], rates[4:]]),
        n_clipped=jnp.sum(n_clipped * data.lesion_mask),
        complete_loglik=complete,
    )
    return new_state, info


def run(
    key: Array,
    state: SAEMState,
    data: TGIData,
    n_iter: int,
    config: SAEMConfig = SAEMConfig(),
    n_active: Array | int | None = None,
) -> tuple[SAEMState, SAEMInfo]:
    """``n_iter`` iterations of :func:`step` with ``jax.lax.scan``; iteration ``k`` uses ``fold_in(key, k)``.

    ``n_active`` (dynamic, default ``n_iter``): only the first ``n_active`` iterations change the state;
    the rest are no-ops whose ``SAEMInfo`` rows repeat the last one (``iteration`` does not advance).
    A shell can so run every chunk with the same compiled ``n_iter``.
    """
    n_active = n_iter if n_active is None else n_active

    def body(s: SAEMState, i: Array) -> tuple[SAEMState, SAEMInfo]:
        new, info = step(jax.random.fold_in(key, s.iteration), s, data, config)
        live = i < n_active
        new = jax.tree_util.tree_map(lambda a, b: jnp.where(live, a, b), new, s)
        return new, info

    return jax.lax.scan(body, state, jnp.arange(n_iter))


run_jit = jax.jit(run, static_argnames=("n_iter", "config"))


# ----------------------------------------------------------------------------- after convergence
def complete_loglik_lesion(theta: Array, phi: Array, lesion: TGIData, config: SAEMConfig) -> Array:
    """:math:`\\log p(y_i, \\phi_i; \\theta)` of one lesion, ``theta = (vec B, omega, a, b)``.

    ``lesion`` holds one lesion's fields (no ``N`` axis); ``omega`` are SDs.
    """
    n_cov = lesion.design.shape[-1]
    coef = theta[: n_cov * N_PHI].reshape(n_cov, N_PHI)
    omega = theta[n_cov * N_PHI : n_cov * N_PHI + N_PHI]
    error = theta[n_cov * N_PHI + N_PHI :]
    ll, _ = lesion_loglik(
        phi, lesion, error, error_model=config.error_model, max_relative_residual=config.max_relative_residual
    )
    mean = lesion.design @ coef
    return ll + log_prior(phi, mean, omega**2)


def pack_theta(coef: Array, omega2: Array, error: Array) -> Array:
    """``theta = (vec B (row-major), omega, a, b)``, the parameter vector of the Fisher information."""
    return jnp.concatenate([coef.reshape(-1), jnp.sqrt(omega2), error])


_USED_ERROR = {"proportional": (1,), "constant": (0,), "combined": (0, 1)}


def _louis_terms(
    phi: Array, mean: Array, omega2: Array, error: Array, data: TGIData, config: SAEMConfig
) -> tuple[Array, Array]:
    """Gradient (..., N, T) and Hessian (..., N, T, T) of each lesion's :func:`complete_loglik_lesion`
    with respect to ``theta = (vec B, omega, a, b)``, batched over chains and lesions.

    The complete log-likelihood is the Gaussian prior (depends on ``B, omega``) plus the conditional
    log-likelihood (depends on ``(a, b)`` only), so the Hessian is block diagonal: the prior block in
    closed form, the error block by forward-mode derivatives of the batched likelihood with respect to
    the error parameters the model uses (the unused one has zero derivatives).
    """
    x = data.design  # (N, P)
    n_cov = x.shape[-1]
    omega = jnp.sqrt(omega2)
    r = phi - mean  # (..., N, 3)
    batch = r.shape[:-1]
    dtype = r.dtype
    # prior: d/dB_pk = x_p r_k / w_k^2, d/dw_k = -1/w_k + r_k^2 / w_k^3
    g_b = (x[..., :, None] * (r / omega2)[..., None, :]).reshape(*batch, n_cov * N_PHI)
    g_w = -1.0 / omega + r**2 / omega**3
    eye = jnp.eye(N_PHI, dtype=dtype)
    h_bb = -(x[:, :, None, None, None] * x[:, None, None, :, None]) * (eye / omega2)[None, None, :, None, :]
    h_bb = jnp.broadcast_to(h_bb, (*batch, n_cov, N_PHI, n_cov, N_PHI))
    h_bb = h_bb.reshape(*batch, n_cov * N_PHI, n_cov * N_PHI)
    # d2/dB_pk dw_l = -2 x_p r_k / w_k^3 (k = l)
    h_bw = (x[..., :, None, None] * (-2.0 * r / omega**3)[..., None, :, None] * eye).reshape(
        *batch, n_cov * N_PHI, N_PHI
    )
    h_ww = (1.0 / omega2 - 3.0 * r**2 / omega2**2)[..., :, None] * eye
    # error parameters: forward-mode derivatives of the batched conditional log-likelihood
    used = _USED_ERROR[config.error_model]
    idx = jnp.asarray(used)

    def ll_of(e_used: Array) -> Array:
        return _loglik(phi, data, error.at[idx].set(e_used), config)[0]

    def grad_twice(e_used: Array) -> tuple[Array, Array]:
        g = jax.jacfwd(ll_of)(e_used)
        return g, g

    h_e_used, g_e_used = jax.jacfwd(grad_twice, has_aux=True)(error[idx])
    g_e = jnp.zeros((*batch, 2), dtype).at[..., idx].set(g_e_used)
    h_e = jnp.zeros((*batch, 2, 2), dtype).at[..., idx[:, None], idx[None, :]].set(h_e_used)
    n_b = n_cov * N_PHI
    n_theta = n_b + N_PHI + 2
    g = jnp.concatenate([g_b, g_w, g_e], axis=-1)
    h = jnp.zeros((*batch, n_theta, n_theta), dtype)
    h = h.at[..., :n_b, :n_b].set(h_bb)
    h = h.at[..., :n_b, n_b : n_b + N_PHI].set(h_bw)
    h = h.at[..., n_b : n_b + N_PHI, :n_b].set(jnp.swapaxes(h_bw, -1, -2))
    h = h.at[..., n_b : n_b + N_PHI, n_b : n_b + N_PHI].set(h_ww)
    h = h.at[..., n_b + N_PHI :, n_b + N_PHI :].set(h_e)
    return g, h


class PosteriorSummary(NamedTuple):
    """Conditional distributions of the lesions at a fixed estimate, from MCMC draws."""

    phi_mean: Array  # (N, 3)
    phi_sd: Array  # (N, 3)
    phi_last: Array  # (C, N, 3) last draws (to continue sampling)
    fisher: Array  # (T, T) observed Fisher information by Louis' formula (T = len(theta))
    n_draws: Array  # draws per lesion


def sample_posterior(
    key: Array,
    state: SAEMState,
    data: TGIData,
    n_iter: int,
    config: SAEMConfig = SAEMConfig(),
    *,
    fisher: bool = True,
) -> PosteriorSummary:
    r"""Run the MH kernels at the fixed estimate of ``state`` and summarise the draws.

    The observed Fisher information is Louis' formula, per lesion,

    .. math:: I(\theta) = \sum_i \left( -E[\partial^2 l_i + \partial l_i \partial l_i^T]
              + E[\partial l_i] E[\partial l_i]^T \right),

    with :math:`l_i = \log p(y_i, \phi_i; \theta)` (the exact censored likelihood) and expectations over
    the conditional distribution of :math:`\phi_i`, approximated by the draws of all chains. The
    per-lesion derivatives come from :func:`_louis_terms` (prior block in closed form, error block by
    forward-mode derivatives of the batched likelihood), batched over chains and lesions.
    """
    theta = pack_theta(state.coef, state.omega2, state.error)
    mean = population_mean(state.coef, data)
    w = data.lesion_mask.astype(state.phi.dtype)
    n_theta = theta.shape[0]

    def louis_terms(phi: Array) -> tuple[Array, Array]:
        return _louis_terms(phi, mean, state.omega2, state.error, data, config)

    def body(carry, k: Array):
        chain, s1, s2, g_sum, h_sum = carry
        chain, _ = _kernels(
            jax.random.fold_in(key, k),
            chain,
            data,
            mean,
            state.omega2,
            state.error,
            state.rw_scale,
            state.joint_scale,
            config,
        )
        s1 = s1 + jnp.mean(chain.phi, axis=0)
        s2 = s2 + jnp.mean(chain.phi**2, axis=0)
        if fisher:
            g, h = louis_terms(chain.phi)  # (C, N, T), (C, N, T, T)
            g = jnp.where(jnp.isfinite(g), g, 0.0) * w[None, :, None]
            h = jnp.where(jnp.isfinite(h), h, 0.0) * w[None, :, None, None]
            g_sum = g_sum + jnp.mean(g, axis=0)
            h_sum = h_sum + jnp.sum(jnp.mean(h + g[..., :, None] * g[..., None, :], axis=0), axis=0)
        return (chain, s1, s2, g_sum, h_sum), None

    n = state.phi.shape[1]
    dtype = state.phi.dtype
    init_carry = (
        _Chain(state.phi, state.loglik),
        jnp.zeros((n, N_PHI), dtype),
        jnp.zeros((n, N_PHI), dtype),
        jnp.zeros((n, n_theta), dtype),
        jnp.zeros((n_theta, n_theta), dtype),
    )
    (chain, s1, s2, g_sum, h_sum), _ = jax.lax.scan(body, init_carry, jnp.arange(n_iter))
    n_draws = jnp.asarray(n_iter * state.phi.shape[0], dtype)
    phi_mean = s1 / n_iter
    phi_sd = jnp.sqrt(jnp.maximum(s2 / n_iter - phi_mean**2, 0.0))
    g_mean = g_sum / n_iter
    info = -h_sum / n_iter + g_mean.T @ g_mean
    return PosteriorSummary(phi_mean=phi_mean, phi_sd=phi_sd, phi_last=chain.phi, fisher=info, n_draws=n_draws)


sample_posterior_jit = jax.jit(sample_posterior, static_argnames=("n_iter", "config", "fisher"))


def _student_t(key: Array, df: float, shape: tuple[int, ...], dtype: Any) -> Array:
    """Student-t draws. For an integer ``df`` (<= 30) as ``Z / sqrt(X / df)`` with the chi-square
    ``X = -2 log(U_1 ... U_{df//2}) (+ Z'^2 when df is odd)``, exact and much faster on CPU than
    ``jax.random.t`` (a rejection gamma sampler); otherwise ``jax.random.t``."""
    if float(df) != int(df) or not 1 <= df <= 30:
        return jax.random.t(key, df, shape, dtype)
    # drawn in float32 (twice as fast on CPU) and cast: the importance weights are computed from the
    # cast draws themselves, so the estimator stays exact
    n_df = int(df)
    draw = jnp.float32
    k_z, k_u, k_odd = jax.random.split(key, 3)
    z = jax.random.normal(k_z, shape, draw)
    chi2 = jnp.zeros(shape, draw)
    if n_df // 2:
        tiny = jnp.finfo(draw).tiny
        u = jax.random.uniform(k_u, (n_df // 2, *shape), draw, minval=tiny, maxval=1.0)
        chi2 = -2.0 * jnp.sum(jnp.log(u), axis=0)
    if n_df % 2:
        chi2 = chi2 + jax.random.normal(k_odd, shape, draw) ** 2
    return (z * jnp.sqrt(n_df / chi2)).astype(dtype)


def importance_loglik(
    key: Array,
    coef: Array,
    omega2: Array,
    error: Array,
    data: TGIData,
    proposal_mean: Array,
    proposal_sd: Array,
    n_draws: int,
    config: SAEMConfig = SAEMConfig(),
    *,
    df: float = 5.0,
    chunk: int = 100,
) -> tuple[Array, Array]:
    r"""Log-likelihood of each lesion by importance sampling (Monolix's method).

    .. math:: \hat p(y_i) = \frac{1}{M} \sum_m \frac{p(y_i \mid \phi_m)\, p(\phi_m)}{q_i(\phi_m)}, \qquad
              \phi_m = \hat\mu_i + \hat\sigma_i\, t_\nu,

    with :math:`\hat\mu_i, \hat\sigma_i` the conditional mean and SD of lesion :math:`i` (from the MCMC
    draws) and independent Student-t components with :math:`\nu` = ``df`` degrees of freedom.
    ``n_draws`` is rounded up to a multiple of ``chunk``.

    Returns
    -------
    loglik : (N,) per-lesion :math:`\log \hat p(y_i)` (0 for padding lesions)
    rel_se : (N,) Monte-Carlo relative SE of :math:`\hat p(y_i)` (from the spread of the weights)
    """
    n_chunks = max(1, -(-n_draws // chunk))
    mean = population_mean(coef, data)
    dtype = proposal_mean.dtype
    sd = jnp.maximum(proposal_sd, 1e-6)

    def body(carry, k: Array):
        acc, acc2 = carry
        z = _student_t(jax.random.fold_in(key, k), df, (chunk, *proposal_mean.shape), dtype)
        phi = proposal_mean + sd * z
        log_q = jnp.sum(jax.scipy.stats.t.logpdf(z, df) - jnp.log(sd), axis=-1)
        ll, _ = _loglik(phi, data, error, config)
        log_w = ll + log_prior(phi, mean, omega2) - log_q
        log_w = jnp.where(jnp.isnan(log_w), -jnp.inf, log_w)
        acc = jnp.logaddexp(acc, jax.scipy.special.logsumexp(log_w, axis=0))
        acc2 = jnp.logaddexp(acc2, jax.scipy.special.logsumexp(2.0 * log_w, axis=0))
        return (acc, acc2), None

    n = proposal_mean.shape[0]
    start = (jnp.full((n,), -jnp.inf, dtype), jnp.full((n,), -jnp.inf, dtype))
    (acc, acc2), _ = jax.lax.scan(body, start, jnp.arange(n_chunks))
    m = n_chunks * chunk
    loglik = acc - math.log(m)
    # relative variance of the mean weight: (E w^2 / (E w)^2 - 1) / M
    rel_var = (jnp.exp(acc2 - math.log(m) - 2.0 * loglik) - 1.0) / m
    rel_se = jnp.sqrt(jnp.maximum(rel_var, 0.0))
    loglik = jnp.where(data.lesion_mask, loglik, 0.0)
    return loglik, jnp.where(data.lesion_mask, rel_se, 0.0)


importance_loglik_jit = jax.jit(importance_loglik, static_argnames=("n_draws", "config", "df", "chunk"))


def conditional_mode(
    coef: Array,
    omega2: Array,
    error: Array,
    data: TGIData,
    start: Array,
    config: SAEMConfig = SAEMConfig(),
    *,
    n_steps: int = 50,
) -> tuple[Array, Array]:
    """Each lesion's MAP of :math:`\\log p(y_i \\mid \\phi) + \\log p(\\phi)` by damped Newton steps.

    Levenberg damping per lesion: a step is kept only when it improves the objective (then the damping
    shrinks tenfold), otherwise the damping grows tenfold. Returns the modes (N, 3) and each lesion's
    final gradient norm (a convergence check).
    """
    mean = population_mean(coef, data)

    def f(phi: Array) -> Array:
        """Objective of every lesion, (N, 3) -> (N,); lesions do not interact."""
        ll, _ = _loglik(phi, data, error, config)
        return -(ll + log_prior(phi, mean, omega2))

    def g(phi: Array) -> Array:
        # per-lesion gradients: the gradient of the sum, since lesion i's objective depends on phi_i only
        return jax.grad(lambda p: jnp.sum(f(p)))(phi)

    units = jnp.broadcast_to(jnp.eye(N_PHI, dtype=start.dtype)[:, None, :], (N_PHI, *start.shape))

    def grad_hess(phi: Array) -> tuple[Array, Array]:
        grad, jvp = jax.linearize(g, phi)
        cols = jax.vmap(jvp)(units)  # (3, N, 3): column k of each lesion's Hessian
        return grad, jnp.moveaxis(cols, 0, -1)

    def body(carry, _: None):
        phi, lam, val = carry
        grad, hess = grad_hess(phi)
        grad = jnp.where(jnp.isfinite(grad), grad, 0.0)
        hess = jnp.where(jnp.isfinite(hess), hess, 0.0)
        # make the Hessian positive definite by flooring eigenvalues, then damp
        evals, evecs = jnp.linalg.eigh(hess)
        evals = jnp.maximum(evals, 1e-6) + lam[:, None]
        delta = jnp.einsum("nij,nj,nkj,nk->ni", evecs, 1.0 / evals, evecs, grad)
        delta = jnp.clip(delta, -2.0, 2.0)
        prop = phi - delta
        new_val = f(prop)
        better = jnp.isfinite(new_val) & (new_val <= val)
        phi = jnp.where(better[:, None], prop, phi)
        val = jnp.where(better, new_val, val)
        lam = jnp.where(better, lam * 0.1, lam * 10.0)
        lam = jnp.clip(lam, 1e-10, 1e10)
        return (phi, lam, val), None

    val0 = f(start)
    lam0 = jnp.full(start.shape[:1], 1e-3, start.dtype)
    (phi, _, _), _ = jax.lax.scan(body, (start, lam0, val0), None, length=n_steps)
    grad = g(phi)
    grad_norm = jnp.where(data.lesion_mask, jnp.sqrt(jnp.sum(grad**2, axis=-1)), 0.0)
    return phi, grad_norm


conditional_mode_jit = jax.jit(conditional_mode, static_argnames=("config", "n_steps"))


__all__ = [
    "PosteriorSummary",
    "SAEMConfig",
    "SAEMInfo",
    "SAEMState",
    "SufficientStats",
    "complete_loglik_lesion",
    "conditional_mode",
    "importance_loglik",
    "init",
    "log_prior",
    "pack_theta",
    "population_mean",
    "run",
    "sample_posterior",
    "step",
]

r"""Goodness-of-fit diagnostics of a fitted tumor growth model, as tables and as plots.

Tables (computed on first use, cached on the :class:`~lesionatlas.tgi.fit.TGIFit`, seeded):

- :func:`residual_table`: one row per fitted observation with the population prediction (typical
  parameters, ``pred_mm3``), the individual prediction (conditional mode, ``ipred_mm3``), IWRES, and
  the simulation-based NPD and NPDE.
- :func:`vpc_table`: a visual predictive check with censoring: observed 10th/50th/90th percentiles per
  time bin against the prediction intervals of the same percentiles in data sets simulated from the
  fitted population model at the observed design, and the proportion of censored rows per bin; with
  ``conditional=True`` the replicates are :func:`conditional_simulations` instead (the conditional VPC).

Censored rows (below the limit)
-------------------------------
- IWRES: the censored value is imputed by a draw from the individual predictive distribution
  :math:`N(\mathrm{IPRED}, g^2)` truncated to the row's interval (``(-inf, limit]`` for M3, ``[LIMIT,
  DV]`` with a Monolix LIMIT column), as Monolix does; ``imputed_mm3`` holds the draw and ``below_limit``
  marks the row, which the plots draw distinctly.
- NPDE (Brendel et al. 2006; Comets et al. 2008; censoring as Nguyen et al. 2012, the R package
  ``npde`` 2.0): ``pd`` of a censored row is drawn uniformly between the predictive probabilities of its
  bounds, and the observation is imputed as the simulated quantile at that ``pd``; observed and simulated
  vectors of each lesion are then decorrelated with the Cholesky factor of the simulated covariance, and
  :math:`\mathrm{npde} = \Phi^{-1}(\mathrm{pde})`, ``pde`` clipped to :math:`[1/2K, 1 - 1/2K]`. The
  simulations themselves are not censored (the model predicts the full distribution).
- Conditional NPDE (``cnpde``): the NPDE compare each lesion's observations with what the population
  model predicts for a lesion scanned at those days whatever happens to it, but real (and the
  simulator's) scanning stops at progression, so a late observation exists only because the earlier ones
  did not progress: late NPD lie below 0 and the NPDE are too narrow (SD ~0.8-0.9) even for the true
  model. ``cnpde`` is :math:`\Phi^{-1}` of the one-step-ahead predictive probability
  :math:`P(Y_{ij} \le y_{ij} \mid y_{i1}, \dots, y_{i,j-1})` (Dawid's prequential probability integral
  transform): independent N(0, 1) under the model whenever the rule that stops the scans looks only at
  what has been observed, as progression does. Computed by importance sampling per lesion (see
  :func:`_conditional_pd`); no simulation and no decorrelation. At the first scan it equals the NPD up to
  Monte-Carlo error.
- VPC: observed and simulated values below a row's limit are set to that limit, so both sets of
  percentiles are computed the same way; a percentile at the limit is flagged (``observed_below_limit``)
  since it only says that at least that share of the bin is censored; the censored proportion has its own
  panel (Bergstrand et al. 2009).

The simulations draw individual parameters from the population distribution (typical values and omegas)
and residuals from the error model, at every lesion's own V0, T0 and observation days. Note that real
(and the simulator's) scanning stops at progression, so late bins of a VPC hold the lesions that did
not progress; such a design-driven shift is expected in the upper percentiles of late bins. The
conditional VPC removes it: each observed row is simulated from its one-step-ahead predictive
distribution given the lesion's earlier observations (the importance draws of the conditional NPDE,
resampled by their weights, plus a residual), so replicates and data are selected by the same stopping
rule. On 20 simulated cohorts of 1,000 lesions fitted with the true model the standard VPC put 52% of the
percentile and censoring checks outside their 90% bands (P50 and P90 in every bin from the fourth on),
the conditional VPC 6% (``benchmarks/tgi_vpc.py``).

Plots take an ``ax`` (or return a new Agg-backed :class:`matplotlib.figure.Figure` that touches no
global pyplot state); matplotlib is imported inside the functions so that ``import lesionatlas.tgi``
stays light.

References
----------
Brendel K, Comets E, Laffont C, Laveille C, Mentré F (2006). Metrics for external model evaluation with
an application to the population pharmacokinetics of gliclazide. Pharm Res 23:2036-2049.
Nguyen THT, Comets E, Mentré F (2012). Extension of NPDE for evaluation of nonlinear mixed effect models
in presence of data below the quantification limit. J Pharmacokinet Pharmacodyn 39:499-518.
Bergstrand M, Hooker AC, Karlsson MO (2009). Visual predictive checks for censored and categorical data.
AAPS J 11:S1.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..config import DEFAULT_LIMIT_MM3
from ..errors import ConfigError, DataError
from .likelihood import observation_loglik, observation_terms, row_sum
from .model import cell_log_volume, lesion_terms, log1p_unit

if TYPE_CHECKING:  # pragma: no cover
    from .fit import TGIFit

_STAGE_ID = zlib.crc32(b"tgi.diagnostics") & 0x7FFFFFFF
_REPLICATE_CHUNK = 25
_DECORRELATION_CELLS = 4_000_000  # simulated values held at once by the NPDE decorrelation
_CONDITIONAL_DRAWS = 500  # importance-sampling draws per lesion of the conditional NPDE
_CENSORED_COLOR = "tab:red"
_OBSERVED_COLOR = "tab:blue"


# ----------------------------------------------------------------------------- numbers
def _natural(log_kg: np.ndarray, log_kd: np.ndarray, logit_f: np.ndarray) -> tuple[np.ndarray, ...]:
    """``kg, kd, log f, log(1 - f)`` from the normal-scale parameters."""
    return np.exp(log_kg), np.exp(log_kd), -np.logaddexp(0.0, -logit_f), -np.logaddexp(0.0, logit_f)


def _log_volume_natural(t: np.ndarray, kg: np.ndarray, kd: np.ndarray, log_f: np.ndarray, log_1mf: np.ndarray,
                        log_v0: np.ndarray, t0: np.ndarray) -> np.ndarray:
    """:func:`_log_volume` from the outputs of :func:`_natural` (computed once per lesion, not per row).

    The same operations in the same order as the formula, done in place (the simulations evaluate it on
    tens of millions of cells); rows before day 0 are overwritten by the growth branch.
    """
    t = np.asarray(t, dtype=float)
    with np.errstate(over="ignore"):
        resistant = np.multiply(kg, t)
        np.add(log_f, resistant, out=resistant)
        sensitive = np.multiply(kd, t)
        np.subtract(log_1mf, sensitive, out=sensitive)
        np.logaddexp(resistant, sensitive, out=resistant)
        after = np.subtract(log_v0, np.multiply(kg, t0))
        if after.shape != resistant.shape:
            after = np.broadcast_to(after, resistant.shape).copy()
        np.add(after, resistant, out=after)
    before = t < 0
    if t.ndim == 1 and after.ndim >= 1 and after.shape[-1] == t.size:  # days along the last axis
        if before.any():
            cols = np.flatnonzero(before)
            pick = (lambda v: v[..., cols] if np.ndim(v) and np.shape(v)[-1] == t.size else v)
            after[..., cols] = pick(log_v0) + pick(kg) * (t[cols] - pick(t0))
        return after
    return np.where(before, log_v0 + kg * (t - t0), after)


def _log_volume(t: np.ndarray, log_kg: np.ndarray, log_kd: np.ndarray, logit_f: np.ndarray,
                log_v0: np.ndarray, t0: np.ndarray) -> np.ndarray:
    """The model's log volume in numpy (same formula as :func:`lesionatlas.tgi.model.log_volume_phi`)."""
    return _log_volume_natural(t, *_natural(log_kg, log_kd, logit_f), log_v0, t0)


def _error_sd(v: np.ndarray, a: float, b: float, error_model: str) -> np.ndarray:
    if error_model == "proportional":
        return b * np.abs(v)
    if error_model == "constant":
        return np.full_like(v, a)
    return a + b * np.abs(v)


@dataclass(frozen=True)
class _Design:
    """Observation rows of a fit as flat arrays (``row`` = index into ``fit.individual``)."""

    lesion: np.ndarray
    t: np.ndarray
    y: np.ndarray
    lower: np.ndarray
    censored: np.ndarray
    upper_limit: np.ndarray  # a row's censoring limit: its own bound when censored, else the fit's limit
    log_v0: np.ndarray
    t0: np.ndarray
    mu: np.ndarray  # (lesions, 3) typical normal-scale parameters of each lesion (given its covariates)
    omega: np.ndarray
    corr_factor: np.ndarray  # (3, 3) Cholesky factor of the random effects' correlation matrix (I if diagonal)
    a: float
    b: float
    error_model: str


def _design(fit: TGIFit) -> _Design:
    if "design" in fit._cache:
        return fit._cache["design"]
    if fit.observations is None:
        raise DataError(
            "this TGIFit carries no observations table (read from a folder written before diagnostics "
            "existed); refit the model to get diagnostics",
            code="tgi-no-observations",
        )
    obs = fit.observations
    ind = fit.individual
    lesion = pd.Index(ind["lesion_id"].astype(str)).get_indexer(obs["lesion_id"].astype(str))
    if (lesion < 0).any():
        raise DataError("observations: lesion ids missing from the individual table", code="tgi-no-observations")
    pop = fit.population.set_index("parameter")["estimate"]
    limit = float(fit.diagnostics.get("limit_mm3", DEFAULT_LIMIT_MM3))
    y = obs["volume_mm3"].to_numpy(float)
    censored = obs["below_limit"].to_numpy(bool)
    lower = obs["lower_limit_mm3"].to_numpy(float)
    lower = np.where(np.isnan(lower), -np.inf, lower)
    design = _Design(
        lesion=lesion,
        t=obs["day"].to_numpy(float),
        y=y,
        lower=lower,
        censored=censored,
        upper_limit=np.where(censored, y, limit),
        log_v0=np.log(ind["v0_mm3"].to_numpy(float))[lesion],
        t0=ind["t0_day"].to_numpy(float)[lesion],
        mu=fit.typical_phi(),
        omega=np.array([pop["omega_kg"], pop["omega_kd"], pop["omega_f"]], float),
        corr_factor=_corr_factor(pop),
        a=float(pop.get("a", 0.0)),
        b=float(pop.get("b", 0.0)),
        error_model=fit.spec.error_model,
    )
    fit._cache["design"] = design
    return design


def _corr_factor(pop: pd.Series) -> np.ndarray:
    """Cholesky factor of the correlation matrix of the random effects (rows ``corr_*`` of a fit with a
    full covariance; the identity otherwise)."""
    r = np.eye(3)
    for (k, j), name in zip(((0, 1), (0, 2), (1, 2)), ("corr_kg_kd", "corr_kg_f", "corr_kd_f")):
        if name in pop.index:
            r[k, j] = r[j, k] = float(pop[name])
    return np.linalg.cholesky(r)


def _rng(fit: TGIFit, seed: int, purpose: str) -> np.random.Generator:
    return np.random.default_rng([_STAGE_ID, int(fit.seed), int(seed), zlib.crc32(purpose.encode())])


def _check_simulations(n_simulations: Any) -> None:
    if isinstance(n_simulations, bool) or not isinstance(n_simulations, (int, np.integer)) or n_simulations < 10:
        raise ConfigError(f"n_simulations must be an integer >= 10, got {n_simulations!r}")


def simulate_observations(fit: TGIFit, *, n_simulations: int = 200, seed: int = 0) -> np.ndarray:
    """Observations simulated from the fitted population model at the observed design (uncensored).

    Returns an array ``(n_simulations, n_observations)`` in the row order of ``fit.observations``; cached.
    Each replicate draws new individual parameters for every lesion (typical values, omegas and, with a
    full covariance, correlations of the fit) and new residual errors.
    """
    _check_simulations(n_simulations)
    key = ("simulations", int(n_simulations), int(seed))
    if key in fit._cache:
        return fit._cache[key]
    d = _design(fit)
    rng = _rng(fit, seed, "simulate")
    n_les = len(fit.individual)
    out = np.empty((n_simulations, len(d.t)))
    for start in range(0, n_simulations, _REPLICATE_CHUNK):
        k = min(_REPLICATE_CHUNK, n_simulations - start)
        phi = d.mu + d.omega * (rng.standard_normal((k, n_les, 3)) @ d.corr_factor.T)
        # transforms per lesion, then gathered to the rows: the same numbers, 5x fewer exp/log calls
        per_lesion = _natural(phi[..., 0], phi[..., 1], phi[..., 2])
        lv = _log_volume_natural(d.t, *(v[:, d.lesion] for v in per_lesion), d.log_v0, d.t0)
        v = np.exp(np.minimum(lv, 700.0))
        out[start:start + k] = v + _error_sd(v, d.a, d.b, d.error_model) * rng.standard_normal(v.shape)
    fit._cache[key] = out
    return out


def _imputed_iwres(d: _Design, ipred: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    from scipy.stats import truncnorm

    sd = _error_sd(ipred, d.a, d.b, d.error_model)
    imputed = d.y.copy()
    c = np.flatnonzero(d.censored)
    if c.size:
        lo = (d.lower[c] - ipred[c]) / sd[c]
        hi = (d.y[c] - ipred[c]) / sd[c]
        u = rng.uniform(size=c.size)
        with np.errstate(all="ignore"):
            draw = truncnorm.ppf(u, lo, hi)
        draw = np.where(np.isfinite(draw), draw, np.clip(0.0, lo, hi))
        imputed[c] = ipred[c] + sd[c] * draw
    return imputed, (imputed - ipred) / sd


def _lesion_runs(lesion: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(lesion[order], starts, counts)``: where each lesion's run of rows begins in ``order`` (rows sorted
    by lesion) and how many rows it has."""
    les_sorted = lesion[order]
    starts = np.flatnonzero(np.r_[True, les_sorted[1:] != les_sorted[:-1]])
    return les_sorted, starts, np.diff(np.r_[starts, len(order)])


def _npde(d: _Design, sims: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(npd, npde, y imputed for the NPDE) per observation; see the module docstring."""
    from scipy.special import ndtri

    k = sims.shape[0]
    below_upper = (sims < d.y).mean(axis=0)
    below_lower = (sims < d.lower).mean(axis=0)
    pd_obs = np.where(d.censored, below_lower + rng.uniform(size=len(d.y)) * (below_upper - below_lower),
                      below_upper)
    y_imp = d.y.copy()
    c = np.flatnonzero(d.censored)
    if c.size:
        ordered = np.sort(sims[:, c], axis=0)
        idx = np.clip(np.floor(pd_obs[c] * k).astype(int), 0, k - 1)
        y_imp[c] = ordered[idx, np.arange(c.size)]
    lo, hi = 1.0 / (2 * k), 1.0 - 1.0 / (2 * k)
    npd = ndtri(np.clip(pd_obs, lo, hi))
    # decorrelation, lesion by lesion: lesions grouped by their number of rows m (no padding), in chunks
    order = np.argsort(d.lesion, kind="stable")
    _, starts, counts = _lesion_runs(d.lesion, order)
    npde = np.empty(len(d.y))
    for m in np.unique(counts):
        first = starts[counts == m]
        for g0 in range(0, len(first), max(1, _DECORRELATION_CELLS // (k * m))):
            rows = (first[g0:g0 + max(1, _DECORRELATION_CELLS // (k * m))][:, None] + np.arange(m)).ravel()
            rows = order[rows]
            n_g = len(rows) // m
            # each (lesion, row) column divided by its largest |value|: the decorrelated values do not change
            # (the Cholesky factor scales with it), and simulated volumes near 1e304 no longer overflow
            block, y_block = sims[:, rows], y_imp[rows]
            scale = np.maximum(np.abs(block).max(axis=0), np.abs(y_block))
            scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
            y_g = (y_block / scale).reshape(n_g, m)
            s_g = (block / scale).reshape(k, n_g, m).transpose(1, 0, 2)  # (g, k, m)
            mean = s_g.mean(axis=1)
            centred = s_g - mean[:, None, :]
            centred_t = np.swapaxes(centred, 1, 2)  # (g, m, k)
            cov = centred_t @ centred / (k - 1)
            diag = np.einsum("gii->gi", cov)
            cov = cov + np.eye(m)[None] * (1e-10 * diag)[:, None, :]
            try:
                chol = np.linalg.cholesky(cov)
            except np.linalg.LinAlgError:  # fall back to the symmetric inverse square root ("polar")
                w, v = np.linalg.eigh(cov)
                w = np.maximum(w, 1e-12 * w.max(axis=1, keepdims=True))
                chol = np.einsum("gij,gj,gkj->gik", v, np.sqrt(w), v)
            y_dec = np.linalg.solve(chol, (y_g - mean)[..., None])[..., 0]
            s_dec = np.linalg.solve(chol, centred_t)  # (g, m, k)
            pde = (s_dec < y_dec[..., None]).mean(axis=2)
            npde[rows] = ndtri(np.clip(pde, lo, hi)).ravel()
    return npd, npde, y_imp


def _lesion_chunks(lesion: np.ndarray, t: np.ndarray, max_cells: int, max_lesions: int):
    """Observation rows in lesion and time order, cut into chunks of whole lesions: yields ``(rows,
    cell_lesion, lesions, longest)``, ``rows`` the chunk's rows (at most ``max_cells``, unless one lesion has
    more), ``cell_lesion`` each row's lesion as an index into ``lesions`` (at most ``max_lesions``), and
    ``longest`` the largest number of rows of one lesion."""
    order = np.lexsort((t, lesion))
    les_sorted, starts, counts = _lesion_runs(lesion, order)
    ends = np.cumsum(counts)
    i = 0
    while i < len(starts):
        first_row = ends[i] - counts[i]
        j = int(np.searchsorted(ends, first_row + max_cells, side="right"))
        j = max(i + 1, min(j, i + max_lesions))
        yield (order[first_row:ends[j - 1]], np.repeat(np.arange(j - i), counts[i:j]), les_sorted[starts[i:j]],
               int(counts[i:j].max()))
        i = j


_T_DF = 5.0  # degrees of freedom of the Student-t part of the conditional NPDE's proposal
_T_CONST = math.lgamma((_T_DF + 3) / 2) - math.lgamma(_T_DF / 2) - 1.5 * math.log(_T_DF * math.pi)
_LOG_LIK_FLOOR = -1e5  # per row: a draw this far off has no weight, and the sums of the scan stay exact


def _ndtr(z: jax.Array) -> jax.Array:
    return 0.5 * jax.lax.erfc(z * (-1.0 / math.sqrt(2.0)))


@jax.jit
def _proposal_terms(z, chi, from_prior, centre, spread, mu, chol, chol_inv, log_v0, t0):
    """Draws of the defensive-mixture proposal of each lesion and their importance weights.

    ``z`` (3, L, K) standard normals, ``chi`` (L, K) chi-square (``_T_DF``) draws, ``from_prior`` (L, K): the
    draw comes from the population distribution (``mu + chol z``), otherwise from the Student-t around
    ``centre`` with scales ``spread`` (each (3, L)). Returns (L, 6, K): the lesion terms of
    :func:`~lesionatlas.tgi.model.lesion_terms` (``kg, kd, log f, log 1-f, base``) and the log weight
    log(population density / proposal density). Parameter-major, the 3x3 products written out.
    """
    scale = jnp.sqrt(_T_DF / chi)
    phi = [jnp.where(from_prior, mu[i][:, None] + sum(chol[i, j] * z[j] for j in range(i + 1)),
                     centre[i][:, None] + spread[i][:, None] * z[i] * scale) for i in range(3)]
    diff = [phi[i] - mu[i][:, None] for i in range(3)]
    dev = [sum(chol_inv[i, j] * diff[j] for j in range(i + 1)) for i in range(3)]
    log_det = jnp.log(chol[0, 0]) + jnp.log(chol[1, 1]) + jnp.log(chol[2, 2])
    log_prior = -0.5 * (dev[0] ** 2 + dev[1] ** 2 + dev[2] ** 2) - log_det - 1.5 * math.log(2 * math.pi)
    u2 = sum(((phi[i] - centre[i][:, None]) / spread[i][:, None]) ** 2 for i in range(3))
    log_t = _T_CONST - jnp.sum(jnp.log(spread), axis=0)[:, None] - (_T_DF + 3) / 2 * jnp.log1p(u2 / _T_DF)
    log_q = jnp.maximum(log_prior, log_t) + log1p_unit(jnp.exp(-jnp.abs(log_prior - log_t))) + math.log(0.5)
    kg, kd, log_f, log_1mf, base = lesion_terms(phi[0], phi[1], phi[2], log_v0[:, None], t0[:, None])
    return jnp.stack([kg, kd, log_f, log_1mf, base, log_prior - log_q], axis=1)


@partial(jax.jit, static_argnames=("error_model", "max_relative_residual", "interval"))
def _cell_terms(per_lesion, cell_lesion, t, y, lower, censored, valid, log_v0, t0, error, *, error_model,
                max_relative_residual, interval):
    """Per row (C) and draw (K): the log-likelihood (as the fit computes it, censored rows by the
    probability of their interval, padding 0), the draw's log weight, the predictive probabilities
    :math:`P(Y \\le y)` (of the upper bound for a censored row) and, with ``interval``, of the lower bound,
    and the draw's log volume at the row."""
    g = [per_lesion[:, i][cell_lesion] for i in range(6)]
    lv = cell_log_volume(t[:, None], *g[:4], log_v0[:, None], t0[:, None], g[4])
    low = lower[:, None] if interval else None
    ll, _ = observation_loglik(lv, y[:, None], low, censored[:, None], error, error_model=error_model,
                               max_relative_residual=max_relative_residual)
    ll = jnp.where(valid[:, None], jnp.maximum(ll, _LOG_LIK_FLOOR), 0.0)
    terms = observation_terms(lv, y[:, None], low, censored[:, None], error, error_model=error_model,
                              max_relative_residual=math.inf)  # the predictive distribution: no outlier floor
    p_lower = jnp.where(jnp.isfinite(terms.z_lower), _ndtr(terms.z_lower), 0.0) if interval else None
    return ll, g[5], _ndtr(terms.z), p_lower, lv


def _given_earlier_rows(ll, log_w, cell_lesion, n_doublings):
    """Normalised weights of the draws for each row given the earlier rows of its lesion (rows in lesion
    and time order): ``log_w`` plus the log-likelihood of those rows, a segmented prefix sum by doubling
    (``2 ** n_doublings`` >= the longest lesion)."""
    total = ll  # after step k: the sum over this row and up to 2^(k+1) - 1 earlier rows of the lesion
    for k in range(n_doublings):
        s = 2 ** k
        same = jnp.concatenate([jnp.zeros(s, bool), cell_lesion[s:] == cell_lesion[:-s]])
        shifted = jnp.concatenate([jnp.zeros((s, ll.shape[1]), ll.dtype), total[:-s]])
        total = total + jnp.where(same[:, None], shifted, 0.0)
    lw = log_w + (total - ll)
    w = jnp.exp(lw - jnp.max(lw, axis=1, keepdims=True))
    return w / row_sum(w)[:, None]


@partial(jax.jit, static_argnames=("n_doublings",))
def _conditional_products(ll, log_w, p_upper, p_lower, log_v, cell_lesion, censored, u, u_sim, *, n_doublings):
    """From the draws' weights given the earlier rows of each row's lesion (:func:`_given_earlier_rows`):
    each row's predictive probability (a censored row's at ``u`` between those of its bounds) and, unless
    ``u_sim`` is None, its log volumes at draws resampled with those weights (inverse CDF, one binary
    search per uniform of ``u_sim`` (rows, replicates))."""
    w = _given_earlier_rows(ll, log_w, cell_lesion, n_doublings)
    hi = row_sum(w * p_upper)
    lo = 0.0 if p_lower is None else row_sum(w * p_lower)
    prob = jnp.where(censored, lo + u * (hi - lo), hi)
    if u_sim is None:
        return prob, None
    cum = jnp.cumsum(w, axis=1).at[:, -1].set(1.0)
    pick = jax.vmap(partial(jnp.searchsorted, side="right"))(cum, u_sim)
    return prob, jnp.take_along_axis(log_v, jnp.minimum(pick, w.shape[1] - 1), axis=1)


class _ConditionalChunk(NamedTuple):
    rows: np.ndarray  # the chunk's observation rows (nc of them, lesion and time order)
    size: int  # rows of the padded chunk
    cell_lesion: np.ndarray  # (size,)
    censored: np.ndarray  # (size,)
    n_doublings: int
    ll: jax.Array  # (size, K) per row and draw: log-likelihood
    log_w: jax.Array  # population density / proposal density
    p_upper: jax.Array
    p_lower: jax.Array | None
    log_v: jax.Array  # the draw's log volume at the row


def _conditional_chunks(fit: TGIFit, d: _Design, rng: np.random.Generator, n_draws: int):
    r"""The importance sampling behind the one-step-ahead predictions, chunk by chunk (:class:`_ConditionalChunk`).

    ``n_draws`` individual parameters per lesion from a defensive mixture of the population distribution
    and a Student-t (5 df) around the lesion's conditional mean with twice its conditional SDs, each
    weighted (later, row by row) by population density / proposal density x the likelihood of the
    lesion's earlier rows: the likelihood of the fit
    (:func:`~lesionatlas.tgi.likelihood.observation_loglik`: censored rows by the probability of their
    interval, stable in both tails; the outlier floor). In float64, in chunks of whole lesions of fixed
    shape (one compilation); the draws come from ``rng``. To be consumed inside ``jax.enable_x64(True)``.
    """
    ind = fit.individual
    f_mean = ind["f_mean"].to_numpy(float)
    centre = np.stack([np.log(ind["kg_mean"].to_numpy(float)), np.log(ind["kd_mean"].to_numpy(float)),
                       np.log(f_mean) - np.log1p(-f_mean)])
    spread = np.maximum(2.0 * ind[["sd_log_kg", "sd_log_kd", "sd_logit_f"]].to_numpy(float).T,
                        1e-3 * d.omega[:, None])
    mu = d.mu.T
    log_v0, t0 = np.log(ind["v0_mm3"].to_numpy(float)), ind["t0_day"].to_numpy(float)
    chol = d.omega[:, None] * d.corr_factor  # population covariance = chol chol^T
    chol_inv = np.linalg.inv(chol)
    error = np.array([d.a, d.b])
    n_cells = max(2, _DECORRELATION_CELLS // n_draws)
    n_les = n_cells // 3  # lesions per chunk: room for short series, few padded draws
    for rows, cell_lesion, lesions, longest in _lesion_chunks(d.lesion, d.t, n_cells, n_les):
        nc, nl = len(rows), len(lesions)
        z = np.zeros((3, n_les, n_draws))
        z[:, :nl] = rng.standard_normal((3, nl, n_draws))
        chi = np.ones((n_les, n_draws))
        chi[:nl] = rng.chisquare(_T_DF, (nl, n_draws))
        from_prior = np.zeros((n_les, n_draws), bool)
        from_prior[:nl] = rng.uniform(size=(nl, n_draws)) < 0.5
        les = np.r_[lesions, np.full(n_les - nl, lesions[-1])]
        size = max(n_cells, nc)  # one lesion longer than a chunk gets a chunk of its own
        r = np.r_[rows, np.full(size - nc, rows[-1])]
        cl = np.r_[cell_lesion, np.full(size - nc, min(nl, n_les - 1))]  # padding: a lesion of its own
        per_lesion = _proposal_terms(z, chi, from_prior, centre[:, les], spread[:, les], mu[:, les], chol,
                                     chol_inv, log_v0[les], t0[les])
        terms = _cell_terms(
            per_lesion, cl, d.t[r], d.y[r], d.lower[r], d.censored[r], np.arange(size) < nc, log_v0[les][cl],
            t0[les][cl], error, error_model=d.error_model,
            max_relative_residual=float(fit.spec.max_relative_residual),
            interval=bool(np.isfinite(d.lower[rows]).any()))
        yield _ConditionalChunk(rows, size, cl, d.censored[r], max(1, (longest - 1).bit_length()), *terms)


def _conditional_pass(fit: TGIFit, d: _Design, rng_draws: np.random.Generator, rng_pd: np.random.Generator,
                      rng_sim: np.random.Generator | None, n_draws: int, n_simulations: int = 0
                      ) -> tuple[np.ndarray, np.ndarray | None]:
    r"""One importance pass (:func:`_conditional_chunks`, its draws from ``rng_draws``) for both products of
    the one-step-ahead predictive distributions: each row's probability
    :math:`P(Y_{ij} \le y_{ij} \mid y_{i1}, \dots, y_{i,j-1})` (a censored row's drawn uniformly between
    those of its bounds, from ``rng_pd``, as for the NPDE) and, with ``n_simulations`` > 0,
    ``n_simulations`` values of each row drawn from that distribution (parameters resampled with their
    weights, a residual from the error model; from ``rng_sim``): arrays (n_obs,) and (n_simulations,
    n_obs)."""
    pd_out = np.empty(len(d.y))
    sims = np.empty((n_simulations, len(d.y))) if n_simulations else None
    with jax.enable_x64(True):
        for c in _conditional_chunks(fit, d, rng_draws, n_draws):
            nc = len(c.rows)
            u = rng_pd.uniform(size=c.size)
            u_sim = None
            if sims is not None:
                assert rng_sim is not None
                u_sim = np.zeros((c.size, n_simulations))
                u_sim[:nc] = rng_sim.uniform(size=(nc, n_simulations))
            prob, log_v = _conditional_products(c.ll, c.log_w, c.p_upper, c.p_lower, c.log_v, c.cell_lesion,
                                                c.censored, u, u_sim, n_doublings=c.n_doublings)
            pd_out[c.rows] = np.asarray(prob)[:nc]
            if sims is not None:
                v = np.exp(np.minimum(np.asarray(log_v)[:nc], 700.0))
                sims[:, c.rows] = (v + _error_sd(v, d.a, d.b, d.error_model) * rng_sim.standard_normal(v.shape)).T
    return pd_out, sims


def _conditional_pd(fit: TGIFit, d: _Design, rng: np.random.Generator, n_draws: int) -> np.ndarray:
    r"""One-step-ahead predictive probabilities :math:`P(Y_{ij} \le y_{ij} \mid y_{i1}, \dots, y_{i,j-1})`,
    the draws and the uniforms from ``rng``.

    Each lesion's earlier observations (in time order) condition the prediction of the next one; under the
    model these probabilities are independent and uniform whatever rule stops the scans, as long as that
    rule looks only at what has been observed (scans that stop at progression). Computed by importance
    sampling (:func:`_conditional_pass`).
    """
    return _conditional_pass(fit, d, rng, rng, None, n_draws)[0]


def _conditional_outputs(fit: TGIFit, n_simulations: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The conditional NPDE's probabilities and the conditional VPC's replicates of ``seed``, from one
    importance pass (cached: the residual table and the conditional VPC of the same ``n_simulations`` and
    ``seed`` share it; each product has its own random stream, so neither depends on the other)."""
    key = ("conditional", int(n_simulations), int(seed))
    if key not in fit._cache:
        d = _design(fit)
        fit._cache[key] = _conditional_pass(
            fit, d, _rng(fit, seed, "conditional draws"), _rng(fit, seed, "cnpde"),
            _rng(fit, seed, "conditional simulations"), _CONDITIONAL_DRAWS, n_simulations)
    return fit._cache[key]


def conditional_simulations(fit: TGIFit, *, n_simulations: int = 200, seed: int = 0) -> np.ndarray:
    r"""Each observation simulated given the lesion's earlier observations, ``n_simulations`` times.

    Returns an array ``(n_simulations, n_observations)`` in the row order of ``fit.observations``
    (uncensored values; cached): row :math:`ij` of replicate :math:`r` is a draw from
    :math:`p(y_{ij} \mid y_{i1}, \dots, y_{i,j-1})`, the one-step-ahead predictive distribution behind
    the conditional NPDE: individual parameters resampled from the lesion's importance draws
    (:func:`_conditional_chunks`, ``_CONDITIONAL_DRAWS`` per lesion) with their weights given the earlier
    rows, then a residual from the error model. Where scans stop at progression the observed rows of a
    late bin are those of lesions that had not progressed; these replicates are drawn for the same rows
    given the same pasts, so a VPC built on them (``vpc_table(conditional=True)``) stays calibrated. The
    same importance draws give the conditional NPDE of :func:`residual_table` (same ``n_simulations``
    and ``seed``): one pass for both.
    """
    _check_simulations(n_simulations)
    return _conditional_outputs(fit, n_simulations, seed)[1]


def residual_table(fit: TGIFit, *, n_simulations: int = 200, seed: int = 0) -> pd.DataFrame:
    """Predictions and residuals of every fitted observation (cached on the fit).

    Returns
    -------
    DataFrame
        ``lesion_id, day, observed_mm3`` (a censored row: its upper bound), ``below_limit,
        lower_limit_mm3, pred_mm3`` (typical parameters), ``ipred_mm3`` (conditional mode),
        ``imputed_mm3`` (the observed value, or for a censored row a draw from the individual predictive
        distribution truncated to its interval), ``iwres`` (from ``imputed_mm3``), ``npd`` and ``npde``
        (``n_simulations`` data sets simulated from the population model) and ``cnpde`` (the conditional
        NPDE: each observation against its prediction given the lesion's earlier ones); see the module
        docstring.
    """
    from scipy.special import ndtri

    key = ("residuals", int(n_simulations), int(seed))
    if key in fit._cache:
        return fit._cache[key].copy()
    d = _design(fit)
    ind = fit.individual
    phi = np.stack([np.log(ind["kg"]), np.log(ind["kd"]), np.log(ind["f"] / (1 - ind["f"]))], axis=1)[d.lesion]
    ipred = np.exp(_log_volume(d.t, phi[:, 0], phi[:, 1], phi[:, 2], d.log_v0, d.t0))
    mu = d.mu[d.lesion]
    pred = np.exp(_log_volume(d.t, mu[:, 0], mu[:, 1], mu[:, 2], d.log_v0, d.t0))
    imputed, iwres = _imputed_iwres(d, ipred, _rng(fit, seed, "iwres"))
    sims = simulate_observations(fit, n_simulations=n_simulations, seed=seed)
    npd, npde, _ = _npde(d, sims, _rng(fit, seed, "npde"))
    k = _CONDITIONAL_DRAWS
    pd_cond = _conditional_outputs(fit, n_simulations, seed)[0]
    cnpde = ndtri(np.clip(pd_cond, 1.0 / (2 * k), 1.0 - 1.0 / (2 * k)))
    obs = fit.observations
    assert obs is not None
    table = pd.DataFrame(
        {
            "lesion_id": obs["lesion_id"].to_numpy(),
            "day": d.t,
            "observed_mm3": d.y,
            "below_limit": d.censored,
            "lower_limit_mm3": obs["lower_limit_mm3"].to_numpy(float),
            "pred_mm3": pred,
            "ipred_mm3": ipred,
            "imputed_mm3": imputed,
            "iwres": iwres,
            "npd": npd,
            "npde": npde,
            "cnpde": cnpde,
        }
    )
    table["lesion_id"] = table["lesion_id"].astype("string")
    fit._cache[key] = table
    return table.copy()


@dataclass(frozen=True)
class VPCData:
    """A visual predictive check as tables.

    Attributes
    ----------
    percentiles : DataFrame
        One row per time bin and percentile: ``bin, day_lower, day_upper, day_median, n_obs, percentile,
        observed_mm3, observed_below_limit, simulated_lower_mm3, simulated_median_mm3,
        simulated_upper_mm3, outside_pi``.
    censored : DataFrame
        One row per bin: ``bin, day_lower, day_upper, day_median, n_obs, observed_fraction,
        simulated_lower, simulated_median, simulated_upper, outside_pi`` (proportion below the limit).
    n_simulations, seed : int
    prediction_interval : float
        Coverage of the simulated intervals (0.9: the 5th to 95th percentile of the replicates).
    conditional : bool
        The replicates simulate each observation given the lesion's earlier ones
        (:func:`conditional_simulations`) rather than the population model at the observed days.
    """

    percentiles: pd.DataFrame
    censored: pd.DataFrame
    n_simulations: int
    seed: int
    prediction_interval: float
    conditional: bool = False


def _time_bins(day: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin edges at quantiles of the observed days (equal counts), merged where days repeat."""
    edges = np.unique(np.quantile(day, np.linspace(0, 1, n_bins + 1)))
    if len(edges) < 2:
        edges = np.array([day.min(), day.min() + 1.0])
    return edges


def vpc_table(
    fit: TGIFit,
    *,
    n_simulations: int = 200,
    n_bins: int = 8,
    seed: int = 0,
    levels: tuple[float, ...] = (0.1, 0.5, 0.9),
    prediction_interval: float = 0.9,
    conditional: bool = False,
) -> VPCData:
    """Visual predictive check with censoring (cached on the fit); see the module docstring.

    ``conditional=True``: the replicates are :func:`conditional_simulations` (each observation given the
    lesion's earlier ones) instead of :func:`simulate_observations` (the population model at the observed
    days), so that late bins stay calibrated when scans stop at progression."""
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ConfigError(f"n_bins must be an integer >= 1, got {n_bins!r}")
    if not 0 < prediction_interval < 1:
        raise ConfigError(f"prediction_interval must be in (0, 1), got {prediction_interval!r}")
    key = ("vpc", int(n_simulations), int(n_bins), int(seed), tuple(levels), float(prediction_interval),
           bool(conditional))
    if key in fit._cache:
        return fit._cache[key]
    d = _design(fit)
    simulate = conditional_simulations if conditional else simulate_observations
    sims = simulate(fit, n_simulations=n_simulations, seed=seed)
    sim_cens = sims < d.upper_limit
    sims_at_limit = np.where(sim_cens, d.upper_limit, sims)
    obs_values = d.y  # censored rows hold their upper bound
    edges = _time_bins(d.t, n_bins)
    which = np.clip(np.searchsorted(edges, d.t, side="right") - 1, 0, len(edges) - 2)
    tail = (1 - prediction_interval) / 2
    rows, cens_rows = [], []
    for b in range(len(edges) - 1):
        in_bin = which == b
        if not in_bin.any():
            continue
        common = {
            "bin": b + 1,
            "day_lower": edges[b],
            "day_upper": edges[b + 1],
            "day_median": float(np.median(d.t[in_bin])),
            "n_obs": int(in_bin.sum()),
        }
        limit_bin = float(np.median(d.upper_limit[in_bin]))
        sim_levels = np.quantile(sims_at_limit[:, in_bin], list(levels), axis=1)  # one sort for every level
        for q, sim_q in zip(levels, sim_levels):
            observed = float(np.quantile(obs_values[in_bin], q))
            lo, med, hi = np.quantile(sim_q, [tail, 0.5, 1 - tail])
            rows.append({**common, "percentile": round(100 * q, 6), "observed_mm3": observed,
                         "observed_below_limit": bool(observed <= limit_bin),
                         "simulated_lower_mm3": lo, "simulated_median_mm3": med, "simulated_upper_mm3": hi,
                         "outside_pi": bool(observed < lo or observed > hi)})
        frac_obs = float(d.censored[in_bin].mean())
        frac_sim = sim_cens[:, in_bin].mean(axis=1)
        lo, med, hi = np.quantile(frac_sim, [tail, 0.5, 1 - tail])
        cens_rows.append({**common, "observed_fraction": frac_obs, "simulated_lower": lo, "simulated_median": med,
                          "simulated_upper": hi, "outside_pi": bool(frac_obs < lo or frac_obs > hi)})
    vpc = VPCData(
        percentiles=pd.DataFrame(rows),
        censored=pd.DataFrame(cens_rows),
        n_simulations=int(n_simulations),
        seed=int(seed),
        prediction_interval=float(prediction_interval),
        conditional=bool(conditional),
    )
    fit._cache[key] = vpc
    return vpc


# ----------------------------------------------------------------------------- plots
def _new_axes(ax: Any) -> Any:
    if ax is not None:
        return ax
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4.5))
    FigureCanvasAgg(fig)
    return fig.add_subplot()


def _new_figure(n_panels: int, *, ncols: int = 4, size: float = 2.6) -> tuple[Any, list[Any]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ncols = max(1, min(ncols, n_panels))
    nrows = -(-n_panels // ncols)
    fig = Figure(figsize=(size * ncols + 0.5, size * 0.85 * nrows + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = list(np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel())
    for extra in axes[n_panels:]:
        extra.set_visible(False)
    return fig, axes[:n_panels]


def _limit(fit: TGIFit) -> float:
    return float(fit.diagnostics.get("limit_mm3", DEFAULT_LIMIT_MM3))


def _point_style(n: int) -> tuple[float, float]:
    """Marker size and alpha of a scatter of ``n`` points: smaller and fainter as ``n`` grows."""
    return (6.0, 0.4) if n <= 5000 else (3.0, float(np.clip(2000.0 / n, 0.08, 0.4)))


def _title_and_legend(ax: Any, title: str, *, ncol: int = 2) -> None:
    """Title on the left and the legend above the plot on the right, so that neither hides data."""
    ax.set_title(title, loc="left", fontsize="medium")
    legend = ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=ncol, fontsize="small", frameon=False,
                       borderaxespad=0.2, handletextpad=0.3, columnspacing=1.0, handlelength=1.5)
    for handle in legend.legend_handles:  # legend markers opaque and readable however faint the points
        handle.set_alpha(1.0)
        if hasattr(handle, "set_sizes"):
            handle.set_sizes([20.0])


def plot_observed_vs_predicted(fit: TGIFit, ax: Any = None, *, kind: str = "individual") -> Any:
    """Observed volumes against individual (``"individual"``) or population (``"population"``) predictions.

    Log-log axes, identity line; censored rows at their imputed value, in red.
    """
    if kind not in ("individual", "population"):
        raise ConfigError(f"kind must be 'individual' or 'population', got {kind!r}")
    table = residual_table(fit)
    ax = _new_axes(ax)
    x = table["ipred_mm3" if kind == "individual" else "pred_mm3"].to_numpy()
    y = table["imputed_mm3"].to_numpy()
    c = table["below_limit"].to_numpy()
    ok = (x > 0) & (y > 0)
    size, alpha = _point_style(len(x))
    ax.scatter(x[ok & ~c], y[ok & ~c], s=size, alpha=alpha, color=_OBSERVED_COLOR, label="observed", rasterized=True)
    ax.scatter(x[ok & c], y[ok & c], s=size * 1.3, alpha=min(1.0, alpha * 1.5), marker="x", color=_CENSORED_COLOR,
               label="below limit (imputed)", rasterized=True)
    lims = [np.nanmin(np.r_[x[ok], y[ok]]), np.nanmax(np.r_[x[ok], y[ok]])]
    ax.plot(lims, lims, color="black", lw=1)
    ax.axhline(_limit(fit), color="grey", ls="--", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"{'individual' if kind == 'individual' else 'population'} prediction (mm³)")
    ax.set_ylabel("observed volume (mm³)")
    _title_and_legend(ax, f"Observed vs {kind} predictions", ncol=1)
    return ax


_KIND_LABEL = {"iwres": "IWRES", "npde": "NPDE", "cnpde": "conditional NPDE"}


def plot_residuals(fit: TGIFit, ax: Any = None, *, x: str = "day", kind: str = "iwres") -> Any:
    """IWRES, NPDE or conditional NPDE (``kind``: ``"iwres"``, ``"npde"``, ``"cnpde"``) against time
    (``x="day"``) or the prediction (``x="prediction"``).

    Censored rows (IWRES from the imputed value; NPDE from the imputed pd) in red; lines at 0 and ±1.96.
    Residuals beyond ``max(4, 1.1 x their 99.9th percentile in absolute value)`` are drawn on the edge
    (black triangles, counted in the legend) so that a few outliers do not squash the plot.
    """
    if kind not in ("iwres", "npde", "cnpde"):
        raise ConfigError(f"kind must be 'iwres', 'npde' or 'cnpde', got {kind!r}")
    if x not in ("day", "prediction"):
        raise ConfigError(f"x must be 'day' or 'prediction', got {x!r}")
    table = residual_table(fit)
    ax = _new_axes(ax)
    xs = table["day"].to_numpy() if x == "day" else table["ipred_mm3" if kind == "iwres" else "pred_mm3"].to_numpy()
    ys = table[kind].to_numpy()
    c = table["below_limit"].to_numpy()
    # a few extreme residuals must not squash the rest: beyond a robust limit they sit on the edge
    finite = np.isfinite(ys)
    edge = max(4.0, 1.1 * float(np.quantile(np.abs(ys[finite]), 0.999))) if finite.any() else 4.0
    beyond = finite & (np.abs(ys) > edge)
    shown = np.clip(ys, -edge, edge)
    size, alpha = _point_style(len(ys))
    ax.scatter(xs[~c & ~beyond], shown[~c & ~beyond], s=size, alpha=alpha, color=_OBSERVED_COLOR, label="observed",
               rasterized=True)
    ax.scatter(xs[c & ~beyond], shown[c & ~beyond], s=size * 1.3, alpha=min(1.0, alpha * 1.5), marker="x",
               color=_CENSORED_COLOR, label="below limit (imputed)", rasterized=True)
    outliers = ""
    if beyond.any():
        for sign, marker in ((1, "^"), (-1, "v")):
            side = beyond & (np.sign(ys) == sign)
            ax.scatter(xs[side], shown[side], s=22, marker=marker, color="black", zorder=3, clip_on=False)
        ax.set_ylim(-edge * 1.05, edge * 1.05)
        outliers = f"\n(▲▼ on the edge: {int(beyond.sum())} beyond ±{edge:.1f}, max |{_KIND_LABEL[kind]}| " \
                   f"{np.abs(ys[finite]).max():.0f})"
    for level, style in ((0.0, "-"), (1.959963984540054, "--"), (-1.959963984540054, "--")):
        ax.axhline(level, color="black", ls=style, lw=0.8)
    if x == "prediction":
        ax.set_xscale("log")
        ax.set_xlabel(f"{'individual' if kind == 'iwres' else 'population'} prediction (mm³){outliers}")
    else:
        ax.set_xlabel(f"day{outliers}")
    ax.set_ylabel(_KIND_LABEL[kind])
    _title_and_legend(ax, f"{_KIND_LABEL[kind]} vs {'time' if x == 'day' else 'prediction'}")
    return ax


def plot_vpc(fit: TGIFit, ax: Any = None, *, conditional: bool = False) -> Any:
    """VPC: observed 10/50/90th percentiles (lines) over the simulated 90% prediction intervals (bands).

    Observed points in the background; percentiles at the limit drawn hollow, outside the PI in red and
    ringed. ``conditional=True``: the conditional VPC (``vpc_table(conditional=True)``).
    """
    vpc = vpc_table(fit, conditional=conditional)
    table = residual_table(fit)
    ax = _new_axes(ax)
    # fainter points for more observations, so that the bands stay visible over tens of thousands of them
    alpha = float(np.clip(1500.0 / max(len(table), 1), 0.02, 0.15))
    ax.scatter(table["day"], table["observed_mm3"], s=3, alpha=alpha, color="grey", rasterized=True, zorder=1)
    colors = {10.0: "tab:blue", 50.0: "tab:red", 90.0: "tab:blue"}
    ringed = False
    for q, part in vpc.percentiles.groupby("percentile", sort=True):
        color = colors.get(float(q), "tab:green")
        ax.fill_between(part["day_median"], part["simulated_lower_mm3"], part["simulated_upper_mm3"], color=color,
                        alpha=0.3, lw=0, zorder=2)
        ax.plot(part["day_median"], part["observed_mm3"], color=color, lw=1.5, label=f"observed P{q:g}", zorder=3)
        hollow = part["observed_below_limit"].to_numpy()
        out = part["outside_pi"].to_numpy()
        ax.scatter(part["day_median"][~hollow], part["observed_mm3"][~hollow], s=18, zorder=3,
                   color=np.where(out[~hollow], _CENSORED_COLOR, color).tolist())
        ax.scatter(part["day_median"][hollow], part["observed_mm3"][hollow], s=18, zorder=3, facecolors="white",
                   edgecolors=color)
        if out.any():  # ring the percentiles outside their prediction interval
            ax.scatter(part["day_median"][out], part["observed_mm3"][out], s=70, zorder=4, facecolors="none",
                       edgecolors="black", linewidths=1.2, label=None if ringed else "outside the PI")
            ringed = True
    ax.axhline(_limit(fit), color="grey", ls="--", lw=0.8, label="limit")
    ax.set_yscale("log")
    ax.set_xlabel("day")
    ax.set_ylabel("volume (mm³)")
    pi = round(100 * vpc.prediction_interval)
    what = "conditional VPC (each scan given the earlier ones; " if conditional else "VPC ("
    _title_and_legend(ax, f"{what}{vpc.n_simulations} simulations, {pi}% PI)", ncol=3)
    return ax


def plot_vpc_censored(fit: TGIFit, ax: Any = None) -> Any:
    """Proportion of observations below the limit per time bin: observed (line) vs simulated 90% PI."""
    vpc = vpc_table(fit)
    cens = vpc.censored
    ax = _new_axes(ax)
    ax.fill_between(cens["day_median"], cens["simulated_lower"], cens["simulated_upper"], color="tab:red",
                    alpha=0.2, lw=0, label="simulated PI")
    ax.plot(cens["day_median"], cens["simulated_median"], color="tab:red", ls="--", lw=1)
    ax.plot(cens["day_median"], cens["observed_fraction"], color="black", marker="o", ms=4, label="observed")
    ax.set_ylim(0, max(0.05, float(np.nanmax(np.r_[cens["simulated_upper"], cens["observed_fraction"]])) * 1.1))
    ax.set_xlabel("day")
    ax.set_ylabel("proportion below the limit")
    _title_and_legend(ax, "VPC: censored proportion", ncol=1)
    return ax


def plot_trace(fit: TGIFit) -> Any:
    """SAEM trajectories of every population parameter (one panel each); returns the Figure.

    A dotted line marks the end of the exploratory phase.
    """
    names = [p for p in fit.population["parameter"] if p in fit.trace.columns]
    fig, axes = _new_figure(len(names))
    end = fit.spec.n_burn_in + int(fit.diagnostics.get("n_explore", fit.spec.n_explore))
    final = fit.population.set_index("parameter")["estimate"]
    for ax, name in zip(axes, names):
        ax.plot(fit.trace["iteration"], fit.trace[name], lw=1, color="tab:blue")
        ax.axvline(end, color="grey", ls=":", lw=1)
        ax.axhline(final[name], color="black", lw=0.6, alpha=0.5)
        ax.set_title(name, fontsize="medium")
        ax.set_xlabel("iteration")
    fig.suptitle("SAEM trajectories")
    return fig


def plot_individual_fits(fit: TGIFit, *, n: int = 12, seed: int = 0, lesion_ids: Any = None) -> Any:
    """Observations and fitted curves (conditional mode, solid; population, dashed) of ``n`` lesions.

    Lesions are drawn at random (``seed``) unless ``lesion_ids`` are given; censored rows are red
    down-pointing triangles at their upper bound. Returns the Figure.
    """
    from matplotlib.ticker import LogLocator, NullFormatter

    table = residual_table(fit)
    ind = fit.individual
    d = _design(fit)
    if lesion_ids is None:
        rng = _rng(fit, seed, "individual-fits")
        ids = list(ind["lesion_id"].iloc[np.sort(rng.choice(len(ind), min(n, len(ind)), replace=False))])
    else:
        ids = [str(i) for i in lesion_ids]
    fig, axes = _new_figure(len(ids))
    for ax, lesion in zip(axes, ids):
        rows = table[table["lesion_id"] == lesion]
        at = int(np.flatnonzero(ind["lesion_id"].to_numpy() == lesion)[0])
        row = ind.iloc[at]
        start = min(float(row["t0_day"]), float(rows["day"].min()) if len(rows) else 0.0)
        stop = max(float(rows["day"].max()) if len(rows) else 1.0, start + 1.0)
        grid = np.linspace(start, stop, 120)
        log_v0, t0 = math.log(float(row["v0_mm3"])), float(row["t0_day"])
        logit_f = math.log(float(row["f"]) / (1 - float(row["f"])))
        curves = {
            "mode": np.exp(_log_volume(grid, math.log(row["kg"]), math.log(row["kd"]), logit_f, log_v0, t0)),
            "population": np.exp(_log_volume(grid, *d.mu[at], log_v0, t0)),
        }
        ax.plot(grid, curves["mode"], color="tab:blue", lw=1.5, label="individual")
        ax.plot(grid, curves["population"], color="black", ls="--", lw=1, label="population")
        c = rows["below_limit"].to_numpy()
        ax.scatter(rows["day"][~c], rows["observed_mm3"][~c], s=14, color="black", zorder=3)
        ax.scatter(rows["day"][c], rows["observed_mm3"][c], s=18, marker="v", color=_CENSORED_COLOR, zorder=3)
        ax.axhline(_limit(fit), color="grey", ls=":", lw=0.8)
        ax.set_yscale("log")
        # two minor ticks a decade: matplotlib's default eight cost more than the rest of the figure
        ax.yaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_title(str(lesion), fontsize="small")
    ncols = max(1, min(4, len(axes)))  # as _new_figure lays them out
    for i, ax in enumerate(axes):
        if i % ncols == 0:
            ax.set_ylabel("volume (mm³)")
        if i >= len(axes) - ncols:
            ax.set_xlabel("day")
    if axes:
        axes[0].legend(fontsize="small")
    fig.suptitle("Individual fits: observed volumes and fitted curves")
    return fig


#: File name -> how to draw it, for :func:`write_diagnostics`.
PLOTS: dict[str, Any] = {
    "observed_vs_individual": lambda fit: plot_observed_vs_predicted(fit, kind="individual"),
    "observed_vs_population": lambda fit: plot_observed_vs_predicted(fit, kind="population"),
    "iwres_vs_time": lambda fit: plot_residuals(fit, x="day", kind="iwres"),
    "iwres_vs_prediction": lambda fit: plot_residuals(fit, x="prediction", kind="iwres"),
    "npde_vs_time": lambda fit: plot_residuals(fit, x="day", kind="npde"),
    "npde_vs_prediction": lambda fit: plot_residuals(fit, x="prediction", kind="npde"),
    "cnpde_vs_time": lambda fit: plot_residuals(fit, x="day", kind="cnpde"),
    "vpc": plot_vpc,
    "vpc_conditional": lambda fit: plot_vpc(fit, conditional=True),
    "vpc_censored": plot_vpc_censored,
    "saem_trajectories": plot_trace,
    "individual_fits": plot_individual_fits,
}


def write_diagnostics(fit: TGIFit, folder: str | Path, *, dpi: int = 110) -> list[Path]:
    """Draw every plot of :data:`PLOTS` and write it as ``folder/<name>.png``; returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, draw in PLOTS.items():
        drawn = draw(fit)
        fig = drawn if hasattr(drawn, "savefig") else drawn.figure
        path = folder / f"{name}.png"
        fig.savefig(path, dpi=dpi)
        paths.append(path)
    return paths


__all__ = [
    "PLOTS",
    "VPCData",
    "conditional_simulations",
    "plot_individual_fits",
    "plot_observed_vs_predicted",
    "plot_residuals",
    "plot_trace",
    "plot_vpc",
    "plot_vpc_censored",
    "residual_table",
    "simulate_observations",
    "vpc_table",
    "write_diagnostics",
]

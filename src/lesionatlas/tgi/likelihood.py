r"""Residual error models and the censored log-likelihood of lesion volumes (pure ``jax.numpy``).

An observation :math:`y` of a lesion whose model volume is :math:`V` follows
:math:`y \sim N(V, g^2)` with the residual standard deviation

- ``"proportional"``: :math:`g = b V` (the paper's model),
- ``"constant"``: :math:`g = a`,
- ``"combined"``: :math:`g = a + b V` (Monolix's ``combined1``).

The error parameters are passed as one array ``error = (a, b)``; the entry a model does not use is
ignored.

Censored observations (below the quantification limit) contribute a probability instead of a density:

- left-censored (M3, Beal 2001): :math:`P(y < u) = \Phi(z_u)`, computed with ``log_ndtr``;
- interval-censored, when a lower bound :math:`l` is known (a Monolix ``LIMIT`` column; the authors'
  data give :math:`(0, 200]`): :math:`P(l < y < u) = \Phi(z_u) - \Phi(z_l)`, computed as a stable
  log-difference of normal CDFs (in the upper tail through the mirrored pair), never ``log(cdf)``.

Guard against absurd predictions
--------------------------------
With proportional error, an observation predicted at :math:`10^{-20}` of its value has a relative residual
of :math:`10^{20}`; one such residual in the first SAEM M-step sends :math:`b` to :math:`10^{20}` and the
fit never recovers (``paper/FACTS.md``). For uncensored observations the prediction is therefore floored
at :math:`y / (1 + r_{max})` (``max_relative_residual``, default 3): the relative residual
:math:`y / V - 1` never exceeds :math:`r_{max}` and the likelihood is flat beyond it (the observation is
treated as an outlier: it no longer pulls the individual parameters, and adds at most :math:`r_{max}^2`
to the sum of squares behind :math:`b^2`). Under the model with :math:`b \le 0.4` a relative residual
of 3 is a 7.5-SD event (probability below :math:`10^{-13}`), so the guard does not change well-behaved
fits. The default 3 rather than 10: with one absurd observation among 2,000, a cap of 10 still
inflated :math:`b` from 0.2 to 0.37 in the tests, a cap of 3 to 0.22. Each function reports how many
observations it clipped so the caller can warn.
Predictions are also clipped to :math:`|\log V| \le \log(\text{max float}) - 5` so no overflow reaches
the density.

References
----------
Beal SL (2001). Ways to fit a PK model with some data below the quantification limit. J Pharmacokinet
Pharmacodyn 28:481-504.
"""
from __future__ import annotations

import math
from typing import Literal, NamedTuple

import jax.numpy as jnp
from jax import Array
from jax.scipy.special import log_ndtr
from jax.typing import ArrayLike

from .model import log_volume_phi

ErrorModel = Literal["proportional", "constant", "combined"]
ERROR_MODELS: tuple[str, ...] = ("proportional", "constant", "combined")
DEFAULT_MAX_RELATIVE_RESIDUAL = 3.0
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


class TGIData(NamedTuple):
    """Padded arrays of a set of lesions (``N`` lesions, up to ``M`` observations each).

    Attributes
    ----------
    t : (N, M) days from treatment start.
    y : (N, M) observed volume (mm3); for a censored row, the upper bound of its interval (the limit).
    lower : (N, M) lower bound of a censored row's interval; ``-inf`` for plain left-censoring (M3).
    censored : (N, M) bool, the row is censored.
    obs_mask : (N, M) bool, the row is a real observation (False = padding).
    log_v0, t0 : (N,) log baseline volume (log mm3) and baseline day.
    lesion_mask : (N,) bool, the lesion is real (False = padding).
    design : (N, P) covariate design matrix of the normal-scale means (first column 1).
    cens_lesion, cens_obs : (K,) int, optional: lesion and observation index of every real censored
        cell; ``cens_valid`` (K,) bool marks the real entries (the index is padded to a bucket, see
        :func:`index_censored`). When the index is given, :func:`lesion_loglik` evaluates the censored
        terms (normal CDFs, the expensive part) on these cells only instead of on every padded cell;
        the numbers are the same. Leave them ``None`` for one lesion's data (under ``jax.vmap``) or for
        small problems.
    """

    t: Array
    y: Array
    lower: Array
    censored: Array
    obs_mask: Array
    log_v0: Array
    t0: Array
    lesion_mask: Array
    design: Array
    cens_lesion: Array | None = None
    cens_obs: Array | None = None
    cens_valid: Array | None = None


def cell_bucket(k: int) -> int:
    """Padded length of the censored-cell index: a power of two, at least 1024 (few shapes, so data
    sets of one shape bucket almost always share one compilation; the padding costs little)."""
    size = 1024
    while size < k:
        size *= 2
    return size


def index_censored(data: TGIData) -> TGIData:
    """``data`` with the index of its real censored cells (host side; the arrays must be concrete).

    The index is padded to :func:`cell_bucket` entries (pointing at cell (0, 0), ``cens_valid`` False)
    so that data sets of the same shape bucket mostly share one compilation.
    """
    import numpy as np

    rows, cols = np.nonzero(np.asarray(data.censored) & np.asarray(data.obs_mask))
    k = cell_bucket(len(rows))
    lesion, col, valid = np.zeros(k, np.int32), np.zeros(k, np.int32), np.zeros(k, bool)
    lesion[: len(rows)], col[: len(rows)], valid[: len(rows)] = rows, cols, True
    return data._replace(cens_lesion=jnp.asarray(lesion), cens_obs=jnp.asarray(col), cens_valid=jnp.asarray(valid))


def strip_index(data: TGIData) -> TGIData:
    """``data`` without the censored-cell index (for per-lesion code under ``jax.vmap``)."""
    return data._replace(cens_lesion=None, cens_obs=None, cens_valid=None)


def log1mexp(x: ArrayLike) -> Array:
    r""":math:`\log(1 - e^{x})` for :math:`x \le 0`, accurate at both ends (Maechler 2012)."""
    x = jnp.asarray(x)
    return jnp.where(x > -math.log(2.0), jnp.log(-jnp.expm1(x)), jnp.log1p(-jnp.exp(x)))


def log_ndtr_diff(z_upper: ArrayLike, z_lower: ArrayLike) -> Array:
    r""":math:`\log(\Phi(z_u) - \Phi(z_l))` for :math:`z_l \le z_u`, stable in both tails.

    Uses :math:`\Phi(z_u) - \Phi(z_l) = \Phi(-z_l) - \Phi(-z_u)` when :math:`z_l > 0`, so the larger
    term is never close to 1.
    """
    zu, zl = jnp.asarray(z_upper), jnp.asarray(z_lower)
    flip = zl > 0
    hi = jnp.where(flip, -zl, zu)
    lo = jnp.where(flip, -zu, zl)
    log_hi, log_lo = log_ndtr(hi), log_ndtr(lo)
    return log_hi + log1mexp(jnp.minimum(log_lo - log_hi, 0.0))


def _clip_log(log_v: Array) -> Array:
    lim = float(math.log(jnp.finfo(log_v.dtype).max)) - 5.0
    return jnp.clip(log_v, -lim, lim)


def _relative(x: Array, log_v: Array) -> Array:
    """``x / V`` computed as ``sign(x) exp(log|x| - log V)`` (no overflow, exact zeros)."""
    return jnp.sign(x) * jnp.exp(jnp.log(jnp.abs(x)) - log_v)


class ObservationTerms(NamedTuple):
    """Pieces of the per-observation likelihood shared by the likelihood and the SAEM M-step."""

    log_v: Array  # prediction after clipping and the outlier floor (log mm3)
    log_sd: Array  # log residual standard deviation at that prediction
    z: Array  # standardized residual (uncensored) or upper bound z_u (censored)
    z_lower: Array  # lower bound z_l of a censored row (-inf for M3 / uncensored rows)
    clipped: Array  # bool, the outlier floor was applied


def observation_terms(
    log_v: ArrayLike,
    y: ArrayLike,
    lower: ArrayLike,
    censored: ArrayLike,
    error: ArrayLike,
    *,
    error_model: ErrorModel = "proportional",
    max_relative_residual: float = DEFAULT_MAX_RELATIVE_RESIDUAL,
) -> ObservationTerms:
    """Standardized residuals and log SDs of observations given their predictions (broadcasting)."""
    log_v = _clip_log(jnp.asarray(log_v))
    y, lower = jnp.asarray(y, log_v.dtype), jnp.asarray(lower, log_v.dtype)
    censored = jnp.asarray(censored, bool)
    error = jnp.asarray(error, log_v.dtype)
    a, b = error[0], error[1]
    # outlier floor on the prediction of an uncensored, positive observation
    y_pos = jnp.where(y > 0, y, 1.0)
    floor = jnp.log(y_pos) - math.log1p(max_relative_residual)
    apply = (~censored) & (y > 0) & (log_v < floor)
    log_v = jnp.where(apply, floor, log_v)
    has_lower = censored & jnp.isfinite(lower)
    lower_safe = jnp.where(has_lower, lower, 0.0)
    if error_model == "proportional":
        log_sd = jnp.log(b) + log_v
        z = (_relative(y, log_v) - 1.0) / b
        z_lower = (_relative(lower_safe, log_v) - 1.0) / b
    elif error_model in ("constant", "combined"):
        v = jnp.exp(log_v)
        if error_model == "constant":
            log_sd = jnp.broadcast_to(jnp.log(a), log_v.shape)
        else:
            log_sd = jnp.logaddexp(jnp.log(a), jnp.log(b) + log_v)
        sd = jnp.exp(log_sd)
        z = (y - v) / sd
        z_lower = (lower_safe - v) / sd
    else:  # pragma: no cover - checked by the spec
        raise ValueError(f"error_model must be one of {ERROR_MODELS}, got {error_model!r}")
    z_lower = jnp.where(has_lower, z_lower, -jnp.inf)
    return ObservationTerms(log_v=log_v, log_sd=log_sd, z=z, z_lower=z_lower, clipped=apply)


def observation_loglik(
    log_v: ArrayLike,
    y: ArrayLike,
    lower: ArrayLike,
    censored: ArrayLike,
    error: ArrayLike,
    *,
    error_model: ErrorModel = "proportional",
    max_relative_residual: float = DEFAULT_MAX_RELATIVE_RESIDUAL,
) -> tuple[Array, Array]:
    r"""Log-likelihood of each observation given its predicted log volume.

    Returns
    -------
    loglik : Array
        :math:`\log N(y; V, g^2)` for observed rows, :math:`\log \Phi(z_u)` for left-censored rows and
        :math:`\log(\Phi(z_u) - \Phi(z_l))` for interval-censored rows (``lower`` finite).
    clipped : Array of bool
        Where the outlier floor of the prediction was applied (see the module docstring).
    """
    terms = observation_terms(
        log_v, y, lower, censored, error, error_model=error_model, max_relative_residual=max_relative_residual
    )
    censored = jnp.asarray(censored, bool)
    has_lower = jnp.isfinite(terms.z_lower)
    z_lower_safe = jnp.where(has_lower, terms.z_lower, -1.0)
    z_upper_safe = jnp.where(has_lower, terms.z, 0.0)
    interval = log_ndtr_diff(jnp.maximum(z_upper_safe, z_lower_safe), z_lower_safe)
    left = log_ndtr(terms.z)
    density = -_HALF_LOG_2PI - terms.log_sd - 0.5 * terms.z**2
    ll = jnp.where(censored, jnp.where(has_lower, interval, left), density)
    ll = jnp.where(jnp.isnan(ll), -jnp.inf, ll)
    return ll, terms.clipped


def predict_log_volume(phi: ArrayLike, data: TGIData) -> Array:
    """Log volume at every (padded) observation: ``phi`` (..., N, 3) -> (..., N, M).

    Also works on one lesion's data (fields without the ``N`` axis, as under ``jax.vmap``).
    """
    phi = jnp.asarray(phi)
    return log_volume_phi(data.t, phi[..., None, :], data.log_v0[..., None], data.t0[..., None])


def lesion_loglik(
    phi: ArrayLike,
    data: TGIData,
    error: ArrayLike,
    *,
    error_model: ErrorModel = "proportional",
    max_relative_residual: float = DEFAULT_MAX_RELATIVE_RESIDUAL,
) -> tuple[Array, Array]:
    r"""Conditional log-likelihood :math:`\log p(y_i \mid \phi_i)` of each lesion (padding masked out).

    Parameters
    ----------
    phi : array_like, shape (..., N, 3)
        Normal-scale individual parameters; leading axes (chains, draws) broadcast.
    data : TGIData
    error : array_like, shape (2,)
        ``(a, b)``.

    Returns
    -------
    loglik : Array, shape (..., N)
    n_clipped : Array, shape (..., N)
        Observations of each lesion where the outlier floor was applied.
    """
    log_v = predict_log_volume(phi, data)
    if data.cens_lesion is None:
        ll, clipped = observation_loglik(
            log_v,
            data.y,
            data.lower,
            data.censored,
            error,
            error_model=error_model,
            max_relative_residual=max_relative_residual,
        )
        ll = jnp.where(data.obs_mask, ll, 0.0)
        n_clipped = jnp.sum(clipped & data.obs_mask, axis=-1)
        return jnp.sum(ll, axis=-1), n_clipped
    # dense densities on every cell (censored cells masked out), the censored terms on their index only
    terms = observation_terms(
        log_v,
        data.y,
        data.lower,
        data.censored,
        error,
        error_model=error_model,
        max_relative_residual=max_relative_residual,
    )
    density = -_HALF_LOG_2PI - terms.log_sd - 0.5 * terms.z**2
    density = jnp.where(jnp.isnan(density), -jnp.inf, density)
    ll = jnp.where(data.obs_mask & ~data.censored, density, 0.0)
    n_clipped = jnp.sum(terms.clipped & data.obs_mask, axis=-1)
    i, j = data.cens_lesion, data.cens_obs
    ll_c, _ = observation_loglik(
        log_v[..., i, j],
        data.y[i, j],
        data.lower[i, j],
        jnp.ones(i.shape, bool),
        error,
        error_model=error_model,
        max_relative_residual=max_relative_residual,
    )
    total = jnp.sum(ll, axis=-1).at[..., i].add(jnp.where(data.cens_valid, ll_c, 0.0))
    return total, n_clipped


__all__ = [
    "DEFAULT_MAX_RELATIVE_RESIDUAL",
    "ERROR_MODELS",
    "ErrorModel",
    "ObservationTerms",
    "TGIData",
    "cell_bucket",
    "index_censored",
    "lesion_loglik",
    "log1mexp",
    "log_ndtr_diff",
    "observation_loglik",
    "observation_terms",
    "predict_log_volume",
    "strip_index",
]

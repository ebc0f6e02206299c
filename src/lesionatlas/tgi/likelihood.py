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

Layout and cost
---------------
The arrays are padded (:class:`TGIData`): a lesion's observations fill a row of ``W`` cells, longer
series continue in extra rows, so the work follows the typical lesion rather than the longest. Data
that have been through :func:`prepare_data` carry :math:`\log|y|` and an index of their censored cells,
so the normal CDFs are evaluated on those cells only. Row sums are products with ones (:func:`row_sum`)
and :math:`\log(1 + e^{-|d|})` uses :func:`lesionatlas.tgi.model.log1p_unit`: on CPU these were the
costs that dominated a likelihood evaluation.

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
from jax.scipy.special import erfc
from jax.typing import ArrayLike

from .model import cell_log_volume, lesion_terms, logaddexp

ErrorModel = Literal["proportional", "constant", "combined"]
ERROR_MODELS: tuple[str, ...] = ("proportional", "constant", "combined")
DEFAULT_MAX_RELATIVE_RESIDUAL = 3.0
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


class CensoredCells(NamedTuple):
    """Index of the censored cells of one kind (left-censored or interval-censored) of a :class:`TGIData`.

    ``row``, ``col``: (K,) int, the cell; ``valid``: (K,) bool, False on the entries that only pad the index
    to its bucket (:func:`cell_bucket`); those repeat a real entry of the same kind, so that every
    computation on them is well defined, and are masked out of every sum.
    """

    row: Array
    col: Array
    valid: Array


class TGIData(NamedTuple):
    """Padded arrays of a set of lesions (``N`` lesions; their observations in ``R >= N`` rows of ``W``).

    Row ``i < N`` holds the first ``W`` observations of lesion ``i``; a lesion with more observations
    continues in rows ``N, N + 1, ...`` whose lesions ``row_lesion`` gives (the shell folds a lesion's
    observations this way so that the width follows the typical lesion, not the longest one; see
    :func:`lesionatlas.tgi.fit.row_width`). Without ``row_lesion``, ``R = N`` and each lesion has one row.

    Attributes
    ----------
    t : (R, W) days from treatment start.
    y : (R, W) observed volume (mm3); for a censored cell, the upper bound of its interval (the limit).
    lower : (R, W) lower bound of a censored cell's interval; ``-inf`` for plain left-censoring (M3).
    censored : (R, W) bool, the cell is censored.
    obs_mask : (R, W) bool, the cell is a real observation (False = padding, and on every cell of a
        padding lesion).
    log_v0, t0 : (N,) log baseline volume (log mm3) and baseline day.
    lesion_mask : (N,) bool, the lesion is real (False = padding).
    design : (N, P) covariate design matrix of the normal-scale means (first column 1).
    row_lesion : (R - N,) int, optional: the lesion of each continuation row (padding rows: any lesion,
        no observation).
    log_abs_y : (R, W), optional: :math:`\\log |y|`, computed once (:func:`prepare_data`). When it is given
        the data are *prepared*: :func:`lesion_loglik` then evaluates the censored terms (normal CDFs, the
        expensive part) on the cells of ``left`` and ``interval`` only, instead of on every padded cell;
        the numbers are the same. Leave it ``None`` for one lesion's data (under ``jax.vmap``) or for
        small problems.
    left, interval : CensoredCells, optional: the left-censored (M3) and the interval-censored cells
        of prepared data (``None`` when there are none of that kind).
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
    row_lesion: Array | None = None
    log_abs_y: Array | None = None
    left: CensoredCells | None = None
    interval: CensoredCells | None = None

    @property
    def prepared(self) -> bool:
        return self.log_abs_y is not None


def cell_bucket(k: int) -> int:
    """Padded length of a censored-cell index: a power of two from 1,024 to 8,192, then a multiple of
    2,048 (few shapes, so data sets of one shape bucket almost always share one compilation; < 15%
    padding above 8,192)."""
    size = 1024
    while size < k and size < 8192:
        size *= 2
    return size if size >= k else -(-k // 2048) * 2048


def prepare_data(data: TGIData) -> TGIData:
    """``data`` with :math:`\\log |y|` and the index of its censored cells (host side; concrete arrays).

    Each index (left-censored, interval-censored) is padded to :func:`cell_bucket` entries that repeat
    its first real entry with ``valid`` False; a kind with no cell gets ``None``.
    """
    import numpy as np

    y = np.asarray(data.y)
    cens = np.asarray(data.censored) & np.asarray(data.obs_mask)
    finite_lower = np.isfinite(np.asarray(data.lower))
    cells = {}
    for name, mask in (("left", cens & ~finite_lower), ("interval", cens & finite_lower)):
        rows, cols = np.nonzero(mask)
        if len(rows) == 0:
            cells[name] = None
            continue
        k = cell_bucket(len(rows))
        row, col, valid = np.full(k, rows[0], np.int32), np.full(k, cols[0], np.int32), np.zeros(k, bool)
        row[: len(rows)], col[: len(rows)], valid[: len(rows)] = rows, cols, True
        cells[name] = CensoredCells(row=jnp.asarray(row), col=jnp.asarray(col), valid=jnp.asarray(valid))
    with np.errstate(divide="ignore"):
        log_abs_y = np.log(np.abs(y))
    return data._replace(log_abs_y=jnp.asarray(log_abs_y, data.y.dtype), **cells)


def strip_index(data: TGIData) -> TGIData:
    """``data`` without what :func:`prepare_data` added (for per-lesion code under ``jax.vmap``)."""
    return data._replace(log_abs_y=None, left=None, interval=None)


def row_sum(x: ArrayLike) -> Array:
    """Sum over the last (observation) axis, as a product with a vector of ones.

    XLA's CPU backend fuses the per-cell work that feeds a ``jnp.sum`` into the reduction loop, which it
    does not vectorise: the likelihood ran five times slower than the same work without the sum. A
    product with ones keeps that work in a vectorised elementwise loop (a dot is not fused with it).
    """
    x = jnp.asarray(x)
    return jnp.matmul(x, jnp.ones(x.shape[-1], x.dtype))


def to_rows(x: Array, data: TGIData) -> Array:
    """Per-lesion values ``x`` (..., N) -> per-row values (..., R) (continuation rows take their lesion's)."""
    if data.row_lesion is None:
        return x
    return jnp.concatenate([x, jnp.take(x, data.row_lesion, axis=-1)], axis=-1)


def lesion_sum(x: Array, data: TGIData) -> Array:
    """Per-row values ``x`` (..., R) -> per-lesion sums (..., N)."""
    if data.row_lesion is None:
        return x
    n = data.log_v0.shape[-1]
    return x[..., :n].at[..., data.row_lesion].add(x[..., n:])


def log_ndtr(z: ArrayLike) -> Array:
    r""":math:`\log \Phi(z)`, the M3 term, accurate in both tails (the method of
    ``jax.scipy.special.log_ndtr``, with less work).

    With :math:`a = \operatorname{erfc}(|z|/\sqrt 2)/2 = \Phi(-|z|)`: :math:`\log a` for
    :math:`z_0 < z \le 0` and :math:`\operatorname{log1p}(-a)` for :math:`z > 0` (``erfc`` keeps its
    relative accuracy in the tail, so nothing is lost as it would be with ``log(cdf)``); below
    :math:`z_0` (-20 in float64, -10 in float32) the asymptotic series
    :math:`-z^2/2 - \log(-z) - \tfrac12\log 2\pi + \log(1 - z^{-2} + 3 z^{-4} - 15 z^{-6})`, exactly as
    JAX does. ``jax.scipy.special.log_ndtr`` evaluates ``erf``, ``erfc`` and both tails on every element
    (``erf``/``erfc`` twice) and was a third of the likelihood's cost. The branches get safe inputs, so
    gradients are finite everywhere.
    """
    z = jnp.asarray(z)
    z0 = -20.0 if z.dtype == jnp.float64 else -10.0
    middle = z > z0
    z_mid = jnp.where(middle, z, 0.0)
    upper = z_mid > 0
    a = 0.5 * erfc(jnp.where(upper, z_mid, -z_mid) * (1.0 / math.sqrt(2.0)))  # Phi(-|z|), smooth through 0
    mid = jnp.where(upper, jnp.log1p(-jnp.where(upper, a, 0.0)), jnp.log(jnp.where(upper, 1.0, a)))
    z_low = jnp.where(middle, z0, z)
    inv2 = 1.0 / (z_low * z_low)
    series = 1.0 + inv2 * (-1.0 + inv2 * (3.0 + inv2 * -15.0))
    low = -0.5 * z_low * z_low - jnp.log(-z_low) - _HALF_LOG_2PI + jnp.log(series)
    return jnp.where(middle, mid, low)


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


def _relative(x: Array, log_v: Array, log_abs_x: Array | None = None) -> Array:
    """``x / V`` computed as ``sign(x) exp(log|x| - log V)`` (no overflow, exact zeros)."""
    if log_abs_x is None:
        log_abs_x = jnp.log(jnp.abs(x))
    return jnp.sign(x) * jnp.exp(log_abs_x - log_v)


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
    lower: ArrayLike | None,
    censored: ArrayLike,
    error: ArrayLike,
    *,
    error_model: ErrorModel = "proportional",
    max_relative_residual: float = DEFAULT_MAX_RELATIVE_RESIDUAL,
    log_abs_y: ArrayLike | None = None,
) -> ObservationTerms:
    """Standardized residuals and log SDs of observations given their predictions (broadcasting).

    ``lower=None`` means no lower bound anywhere (``z_lower`` is then ``-inf``, at no cost);
    ``log_abs_y`` is :math:`\\log |y|` when already known.
    """
    log_v = _clip_log(jnp.asarray(log_v))
    y = jnp.asarray(y, log_v.dtype)
    censored = jnp.asarray(censored, bool)
    error = jnp.asarray(error, log_v.dtype)
    a, b = error[0], error[1]
    log_abs_y = jnp.log(jnp.abs(y)) if log_abs_y is None else jnp.asarray(log_abs_y, log_v.dtype)
    # outlier floor on the prediction of an uncensored, positive observation
    floor = log_abs_y - math.log1p(max_relative_residual)
    apply = (~censored) & (y > 0) & (log_v < floor)
    log_v = jnp.where(apply, floor, log_v)
    if lower is not None:
        lower = jnp.asarray(lower, log_v.dtype)
        has_lower = censored & jnp.isfinite(lower)
        lower_safe = jnp.where(has_lower, lower, 0.0)
    if error_model == "proportional":
        log_sd = jnp.log(b) + log_v
        z = (_relative(y, log_v, log_abs_y) - 1.0) / b
        if lower is not None:
            z_lower = (_relative(lower_safe, log_v) - 1.0) / b
    elif error_model in ("constant", "combined"):
        v = jnp.exp(log_v)
        if error_model == "constant":
            log_sd = jnp.broadcast_to(jnp.log(a), log_v.shape)
        else:
            log_sd = logaddexp(jnp.log(a), jnp.log(b) + log_v)
        sd = jnp.exp(log_sd)
        z = (y - v) / sd
        if lower is not None:
            z_lower = (lower_safe - v) / sd
    else:  # pragma: no cover - checked by the spec
        raise ValueError(f"error_model must be one of {ERROR_MODELS}, got {error_model!r}")
    if lower is None:
        z_lower = jnp.full(z.shape, -jnp.inf, z.dtype)
    else:
        z_lower = jnp.where(has_lower, z_lower, -jnp.inf)
    return ObservationTerms(log_v=log_v, log_sd=log_sd, z=z, z_lower=z_lower, clipped=apply)


def _censored_loglik(terms: ObservationTerms, interval: bool | None) -> Array:
    """Log-probability of censored cells from their terms: :math:`\\log \\Phi(z_u)` (M3) or
    :math:`\\log(\\Phi(z_u) - \\Phi(z_l))` (interval); ``interval=None``: each cell by its ``z_lower``."""
    if interval is False:
        return log_ndtr(terms.z)
    has_lower = jnp.isfinite(terms.z_lower)
    z_lower_safe = jnp.where(has_lower, terms.z_lower, -1.0)
    z_upper_safe = jnp.where(has_lower, terms.z, 0.0)
    both = log_ndtr_diff(jnp.maximum(z_upper_safe, z_lower_safe), z_lower_safe)
    if interval:
        return both
    return jnp.where(has_lower, both, log_ndtr(terms.z))


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
    density = -_HALF_LOG_2PI - terms.log_sd - 0.5 * terms.z**2
    ll = jnp.where(censored, _censored_loglik(terms, None), density)
    ll = jnp.where(jnp.isnan(ll), -jnp.inf, ll)
    return ll, terms.clipped


def predict_log_volume(phi: ArrayLike, data: TGIData) -> Array:
    """Log volume at every (padded) cell: ``phi`` (..., N, 3) -> (..., R, W).

    Also works on one lesion's data (fields without the ``N`` axis, as under ``jax.vmap``).
    """
    phi = jnp.asarray(phi)
    return predict_components(phi[..., 0], phi[..., 1], phi[..., 2], data)


def predict_components(log_kg: ArrayLike, log_kd: ArrayLike, logit_f: ArrayLike, data: TGIData) -> Array:
    """:func:`predict_log_volume` from the three parameters given apart, each (..., N) (the SAEM core keeps
    them parameter-major: XLA's CPU loops vectorise over the last axis, which a size-3 one wastes)."""
    pieces = lesion_terms(log_kg, log_kd, logit_f, data.log_v0, data.t0)
    kg, kd, log_f, log_1mf, base = (to_rows(x, data)[..., None] for x in pieces)
    log_v0 = to_rows(jnp.asarray(data.log_v0), data)[..., None]
    t0 = to_rows(jnp.asarray(data.t0), data)[..., None]
    return cell_log_volume(data.t, kg, kd, log_f, log_1mf, log_v0, t0, base)


def censored_cells(
    log_v: Array,
    data: TGIData,
    error: ArrayLike,
    *,
    error_model: ErrorModel = "proportional",
    max_relative_residual: float = DEFAULT_MAX_RELATIVE_RESIDUAL,
) -> list[tuple[CensoredCells, bool, ObservationTerms]]:
    """Terms of the censored cells of prepared data, one entry per kind present: ``(cells, interval,
    terms)`` with ``terms`` of shape (..., K) (predictions ``log_v`` (..., R, W) gathered)."""
    out = []
    for cells, interval in ((data.left, False), (data.interval, True)):
        if cells is None:
            continue
        i, j = cells.row, cells.col
        terms = observation_terms(
            log_v[..., i, j],
            data.y[i, j],
            data.lower[i, j] if interval else None,
            jnp.ones(i.shape, bool),
            error,
            error_model=error_model,
            max_relative_residual=max_relative_residual,
        )
        out.append((cells, interval, terms))
    return out


def loglik_from_prediction(
    log_v: ArrayLike,
    data: TGIData,
    error: ArrayLike,
    *,
    error_model: ErrorModel = "proportional",
    max_relative_residual: float = DEFAULT_MAX_RELATIVE_RESIDUAL,
) -> tuple[Array, Array]:
    """:func:`lesion_loglik` from the predictions ``log_v`` (..., R, W) of :func:`predict_log_volume`
    (so that a caller that keeps them, as the SAEM chains do, need not predict again)."""
    log_v = jnp.asarray(log_v)
    if not data.prepared:
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
        n_clipped = row_sum((clipped & data.obs_mask).astype(ll.dtype)).astype(jnp.int32)
        return lesion_sum(row_sum(ll), data), lesion_sum(n_clipped, data)
    # densities on every cell (censored cells masked out), the censored terms on their index only
    terms = observation_terms(
        log_v,
        data.y,
        None,
        data.censored,
        error,
        error_model=error_model,
        max_relative_residual=max_relative_residual,
        log_abs_y=data.log_abs_y,
    )
    density = -_HALF_LOG_2PI - terms.log_sd - 0.5 * terms.z**2
    density = jnp.where(jnp.isnan(density), -jnp.inf, density)
    ll = row_sum(jnp.where(data.obs_mask & ~data.censored, density, 0.0))
    n_clipped = row_sum((terms.clipped & data.obs_mask).astype(ll.dtype)).astype(jnp.int32)
    for cells, interval, c_terms in censored_cells(
        log_v, data, error, error_model=error_model, max_relative_residual=max_relative_residual
    ):
        ll_c = _censored_loglik(c_terms, interval)
        ll_c = jnp.where(jnp.isnan(ll_c), -jnp.inf, ll_c)
        ll = ll.at[..., cells.row].add(jnp.where(cells.valid, ll_c, 0.0))
    return lesion_sum(ll, data), lesion_sum(n_clipped, data)


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
    return loglik_from_prediction(
        predict_log_volume(phi, data),
        data,
        error,
        error_model=error_model,
        max_relative_residual=max_relative_residual,
    )


__all__ = [
    "DEFAULT_MAX_RELATIVE_RESIDUAL",
    "ERROR_MODELS",
    "CensoredCells",
    "ErrorModel",
    "ObservationTerms",
    "TGIData",
    "cell_bucket",
    "censored_cells",
    "lesion_loglik",
    "lesion_sum",
    "log1mexp",
    "log_ndtr",
    "log_ndtr_diff",
    "loglik_from_prediction",
    "observation_loglik",
    "observation_terms",
    "predict_components",
    "predict_log_volume",
    "prepare_data",
    "row_sum",
    "strip_index",
    "to_rows",
]

r"""The mixed-effects Cox model (coxme's method): a table in, a :class:`MixedCoxFit` out.

.. math:: h_{ij}(t) = h_0(t) \exp(x_{ij}\beta + b_i), \qquad b_i \sim N(0, \sigma^2)

For a fixed :math:`\sigma^2` the penalised partial likelihood :math:`\ell(\beta, b) - b^\top b/(2
\sigma^2)` is maximised jointly by Newton-Raphson; :math:`\sigma^2` maximises the Laplace-approximated
integrated partial likelihood (coxme's *Integrated* log-likelihood) over :math:`\log\sigma^2`: an
EM-type first guess, a bracket, then Brent's method (:func:`_maximise_log_variance`). Each variance
tried starts from the mode at the nearest variance already tried, moved along its tangent
:math:`d(\beta, b)/d\log\sigma^2`, so it costs one or two Newton steps. A fit can start from the fit
of a related model (``start=``, as a covariate selection does): its variance search then starts with a
narrow bracket around that model's variance and its Newton iterations at that model's mode, to the same
tolerances; on the same rows the risk-set bookkeeping is shared. Standard errors are the
:math:`\beta` block of the inverse of minus the full penalised Hessian (coxme's choice). See
:mod:`lesionatlas.hazards.partial_likelihood` for the algebra.

References
----------
Therneau TM, Grambsch PM, Pankratz VS (2003). Penalized survival models and frailty. J Comput Graph
Stat 12:156-175. Therneau TM (2024). coxme: Mixed Effects Cox Models, R package (``coxme.fit``).
"""
from __future__ import annotations

import hashlib
import json
import math
import platform
import time as _time
import warnings
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd
import scipy.optimize
import scipy.stats

from ..errors import ConfigError, ConvergenceWarning, DataError, ExclusionWarning
from ..io import atomic_dir, write_json, write_table
from .partial_likelihood import (
    GroupIndex,
    PenalizedFit,
    RiskSets,
    _Workspace,
    cox_loglik,
    fit_penalized,
    group_index,
    integrated_loglik,
    risk_sets,
)

__all__ = ["MixedCox", "MixedCoxFit"]

SUMMARY_COLUMNS = ["term", "coef", "se", "hazard_ratio", "ci_lower", "ci_upper", "p_value"]
_CHI2_95 = float(scipy.stats.chi2.ppf(0.95, 1))
# a correlation-matrix eigenvalue below this fraction of the largest (or of 1) counts as zero: collinear
_RANK_TOL = 1e-10
# Newton decrements at which the inner fits stop: 1e-9 while the variance is searched, 1e-12 for the
# final solve at the chosen variance (one more quadratically convergent step at most). The Laplace
# determinant moves to first order with the mode, so at 1e-9 the integrated log-likelihood carries
# ~1e-6 of noise at 40,000 rows: harmless for the search (0.3% of the SE of log variance at its
# tolerance), but the reported estimates and log-likelihoods come from the tight solve.
SEARCH_TOL = 1e-9
FINAL_TOL = 1e-12
# half-width (log scale) of the first bracket of a search started from a related model's variance: adding
# or removing one covariate moves the log variance by 0.001-0.01 (0.2 for a strong patient-level one, for
# which the bracket is expanded), so three points usually bracket the maximum
WARM_BRACKET = 0.02


@dataclass(frozen=True)
class MixedCox:
    """Cox model with a Gaussian random intercept per group, fitted as R's ``coxme``.

    Parameters
    ----------
    ties : {"efron", "breslow"}
        Handling of tied event times (coxme's default is Efron).
    sparse : tuple (min_groups, max_fraction) or None
        coxme's ``sparse`` control: when there are at least ``min_groups`` groups, the groups holding
        at most ``max_fraction`` of the observations keep only the diagonal of their block of the
        Hessian (the Laplace log-determinant and the variances use that approximation, the estimates
        are the exact mode). ``None``: exact dense algebra (for up to a few hundred groups).
    variance_bounds : (float, float)
        Search interval of the random-effect variance.
    tol_log_variance : float
        Absolute tolerance of the search on log(variance).
    max_iter : int
        Newton iterations per variance value.
    confidence : float
        Level of the hazard-ratio intervals and of the profile-likelihood interval of the variance.
    profile_ci : bool
        Compute the profile-likelihood interval of the variance (about 4 more variances tried, each
        warm-started: ~15% of the fit's time at 40,000 rows). On by default because the interval is
        part of what the fit reports (``random_effect_ci``); coxme prints none, so switch it off to
        match coxme's output or in loops of many fits (a covariate selection does this).
    """

    ties: Literal["efron", "breslow"] = "efron"
    sparse: tuple[int, float] | None = (50, 0.02)
    variance_bounds: tuple[float, float] = (1e-6, 50.0)
    tol_log_variance: float = 1e-4
    max_iter: int = 50
    confidence: float = 0.95
    profile_ci: bool = True

    def fit(
        self,
        df: pd.DataFrame,
        duration_col: str,
        event_col: str,
        group_col: str,
        covariates: list[str] | tuple[str, ...] = (),
        categorical: dict[str, Any] | None = None,
        *,
        sigma2: float | None = None,
        start: MixedCoxFit | None = None,
    ) -> MixedCoxFit:
        """Fit the model.

        Parameters
        ----------
        df : DataFrame, one row per observation (lesion).
        duration_col, event_col, group_col : column names (time > 0 or >= 0; event 0/1 or bool;
            the grouping, e.g. ``patient_id``).
        covariates : numeric (or boolean) columns, and optionally categorical ones.
        categorical : ``{column: reference_level}``; each column becomes indicator terms named
            ``column[level]`` for every other level. Columns listed here need not be in ``covariates``.
        sigma2 : None to estimate the random-effect variance, or a fixed value.
        start : MixedCoxFit, optional
            A fit of a related model (e.g. the model one covariate smaller, in a covariate selection) to
            start from: the variance search starts at its variance with a narrow bracket, and the
            Newton iterations at its random effects (matched by group) and coefficients (matched by
            term); on the same rows its risk-set bookkeeping is reused, and for the same model on the
            same rows its variance search (a refit with ``profile_ci`` switched on reuses every variance
            already evaluated). The tolerances are unchanged, so the estimates are those of a cold fit
            to within them. A fit read back by :meth:`MixedCoxFit.from_dir` carries nothing to start
            from and is ignored.

        Returns
        -------
        MixedCoxFit

        Raises
        ------
        ConfigError
            Bad spec values, unknown columns, a reference level that is not in the data, a ``start``
            that is not a :class:`MixedCoxFit`.
        DataError
            Non-numeric or negative durations, events not 0/1, no events, constant or collinear
            covariates.
        """
        start_clock = _time.perf_counter()
        _check_spec(self)
        categorical = dict(categorical or {})
        if sigma2 is not None and not (isinstance(sigma2, (int, float)) and sigma2 > 0 and math.isfinite(sigma2)):
            raise ConfigError(f"sigma2 must be a positive number or None (estimate it), got {sigma2!r}")
        if start is not None and not isinstance(start, MixedCoxFit):
            raise ConfigError(f"start must be a MixedCoxFit or None, got {type(start).__name__}")
        warm = start._warm if start is not None else None
        # one BLAS thread: the fit's matrix products are small (n x ~25), so OpenBLAS threads cost more in
        # start-up and contention than they save (3x slower on a shared 2-core machine); scoped, restored
        # on exit (threadpoolctl comes with scikit-learn)
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            prepared = _prepare(df, duration_col, event_col, group_col, list(covariates), categorical)
            return _fit(self, prepared, sigma2, start_clock, warm)


def _check_spec(spec: MixedCox) -> None:
    if spec.ties not in ("efron", "breslow"):
        raise ConfigError(f"MixedCox.ties must be 'efron' or 'breslow', got {spec.ties!r}")
    if spec.sparse is not None:
        ok = (isinstance(spec.sparse, (tuple, list)) and len(spec.sparse) == 2 and spec.sparse[0] >= 0
              and 0 <= spec.sparse[1] <= 1)
        if not ok:
            raise ConfigError(f"MixedCox.sparse must be None or (min_groups >= 0, max_fraction in [0, 1]), "
                              f"got {spec.sparse!r}")
    lo, hi = spec.variance_bounds
    if not (0 < lo < hi < math.inf):
        raise ConfigError(f"MixedCox.variance_bounds must satisfy 0 < low < high, got {spec.variance_bounds!r}")
    if not 0 < spec.confidence < 1:
        raise ConfigError(f"MixedCox.confidence must be in (0, 1), got {spec.confidence!r}")
    if not spec.tol_log_variance > 0:
        raise ConfigError(f"MixedCox.tol_log_variance must be > 0, got {spec.tol_log_variance!r}")
    if not (isinstance(spec.max_iter, int) and spec.max_iter >= 1):
        raise ConfigError(f"MixedCox.max_iter must be an integer >= 1, got {spec.max_iter!r}")


# ----------------------------------------------------------------------------- data
@dataclass(frozen=True)
class _Prepared:
    time: np.ndarray
    event: np.ndarray
    x: np.ndarray
    terms: list[str]
    group_codes: np.ndarray
    group_labels: np.ndarray
    columns: dict[str, str]
    covariates: list[str]
    categorical: dict[str, Any]


def _first(values: Any, k: int = 5) -> str:
    vals = list(values)
    more = f" (and {len(vals) - k} more)" if len(vals) > k else ""
    return ", ".join(map(repr, vals[:k])) + more


def _prepare(df: pd.DataFrame, duration_col: str, event_col: str, group_col: str, covariates: list[str],
             categorical: dict[str, Any]) -> _Prepared:
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"MixedCox.fit needs a pandas DataFrame, got {type(df).__name__}", code="hazards-input")
    terms_cols = list(dict.fromkeys(list(covariates) + list(categorical)))
    needed = [duration_col, event_col, group_col, *terms_cols]
    missing = [c for c in dict.fromkeys(needed) if c not in df.columns]
    if missing:
        raise ConfigError(f"columns {_first(missing)} are not in the table; it has {_first(df.columns, 12)}",
                          code="hazards-column")
    for c in (duration_col, event_col, group_col):
        if c in terms_cols:
            raise ConfigError(f"column {c!r} is used both as a covariate and as duration/event/group",
                              code="hazards-column")
    frame = df[list(dict.fromkeys(needed))]
    na = frame.isna()
    if na.to_numpy().any():
        bad = na.any(axis=1)
        cols = [c for c in frame.columns if na[c].any()]
        warnings.warn(f"{int(bad.sum())} of {len(frame)} rows have missing values (in {_first(cols)}) and are "
                      "left out of the Cox model", ExclusionWarning, stacklevel=3)
        frame = frame.loc[~bad]
    if len(frame) == 0:
        raise DataError("no rows left to fit the Cox model", code="hazards-empty")

    dur = frame[duration_col]
    if not (pd.api.types.is_numeric_dtype(dur) and not pd.api.types.is_bool_dtype(dur)):
        raise DataError(f"{duration_col}: durations must be numeric, got dtype {dur.dtype}", code="hazards-duration")
    time = dur.to_numpy(dtype=float)
    if not np.isfinite(time).all():
        raise DataError(f"{duration_col}: {int((~np.isfinite(time)).sum())} durations are not finite",
                        code="hazards-duration")
    if (time < 0).any():
        rows = frame.index[time < 0]
        raise DataError(f"{duration_col}: {len(rows)} durations are negative (rows {_first(rows)}); durations "
                        "are times from the origin (e.g. treatment start) and must be >= 0", code="hazards-duration")
    ev = frame[event_col]
    if pd.api.types.is_bool_dtype(ev):
        event = ev.to_numpy(dtype=float)
    elif pd.api.types.is_numeric_dtype(ev):
        event = ev.to_numpy(dtype=float)
        if not np.isin(event, (0.0, 1.0)).all():
            raise DataError(f"{event_col}: events must be 0/1 or boolean, got values "
                            f"{_first(np.unique(event[~np.isin(event, (0.0, 1.0))]))}", code="hazards-event")
    else:
        raise DataError(f"{event_col}: events must be 0/1 or boolean, got dtype {ev.dtype}", code="hazards-event")
    if event.sum() == 0:
        raise DataError(f"{event_col}: there are no events; a Cox model needs at least one", code="hazards-no-events")

    # categorical levels with no event: their coefficient is -infinity; the limit of the fit for all
    # other parameters is the fit without their rows (their risk weight goes to zero), so drop them
    keep = np.ones(len(frame), dtype=bool)
    factorized: dict[str, tuple[np.ndarray, list[Any]]] = {}
    for col, ref in categorical.items():
        values = frame[col]
        codes, uniques = pd.factorize(values)  # one hashing pass, not one comparison per level
        levels = list(uniques)
        factorized[col] = (codes, levels)
        if ref not in levels:
            raise ConfigError(f"categorical[{col!r}]: reference level {ref!r} is not in the data; levels are "
                              f"{_first(sorted(map(str, levels)), 20)}", code="hazards-reference")
        events_per_level = np.bincount(codes, weights=event, minlength=len(levels))
        no_events = [lv for lv, n_ev in zip(levels, events_per_level) if n_ev == 0]
        if ref in no_events:
            raise DataError(f"categorical[{col!r}]: the reference level {ref!r} has no events; choose a reference "
                            "level with events", code="hazards-reference")
        if no_events:
            mask = values.isin(no_events).to_numpy()
            warnings.warn(f"{col}: levels {_first(no_events)} have no events, so their hazard ratio is 0 (not "
                          f"estimable); their {int(mask.sum())} rows are left out, which is the limit of the fit "
                          "for every other term", ExclusionWarning, stacklevel=3)
            keep &= ~mask
    if not keep.all():
        frame, time, event = frame.loc[keep], time[keep], event[keep]
        factorized = {c: (codes[keep], levels) for c, (codes, levels) in factorized.items()}

    columns, terms = [], []
    for col in terms_cols:
        values = frame[col]
        if col in categorical:
            ref = categorical[col]
            codes, position = factorized[col]
            present = np.bincount(codes, minlength=len(position)) > 0
            levels = [lv for lv in _sorted_levels(pd.Series([v for v, k in zip(position, present) if k],
                                                            dtype=object)) if lv != ref]
            if not levels:
                raise DataError(f"{col}: only the reference level {ref!r} is present; the term is constant",
                                code="hazards-constant")
            for lv in levels:
                columns.append((codes == position.index(lv)).astype(float))
                terms.append(f"{col}[{lv}]")
        elif pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
            columns.append(values.to_numpy(dtype=float))
            terms.append(col)
        else:
            raise DataError(f"{col}: covariate is not numeric (dtype {values.dtype}); list it in categorical="
                            f"{{{col!r}: reference_level}} to use it as a factor", code="hazards-covariate")
    x = np.column_stack(columns) if columns else np.zeros((len(frame), 0))
    if not np.isfinite(x).all():
        raise DataError("covariates contain infinite values", code="hazards-covariate")
    const = [t for t, c in zip(terms, x.T) if np.ptp(c) == 0]
    if const:
        raise DataError(f"covariates {_first(const)} are constant after removing incomplete rows; remove them",
                        code="hazards-constant")
    if x.shape[1]:
        xc = x - x.mean(0)
        xc /= np.sqrt((xc**2).mean(0))
        # correlation-matrix eigenvalues: cheap (p x p) and scale-free
        corr = xc.T @ xc / len(xc)
        eig = np.linalg.eigvalsh(corr)
        rank = int((eig > _RANK_TOL * max(eig.max(), 1.0)).sum())
        if rank < x.shape[1]:
            dropped = _collinear_terms(corr, terms)
            raise DataError(f"covariates are collinear (rank {rank} < {x.shape[1]}): {_first(dropped)} are linear "
                            "combinations of the others; remove them", code="hazards-collinear")
    codes, labels = pd.factorize(frame[group_col], sort=True)
    return _Prepared(time, event, x, terms, codes.astype(np.int64), np.asarray(labels),
                     {"duration": duration_col, "event": event_col, "group": group_col}, list(covariates),
                     dict(categorical))


def _sorted_levels(values: pd.Series) -> list[Any]:
    levels = list(pd.unique(values))
    try:
        return sorted(levels)
    except TypeError:
        return sorted(levels, key=str)


def _collinear_terms(corr: np.ndarray, terms: list[str]) -> list[str]:
    """Terms that are linear combinations of earlier ones: each term in turn joins the kept ones when
    their correlation matrix stays of full rank (the same eigenvalue rule as the rank check)."""
    out, kept = [], []
    for j in range(corr.shape[0]):
        idx = kept + [j]
        eig = np.linalg.eigvalsh(corr[np.ix_(idx, idx)])
        if int((eig > _RANK_TOL * max(eig.max(), 1.0)).sum()) == len(idx):
            kept.append(j)
        else:
            out.append(terms[j])
    return out


def _fingerprint(time: np.ndarray, event: np.ndarray, codes: np.ndarray) -> str:
    order = np.lexsort((codes, event, time))
    blob = np.concatenate([time[order], event[order], codes[order].astype(float)]).tobytes()
    return f"{zlib.crc32(blob):08x}"


# ----------------------------------------------------------------------------- fit
class _Warm(NamedTuple):
    """What a later fit can start from (kept on the result, never written to disk)."""

    search_key: tuple[Any, ...]  # the spec values that define the objective and its search
    time: np.ndarray  # the prepared data, in row order
    event: np.ndarray
    group_codes: np.ndarray
    group_labels: np.ndarray
    x_digest: bytes  # of the design (a digest, not a copy: a selection keeps dozens of fits)
    terms: tuple[str, ...]
    rs: RiskSets  # bookkeeping of these rows, shared by every fit on them
    groups: GroupIndex
    to_internal: np.ndarray
    scale: np.ndarray  # the columns' scale (coefficients are estimated on the standardised columns)
    fixed: PenalizedFit  # the fixed-effects fit (standardised scale)
    log_variance: float | None  # the variance the search found (None: the variance was fixed)
    b: np.ndarray  # random effects at the reported mode (internal group order)
    beta: np.ndarray  # coefficients at the reported mode (original scale)
    evaluated: dict[float, tuple[float, PenalizedFit]]  # every variance tried: reusable on the same objective
    tight: frozenset[float]  # the variances among them solved to FINAL_TOL


def _search_key(spec: MixedCox) -> tuple[Any, ...]:
    return (spec.ties, spec.sparse, spec.variance_bounds, spec.tol_log_variance, spec.max_iter)


def _same_rows(warm: _Warm | None, d: _Prepared, spec: MixedCox) -> bool:
    return (warm is not None and warm.search_key[:2] == _search_key(spec)[:2]
            and warm.time.shape == d.time.shape and np.array_equal(warm.time, d.time)
            and np.array_equal(warm.event, d.event) and np.array_equal(warm.group_codes, d.group_codes)
            and warm.group_labels.shape == d.group_labels.shape
            and bool((warm.group_labels == d.group_labels).all()))


def _mapped(values: np.ndarray, labels: Any, new_labels: Any, default: np.ndarray) -> np.ndarray:
    """``values`` (one per label) moved to ``new_labels``; labels not found keep ``default``."""
    position = pd.Index(labels).get_indexer(pd.Index(new_labels))
    found = position >= 0
    out = np.array(default, dtype=float)
    out[found] = np.asarray(values, dtype=float)[position[found]]
    return out


def _fit(spec: MixedCox, d: _Prepared, sigma2_fixed: float | None, start_clock: float,
         warm: _Warm | None = None) -> MixedCoxFit:
    n, p = d.x.shape
    q = len(d.group_labels)
    counts = np.bincount(d.group_codes, minlength=q)
    same_rows = _same_rows(warm, d, spec)
    if warm is not None and same_rows:
        rs, groups, to_internal = warm.rs, warm.groups, warm.to_internal
    else:
        rs = risk_sets(d.time, d.event, spec.ties)
        # groups: coxme's sparse rule (>= min_groups levels; the levels with <= max_fraction of rows sparse)
        if spec.sparse is not None and q >= spec.sparse[0]:
            is_sparse = counts / n <= spec.sparse[1]
        else:
            is_sparse = np.zeros(q, dtype=bool)
        if is_sparse.sum() == 1:  # a single sparse level is the same as dense (coxme)
            is_sparse[:] = False
        internal_order = np.concatenate([np.flatnonzero(is_sparse), np.flatnonzero(~is_sparse)])
        to_internal = np.empty(q, dtype=np.int64)
        to_internal[internal_order] = np.arange(q)
        groups = group_index(to_internal[d.group_codes][rs.order], q, int(is_sparse.sum()), rs)
    center = d.x.mean(0) if p else np.zeros(0)
    scale = np.sqrt(((d.x - center) ** 2).mean(0)) if p else np.zeros(0)
    xs = ((d.x - center) / scale)[rs.order] if p else np.zeros((n, 0))
    # the same model on the same rows is the same objective: what the start evaluated is reused as is
    x_digest = hashlib.sha1(np.ascontiguousarray(d.x).data).digest()
    same_model = (warm is not None and same_rows and warm.search_key == _search_key(spec)
                  and warm.terms == tuple(d.terms) and warm.x_digest == x_digest)

    null_loglik = float(cox_loglik(np.zeros(n), rs))
    workspace = _Workspace()  # scratch arrays shared by every Newton fit below
    # starting values from a related model: coefficients matched by term (a new term starts at its
    # fixed-effects estimate), random effects matched by group (a new group at 0)
    start_fixed = start_beta = start_b = None
    if warm is not None and not same_model:
        start_fixed = _mapped(warm.fixed.beta / np.where(warm.scale > 0, warm.scale, 1.0), warm.terms, d.terms,
                              np.zeros(p)) * scale
        start_beta = _mapped(warm.beta, warm.terms, d.terms, np.full(p, np.nan)) * scale
        labels = np.empty(q, dtype=object)
        labels[to_internal] = d.group_labels
        old_labels = np.empty(warm.b.size, dtype=object)
        old_labels[warm.to_internal] = warm.group_labels
        start_b = _mapped(warm.b, old_labels, labels, np.zeros(q))
        if q:
            start_b -= start_b.mean()
    if warm is not None and same_model:
        fixed = warm.fixed
    else:
        fixed = fit_penalized(xs, rs, None, 1.0, None, start_fixed, max_iter=spec.max_iter, workspace=workspace)
    if start_beta is not None:
        start_beta = np.where(np.isnan(start_beta), fixed.beta, start_beta)
    messages: list[str] = []
    if not fixed.converged:
        messages.append(f"the fixed-effects Cox fit did not converge in {spec.max_iter} iterations")

    state = {"n_inner": 0}
    evaluated: dict[float, tuple[float, PenalizedFit]] = {}
    tight: set[float] = set()
    if warm is not None and same_model:
        evaluated.update(warm.evaluated)
        tight.update(warm.tight)
    lo, hi = math.log(spec.variance_bounds[0]), math.log(spec.variance_bounds[1])

    def inner(log_s2: float, tol: float = SEARCH_TOL) -> tuple[float, PenalizedFit]:
        if log_s2 in evaluated and (tol >= SEARCH_TOL or log_s2 in tight):
            return evaluated[log_s2]
        s2 = math.exp(log_s2)
        # warm start: the mode at the nearest variance tried, moved along its tangent (first-order
        # predictor from the implicit function theorem); Newton then needs one or two steps. The first
        # variance starts from the related model's mode, if any
        b0, beta0 = np.zeros(q), fixed.beta
        guess = None
        if start_b is not None and start_beta is not None:
            b0, beta0 = start_b, start_beta
        if evaluated:
            near = min(evaluated, key=lambda s: abs(s - log_s2))
            prior = evaluated[near][1]
            b0, beta0 = prior.b, prior.beta
            if prior.converged and prior.tangent is not None and 0 < abs(log_s2 - near) <= 1.0:
                b0 = b0 + (log_s2 - near) * prior.tangent[:q]
                beta0 = beta0 + (log_s2 - near) * prior.tangent[q:]
            guess = prior.tangent
        fit = fit_penalized(xs, rs, groups, s2, b0, beta0, max_iter=spec.max_iter, tol=tol, tangent=True,
                            tangent_guess=guess, workspace=workspace)
        state["n_inner"] += fit.n_iter
        value = integrated_loglik(fit, s2)
        evaluated[log_s2] = (value, fit)
        if tol < SEARCH_TOL:
            tight.add(log_s2)
        return value, fit

    if sigma2_fixed is None:
        if warm is not None and same_model and warm.log_variance is not None:
            log_hat = warm.log_variance  # this objective's search is done
        else:
            begin = None
            if warm is not None and warm.log_variance is not None:
                begin = min(max(warm.log_variance, lo), hi)
            log_hat = _maximise_log_variance(lambda s: inner(s)[0], lambda s: inner(s)[1].em_sum / q, lo, hi,
                                             spec.tol_log_variance, begin)
        # the integrated likelihood tends to the fixed-effects one as the variance goes to 0: where
        # the maximum found is not above it, compare with the lower bound itself (a second mode there)
        if log_hat > lo and inner(log_hat)[0] <= fixed.loglik + 1e-6 and inner(lo)[0] >= inner(log_hat)[0]:
            log_hat = lo
        if log_hat - lo < 2 * spec.tol_log_variance:
            messages.append("the random-effect variance is at the lower search bound: no detectable "
                            "between-group variation")
        if hi - log_hat < 2 * spec.tol_log_variance:
            messages.append("the random-effect variance is at the upper search bound")
    else:
        log_hat = math.log(sigma2_fixed)
    ilik, fit = inner(log_hat, FINAL_TOL)
    if not fit.converged:
        messages.append(f"the penalised Newton iteration did not converge in {spec.max_iter} iterations")

    ci = (math.nan, math.nan)
    if sigma2_fixed is None and spec.profile_ci:
        drop = scipy.stats.chi2.ppf(spec.confidence, 1) / 2.0
        target = ilik - drop

        def f(s: float) -> float:
            return inner(s)[0] - target

        # first guess of the half-width on the log scale from the curvature of the profile: least
        # squares of f(s) = f(s_hat) - c (s - s_hat)^2 / 2 over the variances tried within 1 of the
        # estimate, leaving out those closer than 0.005 (their differences are at the noise level)
        used = [s for s in evaluated if 0.005 <= abs(s - log_hat) <= 1.0]
        dist = np.array([s - log_hat for s in used])
        gain = np.array([ilik - evaluated[s][0] for s in used])
        half = 0.5
        if dist.size:
            curv = 2.0 * float(gain @ dist**2) / float((dist**4).sum())
            if curv > 0 and math.isfinite(curv):
                half = min(max(math.sqrt(2.0 * drop / curv), 1e-3), 2.0)

        def bound(direction: int) -> float:
            # the crossing of a parabola through the estimate and the last point tried (a secant on the
            # squared distance): on a near-quadratic profile each try gains a factor ~20, so two or
            # three tries reach 1e-3 on the log scale
            dist = half
            for _ in range(8):
                s = min(max(log_hat + direction * dist, lo), hi)
                fall = ilik - inner(s)[0]
                if s in (lo, hi) and fall < drop:
                    return 0.0 if direction < 0 else math.inf
                new = abs(s - log_hat) * (math.sqrt(drop / fall) if fall > 0 else 2.0)
                if abs(new - abs(s - log_hat)) < 1e-3:
                    return math.exp(log_hat + direction * new)
                dist = min(max(new, 0.5 * dist), 4.0 * dist)
            # not settled (a profile far from quadratic): bracket the crossing, then Brent's root finder
            inside, step = log_hat, half
            while True:
                s = min(max(log_hat + direction * step, lo), hi)
                if f(s) <= 0:
                    a, b = sorted((inside, s))
                    return math.exp(scipy.optimize.brentq(f, a, b, xtol=1e-3))
                if s in (lo, hi):
                    return 0.0 if direction < 0 else math.inf
                inside, step = s, step * 1.5

        ci = (bound(-1), bound(+1))

    beta = fit.beta / scale if p else np.zeros(0)
    cov = fit.cov_beta / np.outer(scale, scale) if p else np.zeros((0, 0))
    se = np.sqrt(np.diag(cov))
    z = scipy.stats.norm.ppf(0.5 + spec.confidence / 2)
    summary = pd.DataFrame({
        "term": d.terms, "coef": beta, "se": se, "hazard_ratio": np.exp(beta),
        "ci_lower": np.exp(beta - z * se), "ci_upper": np.exp(beta + z * se),
        "p_value": 2 * scipy.stats.norm.sf(np.abs(beta / se)),
    }, columns=SUMMARY_COLUMNS)
    large = summary.loc[np.abs(summary["coef"] * scale) > 15, "term"].tolist() if p else []
    if large:
        messages.append(f"coefficients of {_first(large)} are very large: the likelihood may be monotone "
                        "(perfect separation); their estimates and standard errors are not reliable")
    b = fit.b[to_internal]
    random_effects = pd.DataFrame({"group": d.group_labels, "random_effect": b, "n_obs": counts,
                                   "n_events": np.bincount(d.group_codes, weights=d.event, minlength=q).astype(int)})
    profile = pd.DataFrame(sorted((math.exp(s), v) for s, (v, _) in evaluated.items()),
                           columns=["variance", "loglik_integrated"])
    for m in messages:
        warnings.warn(m, ConvergenceWarning, stacklevel=3)
    return MixedCoxFit(
        spec=spec,
        summary_table=summary,
        covariance=cov,
        random_effect_variance=math.exp(log_hat),
        random_effect_ci=ci,
        random_effects=random_effects,
        loglik_integrated=float(ilik),
        loglik_penalized=float(fit.penalized),
        loglik_fixed_only=float(fixed.loglik),
        loglik_null=null_loglik,
        variance_estimated=sigma2_fixed is None,
        n_obs=n,
        n_events=int(d.event.sum()),
        n_groups=q,
        n_sparse_groups=int(groups.n_sparse),
        n_iter=int(state["n_inner"]),
        converged=bool(fit.converged),
        messages=tuple(messages),
        profile=profile,
        columns=dict(d.columns),
        covariates=tuple(d.covariates),
        categorical={k: v for k, v in d.categorical.items()},
        fingerprint=_fingerprint(d.time, d.event, d.group_codes),
        elapsed_s=_time.perf_counter() - start_clock,
        _warm=_Warm(_search_key(spec), d.time, d.event, d.group_codes, d.group_labels, x_digest, tuple(d.terms), rs,
                    groups, to_internal, scale, fixed, log_hat if sigma2_fixed is None else None, fit.b, beta,
                    evaluated, frozenset(tight)),
    )


def _maximise_log_variance(func: Any, em_guess: Any, lo: float, hi: float, tol: float,
                           start: float | None = None) -> float:
    r"""Maximise ``func`` (the integrated log-likelihood) over log(variance) in [lo, hi].

    Cold (``start`` None): start at variance 0.25, move to the EM-type guess :math:`(\hat b^\top\hat b
    + \sum_j 1/H_{jj})/q` (the fixed point of the Laplace score when the variation of the determinant
    with the mode is ignored; close to the maximum, not at it), expand until the best point is
    bracketed, then Brent's method (parabolic interpolation with golden-section safeguards) to ``tol``
    on the log scale. Warm (``start``: the log variance of a related model, e.g. one covariate
    smaller): the first points are ``start`` and ``start`` +- :data:`WARM_BRACKET`, expanded outwards
    only when the best of them is at an end; then the same Brent's method to the same ``tol``. A
    maximum at a search bound is returned as that bound.
    """
    def clip(s: float) -> float:
        return min(max(s, lo), hi)

    def em_log(s: float) -> float:
        g = em_guess(s)
        return math.log(g) if g > 0 and math.isfinite(g) else lo

    if start is not None:
        s0 = clip(start)
        points = {s0: func(s0)}
        for s in (clip(s0 - WARM_BRACKET), clip(s0 + WARM_BRACKET)):
            if s not in points:
                points[s] = func(s)
        step = 2.0 * WARM_BRACKET
    else:
        s0 = clip(math.log(0.25))
        points = {s0: func(s0)}
        e0 = em_log(s0)
        s1 = clip(s0 + min(max(abs(e0 - s0), 0.05), 3.0) * (1.0 if e0 >= s0 else -1.0))
        points[s1] = func(s1)
        if points[s1] > points[s0]:
            # EM converges linearly towards (close to) the maximum: Aitken's extrapolation of the two steps
            e1 = em_log(s1)
            rate = (e1 - s1) / (s1 - s0)
            if 0.0 < rate < 0.95:
                s2 = clip(s1 + (e1 - s1) / (1.0 - rate))
                if s2 not in points:
                    points[s2] = func(s2)
        step = 0.05
    while True:
        xs = sorted(points)
        k = max(range(len(xs)), key=lambda i: points[xs[i]])
        if 0 < k < len(xs) - 1:
            a, x, c = xs[k - 1], xs[k], xs[k + 1]
            break
        if xs[k] in (lo, hi):
            # best at a bound: a maximum there unless a point just inside is better
            probe = clip(xs[k] + (2.0 * tol if xs[k] == lo else -2.0 * tol))
            if probe in points:
                return xs[k]
            points[probe] = func(probe)
            continue
        # the best point is the outermost: step outwards, small first (the EM and Aitken guesses are
        # close to the maximum), then growing
        direction = 1.0 if k == len(xs) - 1 else -1.0
        end = xs[-3:] if direction > 0 else xs[:3]
        vertex = _parabola_vertex(end, [points[v] for v in end]) if start is not None and len(end) == 3 else None
        if vertex is not None:
            # warm: the maximum is beyond the first bracket (a covariate that moves the variance much):
            # to the vertex of the parabola through the three outermost points when it lies further out
            # (at most 10 times their span), else one bracket width further
            beyond = direction * (vertex - xs[k])
            s_new = clip(xs[k] + direction * (min(beyond, 10.0 * (end[-1] - end[0])) if beyond > WARM_BRACKET
                                              else WARM_BRACKET))
        else:
            s_new = clip(xs[k] + direction * step)
            step *= 3.0
        points[s_new] = func(s_new)
    return _brent_max(func, a, x, c, points, tol)


def _parabola_vertex(xs: list[float], fs: list[float]) -> float | None:
    """Abscissa of the maximum of the parabola through three points, None when it is not concave."""
    (x0, x1, x2), (f0, f1, f2) = xs, fs
    d01, d12 = (f1 - f0) / (x1 - x0), (f2 - f1) / (x2 - x1)
    curvature = (d12 - d01) / (x2 - x0)
    if not (curvature < 0 and math.isfinite(curvature)):
        return None
    return 0.5 * (x0 + x1) - d01 / (2.0 * curvature)


def _brent_max(func: Any, a: float, x: float, c: float, points: dict[float, float], tol: float) -> float:
    """Brent's minimiser (as scipy's ``fminbound``) on -func, started from the bracket a < x < c with
    func(x) >= func(a), func(c) already known (both ends seed the first parabola)."""
    golden = 0.5 * (3.0 - math.sqrt(5.0))
    sqrt_eps = math.sqrt(2.2e-16)
    fx = -points[x]
    w, fw, v, fv = a, -points[a], c, -points[c]
    if fw > fv:
        w, fw, v, fv = v, fv, w, fw
    e = d = c - a  # the known bracket ends seed the parabola: allow parabolic first and second steps
    for _ in range(200):
        xm = 0.5 * (a + c)
        tol1 = sqrt_eps * abs(x) + tol / 3.0
        tol2 = 2.0 * tol1
        if abs(x - xm) <= tol2 - 0.5 * (c - a):
            break
        golden_step = True
        if abs(e) > tol1:
            golden_step = False
            r = (x - w) * (fx - fv)
            qq = (x - v) * (fx - fw)
            pp = (x - v) * qq - (x - w) * r
            qq = 2.0 * (qq - r)
            if qq > 0.0:
                pp = -pp
            qq = abs(qq)
            r, e = e, d
            if abs(pp) < abs(0.5 * qq * r) and qq * (a - x) < pp < qq * (c - x):
                d = pp / qq
                u = x + d
                if (u - a) < tol2 or (c - u) < tol2:
                    d = tol1 if xm >= x else -tol1
            else:
                golden_step = True
        if golden_step:
            e = (a - x) if x >= xm else (c - x)
            d = golden * e
        u = x + (1.0 if d >= 0 else -1.0) * max(abs(d), tol1)
        fu = -func(u)
        if fu <= fx:
            if u >= x:
                a = x
            else:
                c = x
            v, fv, w, fw, x, fx = w, fw, x, fx, u, fu
        else:
            if u < x:
                a = u
            else:
                c = u
            if fu <= fw or w == x:
                v, fv, w, fw = w, fw, u, fu
            elif fu <= fv or v == x or v == w:
                v, fv = u, fu
    return x


# ----------------------------------------------------------------------------- result
@dataclass(frozen=True, eq=False)
class MixedCoxFit:
    """A fitted :class:`MixedCox` model.

    Attributes
    ----------
    random_effect_variance : float
        :math:`\\hat\\sigma^2` (coxme's ``Variance`` of the random intercept).
    random_effect_ci : (float, float)
        Profile-likelihood interval of the variance from the integrated log-likelihood (lower 0 when
        the profile does not drop enough towards 0; NaN when the variance was fixed).
    random_effects : DataFrame
        ``group, random_effect, n_obs, n_events``: the penalised-likelihood estimates :math:`\\hat b`.
    loglik_integrated, loglik_penalized : float
        coxme's *Integrated* and *Penalized* log-likelihoods.
    loglik_fixed_only : float
        Maximised log partial likelihood of the same fixed effects without random effect.
    loglik_null : float
        Log partial likelihood at :math:`\\beta = 0` (coxme's *NULL*).
    profile : DataFrame
        ``variance, loglik_integrated`` at every variance evaluated (the search trace).
    """

    spec: MixedCox
    summary_table: pd.DataFrame
    covariance: np.ndarray
    random_effect_variance: float
    random_effect_ci: tuple[float, float]
    random_effects: pd.DataFrame
    loglik_integrated: float
    loglik_penalized: float
    loglik_fixed_only: float
    loglik_null: float
    variance_estimated: bool
    n_obs: int
    n_events: int
    n_groups: int
    n_sparse_groups: int
    n_iter: int
    converged: bool
    messages: tuple[str, ...]
    profile: pd.DataFrame
    columns: dict[str, str]
    covariates: tuple[str, ...]
    categorical: dict[str, Any]
    fingerprint: str
    elapsed_s: float = field(default=math.nan, compare=False)
    # what a later fit can start from (MixedCox.fit(start=...)): the search trace and the risk-set
    # bookkeeping of the rows (a few MB at 40,000 rows); not part of the result, not saved
    _warm: Any = field(default=None, compare=False, repr=False)

    # --- tables
    def summary(self) -> pd.DataFrame:
        """Fixed effects: ``term, coef, se, hazard_ratio, ci_lower, ci_upper, p_value`` (Wald)."""
        return self.summary_table.copy()

    @property
    def hazard_ratios(self) -> pd.DataFrame:
        """Alias of :meth:`summary` (one row per term)."""
        return self.summary()

    @property
    def coef(self) -> pd.Series:
        return self.summary_table.set_index("term")["coef"]

    @property
    def n_params(self) -> int:
        """Fixed effects plus one for an estimated variance."""
        return len(self.summary_table) + int(self.variance_estimated)

    # --- tests
    def lrt(self, other: MixedCoxFit) -> tuple[float, int, float]:
        """Likelihood-ratio test between nested models fitted to the same data.

        Uses the integrated log-likelihoods (as coxme's ``anova``); ``df`` is the difference in the
        number of parameters (fixed effects, plus one for an estimated variance).

        Returns
        -------
        (statistic, df, p_value)
        """
        if not isinstance(other, MixedCoxFit):
            raise ConfigError(f"lrt needs another MixedCoxFit, got {type(other).__name__}")
        if other.fingerprint != self.fingerprint or other.n_obs != self.n_obs:
            raise ConfigError("lrt: the two models were not fitted to the same observations (after dropping "
                              "incomplete rows); fit both on the same rows", code="hazards-lrt")
        big, small = (self, other) if self.n_params >= other.n_params else (other, self)
        df = big.n_params - small.n_params
        if df == 0:
            raise ConfigError("lrt: the models have the same number of parameters, so they are not nested",
                              code="hazards-lrt")
        stat = max(0.0, 2.0 * (big.loglik_integrated - small.loglik_integrated))
        return stat, df, float(scipy.stats.chi2.sf(stat, df))

    def lrt_random_effect(self) -> tuple[float, int, float]:
        """LRT of the random effect: integrated log-likelihood vs the fixed-effects Cox model.

        The p-value is the naive chi-square(1) one, as coxme's ``anova`` against ``coxph``; the
        variance is on the boundary under the null, so halving it gives the (less conservative)
        50:50 mixture p-value.
        """
        stat = max(0.0, 2.0 * (self.loglik_integrated - self.loglik_fixed_only))
        return stat, 1, float(scipy.stats.chi2.sf(stat, 1))

    # --- people
    def __repr__(self) -> str:
        lines = [
            f"<MixedCoxFit: {self.n_obs} observations, {self.n_events} events, {self.n_groups} groups "
            f"({self.columns.get('group')}); ties={self.spec.ties}>",
            f"  random-effect variance {self.random_effect_variance:.4g}"
            + (f" (profile {self.spec.confidence:.0%} CI {self.random_effect_ci[0]:.4g} to "
               f"{self.random_effect_ci[1]:.4g})" if self.variance_estimated and self.spec.profile_ci else
               (" (fixed)" if not self.variance_estimated else "")),
            f"  log-likelihood: integrated {self.loglik_integrated:.3f}, penalized {self.loglik_penalized:.3f}, "
            f"fixed-only {self.loglik_fixed_only:.3f}, null {self.loglik_null:.3f}",
        ]
        if len(self.summary_table):
            lines.append(self.summary_table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return f"<pre>{self.__repr__().splitlines()[0]}</pre>" + self.summary_table.to_html(index=False)

    # --- files
    def to_dir(self, path: str | Path) -> Path:
        """Write ``summary``, ``random_effects``, ``profile``, ``covariance`` (Parquet + CSV) and ``meta.json``."""
        path = Path(path)
        with atomic_dir(path) as tmp:
            write_table(self.summary_table, tmp, "summary")
            write_table(self.random_effects.assign(group=self.random_effects["group"].astype(str)), tmp,
                        "random_effects")
            write_table(self.profile, tmp, "profile")
            cov = pd.DataFrame(self.covariance, columns=list(self.summary_table["term"]))
            write_table(cov, tmp, "covariance")
            meta = {
                "kind": "MixedCoxFit",
                "spec": asdict(self.spec),
                "random_effect_variance": self.random_effect_variance,
                "random_effect_ci": list(self.random_effect_ci),
                "loglik_integrated": self.loglik_integrated,
                "loglik_penalized": self.loglik_penalized,
                "loglik_fixed_only": self.loglik_fixed_only,
                "loglik_null": self.loglik_null,
                "variance_estimated": self.variance_estimated,
                "n_obs": self.n_obs, "n_events": self.n_events, "n_groups": self.n_groups,
                "n_sparse_groups": self.n_sparse_groups, "n_iter": self.n_iter, "converged": self.converged,
                "messages": list(self.messages), "columns": self.columns, "covariates": list(self.covariates),
                "categorical": {k: _jsonable(v) for k, v in self.categorical.items()},
                "fingerprint": self.fingerprint, "elapsed_s": self.elapsed_s,
                "versions": {"python": platform.python_version(), "numpy": np.__version__,
                             "pandas": pd.__version__, "scipy": scipy.__version__},
            }
            write_json(tmp / "meta.json", meta)
        return path

    @classmethod
    def from_dir(cls, path: str | Path) -> MixedCoxFit:
        """Read a result written by :meth:`to_dir`."""
        path = Path(path)
        meta = json.loads((path / "meta.json").read_text())
        if meta.get("kind") != "MixedCoxFit":
            raise DataError(f"{path}: not a MixedCoxFit folder (meta.json kind={meta.get('kind')!r})")
        spec_d = dict(meta["spec"])
        spec_d["sparse"] = tuple(spec_d["sparse"]) if spec_d["sparse"] is not None else None
        spec_d["variance_bounds"] = tuple(spec_d["variance_bounds"])
        summary = pd.read_parquet(path / "summary.parquet")
        cov = pd.read_parquet(path / "covariance.parquet").to_numpy()
        return cls(
            spec=MixedCox(**spec_d),
            summary_table=summary,
            covariance=cov,
            random_effect_variance=meta["random_effect_variance"],
            random_effect_ci=tuple(float(v) for v in meta["random_effect_ci"]),
            random_effects=pd.read_parquet(path / "random_effects.parquet"),
            loglik_integrated=meta["loglik_integrated"],
            loglik_penalized=meta["loglik_penalized"],
            loglik_fixed_only=meta["loglik_fixed_only"],
            loglik_null=meta["loglik_null"],
            variance_estimated=meta["variance_estimated"],
            n_obs=meta["n_obs"], n_events=meta["n_events"], n_groups=meta["n_groups"],
            n_sparse_groups=meta["n_sparse_groups"], n_iter=meta["n_iter"], converged=meta["converged"],
            messages=tuple(meta["messages"]), profile=pd.read_parquet(path / "profile.parquet"),
            columns=meta["columns"], covariates=tuple(meta["covariates"]), categorical=meta["categorical"],
            fingerprint=meta["fingerprint"], elapsed_s=meta["elapsed_s"],
        )


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v

r"""Cox partial likelihood with a Gaussian random intercept: pure functions of arrays.

Everything here takes and returns numpy arrays (no pandas, files, prints or global settings); the
shell in :mod:`lesionatlas.hazards.mixed_cox` prepares the arrays and turns the results into tables.

Notation. Observations are sorted by time (ascending, deaths first within tied times); ``eta`` is
the linear predictor :math:`\eta_i = x_i\beta + b_{g(i)}`, :math:`r_i = e^{\eta_i}`. Each distinct
event time :math:`t_k` has :math:`d_k` deaths :math:`D_k` and the risk set :math:`R_k = \{i: t_i \ge
t_k\}`. With Efron's method every death :math:`l = 0..d_k-1` gives one *event row* with denominator

.. math:: \mathrm{den}_{kl} = \sum_{R_k} r_i - \tfrac{l}{d_k} \sum_{D_k} r_i

(Breslow: ``l/d_k`` replaced by 0) and the log partial likelihood is
:math:`\ell = \sum_i \delta_i \eta_i - \sum_{kl} \log \mathrm{den}_{kl}`.

Derivatives with respect to ``eta``: the score is :math:`\delta_i - r_i h_i` where :math:`h_i =
\sum_{kl:\, i \in R_k} c_{ikl} / \mathrm{den}_{kl}` (:math:`c_{ikl} = 1 - l/d_k` for a death at
:math:`t_k`, 1 otherwise); minus the Hessian for a design :math:`Z` is

.. math:: Z^\top \mathrm{diag}(r h) Z - M^\top M, \qquad
          M_{kl} = \sum_{i \in R_k} r_i c_{ikl} z_i / \mathrm{den}_{kl},

a weighted Gram matrix minus a rank-(number of deaths) term. All risk-set sums are reverse cumulative
sums over the sorted observations, so one evaluation costs O(n m) for m dense columns. The block sums
(from one event time to the next) and the death sums of a whole design come from one product with a
fixed-pattern sparse matrix whose values are the risk weights (:class:`RiskSets`), so a pass over the
design makes no n x m temporary but the one of the weighted Gram matrix, and both quadratic forms are
symmetric rank-k products (BLAS ``syrk``).

Random intercepts (one column per group) are handled as coxme does (Therneau's ``bdsmatrix``): groups
can be *sparse* -- only the diagonal of their block of the Hessian is kept, computed exactly in O(n)
from within-group reverse cumulative sums -- or *dense* (explicit indicator columns, all cross terms).
The cross terms between sparse groups and dense columns are exact. The approximation enters only the
Laplace log-determinant and the variances, exactly as in coxme (Therneau 2003, coxme ``coxfit6b.c``).
The mode is the exact mode: the gradient is exact, and the Newton steps solve with the *exact*
information by conjugate gradients (a product with it costs O(n m) through the same cumulative sums,
:func:`_information_product`), preconditioned by the sparse-approximation solve, so the iteration
converges quadratically (coxme steps with the approximation itself and converges linearly).

Float64 throughout: these are numpy arrays, so no global JAX setting is involved. The log-likelihood
:func:`cox_loglik` is written against an array namespace ``xp`` so the tests can differentiate it with
``jax.numpy`` (inside ``jax.enable_x64``); the derivatives used by the fit are closed-form numpy.
Departure from the house style (JAX core): each fit has its own shapes (observations, groups, deaths),
so a jitted core would compile once per data set and per Newton shape, costing more than the whole
numpy fit (about 10 ms per derivative pass and 1 ms per information product at 37,000 rows, 4,200
sparse groups and 22 columns, one BLAS thread).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import scipy.linalg
import scipy.sparse

__all__ = [
    "RiskSets",
    "GroupIndex",
    "CoxDerivatives",
    "PenalizedFit",
    "risk_sets",
    "group_index",
    "cox_loglik",
    "cox_derivatives",
    "fit_penalized",
    "integrated_loglik",
]


class RiskSets(NamedTuple):
    """Sorted-order bookkeeping of risk sets and event rows (see the module notes)."""

    order: np.ndarray  # (n,) original index of the i-th sorted observation
    event: np.ndarray  # (n,) 0/1 float, sorted order
    start: np.ndarray  # (K,) first sorted index of each event time's block (its risk set is [start:])
    n_deaths: np.ndarray  # (K,) deaths at each event time; they are at [start, start + n_deaths)
    row_time: np.ndarray  # (D,) event-time index of each event row
    row_frac: np.ndarray  # (D,) l / d_k (Efron) or 0 (Breslow)
    row_offset: np.ndarray  # (K,) first event row of each event time
    death_time: np.ndarray  # (n,) event-time index of a death, -1 for a censored observation
    at_obs: np.ndarray  # (n,) number of event times <= the observation's time
    deaths: np.ndarray  # (D,) sorted positions of the deaths, in event-row order
    tied: np.ndarray  # (T,) event times with a nonzero Efron fraction (two or more deaths; none for Breslow)
    # the event rows of the tied times (time-ordered, with their fractions and the first row of each
    # time), and the deaths at tied times with the index in ``tied`` of their time: the Efron terms
    # are zero elsewhere
    tied_rows: np.ndarray
    tied_frac: np.ndarray
    tied_row_offset: np.ndarray
    tied_deaths: np.ndarray
    tied_death_slot: np.ndarray
    # fixed pattern of a (2K x n) CSR matrix: row k < K holds the observations from the start of event
    # time k to the start of the next one, row K + k the deaths at time k. With the risk weights as its
    # values, one sparse product gives every block sum and death sum of a design (O(n m), no n x m
    # temporary); reverse-cumulated over the first K rows, the block sums are the risk-set sums
    sum_indices: np.ndarray
    sum_indptr: np.ndarray


class GroupIndex(NamedTuple):
    """Group membership in sorted order; groups ``< n_sparse`` are sparse, the rest dense."""

    group: np.ndarray  # (n,) group index, sorted order, sparse groups numbered first
    n_groups: int
    n_sparse: int
    perm: np.ndarray  # (n,) sorted-order positions ordered by (group, time)
    group_end: np.ndarray  # (n,) for each position of perm, the end (exclusive) of its group in perm
    dense_columns: np.ndarray  # (n, n_groups - n_sparse) indicators of the dense groups
    # CSR row pointers of the sparse groups' indicator (n_sparse x n; its column indices are the first
    # entries of perm): group sums with any weights
    sparse_indptr: np.ndarray
    # sparse-group x event-time sums as sparse matrices with a fixed pattern (see _PairSums): risk
    # weights by (group, number of event times at or before the observation) and deaths by
    # (group, tied event time); they give the cross terms without n x m temporaries
    by_segment: Any
    by_tied_death: Any
    # static parts of the diagonal of the sparse-group block (see _derivatives), in perm order: the
    # group, the cumulative-sum positions of the observation's time and of its predecessor's in the
    # group; then one entry per (group, event time) block of deaths
    perm_group: np.ndarray
    perm_seg: np.ndarray
    perm_prev_seg: np.ndarray
    death_pos: np.ndarray  # perm positions of the deaths of sparse groups at tied times, by (group, time)
    death_block: np.ndarray  # first entry in death_pos of each (group, tied time) block
    death_block_group: np.ndarray
    death_block_tied: np.ndarray  # index in RiskSets.tied of the block's time


class _PairSums(NamedTuple):
    """Fixed sparsity pattern of a (rows x cols) matrix of sums over observations: ``matrix(values)``
    adds ``values`` (one per observation of ``take``) into its (row, col) cell."""

    take: np.ndarray  # observations (sorted positions) that contribute
    cell: np.ndarray  # (len(take),) cell index of each
    indices: np.ndarray
    indptr: np.ndarray
    shape: tuple[int, int]

    @classmethod
    def build(cls, take: np.ndarray, rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> _PairSums:
        key = rows.astype(np.int64) * shape[1] + cols
        uniq, cell = np.unique(key, return_inverse=True)
        indptr = np.searchsorted(uniq // shape[1], np.arange(shape[0] + 1))
        return cls(take, cell.ravel(), (uniq % shape[1]).astype(np.int64), indptr.astype(np.int64), shape)

    def matrix(self, values: np.ndarray) -> Any:
        data = np.bincount(self.cell, weights=values[self.take], minlength=self.indices.size)
        return scipy.sparse.csr_matrix((data, self.indices, self.indptr), shape=self.shape)


def risk_sets(time: np.ndarray, event: np.ndarray, ties: str = "efron") -> RiskSets:
    """Sort observations and index their risk sets and event rows.

    Parameters
    ----------
    time, event : arrays (n,)
        Durations and event indicators (1 event, 0 censored).
    ties : {"efron", "breslow"}
    """
    time = np.asarray(time, dtype=float)
    event = np.asarray(event, dtype=float)
    order = np.lexsort((-event, time))
    t, e = time[order], event[order]
    n = t.size
    new_block = np.ones(n, dtype=bool)
    new_block[1:] = t[1:] != t[:-1]
    block_id = np.cumsum(new_block) - 1
    block_start = np.flatnonzero(new_block)
    deaths = np.bincount(block_id, weights=e, minlength=block_start.size)
    event_blocks = np.flatnonzero(deaths > 0)
    start = block_start[event_blocks]
    d = deaths[event_blocks].astype(np.int64)
    n_rows = int(d.sum())
    row_time = np.repeat(np.arange(d.size), d)
    row_offset = np.cumsum(d) - d
    if ties == "efron":
        row_frac = (np.arange(n_rows) - row_offset[row_time]) / d[row_time]
        tied = np.flatnonzero(d > 1)
    elif ties == "breslow":
        row_frac = np.zeros(n_rows)
        tied = np.zeros(0, dtype=np.int64)
    else:
        raise ValueError(f"ties must be 'efron' or 'breslow', got {ties!r}")
    block_to_time = np.full(block_start.size, -1, dtype=np.int64)
    block_to_time[event_blocks] = np.arange(d.size)
    death_time = np.where(e > 0, block_to_time[block_id], -1)
    at_obs = np.searchsorted(start, np.arange(n), side="right")
    death_pos = np.flatnonzero(e > 0)
    first = int(start[0]) if start.size else n
    sum_indices = np.concatenate([np.arange(first, n), death_pos])
    sum_indptr = np.concatenate([start - first, [n - first], (n - first) + np.cumsum(d)])
    tied_rows = np.flatnonzero(np.isin(row_time, tied))
    tied_slot = np.full(d.size, -1, dtype=np.int64)
    tied_slot[tied] = np.arange(tied.size)
    tied_deaths = death_pos[tied_slot[death_time[death_pos]] >= 0]
    index = np.int32 if n + n_rows < 2**31 - 1 else np.int64
    return RiskSets(order, e, start, d, row_time, row_frac, row_offset, death_time, at_obs, death_pos, tied,
                    tied_rows, row_frac[tied_rows], np.cumsum(d[tied]) - d[tied], tied_deaths,
                    tied_slot[death_time[tied_deaths]], sum_indices.astype(index), sum_indptr.astype(index))


def group_index(group_sorted: np.ndarray, n_groups: int, n_sparse: int, rs: RiskSets) -> GroupIndex:
    """Index groups (already in sorted observation order, sparse groups numbered ``0..n_sparse-1``)."""
    g = np.asarray(group_sorted, dtype=np.int64)
    n = g.size
    perm = np.argsort(g, kind="stable")  # time order kept within a group
    gp = g[perm]
    first = np.ones(n, dtype=bool)
    first[1:] = gp[1:] != gp[:-1]
    counts = np.bincount(g, minlength=n_groups)
    ends = np.cumsum(counts)
    dense = np.zeros((n, n_groups - n_sparse))
    is_dense = g >= n_sparse
    dense[np.flatnonzero(is_dense), g[is_dense] - n_sparse] = 1.0
    n_times = rs.start.size
    in_sparse = np.flatnonzero(g < n_sparse)
    by_segment = _PairSums.build(in_sparse, g[in_sparse], rs.at_obs[in_sparse], (n_sparse, n_times + 1))
    tied_index = np.full(n_times, -1, dtype=np.int64)
    tied_index[rs.tied] = np.arange(rs.tied.size)
    dt = rs.death_time
    sparse_deaths = np.flatnonzero((g < n_sparse) & (dt >= 0))
    sparse_deaths = sparse_deaths[tied_index[dt[sparse_deaths]] >= 0]  # at tied times
    by_tied_death = _PairSums.build(sparse_deaths, g[sparse_deaths], tied_index[dt[sparse_deaths]],
                                    (n_sparse, rs.tied.size))
    # diagonal of the sparse block: in perm order, positions (in [0, cumsum(alpha)]) of the observation's
    # time and of the previous member's time (0 for a group's first member)
    perm_seg = rs.at_obs[perm]
    perm_prev_seg = np.zeros(n, dtype=np.int64)
    perm_prev_seg[1:] = perm_seg[:-1]
    perm_prev_seg[first] = 0
    dtp = dt[perm]
    # deaths of sparse groups at tied times (elsewhere the Efron fractions are 0)
    dpos = np.flatnonzero((dtp >= 0) & (gp < n_sparse))
    dpos = dpos[tied_index[dtp[dpos]] >= 0]
    key_change = np.ones(dpos.size, dtype=bool)
    key_change[1:] = (gp[dpos[1:]] != gp[dpos[:-1]]) | (dtp[dpos[1:]] != dtp[dpos[:-1]])
    bstart = np.flatnonzero(key_change)
    return GroupIndex(g, n_groups, n_sparse, perm, ends[gp], dense, np.concatenate([[0], ends[:n_sparse]]),
                      by_segment, by_tied_death, gp, perm_seg, perm_prev_seg, dpos, bstart, gp[dpos[bstart]],
                      tied_index[dtp[dpos[bstart]]])


# ----------------------------------------------------------------------------- value
def cox_loglik(eta: Any, rs: RiskSets, xp: Any = np) -> Any:
    """Log partial likelihood at the sorted linear predictor ``eta`` (any array namespace ``xp``).

    Written with cumulative sums and gathers only, so ``jax.numpy`` can differentiate it.
    """
    shift = xp.max(eta)
    r = xp.exp(eta - shift)
    rc = xp.cumsum(r[::-1])[::-1]
    cs = xp.concatenate([xp.zeros(1, dtype=r.dtype), xp.cumsum(r)])
    s0 = rc[rs.start]
    s0d = cs[rs.start + rs.n_deaths] - cs[rs.start]
    den = s0[rs.row_time] - rs.row_frac * s0d[rs.row_time]
    return xp.sum(rs.event * eta) - xp.sum(xp.log(den)) - rs.row_time.size * shift


# ----------------------------------------------------------------------------- derivatives
def _sum_matrix(r: np.ndarray, rs: RiskSets) -> Any:
    """The (2K x n) block/death sum matrix of :class:`RiskSets` with the risk weights ``r`` as values."""
    n_times = rs.start.size
    return scipy.sparse.csr_matrix((r[rs.sum_indices], rs.sum_indices, rs.sum_indptr), shape=(2 * n_times, r.size))


def _risk_and_death(block_sums: np.ndarray, n_times: int) -> tuple[np.ndarray, np.ndarray]:
    """Risk-set sums (reverse cumulative sums of the K block sums) and the K death sums."""
    return np.cumsum(block_sums[n_times - 1::-1], axis=0)[::-1], block_sums[n_times:]


def _by_time(a: np.ndarray, rs: RiskSets) -> np.ndarray:
    """Sum event-row values ``a`` (D, ...) over the rows of each event time (rows are time-ordered)."""
    return np.add.reduceat(a, rs.row_offset, axis=0)


def _by_tied_time(a: np.ndarray, rs: RiskSets) -> np.ndarray:
    """Sum ``f * a`` over the event rows of each tied time (``a``: one value per event row, ``f`` the
    Efron fraction), one value per entry of ``RiskSets.tied``."""
    return np.add.reduceat(rs.tied_frac * a[rs.tied_rows], rs.tied_row_offset)


def _cum_at_obs(per_time: np.ndarray, rs: RiskSets) -> np.ndarray:
    """For each observation, the sum of ``per_time`` over the event times at or before its time."""
    c = np.empty((per_time.shape[0] + 1,) + per_time.shape[1:])
    c[0] = 0.0
    np.cumsum(per_time, axis=0, out=c[1:])
    return c[rs.at_obs]


class CoxDerivatives(NamedTuple):
    """Log partial likelihood, its gradient and (minus) Hessian blocks; see :func:`cox_derivatives`."""

    loglik: float
    grad_sparse: np.ndarray  # (q_s,)
    grad_dense: np.ndarray  # (m,)
    hess_sparse: np.ndarray  # (q_s,) diagonal of the sparse-group block
    hess_cross: np.ndarray  # (q_s, m)
    hess_dense: np.ndarray  # (m, m)


class _Curvature(NamedTuple):
    """What a product with the exact information needs, kept from one derivative pass."""

    r: np.ndarray  # (n,) risk weights exp(eta - shift)
    w: np.ndarray  # (n,) r * h, the diagonal weights of Z' diag(w) Z
    inv2: np.ndarray  # (D,) 1 / den^2 per event row
    sums: Any  # the (2K x n) block/death sum matrix with values r (see RiskSets)


def cox_derivatives(eta: np.ndarray, rs: RiskSets, dense: np.ndarray, groups: GroupIndex | None) -> CoxDerivatives:
    r"""Log partial likelihood, score and information for sparse group columns plus dense columns.

    Parameters
    ----------
    eta : (n,) sorted linear predictor.
    rs : :class:`RiskSets`.
    dense : (n, m) sorted dense design columns (dense group indicators first, then covariates).
    groups : :class:`GroupIndex` or None (no sparse groups).

    Returns
    -------
    CoxDerivatives
        ``hess_*`` are blocks of *minus* the Hessian (the information); the block between two sparse
        groups is reduced to its diagonal (exact values), as coxme's sparse ``bdsmatrix``.

    Notes
    -----
    With :math:`S_k, S^D_k` the risk-set and death sums of :math:`r z` at event time k and
    :math:`\alpha_k, \beta_k, \gamma_k = \sum_l (1, f_l, f_l^2) / \mathrm{den}_{kl}^2`,
    :math:`M^\top M = \sum_k \alpha_k S S^\top - \beta_k (S S^{D\top} + S^D S^\top) + \gamma_k
    S^D S^{D\top}`, so no per-death row of M is formed: the cost is one pass over the n x m design
    plus O(K m^2). The 2 x 2 weight matrix of each event time is positive semi-definite (Cauchy-Schwarz),
    so :math:`M^\top M = U^\top U + V^\top V` with :math:`U_k = \sqrt{\alpha_k} S_k - (\beta_k /
    \sqrt{\alpha_k}) S^D_k` and :math:`V_k = \sqrt{\gamma_k - \beta_k^2/\alpha_k}\, S^D_k` (only tied
    times have :math:`\beta_k, \gamma_k \neq 0`): two symmetric rank-k products.
    """
    return _derivatives(eta, rs, dense, groups)[0]


class _Workspace:
    """Scratch arrays reused by the derivative passes of one fit.

    A pass makes a few (n x m) and (K x m) temporaries, several MB each at 40,000 rows. Allocated afresh,
    they are mapped and faulted in again on every pass (the allocator hands large freed blocks back to
    the system), which cost as much as the arithmetic; kept here they are touched once. Only
    temporaries that no result refers to live here.
    """

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        a = self._arrays.get(name)
        if a is None or a.shape != shape:
            a = self._arrays[name] = np.empty(shape)
        return a


def _derivatives(eta: np.ndarray, rs: RiskSets, dense: np.ndarray, groups: GroupIndex | None,
                 work: _Workspace | None = None) -> tuple[CoxDerivatives, _Curvature]:
    work = _Workspace() if work is None else work
    n_times = rs.start.size
    m = dense.shape[1]
    shift = eta.max()
    r = np.exp(eta - shift)
    sums = _sum_matrix(r, rs)
    s0, s0d = _risk_and_death(np.add.reduceat(sums.data, rs.sum_indptr[:-1]), n_times)
    tied = rs.tied
    frac = rs.row_frac
    den = s0[rs.row_time]
    if tied.size:
        den -= frac * s0d[rs.row_time]
    loglik = float(eta[rs.deaths].sum() - np.log(den).sum() - den.size * shift)
    inv = 1.0 / den
    inv2 = inv * inv
    alpha = _by_time(inv2, rs)
    h = _cum_at_obs(_by_time(inv, rs), rs)
    if tied.size:
        # Efron: a death's own event rows weigh (1 - f)
        h[rs.tied_deaths] -= _by_tied_time(inv, rs)[rs.tied_death_slot]
        beta = _by_tied_time(inv2, rs)
        gamma = np.add.reduceat(rs.tied_frac**2 * inv2[rs.tied_rows], rs.tied_row_offset)
    w = r * h
    resid = rs.event - w

    block_sums = sums @ dense
    s1d = block_sums[n_times:]
    s1 = work.get("risk", (n_times, m))
    np.cumsum(block_sums[n_times - 1::-1], axis=0, out=s1[::-1])
    root = np.sqrt(alpha)
    u = np.multiply(s1, root[:, None], out=work.get("u", (n_times, m)))
    if tied.size:
        s1t, s1dt = s1[tied], s1d[tied]
        u[tied] -= s1dt * (beta / root[tied])[:, None]
        v = s1dt * np.sqrt(np.maximum(gamma - beta * beta / alpha[tied], 0.0))[:, None]
        mtm = u.T @ u + v.T @ v
    else:
        mtm = u.T @ u
    sw = np.multiply(dense, np.sqrt(np.maximum(w, 0.0))[:, None], out=work.get("sw", dense.shape))
    hess_dense = sw.T @ sw
    hess_dense -= mtm
    grad_dense = dense.T @ resid
    cur = _Curvature(r, w, inv2, sums)

    if groups is None or groups.n_sparse == 0:
        empty = np.zeros(0)
        return CoxDerivatives(loglik, empty, grad_dense, empty, np.zeros((0, dense.shape[1])), hess_dense), cur

    qs = groups.n_sparse
    grad_all = np.bincount(groups.group, weights=resid, minlength=groups.n_groups)
    gram_all = np.bincount(groups.group, weights=w, minlength=groups.n_groups)
    # cross terms with dense columns: sum over a group's observations of r_i (h_i z_i - C_i), where
    # C_i = sum over the event rows whose risk set holds i of c_ikl m_kl / den_kl:
    # sum_l m_kl / den_kl cumulated over event times (row j: the first j times), and sum_l f m_kl /
    # den_kl per tied event time; summed over a group's observations by (group x time) sparse matrices
    p_sum = np.multiply(s1, alpha[:, None], out=u)  # u is no longer needed
    if tied.size:
        p_sum[tied] -= s1dt * beta[:, None]
    cm = work.get("cm", (n_times + 1, m))
    cm[0] = 0.0
    np.cumsum(p_sum, axis=0, out=cm[1:])
    pattern = groups.perm[:groups.sparse_indptr[-1]]
    indicator_w = scipy.sparse.csr_matrix((w[pattern], pattern, groups.sparse_indptr), shape=(qs, eta.size))
    cross = indicator_w @ dense
    cross -= groups.by_segment.matrix(r) @ cm
    if tied.size:
        cross += groups.by_tied_death.matrix(r) @ (s1t * beta[:, None] - s1dt * gamma[:, None])
    # diagonal of M_b' M_b: per group, sum over event rows of (a_kj - f e_kj)^2 / den^2 with a_kj
    # the group's risk-set sum (a step function of time) and e_kj its deaths' sum at t_k
    ca = np.empty(n_times + 1)
    ca[0] = 0.0
    np.cumsum(alpha, out=ca[1:])
    rp = r[groups.perm]
    rcs = np.empty(rp.size + 1)
    rcs[-1] = 0.0
    np.cumsum(rp[::-1], out=rcs[-2::-1])
    within = rcs[:-1] - rcs[groups.group_end]  # group's risk-set sum from this member on
    mm_diag = np.bincount(groups.perm_group, weights=within**2 * (ca[groups.perm_seg] - ca[groups.perm_prev_seg]),
                          minlength=groups.n_groups)
    if groups.death_pos.size:
        # only tied times carry f != 0 (beta, gamma are zero elsewhere)
        e_sum = np.add.reduceat(rp[groups.death_pos], groups.death_block)
        first = groups.death_pos[groups.death_block]
        k = groups.death_block_tied
        mm_diag += np.bincount(groups.death_block_group,
                               weights=-2.0 * within[first] * e_sum * beta[k] + e_sum**2 * gamma[k],
                               minlength=groups.n_groups)
    hess_sparse = (gram_all - mm_diag)[:qs]
    return CoxDerivatives(loglik, grad_all[:qs], grad_dense, hess_sparse, cross, hess_dense), cur


# ----------------------------------------------------------------------------- penalised Newton
class PenalizedFit(NamedTuple):
    """Mode of the penalised partial likelihood at a fixed variance, and what the Laplace step needs."""

    b: np.ndarray  # (q,) random effects, sparse groups first
    beta: np.ndarray  # (p,) fixed effects (in the scale of the dense columns given)
    loglik: float  # partial likelihood at the mode
    penalized: float  # loglik - b'b / (2 sigma2)
    logdet_bb: float  # log det of the random-effect block of minus the Hessian (incl. penalty)
    cov_beta: np.ndarray  # (p, p) beta block of the inverse of minus the full penalised Hessian
    n_iter: int
    converged: bool
    # d(b, beta)/d log(sigma2) at the mode (implicit function theorem), when asked for: a first-order
    # predictor of the mode at a nearby variance (warm start of the variance search)
    tangent: np.ndarray | None = None
    # sum over groups of b_j^2 + 1 / H_jj (diagonal of the penalised information): sigma2 * q at an
    # EM-type fixed point, used only to choose the first variances to try
    em_sum: float = float("nan")


class _Blocks(NamedTuple):
    """Factored penalised information with coxme's sparse approximation (diagonal sparse-group block)."""

    a: np.ndarray  # (q_s,) diagonal of the sparse-group block, penalty included
    bs: np.ndarray  # (q_s, m) cross block divided by a
    chol: tuple[np.ndarray, bool]  # Cholesky factor of the Schur complement on the dense columns
    cross: np.ndarray  # (q_s, m) cross block


def _factor_blocks(d: CoxDerivatives, qd: int, pen: float) -> _Blocks:
    a = d.hess_sparse + pen
    c = d.hess_dense.copy()
    idx = np.arange(qd)
    c[idx, idx] += pen
    bs = d.hess_cross / a[:, None]
    schur = c - d.hess_cross.T @ bs
    return _Blocks(a, bs, _cholesky_ridged(schur), d.hess_cross)


def _solve_approx(f: _Blocks, v: np.ndarray) -> np.ndarray:
    """Solve with the approximate (sparse-diagonal) information: coxme's Newton step, our preconditioner."""
    qs = f.a.size
    vs, vd = v[:qs], v[qs:]
    xd = scipy.linalg.cho_solve(f.chol, vd - f.bs.T @ vs, check_finite=False)
    return np.concatenate([(vs - f.cross @ xd) / f.a, xd])


def _information_product(v: np.ndarray, cur: _Curvature, rs: RiskSets, dense: np.ndarray, groups: GroupIndex,
                         pen: float) -> np.ndarray:
    r"""Exact penalised information (no sparse approximation) times ``v`` = (sparse groups, dense columns).

    With :math:`u = Zv`: :math:`Z^\top(w u - r\,C)` + penalty, where :math:`y = Mu` are the event rows'
    risk-set sums of :math:`r u` (Efron-weighted) over den, and :math:`C_i` sums :math:`c_{ikl} y_{kl} /
    \mathrm{den}_{kl}` over the event rows whose risk set holds i -- the same reverse cumulative sums as
    the gradient, so one product costs O(n m), not O(n q).
    """
    qs = groups.n_sparse
    qd = groups.n_groups - qs
    vs, vd = v[:qs], v[qs:]
    u = dense @ vd
    if qs:
        u += (vs if qd == 0 else np.concatenate([vs, np.zeros(qd)]))[groups.group]
    s, sd = _risk_and_death(cur.sums @ u, rs.start.size)
    y = s[rs.row_time]
    if rs.tied.size:
        y -= rs.row_frac * sd[rs.row_time]
    y *= cur.inv2
    c = _cum_at_obs(_by_time(y, rs), rs)
    if rs.tied.size:
        c[rs.tied_deaths] -= _by_tied_time(y, rs)[rs.tied_death_slot]
    c *= cur.r
    t = cur.w * u
    t -= c
    out = np.empty(v.size)
    out[qs:] = dense.T @ t
    out[qs:qs + qd] += pen * vd[:qd]
    if qs:
        out[:qs] = np.bincount(groups.group, weights=t, minlength=groups.n_groups)[:qs]
        out[:qs] += pen * vs
    return out


def _newton_direction(g: np.ndarray, f: _Blocks, cur: _Curvature, rs: RiskSets, dense: np.ndarray,
                      groups: GroupIndex | None, pen: float, max_cg: int, rtol2: float | None = None,
                      guess: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Exact Newton direction by conjugate gradients preconditioned with the sparse-approximation solve.

    The preconditioner differs from the information only by the off-diagonal sparse-group terms (each
    group's share of a risk set is small), so a few iterations suffice. Forcing term (Eisenstat-Walker
    style): the relative residual (preconditioned norm) is driven below ``min(0.01, sqrt(decrement))``
    but not below 1e-5: the outer iteration is quadratic until the error is ~1e-5 of the step, and
    contracts 1e5-fold per step after that, far below the stopping tolerance.
    """
    x = _solve_approx(f, g)
    if groups is None or groups.n_sparse == 0:
        return x, 0  # no approximation: the block solve is the exact Newton step
    gpg = float(g @ x)
    if rtol2 is None:
        rtol2 = max(min(1e-4, 0.5 * gpg), 1e-10)
    if guess is not None:
        x = guess.copy()
    res = g - _information_product(x, cur, rs, dense, groups, pen)
    z = _solve_approx(f, res)
    rz = float(res @ z)
    direction = z
    it = 0
    while it < max_cg and rz > rtol2 * gpg:
        it += 1
        hp = _information_product(direction, cur, rs, dense, groups, pen)
        curv = float(direction @ hp)
        if not curv > 0:
            break
        step = rz / curv
        x = x + step * direction
        res = res - step * hp
        z = _solve_approx(f, res)
        rz_new = float(res @ z)
        direction = z + (rz_new / rz) * direction
        rz = rz_new
    return x, it


def _cholesky_ridged(a: np.ndarray) -> tuple[np.ndarray, bool]:
    """Cholesky factor of ``a``; if it is not positive definite, of ``a + ridge I`` (smallest ridge
    tried from 1e-10 up, relative to the largest diagonal element). coxme's generalised Cholesky
    zeroes such pivots instead; either only matters far from the mode under the sparse approximation."""
    try:
        return scipy.linalg.cho_factor(a, lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        pass
    scale = max(float(np.abs(np.diag(a)).max(initial=0.0)), 1.0)
    for k in range(-10, 3):
        try:
            return scipy.linalg.cho_factor(a + (scale * 10.0**k) * np.eye(a.shape[0]), lower=True,
                                           check_finite=False)
        except np.linalg.LinAlgError:
            continue
    raise np.linalg.LinAlgError("the penalised information matrix is not positive definite")


def fit_penalized(
    x: np.ndarray,
    rs: RiskSets,
    groups: GroupIndex | None,
    sigma2: float,
    init_b: np.ndarray | None = None,
    init_beta: np.ndarray | None = None,
    *,
    max_iter: int = 50,
    tol: float = 1e-9,
    max_cg: int = 50,
    tangent: bool = False,
    tangent_guess: np.ndarray | None = None,
    workspace: _Workspace | None = None,
) -> PenalizedFit:
    r"""Maximise :math:`\ell(\beta, b) - b^\top b / (2\sigma^2)` by Newton-Raphson (step halving).

    ``x`` (n, p) is the sorted fixed-effect design. With ``groups`` None there is no random effect and
    this is the ordinary Cox fit. Iterates stop when the Newton decrement :math:`g^\top H^{-1} g / 2`
    falls below ``tol`` (absolute, in log-likelihood units). After each step the random effects are
    recentred to mean zero (coxme does the same): the partial likelihood is invariant to a common
    shift, so recentring only lowers the penalty, and the mode has mean zero.

    Newton steps use the *exact* information (conjugate gradients with products in O(n m), at most
    ``max_cg`` per step, preconditioned by the sparse-approximation solve), so the iteration converges
    quadratically to the exact mode. coxme steps with the approximate information (linear convergence,
    same mode); the approximation is kept where coxme uses it: the log-determinant and the variances.

    ``tangent=True`` also returns :math:`d(b, \beta)/d\log\sigma^2 = H^{-1} (b/\sigma^2, 0)` at the mode,
    solved by conjugate gradients from ``tangent_guess`` when given (e.g. the tangent at a nearby
    variance) instead of the preconditioner's solve. ``workspace`` (a ``_Workspace``): scratch arrays
    to reuse across the fits of one model (one is made when not given).
    """
    n, p = x.shape
    workspace = _Workspace() if workspace is None else workspace
    q = 0 if groups is None else groups.n_groups
    qs = 0 if groups is None else groups.n_sparse
    qd = q - qs
    dense = x if qd == 0 else np.hstack([groups.dense_columns, x])
    pen = 0.0 if q == 0 else 1.0 / sigma2
    b = np.zeros(q) if init_b is None else np.asarray(init_b, dtype=float).copy()
    beta = np.zeros(p) if init_beta is None else np.asarray(init_beta, dtype=float).copy()

    def eta_of(b: np.ndarray, beta: np.ndarray) -> np.ndarray:
        e = x @ beta
        return e + b[groups.group] if q else e

    prev = None
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        d, cur = _derivatives(eta_of(b, beta), rs, dense, groups, workspace)
        ppl = d.loglik - 0.5 * pen * float(b @ b)
        if prev is not None and not ppl >= prev[0] - 1e-10 * (1.0 + abs(prev[0])):
            # worse (or not finite): halve the step back towards the last accepted point
            b, beta = 0.5 * (b + prev[1]), 0.5 * (beta + prev[2])
            continue
        gd = d.grad_dense.copy()
        gd[:qd] -= pen * b[qs:]
        g = np.concatenate([d.grad_sparse - pen * b[:qs], gd])
        blocks = _factor_blocks(d, qd, pen)
        step, _ = _newton_direction(g, blocks, cur, rs, dense, groups, pen, max_cg)
        decrement = 0.5 * float(g @ step)
        prev = (ppl, b, beta, d, blocks, cur)
        if decrement < tol:
            converged = True
            break
        b = b + np.concatenate([step[:qs], step[qs:qs + qd]])
        beta = beta + step[qs + qd:]
        if q:
            b -= b.mean()
    ppl, b, beta, d, blocks, cur = prev
    logdet = 0.0
    if q:
        logdet = float(np.log(blocks.a).sum()) + 2.0 * float(np.log(np.diag(blocks.chol[0])[:qd]).sum())
    inv_schur = scipy.linalg.cho_solve(blocks.chol, np.eye(qd + p), check_finite=False)
    cov = inv_schur[qd:, qd:]
    slope, em_sum = None, float("nan")
    if q:
        diag_dense = np.diag(d.hess_dense)[:qd] + pen
        em_sum = float(b @ b) + float((1.0 / blocks.a).sum()) + float((1.0 / diag_dense).sum())
    if tangent and q:
        rhs = np.concatenate([pen * b, np.zeros(p)])
        slope, _ = _newton_direction(rhs, blocks, cur, rs, dense, groups, pen, max_cg, rtol2=1e-10,
                                     guess=tangent_guess)
    return PenalizedFit(b, beta, d.loglik, ppl, logdet, cov, it, converged, slope, em_sum)


def integrated_loglik(fit: PenalizedFit, sigma2: float) -> float:
    r"""Laplace approximation of the integrated log partial likelihood (coxme's *Integrated*):

    .. math:: \mathrm{PPL}(\hat\beta, \hat b) - \tfrac12 \left(q \log\sigma^2 + \log\det H_{bb}\right)

    with :math:`H_{bb}` the random-effect block of minus the Hessian of the penalised partial
    likelihood, penalty included (coxme ``coxme.fit``: ``ilik <- fit$loglik[2] - .5*(sum(log(diag(
    gkmat))) + fit$hdet)``). The constant :math:`(2\pi)^{q/2}` cancels between the Gaussian density
    and the Laplace integral.
    """
    q = fit.b.size
    return fit.penalized - 0.5 * (q * np.log(sigma2) + fit.logdet_bb)

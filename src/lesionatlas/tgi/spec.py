"""The tumor growth model spec: hyper-parameters only, no data, no logic (values are checked in ``fit``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ..config import canonical_covariates

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Callable

    import pandas as pd

    from ..data.cohort import Cohort
    from .fit import TGIFit


@dataclass(frozen=True)
class TGIModel:
    """The paper's tumor growth inhibition model, fitted by SAEM (Monolix defaults where they exist).

    Parameters
    ----------
    error_model : {"proportional", "constant", "combined"}
        Residual error: ``b V``, ``a``, or ``a + b V`` (Monolix ``combined1``).
    censoring : {"m3", "drop"}
        ``"m3"``: rows below the limit enter the likelihood as P(DV < limit) (M3), or as an interval
        when the row has a ``lower_limit_mm3`` (Monolix ``LIMIT``); ``"drop"``: they are left out.
    limit_mm3 : float or None
        Upper bound of a censored row; None takes the cohort's ``meta["limit_mm3"]`` (default 200).
    baseline_observation : {"keep", "drop"}
        Whether the row that defines V0/T0 (day == T0) also enters the likelihood. Its prediction is V0
        itself, so it carries no information about Kg, Kd, F; ``"keep"`` reproduces a Monolix run on a
        dataset that contains the baseline row (its zero residual lowers b), ``"drop"`` leaves it out.
    covariates : mapping or sequence of str
        Covariates on the individual parameters, Monolix-style: shifts of the normal-scale mean,
        ``log Kg_i = log kg_pop + beta' x_i + eta_i`` (and the same for log Kd and
        logit F). Given as ``{"kg": ["organ", "log_v0"], "kd": ["organ"]}`` or as ``"param:name"``
        texts (``("kg:organ", "kg:log_v0", "kd:organ")``, the form kept: canonical order, no repeats).
        A name is a column of the lesions table, of the patients table (joined on ``patient_id``) or,
        for a measurements table, a column constant within each lesion; ``log_v0`` is the log baseline
        volume of the model. Text, category and true/false columns are categorical (one coefficient per
        level against the most frequent level, the reference); numbers are continuous, centred at their
        mean over the fitted lesions (so ``kg_pop`` is the typical value of a lesion at the reference
        level and the mean covariate). Rows ``beta_<param>_<name>[_<level>]`` of ``population``.
    covariance : {"diagonal", "full"}
        Covariance of the random effects: ``"diagonal"`` (independent log Kg, log Kd, logit F, the
        authors' model) or ``"full"`` (their correlations estimated too: rows ``corr_kg_kd``,
        ``corr_kg_f``, ``corr_kd_f`` of ``population``, with Fisher SEs; 3 more parameters in AIC/BIC).
    kg, kd, f, omega_kg, omega_kd, omega_f, a, b : float
        Initial values (the authors' Monolix project: Kg = Kd = 0.01/day, F = 0.1, omegas 1, b = 0.3).
    n_explore, n_smooth : int
        Iterations of the exploratory phase (step size 1, at most) and of the smoothing phase (1/k).
    auto_stop : bool
        End the exploratory phase early when the parameter trajectories are flat (checked between
        chunks after ``min_explore`` iterations: the mean of every normal-scale parameter over the last
        chunk differs from the previous chunk's by less than ``stop_tolerance``).
    min_explore, stop_tolerance : int, float
    n_burn_in : int
        MCMC-only iterations before the first M-step (Monolix: 5).
    n_chains : int or "auto"
        Markov chains per lesion; ``"auto"`` uses enough chains that lesions x chains >= 50 (Monolix).
    n_prior_kernel, n_component_kernel, n_joint_kernel : int
        Metropolis-Hastings moves per iteration of each kernel (Monolix's three).
    n_independent_kernel : int
        Moves per iteration of a fourth kernel: an independence sampler whose proposal is a Student-t
        (5 df) around each lesion's running mean, shaped by its running covariance (the last ~50
        iterations of its chain), so it follows the correlation of Kg, Kd and F within a lesion (as
        Monolix's and saemix's Laplace-proposal kernel does). With 2 moves, a lesion's chain of log Kg
        decorrelates about 3x faster and the Monte-Carlo SD of the estimate of Kg (over SAEM seeds, one
        data set) fell from about its standard error to a third of it. Off by default (0): over 200
        simulated data sets it also moved f_pop up by ~20% on average (a bias of +24% against +3%
        without it) along the flat Kg-F ridge of the likelihood, with -2LL equal within Monte-Carlo
        error, and it is not yet known which of the two lies nearer the maximum-likelihood estimate
        (``benchmarks/README.md``).
    annealing_factor : float
        During exploration a variance can shrink at most by this factor per iteration (0.95).
    max_relative_residual : float
        Outlier guard: predictions of uncensored rows are floored at DV / (1 + this), so no single
        observation can blow up b (see :mod:`lesionatlas.tgi.likelihood`).
    n_posterior_iter : int
        MCMC iterations at the estimate for conditional means/SDs and the Fisher information.
    standard_errors : bool
        Compute the Fisher information (Louis' formula, stochastic approximation).
    n_is_draws : int
        Importance-sampling draws per lesion for the log-likelihood (0: skip -2LL, AIC, BIC). The
        proposal is a multivariate Student-t with each lesion's conditional mean and covariance, mixed
        with the population distribution (``is_defensive``); each lesion's log-likelihood gets the
        second-order bias correction (:func:`lesionatlas.tgi.saem.importance_loglik`). Accuracy at paper
        scale against a long reference run: ``benchmarks/README.md``.
    is_defensive : float
        Share of the importance-sampling draws taken from the population distribution (a Student-t with
        its mean and covariance), in [0, 1). It keeps every weight bounded where a lesion's MCMC moments
        miss part of its conditional distribution; 0 gives the pure conditional Student-t.
    is_inflate : float
        Width of the conditional Student-t of the importance sampling relative to the MCMC conditional
        covariance (its scale is ``is_inflate**2`` times that covariance; 1 = that covariance itself).
        Wider than the MCMC moments removes most of the downward bias of the log of the mean weight; the
        measurements behind the default: ``benchmarks/README.md``.
    n_mode_steps : int
        Damped Newton steps of the conditional-mode search (at most: it stops once every lesion has
        converged).
    chunk_size : int
        Iterations per compiled chunk (progress is reported between chunks).
    precision : {"float64", "float32"}
        Floating-point precision of the fit, set in scope (never globally).
    """

    error_model: Literal["proportional", "constant", "combined"] = "proportional"
    censoring: Literal["m3", "drop"] = "m3"
    limit_mm3: float | None = None
    covariates: Any = ()
    baseline_observation: Literal["keep", "drop"] = "keep"
    covariance: Literal["diagonal", "full"] = "diagonal"
    kg: float = 0.01
    kd: float = 0.01
    f: float = 0.1
    omega_kg: float = 1.0
    omega_kd: float = 1.0
    omega_f: float = 1.0
    a: float = 1.0
    b: float = 0.3
    n_explore: int = 300
    n_smooth: int = 200
    auto_stop: bool = False
    min_explore: int = 150
    stop_tolerance: float = 0.02
    n_burn_in: int = 5
    n_chains: int | Literal["auto"] = "auto"
    n_prior_kernel: int = 2
    n_component_kernel: int = 2
    n_joint_kernel: int = 2
    n_independent_kernel: int = 0
    annealing_factor: float = 0.95
    max_relative_residual: float = 3.0
    n_posterior_iter: int = 200
    standard_errors: bool = True
    n_is_draws: int = 1000
    is_defensive: float = 0.2
    is_inflate: float = 1.5
    n_mode_steps: int = 50
    chunk_size: int = 50
    precision: Literal["float64", "float32"] = "float64"

    def __post_init__(self) -> None:
        object.__setattr__(self, "covariates", canonical_covariates(self.covariates))

    def fit(
        self,
        data: Cohort | pd.DataFrame,
        *,
        seed: int = 0,
        progress: Callable[[int, int, dict[str, Any]], None] | None = None,
    ) -> TGIFit:
        """Fit the model to the target lesions of ``data``; see :func:`lesionatlas.tgi.fit.fit_tgi`."""
        from .fit import fit_tgi

        return fit_tgi(self, data, seed=seed, progress=progress)


__all__ = ["TGIModel"]

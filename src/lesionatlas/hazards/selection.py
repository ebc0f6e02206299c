r"""Organ hazard ratios as the paper: two mixed Cox models, covariate selection by likelihood-ratio tests.

:func:`fit_organ_hazards` fits, for lesion response (target and non-target lesions) and for lesion
progression (all lesions, new ones included), the random-intercept Cox model

.. math:: h_{ij}(t) = h_0(t)\exp\bigl(\beta_{organ(ij)} + x_i\gamma + b_i\bigr), \qquad
          b_i \sim N(0, \sigma^2)

(coxme's ``Surv(time, event) ~ organ + covariates + (1 | patient)``) with :class:`MixedCox`, chooses the
covariates among the candidates by likelihood-ratio tests, reports the organ hazard ratios against a
reference organ, and repeats the final model within each treatment group with an organ x group
interaction test. The result is an :class:`OrganHazards`.

Decisions (where the paper is silent)
-------------------------------------
- **Selection** (``selection="forward"``, the default): start from ``organ``; at each step fit every
  remaining candidate added to the current model, take the one with the smallest LRT p-value, and add it
  when ``p < alpha``; stop when none qualifies. ``"backward"``: start from organ + every (estimable)
  candidate; at each step drop the candidate with the largest LRT p-value when ``p >= alpha``; stop when
  every remaining candidate has ``p < alpha``. ``organ`` is always in.
- **LRT**: twice the difference of coxme's integrated (Laplace) log-likelihoods; df is the difference in
  the number of fixed effects, so a categorical candidate enters or leaves as one block of
  ``levels - 1`` indicator terms.
- **Missing values**: each likelihood-ratio test compares the two nested models on the *same* rows, the
  rows complete for the larger model (complete-case per comparison, so a candidate with missing values
  costs rows only while it is being tested). The final model is refitted on the rows complete for its
  selected covariates. Rows with a missing organ are left out of everything (with a warning).
- **Covariate types**: boolean columns enter as 0/1 and numeric columns linearly (1 df each); string
  columns, and any column named in ``reference_levels``, are categorical with the given reference level,
  by default the most frequent level (ties: the first in sorted order). Candidates that are all missing or
  constant in a model's rows are skipped with a note; categorical levels without any event among a
  comparison's rows leave that comparison (their hazard ratio would be 0; MixedCox takes the same limit).
- **Organs without events** in a model are dropped from that model with an
  :class:`~lesionatlas.errors.ExclusionWarning` and listed in ``dropped_organs``. If the reference organ has
  no lesions (or no events in a model), the organ with the most lesions among those with events in every
  model is used instead, with a warning.
- **p-values** of the organ rows are Wald p-values of the final model (coxme's printout); set
  ``organ_p_value="lrt"`` for one likelihood-ratio test per organ (the organ merged into the reference;
  one more fit per organ). ``organ_tests`` always holds the LRT of the organ block as a whole and of the
  organ x group interaction.
- **Stratified models**: within each level of ``stratify_by`` the final model is refitted (organ + the
  selected covariates, minus the stratifying column, covariates constant in the stratum and covariates
  collinear there with organ and the covariates kept before them, in the order selected -- e.g. a
  treatment given in one line of therapy only within the group; the covariates left out are listed in
  ``stratified.covariates_left_out`` and in ``notes``). The
  interaction LRT compares organ + covariates + group with the same model plus the organ x group
  indicator products, on the same rows; a product is left out when its organ has no events in the group
  or in the reference group (its coefficient would be infinite), and the df counts only the products in.
- Intermediate fits of the selection skip the profile interval of the variance; the final pooled fits
  use the ``mixed_cox`` spec as given. Nothing random is drawn: ``seed`` is recorded for the manifest.
- **Speed**: each fit starts from a related fit (``MixedCox.fit(start=...)``): a candidate model from
  the current model of its step, a stratified or interaction model from the final pooled one, and the
  final model (with its profile interval) reuses the variance search of the same model in the
  selection. The tolerances are those of a cold fit, so the numbers agree with cold fits to within them
  (LRT statistics to about 1e-5).

References
----------
Zhou J, et al. (2024). Mapping lesion-specific response and progression dynamics and inter-organ
variability in metastatic colorectal cancer. Nature Communications 15. (Methods, "Random-effect Cox
models"; Fig. 3a,b,e,f.)
"""
from __future__ import annotations

import contextvars
import dataclasses
import hashlib
import json
import math
import platform
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy
import scipy.stats

from ..errors import ConfigError, ConvergenceWarning, DataError, ExclusionWarning
from ..io import write_result_dir
from .mixed_cox import MixedCox, MixedCoxFit

__all__ = ["DEFAULT_CANDIDATES", "OrganHazards", "fit_organ_hazards"]

Model = Literal["response", "progression"]
MODELS: tuple[Model, ...] = ("response", "progression")
#: The paper's candidate covariates (columns of ``LesionEvents.table``).
DEFAULT_CANDIDATES: tuple[str, ...] = ("treatment", "age", "bmi", "sex", "race", "prior_surgery", "line")

HAZARD_RATIO_COLUMNS = ("model", "organ", "hazard_ratio", "ci_lower", "ci_upper", "p_value", "n_lesions",
                        "n_events", "coef", "se", "reference")
COVARIATE_COLUMNS = ("model", "covariate", "term", "coef", "se", "hazard_ratio", "ci_lower", "ci_upper",
                     "p_value")
STEP_COLUMNS = ("model", "step", "term", "lrt_statistic", "df", "p_value", "decision", "n_lesions", "reason")
STRATIFIED_COLUMNS = ("model", "group", "organ", "hazard_ratio", "ci_lower", "ci_upper", "p_value",
                      "n_lesions", "n_events", "coef", "se", "reference", "covariates_left_out")
TEST_COLUMNS = ("model", "test", "lrt_statistic", "df", "p_value", "n_lesions", "n_events")
MODEL_COLUMNS = ("model", "stratum", "n_lesions", "n_events", "n_patients", "random_effect_variance",
                 "random_effect_ci_lower", "random_effect_ci_upper", "loglik_integrated", "covariates")
DROPPED_COLUMNS = ("model", "stratum", "organ", "n_lesions", "n_events", "reason")
SUMMARY_COLUMNS = ("model", "kind", "term", "hazard_ratio", "ci_lower", "ci_upper", "p_value", "n_lesions",
                   "n_events")
PHENOTYPE_INPUT_COLUMNS = ("organ", "response_hr", "response_ci_lower", "response_ci_upper", "progression_hr",
                           "progression_ci_lower", "progression_ci_upper", "response_p_value",
                           "progression_p_value", "n_lesions")

_TABLES = ("hazard_ratios", "covariates", "selection_steps", "stratified", "organ_tests", "models",
           "dropped_organs")
_ORGAN = "organ"
_DURATION, _EVENT, _GROUP = "duration_day", "event", "patient_id"
SCHEMA = "lesionatlas.organ_hazards/1"


# ============================================================================================ the stage
def fit_organ_hazards(
    events: Any,
    *,
    reference_organ: str = "abdominal",
    candidates: Sequence[str] = DEFAULT_CANDIDATES,
    selection: Literal["forward", "backward"] = "forward",
    alpha: float = 0.05,
    stratify_by: str | None = "treatment_group",
    seed: int = 0,
    models: Sequence[Model] = MODELS,
    reference_levels: Mapping[str, Any] | None = None,
    organ_p_value: Literal["wald", "lrt"] = "wald",
    mixed_cox: MixedCox | None = None,
    progress: Callable[[int], None] | None = None,
) -> OrganHazards:
    r"""Organ hazard ratios of lesion response and progression, with covariates chosen by LRTs.

    Parameters
    ----------
    events : LesionEvents
        From :func:`lesionatlas.events.derive_events` (its ``model_table("response" | "progression")``).
    reference_organ : str
        Organ with hazard ratio 1 (the paper: ``abdominal``). When it has no lesions, or no events in a
        model, the organ with the most lesions among those with events in every model is used instead
        (:class:`~lesionatlas.errors.ExclusionWarning`).
    candidates : sequence of str
        Candidate covariates, columns of ``events.table`` (the paper: treatment, age, BMI, sex, race,
        prior surgery, line of therapy). ``()`` fits organ only.
    selection : {"forward", "backward"}
        Forward selection or backward elimination by likelihood-ratio tests (module docstring).
    alpha : float
        A candidate is kept when its LRT p-value is below ``alpha`` (0.05 as the paper).
    stratify_by : str or None
        Column whose levels get their own organ hazard ratios, with an organ x group interaction LRT
        (the paper: chemotherapy alone vs antibody + chemotherapy). ``None``: no stratified models.
    seed : int
        Recorded in the result; the fit draws no random numbers.
    models : sequence of {"response", "progression"}
        Which models to fit (both by default; :meth:`OrganHazards.phenotype_input` needs both).
    reference_levels : mapping, optional
        ``{column: level}``: reference levels of categorical candidates (and of ``stratify_by``); a
        numeric column named here is made categorical. Default: the most frequent level.
    organ_p_value : {"wald", "lrt"}
        p-values of the organ rows: Wald (coxme's printout) or one LRT per organ.
    mixed_cox : MixedCox, optional
        The model spec (default ``MixedCox()``); the selection's intermediate fits skip the profile
        interval of the variance.
    progress : callable, optional
        ``progress(n_fits)``, called after each mixed Cox fit with the number made so far (the total is
        not known in advance: it depends on the selection).

    Returns
    -------
    OrganHazards

    Raises
    ------
    ConfigError
        Bad option values, candidate or stratifying columns not in the table, a reference level not in
        the data.
    DataError
        Fewer than two organs with events, no events at all.

    Warns
    -----
    ExclusionWarning
        Organs without events (dropped from a model or a stratum), a reference organ replaced, rows with
        a missing organ, strata that cannot be fitted.
    ConvergenceWarning
        Raised by the final fits (repeated with the model's name), or once when fits of the selection had
        convergence messages (listed in ``notes``).

    Notes
    -----
    The LRT of nested models :math:`M_0 \subset M_1` fitted to the same rows is
    :math:`2\{\ell_I(M_1) - \ell_I(M_0)\} \sim \chi^2_{p_1 - p_0}`, :math:`\ell_I` the Laplace-integrated
    partial log-likelihood (coxme's ``anova``). See the module docstring for every convention.

    References
    ----------
    Zhou et al. (2024), Nature Communications, Methods and Fig. 3.

    Examples
    --------
    >>> from lesionatlas.data import simulate_cohort
    >>> from lesionatlas.events import derive_events
    >>> sim = simulate_cohort("mcrc", seed=0, n_patients=150)
    >>> ev = derive_events(sim.cohort, sim.truth.table("lesions"))
    >>> oh = fit_organ_hazards(ev, candidates=("line",), stratify_by=None)  # doctest: +SKIP
    >>> oh.hazard_ratios.columns[:4].tolist()  # doctest: +SKIP
    ['model', 'organ', 'hazard_ratio', 'ci_lower']
    """
    token = _PROGRESS.set(None if progress is None else [0, progress])
    try:
        return _fit_organ_hazards(events, reference_organ=reference_organ, candidates=candidates,
                                  selection=selection, alpha=alpha, stratify_by=stratify_by, seed=seed,
                                  models=models, reference_levels=reference_levels, organ_p_value=organ_p_value,
                                  mixed_cox=mixed_cox)
    finally:
        _PROGRESS.reset(token)


#: the progress callback of the running :func:`fit_organ_hazards` and its fit count
_PROGRESS: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar("hazards_progress", default=None)


def _fit_organ_hazards(
    events: Any,
    *,
    reference_organ: str,
    candidates: Sequence[str],
    selection: str,
    alpha: float,
    stratify_by: str | None,
    seed: int,
    models: Sequence[Model],
    reference_levels: Mapping[str, Any] | None,
    organ_p_value: str,
    mixed_cox: MixedCox | None,
) -> OrganHazards:
    spec = mixed_cox if mixed_cox is not None else MixedCox()
    if not isinstance(spec, MixedCox):
        raise ConfigError(f"mixed_cox must be a MixedCox spec or None, got {type(spec).__name__}")
    if selection not in ("forward", "backward"):
        raise ConfigError(f"selection must be 'forward' or 'backward', got {selection!r}")
    if not (isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and 0 < alpha < 1):
        raise ConfigError(f"alpha must be a number in (0, 1), got {alpha!r}")
    if organ_p_value not in ("wald", "lrt"):
        raise ConfigError(f"organ_p_value must be 'wald' or 'lrt', got {organ_p_value!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    if isinstance(models, str):
        models = (models,)  # type: ignore[assignment]
    models = tuple(dict.fromkeys(models))
    bad_models = [m for m in models if m not in MODELS]
    if bad_models or not models:
        raise ConfigError(f"models must be a non-empty subset of ('response', 'progression'), got {models!r}")
    if isinstance(candidates, str):
        candidates = (candidates,)
    candidates = tuple(dict.fromkeys(candidates))
    reference_levels = dict(reference_levels or {})
    if not hasattr(events, "model_table") or not hasattr(events, "table"):
        raise ConfigError(f"events must be a LesionEvents (from derive_events), got {type(events).__name__}")
    columns = set(events.table.columns)
    reserved = {_ORGAN, _DURATION, _EVENT, _GROUP}
    clash = [c for c in candidates if c in reserved]
    if clash:
        raise ConfigError(f"candidates {clash} are reserved columns (organ, duration, event, patient); "
                          "organ is always in the models")
    missing = [c for c in candidates if c not in columns]
    if missing:
        raise ConfigError(f"candidate covariates {missing} are not columns of the events table; it has "
                          f"{sorted(columns)}", code="hazards-column")
    if stratify_by is not None and stratify_by not in columns:
        raise ConfigError(f"stratify_by={stratify_by!r} is not a column of the events table; it has "
                          f"{sorted(columns)} (or pass None)", code="hazards-column")
    if stratify_by is not None and stratify_by in reserved:
        raise ConfigError(f"stratify_by={stratify_by!r} cannot be a reserved column", code="hazards-column")
    select_spec = dataclasses.replace(spec, profile_ci=False)
    notes: list[str] = []

    # ---- model tables, rows without an organ
    tables: dict[str, pd.DataFrame] = {}
    for m in models:
        t = events.model_table(m)
        organ_missing = t[_ORGAN].isna().to_numpy(bool)
        if organ_missing.any():
            first = ", ".join(t.loc[organ_missing, "lesion_id"].astype(str).head(5))
            msg = (f"{m} model: {int(organ_missing.sum())} lesions have no organ and are left out "
                   f"(first: {first})")
            warnings.warn(msg, ExclusionWarning, stacklevel=2)
            notes.append(msg)
            t = t.loc[~organ_missing]
        t = t.assign(**{_ORGAN: t[_ORGAN].astype(str)})
        tables[m] = t.reset_index(drop=True)
        if not t[_EVENT].astype(bool).any():
            raise DataError(f"{m} model: there are no {m} events among {len(t)} lesions; a Cox model needs "
                            "events", code="hazards-no-events")

    # ---- the reference organ (one for all models)
    all_organs = events.table[_ORGAN].dropna().astype(str)
    with_events = {m: set(tables[m].loc[tables[m][_EVENT].astype(bool), _ORGAN]) for m in models}
    usable = set.intersection(*with_events.values())
    reference = str(reference_organ)
    why = None
    if reference not in set(all_organs):
        why = "has no lesions"
    else:
        lacking = [m for m in models if reference not in with_events[m]]
        if lacking:
            why = f"has no {' or '.join(lacking)} events"
    if why is not None:
        counts = all_organs[all_organs.isin(usable)].value_counts()
        if counts.empty:
            raise DataError("no organ has events in every model; organ hazard ratios cannot be estimated",
                            code="hazards-no-events")
        counts = counts.sort_index(kind="stable").sort_values(ascending=False, kind="stable")
        new_ref = str(counts.index[0])
        msg = (f"reference organ {reference!r} {why}; the organ with the most lesions, {new_ref!r} "
               f"({int(counts.iloc[0])} lesions), is the reference instead (pass reference_organ= to choose)")
        warnings.warn(msg, ExclusionWarning, stacklevel=2)
        notes.append(msg)
        reference = new_ref

    parts: dict[str, list[pd.DataFrame]] = {k: [] for k in _TABLES}
    fits: dict[str, MixedCoxFit] = {}
    selection_convergence: list[str] = []
    for m in models:
        out = _fit_one_model(
            m, tables[m], reference=reference, candidates=candidates, selection=selection, alpha=alpha,
            stratify_by=stratify_by, reference_levels=reference_levels, organ_p_value=organ_p_value,
            spec=spec, select_spec=select_spec, notes=notes, selection_convergence=selection_convergence,
        )
        for k in _TABLES:
            parts[k].append(out[k])
        fits[m] = out["fit"]
    if selection_convergence:
        msg = (f"{len(selection_convergence)} fits of the covariate selection reported convergence problems "
               f"(first: {selection_convergence[0]}); see OrganHazards.notes")
        warnings.warn(msg, ConvergenceWarning, stacklevel=2)
        notes.extend(selection_convergence)

    spec_cols = {"hazard_ratios": HAZARD_RATIO_COLUMNS, "covariates": COVARIATE_COLUMNS,
                 "selection_steps": STEP_COLUMNS, "stratified": STRATIFIED_COLUMNS, "organ_tests": TEST_COLUMNS,
                 "models": MODEL_COLUMNS, "dropped_organs": DROPPED_COLUMNS}
    result_tables = {k: _concat(parts[k], spec_cols[k]) for k in _TABLES}
    parameters = {
        "reference_organ": str(reference_organ), "candidates": list(candidates), "selection": selection,
        "alpha": float(alpha), "stratify_by": stratify_by, "seed": int(seed), "models": list(models),
        "reference_levels": {k: _jsonable(v) for k, v in reference_levels.items()},
        "organ_p_value": organ_p_value, "mixed_cox": _spec_dict(spec),
    }
    return OrganHazards(**result_tables, reference_organ=reference, parameters=parameters, notes=tuple(notes),
                        fits=fits)


# ============================================================================================ one model
@dataclass(frozen=True)
class _Design:
    frame: pd.DataFrame                  # duration_day, event (float), patient_id, organ, candidates, group
    kinds: dict[str, str]                # column -> "numeric" | "categorical"
    references: dict[str, Any]           # categorical column -> reference level


class _Fitter:
    """Fits on row subsets of one design, cached by (columns, rows, spec); warnings captured."""

    def __init__(self, design: _Design, model: str) -> None:
        self.d = design
        self.model = model
        self.cache: dict[tuple[Any, ...], MixedCoxFit] = {}
        self.event = design.frame[_EVENT].to_numpy(float) > 0

    def rows(self, cols: Sequence[str], base: np.ndarray | None = None) -> np.ndarray:
        """Rows complete for ``cols``, less the rows of categorical levels without events among them."""
        f = self.d.frame
        mask = f[list(cols)].notna().all(axis=1).to_numpy(bool) if cols else np.ones(len(f), dtype=bool)
        if base is not None:
            mask &= base
        for c in cols:
            if self.d.kinds.get(c) != "categorical":
                continue
            vals = f[c]
            per = pd.Series(self.event[mask]).groupby(vals[mask].to_numpy(), sort=False).sum()
            empty = per.index[per.to_numpy() == 0]
            if len(empty):
                mask &= ~vals.isin(list(empty)).to_numpy(bool)
        return mask

    @staticmethod
    def _key(cols: Sequence[str], mask: np.ndarray, spec: MixedCox, variant: str) -> tuple[Any, ...]:
        return (tuple(cols), hashlib.sha1(np.packbits(mask).tobytes()).hexdigest(), spec, variant)

    def cached(self, cols: Sequence[str], mask: np.ndarray, spec: MixedCox, variant: str = "") -> MixedCoxFit | None:
        """The fit of ``cols`` on ``mask`` rows with ``spec``, if it was made."""
        return self.cache.get(self._key(cols, mask, spec, variant))

    def fit(self, cols: Sequence[str], mask: np.ndarray, spec: MixedCox, context: str,
            sink: list[tuple[str, type[Warning], str]], frame: pd.DataFrame | None = None,
            variant: str = "", start: MixedCoxFit | None = None) -> MixedCoxFit:
        """Fit ``cols`` on ``mask`` rows (of ``frame`` when given: a modified design named by ``variant``),
        starting from the fit ``start`` of a related model (``MixedCox.fit(start=...)``)."""
        if frame is not None and not variant:
            raise ValueError("a modified frame needs a variant name for the cache")
        key = self._key(cols, mask, spec, variant)
        if key in self.cache:
            return self.cache[key]
        f = (self.d.frame if frame is None else frame).loc[mask, [_DURATION, _EVENT, _GROUP, *cols]]
        categorical = {c: self.d.references[c] for c in cols if self.d.kinds.get(c) == "categorical"}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit = spec.fit(f, duration_col=_DURATION, event_col=_EVENT, group_col=_GROUP, covariates=list(cols),
                           categorical=categorical, start=start)
        for w in caught:
            sink.append((context, w.category, str(w.message)))
        self.cache[key] = fit
        hook = _PROGRESS.get()
        if hook is not None:
            hook[0] += 1
            hook[1](hook[0])
        return fit

    def compare(self, small: Sequence[str], big: Sequence[str], spec: MixedCox, context: str,
                sink: list[tuple[str, type[Warning], str]], base: np.ndarray | None = None,
                start: MixedCoxFit | None = None) -> tuple[float, int, float, int, MixedCoxFit]:
        """LRT of ``small`` nested in ``big`` on the rows complete for ``big``. The fit not yet made starts
        from the other (a forward step fits the current model, then the one a covariate bigger; a
        backward step the other way round); ``start`` is where the first of the two starts."""
        mask = self.rows(big, base)
        if self.cached(big, mask, spec) is not None:
            f_big = self.fit(big, mask, spec, context, sink, start=start)
            f_small = self.fit(small, mask, spec, context, sink, start=f_big)
        else:
            f_small = self.fit(small, mask, spec, context, sink, start=start)
            f_big = self.fit(big, mask, spec, context, sink, start=f_small)
        stat, df, p = f_big.lrt(f_small)
        return stat, df, p, int(mask.sum()), f_big


def _fit_one_model(
    model: str, table: pd.DataFrame, *, reference: str, candidates: tuple[str, ...], selection: str,
    alpha: float, stratify_by: str | None, reference_levels: dict[str, Any], organ_p_value: str,
    spec: MixedCox, select_spec: MixedCox, notes: list[str], selection_convergence: list[str],
) -> dict[str, Any]:
    ev = table[_EVENT].astype(bool).to_numpy()
    # ---- organs without events
    per_organ = pd.DataFrame({"organ": table[_ORGAN], "event": ev}).groupby("organ", sort=True)["event"]
    n_les, n_ev = per_organ.size(), per_organ.sum()
    no_events = [str(o) for o in n_ev.index[n_ev.to_numpy() == 0]]
    dropped_rows = []
    if no_events:
        listing = ", ".join(f"{o!r} ({int(n_les[o])} lesions)" for o in no_events)
        msg = (f"{model} model: organ(s) {listing} have no {model} events, so their hazard ratio cannot be "
               f"estimated (it would be 0); they are left out of the {model} model and listed in "
               "OrganHazards.dropped_organs")
        warnings.warn(msg, ExclusionWarning, stacklevel=3)
        notes.append(msg)
        dropped_rows = [{"model": model, "stratum": "all", "organ": o, "n_lesions": int(n_les[o]), "n_events": 0,
                         "reason": f"no {model} events"} for o in no_events]
        table = table.loc[~table[_ORGAN].isin(no_events).to_numpy(bool)].reset_index(drop=True)
    if table[_ORGAN].nunique() < 2:
        raise DataError(f"{model} model: fewer than two organs with events ({sorted(table[_ORGAN].unique())}); "
                        "organ hazard ratios need at least two", code="hazards-organs")

    # ---- design: candidates converted, unusable ones skipped
    design, skipped = _design(table, model, candidates, stratify_by, reference_levels, reference)
    fitter = _Fitter(design, model)
    sink: list[tuple[str, type[Warning], str]] = []
    steps: list[dict[str, Any]] = []
    for c, reason in skipped:
        msg = f"{model} model: candidate {c!r} skipped: {reason}"
        notes.append(msg)
        steps.append(_step(model, 0, c, math.nan, math.nan, math.nan, "skipped", 0, reason))
    usable = [c for c in candidates if c not in dict(skipped)]

    # ---- selection
    if selection == "forward":
        selected = _forward(fitter, model, usable, alpha, select_spec, sink, steps)
    else:
        selected = _backward(fitter, model, usable, alpha, select_spec, sink, steps)
    for context, category, message in sink:
        if issubclass(category, ConvergenceWarning):
            selection_convergence.append(f"{model} model, {context}: {message}")
    sink.clear()

    # ---- final model
    cols = [_ORGAN, *selected]
    mask = fitter.rows(cols)
    final_sink: list[tuple[str, type[Warning], str]] = []
    # the selection fitted this model on these rows without the profile interval: the refit reuses its search
    fit = fitter.fit(cols, mask, spec, "final model", final_sink, start=fitter.cached(cols, mask, select_spec))
    rows = design.frame.loc[mask]
    hr = _organ_rows(fit, rows, reference, model, extra={})
    if organ_p_value == "lrt":
        hr["p_value"] = _organ_lrt_pvalues(fitter, cols, mask, reference, hr["organ"], select_spec, final_sink)
    cov = fit.summary()
    cov = cov[~cov["term"].str.startswith(f"{_ORGAN}[")].copy()
    cov.insert(0, "covariate", [_owner(t, selected) for t in cov["term"]])
    cov.insert(0, "model", model)

    tests: list[dict[str, Any]] = []
    n_events_final = int(rows[_EVENT].sum())
    try:
        stat, df, p, n, _ = fitter.compare(list(selected), cols, select_spec, "organ LRT", final_sink)
        tests.append({"model": model, "test": "organ", "lrt_statistic": stat, "df": df, "p_value": p,
                      "n_lesions": n, "n_events": n_events_final})
    except DataError as exc:
        notes.append(f"{model} model: the organ LRT could not be computed: {exc}")
    model_rows = [_model_row(model, "all", fit, rows, selected)]

    # ---- stratified
    strat_tables: list[pd.DataFrame] = []
    if stratify_by is not None:
        strat_tables, more_models, more_dropped, interaction = _stratified(
            fitter, model, cols, mask, selected, stratify_by, reference, select_spec, final_sink, notes, fit)
        model_rows += more_models
        dropped_rows += more_dropped
        if interaction is not None:
            tests.append(interaction)
    for context, category, message in final_sink:
        msg = f"{model} model ({context}): {message}"
        if issubclass(category, ConvergenceWarning):
            warnings.warn(msg, ConvergenceWarning, stacklevel=3)
        notes.append(msg)

    return {
        "hazard_ratios": hr,
        "covariates": cov.reset_index(drop=True),
        "selection_steps": pd.DataFrame(steps, columns=list(STEP_COLUMNS)),
        "stratified": _concat(strat_tables, STRATIFIED_COLUMNS),
        "organ_tests": pd.DataFrame(tests, columns=list(TEST_COLUMNS)),
        "models": pd.DataFrame(model_rows, columns=list(MODEL_COLUMNS)),
        "dropped_organs": pd.DataFrame(dropped_rows, columns=list(DROPPED_COLUMNS)),
        "fit": dataclasses.replace(fit, _warm=None),  # the result keeps no starting state
    }


def _design(table: pd.DataFrame, model: str, candidates: tuple[str, ...], stratify_by: str | None,
            reference_levels: dict[str, Any], reference_organ: str) -> tuple[_Design, list[tuple[str, str]]]:
    frame = pd.DataFrame({
        _DURATION: table[_DURATION].astype(float).to_numpy(),
        _EVENT: table[_EVENT].astype(bool).to_numpy().astype(float),
        _GROUP: table[_GROUP].astype(str).to_numpy(),
        _ORGAN: table[_ORGAN].astype(str).to_numpy(),
    })
    kinds: dict[str, str] = {_ORGAN: "categorical"}
    references: dict[str, Any] = {_ORGAN: reference_organ}
    skipped: list[tuple[str, str]] = []
    cols = list(candidates) + ([stratify_by] if stratify_by is not None and stratify_by not in candidates else [])
    for c in cols:
        values, kind = _convert(table[c], categorical=c in reference_levels, name=c)
        frame[c] = values
        kinds[c] = kind
        present = values.dropna()
        if c in candidates:
            if present.empty:
                skipped.append((c, f"all values are missing in the {model} table"))
                continue
            if present.nunique() < 2:
                skipped.append((c, f"constant ({present.iloc[0]!r}) in the {model} table"))
                continue
        if kind == "categorical" and not present.empty:
            if c in reference_levels:
                ref = reference_levels[c]
                if not (present == ref).any():
                    raise ConfigError(f"reference_levels[{c!r}] = {ref!r} is not a level of {c}; levels are "
                                      f"{sorted(map(str, present.unique()))}", code="hazards-reference")
                references[c] = ref
            else:
                counts = present.value_counts()
                order = sorted(counts.index, key=lambda lv: (-int(counts[lv]), str(lv)))
                references[c] = order[0]
    return _Design(frame, kinds, references), skipped


def _convert(values: pd.Series, *, categorical: bool, name: str) -> tuple[pd.Series, str]:
    """A candidate column as float (numeric, booleans 0/1) or object (categorical), missing as NaN/None."""
    dtype = values.dtype
    if not categorical and (pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_numeric_dtype(dtype)):
        out = pd.to_numeric(values.astype("Float64"), errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        return pd.Series(out, index=values.index), "numeric"
    if (categorical or pd.api.types.is_string_dtype(dtype) or isinstance(dtype, pd.CategoricalDtype)
            or dtype == object):
        obj = values.astype(object)
        obj = obj.where(values.notna().to_numpy(bool), None)
        if pd.api.types.is_integer_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
            obj = obj.map(lambda v: v if v is None else v.item() if isinstance(v, np.generic) else v)
        return obj.reset_index(drop=True).set_axis(values.index), "categorical"
    raise ConfigError(f"candidate {name!r} has dtype {dtype}, which is neither numeric, boolean nor text")


def _step(model: str, step: int, term: str, stat: float, df: float, p: float, decision: str, n: int,
          reason: str = "") -> dict[str, Any]:
    return {"model": model, "step": step, "term": term, "lrt_statistic": stat, "df": df, "p_value": p,
            "decision": decision, "n_lesions": n, "reason": reason}


def _forward(fitter: _Fitter, model: str, usable: list[str], alpha: float, spec: MixedCox,
             sink: list[tuple[str, type[Warning], str]], steps: list[dict[str, Any]]) -> list[str]:
    current = [_ORGAN]
    current_fit: MixedCoxFit | None = None  # the current model's fit: where each candidate's fits start
    remaining = list(usable)
    step = 0
    while remaining:
        step += 1
        trials: list[dict[str, Any]] = []
        grown: dict[str, MixedCoxFit] = {}
        for c in remaining:
            try:
                stat, df, p, n, grown[c] = fitter.compare(current, [*current, c], spec, f"step {step}, adding {c}",
                                                          sink, start=current_fit)
                trials.append(_step(model, step, c, stat, df, p, "not added", n))
            except (DataError, ConfigError) as exc:
                trials.append(_step(model, step, c, math.nan, math.nan, math.nan, "not estimable", 0,
                                    str(exc)))
        ok = [t for t in trials if t["decision"] == "not added"]
        best = min(ok, key=lambda t: (t["p_value"], -t["lrt_statistic"])) if ok else None
        if best is not None and best["p_value"] < alpha:
            best["decision"] = "added"
            current.append(best["term"])
            remaining.remove(best["term"])
            current_fit = grown[best["term"]]
            steps.extend(trials)
        else:
            steps.extend(trials)
            break
    return current[1:]


def _backward(fitter: _Fitter, model: str, usable: list[str], alpha: float, spec: MixedCox,
              sink: list[tuple[str, type[Warning], str]], steps: list[dict[str, Any]]) -> list[str]:
    # the starting model: candidates in order, leaving out those that make it non-estimable (collinear)
    current = [_ORGAN]
    for c in usable:
        trial = [*current, c]
        reason = _estimable(fitter, trial)
        if reason is None:
            current = trial
        else:
            steps.append(_step(model, 0, c, math.nan, math.nan, math.nan, "not estimable", 0, reason))
    step = 0
    while len(current) > 1:
        step += 1
        trials = []
        for c in current[1:]:
            smaller = [t for t in current if t != c]
            try:
                stat, df, p, n, _ = fitter.compare(smaller, current, spec, f"step {step}, removing {c}", sink)
                trials.append(_step(model, step, c, stat, df, p, "kept", n))
            except (DataError, ConfigError) as exc:
                trials.append(_step(model, step, c, math.nan, math.nan, math.nan, "not estimable", 0, str(exc)))
        bad = [t for t in trials if t["decision"] == "not estimable"]
        ok = [t for t in trials if t["decision"] == "kept"]
        if bad:  # cannot happen after the estimability check, but never loop on it
            for t in bad:
                current.remove(t["term"])
            steps.extend(trials)
            continue
        worst = max(ok, key=lambda t: (t["p_value"], -t["lrt_statistic"]))
        steps.extend(trials)
        if worst["p_value"] >= alpha:
            worst["decision"] = "removed"
            current.remove(worst["term"])
        else:
            break
    return current[1:]


def _estimable(fitter: _Fitter, cols: list[str], base: np.ndarray | None = None) -> str | None:
    """None when the design of ``cols`` on its complete rows (among ``base``) has full column rank, else
    why not (blaming the last column: callers add columns one at a time)."""
    mask = fitter.rows(cols, base)
    f = fitter.d.frame.loc[mask]
    blocks = []
    for c in cols:
        v = f[c]
        if fitter.d.kinds.get(c) == "categorical":
            ref = fitter.d.references[c]
            levels = [lv for lv in pd.unique(v) if lv != ref]
            if not levels:
                return f"{c} has only its reference level on the complete rows"
            blocks.append(np.column_stack([(v == lv).to_numpy(float) for lv in levels]))
        else:
            blocks.append(v.to_numpy(float)[:, None])
    x = np.column_stack(blocks) if blocks else np.zeros((int(mask.sum()), 0))
    if len(x) == 0:
        return "no complete rows"
    x = x - x.mean(0)
    sd = np.sqrt((x**2).mean(0))
    if (sd == 0).any():
        return f"{cols[-1]} is constant on the rows complete for {cols}"
    x = x / sd
    eig = np.linalg.eigvalsh(x.T @ x / len(x))
    if (eig > 1e-10 * max(eig.max(), 1.0)).sum() < x.shape[1]:
        return f"{cols[-1]} is collinear with {', '.join(cols[:-1])}"
    return None


def _owner(term: str, selected: Sequence[str]) -> str:
    for c in selected:
        if term == c or term.startswith(f"{c}["):
            return c
    return term


def _organ_rows(fit: MixedCoxFit, rows: pd.DataFrame, reference: str, model: str,
                extra: dict[str, Any]) -> pd.DataFrame:
    """One row per organ in ``rows``: HR from the fit (the reference at 1), counts."""
    s = fit.summary().set_index("term")
    g = rows.groupby(_ORGAN, sort=True)[_EVENT]
    n_les, n_ev = g.size(), g.sum()
    out = []
    for organ in n_les.index:
        base = {"model": model, **extra, "organ": str(organ), "n_lesions": int(n_les[organ]),
                "n_events": int(n_ev[organ])}
        if organ == reference:
            out.append({**base, "hazard_ratio": 1.0, "ci_lower": math.nan, "ci_upper": math.nan,
                        "p_value": math.nan, "coef": 0.0, "se": math.nan, "reference": True})
            continue
        r = s.loc[f"{_ORGAN}[{organ}]"]
        out.append({**base, "hazard_ratio": float(r["hazard_ratio"]), "ci_lower": float(r["ci_lower"]),
                    "ci_upper": float(r["ci_upper"]), "p_value": float(r["p_value"]), "coef": float(r["coef"]),
                    "se": float(r["se"]), "reference": False})
    columns = HAZARD_RATIO_COLUMNS if not extra else STRATIFIED_COLUMNS
    t = pd.DataFrame(out, columns=list(columns))
    t["reference"] = t["reference"].astype(bool)
    return t


def _organ_lrt_pvalues(fitter: _Fitter, cols: list[str], mask: np.ndarray, reference: str, organs: pd.Series,
                       spec: MixedCox, sink: list[tuple[str, type[Warning], str]]) -> np.ndarray:
    full = fitter.fit(cols, mask, spec, "organ LRTs", sink)
    out = []
    for organ in organs:
        if organ == reference:
            out.append(math.nan)
            continue
        merged = fitter.d.frame.assign(**{_ORGAN: fitter.d.frame[_ORGAN].replace({organ: reference})})
        smaller = fitter.fit(cols, mask, spec, f"LRT of organ {organ}", sink, frame=merged,
                             variant=f"{organ} merged into {reference}", start=full)
        stat = max(0.0, 2.0 * (full.loglik_integrated - smaller.loglik_integrated))
        out.append(float(scipy.stats.chi2.sf(stat, 1)))
    return np.asarray(out, dtype=float)


def _model_row(model: str, stratum: str, fit: MixedCoxFit, rows: pd.DataFrame, covs: Sequence[str]
               ) -> dict[str, Any]:
    lo, hi = fit.random_effect_ci
    return {"model": model, "stratum": stratum, "n_lesions": int(len(rows)), "n_events": int(rows[_EVENT].sum()),
            "n_patients": int(rows[_GROUP].nunique()), "random_effect_variance": float(fit.random_effect_variance),
            "random_effect_ci_lower": float(lo), "random_effect_ci_upper": float(hi),
            "loglik_integrated": float(fit.loglik_integrated), "covariates": ";".join(covs)}


def _stratified(fitter: _Fitter, model: str, cols: list[str], mask: np.ndarray, selected: list[str],
                group: str, reference: str, spec: MixedCox, sink: list[tuple[str, type[Warning], str]],
                notes: list[str], pooled: MixedCoxFit
                ) -> tuple[list[pd.DataFrame], list[dict[str, Any]], list[dict[str, Any]], dict[str, Any] | None]:
    frame = fitter.d.frame
    gvals = frame[group]
    base = mask & gvals.notna().to_numpy(bool)
    levels = sorted(pd.unique(gvals[base]), key=str)
    tables: list[pd.DataFrame] = []
    model_rows: list[dict[str, Any]] = []
    dropped: list[dict[str, Any]] = []
    if len(levels) < 2:
        notes.append(f"{model} model: {group} has fewer than two levels; no stratified models")
        return tables, model_rows, dropped, None
    ev = fitter.event
    for lv in levels:
        in_g = base & (gvals == lv).to_numpy(bool)
        sub = frame.loc[in_g]
        covs = []
        left_out = []  # selected covariates that cannot be estimated within the stratum
        for c in selected:
            if c == group:
                continue
            if sub[c].nunique(dropna=True) < 2:
                notes.append(f"{model} model, {group}={lv}: covariate {c!r} is constant in the stratum and left out")
                left_out.append(c)
                continue
            covs.append(c)
        n_ev = pd.Series(ev[in_g]).groupby(sub[_ORGAN].to_numpy(), sort=True).agg(["size", "sum"])
        empty = [str(o) for o in n_ev.index[n_ev["sum"].to_numpy() == 0]]
        if reference in empty or reference not in n_ev.index:
            msg = (f"{model} model, {group}={lv}: the reference organ {reference!r} has no events in this "
                   "group; its stratified model is not fitted")
            warnings.warn(msg, ExclusionWarning, stacklevel=4)
            notes.append(msg)
            continue
        if empty:
            listing = ", ".join(f"{o!r} ({int(n_ev.loc[o, 'size'])} lesions)" for o in empty)
            msg = (f"{model} model, {group}={lv}: organ(s) {listing} have no {model} events in this group and "
                   "are left out of its stratified model")
            warnings.warn(msg, ExclusionWarning, stacklevel=4)
            notes.append(msg)
            dropped += [{"model": model, "stratum": str(lv), "organ": o, "n_lesions": int(n_ev.loc[o, "size"]),
                         "n_events": 0, "reason": f"no {model} events in {group}={lv}"} for o in empty]
        # a categorical covariate whose reference level is absent from the stratum (a treatment of the
        # other group) takes the stratum's most frequent level as reference
        refs = dict(fitter.d.references)
        for c in covs:
            if fitter.d.kinds.get(c) == "categorical" and not (sub[c] == refs[c]).any():
                counts = sub[c].dropna().value_counts()
                refs[c] = sorted(counts.index, key=lambda v: (-int(counts[v]), str(v)))[0]
                notes.append(f"{model} model, {group}={lv}: the reference level of {c} is not in the stratum; "
                             f"{refs[c]!r} is its reference there")
        sfitter = _Fitter(_Design(frame, fitter.d.kinds, refs), model) if refs != fitter.d.references else fitter
        # covariates collinear within the stratum (with organ and the covariates kept before them, in the
        # order selected; e.g. a treatment given only in one line of therapy there) are left out too
        kept: list[str] = []
        for c in covs:
            reason = _estimable(sfitter, [_ORGAN, *kept, c], in_g)
            if reason is None:
                kept.append(c)
                continue
            left_out.append(c)
            notes.append(f"{model} model, {group}={lv}: covariate {c!r} is left out of the stratified model: "
                         f"{reason} in the stratum")
        covs = kept
        scols = [_ORGAN, *covs]
        smask = sfitter.rows(scols, in_g)
        if len(pd.unique(frame.loc[smask, _ORGAN])) < 2:
            notes.append(f"{model} model, {group}={lv}: fewer than two organs with events; not fitted")
            continue
        try:
            fit = sfitter.fit(scols, smask, spec, f"{group}={lv}", sink, start=pooled)
        except (DataError, ConfigError) as exc:
            msg = f"{model} model, {group}={lv}: the stratified model could not be fitted: {exc}"
            warnings.warn(msg, ExclusionWarning, stacklevel=4)
            notes.append(msg)
            continue
        rows = frame.loc[smask]
        tables.append(_organ_rows(fit, rows, reference, model,
                                  extra={"group": str(lv), "covariates_left_out": ";".join(left_out)}))
        model_rows.append(_model_row(model, str(lv), fit, rows, covs))

    # ---- interaction LRT: organ x group on the same rows
    interaction = None
    ref_g = fitter.d.references[group]
    implied = any(gvals[base].groupby(frame.loc[base, c].astype(str)).nunique().max() <= 1 for c in selected
                  if c != group)
    main = [*cols] + ([group] if group not in selected and not implied else [])
    imask = fitter.rows(main, base)
    f = frame.loc[imask]
    cell = pd.DataFrame({"o": f[_ORGAN].to_numpy(), "g": f[group].to_numpy(), "e": ev[imask]})
    cell_ev = cell.groupby(["o", "g"])["e"].sum()
    products: dict[str, np.ndarray] = {}
    left_out = []
    for o in sorted(pd.unique(cell["o"]), key=str):
        if o == reference:
            continue
        for lv in levels:
            if lv == ref_g:
                continue
            if cell_ev.get((o, ref_g), 0) > 0 and cell_ev.get((o, lv), 0) > 0:
                col = ((frame[_ORGAN] == o) & (gvals == lv)).to_numpy(float)
                products[f"{_ORGAN}[{o}]:{group}[{lv}]"] = col
            else:
                left_out.append(f"{o} x {lv}")
    if left_out:
        notes.append(f"{model} model: organ x {group} products left out of the interaction test (no events in "
                     f"a cell): {', '.join(left_out)}")
    if not products:
        notes.append(f"{model} model: no estimable organ x {group} product; no interaction test")
        return tables, model_rows, dropped, None
    aug = frame.assign(**products)
    kinds = dict(fitter.d.kinds)
    kinds.update({k: "numeric" for k in products})
    ifitter = _Fitter(_Design(aug, kinds, fitter.d.references), model)
    try:
        stat, df, p, n, _ = ifitter.compare(main, [*main, *products], spec, f"organ x {group} interaction", sink,
                                            base=imask, start=pooled)
        interaction = {"model": model, "test": f"organ:{group}", "lrt_statistic": stat, "df": df, "p_value": p,
                       "n_lesions": n, "n_events": int(ev[imask].sum())}
    except (DataError, ConfigError) as exc:
        notes.append(f"{model} model: the organ x {group} interaction test could not be computed: {exc}")
    return tables, model_rows, dropped, interaction


def _concat(frames: list[pd.DataFrame], columns: Sequence[str]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=list(columns))
    return pd.concat(frames, ignore_index=True)[list(columns)]


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v


def _spec_dict(spec: MixedCox) -> dict[str, Any]:
    d = dataclasses.asdict(spec)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def _spec_from_dict(d: dict[str, Any]) -> MixedCox:
    d = dict(d)
    if d.get("sparse") is not None:
        d["sparse"] = tuple(d["sparse"])
    if "variance_bounds" in d:
        d["variance_bounds"] = tuple(d["variance_bounds"])
    return MixedCox(**d)


def _format_p(p: float) -> str:
    """A p-value for a figure: two significant digits, scientific below 0.001, empty when missing."""
    if not np.isfinite(p):
        return ""
    if p < 1e-300:
        return "<1e-300"  # the tail probability underflowed to 0
    return f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


# ============================================================================================ result
@dataclass(frozen=True, eq=False)
class OrganHazards:
    """Organ hazard ratios of lesion response and progression (mixed Cox), with the covariate selection.

    Attributes
    ----------
    hazard_ratios : DataFrame
        ``model, organ, hazard_ratio, ci_lower, ci_upper, p_value, n_lesions, n_events, coef, se,
        reference``: one row per model and organ of the final model; the reference organ has HR 1 and no
        CI. Counts are those of the final model's rows.
    covariates : DataFrame
        ``model, covariate, term, coef, se, hazard_ratio, ci_lower, ci_upper, p_value``: the selected
        covariates' effects in the final models (one row per term; a categorical covariate has one per
        non-reference level).
    selection_steps : DataFrame
        ``model, step, term, lrt_statistic, df, p_value, decision, n_lesions, reason``: every test of the
        selection (``decision``: ``added``/``not added`` forward, ``removed``/``kept`` backward,
        ``skipped`` (step 0; all missing or constant), ``not estimable``). ``n_lesions``: rows compared.
    stratified : DataFrame
        ``model, group, organ, hazard_ratio, ci_lower, ci_upper, p_value, n_lesions, n_events, coef, se,
        reference, covariates_left_out``: the final model refitted within each level of ``stratify_by``;
        ``covariates_left_out`` names (``;``-separated) the selected covariates that could not be estimated
        in that group (constant, or collinear with organ and the covariates before them).
    organ_tests : DataFrame
        ``model, test, lrt_statistic, df, p_value, n_lesions, n_events``: the LRT of the organ block
        (``test="organ"``) and of the organ x group interaction (``test="organ:<stratify_by>"``).
    models : DataFrame
        ``model, stratum, n_lesions, n_events, n_patients, random_effect_variance, random_effect_ci_lower,
        random_effect_ci_upper, loglik_integrated, covariates`` for the pooled (``stratum="all"``) and the
        stratified fits.
    dropped_organs : DataFrame
        ``model, stratum, organ, n_lesions, n_events, reason``: organs left out for lack of events.
    reference_organ : str
        The reference organ used (may differ from the one asked for; see ``notes``).
    parameters : dict
        The arguments of :func:`fit_organ_hazards` (JSON-able).
    notes : tuple of str
        Everything skipped, dropped or replaced, and the warnings of the fits.
    fits : dict
        The final pooled :class:`MixedCoxFit` per model.
    """

    hazard_ratios: pd.DataFrame
    covariates: pd.DataFrame
    selection_steps: pd.DataFrame
    stratified: pd.DataFrame
    organ_tests: pd.DataFrame
    models: pd.DataFrame
    dropped_organs: pd.DataFrame
    reference_organ: str
    parameters: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    fits: dict[str, MixedCoxFit] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ views
    @property
    def random_effect_variance(self) -> dict[str, float]:
        """``{model: sigma^2}`` of the pooled final models."""
        t = self.models[self.models["stratum"] == "all"]
        return {str(m): float(v) for m, v in zip(t["model"], t["random_effect_variance"], strict=True)}

    @property
    def selected(self) -> dict[str, tuple[str, ...]]:
        """``{model: selected candidate covariates}`` (in the order selected)."""
        t = self.models[self.models["stratum"] == "all"]
        return {str(m): tuple(c for c in str(v).split(";") if c) if isinstance(v, str) else ()
                for m, v in zip(t["model"], t["covariates"], strict=True)}

    def phenotype_input(self) -> pd.DataFrame:
        """The wide table ``classify_organs`` expects: one row per organ in both models.

        Columns ``organ, response_hr, response_ci_lower, response_ci_upper, progression_hr,
        progression_ci_lower, progression_ci_upper, response_p_value, progression_p_value, n_lesions``
        (``n_lesions`` from the progression model, which holds every lesion). Organs missing from a model
        (no events there) are left out.
        """
        models = set(self.hazard_ratios["model"])
        if not {"response", "progression"} <= models:
            raise ConfigError("phenotype_input needs both the response and the progression model; fit with "
                              "models=('response', 'progression')")
        t = self.hazard_ratios
        wide = None
        for m in ("response", "progression"):
            part = t[t["model"] == m].set_index("organ")[["hazard_ratio", "ci_lower", "ci_upper", "p_value",
                                                         "n_lesions"]]
            part = part.rename(columns={"hazard_ratio": f"{m}_hr", "ci_lower": f"{m}_ci_lower",
                                        "ci_upper": f"{m}_ci_upper", "p_value": f"{m}_p_value",
                                        "n_lesions": f"n_{m}"})
            wide = part if wide is None else wide.join(part, how="inner")
        assert wide is not None
        wide = wide.rename(columns={"n_progression": "n_lesions"}).drop(columns=["n_response"])
        wide = wide.reset_index()
        return wide[list(PHENOTYPE_INPUT_COLUMNS)].reset_index(drop=True)

    def summary(self) -> pd.DataFrame:
        """Every estimate in one table: ``model, kind, term, hazard_ratio, ci_lower, ci_upper, p_value,
        n_lesions, n_events`` (``kind``: ``organ`` with term ``organ[<organ>]``, or ``covariate``)."""
        o = self.hazard_ratios.assign(kind="organ", term=[f"{_ORGAN}[{v}]" for v in self.hazard_ratios["organ"]])
        c = self.covariates.assign(kind="covariate", n_lesions=pd.NA, n_events=pd.NA)
        parts = []
        for m in dict.fromkeys(self.hazard_ratios["model"].tolist() + self.covariates["model"].tolist()):
            parts += [o.loc[o["model"] == m, list(SUMMARY_COLUMNS)], c.loc[c["model"] == m, list(SUMMARY_COLUMNS)]]
        parts = [p for p in parts if len(p)]
        if not parts:
            return pd.DataFrame(columns=list(SUMMARY_COLUMNS))
        return pd.concat(parts, ignore_index=True)

    def __repr__(self) -> str:
        lines = [f"<OrganHazards: reference organ {self.reference_organ!r}, selection "
                 f"{self.parameters.get('selection')} (alpha {self.parameters.get('alpha')})>"]
        for m in self.models.loc[self.models["stratum"] == "all"].itertuples():
            hr = self.hazard_ratios[self.hazard_ratios["model"] == m.model]
            covs = m.covariates if isinstance(m.covariates, str) and m.covariates else "none"
            lines.append(f"  {m.model}: {m.n_lesions} lesions, {m.n_events} events, {m.n_patients} patients, "
                         f"{len(hr)} organs; covariates {covs}; random-effect variance "
                         f"{m.random_effect_variance:.3g}")
        if len(self.dropped_organs):
            lines.append(f"  dropped organs: {len(self.dropped_organs)} (see dropped_organs)")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        head = "<br>".join(self.__repr__().splitlines())
        return f"<p>{head}</p>" + self.hazard_ratios.to_html(index=False)

    # ------------------------------------------------------------------ plots
    def plot_forest(self, model: Model = "response", ax: Any = None, *, sort: bool = True,
                    labels: Mapping[str, str] | None = None, annotate: bool = True, color: str = "C0") -> Any:
        """Forest plot of the organ hazard ratios of one model (the paper's Fig. 3a,b).

        Each organ's HR with its 95% CI on a log axis, a dashed line at 1, the lesion count in the
        label; the reference organ is drawn at 1 (grey diamond) without an interval. With ``annotate``
        the HR (95% CI) and the organ's p-value are printed in two columns right of the axes.

        Parameters
        ----------
        model : {"response", "progression"}
        ax : matplotlib Axes, optional
        sort : bool
            Order organs by hazard ratio (highest on top); else alphabetically.
        labels : mapping, optional
            Organ code -> name shown (e.g. ``lesionatlas.data.organs.ORGAN_LABELS``); default the codes.
        annotate : bool
            Print ``HR (lower-upper)`` and ``p`` beside each row.
        color : str
            Colour of the estimates.

        Returns
        -------
        matplotlib.axes.Axes
        """
        import matplotlib.pyplot as plt

        t = self._model_rows(self.hazard_ratios, model)
        if ax is None:
            _, ax = plt.subplots(figsize=(7.5, 0.32 * len(t) + 1.4), layout="constrained")
        t = t.sort_values("hazard_ratio" if sort else "organ", ascending=not sort, kind="stable")
        t = t.iloc[::-1].reset_index(drop=True)  # first row at the bottom
        y = np.arange(len(t), dtype=float)
        self._draw_intervals(ax, t, y, color=color, label=None)
        name = (lambda o: str(labels.get(o, o))) if labels is not None else str
        ticks = [f"{name(r.organ)} ({'reference, ' if r.reference else ''}n={int(r.n_lesions):,})"
                 for r in t.itertuples()]
        ax.set_yticks(y)
        ax.set_yticklabels(ticks)
        ax.set_ylim(-0.7, len(t) - 0.3)
        self._finish_axis(ax, model)
        if annotate:
            self._annotate_rows(ax, t, y)
        ax.set_title(f"{model.capitalize()}: hazard ratio by organ vs {name(self.reference_organ)}")
        return ax

    def plot_stratified(self, model: Model = "response", ax: Any = None, *,
                        labels: Mapping[str, str] | None = None,
                        colors: Sequence[str] | None = None) -> Any:
        """Organ hazard ratios within each treatment group, side by side (the paper's Fig. 3e,f).

        One colour per group (legend below the axes); organs in the order of the pooled hazard ratio
        (highest on top); the title gives the organ x group interaction LRT.

        Parameters
        ----------
        model : {"response", "progression"}
        ax : matplotlib Axes, optional
        labels : mapping, optional
            Organ code -> name shown; default the codes.
        colors : sequence of str, optional
            One colour per group (groups in sorted order); default the matplotlib cycle.

        Returns
        -------
        matplotlib.axes.Axes
        """
        import matplotlib.pyplot as plt

        t = self._model_rows(self.stratified, model)
        organs = sorted(t["organ"].unique(), key=str)
        pooled = self.hazard_ratios[self.hazard_ratios["model"] == model].set_index("organ")["hazard_ratio"]
        organs = sorted(organs, key=lambda o: float(pooled.get(o, np.nan)) if o in pooled.index else -np.inf)
        if ax is None:
            _, ax = plt.subplots(figsize=(7.0, 0.42 * len(organs) + 1.6), layout="constrained")
        groups = sorted(t["group"].unique(), key=str)
        width = 0.6 / max(len(groups), 1)
        pos = {o: k for k, o in enumerate(organs)}
        for j, g in enumerate(groups):
            part = t[t["group"] == g].reset_index(drop=True)
            y = np.array([pos[o] for o in part["organ"]], dtype=float) + (j - (len(groups) - 1) / 2) * width
            color = colors[j % len(colors)] if colors else f"C{j}"
            self._draw_intervals(ax, part, y, color=color, label=str(g))
        n = t.groupby("organ")["n_lesions"].sum()
        name = (lambda o: str(labels.get(o, o))) if labels is not None else str
        ax.set_yticks(np.arange(len(organs)))
        ax.set_yticklabels([f"{name(o)} ({'reference, ' if o == self.reference_organ else ''}n={int(n[o]):,})"
                            for o in organs])
        ax.set_ylim(-0.7, len(organs) - 0.3)
        self._finish_axis(ax, model)
        title = str(self.parameters.get("stratify_by") or "group").replace("_", " ")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, title=title, alignment="left")
        test = self.organ_tests[(self.organ_tests["model"] == model)
                                & self.organ_tests["test"].astype(str).str.contains(":")]
        p = f"\norgan × group interaction LRT p = {_format_p(float(test['p_value'].iloc[0]))}" if len(test) else ""
        ax.set_title(f"{model.capitalize()}: hazard ratio by organ and group{p}")
        return ax

    @staticmethod
    def _model_rows(table: pd.DataFrame, model: str) -> pd.DataFrame:
        if model not in MODELS:
            raise ConfigError(f"model must be 'response' or 'progression', got {model!r}")
        t = table[table["model"] == model]
        if t.empty:
            raise ConfigError(f"no {model} rows in this result (fitted models: "
                              f"{sorted(set(table['model']))})")
        return t

    @staticmethod
    def _draw_intervals(ax: Any, t: pd.DataFrame, y: np.ndarray, *, color: str, label: str | None) -> None:
        hr = t["hazard_ratio"].to_numpy(float)
        lo = t["ci_lower"].to_numpy(float)
        hi = t["ci_upper"].to_numpy(float)
        ref = t["reference"].to_numpy(bool)
        ok = ~ref & np.isfinite(lo) & np.isfinite(hi) & (lo > 0)
        ax.errorbar(hr[ok], y[ok], xerr=[hr[ok] - lo[ok], hi[ok] - hr[ok]], fmt="s", color=color, ms=5,
                    capsize=2, lw=1.2, label=label)
        if (~ok & ~ref).any():
            ax.plot(hr[~ok & ~ref], y[~ok & ~ref], "s", color=color, ms=5, mfc="none")
        if ref.any():
            ax.plot(hr[ref], y[ref], "D", color="0.4", ms=5)

    @staticmethod
    def _annotate_rows(ax: Any, t: pd.DataFrame, y: np.ndarray) -> None:
        """``HR (lower-upper)`` and ``p`` as two text columns right of the axes, one line per row."""
        from matplotlib.transforms import blended_transform_factory, offset_copy

        # columns at fixed distances (points) right of the axes, so that the layout engine converges
        base = blended_transform_factory(ax.transAxes, ax.transData)
        size = 8.5
        hr_col = offset_copy(base, fig=ax.figure, x=10, y=0, units="points")
        p_col = offset_copy(base, fig=ax.figure, x=10 + 0.6 * size * 18, y=0, units="points")
        top = len(t) - 0.3
        ax.text(1.0, top, "HR (95% CI)", transform=hr_col, ha="left", va="bottom", fontsize=size, weight="bold")
        ax.text(1.0, top, "p", transform=p_col, ha="left", va="bottom", fontsize=size, weight="bold")
        for yi, r in zip(y, t.itertuples(), strict=True):
            if r.reference:
                hr_text, p_text = "1 (reference)", ""
            elif np.isfinite(r.ci_lower) and np.isfinite(r.ci_upper):
                hr_text = f"{r.hazard_ratio:.2f} ({r.ci_lower:.2f}–{r.ci_upper:.2f})"
                p_text = _format_p(float(r.p_value))
            else:
                hr_text, p_text = f"{r.hazard_ratio:.2f}", _format_p(float(r.p_value))
            bold = "bold" if np.isfinite(r.p_value) and r.p_value < 0.05 else "normal"
            ax.text(1.0, yi, hr_text, transform=hr_col, ha="left", va="center", fontsize=size)
            ax.text(1.0, yi, p_text, transform=p_col, ha="left", va="center", fontsize=size, weight=bold)

    @staticmethod
    def _finish_axis(ax: Any, model: str) -> None:
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        ax.set_xscale("log")
        ax.axvline(1.0, color="0.5", ls="--", lw=1, zorder=0)
        lo, hi = ax.get_xlim()
        if hi / lo < 1e4:  # a few decades: plain numbers (0.5, 1, 2) instead of powers of ten
            subs = (1.0, 1.5, 2.0, 3.0, 5.0, 7.0) if hi / lo < 30 else (1.0, 2.0, 5.0) if hi / lo < 1e3 else (1.0,)
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(axis="x", which="major", color="0.92", lw=0.8, zorder=0)
        ax.set_axisbelow(True)
        ax.set_xlabel(f"{model} hazard ratio (95% CI, log scale)")

    # ------------------------------------------------------------------ files
    def to_dir(self, path: str | Path, *, csv: bool = True) -> Path:
        """Write the tables (Parquet + CSV), ``meta.json`` and the final fits (``fits/<model>/``)."""
        def write_fits(tmp: Path) -> None:
            for m, fit in self.fits.items():
                fit.to_dir(tmp / "fits" / m)

        return write_result_dir(path, {name: getattr(self, name) for name in _TABLES}, {
                "schema": SCHEMA, "kind": "OrganHazards", "reference_organ": self.reference_organ,
                "parameters": self.parameters, "notes": list(self.notes),
                "versions": {"python": platform.python_version(), "numpy": np.__version__,
                             "pandas": pd.__version__, "scipy": scipy.__version__},
            }, csv=csv, extra=write_fits)

    @classmethod
    def from_dir(cls, path: str | Path) -> OrganHazards:
        """Read a folder written by :meth:`to_dir`."""
        path = Path(path)
        meta_path = path / "meta.json"
        if not meta_path.is_file():
            raise DataError(f"{path}: no meta.json; not a folder written by OrganHazards.to_dir")
        meta = json.loads(meta_path.read_text())
        if meta.get("kind") != "OrganHazards":
            raise DataError(f"{path}: not an OrganHazards folder (meta.json kind={meta.get('kind')!r})")
        tables = {name: pd.read_parquet(path / f"{name}.parquet") for name in _TABLES}
        fits = {}
        fits_dir = path / "fits"
        if fits_dir.is_dir():
            for m in MODELS:
                if (fits_dir / m).is_dir():
                    fits[m] = MixedCoxFit.from_dir(fits_dir / m)
        return cls(**tables, reference_organ=meta["reference_organ"], parameters=meta["parameters"],
                   notes=tuple(meta["notes"]), fits=fits)

    def equals(self, other: OrganHazards) -> bool:
        """Same tables (values and dtypes), reference organ and parameters."""
        return (isinstance(other, OrganHazards) and self.reference_organ == other.reference_organ
                and self.parameters == other.parameters
                and all(getattr(self, n).equals(getattr(other, n)) for n in _TABLES))

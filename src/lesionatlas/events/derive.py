"""``derive_events``: every lesion's time to response and to progression, censoring, organ sequences.

Conventions
-----------
- **Days** are days from treatment start (day 0); events are looked for on days >= 0.
- **Last day on trial** of a patient: the last day any of the patient's lesions was measured or assessed
  (the last scan), at least day 0. Lesions without an event are censored there, and an event after it
  is censored there (``*_event = False``, ``*_day = last_day``). An event on the last day itself counts
  (a relative tolerance of 1e-9 absorbs root-finding round-off).
- **Target lesions** from their growth curves (:mod:`lesionatlas.events.target`; baseline and nadir
  from day 0 by default, progression at ``min(1.3 nadir, nadir + 200 mm3)``); target lesions without
  parameters are left out with an :class:`~lesionatlas.errors.ExclusionWarning`.
- **Non-target and new lesions** from their assessments (:mod:`lesionatlas.events.assessed`). New lesions
  have no response: ``response_day`` is missing and ``response_event`` is ``<NA>``.
- **Sequences** (:mod:`lesionatlas.events.sequence`): organs by first progression day; ties share a rank.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from ..errors import ConfigError, DataError, ExclusionWarning
from ..io import write_result_dir
from .assessed import new_lesion_days, nontarget_days
from .rules import EventRules
from .sequence import organ_sequences, sequence_tuples
from .target import crossing_days

#: Patient columns copied onto every lesion row (the candidate covariates of the hazard models).
COVARIATES: tuple[str, ...] = (
    "study_id", "age", "sex", "race", "bmi", "bsa", "tumor_type", "prior_surgery", "prior_radiation", "line",
    "treatment", "treatment_group", "kras",
)
#: Patient outcomes copied onto the per-patient table.
OUTCOMES: tuple[str, ...] = ("treatment", "treatment_group", "pfs_days", "pfs_event", "os_days", "os_event")

EVENT_COLUMNS: tuple[str, ...] = (
    "lesion_id", "patient_id", "organ", "kind", "response_day", "response_event", "progression_day",
    "progression_event", "last_day",
)
SUMMARY_COLUMNS: tuple[str, ...] = (
    "kind", "organ", "n_lesions", "n_response_events", "n_progression_events", "response_percent",
    "progression_percent",
)
#: Relative tolerance for an event on the last day.
DAY_RTOL = 1e-9

_TABLES = ("table", "sequences", "patients", "curves")
SCHEMA = "lesionatlas.events/1"

Estimate = Literal["mode", "mean"]


# ============================================================================================ parameters
def lesion_parameters(source: Any, cohort: Any = None, *, estimate: Estimate = "mode") -> pd.DataFrame:
    """A per-lesion parameter table ``lesion_id, kg, kd, f, v0, t0`` from a fit or a table.

    Parameters
    ----------
    source : TGIFit or DataFrame
        A fitted model (its ``individual`` table is used), ``TGIFit.individual`` itself (``kg, kd, f,
        v0_mm3, t0_day``; ``kg_mean, ...`` with ``estimate="mean"``) or any table with ``lesion_id, kg, kd,
        f`` and ``v0, t0`` (or ``v0_mm3, t0_day``), such as the simulator's ``truth.table("lesions")``.
    cohort : Cohort, optional
        Where ``v0, t0`` are missing from ``source``: the lesion's ``baseline_volume_mm3, baseline_day``,
        else its first measurement (volume and day).
    estimate : {"mode", "mean"}
        Which individual estimate of a fit: the conditional mode (default, as the paper) or mean.

    Raises
    ------
    ConfigError
        Unknown ``estimate``.
    DataError
        Missing columns or a lesion listed twice.
    """
    if estimate not in ("mode", "mean"):
        raise ConfigError(f"estimate must be 'mode' or 'mean', got {estimate!r}")
    table = getattr(source, "individual", source)
    if not isinstance(table, pd.DataFrame):
        raise DataError(f"parameters must be a TGIFit or a DataFrame, got {type(source).__name__}")
    suffix = "_mean" if estimate == "mean" else ""
    names = {p: f"{p}{suffix}" for p in ("kg", "kd", "f")}
    if estimate == "mean" and not set(names.values()) <= set(table.columns):
        raise DataError("estimate='mean' needs columns kg_mean, kd_mean, f_mean (a TGIFit individual table)")
    missing = [c for c in ("lesion_id", *names.values()) if c not in table.columns]
    if missing:
        raise DataError(
            f"parameters: missing columns {missing}; need lesion_id, kg, kd, f and v0, t0 (or v0_mm3, t0_day)"
        )
    out = pd.DataFrame({"lesion_id": table["lesion_id"].astype("string")})
    for p, col in names.items():
        out[p] = pd.to_numeric(table[col], errors="coerce").astype(float).to_numpy()
    for short, long in (("v0", "v0_mm3"), ("t0", "t0_day")):
        col = short if short in table.columns else long if long in table.columns else None
        out[short] = (pd.to_numeric(table[col], errors="coerce").astype(float).to_numpy() if col is not None
                      else np.nan)
    dup = out["lesion_id"].duplicated()
    if dup.any():
        first = ", ".join(out.loc[dup, "lesion_id"].head(5).tolist())
        raise DataError(f"parameters: {int(dup.sum())} lesion ids are listed more than once (first: {first})")
    need = out["v0"].isna() | out["t0"].isna()
    if need.any() and cohort is not None:
        base = _baselines(cohort).reindex(out.loc[need, "lesion_id"])
        out.loc[need, "v0"] = out.loc[need, "v0"].fillna(pd.Series(base["v0"].to_numpy(), index=out.index[need]))
        out.loc[need, "t0"] = out.loc[need, "t0"].fillna(pd.Series(base["t0"].to_numpy(), index=out.index[need]))
    return out.reset_index(drop=True)


def _baselines(cohort: Any) -> pd.DataFrame:
    """``v0, t0`` per lesion: the lesion table's baseline columns, else the first measurement."""
    mea = cohort.measurements.dropna(subset=["volume_mm3"]).sort_values(["lesion_id", "day"], kind="stable")
    first = mea.groupby("lesion_id", sort=False, observed=True).first()[["volume_mm3", "day"]]
    les = cohort.lesions.set_index("lesion_id")[["baseline_volume_mm3", "baseline_day"]]
    les = les.reindex(les.index.union(first.index))
    v0 = les["baseline_volume_mm3"].fillna(first["volume_mm3"].reindex(les.index))
    t0 = les["baseline_day"].fillna(first["day"].reindex(les.index))
    return pd.DataFrame({"v0": v0.astype(float), "t0": t0.astype(float)})


# ============================================================================================ result
@dataclass(frozen=True, eq=False)
class LesionEvents:
    """Lesion response and progression times, and each patient's organ progression sequence.

    Attributes
    ----------
    table : DataFrame
        One row per lesion: ``lesion_id, patient_id, organ, kind, response_day, response_event,
        progression_day, progression_event, last_day`` and the patient covariates (``study_id, age, sex,
        race, bmi, bsa, tumor_type, prior_surgery, prior_radiation, line, treatment, treatment_group, kras``).
        ``*_day`` is the event day, or the censoring day (``last_day``) when ``*_event`` is false; new
        lesions have no response (``response_day`` missing, ``response_event`` ``<NA>``).
    sequences : DataFrame
        ``patient_id, rank, position, organ, day, tied`` (:func:`~lesionatlas.events.sequence.organ_sequences`).
    patients : DataFrame
        Every patient: ``patient_id, last_day, n_lesions, n_target_lesions, n_progressed_organs,
        first_progression_day, first_organs`` (rank-1 organs joined by ``+``) and ``treatment,
        treatment_group, pfs_days, pfs_event, os_days, os_event``.
    curves : DataFrame
        Target lesions: ``lesion_id, baseline_mm3, nadir_day, nadir_mm3, latent_response_day,
        latent_progression_day`` (uncensored curve crossings, ``inf`` when never).
    rules : EventRules
    meta : dict
        Parameter estimate used, counts, conventions.
    """

    table: pd.DataFrame
    sequences: pd.DataFrame
    patients: pd.DataFrame
    curves: pd.DataFrame
    rules: EventRules = field(default_factory=EventRules)
    meta: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ views
    @property
    def n_lesions(self) -> int:
        return len(self.table)

    @property
    def n_patients(self) -> int:
        return len(self.patients)

    def model_table(self, model: Literal["response", "progression"]) -> pd.DataFrame:
        """The rows and columns one hazard model needs: ``duration_day``, ``event`` plus the lesion table.

        ``"response"``: target and non-target lesions; ``"progression"``: all lesions, new ones included.
        """
        if model not in ("response", "progression"):
            raise ConfigError(f"model must be 'response' or 'progression', got {model!r}")
        rows = self.table if model == "progression" else self.table[self.table["kind"] != "new"]
        out = rows.copy()
        out.insert(4, "duration_day", out[f"{model}_day"].astype(float))
        out.insert(5, "event", out[f"{model}_event"].astype(bool))
        return out.reset_index(drop=True)

    def sequence_tuples(self, *, grouped: bool = False) -> pd.Series:
        """Each patient's organ sequence as a tuple (empty for patients without progression); see
        :func:`~lesionatlas.events.sequence.sequence_tuples`."""
        return sequence_tuples(self.sequences, self.patients["patient_id"], grouped=grouped)

    def summary(self) -> pd.DataFrame:
        """Counts of lesions and events by kind and organ.

        Columns: ``kind, organ, n_lesions, n_response_events, n_progression_events, response_percent,
        progression_percent`` (response counts are 0 and percents missing for new lesions).
        """
        t = self.table
        frame = pd.DataFrame({
            "kind": t["kind"].astype("string"),
            "organ": t["organ"].astype("string").fillna("unknown"),
            "resp": t["response_event"].fillna(False).astype(int),
            "prog": t["progression_event"].fillna(False).astype(int),
            "has_resp": t["response_event"].notna().astype(int),
        })
        g = frame.groupby(["kind", "organ"], sort=True, observed=True)
        out = pd.DataFrame({
            "n_lesions": g.size(),
            "n_response_events": g["resp"].sum(),
            "n_progression_events": g["prog"].sum(),
            "eligible": g["has_resp"].sum(),
        }).reset_index()
        with np.errstate(divide="ignore", invalid="ignore"):
            out["response_percent"] = np.where(out["eligible"] > 0,
                                               100.0 * out["n_response_events"] / out["eligible"], np.nan)
        out["progression_percent"] = 100.0 * out["n_progression_events"] / out["n_lesions"]
        for col in ("n_lesions", "n_response_events", "n_progression_events"):
            out[col] = out[col].astype("int64")
        return out[list(SUMMARY_COLUMNS)]

    def __repr__(self) -> str:
        t = self.table
        kinds = t["kind"].value_counts()
        n_resp = int(t["response_event"].fillna(False).sum())
        n_prog = int(t["progression_event"].sum())
        n_seq = int((self.patients["n_progressed_organs"] > 0).sum())
        return (
            f"LesionEvents({self.n_lesions} lesions [{int(kinds.get('target', 0))} target, "
            f"{int(kinds.get('nontarget', 0))} non-target, {int(kinds.get('new', 0))} new], "
            f"{n_resp} responses, {n_prog} progressions, {self.n_patients} patients "
            f"({n_seq} with an organ progression), rules={self.rules.name!r})"
        )

    def _repr_html_(self) -> str:
        return f"<p>{self.__repr__()}</p>" + self.summary().to_html(index=False)

    # ------------------------------------------------------------------ files
    def to_dir(self, path: str | Path, *, csv: bool = True) -> Path:
        """Write ``table``, ``sequences``, ``patients``, ``curves`` (Parquet + CSV) and ``meta.json``."""
        return write_result_dir(path, {name: getattr(self, name) for name in _TABLES},
                                {"schema": SCHEMA, "rules": self.rules.to_dict(), **self.meta}, csv=csv)

    @classmethod
    def from_dir(cls, path: str | Path) -> LesionEvents:
        """Read a folder written by :meth:`to_dir`."""
        path = Path(path)
        meta_path = path / "meta.json"
        if not meta_path.is_file():
            raise DataError(f"{path}: no meta.json; not a folder written by LesionEvents.to_dir")
        meta = json.loads(meta_path.read_text())
        meta.pop("schema", None)
        rules = EventRules.from_dict(meta.pop("rules", {}))
        tables = {name: pd.read_parquet(path / f"{name}.parquet") for name in _TABLES}
        return cls(**tables, rules=rules, meta=meta)

    def equals(self, other: LesionEvents) -> bool:
        """Same tables (values and dtypes) and rules."""
        return self.rules == other.rules and all(
            getattr(self, n).equals(getattr(other, n)) for n in _TABLES
        )


# ============================================================================================ derive
def _last_days(cohort: Any) -> pd.Series:
    """Last scan day of every patient (max day of any measurement or assessment), at least 0."""
    owner = cohort.lesions.set_index("lesion_id")["patient_id"]
    days = pd.concat([cohort.measurements[["lesion_id", "day"]], cohort.assessments[["lesion_id", "day"]]])
    days = days.dropna(subset=["day"])
    per = days.assign(patient_id=owner.reindex(days["lesion_id"]).to_numpy())
    last = per.groupby("patient_id", observed=True)["day"].max()
    pids = cohort.patients["patient_id"].astype("string")
    pids = pd.Index(pids).union(pd.Index(cohort.lesions["patient_id"].astype("string").unique()))
    last.index = last.index.astype("string")
    return last.reindex(pids).fillna(0.0).clip(lower=0.0).astype(float)


def _censor(latent: np.ndarray, last: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Event flags and days: an event when it happens by the last day, else censored at the last day."""
    with np.errstate(invalid="ignore"):
        event = latent <= last * (1.0 + DAY_RTOL) + DAY_RTOL
    day = np.where(event, np.minimum(latent, last), last)
    return event, day


def _exclude(ids: pd.Series, why: str) -> None:
    if len(ids):
        first = ", ".join(ids.astype(str).head(5).tolist())
        warnings.warn(f"events: {len(ids)} lesions left out: {why} (first: {first})", ExclusionWarning,
                      stacklevel=3)


def derive_events(
    cohort: Any,
    parameters: Any,
    rules: EventRules | None = None,
    *,
    estimate: Estimate = "mode",
) -> LesionEvents:
    r"""Response and progression days of every lesion, censoring, and each patient's organ sequence.

    Parameters
    ----------
    cohort : Cohort
        Patients, lesions, measurements and assessments (after selection).
    parameters : TGIFit or DataFrame
        Target-lesion growth parameters (see :func:`lesion_parameters`): ``TGIFit`` or its ``individual``
        table, or a table ``lesion_id, kg, kd, f, v0, t0`` such as the simulator's truth ``lesions``.
    rules : EventRules, optional
        Thresholds and statuses (default: the paper's; ``EventRules.recist()`` for RECIST volumes).
    estimate : {"mode", "mean"}
        Individual estimate of a fit to use (conditional mode by default).

    Returns
    -------
    LesionEvents

    Warns
    -----
    ExclusionWarning
        Target lesions without (valid) parameters, new lesions never assessed and lesions of an unknown
        kind are left out.

    Notes
    -----
    Target lesion (:func:`~lesionatlas.events.target.crossing_days`): response at the first
    :math:`t \ge 0` with :math:`V(t) \le (1 - 0.2) V(0)`, progression at the first :math:`t` with
    :math:`V(t) \ge \min(1.3 N(t), N(t) + 200)`, :math:`N(t)` the running nadir. Then censoring at the
    patient's last scan day (module docstring).

    References
    ----------
    Zhou et al. (2024), Nature Communications, Methods ("Time to response and progression").

    Examples
    --------
    >>> from lesionatlas.data import simulate_cohort
    >>> sim = simulate_cohort("mcrc", seed=1, n_patients=20)
    >>> ev = derive_events(sim.cohort, sim.truth.table("lesions"))
    >>> list(ev.table.columns[:8])  # doctest: +NORMALIZE_WHITESPACE
    ['lesion_id', 'patient_id', 'organ', 'kind', 'response_day', 'response_event', 'progression_day',
     'progression_event']
    """
    rules = rules if rules is not None else EventRules()
    if not isinstance(rules, EventRules):
        raise ConfigError(f"rules must be an EventRules, got {type(rules).__name__}")
    params = lesion_parameters(parameters, cohort, estimate=estimate)
    lesions = cohort.lesions[["lesion_id", "patient_id", "kind", "organ"]].copy()
    for col in ("lesion_id", "patient_id", "kind", "organ"):
        lesions[col] = lesions[col].astype("string")
    last = _last_days(cohort)
    kind = lesions["kind"]
    odd = lesions[~kind.isin(["target", "nontarget", "new"]).fillna(False).to_numpy(bool)]
    _exclude(odd["lesion_id"], "kind is not target, nontarget or new")

    # ---- target lesions
    tgt = lesions[(kind == "target").fillna(False).to_numpy(bool)]
    tp = tgt[["lesion_id"]].merge(params, on="lesion_id", how="left")
    cross = crossing_days(tp["kg"].to_numpy(float), tp["kd"].to_numpy(float), tp["f"].to_numpy(float),
                          tp["v0"].to_numpy(float), tp["t0"].to_numpy(float), rules)
    ok = ~np.isnan(cross.nadir_day)  # nan: no or invalid parameters (inf: a curve decreasing for ever)
    _exclude(tgt.loc[~ok, "lesion_id"],
             "target lesions without valid growth parameters (kg, kd > 0, 0 <= f <= 1, v0 > 0, t0)")
    curves = pd.DataFrame({
        "lesion_id": tp["lesion_id"].astype("string"),
        "baseline_mm3": cross.baseline_mm3,
        "nadir_day": cross.nadir_day,
        "nadir_mm3": cross.nadir_mm3,
        "latent_response_day": cross.response_day,
        "latent_progression_day": cross.progression_day,
    })[ok].reset_index(drop=True)
    tgt = tgt[ok]
    t_last = last.reindex(tgt["patient_id"]).to_numpy(float)
    r_event, r_day = _censor(cross.response_day[ok], t_last)
    p_event, p_day = _censor(cross.progression_day[ok], t_last)
    target_rows = tgt.assign(response_day=r_day, response_event=r_event, progression_day=p_day,
                             progression_event=p_event, last_day=t_last)

    # ---- non-target lesions
    nt = lesions[(kind == "nontarget").fillna(False).to_numpy(bool)]
    nd = nontarget_days(nt["lesion_id"], cohort.assessments, rules)
    n_last = last.reindex(nt["patient_id"]).to_numpy(float)
    r_event, r_day = _censor(nd["response_day"].to_numpy(float), n_last)
    p_event, p_day = _censor(nd["progression_day"].to_numpy(float), n_last)
    nt_rows = nt.assign(response_day=r_day, response_event=r_event, progression_day=p_day,
                        progression_event=p_event, last_day=n_last)

    # ---- new lesions
    new = lesions[(kind == "new").fillna(False).to_numpy(bool)]
    wd = new_lesion_days(new["lesion_id"], cohort.assessments, rules)
    seen = wd["progression_day"].notna().to_numpy()
    _exclude(new.loc[~seen, "lesion_id"],
             "new lesions without any assessment (the day they were seen is unknown)")
    new = new[seen]
    w_last = last.reindex(new["patient_id"]).to_numpy(float)
    p_event, p_day = _censor(wd["progression_day"].to_numpy(float)[seen], w_last)
    new_rows = new.assign(response_day=np.nan, response_event=pd.NA, progression_day=p_day,
                          progression_event=p_event, last_day=w_last)

    table = pd.concat([target_rows, nt_rows, new_rows], ignore_index=True)
    table = table.sort_values(["patient_id", "lesion_id"], kind="stable").reset_index(drop=True)
    table = table.astype({"response_day": float, "progression_day": float, "last_day": float,
                          "response_event": "boolean", "progression_event": "boolean"})
    table = table[list(EVENT_COLUMNS)]
    pts = cohort.patients
    cov = pts[["patient_id", *[c for c in COVARIATES if c in pts.columns]]].copy()
    cov["patient_id"] = cov["patient_id"].astype("string")
    table = table.merge(cov, on="patient_id", how="left")

    # ---- sequences and the per-patient table
    sequences = organ_sequences(table)
    patients = _patient_table(cohort, table, sequences, last)
    meta = {
        "estimate": estimate,
        "n_lesions": int(len(table)),
        "n_patients": int(len(patients)),
        "last_day": "last measurement or assessment of any of the patient's lesions, at least day 0",
        "conventions": (
            "days from treatment start; target events from the growth curve (baseline and nadir per "
            f"rules.reference={rules.reference!r}); non-target response at the first response status before "
            "the first progression status; new lesions at the day first seen; censoring at the last day"
        ),
    }
    return LesionEvents(table=table, sequences=sequences, patients=patients, curves=curves, rules=rules,
                        meta=meta)


def _patient_table(cohort: Any, table: pd.DataFrame, sequences: pd.DataFrame, last: pd.Series) -> pd.DataFrame:
    pts = cohort.patients
    pids = pd.Index(pts["patient_id"].astype("string"))
    pids = pids.union(pd.Index(table["patient_id"].unique()), sort=False) if len(table) else pids
    n_les = table.groupby("patient_id", observed=True).size()
    n_tgt = table[table["kind"] == "target"].groupby("patient_id", observed=True).size()
    n_org = sequences.groupby("patient_id", observed=True).size()
    first_day = sequences.groupby("patient_id", observed=True)["day"].min()
    first_organs = sequences[sequences["rank"] == 1].groupby("patient_id", observed=True)["organ"].agg("+".join)
    out = pd.DataFrame({
        "patient_id": pd.Series(pids, dtype="string"),
        "last_day": last.reindex(pids).fillna(0.0).to_numpy(float),
        "n_lesions": n_les.reindex(pids).fillna(0).astype("int64").to_numpy(),
        "n_target_lesions": n_tgt.reindex(pids).fillna(0).astype("int64").to_numpy(),
        "n_progressed_organs": n_org.reindex(pids).fillna(0).astype("int64").to_numpy(),
        "first_progression_day": first_day.reindex(pids).astype(float).to_numpy(),
        "first_organs": pd.Series(first_organs.reindex(pids).to_numpy(), dtype="string"),
    })
    extra = pts[["patient_id", *[c for c in OUTCOMES if c in pts.columns]]].copy()
    extra["patient_id"] = extra["patient_id"].astype("string")
    out = out.merge(extra, on="patient_id", how="left")
    return out.sort_values("patient_id", kind="stable").reset_index(drop=True)


__all__ = ["COVARIATES", "EVENT_COLUMNS", "SUMMARY_COLUMNS", "LesionEvents", "derive_events", "lesion_parameters"]

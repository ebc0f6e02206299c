"""Monolix / NONMEM-style datasets: one CSV, a row per target-lesion observation."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ...errors import DataError
from .base import RawTables
from .tidy import read_table_file

_LESION_ID_NAMES = ("lesionid", "lesion_id", "lesid", "tlid", "tumorid", "tumor_id")
_PATIENT_NAMES = ("usubjid", "patient_id", "patientid", "subjid", "subject_id", "patid", "pid")
_TIME_NAMES = ("time", "day", "days", "t")
_DV_NAMES = ("dv", "y", "volume", "volume_mm3")
_CENS_NAMES = ("cens", "censoring", "censored", "blq")
_LIMIT_NAMES = ("limit",)
_V0_NAMES = ("v0",)
_T0_NAMES = ("t0",)
_DIAMETER_NAMES = ("size", "diameter", "diameter_mm", "ld", "ldiam")
_SITE_NAMES = ("organ", "site", "loc", "location", "tuloc", "organ_group")
_STUDY_NAMES = ("studyid", "study_id", "study")


@dataclass(frozen=True)
class MonolixColumns:
    """Column roles of a Monolix-style dataset (``None`` = absent)."""

    id: str
    time: str
    dv: str
    patient: str | None = None
    cens: str | None = None
    limit: str | None = None
    v0: str | None = None
    t0: str | None = None
    site: str | None = None
    diameter: str | None = None
    study: str | None = None
    mdv: str | None = None
    evid: str | None = None


def _find(columns: list[str], names: tuple[str, ...], exclude: set[str] = frozenset()) -> str | None:
    lower = {c.lower(): c for c in columns if c not in exclude}
    for name in names:
        if name in lower:
            return lower[name]
    return None


def _explicit(columns: list[str], given: str | None, role: str, source: str) -> str | None:
    if given is None:
        return None
    lower = {c.lower(): c for c in columns}
    if given.lower() not in lower:
        raise DataError(
            f"{source}: column {given!r} given for {role} is not in the file; columns are {', '.join(columns)}",
            code="missing-column",
        )
    return lower[given.lower()]


def find_columns(
    columns: list[str],
    *,
    source: str = "dataset",
    id: str | None = None,
    time: str | None = None,
    dv: str | None = None,
    cens: str | None = None,
    limit: str | None = None,
    patient: str | None = None,
) -> MonolixColumns:
    """Find column roles by common names (case-insensitive); explicit names win.

    id: a lesion id column (``lesionID``, ``LESION_ID``), else ``ID``, else ``USUBJID``, else another column
    ending in ``ID``. patient: ``USUBJID`` / ``PATIENT_ID`` / ... or ``ID`` when the lesion id is another
    column. time: ``TIME``; dv: ``DV`` / ``Y``; censoring: ``CENS`` / ``CENSORING``; limit: ``LIMIT``.
    """
    id_col = _explicit(columns, id, "--id", source)
    if id_col is None:
        id_col = _find(columns, _LESION_ID_NAMES) or _find(columns, ("id",)) or _find(columns, ("usubjid",))
    if id_col is None:
        ends = [c for c in columns if re.search(r"id$", c, flags=re.IGNORECASE)]
        id_col = ends[0] if ends else None
    time_col = _explicit(columns, time, "--time", source) or _find(columns, _TIME_NAMES)
    dv_col = _explicit(columns, dv, "--dv", source) or _find(columns, _DV_NAMES)
    missing = [role for role, col in (("id", id_col), ("time", time_col), ("dv", dv_col)) if col is None]
    if missing:
        raise DataError(
            f"{source}: no column found for {', '.join(missing)}; columns are {', '.join(columns)}. "
            "Name them with --id COL --time COL --dv COL",
            code="missing-column",
        )
    assert id_col is not None and time_col is not None and dv_col is not None
    pat_col = _explicit(columns, patient, "--patient", source) or _find(columns, _PATIENT_NAMES, {id_col})
    if pat_col is None and id_col.lower() != "id":
        pat_col = _find(columns, ("id",), {id_col})
    return MonolixColumns(
        id=id_col,
        time=time_col,
        dv=dv_col,
        patient=pat_col,
        cens=_explicit(columns, cens, "--cens", source) or _find(columns, _CENS_NAMES),
        limit=_explicit(columns, limit, "--limit", source) or _find(columns, _LIMIT_NAMES),
        v0=_find(columns, _V0_NAMES),
        t0=_find(columns, _T0_NAMES),
        site=_find(columns, _SITE_NAMES),
        diameter=_find(columns, _DIAMETER_NAMES),
        study=_find(columns, _STUDY_NAMES, {id_col}),
        mdv=_find(columns, ("mdv",)),
        evid=_find(columns, ("evid",)),
    )


def _numeric(frame: pd.DataFrame, col: str, source: str, *, allow_missing: bool = False) -> pd.Series:
    text = frame[col].astype("string").str.strip()
    values = pd.to_numeric(text.replace({".": pd.NA, "": pd.NA}), errors="coerce")
    bad = values.isna() & text.notna() & ~text.isin([".", ""])
    if not allow_missing:
        bad |= values.isna()
    if bad.any():
        rows = (np.flatnonzero(bad.to_numpy()) + 2)[:5]
        raise DataError(
            f"{source}: column {col} has {int(bad.sum())} value(s) that are not numbers "
            f"(file rows {', '.join(map(str, rows))}{', ...' if bad.sum() > 5 else ''}); "
            f"{col} must be numeric",
            code="not-numeric",
        )
    return values.astype("float64")


def read_monolix_raw(
    path: str | Path,
    *,
    id: str | None = None,
    time: str | None = None,
    dv: str | None = None,
    cens: str | None = None,
    limit: str | None = None,
    patient: str | None = None,
) -> RawTables:
    """Read a Monolix/NONMEM-style CSV into :class:`RawTables` of target lesions.

    DV is a volume in mm3; a censored row (CENS = 1) holds the limit in DV and, with a LIMIT column, lies
    in the interval [LIMIT, DV]. TIME is days from treatment start (baseline rows may be negative).
    Rows with MDV = 1 or EVID != 0 are skipped. Without a patient column each lesion is its own patient.
    V0 / T0 columns (baseline volume and day regressors) are kept per lesion; a longest-diameter column
    (``size``, ``diameter``, ``LDIAM``) is kept as ``diameter_mm``, but DV stays the volume.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found", code="not-found")
    frame = read_table_file(path)
    if frame.empty:
        raise DataError(f"{path}: the file has a header but no rows", code="empty-file")
    cols = find_columns(
        list(frame.columns), source=str(path), id=id, time=time, dv=dv, cens=cens, limit=limit, patient=patient
    )
    notes: list[str] = []
    keep = pd.Series(True, index=frame.index)
    if cols.mdv is not None:
        keep &= _numeric(frame, cols.mdv, str(path), allow_missing=True).fillna(0) != 1
    if cols.evid is not None:
        keep &= _numeric(frame, cols.evid, str(path), allow_missing=True).fillna(0) == 0
    skipped = int((~keep).sum())
    if skipped:
        notes.append(f"{path}: {skipped} dosing or missing-DV row(s) (MDV = 1 / EVID != 0) skipped")
    frame = frame[keep].reset_index(drop=True)
    src = str(path)
    dv_values = _numeric(frame, cols.dv, src, allow_missing=True)
    time_values = _numeric(frame, cols.time, src)
    no_dv = dv_values.isna()
    if no_dv.any():
        notes.append(f"{path}: {int(no_dv.sum())} row(s) without a {cols.dv} value skipped")
        frame, dv_values, time_values = frame[~no_dv], dv_values[~no_dv], time_values[~no_dv]
        frame = frame.reset_index(drop=True)
        dv_values, time_values = dv_values.reset_index(drop=True), time_values.reset_index(drop=True)

    lesion = frame[cols.id].astype("string").str.strip()
    patient_ids = frame[cols.patient].astype("string").str.strip() if cols.patient else lesion
    if cols.patient:
        # lesion ids need only be unique within a patient in Monolix files; make them global
        per_patient = pd.DataFrame({"p": patient_ids, "l": lesion}).drop_duplicates()
        if per_patient["l"].duplicated().any():
            lesion = patient_ids + "-" + lesion
    censored = (
        _numeric(frame, cols.cens, src, allow_missing=True).fillna(0) != 0
        if cols.cens
        else pd.Series(False, index=frame.index)
    )
    measurements = pd.DataFrame(
        {
            "lesion_id": lesion,
            "day": time_values,
            "diameter_mm": _numeric(frame, cols.diameter, src, allow_missing=True) if cols.diameter else np.nan,
            "volume_mm3": dv_values,
            "below_limit": censored.to_numpy(),
            "lower_limit_mm3": (
                _numeric(frame, cols.limit, src, allow_missing=True).where(censored) if cols.limit else np.nan
            ),
        }
    )
    # Censored rows are "below the limit" by the file's own flag; uncensored rows are measured values
    # even when under the cohort's default limit, so the flag is set explicitly for every row.
    lesion_frame = pd.DataFrame({"lesion_id": lesion, "patient_id": patient_ids})
    if cols.site:
        lesion_frame["site"] = frame[cols.site].astype("string")
    if cols.v0:
        lesion_frame["baseline_volume_mm3"] = _numeric(frame, cols.v0, src, allow_missing=True)
    if cols.t0:
        lesion_frame["baseline_day"] = _numeric(frame, cols.t0, src, allow_missing=True)
    lesions = lesion_frame.groupby("lesion_id", sort=False, as_index=False).first()
    lesions["kind"] = "target"
    patients = pd.DataFrame({"patient_id": lesions["patient_id"].drop_duplicates().to_numpy()})
    if cols.study:
        study = pd.DataFrame({"patient_id": patient_ids, "study_id": frame[cols.study].astype("string")})
        patients = patients.merge(study.drop_duplicates("patient_id"), on="patient_id", how="left")
    used = {k: v for k, v in cols.__dict__.items() if v is not None}
    return RawTables(
        tables={"patients": patients, "lesions": lesions, "measurements": measurements},
        sources={"patients": src, "lesions": src, "measurements": src},
        format="monolix",
        meta={"source": src, "format": "monolix", "columns": used},
        notes=notes,
    )

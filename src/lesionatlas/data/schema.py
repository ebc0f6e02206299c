"""The canonical Cohort schema: the four tables, their columns, dtypes and allowed values.

Every reader produces these tables and every later stage trusts them. Columns marked required must be
present in the input; the others are added, empty, when missing (unknown values are missing, never
guessed).

Beyond DESIGN.md's columns: ``patients.bsa`` (body surface area, m2, a head-and-neck covariate);
``lesions.baseline_volume_mm3`` / ``baseline_day`` (the V0 / T0 regressors when a Monolix dataset gives
them; otherwise the tumor growth model takes the first measurement); ``measurements.lower_limit_mm3``
(for a censored row, the lower end of the interval it lies in, as a Monolix LIMIT column gives it;
missing means plain left-censoring below the limit).

A ``below_limit`` row lies in an interval whose upper end is the quantification limit: in data read
from diameters, ``volume_mm3`` is the (unreliable) measured value under the limit and the upper end is
the cohort's ``limit_mm3``; in a Monolix dataset (``meta.format == "monolix"``), as Monolix reads it,
``volume_mm3`` holds the limit itself (the DV of a censored row).
"""
from __future__ import annotations

from typing import Final

import numpy as np
import pandas as pd

#: Table name -> ordered {column: pandas dtype}.
COLUMNS: Final[dict[str, dict[str, str]]] = {
    "patients": {
        "patient_id": "string",
        "study_id": "string",
        "age": "float64",
        "sex": "string",
        "race": "string",
        "bmi": "float64",
        "bsa": "float64",
        "tumor_type": "string",
        "prior_surgery": "boolean",
        "prior_radiation": "boolean",
        "line": "Int64",
        "treatment": "string",
        "treatment_group": "string",
        "kras": "string",
        "best_response": "string",
        "pfs_days": "float64",
        "pfs_event": "boolean",
        "os_days": "float64",
        "os_event": "boolean",
    },
    "lesions": {
        "lesion_id": "string",
        "patient_id": "string",
        "kind": "string",
        "site": "string",
        "organ": "string",
        "baseline_volume_mm3": "float64",
        "baseline_day": "float64",
    },
    "measurements": {
        "lesion_id": "string",
        "day": "float64",
        "diameter_mm": "float64",
        "volume_mm3": "float64",
        "below_limit": "boolean",
        "lower_limit_mm3": "float64",
    },
    "assessments": {
        "lesion_id": "string",
        "day": "float64",
        "status": "string",
    },
}

#: Columns an input table must have (the rest may be missing).
REQUIRED: Final[dict[str, tuple[str, ...]]] = {
    "patients": ("patient_id",),
    "lesions": ("lesion_id", "patient_id", "kind"),
    "measurements": ("lesion_id", "day"),
    "assessments": ("lesion_id", "day", "status"),
}

#: Primary key of each table.
KEYS: Final[dict[str, tuple[str, ...]]] = {
    "patients": ("patient_id",),
    "lesions": ("lesion_id",),
    "measurements": ("lesion_id", "day"),
    "assessments": ("lesion_id", "day"),
}

TABLES: Final[tuple[str, ...]] = tuple(COLUMNS)

LESION_KINDS: Final[tuple[str, ...]] = ("target", "nontarget", "new")
STATUSES: Final[tuple[str, ...]] = ("present", "absent", "CR", "PR", "SD", "PD", "NE", "new")
SEXES: Final[tuple[str, ...]] = ("M", "F")

#: Spellings of lesion kinds seen in trial data -> canonical kind.
KIND_ALIASES: Final[dict[str, str]] = {
    "target": "target",
    "t": "target",
    "tl": "target",
    "nontarget": "nontarget",
    "non-target": "nontarget",
    "non target": "nontarget",
    "non_target": "nontarget",
    "nt": "nontarget",
    "ntl": "nontarget",
    "new": "new",
    "new lesion": "new",
    "nl": "new",
}

#: Spellings of sex -> M / F.
SEX_ALIASES: Final[dict[str, str]] = {"m": "M", "male": "M", "man": "M", "f": "F", "female": "F", "woman": "F"}

#: Spellings of statuses -> canonical status.
STATUS_ALIASES: Final[dict[str, str]] = {
    "present": "present",
    "absent": "absent",
    "cr": "CR",
    "complete response": "CR",
    "pr": "PR",
    "partial response": "PR",
    "sd": "SD",
    "stable disease": "SD",
    "pd": "PD",
    "progressive disease": "PD",
    "unequivocal": "PD",
    "unequivocal progression": "PD",
    "ne": "NE",
    "not evaluable": "NE",
    "equivocal": "present",
    "non-cr/non-pd": "SD",
    "new": "new",
}


def canonical_kind(values: pd.Series) -> pd.Series:
    """Map lesion-kind spellings to ``target | nontarget | new``; unknown spellings stay as given."""
    text = values.astype("string").str.strip()
    mapped = text.str.lower().map(KIND_ALIASES)
    return mapped.fillna(text).astype("string")


def canonical_status(values: pd.Series) -> pd.Series:
    """Map status spellings to the canonical statuses; unknown spellings stay as given."""
    text = values.astype("string").str.strip()
    mapped = text.str.lower().map(STATUS_ALIASES)
    return mapped.fillna(text).astype("string")


def empty_table(table: str) -> pd.DataFrame:
    """An empty table with the canonical columns and dtypes."""
    return pd.DataFrame({c: pd.Series(dtype=d) for c, d in COLUMNS[table].items()})


_TRUE = {"1", "true", "t", "yes", "y"}
_FALSE = {"0", "false", "f", "no", "n"}


def _to_boolean(values: pd.Series) -> pd.Series:
    if pd.api.types.is_bool_dtype(values):
        return values.astype("boolean")
    if pd.api.types.is_numeric_dtype(values):
        out = pd.Series(pd.NA, index=values.index, dtype="boolean")
        num = pd.to_numeric(values, errors="coerce")
        out[num == 1] = True
        out[num == 0] = False
        return out
    text = values.astype("string").str.strip().str.lower()
    out = pd.Series(pd.NA, index=values.index, dtype="boolean")
    out[text.isin(_TRUE).fillna(False).astype(bool)] = True
    out[text.isin(_FALSE).fillna(False).astype(bool)] = False
    return out


def _to_string(values: pd.Series) -> pd.Series:
    out = values.astype("string").str.strip()
    return out.mask(out == "", pd.NA)


def conform(table: str, frame: pd.DataFrame, *, strict_numeric: bool = False) -> pd.DataFrame:
    """Return ``frame`` with the canonical columns of ``table``, in order, with canonical dtypes.

    Missing optional columns are added empty; extra columns are dropped. Numbers that cannot be parsed
    become missing unless ``strict_numeric`` (then they raise ``ValueError``); validation reports them
    before this is called on user data.
    """
    out = {}
    n = len(frame)
    for col, dtype in COLUMNS[table].items():
        if col not in frame.columns:
            out[col] = pd.Series([pd.NA] * n, index=frame.index, dtype=dtype) if dtype != "float64" else (
                pd.Series(np.nan, index=frame.index, dtype="float64")
            )
            continue
        values = frame[col]
        if dtype == "string":
            out[col] = _to_string(values)
            if col == "sex":
                out[col] = out[col].str.lower().map(SEX_ALIASES).fillna(out[col]).astype("string")
        elif dtype == "float64":
            out[col] = pd.to_numeric(values, errors="raise" if strict_numeric else "coerce").astype("float64")
        elif dtype == "Int64":
            num = pd.to_numeric(values, errors="raise" if strict_numeric else "coerce")
            out[col] = num.round().astype("Int64")
        elif dtype == "boolean":
            out[col] = _to_boolean(values)
        else:  # pragma: no cover - schema uses only the dtypes above
            out[col] = values.astype(dtype)
    return pd.DataFrame(out, index=frame.index).reset_index(drop=True)

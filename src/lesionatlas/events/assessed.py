"""Non-target and new lesions: response and progression days from their assessments.

- A **non-target** lesion progresses on the day of its first assessment with a progression status (``PD``:
  unequivocal progression) and responds on the day of its first response status (``CR``, ``PR`` or
  ``absent``) *before* that progression (a lesion reported gone after it has progressed has not responded
  to treatment). Only on-treatment assessments count (day >= 0); the baseline assessment is not an event.
- A **new** lesion progresses on the day it is first seen: its first assessment with status ``new``, or,
  when it has none, its first assessment of any status; a day before treatment start is set to day 0.
  New lesions have no response (they enter only the progression model).

All grouped operations are pandas group-bys over the whole table (no loop over lesions).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .rules import EventRules


def _first_day(frame: pd.DataFrame, ids: pd.Index) -> np.ndarray:
    """Smallest ``day`` per ``lesion_id`` of ``frame``, aligned to ``ids`` (nan where none)."""
    if frame.empty:
        return np.full(len(ids), np.nan)
    first = frame.groupby("lesion_id", sort=False, observed=True)["day"].min()
    return first.reindex(ids).to_numpy(dtype=float, na_value=np.nan)


def nontarget_days(lesion_ids: pd.Series, assessments: pd.DataFrame, rules: EventRules) -> pd.DataFrame:
    """Latent response and progression days of non-target lesions (nan when the assessments show none).

    Returns
    -------
    DataFrame
        ``lesion_id, response_day, progression_day``, one row per id in ``lesion_ids`` (same order).
    """
    ids = pd.Index(lesion_ids.astype("string"))
    a = assessments[assessments["lesion_id"].isin(ids) & (assessments["day"] >= 0)]
    status = a["status"].astype("string")
    prog = _first_day(a[status.isin(rules.progression_statuses).fillna(False).to_numpy(bool)], ids)
    resp_rows = a[status.isin(rules.response_statuses).fillna(False).to_numpy(bool)]
    if not resp_rows.empty:
        limit = pd.Series(prog, index=ids).reindex(resp_rows["lesion_id"]).to_numpy()
        before = ~(resp_rows["day"].to_numpy(float) >= limit)  # no progression (nan) or strictly before it
        resp_rows = resp_rows[before]
    resp = _first_day(resp_rows, ids)
    return pd.DataFrame({"lesion_id": ids, "response_day": resp, "progression_day": prog})


def new_lesion_days(lesion_ids: pd.Series, assessments: pd.DataFrame, rules: EventRules) -> pd.DataFrame:
    """The day each new lesion is first seen (nan when it has no assessment at all).

    Returns
    -------
    DataFrame
        ``lesion_id, progression_day``, one row per id in ``lesion_ids`` (same order).
    """
    ids = pd.Index(lesion_ids.astype("string"))
    a = assessments[assessments["lesion_id"].isin(ids)]
    flagged = _first_day(a[a["status"].astype("string").isin(rules.new_statuses).fillna(False).to_numpy(bool)], ids)
    anything = _first_day(a, ids)
    day = np.where(np.isnan(flagged), anything, flagged)
    day = np.where(np.isnan(day), day, np.maximum(day, 0.0))
    return pd.DataFrame({"lesion_id": ids, "progression_day": day})


__all__ = ["new_lesion_days", "nontarget_days"]

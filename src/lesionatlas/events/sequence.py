"""Each patient's organ progression sequence: organs ordered by the first progression of any of their lesions.

Rules
-----
- An organ's progression day is the smallest ``progression_day`` with ``progression_event`` among the
  patient's lesions in that organ (target, non-target and new lesions alike); censored lesions do not count.
- ``rank`` orders organs by that day; organs progressing on the **same day share a rank** (the smallest,
  as ``rank(method="min")``: 1, 1, 3, ...), and ``tied`` marks them. ``position`` (1, 2, 3, ...) is a
  strict order used for tuples and encodings: by day, then by organ name, so it is deterministic.
- A lesion without an organ counts as organ ``"unknown"``.
- Patients with no progressing organ have no rows here; they appear in the per-patient table with
  ``n_progressed_organs = 0`` and an empty tuple in :func:`sequence_tuples`.

This is the simulator's convention (truth ``sequences``: ``patient_id, rank, organ, day``).
"""
from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

UNKNOWN_ORGAN = "unknown"

SEQUENCE_COLUMNS: tuple[str, ...] = ("patient_id", "rank", "position", "organ", "day", "tied")


def organ_sequences(events: pd.DataFrame) -> pd.DataFrame:
    """The tidy sequence table from a lesion events table.

    Parameters
    ----------
    events : DataFrame
        At least ``patient_id, organ, progression_day, progression_event``.

    Returns
    -------
    DataFrame
        ``patient_id, rank, position, organ, day, tied``, sorted by patient, day and organ.

    Examples
    --------
    >>> ev = pd.DataFrame({"patient_id": ["P1"] * 3, "organ": ["lung", "liver", "bone"],
    ...                    "progression_day": [84.0, 42.0, 42.0], "progression_event": [True, True, True]})
    >>> organ_sequences(ev)[["rank", "position", "organ"]].to_numpy().tolist()
    [[1, 1, 'bone'], [1, 2, 'liver'], [3, 3, 'lung']]
    """
    hit = events[events["progression_event"].fillna(False).astype(bool)]
    frame = pd.DataFrame({
        "patient_id": hit["patient_id"].astype("string"),
        "organ": hit["organ"].astype("string").fillna(UNKNOWN_ORGAN),
        "day": hit["progression_day"].astype(float),
    })
    first = frame.groupby(["patient_id", "organ"], sort=False, observed=True)["day"].min().reset_index()
    first = first.sort_values(["patient_id", "day", "organ"], kind="stable").reset_index(drop=True)
    grp = first.groupby("patient_id", sort=False, observed=True)
    rank = grp["day"].rank(method="min").astype("int64")
    position = grp.cumcount().astype("int64") + 1
    same = first.groupby(["patient_id", "day"], sort=False, observed=True)["organ"].transform("size")
    out = pd.DataFrame({
        "patient_id": first["patient_id"].astype("string"),
        "rank": rank,
        "position": position,
        "organ": first["organ"].astype("string"),
        "day": first["day"].astype(float),
        "tied": (same > 1).astype(bool),
    })
    return out.reset_index(drop=True)


def sequence_tuples(
    sequences: pd.DataFrame, patient_ids: Iterable[str] | None = None, *, grouped: bool = False
) -> pd.Series:
    """Each patient's sequence as a tuple of organs, in ``position`` order.

    Parameters
    ----------
    sequences : DataFrame
        The table of :func:`organ_sequences`.
    patient_ids : iterable of str, optional
        Patients to list (those without progression get ``()``); default: the patients in ``sequences``.
    grouped : bool
        If true, each element is a tuple of the organs sharing a rank (ties kept together):
        ``(("bone", "liver"), ("lung",))``; else a flat tuple ``("bone", "liver", "lung")``.

    Returns
    -------
    Series
        Indexed by ``patient_id`` (string), values tuples.
    """
    seq = sequences.sort_values(["patient_id", "position"], kind="stable")
    if grouped:
        ranks = seq.groupby(["patient_id", "rank"], sort=True, observed=True)["organ"].agg(tuple)
        tuples = ranks.groupby(level="patient_id", sort=True, observed=True).agg(tuple)
    else:
        tuples = seq.groupby("patient_id", sort=True, observed=True)["organ"].agg(tuple)
    index = pd.Index(pd.Series(list(patient_ids), dtype="string") if patient_ids is not None
                     else tuples.index.astype("string"), name="patient_id")
    tuples.index = tuples.index.astype("string")
    values = [tuples.get(p, ()) for p in index]  # dict lookups, no computation per patient
    return pd.Series(values, index=index, dtype=object, name="sequence")


__all__ = ["SEQUENCE_COLUMNS", "UNKNOWN_ORGAN", "organ_sequences", "sequence_tuples"]

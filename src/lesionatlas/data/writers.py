"""Writing a Cohort in other tools' formats, so the same data can be fitted by Monolix or NONMEM."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..io import atomic_write_text
from .cohort import Cohort


def to_monolix_frame(cohort: Cohort) -> pd.DataFrame:
    """Target-lesion measurements as a Monolix dataset, the layout of the authors' project.

    Columns: ``lesionID, ID`` (patient), ``TIME`` (days from treatment start), ``DV`` (volume, mm3; the
    limit on censored rows), ``CENSORING`` (1 = below the limit), ``LIMIT`` (lower end of the censoring
    interval, 0 unless the cohort says otherwise; ``.`` on observed rows), ``V0, T0`` (first measured
    volume and its day, the model's regressors), ``ORGAN``.

    Lesions ordered as in the cohort; a row per measurement with a volume.
    """
    limit = float(cohort.meta.get("limit_mm3", 200.0))
    m = cohort.measurements.dropna(subset=["volume_mm3"])
    les = cohort.lesions.set_index("lesion_id")
    m = m[m["lesion_id"].isin(les.index[les["kind"] == "target"])]
    first = m.groupby("lesion_id", sort=False).first()
    v0 = les["baseline_volume_mm3"].reindex(first.index).fillna(first["volume_mm3"])
    t0 = les["baseline_day"].reindex(first.index).fillna(first["day"])
    below = m["below_limit"].fillna(False).to_numpy(dtype=bool)
    dv = np.where(below, np.maximum(m["volume_mm3"].to_numpy(), limit), m["volume_mm3"].to_numpy())
    lower = m["lower_limit_mm3"].fillna(0.0).to_numpy()
    frame = pd.DataFrame(
        {
            "lesionID": m["lesion_id"].to_numpy(),
            "ID": les.loc[m["lesion_id"], "patient_id"].to_numpy(),
            "TIME": m["day"].to_numpy(),
            "DV": dv,
            "CENSORING": below.astype(int),
            "LIMIT": np.where(below, lower, np.nan),
            "V0": v0.loc[m["lesion_id"]].to_numpy(),
            "T0": t0.loc[m["lesion_id"]].to_numpy(),
            "ORGAN": les.loc[m["lesion_id"], "organ"].to_numpy(),
        }
    )
    return frame


def write_monolix(cohort: Cohort, path: str | Path) -> Path:
    """Write :func:`to_monolix_frame` as CSV (``.`` for missing, as Monolix reads it), atomically."""
    path = Path(path)
    text = to_monolix_frame(cohort).to_csv(index=False, na_rep=".", lineterminator="\n", float_format="%.10g")
    atomic_write_text(path, text)
    return path

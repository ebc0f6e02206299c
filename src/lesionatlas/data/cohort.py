"""The canonical Cohort: four tidy tables that every reader produces and every stage trusts."""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import DEFAULT_AXIS_RATIO, DEFAULT_LIMIT_MM3
from ..errors import DataWarning
from ..io import write_result_dir
from .organs import OrganMap, map_sites
from .schema import COLUMNS, TABLES, canonical_kind, canonical_status, conform


def volume_from_diameter(diameter_mm: Any, axis_ratio: float = DEFAULT_AXIS_RATIO) -> Any:
    r"""Ellipsoid-like lesion volume from its longest diameter.

    .. math:: V = \frac{L S^2}{2}, \qquad S = L / r

    with :math:`L` the longest diameter (mm), :math:`r` the axis ratio (default 1.31) and :math:`V` in mm3.

    Examples
    --------
    >>> round(float(volume_from_diameter(20.0)), 2)
    2330.87
    """
    d = np.asarray(diameter_mm, dtype=float) if not isinstance(diameter_mm, pd.Series) else diameter_mm
    return d * (d / axis_ratio) ** 2 / 2.0


def diameter_from_volume(volume_mm3: Any, axis_ratio: float = DEFAULT_AXIS_RATIO) -> Any:
    """Inverse of :func:`volume_from_diameter`: ``L = (2 V r^2)^(1/3)``."""
    v = np.asarray(volume_mm3, dtype=float) if not isinstance(volume_mm3, pd.Series) else volume_mm3
    return np.cbrt(2.0 * v * axis_ratio**2)


@dataclass(frozen=True, eq=False)
class Cohort:
    """A cohort of patients, their lesions, target-lesion measurements and lesion assessments.

    Attributes
    ----------
    patients, lesions, measurements, assessments : DataFrame
        The canonical tables (columns and dtypes in :mod:`lesionatlas.data.schema`).
    meta : dict
        Where the data came from (``source``, ``format``), ``axis_ratio`` and ``limit_mm3`` used.

    Build one with :meth:`from_tables` (which derives volumes, flags and organs) or a reader.
    """

    patients: pd.DataFrame
    lesions: pd.DataFrame
    measurements: pd.DataFrame
    assessments: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ building
    @classmethod
    def from_tables(
        cls,
        patients: pd.DataFrame,
        lesions: pd.DataFrame,
        measurements: pd.DataFrame,
        assessments: pd.DataFrame | None = None,
        *,
        axis_ratio: float = DEFAULT_AXIS_RATIO,
        limit_mm3: float = DEFAULT_LIMIT_MM3,
        organ_map: OrganMap | None = None,
        meta: dict[str, Any] | None = None,
        warn_unmapped: bool = True,
    ) -> Cohort:
        """Conform raw tables to the schema and derive what can be derived.

        - ``volume_mm3`` from ``diameter_mm`` where the volume is missing (:func:`volume_from_diameter`);
        - ``below_limit`` = volume < ``limit_mm3`` where not given;
        - ``organ`` from ``site`` through the organ map where the organ is missing;
        - lesion kinds and statuses in their canonical spelling.

        Inputs are not modified. Rows identical after conversion are dropped; rows are sorted by their keys.
        ``warn_unmapped=False`` silences the unknown-site warning (validation has reported it already).
        """
        pts = conform("patients", patients).drop_duplicates(ignore_index=True)
        les = conform("lesions", lesions).drop_duplicates(ignore_index=True)
        mea = conform("measurements", measurements).drop_duplicates(ignore_index=True)
        ass = conform("assessments", assessments if assessments is not None else pd.DataFrame())
        ass = ass.drop_duplicates(ignore_index=True)
        les["kind"] = canonical_kind(les["kind"])
        ass["status"] = canonical_status(ass["status"])
        need_organ = les["organ"].isna()
        if need_organ.any():
            les.loc[need_organ, "organ"] = map_sites(les.loc[need_organ, "site"], organ_map, warn=warn_unmapped).to_numpy()
        need_volume = mea["volume_mm3"].isna() & mea["diameter_mm"].notna()
        mea.loc[need_volume, "volume_mm3"] = volume_from_diameter(mea.loc[need_volume, "diameter_mm"], axis_ratio)
        flag = mea["below_limit"]
        derived = (mea["volume_mm3"] < limit_mm3).astype("boolean")
        mea["below_limit"] = flag.fillna(derived)
        info = {"axis_ratio": float(axis_ratio), "limit_mm3": float(limit_mm3)}
        info.update(meta or {})
        return cls(
            patients=pts.sort_values("patient_id", kind="stable").reset_index(drop=True),
            lesions=les.sort_values(["patient_id", "lesion_id"], kind="stable").reset_index(drop=True),
            measurements=mea.sort_values(["lesion_id", "day"], kind="stable").reset_index(drop=True),
            assessments=ass.sort_values(["lesion_id", "day"], kind="stable").reset_index(drop=True),
            meta=info,
        )

    # ------------------------------------------------------------------ views
    def table(self, name: str) -> pd.DataFrame:
        """One of the four tables by name."""
        if name not in TABLES:
            raise KeyError(f"unknown table {name!r}; tables are {', '.join(TABLES)}")
        return getattr(self, name)

    @property
    def n_patients(self) -> int:
        return len(self.patients)

    @property
    def n_lesions(self) -> int:
        return len(self.lesions)

    @property
    def target_lesions(self) -> pd.DataFrame:
        """Lesions of kind ``target``."""
        return self.lesions[self.lesions["kind"] == "target"]

    def subset(self, patient_ids: Any) -> Cohort:
        """The cohort restricted to ``patient_ids`` (their lesions, measurements and assessments)."""
        keep = pd.Index(pd.Series(list(patient_ids), dtype="string"))
        pts = self.patients[self.patients["patient_id"].isin(keep)].reset_index(drop=True)
        les = self.lesions[self.lesions["patient_id"].isin(keep)].reset_index(drop=True)
        ids = les["lesion_id"]
        mea = self.measurements[self.measurements["lesion_id"].isin(ids)].reset_index(drop=True)
        ass = self.assessments[self.assessments["lesion_id"].isin(ids)].reset_index(drop=True)
        return replace(self, patients=pts, lesions=les, measurements=mea, assessments=ass, meta=dict(self.meta))

    def counts(self) -> dict[str, int]:
        """Patients, lesions by kind, measurements and assessments."""
        kinds = self.lesions["kind"].value_counts()
        return {
            "patients": self.n_patients,
            "lesions": self.n_lesions,
            "target_lesions": int(kinds.get("target", 0)),
            "nontarget_lesions": int(kinds.get("nontarget", 0)),
            "new_lesions": int(kinds.get("new", 0)),
            "measurements": len(self.measurements),
            "measurements_below_limit": int(self.measurements["below_limit"].fillna(False).sum()),
            "assessments": len(self.assessments),
        }

    def summary(self) -> pd.DataFrame:
        """A tidy table of counts and distributions (``quantity, value``) for people and reports."""
        c = self.counts()
        rows: list[tuple[str, float]] = [(k, float(v)) for k, v in c.items()]
        per_patient = self.lesions.groupby("patient_id").size().reindex(self.patients["patient_id"], fill_value=0)
        if len(per_patient):
            rows.append(("lesions_per_patient_median", float(per_patient.median())))
        per_lesion = self.measurements.groupby("lesion_id").size()
        if len(per_lesion):
            rows.append(("measurements_per_target_lesion_median", float(per_lesion.median())))
        # metastatic organs at baseline: new lesions appear later and are not counted
        baseline = self.lesions[self.lesions["kind"] != "new"]
        organs = baseline.groupby("patient_id")["organ"].nunique()
        organs = organs.reindex(self.patients["patient_id"], fill_value=0)
        if len(organs):
            for k, label in ((1, "1"), (2, "2"), (3, "3")):
                rows.append((f"patients_with_{label}_organs_percent", 100.0 * float((organs == k).mean())))
            rows.append(("patients_with_4plus_organs_percent", 100.0 * float((organs >= 4).mean())))
        return pd.DataFrame(rows, columns=["quantity", "value"])

    def __repr__(self) -> str:
        c = self.counts()
        return (
            f"Cohort({c['patients']} patients, {c['lesions']} lesions "
            f"[{c['target_lesions']} target, {c['nontarget_lesions']} non-target, {c['new_lesions']} new], "
            f"{c['measurements']} measurements, {c['assessments']} assessments)"
        )

    # ------------------------------------------------------------------ files
    def to_dir(self, path: str | Path, *, csv: bool = False, parquet: bool = True) -> Path:
        """Write the four tables (Parquet, and CSV on request) and ``cohort.json`` to ``path``, atomically."""
        return write_result_dir(path, {name: self.table(name) for name in TABLES},
                                {"schema": "lesionatlas.cohort/1", **self.meta}, meta_name="cohort.json",
                                csv=csv, parquet=parquet)

    @classmethod
    def from_dir(cls, path: str | Path) -> Cohort:
        """Read a folder written by :meth:`to_dir` (or any tidy folder; see :func:`read_tidy`)."""
        from .readers.tidy import read_tidy

        return read_tidy(path)

    def equals(self, other: Cohort) -> bool:
        """Same tables (values and dtypes)."""
        return all(self.table(n).equals(other.table(n)) for n in TABLES)


def load_meta(path: Path) -> dict[str, Any]:
    """The ``cohort.json`` beside tidy tables, or an empty dict."""
    meta_path = path / "cohort.json"
    if not meta_path.is_file():
        return {}
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError:
        warnings.warn(f"{meta_path}: not valid JSON; ignored", DataWarning, stacklevel=2)
        return {}
    meta.pop("schema", None)
    return meta


__all__ = ["COLUMNS", "Cohort", "diameter_from_volume", "volume_from_diameter"]

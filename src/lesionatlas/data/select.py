"""Cohort selection with the paper's inclusion criteria, and its CONSORT table.

Zhou et al. (2024) excluded patients (a) without target-lesion longitudinal measurements and (b) whose
baseline scan was more than 12 weeks (84 days) before treatment start. :func:`select_patients` applies
the criteria in that order (each to the patients the previous one kept) and returns a
:class:`Selection`: the selected Cohort, a CONSORT table that a report draws (Fig. 1a), and one row per
excluded patient saying why.

Decisions
---------
- A *scan* of a lesion is a measurement day with a value (a diameter, a volume, or a below-limit flag);
  rows without any value and lesions of kind other than ``target`` do not count. Several rows on one day
  count once.
- The baseline scan of a patient is the earliest scan of any of their target lesions. A patient with no
  target scan at all has no baseline to judge: criterion (b) keeps them (criterion (a) excludes them
  unless it is switched off).
- Only patients are excluded; the lesions of a selected patient are all kept (target lesions with a
  single scan too), as in the paper.
- Excluding patients is the purpose of this step, so it does not warn on a normal run: the counts are
  in :attr:`Selection.consort` and :attr:`Selection.excluded`. It warns
  (:class:`~lesionatlas.errors.ExclusionWarning`) only when no patient is left.

References
----------
Zhou J, et al. Mapping lesion-specific response and progression dynamics and inter-organ variability in
metastatic colorectal cancer. Nat Commun 2024 (Methods, "Data"; Fig. 1a).
"""
from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from ..config import SelectionConfig
from ..errors import ConfigError, DataError, ExclusionWarning
from ..io import write_result_dir
from .cohort import Cohort

#: Columns of :attr:`Selection.consort`, in order.
CONSORT_COLUMNS: Final[tuple[str, ...]] = (
    "step",
    "patients",
    "lesions",
    "target_lesions",
    "measurements",
    "excluded_patients",
    "reason",
)
#: Columns of :attr:`Selection.excluded`, in order.
EXCLUDED_COLUMNS: Final[tuple[str, ...]] = ("patient_id", "step", "reason", "detail")

_SCHEMA = "lesionatlas.selection/1"


@dataclass(frozen=True, eq=False)
class Selection:
    """The patients kept by :func:`select_patients`, and why the others were excluded.

    Attributes
    ----------
    cohort : Cohort
        The selected patients with all their lesions, measurements and assessments.
    consort : DataFrame
        One row per step: ``step, patients, lesions, target_lesions, measurements, excluded_patients,
        reason``. The first step is ``all patients``, the last ``analysed``; each step's ``patients`` is
        the previous step's minus its ``excluded_patients``.
    excluded : DataFrame
        One row per excluded patient: ``patient_id, step, reason, detail`` (the first criterion they
        failed; ``detail`` gives their own numbers).
    config : SelectionConfig
        The criteria applied.
    """

    cohort: Cohort
    consort: pd.DataFrame
    excluded: pd.DataFrame
    config: SelectionConfig = field(default_factory=SelectionConfig)

    @property
    def n_selected(self) -> int:
        """Patients analysed."""
        return self.cohort.n_patients

    @property
    def n_excluded(self) -> int:
        """Patients excluded."""
        return len(self.excluded)

    def summary(self) -> pd.DataFrame:
        """The CONSORT table (stable columns :data:`CONSORT_COLUMNS`)."""
        return self.consort.loc[:, list(CONSORT_COLUMNS)].copy()

    def __repr__(self) -> str:
        total = int(self.consort["patients"].iloc[0]) if len(self.consort) else 0
        steps = self.consort[self.consort["excluded_patients"] > 0]
        why = "; ".join(f"{n:,} {r}" for n, r in zip(steps["excluded_patients"], steps["reason"]))
        head = f"Selection({self.n_selected:,} of {total:,} patients analysed"
        return head + (f"; excluded: {why})" if why else ")")

    # ------------------------------------------------------------------ files
    def to_dir(self, path: str | Path, *, csv: bool = True, parquet: bool = True, cohort: bool = True) -> Path:
        """Write the selection to ``path``, atomically.

        Parameters
        ----------
        path : path
            The folder to create (replaced when it exists).
        csv, parquet : bool
            Formats of ``consort`` and ``excluded``.
        cohort : bool
            Also write the selected cohort to ``path/cohort`` (Parquet), so that :meth:`from_dir` gives
            the whole selection back.

        Returns
        -------
        Path
            ``path``.
        """
        return write_result_dir(
            path, {"consort": self.consort, "excluded": self.excluded},
            {"schema": _SCHEMA, "config": asdict(self.config), "version": _version(),
             "n_selected": self.n_selected, "n_excluded": self.n_excluded},
            meta_name="selection.json", csv=csv, parquet=parquet,
            extra=(lambda tmp: self.cohort.to_dir(tmp / "cohort")) if cohort else None,
        )

    @classmethod
    def from_dir(cls, path: str | Path) -> Selection:
        """Read a folder written by :meth:`to_dir` (with its cohort).

        Raises
        ------
        DataError
            When the folder is not a selection written by :meth:`to_dir`.
        """
        from .readers.detect import cohort_from_raw
        from .readers.tidy import read_table_file, read_tidy_raw

        path = Path(path)
        meta_file = path / "selection.json"
        if not meta_file.is_file() or not (path / "cohort").is_dir():
            raise DataError(f"{path}: not a selection folder (needs selection.json and cohort/)", code="not-found")
        meta = json.loads(meta_file.read_text())
        tables = {}
        for name in ("consort", "excluded"):
            file = path / f"{name}.parquet"
            tables[name] = pd.read_parquet(file) if file.is_file() else read_table_file(path / f"{name}.csv")
        cohort = cohort_from_raw(read_tidy_raw(path / "cohort"), validate=False)
        excluded = tables["excluded"].loc[:, list(EXCLUDED_COLUMNS)].astype("string")
        return cls(cohort=cohort, consort=tables["consort"], excluded=excluded,
                   config=SelectionConfig(**meta.get("config", {})))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lesionatlas")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def target_scans(cohort: Cohort) -> pd.DataFrame:
    """Per patient: the most scans of one target lesion and the day of the first target scan.

    Parameters
    ----------
    cohort : Cohort

    Returns
    -------
    DataFrame
        ``patient_id, max_target_scans, baseline_day``, one row per patient of the cohort (0 scans and a
        missing baseline day for patients without target scans).
    """
    les = cohort.lesions
    targets = les.loc[(les["kind"] == "target").fillna(False).to_numpy(dtype=bool), ["lesion_id", "patient_id"]]
    mea = cohort.measurements
    has_value = (
        np.isfinite(mea["volume_mm3"].to_numpy(dtype=float))
        | np.isfinite(mea["diameter_mm"].to_numpy(dtype=float))
        | mea["below_limit"].fillna(False).to_numpy(dtype=bool)
    )
    usable = mea.loc[has_value & np.isfinite(mea["day"].to_numpy(dtype=float)), ["lesion_id", "day"]]
    scans = usable.merge(targets, on="lesion_id", how="inner")
    per_lesion = scans.groupby(["patient_id", "lesion_id"], sort=False)["day"].nunique()
    per_patient = pd.DataFrame(
        {
            "max_target_scans": per_lesion.groupby(level="patient_id", sort=False).max(),
            "baseline_day": scans.groupby("patient_id", sort=False)["day"].min(),
        }
    )
    out = per_patient.reindex(pd.Index(cohort.patients["patient_id"], name="patient_id"))
    out["max_target_scans"] = out["max_target_scans"].fillna(0).astype("int64")
    out["baseline_day"] = out["baseline_day"].astype("float64")
    return out.reset_index()


def _counts(cohort: Cohort, patient_ids: pd.Index) -> dict[str, int]:
    les = cohort.lesions[cohort.lesions["patient_id"].isin(patient_ids)]
    mea = cohort.measurements[cohort.measurements["lesion_id"].isin(les["lesion_id"])]
    return {
        "patients": len(patient_ids),
        "lesions": len(les),
        "target_lesions": int((les["kind"] == "target").fillna(False).sum()),
        "measurements": len(mea),
    }


def select_patients(cohort: Cohort, config: SelectionConfig | None = None) -> Selection:
    r"""Apply the paper's inclusion criteria and return the selected cohort with its CONSORT table.

    Parameters
    ----------
    cohort : Cohort
        A validated cohort.
    config : SelectionConfig, optional
        The criteria (default ``SelectionConfig()``): ``require_target_measurements`` and
        ``min_target_scans`` for criterion (a), ``max_baseline_days_before`` for criterion (b).

    Returns
    -------
    Selection
        The selected cohort (:meth:`Cohort.subset`), the CONSORT table and the excluded patients.

    Raises
    ------
    ConfigError
        When ``config`` is not a :class:`~lesionatlas.config.SelectionConfig`.

    Warns
    -----
    ExclusionWarning
        When no patient meets the criteria.

    Notes
    -----
    Patients are excluded, in this order, when

    (a) no target lesion has at least ``min_target_scans`` scans (days with a measured value), unless
        ``require_target_measurements`` is false (the step is then left out of the CONSORT table);
    (b) their baseline scan, the earliest scan of any of their target lesions, is on a day
        :math:`d_0 < -\text{max\_baseline\_days\_before}` (day 0 is the first dose).

    References
    ----------
    Zhou J, et al. Nat Commun 2024: 4,308 patients after these exclusions (Fig. 1a).

    Examples
    --------
    >>> import pandas as pd
    >>> cohort = Cohort.from_tables(
    ...     pd.DataFrame({"patient_id": ["P1", "P2"]}),
    ...     pd.DataFrame({"lesion_id": ["L1", "L2"], "patient_id": ["P1", "P2"], "kind": "target",
    ...                   "site": "LIVER"}),
    ...     pd.DataFrame({"lesion_id": ["L1", "L1", "L2", "L2"], "day": [-7, 42, -120, 42],
    ...                   "diameter_mm": [30, 25, 20, 22]}),
    ... )
    >>> selection = select_patients(cohort)
    >>> selection.excluded[["patient_id", "reason"]].values.tolist()
    [['P2', 'baseline scan more than 84 days before day 0']]
    """
    config = SelectionConfig() if config is None else config
    if not isinstance(config, SelectionConfig):
        raise ConfigError(f"config must be a SelectionConfig, got {type(config).__name__}", code="config")
    facts = target_scans(cohort).set_index("patient_id")
    remaining = pd.Index(cohort.patients["patient_id"])
    rows: list[dict[str, Any]] = [{"step": "all patients", **_counts(cohort, remaining), "excluded_patients": 0,
                                   "reason": ""}]
    excluded: list[pd.DataFrame] = []

    def apply(step: str, reason: str, fails: pd.Series, detail: pd.Series) -> None:
        nonlocal remaining
        out = remaining[fails.reindex(remaining).fillna(False).to_numpy(dtype=bool)]
        remaining = remaining.difference(out, sort=False)
        rows.append({"step": step, **_counts(cohort, remaining), "excluded_patients": len(out), "reason": reason})
        excluded.append(pd.DataFrame({"patient_id": out, "step": step, "reason": reason,
                                      "detail": detail.reindex(out).to_numpy()}))

    if config.require_target_measurements:
        n = config.min_target_scans
        scans = facts["max_target_scans"]
        apply(
            f"target-lesion longitudinal measurements ({n}+ scans of a target lesion)",
            f"no target lesion with at least {n} scans",
            scans < n,
            "most scans of one target lesion: " + scans.astype(str),
        )
    limit = config.max_baseline_days_before
    baseline = facts["baseline_day"]
    apply(
        f"baseline scan within {limit:g} days before day 0",
        f"baseline scan more than {limit:g} days before day 0",
        baseline < -limit,
        baseline.map(lambda d: f"baseline scan on day {d:g}"),
    )
    rows.append({"step": "analysed", **_counts(cohort, remaining), "excluded_patients": 0, "reason": ""})

    consort = pd.DataFrame(rows, columns=list(CONSORT_COLUMNS))
    for col in CONSORT_COLUMNS[1:-1]:
        consort[col] = consort[col].astype("int64")
    excluded_frame = (
        pd.concat(excluded, ignore_index=True) if excluded else pd.DataFrame(columns=list(EXCLUDED_COLUMNS))
    )
    excluded_frame = excluded_frame.loc[:, list(EXCLUDED_COLUMNS)].astype("string").reset_index(drop=True)
    if len(remaining) == 0 and cohort.n_patients:
        warnings.warn(
            f"no patient of {cohort.n_patients:,} meets the inclusion criteria ("
            + "; ".join(f"{r['excluded_patients']:,} excluded: {r['reason']}" for r in rows if r["excluded_patients"])
            + "); check the measurements' days and lesion kinds, or relax the selection config",
            ExclusionWarning,
            stacklevel=2,
        )
    return Selection(cohort=cohort.subset(remaining), consort=consort, excluded=excluded_frame, config=config)


__all__ = ["CONSORT_COLUMNS", "EXCLUDED_COLUMNS", "Selection", "select_patients", "target_scans"]

"""Validation at the door: every rule runs, every problem is reported, nothing is modified."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import DataError, LesionAtlasError
from .organs import OrganMap
from .readers.base import RawTables
from .schema import REQUIRED

REPORT_COLUMNS = ("rule", "severity", "code", "table", "column", "n", "ids", "message")


@dataclass(frozen=True, eq=False)
class ValidationReport:
    """All problems found in a dataset.

    Attributes
    ----------
    problems : DataFrame
        One row per problem: ``rule, severity (error | warning), code, table, column, n (rows or ids
        concerned), ids (first few), message``.
    source : str
        What was validated.
    """

    problems: pd.DataFrame
    source: str = ""
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def errors(self) -> pd.DataFrame:
        return self.problems[self.problems["severity"] == "error"]

    @property
    def warnings(self) -> pd.DataFrame:
        return self.problems[self.problems["severity"] == "warning"]

    @property
    def ok(self) -> bool:
        """True when the data are usable (no errors; warnings allowed)."""
        return self.errors.empty

    def error_messages(self) -> list[str]:
        return list(self.errors["message"])

    def warning_messages(self) -> list[str]:
        return list(self.warnings["message"])

    def raise_for_errors(self) -> None:
        """Raise :class:`DataError` listing every error (the code of the first)."""
        if self.ok:
            return
        errs = self.errors
        lines = [f"{len(errs)} problem(s) make the data unusable:"] + [f"  - {m}" for m in errs["message"]]
        raise DataError("\n".join(lines), code=str(errs["code"].iloc[0]))

    def summary(self) -> pd.DataFrame:
        """The problems table (stable columns)."""
        return self.problems.loc[:, list(REPORT_COLUMNS)]

    def __repr__(self) -> str:
        return f"ValidationReport({len(self.errors)} errors, {len(self.warnings)} warnings)"


class _Collector:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(
        self,
        rule: str,
        severity: str,
        code: str,
        table: str,
        column: str,
        message: str,
        ids: Any = (),
        n: int | None = None,
    ) -> None:
        ids = [str(i) for i in list(ids)]
        self.rows.append(
            {
                "rule": rule,
                "severity": severity,
                "code": code,
                "table": table,
                "column": column,
                "n": int(n if n is not None else len(ids)),
                "ids": ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else ""),
                "message": message,
            }
        )

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=list(REPORT_COLUMNS))


def _first(ids: Any, k: int = 5) -> str:
    ids = [str(i) for i in list(ids)]
    return ", ".join(ids[:k]) + (f" and {len(ids) - k} more" if len(ids) > k else "")


def _check_required_columns(raw: RawTables, out: _Collector) -> set[str]:
    """Tables whose required columns are all present."""
    usable = set()
    for table, required in REQUIRED.items():
        if table not in raw.tables:
            if table != "assessments":
                out.add("required-table", "error", "missing-table", table, "",
                        f"{raw.source(table)}: table {table} is missing")
            continue
        frame = raw.tables[table]
        missing = [c for c in required if c not in frame.columns]
        if missing:
            out.add(
                "required-columns", "error", "missing-column", table, ", ".join(missing),
                f"{raw.source(table)}: required column(s) {', '.join(missing)} missing from {table}; "
                f"columns found: {', '.join(map(str, frame.columns)) or 'none'}",
            )
        else:
            usable.add(table)
    return usable


def _check_cross_ids(raw: RawTables, usable: set[str], out: _Collector) -> None:
    t = raw.tables
    if {"patients", "lesions"} <= usable:
        unknown = set(t["lesions"]["patient_id"].dropna().astype(str)) - set(t["patients"]["patient_id"].dropna().astype(str))
        if unknown:
            out.add("known-ids", "error", "unknown-id", "lesions", "patient_id",
                    f"{raw.source('lesions')}: {len(unknown)} patient id(s) in lesions are not in patients "
                    f"({_first(sorted(unknown))}); add them to patients or remove their lesions",
                    ids=sorted(unknown))
    if "lesions" in usable:
        known = set(t["lesions"]["lesion_id"].dropna().astype(str))
        for table in ("measurements", "assessments"):
            if table in usable:
                unknown = set(t[table]["lesion_id"].dropna().astype(str)) - known
                if unknown:
                    out.add("known-ids", "error", "unknown-id", table, "lesion_id",
                            f"{raw.source(table)}: {len(unknown)} lesion id(s) in {table} are not in lesions "
                            f"({_first(sorted(unknown))}); add them to lesions or remove their rows",
                            ids=sorted(unknown))


def validate_tables(raw: RawTables, *, organ_map: OrganMap | None = None) -> ValidationReport:
    """Run every rule on raw tables and return the report (never raises for bad data)."""
    out = _Collector()
    usable = _check_required_columns(raw, out)
    _check_cross_ids(raw, usable, out)
    return ValidationReport(problems=out.frame(), source=str(raw.meta.get("source", "")))


def validate_cohort(
    data: str | Path | RawTables,
    format: str | None = None,
    *,
    organ_map: OrganMap | None = None,
    **options: Any,
) -> ValidationReport:
    """Check a dataset (path or raw tables) and report all problems; the data are never modified.

    A reader failure (missing file, unreadable file, unknown format) becomes one error row.
    """
    if isinstance(data, RawTables):
        return validate_tables(data, organ_map=organ_map)
    from .readers.detect import read_raw

    try:
        raw = read_raw(data, format, **options)
    except LesionAtlasError as exc:
        out = _Collector()
        out.add("readable", "error", exc.code, "", "", exc.message)
        return ValidationReport(problems=out.frame(), source=str(data))
    return validate_tables(raw, organ_map=organ_map)

"""Validation at the door: every rule runs, every problem is reported, nothing is modified.

:func:`validate_tables` checks the raw tables a reader returns (values may still be text) against the
canonical schema of :mod:`lesionatlas.data.schema` and returns a :class:`ValidationReport`: one row per
problem with a short stable ``code``. Problems of severity ``error`` make the data unusable
(``lesionatlas validate`` exits with code 2, :func:`~lesionatlas.data.read_cohort` raises
:class:`~lesionatlas.errors.DataError` listing them all); problems of severity ``warning`` describe dirty
but usable data (the Cohort is built; each warning becomes a :class:`~lesionatlas.errors.DataWarning`).

The codes, their severity and meaning are in :data:`RULES` (and :func:`validation_rules` as a table).

Decisions
---------
- Identical duplicate rows are judged on the canonical columns after conversion (``"30"`` and
  ``"30.0"`` are the same diameter; an extra column such as a visit label is ignored): they are a
  warning and are dropped. Rows with the same key but different values are an error.
- Measurements of non-target or new lesions are a *warning* (``nontarget-measured``), not an error:
  some sponsors record sizes of non-target lesions, the data stay usable, and every later stage uses
  target-lesion measurements only (selection and the tumor growth model filter on ``kind``).
- Diameters above :data:`MAX_DIAMETER_MM` (400 mm) and volumes above the volume of such a diameter are
  implausible (an error: usually centimetres read as millimetres twice, or a volume in a diameter
  column). Days further than :data:`MAX_ABS_DAY` (20 years) from day 0 are an error too: such numbers are
  dates or another unit, not days from treatment start.
- Optional patient and lesion columns whose values cannot be parsed become missing with a warning
  naming the column (unknown values are missing, never guessed).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import pandas as pd

from ..errors import DataError, LesionAtlasError
from .cohort import volume_from_diameter
from .organs import OrganMap, load_organ_map
from .readers.base import RawTables
from .schema import (
    COLUMNS,
    KIND_ALIASES,
    LESION_KINDS,
    REQUIRED,
    SEXES,
    STATUSES,
    canonical_kind,
    canonical_status,
    conform,
)

REPORT_COLUMNS: Final[tuple[str, ...]] = ("rule", "severity", "code", "table", "column", "n", "ids", "message")

Severity = Literal["error", "warning"]

#: Longest plausible lesion diameter (mm); larger values are reported as ``implausible``.
MAX_DIAMETER_MM: Final[float] = 400.0
#: Largest plausible |day| relative to treatment start (20 years); larger values look like dates.
MAX_ABS_DAY: Final[float] = 7305.0

#: Every problem code -> (severity, what it means). Reader failures (``missing-file``, ``empty-file``,
#: ``unreadable-file``, ``not-found``, ``unknown-format``, ...) are errors with the reader's own code.
RULES: Final[dict[str, tuple[Severity, str]]] = {
    "missing-table": ("error", "a required table (patients, lesions, measurements) is missing"),
    "empty-table": ("error", "a required table has a header but no rows"),
    "missing-column": ("error", "a required column is missing (measurements need diameter_mm or volume_mm3)"),
    "missing-id": ("error", "an id is missing (blank) on some rows"),
    "unknown-id": ("error", "an id refers to a patient or lesion that its parent table does not have"),
    "duplicate-id": ("error", "a patient or lesion id is on several rows with different values"),
    "conflicting-patient": ("error", "a lesion belongs to different patients on different rows"),
    "missing-value": ("error", "a required value (day, kind, status) is missing"),
    "not-numeric": ("error", "a day, diameter or volume is not a number"),
    "not-finite": ("error", "a day, diameter or volume is infinite"),
    "negative": ("error", "a diameter or volume is negative"),
    "implausible": ("error", "a diameter, volume or day is outside the plausible range"),
    "unknown-kind": ("error", "a lesion kind is not target, nontarget or new (or a known spelling)"),
    "unknown-status": ("error", "an assessment status is not one of the known statuses"),
    "conflicting-duplicate": ("error", "one lesion has different values on the same day"),
    "no-target-measurements": ("error", "no target lesion has a usable measurement"),
    "duplicate-rows": ("warning", "rows repeat an earlier row; the copies are dropped"),
    "missing-measurement": ("warning", "measurement rows with neither a diameter nor a volume"),
    "nontarget-measured": ("warning", "measurements of non-target or new lesions (not used by the analysis)"),
    "single-measurement": ("warning", "target lesions with a single usable measurement"),
    "unmeasured-lesion": ("warning", "target lesions without a usable measurement"),
    "unassessed-lesion": ("warning", "non-target or new lesions without an assessment"),
    "no-lesions": ("warning", "patients without any lesion"),
    "unmapped-site": ("warning", "site texts the organ map does not know (mapped to 'other')"),
    "missing-site": ("warning", "lesions with neither a site nor an organ (mapped to 'other')"),
    "unknown-sex": ("warning", "sex values other than M and F"),
    "unparseable": ("warning", "values of an optional column that cannot be parsed (they become missing)"),
    "out-of-range": ("warning", "values of an optional column outside their plausible range"),
    "reader-note": ("warning", "something the reader did that a user should know (rows skipped, ...)"),
}

#: Plausible ranges of optional numeric columns (inclusive); values outside are ``out-of-range``.
_OPTIONAL_RANGES: Final[dict[tuple[str, str], tuple[float, float, str]]] = {
    ("patients", "age"): (0.0, 120.0, "years"),
    ("patients", "bmi"): (5.0, 100.0, "kg/m2"),
    ("patients", "bsa"): (0.1, 5.0, "m2"),
    ("patients", "line"): (0.0, 20.0, "line of therapy"),
    ("patients", "pfs_days"): (0.0, MAX_ABS_DAY, "days from treatment start"),
    ("patients", "os_days"): (0.0, MAX_ABS_DAY, "days from treatment start"),
    ("lesions", "baseline_volume_mm3"): (0.0, float("inf"), "mm3"),
    ("lesions", "baseline_day"): (-MAX_ABS_DAY, MAX_ABS_DAY, "days from treatment start"),
    ("measurements", "lower_limit_mm3"): (0.0, float("inf"), "mm3"),
}

#: Text that means "no value" (besides what the CSV reader already turned into NA).
_MISSING_TOKENS: Final[frozenset[str]] = frozenset({"", ".", "na", "n/a", "nan", "null", "none", "<na>"})
_REQUIRED_TABLES: Final[tuple[str, ...]] = ("patients", "lesions", "measurements")
_SIZE_COLUMNS: Final[tuple[str, ...]] = ("diameter_mm", "volume_mm3")


# ---------------------------------------------------------------------------------------------- report
@dataclass(frozen=True, eq=False)
class ValidationReport:
    """All problems found in a dataset.

    Attributes
    ----------
    problems : DataFrame
        One row per problem, errors first: ``rule, severity (error | warning), code, table, column,
        n (rows or ids concerned; 1 for a problem of a whole table or file), ids (the first few),
        message``. :data:`RULES` lists the codes.
    source : str
        What was validated (a path).
    counts : dict
        Rows per table as read (``patients``, ``lesions``, ``measurements``, ``assessments``).

    Examples
    --------
    >>> import pandas as pd
    >>> from lesionatlas.data import RawTables
    >>> raw = RawTables({
    ...     "patients": pd.DataFrame({"patient_id": ["P1"]}),
    ...     "lesions": pd.DataFrame({"lesion_id": ["L1"], "patient_id": ["P1"], "kind": ["target"]}),
    ...     "measurements": pd.DataFrame({"lesion_id": ["L1", "L1"], "day": ["0", "wk6"],
    ...                                   "diameter_mm": ["20", "18"]}),
    ... })
    >>> report = validate_tables(raw)
    >>> report.ok, list(report.errors["code"])
    (False, ['not-numeric'])
    """

    problems: pd.DataFrame
    source: str = ""
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def errors(self) -> pd.DataFrame:
        """The problems that make the data unusable."""
        return self.problems[self.problems["severity"] == "error"]

    @property
    def warnings(self) -> pd.DataFrame:
        """The problems of dirty but usable data."""
        return self.problems[self.problems["severity"] == "warning"]

    @property
    def ok(self) -> bool:
        """True when the data are usable (no errors; warnings allowed)."""
        return self.errors.empty

    @property
    def codes(self) -> list[str]:
        """The codes of all problems, in report order."""
        return list(self.problems["code"])

    def error_messages(self) -> list[str]:
        """The message of every error."""
        return list(self.errors["message"])

    def warning_messages(self) -> list[str]:
        """The message of every warning."""
        return list(self.warnings["message"])

    def raise_for_errors(self) -> None:
        """Raise :class:`~lesionatlas.errors.DataError` listing every error.

        Raises
        ------
        DataError
            When the report has errors; its ``code`` is the first error's code and its message lists
            every error as ``[code] message``.
        """
        if self.ok:
            return
        errs = self.errors
        lines = [f"{len(errs)} problem(s) make the data unusable:"]
        lines += [f"  - [{c}] {m}" for c, m in zip(errs["code"], errs["message"])]
        raise DataError("\n".join(lines), code=str(errs["code"].iloc[0]))

    def summary(self) -> pd.DataFrame:
        """The problems table with its stable columns (:data:`REPORT_COLUMNS`)."""
        return self.problems.loc[:, list(REPORT_COLUMNS)].reset_index(drop=True)

    def to_text(self) -> str:
        """The report for people: a headline, then ``error [code]: message`` / ``warning [code]: ...``."""
        n_err, n_warn = len(self.errors), len(self.warnings)
        what = self.source or "the data"
        verdict = "usable" if self.ok else "NOT usable"
        lines = [f"{what}: {verdict} ({n_err} error{'s' * (n_err != 1)}, {n_warn} warning{'s' * (n_warn != 1)})"]
        problems = self.problems
        for severity, code, message in zip(problems["severity"], problems["code"], problems["message"]):
            lines.append(f"{severity} [{code}]: {message}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        return f"ValidationReport({len(self.errors)} errors, {len(self.warnings)} warnings)"


def validation_rules() -> pd.DataFrame:
    """Every problem code with its severity and meaning (``code, severity, description``)."""
    return pd.DataFrame(
        [(code, sev, text) for code, (sev, text) in RULES.items()], columns=["code", "severity", "description"]
    )


class _Collector:
    """Collects problem rows; the severity of a code comes from :data:`RULES` unless given."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(
        self,
        rule: str,
        code: str,
        table: str,
        column: str,
        message: str,
        ids: Any = (),
        n: int | None = None,
        severity: str | None = None,
    ) -> None:
        ids = [str(i) for i in list(ids)]
        sev = severity or RULES.get(code, ("error", ""))[0]
        self.rows.append(
            {
                "rule": rule,
                "severity": sev,
                "code": code,
                "table": table,
                "column": column,
                "n": int(n if n is not None else (len(ids) or 1)),
                "ids": ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else ""),
                "message": message,
            }
        )

    def frame(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.rows, columns=list(REPORT_COLUMNS))
        frame["n"] = frame["n"].astype("int64")
        order = frame["severity"].map({"error": 0, "warning": 1}).fillna(2)
        return frame.iloc[np.argsort(order.to_numpy(), kind="stable")].reset_index(drop=True)


# ---------------------------------------------------------------------------------------------- helpers
def _first(ids: Any, k: int = 5) -> str:
    ids = [str(i) for i in list(ids)]
    return ", ".join(ids[:k]) + (f" and {len(ids) - k} more" if len(ids) > k else "")


def _unique_ids(values: pd.Series) -> list[str]:
    """Distinct non-missing ids in order of appearance."""
    return [str(v) for v in pd.unique(values.dropna())]


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else (plural or word + 's')}"


def _verb(n: int, singular: str, plural: str) -> str:
    """The verb agreeing with a count: ``_verb(1, 'has', 'have') == 'has'``."""
    return singular if n == 1 else plural


def _values(text: pd.Series, k: int = 5) -> str:
    """The most frequent raw values with their counts: ``'baseline' (10), 'wk6' (2)``."""
    counts = text.astype("string").value_counts(dropna=False)
    shown = [f"{'missing' if pd.isna(v) else repr(str(v))} ({c:,})" for v, c in counts.head(k).items()]
    return ", ".join(shown) + (f" and {len(counts) - k} more" if len(counts) > k else "")


def _text(frame: pd.DataFrame, column: str) -> pd.Series:
    return frame[column].astype("string").str.strip()


def _present(frame: pd.DataFrame, column: str) -> pd.Series:
    """True where the raw value is not missing (NA, blank, '.', 'NaN', ...)."""
    if column not in frame.columns:
        return pd.Series(False, index=frame.index)
    text = _text(frame, column)
    missing = text.isna() | text.str.lower().isin(_MISSING_TOKENS).fillna(False).astype(bool)
    return ~missing.astype(bool)


def _isin(values: pd.Series, known: Any) -> np.ndarray:
    """``values.isin(known)`` as a numpy mask, fast for large sets of ids (hash lookup)."""
    index = pd.Index(pd.unique(pd.Series(list(known) if isinstance(known, set) else known, dtype="string").dropna()))
    return index.get_indexer(values.astype("string")) >= 0


def _mask(values: pd.Series) -> np.ndarray:
    """A boolean mask with missing as False."""
    return values.fillna(False).to_numpy(dtype=bool)


@dataclass
class _Context:
    """The raw tables (index reset), their canonical conversion and where each came from."""

    raw: RawTables
    frames: dict[str, pd.DataFrame]
    canon: dict[str, pd.DataFrame]
    dup: dict[str, np.ndarray]
    out: _Collector
    max_diameter_mm: float
    max_volume_mm3: float
    max_abs_day: float

    def where(self, table: str, column: str = "") -> str:
        src = self.raw.source(table)
        loc = f"{table}.{column}" if column else table
        return loc if src == table else f"{src} ({loc})"

    def file(self, table: str) -> str:
        """``' (path)'`` when the table came from a known file, else ``''``."""
        src = self.raw.source(table)
        return "" if src == table else f" ({src})"

    def has(self, table: str, *columns: str) -> bool:
        return table in self.frames and all(c in self.frames[table].columns for c in columns)

    def unique(self, table: str) -> pd.DataFrame:
        """Canonical rows without identical duplicates (what the Cohort will hold)."""
        return self.canon[table][~self.dup[table]]

    def lesion_kind(self) -> pd.Series:
        """lesion_id -> canonical kind (first row of each lesion)."""
        les = self.unique("lesions")
        les = les[les["lesion_id"].notna()].drop_duplicates("lesion_id")
        return pd.Series(canonical_kind(les["kind"]).to_numpy(), index=pd.Index(les["lesion_id"], dtype="string"),
                         dtype="string")


def _make_context(raw: RawTables, max_diameter_mm: float, max_volume_mm3: float, max_abs_day: float) -> _Context:
    frames = {name: frame.reset_index(drop=True) for name, frame in raw.tables.items() if name in COLUMNS}
    canon = {name: conform(name, frame) for name, frame in frames.items()}
    dup = {name: frame.duplicated().to_numpy() for name, frame in canon.items()}
    return _Context(raw, frames, canon, dup, _Collector(), max_diameter_mm, max_volume_mm3, max_abs_day)


def _rows_of_lesions(n_rows: int, lesions: list[str]) -> str:
    """``'12 rows of lesion L0031'`` or ``'12 rows of 3 lesions (L0031, L0032, L0040)'``."""
    rows = _plural(n_rows, "row")
    if len(lesions) == 1:
        return f"{rows} of lesion {lesions[0]}"
    if not lesions:
        return rows
    return f"{rows} of {len(lesions):,} lesions ({_first(lesions)})"


def _row_owner(ctx: _Context, table: str) -> str:
    return {"patients": "patient_id", "lesions": "lesion_id"}.get(table, "lesion_id")


# ---------------------------------------------------------------------------------------------- rules
def _check_tables_and_columns(ctx: _Context) -> None:
    """missing-table, empty-table, missing-column."""
    out = ctx.out
    for table, required in REQUIRED.items():
        if table not in ctx.frames:
            if table in _REQUIRED_TABLES:
                out.add("tables", "missing-table", table, "",
                        f"{ctx.where(table)}: table {table} is missing; a cohort needs patients, lesions and "
                        "measurements tables (assessments are optional)")
            continue
        frame = ctx.frames[table]
        missing = [c for c in required if c not in frame.columns]
        if missing:
            out.add("columns", "missing-column", table, ", ".join(missing),
                    f"{ctx.where(table)}: required column(s) {', '.join(missing)} missing; columns found: "
                    f"{', '.join(map(str, frame.columns)) or 'none'}; rename or add them "
                    f"(required: {', '.join(required)})")
        if table == "measurements" and not any(c in frame.columns for c in _SIZE_COLUMNS):
            out.add("columns", "missing-column", table, "diameter_mm, volume_mm3",
                    f"{ctx.where(table)}: neither diameter_mm nor volume_mm3 is present; measurements need the "
                    "longest diameter in mm (diameter_mm) or the volume in mm3 (volume_mm3)")
        if table in _REQUIRED_TABLES and len(frame) == 0:
            out.add("tables", "empty-table", table, "",
                    f"{ctx.where(table)}: the table has a header but no rows; it needs at least one {table[:-1]}")


def _check_ids(ctx: _Context) -> None:
    """missing-id, duplicate-id, conflicting-patient (lesions with several patients)."""
    out = ctx.out
    id_columns = {
        "patients": ("patient_id",),
        "lesions": ("lesion_id", "patient_id"),
        "measurements": ("lesion_id",),
        "assessments": ("lesion_id",),
    }
    for table, cols in id_columns.items():
        for col in cols:
            if not ctx.has(table, col):
                continue
            missing = ctx.canon[table][col].isna()
            n = int(missing.sum())
            if n:
                rows = (np.flatnonzero(missing.to_numpy())[:5] + 1).tolist()
                out.add("ids", "missing-id", table, col,
                        f"{ctx.where(table, col)}: {_plural(n, 'row')} {_verb(n, 'has', 'have')} no {col} "
                        "(table rows "
                        f"{', '.join(map(str, rows))}{', ...' if n > 5 else ''}); every row needs one",
                        n=n)
    if ctx.has("patients", "patient_id"):
        pts = ctx.unique("patients")
        pts = pts[pts["patient_id"].notna()]
        dup_ids = _unique_ids(pts.loc[pts["patient_id"].duplicated(), "patient_id"])
        if dup_ids:
            out.add("ids", "duplicate-id", "patients", "patient_id",
                    f"{ctx.where('patients', 'patient_id')}: {_plural(len(dup_ids), 'patient id')} "
                    f"({_first(dup_ids)}) {_verb(len(dup_ids), 'is', 'are')} on several rows with different "
                    "values; each patient needs "
                    "exactly one row", ids=dup_ids)
    if ctx.has("lesions", "lesion_id"):
        les = ctx.unique("lesions")
        les = les[les["lesion_id"].notna()]
        dup = les[les["lesion_id"].duplicated(keep=False)]
        if len(dup):
            groups = dup.groupby("lesion_id", sort=False)
            n_patients = groups["patient_id"].nunique(dropna=False)
            multi = [str(i) for i in n_patients.index[n_patients.to_numpy() > 1]]
            if multi and ctx.has("lesions", "patient_id"):
                example = dup[dup["lesion_id"] == multi[0]]["patient_id"]
                out.add("ids", "conflicting-patient", "lesions", "patient_id",
                        f"{ctx.where('lesions', 'lesion_id')}: {_plural(len(multi), 'lesion id')} ({_first(multi)}) "
                        f"{_verb(len(multi), 'belongs', 'belong')} to different patients on different rows "
                        f"(e.g. {multi[0]}: "
                        f"{', '.join(_unique_ids(example)[:3])}); lesion ids must be unique across patients "
                        "(e.g. prefix them with the patient id)", ids=multi)
            same = [str(i) for i in n_patients.index[n_patients.to_numpy() <= 1]]
            if same:
                sub = dup[dup["lesion_id"].isin(same)]
                differ = sub.groupby("lesion_id", sort=False).nunique(dropna=False).max()
                cols = [c for c in differ.index if differ[c] > 1 and c != "lesion_id"]
                out.add("ids", "duplicate-id", "lesions", "lesion_id",
                        f"{ctx.where('lesions', 'lesion_id')}: {_plural(len(same), 'lesion id')} ({_first(same)}) "
                        f"are on several rows with different values (in {', '.join(cols) or 'some column'}); "
                        "each lesion needs exactly one row", ids=same)


def _check_cross_ids(ctx: _Context) -> None:
    """unknown-id across tables; conflicting-patient between a child table's patient_id and lesions."""
    out = ctx.out
    if ctx.has("patients", "patient_id") and ctx.has("lesions", "patient_id"):
        known = ctx.canon["patients"]["patient_id"]
        ids = ctx.canon["lesions"]["patient_id"]
        bad = pd.Series(_mask(ids.notna()) & ~_isin(ids, known), index=ids.index)
        if bad.any():
            unknown = _unique_ids(ids[bad])
            out.add("ids", "unknown-id", "lesions", "patient_id",
                    f"{ctx.where('lesions', 'patient_id')}: {_plural(len(unknown), 'patient id')} "
                    f"({_first(unknown)}) "
                    f"of {_plural(int(bad.sum()), 'lesion')} {_verb(len(unknown), 'is', 'are')} not in the "
                    "patients table"
                    f"{ctx.file('patients')}; add those patients or remove their lesions", ids=unknown)
    if not ctx.has("lesions", "lesion_id"):
        return
    les = ctx.canon["lesions"]
    known_lesions = les["lesion_id"]
    owner = les[les["lesion_id"].notna()].drop_duplicates("lesion_id").set_index("lesion_id")["patient_id"]
    for table in ("measurements", "assessments"):
        if not ctx.has(table, "lesion_id"):
            continue
        ids = ctx.canon[table]["lesion_id"]
        bad = pd.Series(_mask(ids.notna()) & ~_isin(ids, known_lesions), index=ids.index)
        if bad.any():
            unknown = _unique_ids(ids[bad])
            out.add("ids", "unknown-id", table, "lesion_id",
                    f"{ctx.where(table, 'lesion_id')}: {_plural(len(unknown), 'lesion id')} ({_first(unknown)}) on "
                    f"{_plural(int(bad.sum()), 'row')} {_verb(len(unknown), 'is', 'are')} not in the lesions "
                    f"table{ctx.file('lesions')}; "
                    "add those lesions or remove their rows", ids=unknown)
        frame = ctx.frames[table]
        if "patient_id" in frame.columns and ctx.has("lesions", "patient_id"):
            given = _text(frame, "patient_id")
            expected = ids.map(owner)
            clash = _mask(given.notna() & expected.notna() & (given != expected.astype("string")))
            if clash.any():
                lesions = _unique_ids(ids[clash])
                out.add("ids", "conflicting-patient", table, "patient_id",
                        f"{ctx.where(table, 'patient_id')}: {_rows_of_lesions(int(clash.sum()), lesions)} name a "
                        f"different patient than the lesions table does (e.g. {lesions[0]}: "
                        f"{given[clash].iloc[0]} here, {expected[clash].iloc[0]} in lesions); fix the patient id "
                        "or the lesion id", ids=lesions, n=int(clash.sum()))


def _check_days(ctx: _Context, table: str) -> None:
    """Days: missing-value, not-numeric, not-finite, implausible."""
    if not ctx.has(table, "day"):
        return
    out = ctx.out
    frame, canon = ctx.frames[table], ctx.canon[table]
    ids = canon["lesion_id"]
    present = _present(frame, "day").to_numpy()
    day = canon["day"].to_numpy(dtype=float)
    where = ctx.where(table, "day")
    rule_text = "days must be numbers of days relative to treatment start (day 0 = first dose), e.g. -7 or 42"
    missing = ~present
    if missing.any():
        lesions = _unique_ids(ids[missing])
        out.add("numbers", "missing-value", table, "day",
                f"{where}: {_rows_of_lesions(int(missing.sum()), lesions)} "
                f"{_verb(int(missing.sum()), 'has', 'have')} no day; {rule_text}",
                ids=lesions, n=int(missing.sum()))
    not_number = present & np.isnan(day)
    if not_number.any():
        lesions = _unique_ids(ids[not_number])
        out.add("numbers", "not-numeric", table, "day",
                f"{where}: {_rows_of_lesions(int(not_number.sum()), lesions)} "
                f"{_verb(int(not_number.sum()), 'has', 'have')} a day that is not a number "
                f"({_values(_text(frame, 'day')[not_number])}); {rule_text}",
                ids=lesions, n=int(not_number.sum()))
    infinite = np.isinf(day)
    if infinite.any():
        lesions = _unique_ids(ids[infinite])
        out.add("numbers", "not-finite", table, "day",
                f"{where}: {_rows_of_lesions(int(infinite.sum()), lesions)} "
                f"{_verb(int(infinite.sum()), 'has', 'have')} an infinite day; {rule_text}",
                ids=lesions, n=int(infinite.sum()))
    far = np.isfinite(day) & (np.abs(np.nan_to_num(day)) > ctx.max_abs_day)
    if far.any():
        lesions = _unique_ids(ids[far])
        out.add("numbers", "implausible", table, "day",
                f"{where}: {_rows_of_lesions(int(far.sum()), lesions)} {_verb(int(far.sum()), 'has', 'have')} a "
                "day more than "
                f"{ctx.max_abs_day:,.0f} days from day 0 ({_values(_text(frame, 'day')[far])}); these look like "
                f"dates or another unit; {rule_text}", ids=lesions, n=int(far.sum()))


def _check_sizes(ctx: _Context) -> None:
    """Diameters and volumes: not-numeric, not-finite, negative, implausible; missing-measurement."""
    table = "measurements"
    if table not in ctx.frames:
        return
    out = ctx.out
    frame, canon = ctx.frames[table], ctx.canon[table]
    ids = canon["lesion_id"]
    limits = {"diameter_mm": (ctx.max_diameter_mm, "mm", "longest diameters"),
              "volume_mm3": (ctx.max_volume_mm3, "mm3", "volumes")}
    for col, (upper, unit, what) in limits.items():
        if col not in frame.columns:
            continue
        where = ctx.where(table, col)
        present = _present(frame, col).to_numpy()
        value = canon[col].to_numpy(dtype=float)
        allowed = f"{what} must be numbers in {unit}, from 0 to {upper:,.0f} {unit}"
        bad = present & np.isnan(value)
        if bad.any():
            lesions = _unique_ids(ids[bad])
            out.add("numbers", "not-numeric", table, col,
                    f"{where}: {_rows_of_lesions(int(bad.sum()), lesions)} "
                    f"{_verb(int(bad.sum()), 'has', 'have')} a value that is not a number "
                    f"({_values(_text(frame, col)[bad])}); {allowed} (leave a cell empty when the value is "
                    "unknown)", ids=lesions, n=int(bad.sum()))
        inf = np.isinf(value)
        if inf.any():
            lesions = _unique_ids(ids[inf])
            out.add("numbers", "not-finite", table, col,
                    f"{where}: {_rows_of_lesions(int(inf.sum()), lesions)} "
                    f"{_verb(int(inf.sum()), 'has', 'have')} an infinite value; {allowed}",
                    ids=lesions, n=int(inf.sum()))
        finite = np.nan_to_num(value, nan=0.0, posinf=0.0, neginf=0.0)
        neg = finite < 0
        if neg.any():
            lesions = _unique_ids(ids[neg])
            out.add("numbers", "negative", table, col,
                    f"{where}: {_rows_of_lesions(int(neg.sum()), lesions)} "
                    f"{_verb(int(neg.sum()), 'has', 'have')} a negative value "
                    f"({_values(_text(frame, col)[neg])}); {allowed}", ids=lesions, n=int(neg.sum()))
        big = finite > upper
        if big.any():
            lesions = _unique_ids(ids[big])
            out.add("numbers", "implausible", table, col,
                    f"{where}: {_rows_of_lesions(int(big.sum()), lesions)} "
                    f"{_verb(int(big.sum()), 'has', 'have')} a value above {upper:,.0f} {unit} "
                    f"({_values(_text(frame, col)[big])}); {allowed}; check the unit (cm vs mm) and the column",
                    ids=lesions, n=int(big.sum()))
    if any(c in frame.columns for c in _SIZE_COLUMNS) and len(frame):
        none = ~_present(frame, "diameter_mm").to_numpy() & ~_present(frame, "volume_mm3").to_numpy()
        if none.any():
            lesions = _unique_ids(ids[none])
            out.add("coverage", "missing-measurement", table, "diameter_mm, volume_mm3",
                    f"{ctx.where(table)}: {_rows_of_lesions(int(none.sum()), lesions)} "
                    f"{_verb(int(none.sum()), 'has', 'have')} neither a diameter "
                    "nor a volume; they are kept as missing values and not used by the tumor growth model",
                    ids=lesions, n=int(none.sum()))


def _check_vocabulary(ctx: _Context) -> None:
    """unknown-kind, unknown-status (after alias mapping), missing kinds/statuses, unknown-sex."""
    out = ctx.out
    if ctx.has("lesions", "kind"):
        canon = ctx.canon["lesions"]
        kind = canonical_kind(canon["kind"])
        ids = canon["lesion_id"]
        missing = _mask(kind.isna())
        if missing.any():
            lesions = _unique_ids(ids[missing])
            out.add("vocabulary", "missing-value", "lesions", "kind",
                    f"{ctx.where('lesions', 'kind')}: {_plural(int(missing.sum()), 'lesion')} ({_first(lesions)}) "
                    f"{_verb(int(missing.sum()), 'has', 'have')} no kind; kinds are "
                    f"{', '.join(LESION_KINDS)}", ids=lesions, n=int(missing.sum()))
        unknown = _mask(kind.notna() & ~kind.isin(LESION_KINDS))
        if unknown.any():
            lesions = _unique_ids(ids[unknown])
            spellings = ", ".join(k for k in KIND_ALIASES if k not in LESION_KINDS)
            out.add("vocabulary", "unknown-kind", "lesions", "kind",
                    f"{ctx.where('lesions', 'kind')}: {_plural(int(unknown.sum()), 'lesion')} ({_first(lesions)}) "
                    f"{_verb(int(unknown.sum()), 'has', 'have')} a kind that is not known "
                    f"({_values(_text(ctx.frames['lesions'], 'kind')[unknown])}); "
                    f"kinds are {', '.join(LESION_KINDS)} (also accepted, any case: {spellings}); recode them",
                    ids=lesions, n=int(unknown.sum()))
    if ctx.has("assessments", "status"):
        canon = ctx.canon["assessments"]
        status = canonical_status(canon["status"])
        ids = canon["lesion_id"]
        missing = _mask(status.isna())
        if missing.any():
            lesions = _unique_ids(ids[missing])
            out.add("vocabulary", "missing-value", "assessments", "status",
                    f"{ctx.where('assessments', 'status')}: {_rows_of_lesions(int(missing.sum()), lesions)} "
                    f"{_verb(int(missing.sum()), 'has', 'have')} no status; statuses are {', '.join(STATUSES)}; "
                    "remove rows without an assessment",
                    ids=lesions, n=int(missing.sum()))
        unknown = _mask(status.notna() & ~status.isin(STATUSES))
        if unknown.any():
            lesions = _unique_ids(ids[unknown])
            out.add("vocabulary", "unknown-status", "assessments", "status",
                    f"{ctx.where('assessments', 'status')}: {_rows_of_lesions(int(unknown.sum()), lesions)} "
                    f"{_verb(int(unknown.sum()), 'has', 'have')} a status that is not known "
                    f"({_values(_text(ctx.frames['assessments'], 'status')[unknown])}); "
                    f"statuses are {', '.join(STATUSES)} (also accepted, any case: complete response, partial "
                    "response, stable disease, progressive disease, unequivocal, not evaluable, non-CR/non-PD, "
                    "equivocal); recode them", ids=lesions, n=int(unknown.sum()))
    if ctx.has("patients", "sex"):
        canon = ctx.canon["patients"]
        sex = canon["sex"]
        odd = _mask(sex.notna() & ~sex.isin(SEXES))
        if odd.any():
            pts = _unique_ids(canon["patient_id"][odd])
            out.add("vocabulary", "unknown-sex", "patients", "sex",
                    f"{ctx.where('patients', 'sex')}: {_plural(int(odd.sum()), 'patient')} ({_first(pts)}) "
                    f"{_verb(int(odd.sum()), 'has', 'have')} a sex other than M or F ({_values(sex[odd])}); "
                    "they form a group of their own in covariate "
                    "analyses; recode them to M or F (leave unknown values empty)", ids=pts, n=int(odd.sum()))


def _check_optional(ctx: _Context) -> None:
    """Optional numeric and yes/no columns: unparseable (becomes missing), out-of-range."""
    out = ctx.out
    required = {(t, c) for t, cols in REQUIRED.items() for c in cols}
    checked_elsewhere = {("measurements", "day"), ("assessments", "day"),
                         ("measurements", "diameter_mm"), ("measurements", "volume_mm3")}
    for table, frame in ctx.frames.items():
        canon = ctx.canon[table]
        owner = canon[_row_owner(ctx, table)]
        unit = "patient" if table == "patients" else ("lesion" if table == "lesions" else "row")
        for col, dtype in COLUMNS[table].items():
            if col not in frame.columns or (table, col) in required or (table, col) in checked_elsewhere:
                continue
            if dtype not in ("float64", "Int64", "boolean"):
                continue
            where = ctx.where(table, col)
            present = _present(frame, col).to_numpy()
            values = canon[col]
            lost = present & _mask(values.isna())
            if dtype == "float64":
                lost |= np.isinf(values.to_numpy(dtype=float))
            if lost.any():
                ids = _unique_ids(owner[lost])
                allowed = ("yes/no values (yes, no, true, false, y, n, 1, 0)" if dtype == "boolean"
                           else "whole numbers" if dtype == "Int64" else "finite numbers")
                out.add("optional-values", "unparseable", table, col,
                        f"{where}: {_plural(int(lost.sum()), unit)} ({_first(ids)}) "
                        f"{_verb(int(lost.sum()), 'has', 'have')} a value that cannot be read "
                        f"({_values(_text(frame, col)[lost])}); {col} takes {allowed}; these values are treated as "
                        "missing", ids=ids, n=int(lost.sum()))
            if (table, col) in _OPTIONAL_RANGES:
                low, high, unit_text = _OPTIONAL_RANGES[(table, col)]
                num = values.astype("float64").to_numpy(dtype=float, na_value=np.nan)
                outside = np.isfinite(num) & ((num < low) | (num > high))
                if outside.any():
                    ids = _unique_ids(owner[outside])
                    out.add("optional-values", "out-of-range", table, col,
                            f"{where}: {_plural(int(outside.sum()), unit)} ({_first(ids)}) "
                            f"{_verb(int(outside.sum()), 'has', 'have')} a value outside "
                            f"{low:g} to {high:g} {unit_text} ({_values(_text(frame, col)[outside])}); check the "
                            "unit or leave unknown values empty", ids=ids, n=int(outside.sum()))


def _check_duplicates(ctx: _Context) -> None:
    """duplicate-rows (warning) and conflicting-duplicate (same lesion and day, different values)."""
    out = ctx.out
    for table, dup in ctx.dup.items():
        n = int(dup.sum())
        if n:
            owner = ctx.canon[table][_row_owner(ctx, table)]
            ids = _unique_ids(owner[dup])
            out.add("duplicates", "duplicate-rows", table, "",
                    f"{ctx.where(table)}: {_plural(n, 'row')} {_verb(n, 'repeats', 'repeat')} an earlier row "
                    f"({_first(ids)}); the copies "
                    "are dropped", ids=ids, n=n)
    for table, what in (("measurements", "values"), ("assessments", "statuses")):
        if not ctx.has(table, "lesion_id", "day"):
            continue
        rows = ctx.unique(table)
        rows = rows[rows["lesion_id"].notna() & rows["day"].notna()]
        clash = rows[rows.duplicated(["lesion_id", "day"], keep=False)]
        if clash.empty:
            continue
        pairs = clash.drop_duplicates(["lesion_id", "day"])
        lesions = _unique_ids(pairs["lesion_id"])
        value_cols = [c for c in (("diameter_mm", "volume_mm3") if table == "measurements" else ("status",))
                      if c in ctx.frames[table].columns]
        examples = []
        for lesion, day in zip(pairs["lesion_id"].head(3), pairs["day"].head(3)):
            sub = clash[(clash["lesion_id"] == lesion) & (clash["day"] == day)]
            shown = "; ".join(
                f"{c} " + " vs ".join("missing" if pd.isna(v) else f"{v:g}" if isinstance(v, float) else str(v)
                                      for v in pd.unique(sub[c]))
                for c in value_cols if sub[c].nunique(dropna=False) > 1
            )
            examples.append(f"{lesion} on day {day:g}" + (f": {shown}" if shown else ""))
        out.add("duplicates", "conflicting-duplicate", table, "lesion_id, day",
                f"{ctx.where(table)}: {_plural(len(pairs), 'lesion-day pair')} of {_plural(len(lesions), 'lesion')} "
                f"{_verb(len(pairs), 'has', 'have')} several rows with different {what} ({'; '.join(examples)}"
                f"{'; ...' if len(pairs) > 3 else ''}); keep one row per lesion and day",
                ids=lesions, n=len(pairs))


def _check_coverage(ctx: _Context) -> None:
    """no-target-measurements, nontarget-measured, single-measurement, unmeasured-lesion,
    unassessed-lesion, no-lesions."""
    out = ctx.out
    if not ctx.has("lesions", "lesion_id", "kind"):
        return
    kind = ctx.lesion_kind()
    targets = kind.index[_mask(kind == "target")]
    if ctx.has("measurements", "lesion_id"):
        mea = ctx.unique("measurements")
        m_kind = mea["lesion_id"].map(kind).astype("string")
        other = _mask(m_kind.isin(["nontarget", "new"]))
        if other.any():
            lesions = _unique_ids(mea["lesion_id"][other])
            out.add("coverage", "nontarget-measured", "measurements", "lesion_id",
                    f"{ctx.where('measurements')}: {_rows_of_lesions(int(other.sum()), lesions)} "
                    f"{_verb(int(other.sum()), 'measures a lesion that is', 'measure lesions that are')} not "
                    "target lesions (their kind is nontarget or new in the lesions table); the "
                    "analysis uses target-lesion measurements only; if these lesions are target lesions, fix "
                    "their kind", ids=lesions, n=int(other.sum()))
        day = mea["day"].to_numpy(dtype=float)
        size = np.zeros(len(mea), dtype=bool)
        for col in _SIZE_COLUMNS:
            if col in ctx.frames["measurements"].columns:
                size |= np.isfinite(mea[col].to_numpy(dtype=float))
        usable = np.isfinite(day) & size & _mask(m_kind == "target")
        scans = mea[usable].groupby("lesion_id")["day"].nunique()
        scans = scans.reindex(pd.Index(targets, dtype="string"), fill_value=0)
        if len(ctx.frames["measurements"]) and len(targets) and not usable.any():
            out.add("coverage", "no-target-measurements", "measurements", "",
                    f"{ctx.where('measurements')}: no target lesion has a usable measurement (a day and a "
                    f"diameter or volume) among {len(ctx.frames['measurements']):,} rows; the tumor growth model "
                    "needs target-lesion measurements; check the lesion kinds and the measurement columns")
        elif len(ctx.frames["measurements"]) and not len(targets) and len(kind):
            out.add("coverage", "no-target-measurements", "lesions", "kind",
                    f"{ctx.where('lesions', 'kind')}: none of {_plural(len(kind), 'lesion')} is a target lesion, "
                    "so no measurement can be used; target lesions have kind target")
        once = [str(i) for i in scans.index[scans.to_numpy() == 1]]
        if once:
            out.add("coverage", "single-measurement", "lesions", "lesion_id",
                    f"{ctx.where('measurements')}: {_plural(len(once), 'target lesion')} ({_first(once)}) "
                    f"{_verb(len(once), 'has', 'have')} a single usable measurement; they add a baseline but no "
                    "change over time", ids=once)
        never = [str(i) for i in scans.index[scans.to_numpy() == 0]]
        if never and usable.any():
            out.add("coverage", "unmeasured-lesion", "lesions", "lesion_id",
                    f"{ctx.where('lesions')}: {_plural(len(never), 'target lesion')} ({_first(never)}) "
                    f"{_verb(len(never), 'has', 'have')} no usable measurement in the measurements "
                    f"table{ctx.file('measurements')}; they are kept but carry no data",
                    ids=never)
    assessed_kinds = kind[_mask(kind.isin(["nontarget", "new"]))]
    if len(assessed_kinds):
        if ctx.has("assessments", "lesion_id"):
            seen = set(ctx.canon["assessments"]["lesion_id"].dropna())
            where_text = f"in the assessments table{ctx.file('assessments')}"
        else:
            seen, where_text = set(), "(the dataset has no assessments table)"
        lacking = [str(i) for i in assessed_kinds.index if i not in seen]
        if lacking:
            out.add("coverage", "unassessed-lesion", "lesions", "lesion_id",
                    f"{ctx.where('lesions')}: {_plural(len(lacking), 'non-target or new lesion')} "
                    f"({_first(lacking)}) "
                    f"{_verb(len(lacking), 'has', 'have')} no assessment {where_text}; their response and "
                    "progression cannot be timed",
                    ids=lacking)
    if ctx.has("patients", "patient_id") and ctx.has("lesions", "patient_id"):
        with_lesions = ctx.canon["lesions"]["patient_id"]
        pts = ctx.canon["patients"]["patient_id"].dropna()
        alone = _unique_ids(pts[~_isin(pts, with_lesions)])
        if alone:
            out.add("coverage", "no-lesions", "patients", "patient_id",
                    f"{ctx.where('patients')}: {_plural(len(alone), 'patient')} ({_first(alone)}) "
                    f"{_verb(len(alone), 'has', 'have')} no lesion in "
                    f"the lesions table{ctx.file('lesions')}; they are kept but excluded at patient "
                    "selection", ids=alone)


def _check_sites(ctx: _Context, organ_map: OrganMap | None) -> None:
    """unmapped-site and missing-site for lesions whose organ is not given.

    A dataset without any site or organ column (a Monolix file) is not warned about: its lesions are all
    'other', which only matters to organ-level analyses.
    """
    if "lesions" not in ctx.frames:
        return
    out = ctx.out
    les = ctx.unique("lesions")
    need = les["organ"].isna()
    site = les["site"]
    no_site = _mask(need & site.isna())
    recorded = any(c in ctx.frames["lesions"].columns for c in ("site", "organ"))
    if no_site.any() and recorded and ctx.has("lesions", "lesion_id"):
        ids = _unique_ids(les["lesion_id"][no_site])
        out.add("organs", "missing-site", "lesions", "site",
                f"{ctx.where('lesions', 'site')}: {_plural(int(no_site.sum()), 'lesion')} ({_first(ids)}) "
                f"{_verb(int(no_site.sum()), 'has', 'have')} neither a site nor an organ; they are counted as "
                "organ 'other'; add the site text",
                ids=ids, n=int(no_site.sum()))
    texts = site[_mask(need & site.notna())]
    if texts.empty:
        return
    omap = organ_map or load_organ_map()
    uniques = pd.unique(texts)
    unknown = [s for s in uniques if omap.lookup(str(s)) is None]
    if unknown:
        hit = texts[texts.isin(unknown)]
        out.add("organs", "unmapped-site", "lesions", "site",
                f"{ctx.where('lesions', 'site')}: {_plural(len(unknown), 'site text')} of "
                f"{_plural(len(hit), 'lesion')} {_verb(len(unknown), 'is', 'are')} not in the organ map and "
                f"{_verb(len(unknown), 'is', 'are')} mapped to 'other' "
                f"({_values(hit, k=10)}); add them to a CSV (site,organ,match) and pass it with --organ-map",
                ids=unknown, n=len(unknown))


# ---------------------------------------------------------------------------------------------- entry points
def validate_tables(
    raw: RawTables,
    *,
    organ_map: OrganMap | None = None,
    max_diameter_mm: float = MAX_DIAMETER_MM,
    max_volume_mm3: float | None = None,
    max_abs_day: float = MAX_ABS_DAY,
) -> ValidationReport:
    """Run every rule on raw tables and return the report of all problems.

    Parameters
    ----------
    raw : RawTables
        The tables as a reader returned them (values may still be text). They are not modified.
    organ_map : OrganMap, optional
        The site -> organ map used to find site texts that are not mapped (default: the shipped map).
    max_diameter_mm : float
        Longest plausible diameter; larger ones are ``implausible`` (default 400 mm).
    max_volume_mm3 : float, optional
        Largest plausible volume (default: the volume of a ``max_diameter_mm`` lesion with the default
        axis ratio, about 1.9e7 mm3).
    max_abs_day : float
        Largest plausible distance of a day from day 0 (default 20 years).

    Returns
    -------
    ValidationReport
        Every problem found; ``report.ok`` is False when any is an error.

    Notes
    -----
    Rules (codes in :data:`RULES`): tables and required columns present and not empty; ids present,
    unique and known across tables, each lesion with one patient; days, diameters and volumes numeric,
    finite, non-negative and plausible; lesion kinds and statuses known after mapping common spellings;
    no conflicting duplicate measurements or assessments; at least one usable target-lesion measurement.
    Warnings: identical duplicate rows, missing measurement values, measurements of non-target lesions,
    target lesions with one or no usable measurement, non-target and new lesions without assessment,
    patients without lesions, unmapped or missing sites, sex other than M/F, unparseable or out-of-range
    optional values. The rules are vectorised: a paper-scale cohort (40,000 lesions, 100,000
    measurements) is checked in about a second.
    """
    if max_volume_mm3 is None:
        max_volume_mm3 = float(volume_from_diameter(max_diameter_mm))
    upper_volume = float(max_volume_mm3)
    ctx = _make_context(raw, float(max_diameter_mm), upper_volume, float(max_abs_day))
    _check_tables_and_columns(ctx)
    _check_ids(ctx)
    _check_cross_ids(ctx)
    for table in ("measurements", "assessments"):
        _check_days(ctx, table)
    _check_sizes(ctx)
    _check_vocabulary(ctx)
    _check_duplicates(ctx)
    _check_coverage(ctx)
    _check_sites(ctx, organ_map)
    _check_optional(ctx)
    counts = {name: len(frame) for name, frame in ctx.frames.items()}
    return ValidationReport(problems=ctx.out.frame(), source=str(raw.meta.get("source", "")), counts=counts)


def validate_cohort(
    data: str | Path | RawTables,
    format: str | None = None,
    *,
    organ_map: OrganMap | None = None,
    **options: Any,
) -> ValidationReport:
    """Check a dataset (a path or raw tables) and report all problems; the data are never modified.

    Parameters
    ----------
    data : path or RawTables
        A tidy folder, a Monolix/NONMEM-style CSV, a folder of SDTM domains, or tables already read.
    format : {'tidy', 'monolix', 'sdtm'}, optional
        Forces the format instead of detecting it.
    organ_map : OrganMap, optional
        The site -> organ map (default: the shipped map).
    **options
        Reader options (Monolix column names, SDTM evaluator).

    Returns
    -------
    ValidationReport
        The problems of :func:`validate_tables`, plus the reader's notes as ``reader-note`` warnings.
        A reader failure (missing file or folder, unreadable or empty file, unknown format) becomes one
        error row carrying the reader's code.

    Examples
    --------
    >>> report = validate_cohort("no/such/folder")
    >>> report.ok, report.codes
    (False, ['not-found'])
    """
    if isinstance(data, RawTables):
        raw = data
    else:
        from .readers.detect import read_raw

        try:
            raw = read_raw(data, format, **options)
        except LesionAtlasError as exc:
            out = _Collector()
            out.add("readable", exc.code, "", "", exc.message, severity="error")
            return ValidationReport(problems=out.frame(), source=str(data))
    report = validate_tables(raw, organ_map=organ_map)
    if not raw.notes:
        return report
    notes = _Collector()
    for note in raw.notes:
        notes.add("reader", "reader-note", "", "", note)
    problems = pd.concat([report.problems, notes.frame()], ignore_index=True)
    return ValidationReport(problems=problems, source=report.source, counts=report.counts)


__all__ = [
    "MAX_ABS_DAY",
    "MAX_DIAMETER_MM",
    "REPORT_COLUMNS",
    "RULES",
    "ValidationReport",
    "validate_cohort",
    "validate_tables",
    "validation_rules",
]

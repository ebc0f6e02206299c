"""CDISC SDTM domains (TU, TR, RS, DM, with ADaM ADSL and ADTTE when present) into the canonical tables.

The reader maps tumour identification (TU), tumour results (TR) and disease response (RS) of one evaluator
into ``lesions``, ``measurements`` (target lesions) and ``assessments`` (non-target and new lesions), and
the subjects that have tumour records into ``patients`` (demographics from DM and ADSL, OS and PFS from
ADTTE). Every choice it makes is documented in :func:`read_sdtm_raw` and listed, with counts, in
``RawTables.notes`` so that a user sees what was skipped or assumed.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from ...errors import DataError
from ..schema import canonical_kind
from .base import RawTables

#: Domains the reader looks for, by file stem (``tu``, ``tu_*``, ...), in this order.
DOMAINS: tuple[str, ...] = ("tu", "tr", "rs", "dm", "adsl", "adtte")
#: Domains without which there is nothing to read.
REQUIRED_DOMAINS: tuple[str, ...] = ("tu", "tr")
#: File suffixes read, in order of preference when one stem has several (``tu.xpt`` wins over ``tu.csv``).
SDTM_SUFFIXES: tuple[str, ...] = (".xpt", ".sas7bdat", ".csv")
#: Diameter given to a lesion recorded as "too small to measure" (RECIST 1.1 default of 5 mm).
TOO_SMALL_MM = 5.0

PartialDates = Literal["mid", "first", "skip"]
_PARTIAL_POLICIES = ("mid", "first", "skip")

_NODE = re.compile(r"\bLYMPH|\bNODE|\bNODAL", flags=re.IGNORECASE)
_TOO_SMALL = re.compile(r"TOO\s*SMALL|^TSTM$", flags=re.IGNORECASE)
_DTC = re.compile(r"^\s*(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")
#: TR test codes holding a lesion diameter, by preference: nodes use the short axis (RECIST 1.1).
_NODE_TESTS = {"LPERP": 0, "SAXIS": 1, "LDIAM": 2, "DIAMETER": 3}
_OTHER_TESTS = {"LDIAM": 0, "DIAMETER": 1}
_DIAMETER_TESTS = frozenset(_NODE_TESTS)
#: Tumour state (TRTESTCD = TUMSTATE) results -> canonical status.
TUMSTATE_STATUS: dict[str, str] = {
    "PRESENT": "present",
    "ABSENT": "absent",
    "EQUIVOCAL": "present",
    "UNEQUIVOCAL": "PD",
    "UNEQUIVOCAL PROGRESSION": "PD",
    "NE": "NE",
    "NOT EVALUABLE": "NE",
    "NOT ASSESSABLE": "NE",
    "CR": "CR",
    "PR": "PR",
    "SD": "SD",
    "PD": "PD",
    "NON-CR/NON-PD": "present",
}
#: RS non-target response (RSTESTCD = NTRGRESP) -> the status given to each non-target lesion of the visit.
NTRGRESP_STATUS: dict[str, str] = {
    "CR": "absent",
    "NON-CR/NON-PD": "present",
    "PD": "PD",
    "NE": "NE",
}
_UNITS_TO_MM = {"": 1.0, "MM": 1.0, "CM": 10.0}


# ---------------------------------------------------------------------------------------------- files
def _preferred(paths: list[Path]) -> Path:
    return sorted(paths, key=lambda p: SDTM_SUFFIXES.index(p.suffix.lower()))[0]


def _resolve_given(folder: Path, domain: str, value: str | Path, by_stem: dict[str, list[Path]]) -> Path:
    given = Path(value)
    for candidate in ([given] if given.is_absolute() else [folder / given, given]):
        if candidate.is_file():
            return candidate
    if given.suffix.lower() not in SDTM_SUFFIXES and given.name.lower() in by_stem:
        return _preferred(by_stem[given.name.lower()])
    raise DataError(
        f"{folder}: domains[{domain!r}] = {str(value)!r} is not a file in the folder (nor a path that exists); "
        f"give a file name such as {domain}.xpt or a full path",
        code="missing-file",
    )


def find_domain_files(
    folder: str | Path,
    *,
    domains: Mapping[str, str | Path | None] | None = None,
    suffix: str | None = None,
) -> dict[str, Path]:
    """The file of each SDTM/ADaM domain in ``folder``.

    A domain's candidates are the files whose lower-case stem is the domain name or starts with it and
    ``_`` (``tu.xpt``, ``TU_ONCO.csv``); one stem in several formats counts once, read as .xpt, else
    .sas7bdat, else .csv.

    Parameters
    ----------
    folder : path
        The folder of domain files.
    domains : mapping, optional
        Domain (``tu, tr, rs, dm, adsl, adtte``) -> file name in ``folder`` (with or without extension) or
        path; ``None`` leaves an optional domain out. Wins over the search.
    suffix : str, optional
        Among several candidates, pick ``<domain>_<suffix>`` (``suffix="onco_recist"`` picks
        ``tu_onco_recist``); a domain with one candidate keeps it.

    Returns
    -------
    dict
        Domain -> file, for the domains found (``tu`` and ``tr`` always).

    Raises
    ------
    DataError
        ``missing-file`` when TU or TR is absent; ``ambiguous-domain`` when a domain has several
        candidates (the message lists them and how to choose); ``bad-option`` for an unknown domain name.
    """
    folder = Path(folder)
    given: dict[str, str | Path | None] = {}
    for key, value in (domains or {}).items():
        name = str(key).strip().lower()
        if name not in DOMAINS:
            raise DataError(
                f"domains: unknown domain {key!r}; domains are {', '.join(DOMAINS)}", code="bad-option"
            )
        if value is None and name in REQUIRED_DOMAINS:
            raise DataError(f"domains: {name} is required and cannot be left out", code="bad-option")
        given[name] = value
    by_stem: dict[str, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in SDTM_SUFFIXES:
            by_stem.setdefault(p.stem.lower(), []).append(p)
    wanted = suffix.strip().strip("_").lower() if suffix else None
    files: dict[str, Path] = {}
    ambiguous: dict[str, list[str]] = {}
    for domain in DOMAINS:
        if domain in given:
            value = given[domain]
            if value is not None:
                files[domain] = _resolve_given(folder, domain, value, by_stem)
            continue
        stems = sorted(s for s in by_stem if s == domain or s.startswith(domain + "_"))
        if wanted is not None and f"{domain}_{wanted}" in stems:
            stems = [f"{domain}_{wanted}"]
        if len(stems) == 1:
            files[domain] = _preferred(by_stem[stems[0]])
        elif len(stems) > 1:
            ambiguous[domain] = [_preferred(by_stem[s]).name for s in stems]
    missing = [d.upper() for d in REQUIRED_DOMAINS if d not in files and d not in ambiguous]
    if missing:
        raise DataError(
            f"{folder}: no file for SDTM domain(s) {', '.join(missing)}; an SDTM folder needs TU and TR "
            f"(files named tu.xpt / tu_*.xpt and tr.xpt / tr_*.xpt, or .sas7bdat / .csv)",
            code="missing-file",
        )
    if ambiguous:
        listed = "; ".join(f"{d.upper()}: {', '.join(names)}" for d, names in ambiguous.items())
        example = ", ".join(f'"{d}": "{names[-1]}"' for d, names in ambiguous.items())
        tails = [{Path(n).stem.lower()[len(d) + 1:] for n in names} - {""} for d, names in ambiguous.items()]
        common = sorted(set.intersection(*tails)) if tails else []
        hint = (
            f"on the command line with --sdtm-suffix {' or '.join(common)}; in Python with "
            f"suffix={' / '.join(repr(s) for s in common)} or "
            if common
            else "in Python with "
        )
        raise DataError(
            f"{folder}: more than one file for SDTM domain(s) {listed}. Choose one set {hint}"
            f"domains={{{example}}} (options of read_cohort / read_sdtm_raw), "
            "or put one set of domains per folder",
            code="ambiguous-domain",
        )
    return files


def _normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """Upper-case column names; text columns as ``string`` with blanks missing; numbers as float."""
    out: dict[str, pd.Series] = {}
    for col in frame.columns:
        name = str(col).strip().upper()
        if name in out:
            continue
        values = frame[col]
        if pd.api.types.is_bool_dtype(values):
            out[name] = values.astype("string")
        elif pd.api.types.is_numeric_dtype(values) or pd.api.types.is_datetime64_any_dtype(values):
            out[name] = values
        else:
            text = values.astype("string").str.strip()
            out[name] = text.mask(text == "", pd.NA)
    return pd.DataFrame(out, index=frame.index).reset_index(drop=True)


def read_domain_file(path: str | Path) -> pd.DataFrame:
    """Read one domain file (.xpt, .sas7bdat or .csv) with upper-case column names.

    Text columns come back as pandas ``string`` (blank -> missing); SAS numbers as float; SAS dates as
    dates. CSV cells ``NA``, ``NaN`` and ``.`` are missing.

    Raises
    ------
    DataError
        ``unreadable-file`` when the file cannot be parsed; ``empty-file`` when it has no columns.
    """
    path = Path(path)
    kind = path.suffix.lower()
    try:
        if kind in (".xpt", ".sas7bdat"):
            import pyreadstat

            reader = pyreadstat.read_xport if kind == ".xpt" else pyreadstat.read_sas7bdat
            try:
                frame, _ = reader(str(path))
            except Exception:  # noqa: BLE001 - retried once with a single-byte encoding, then reported
                frame, _ = reader(str(path), encoding="LATIN1")
        else:
            frame = pd.read_csv(
                path,
                dtype=str,
                keep_default_na=False,
                na_values=["", "NA", "NaN", "nan", "."],
                encoding_errors="replace",
            )
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path}: the file is empty; it needs a header row and data rows", code="empty-file") from exc
    except Exception as exc:  # pyreadstat / parser errors have many classes
        detail = str(exc).splitlines()[0] if str(exc) else "no detail"
        what = {".xpt": "SAS transport (XPORT)", ".sas7bdat": "SAS7BDAT"}.get(kind, "CSV")
        raise DataError(
            f"{path}: cannot be read as {what} ({type(exc).__name__}: {detail})", code="unreadable-file"
        ) from exc
    if frame.shape[1] == 0:
        raise DataError(f"{path}: the file has no columns", code="empty-file")
    return _normalise(frame)


# ---------------------------------------------------------------------------------------------- values
def _key(frame: pd.DataFrame, col: str) -> pd.Series:
    """Upper-case stripped text of ``col`` with ``""`` for missing (or an all-blank column when absent)."""
    if col not in frame.columns:
        return pd.Series("", index=frame.index, dtype=object)
    text = frame[col].astype("string").str.strip().str.upper().fillna("")
    return text.astype(object)


def _text(frame: pd.DataFrame, *cols: str) -> pd.Series:
    """The first non-missing value among ``cols`` (text, missing as ``<NA>``)."""
    out = pd.Series(pd.NA, index=frame.index, dtype="string")
    for col in cols:
        if col in frame.columns:
            values = frame[col].astype("string").str.strip()
            out = out.fillna(values.mask(values == "", pd.NA))
    return out


def _float(values: Any) -> pd.Series:
    """Numbers as plain float64 (text that is not a number, and missing values, as NaN)."""
    series = values if isinstance(values, pd.Series) else pd.Series(values)
    numbers = pd.to_numeric(series, errors="coerce")
    return pd.Series(np.asarray(numbers.astype("Float64").to_numpy(dtype="float64", na_value=np.nan)),
                     index=series.index, dtype="float64")


def _number(frame: pd.DataFrame, col: str) -> pd.Series:
    if col not in frame.columns:
        return pd.Series(np.nan, index=frame.index, dtype="float64")
    return _float(frame[col])


def parse_dtc(values: pd.Series, partial: PartialDates = "mid") -> tuple[pd.Series, pd.Series]:
    """Parse ISO 8601 dates (SDTM ``--DTC``, ADaM dates), imputing partial ones.

    Parameters
    ----------
    values : Series
        ``YYYY-MM-DD`` (a time part is ignored), partial ``YYYY-MM`` or ``YYYY``, dates, datetimes, or SAS
        date numbers (days since 1960-01-01, as ADaM ``ADT`` read without its format).
    partial : {'mid', 'first', 'skip'}
        ``mid``: ``YYYY-MM`` -> the 15th, ``YYYY`` -> July 1; ``first``: the 1st / January 1; ``skip``:
        missing.

    Returns
    -------
    dates : Series of datetime64
        ``NaT`` where missing, unparseable, or partial with ``partial='skip'``.
    is_partial : Series of bool
        Which values were partial dates.
    """
    if partial not in _PARTIAL_POLICIES:
        raise DataError(
            f"partial_dates={partial!r} is not allowed; use one of {', '.join(_PARTIAL_POLICIES)}", code="bad-option"
        )
    index = values.index
    if pd.api.types.is_datetime64_any_dtype(values):
        return values.dt.normalize().astype("datetime64[ns]"), pd.Series(False, index=index)
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        days = _float(values)
        dates = pd.Timestamp("1960-01-01") + pd.to_timedelta(days.round(), unit="D")
        return dates.astype("datetime64[ns]"), pd.Series(False, index=index)
    parts = values.astype("string").str.extract(_DTC)
    year = _float(parts[0])
    month = _float(parts[1])
    day = _float(parts[2])
    is_partial = year.notna() & (month.isna() | day.isna())
    if partial == "skip":
        year = year.where(~is_partial)
    fill_month, fill_day = (7.0, 1.0) if partial == "mid" else (1.0, 1.0)
    no_month = month.isna()
    day = day.where(~(month.notna() & day.isna()), 15.0 if partial == "mid" else 1.0)
    month = month.where(~no_month, fill_month)
    day = day.where(~no_month, fill_day)
    frame = pd.DataFrame({"year": year, "month": month, "day": day})
    ok = frame.notna().all(axis=1)
    dates = pd.Series(pd.NaT, index=index, dtype="datetime64[ns]")
    if ok.any():
        dates[ok] = pd.to_datetime(frame[ok].astype("int64"), errors="coerce").astype("datetime64[ns]")
    return dates, is_partial.fillna(False).astype(bool)


def study_day_to_day(dy: Any) -> Any:
    """SDTM study day (``--DY``: day 1 = RFSTDTC, no day 0) -> lesionatlas day (day 0 = RFSTDTC).

    .. math:: d = \\begin{cases} DY - 1 & DY \\ge 1 \\\\ DY & DY \\le -1 \\end{cases}

    ``DY = 0`` does not exist in SDTM and becomes missing.

    Examples
    --------
    >>> study_day_to_day(pd.Series([1.0, 43.0, -1.0, -7.0, 0.0])).tolist()
    [0.0, 42.0, -1.0, -7.0, nan]
    """
    values = _float(dy)
    out = values.where(values < 1, values - 1.0)
    return out.mask(values == 0)


# ---------------------------------------------------------------------------------------------- evaluator
def _evaluators(frame: pd.DataFrame, prefix: str) -> list[str]:
    ev, evid = _key(frame, f"{prefix}EVAL"), _key(frame, f"{prefix}EVALID")
    names = sorted(set(evid.where(evid != "", ev)) - {""})
    if (_key(frame, f"{prefix}ACPTFL") == "Y").any():
        names.append("ACCEPTED")
    return names


def _evaluator_rows(frame: pd.DataFrame, prefix: str, evaluator: str, source: str) -> pd.Series:
    """Which rows belong to ``evaluator`` (see :func:`read_sdtm_raw`)."""
    choice = evaluator.strip().upper()
    ev, evid = _key(frame, f"{prefix}EVAL"), _key(frame, f"{prefix}EVALID")
    if choice == "ACCEPTED":
        if f"{prefix}ACPTFL" not in frame.columns:
            raise DataError(
                f"{source}: evaluator 'ACCEPTED' needs the column {prefix}ACPTFL, which the file lacks; "
                f"evaluators found: {', '.join(_evaluators(frame, prefix)) or 'none recorded'}",
                code="unknown-evaluator",
            )
        return _key(frame, f"{prefix}ACPTFL") == "Y"
    if choice == "INVESTIGATOR":
        return ev.isin(["INVESTIGATOR", ""])
    by_id = evid == choice
    if by_id.any():
        return by_id
    by_role = ev == choice
    readers = sorted(set(evid[by_role]) - {""})
    if len(readers) > 1:
        raise DataError(
            f"{source}: evaluator {evaluator!r} covers several readers ({', '.join(readers)}); "
            f"choose one of them (its {prefix}EVALID) or 'ACCEPTED'",
            code="ambiguous-evaluator",
        )
    return by_role


def _select(frame: pd.DataFrame, prefix: str, evaluator: str, source: str, *, required: bool) -> pd.DataFrame:
    rows = _evaluator_rows(frame, prefix, evaluator, source)
    if required and not rows.any():
        found = _evaluators(frame, prefix)
        raise DataError(
            f"{source}: no rows for evaluator {evaluator!r}; evaluators found: "
            f"{', '.join(repr(e) for e in found) or 'none recorded'}. Choose one with --evaluator / evaluator=",
            code="unknown-evaluator",
        )
    return frame[rows.to_numpy()].reset_index(drop=True)


def _require(frame: pd.DataFrame, cols: tuple[str, ...], source: str, domain: str) -> None:
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise DataError(
            f"{source}: required {domain} column(s) {', '.join(missing)} missing; columns found: "
            f"{', '.join(frame.columns)}",
            code="missing-column",
        )


# ---------------------------------------------------------------------------------------------- days
class _Days:
    """Study days of one domain's rows: ``--DY`` when present, else ``--DTC`` against the day-0 date."""

    def __init__(self, origin: pd.Series, partial: PartialDates, notes: list[str]) -> None:
        self.origin = origin  # USUBJID -> Timestamp of RFSTDTC (day 0)
        self.partial = partial
        self.notes = notes

    def __call__(self, frame: pd.DataFrame, prefix: str, source: str) -> pd.Series:
        dy_col, dtc_col = f"{prefix}DY", f"{prefix}DTC"
        dy = _number(frame, dy_col)
        day = study_day_to_day(dy)
        day.index = frame.index
        need = day.isna()
        if need.any() and dtc_col in frame.columns:
            dates, partial = parse_dtc(frame.loc[need, dtc_col], self.partial)
            origin = frame.loc[need, "USUBJID"].map(self.origin).astype("datetime64[ns]")
            day.loc[need] = (dates - origin).dt.days.astype("float64")
            used_partial = int((partial & dates.notna() & origin.notna()).sum())
            if used_partial:
                example = frame.loc[need, dtc_col][partial].iloc[0]
                how = "to the 15th of the month (July 1 for a year alone)" if self.partial == "mid" else (
                    "to the 1st of the month (January 1 for a year alone)"
                )
                self.notes.append(
                    f"{source}: {used_partial} row(s) without {dy_col} have a partial {dtc_col} (e.g. {example}); "
                    f"the date was imputed {how} to count the study day"
                )
            skipped_partial = int((partial & dates.isna()).sum())
            if skipped_partial:
                self.notes.append(
                    f"{source}: {skipped_partial} row(s) without {dy_col} have a partial {dtc_col} and were "
                    "skipped (partial_dates='skip')"
                )
            no_origin = int((dates.notna() & origin.isna()).sum())
            if no_origin:
                self.notes.append(
                    f"{source}: {no_origin} row(s) without {dy_col} belong to subjects without RFSTDTC (DM) "
                    "and were skipped: their study day cannot be counted"
                )
        if dy_col in frame.columns and (dy == 0).any():
            self.notes.append(f"{source}: {int((dy == 0).sum())} row(s) have {dy_col} = 0, which SDTM does not "
                              f"allow; their day was taken from {dtc_col} where possible")
        return day


# ---------------------------------------------------------------------------------------------- main
def read_sdtm_raw(
    path: str | Path,
    *,
    evaluator: str = "INVESTIGATOR",
    domains: Mapping[str, str | Path | None] | None = None,
    suffix: str | None = None,
    partial_dates: PartialDates = "mid",
) -> RawTables:
    r"""Read a folder of CDISC SDTM domains into :class:`RawTables`.

    Parameters
    ----------
    path : path
        A folder with TU and TR (required), RS, DM and the ADaM ADSL and ADTTE (optional) as .xpt,
        .sas7bdat or .csv. A domain's file is found by its stem: ``tu`` or ``tu_*`` (any case); when one
        stem exists in several formats, .xpt is read, else .sas7bdat, else .csv.
    evaluator : str
        Whose reads to use: ``"INVESTIGATOR"`` (default; ``--EVAL = INVESTIGATOR``, or blank as in
        single-reader trials), ``"ACCEPTED"`` (the accepted read, ``--ACPTFL = Y``, which may come from a
        different reader at each visit), or a reader id such as ``"RADIOLOGIST 1"`` (``--EVALID``, or a
        ``--EVAL`` role held by a single reader). Case-insensitive.
    domains : mapping, optional
        Domain -> file (``{"tu": "tu_onco_recist.xpt", "tr": "tr_onco_recist.xpt"}``), needed when the folder
        holds several candidates for a domain; ``None`` leaves an optional domain out.
    suffix : str, optional
        A shortcut for ``domains``: among several candidates, read ``<domain>_<suffix>``.
    partial_dates : {'mid', 'first', 'skip'}
        What to do with a partial date (``2014-01``) of a row without ``--DY``: impute the 15th of the
        month (July 1 for a year alone; default), the 1st, or skip the row. Each case is counted in
        ``notes``.

    Returns
    -------
    RawTables
        ``patients``, ``lesions``, ``measurements`` and ``assessments``, ``format="sdtm"``;
        ``meta`` holds ``source``, ``format``, ``evaluator``, ``files`` (domain -> file read),
        ``day_origin`` and ``partial_dates``; ``notes`` lists, with counts, what was skipped or assumed.

    Raises
    ------
    DataError
        ``missing-file`` (no TU or TR), ``ambiguous-domain`` (several candidates for a domain),
        ``unreadable-file`` / ``empty-file``, ``missing-column`` (TU or TR without USUBJID, the link id or
        TRTESTCD), ``unknown-evaluator`` / ``ambiguous-evaluator`` (no rows for the evaluator chosen, or a
        role shared by several readers), ``bad-option``.

    Notes
    -----
    **Lesions.** One lesion per TU record ``TUTESTCD = TUMIDENT`` of the evaluator, identified by
    ``USUBJID + "/" + TULNKID`` (link ids repeat across subjects). TR rows belong to the lesion with the same
    USUBJID and ``TRLNKID`` among the evaluator's rows; for ``ACCEPTED`` the join ignores the reader (the
    accepted read of a visit may be another reader's, with the same link ids). The kind is ``TUSTRESC``
    (else ``TUORRES``, else the lesion's ``TRGRPID``): TARGET -> ``target``, NON-TARGET -> ``nontarget``,
    NEW -> ``new``. ``site`` is ``TULOC`` as recorded (missing stays missing and maps to organ ``other``).
    A TR lesion without a TU record is kept with its ``TRGRPID`` kind and no site (noted).

    **Diameters** (target lesions). A lymph node (``TULOC`` containing LYMPH, NODE or NODAL) is measured by
    its short axis, ``TRTESTCD = LPERP`` (or ``SAXIS``), falling back to ``LDIAM``/``DIAMETER`` when the
    lesion has no short axis (noted); any other lesion by ``LDIAM``, else ``DIAMETER``. The choice is made
    once per lesion so that its series uses one axis. The value is ``TRSTRESN`` (else the number in
    ``TRSTRESC`` / ``TRORRES``), in mm (cm are converted). "Too small to measure" (``TOO SMALL`` or ``TSTM``
    in the result text) becomes 5 mm with ``below_limit`` set; 0 mm is kept (the lesion has gone).
    ``SUMDIAM`` rows are ignored; rows with ``TRSTAT = NOT DONE`` are skipped (noted).

    **Statuses** (non-target and new lesions). ``TRTESTCD = TUMSTATE`` results: PRESENT -> ``present``,
    ABSENT -> ``absent``, EQUIVOCAL -> ``present``, UNEQUIVOCAL -> ``PD`` (also NE/NOT EVALUABLE ->
    ``NE``, CR/PR/SD/PD as such). A new lesion's first record (its first TR day, else its TU day) is
    ``new``, whatever its TUMSTATE (an equivocal new lesion is counted as new at its first sighting). When
    a subject's visit has RS ``NTRGRESP`` but no TUMSTATE for its non-target lesions, each of its
    non-target lesions gets the visit's response: CR -> ``absent``, NON-CR/NON-PD -> ``present``, PD ->
    ``PD``, NE -> ``NE`` (a patient-level response given to every lesion; noted). RS rows of other tests
    (OVRLRESP, TRGRESP, NEWLPROG) are not used.

    **Days.** Day 0 is ``DM.RFSTDTC`` (the origin of SDTM study days; sponsors set it to the first dose,
    RFXSTDTC; subjects where they differ are noted). SDTM day 1 is RFSTDTC and there is no day 0, so

    .. math:: \mathrm{day} = \begin{cases} DY - 1 & DY \ge 1 \\ DY & DY \le -1 \end{cases}
              \qquad\text{or, from dates,}\qquad \mathrm{day} = DTC - RFSTDTC \text{ (days)}.

    ``--DY`` is used when present, else ``--DTC`` (imputed when partial, see ``partial_dates``). Without
    DM, RFSTDTC is taken from ADSL (RFSTDTC, else TRTSDT). Rows whose day cannot be counted are skipped.

    **Patients.** Only subjects with tumour records of the evaluator (TU rows) are patients: DM lists
    every randomised or screened subject, most without tumour data (noted). ``study_id`` STUDYID, ``age``
    AGE, ``sex`` SEX, ``race`` RACE and ``treatment`` ARM from DM, filled from ADSL (AGE, SEX, RACE, TRT01A,
    TRT01P, BMIBL) when DM lacks them. ``best_response`` is left missing.

    **Survival** (ADTTE, ``PARAMCD`` OS and PFS). ``os_days`` / ``pfs_days`` are days from day 0 to the
    event or censoring date ``ADT``: ``ADT - RFSTDTC``. ADaM's ``AVAL`` counts days from ``STARTDT`` with
    the start day as day 1 (``AVAL = ADT - STARTDT + 1``), so with ``STARTDT = RFSTDTC`` this is
    ``AVAL - 1``; without ADT, ``AVAL - 1 + (STARTDT - RFSTDTC)`` is used (noted). ``CNSR = 0`` is an event
    (``os_event`` True), ``CNSR >= 1`` censored.

    Examples
    --------
    >>> raw = read_sdtm_raw("sdtm_onco", suffix="onco_recist")  # doctest: +SKIP
    >>> raw.tables["lesions"].head()  # doctest: +SKIP
    """
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(
            f"{folder}: not a folder; SDTM data are read from a folder of domain files (tu, tr, rs, dm, ...)",
            code="not-found",
        )
    if partial_dates not in _PARTIAL_POLICIES:
        raise DataError(
            f"partial_dates={partial_dates!r} is not allowed; use one of {', '.join(_PARTIAL_POLICIES)}",
            code="bad-option",
        )
    if not isinstance(evaluator, str) or not evaluator.strip():
        raise DataError("evaluator must be INVESTIGATOR, ACCEPTED or a reader id such as 'RADIOLOGIST 1'",
                        code="bad-option")
    files = find_domain_files(folder, domains=domains, suffix=suffix)
    src = {d: str(p) for d, p in files.items()}
    data = {d: read_domain_file(p) for d, p in files.items()}
    notes: list[str] = []

    # ---- day 0 per subject
    origin, origin_source = _origin(data, src, partial_dates, notes)
    days = _Days(origin, partial_dates, notes)

    # ---- TU and TR of the evaluator
    tu, tr = data["tu"], data["tr"]
    _require(tu, ("USUBJID", "TULNKID"), src["tu"], "TU")
    _require(tr, ("USUBJID", "TRLNKID", "TRTESTCD"), src["tr"], "TR")
    if tu.empty:
        raise DataError(f"{src['tu']}: TU has no rows; there are no lesions to read", code="empty-file")
    if "TUTESTCD" in tu.columns:
        other = ~_key(tu, "TUTESTCD").isin(["TUMIDENT", ""])
        if other.any():
            notes.append(f"{src['tu']}: {int(other.sum())} TU row(s) with TUTESTCD other than TUMIDENT "
                         f"({', '.join(sorted(set(_key(tu, 'TUTESTCD')[other]))[:5])}) were not used")
            tu = tu[~other.to_numpy()].reset_index(drop=True)
    tr_sel = _select(tr, "TR", evaluator, src["tr"], required=True)
    accepted = evaluator.strip().upper() == "ACCEPTED"
    tu_sel = _select(tu, "TU", evaluator, src["tu"], required=True)
    if accepted:
        # the accepted read of a later visit may be another reader's: take that reader's TU record
        keys = set(zip(tr_sel["USUBJID"].astype(str), _key(tr_sel, "TRLNKID")))
        keys -= set(zip(tu_sel["USUBJID"].astype(str), _key(tu_sel, "TULNKID")))
        extra = [k in keys for k in zip(tu["USUBJID"].astype(str), _key(tu, "TULNKID"))]
        tu_sel = pd.concat([tu_sel, tu[np.asarray(extra, dtype=bool)]], ignore_index=True)

    lesions = _lesions(tu_sel, tr_sel, src, notes, days)
    tr_rows = _tr_rows(tr_sel, lesions, src["tr"], notes, days)
    measurements = _measurements(tr_rows, lesions, src["tr"], notes)
    assessments = _assessments(tr_rows, lesions, data.get("rs"), src, evaluator, notes, days)

    patients = _patients(lesions, tu_sel, data, src, origin, notes)
    if "adtte" in data:
        patients = _survival(patients, data["adtte"], origin, src["adtte"], partial_dates, notes)

    lesion_table = lesions.loc[:, ["lesion_id", "patient_id", "kind", "site"]].reset_index(drop=True)
    sources = {
        "patients": src.get("dm", src.get("adsl", src["tu"])),
        "lesions": src["tu"],
        "measurements": src["tr"],
        "assessments": src["tr"] + (f" + {src['rs']}" if "rs" in src else ""),
    }
    meta = {
        "source": str(folder),
        "format": "sdtm",
        "evaluator": evaluator.strip().upper(),
        "files": {d: str(p) for d, p in files.items()},
        "day_origin": f"{origin_source} (SDTM study day 1 = day 0)",
        "partial_dates": partial_dates,
    }
    return RawTables(
        tables={
            "patients": patients,
            "lesions": lesion_table,
            "measurements": measurements,
            "assessments": assessments,
        },
        sources=sources,
        format="sdtm",
        meta=meta,
        notes=notes,
    )


def read_sdtm(
    path: str | Path,
    *,
    evaluator: str = "INVESTIGATOR",
    domains: Mapping[str, str | Path | None] | None = None,
    suffix: str | None = None,
    partial_dates: PartialDates = "mid",
    **options: Any,
):  # -> Cohort (import cycle kept local)
    """Read and validate an SDTM folder into a :class:`~lesionatlas.data.cohort.Cohort`.

    The arguments are those of :func:`read_sdtm_raw`; ``options`` go to
    :func:`~lesionatlas.data.readers.detect.read_cohort` (``organ_map``, ``axis_ratio``, ``limit_mm3``).
    """
    from .detect import read_cohort

    return read_cohort(
        path, format="sdtm", evaluator=evaluator, domains=domains, suffix=suffix, partial_dates=partial_dates,
        **options,
    )


# ---------------------------------------------------------------------------------------------- parts
def _origin(
    data: dict[str, pd.DataFrame], src: dict[str, str], partial: PartialDates, notes: list[str]
) -> tuple[pd.Series, str]:
    """USUBJID -> day-0 date (RFSTDTC from DM, else ADSL RFSTDTC / TRTSDT)."""
    for domain, cols in (("dm", ("RFSTDTC",)), ("adsl", ("RFSTDTC", "TRTSDT"))):
        frame = data.get(domain)
        if frame is None or "USUBJID" not in frame.columns:
            continue
        for col in cols:
            if col in frame.columns:
                dates, is_partial = parse_dtc(frame[col], partial)
                if (is_partial & dates.notna()).any():
                    notes.append(f"{src[domain]}: {int((is_partial & dates.notna()).sum())} subject(s) have a "
                                 f"partial {col}; it was imputed (partial_dates={partial!r})")
                origin = pd.Series(dates.to_numpy(), index=frame["USUBJID"].astype(str)).dropna()
                return origin[~origin.index.duplicated()], f"{domain.upper()}.{col}"
    return pd.Series(dtype="datetime64[ns]"), "none (no DM or ADSL): --DY only"


def _lesions(tu: pd.DataFrame, tr: pd.DataFrame, src: dict[str, str], notes: list[str], days: _Days) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "subject": tu["USUBJID"].astype("string").str.strip(),
            "link": tu["TULNKID"].astype("string").str.strip(),
            "kind_raw": _text(tu, "TUSTRESC", "TUORRES"),
            "site": _text(tu, "TULOC"),
            "tu_day": days(tu, "TU", src["tu"]),
        }
    )
    blank = frame["subject"].isna() | frame["link"].isna()
    if blank.any():
        notes.append(f"{src['tu']}: {int(blank.sum())} TU row(s) without USUBJID or TULNKID were skipped")
        frame = frame[~blank]
    frame = frame.drop_duplicates()
    dup = frame.duplicated(["subject", "link"], keep="first")
    if dup.any():
        notes.append(f"{src['tu']}: {int(dup.sum())} TU record(s) repeat a lesion (USUBJID + TULNKID) with other "
                     "values; the first record of each lesion was used")
        frame = frame[~dup]
    # kind from TR's TRGRPID where TU has none; TR lesions without a TU record kept from TR
    trk = pd.DataFrame(
        {
            "subject": tr["USUBJID"].astype("string").str.strip(),
            "link": tr["TRLNKID"].astype("string").str.strip(),
            "group": _text(tr, "TRGRPID"),
            "test": _key(tr, "TRTESTCD").to_numpy(),
        }
    )
    trk = trk[trk["link"].notna() & trk["subject"].notna() & (trk["test"] != "SUMDIAM")]
    groups = trk.dropna(subset=["group"]).groupby(["subject", "link"])["group"].first()
    frame = frame.merge(groups.rename("group").reset_index(), on=["subject", "link"], how="left")
    frame["kind_raw"] = frame["kind_raw"].fillna(frame["group"])
    known = pd.MultiIndex.from_frame(frame[["subject", "link"]])
    orphan_keys = pd.MultiIndex.from_frame(trk[["subject", "link"]].drop_duplicates())
    orphan_keys = orphan_keys.difference(known)
    if len(orphan_keys):
        orphans = pd.DataFrame(list(orphan_keys), columns=["subject", "link"]).astype("string")
        orphans = orphans.merge(groups.rename("group").reset_index(), on=["subject", "link"], how="left")
        orphans["kind_raw"] = orphans["group"]
        orphans["site"] = pd.Series(pd.NA, index=orphans.index, dtype="string")
        orphans["tu_day"] = np.nan
        shown = ", ".join(f"{s}/{l}" for s, l in list(orphan_keys)[:3])
        notes.append(f"{src['tr']}: {len(orphan_keys)} lesion(s) in TR have no TU record ({shown}"
                     f"{', ...' if len(orphan_keys) > 3 else ''}); kept with their TRGRPID kind and no site")
        frame = pd.concat([frame, orphans[frame.columns]], ignore_index=True)
    frame["kind"] = canonical_kind(frame["kind_raw"])
    frame["lesion_id"] = frame["subject"] + "/" + frame["link"]
    frame["patient_id"] = frame["subject"]
    return frame.reset_index(drop=True)


def _tr_rows(tr: pd.DataFrame, lesions: pd.DataFrame, source: str, notes: list[str], days: _Days) -> pd.DataFrame:
    """TR rows of lesions (not SUMDIAM, not NOT DONE) with lesion id, kind, site, test and day."""
    test = _key(tr, "TRTESTCD")
    keep = test != "SUMDIAM"
    not_done = (_key(tr, "TRSTAT") == "NOT DONE") & keep
    if not_done.any():
        reasons = sorted(set(_text(tr, "TRREASND")[not_done].dropna()))[:3]
        notes.append(f"{source}: {int(not_done.sum())} TR row(s) with TRSTAT = NOT DONE were skipped"
                     + (f" ({'; '.join(reasons)})" if reasons else ""))
    keep &= ~not_done
    frame = tr[keep.to_numpy()].reset_index(drop=True)
    rows = pd.DataFrame(
        {
            "subject": frame["USUBJID"].astype("string").str.strip(),
            "link": frame["TRLNKID"].astype("string").str.strip(),
            "test": _key(frame, "TRTESTCD").to_numpy(),
            "number": _number(frame, "TRSTRESN"),
            "result": _text(frame, "TRSTRESC", "TRORRES"),
            "stresc": _text(frame, "TRSTRESC"),
            "orres": _text(frame, "TRORRES"),
            "unit": _key(frame, "TRSTRESU").to_numpy(),
            "orunit": _key(frame, "TRORRESU").to_numpy(),
            "visit": _number(frame, "VISITNUM"),
            "day": days(frame, "TR", source),
        }
    )
    no_link = rows["link"].isna() | rows["subject"].isna()
    if no_link.any():
        notes.append(f"{source}: {int(no_link.sum())} TR row(s) other than SUMDIAM have no TRLNKID or USUBJID "
                     "and were skipped")
    rows = rows[~no_link]
    rows = rows.merge(
        lesions[["subject", "link", "lesion_id", "kind", "site"]], on=["subject", "link"], how="inner"
    )
    no_day = rows["day"].isna()
    if no_day.any():
        notes.append(f"{source}: {int(no_day.sum())} TR row(s) have neither TRDY nor a usable TRDTC and were skipped")
    return rows[~no_day].reset_index(drop=True)


def _measurements(rows: pd.DataFrame, lesions: pd.DataFrame, source: str, notes: list[str]) -> pd.DataFrame:
    columns = ["lesion_id", "day", "diameter_mm", "below_limit"]
    m = rows[(rows["kind"] == "target") & rows["test"].isin(_DIAMETER_TESTS)].copy()
    if m.empty:
        dtypes = ["string", "float64", "float64", "boolean"]
        return pd.DataFrame({c: pd.Series(dtype=d) for c, d in zip(columns, dtypes)})
    node = m["site"].fillna("").str.contains(_NODE).to_numpy(dtype=bool)
    rank = np.where(node, m["test"].map(_NODE_TESTS), m["test"].map(_OTHER_TESTS)).astype("float64")
    m["rank"] = rank
    m["node"] = node
    best = m.groupby("lesion_id")["rank"].transform("min")
    m = m[m["rank"].notna() & (m["rank"] == best)]
    fallback = m[m["node"] & ~m["test"].isin(["LPERP", "SAXIS"])]["lesion_id"].nunique()
    if fallback:
        notes.append(f"{source}: {fallback} lymph-node target lesion(s) have no short axis (LPERP); their "
                     "longest diameter was used")
    # value: TRSTRESN, else the number in TRSTRESC (unit TRSTRESU), else in TRORRES (unit TRORRESU)
    standard = m["number"].fillna(_float(m["stresc"]))
    original = _float(m["orres"])
    from_standard = standard.notna()
    unit = pd.Series(np.where(from_standard, m["unit"], m["orunit"]), index=m.index)
    factor = unit.map(_UNITS_TO_MM)
    value = standard.where(from_standard, original) * factor
    text = m["stresc"].fillna("") + " " + m["orres"].fillna("")
    too_small = (text.str.contains(_TOO_SMALL) & standard.isna() & original.isna()).to_numpy(dtype=bool)
    value[too_small] = TOO_SMALL_MM
    if too_small.any():
        notes.append(f"{source}: {int(too_small.sum())} measurement(s) recorded as too small to measure were set "
                     f"to {TOO_SMALL_MM:g} mm (below the limit)")
    numeric = (standard.notna() | original.notna()).to_numpy()
    bad_unit = numeric & factor.isna().to_numpy()
    if bad_unit.any():
        notes.append(f"{source}: {int(bad_unit.sum())} measurement(s) in units other than mm or cm "
                     f"({', '.join(sorted(set(unit[bad_unit])))}) were skipped")
    no_number = ~numeric & ~too_small
    if no_number.any():
        shown = sorted(set(m["result"][no_number].dropna()))[:5]
        notes.append(f"{source}: {int(no_number.sum())} diameter row(s) have no number "
                     f"({', '.join(repr(s) for s in shown) or 'blank'}) and were skipped")
    missing = value.isna()
    out = pd.DataFrame(
        {
            "lesion_id": m["lesion_id"].astype("string"),
            "day": m["day"].astype("float64"),
            "diameter_mm": value.astype("float64"),
            "below_limit": pd.Series(np.where(too_small, True, pd.NA), index=m.index, dtype="boolean"),
        }
    )[~missing.to_numpy()]
    n_before = len(out)
    out = out.drop_duplicates().reset_index(drop=True)
    if len(out) < n_before:
        notes.append(f"{source}: {n_before - len(out)} repeated identical measurement row(s) were dropped")
    no_measure = lesions.loc[lesions["kind"] == "target", "lesion_id"]
    no_measure = int((~no_measure.isin(out["lesion_id"])).sum())
    if no_measure:
        notes.append(f"{source}: {no_measure} target lesion(s) have no usable diameter (LDIAM, LPERP or DIAMETER)")
    return out


def _assessments(
    rows: pd.DataFrame,
    lesions: pd.DataFrame,
    rs: pd.DataFrame | None,
    src: dict[str, str],
    evaluator: str,
    notes: list[str],
    days: _Days,
) -> pd.DataFrame:
    source = src["tr"]
    a = rows[rows["kind"].isin(["nontarget", "new"]) & (rows["test"] == "TUMSTATE")]
    result = a["result"].str.upper()
    blank = result.isna()
    if blank.any():
        notes.append(f"{source}: {int(blank.sum())} TUMSTATE row(s) with no result were skipped")
    a, result = a[~blank], result[~blank]
    status = result.map(TUMSTATE_STATUS)
    unknown = status.isna()
    if unknown.any():
        notes.append(f"{source}: TUMSTATE result(s) {', '.join(sorted(set(result[unknown])))} are not known "
                     "statuses; they were kept as recorded")
    out = pd.DataFrame(
        {
            "lesion_id": a["lesion_id"].astype("string"),
            "day": a["day"].astype("float64"),
            "status": status.fillna(result).astype("string"),
            "subject": a["subject"],
            "visit": a["visit"],
        }
    )
    # RS non-target response where a visit has no TUMSTATE for the subject's non-target lesions
    if rs is not None and {"USUBJID", "RSTESTCD"} <= set(rs.columns):
        out = _rs_fallback(out, lesions, rs, src["rs"], evaluator, notes, days)
    # a new lesion's first appearance
    new_ids = lesions.loc[lesions["kind"] == "new", ["lesion_id", "subject", "tu_day"]]
    unseen = new_ids[~new_ids["lesion_id"].isin(out["lesion_id"])]
    from_tu = unseen[unseen["tu_day"].notna()]
    if len(from_tu):
        out = pd.concat(
            [out, pd.DataFrame({"lesion_id": from_tu["lesion_id"].astype("string"), "day": from_tu["tu_day"],
                                "status": "new", "subject": from_tu["subject"], "visit": np.nan})],
            ignore_index=True,
        )
    if len(unseen) > len(from_tu):
        notes.append(f"{src['tu']}: {len(unseen) - len(from_tu)} new lesion(s) have neither TR records nor a TU "
                     "day; their appearance is unknown")
    out = out.sort_values(["lesion_id", "day"], kind="stable").reset_index(drop=True)
    is_new = out["lesion_id"].isin(new_ids["lesion_id"])
    first = is_new & ~out["lesion_id"].duplicated()
    out.loc[first.to_numpy(), "status"] = "new"
    out = out.loc[:, ["lesion_id", "day", "status"]]
    n_before = len(out)
    out = out.drop_duplicates().reset_index(drop=True)
    if len(out) < n_before:
        notes.append(f"{source}: {n_before - len(out)} repeated identical assessment row(s) were dropped")
    return out


def _rs_fallback(
    out: pd.DataFrame,
    lesions: pd.DataFrame,
    rs: pd.DataFrame,
    source: str,
    evaluator: str,
    notes: list[str],
    days: _Days,
) -> pd.DataFrame:
    rs = rs[(_key(rs, "RSTESTCD") == "NTRGRESP").to_numpy()].reset_index(drop=True)
    if rs.empty:
        return out
    try:
        rs = _select(rs, "RS", evaluator, source, required=False)
    except DataError as exc:  # RS is optional: say why it was not used instead of failing
        notes.append(f"RS not used: {exc.message}")
        return out
    if rs.empty:
        return out
    resp = _key(rs, "RSSTRESC").where(_key(rs, "RSSTRESC") != "", _key(rs, "RSORRES"))
    frame = pd.DataFrame(
        {
            "subject": rs["USUBJID"].astype("string").str.strip(),
            "status": resp.map(NTRGRESP_STATUS),
            "visit": _number(rs, "VISITNUM"),
            "day": days(rs, "RS", source),
        }
    ).dropna(subset=["status", "day"])
    by_visit = frame["visit"].notna().all() and out["visit"].notna().all()
    col = "visit" if by_visit else "day"
    seen = set(zip(out["subject"].astype(str), out[col]))
    frame = frame[[k not in seen for k in zip(frame["subject"].astype(str), frame[col])]]
    nontarget = lesions.loc[lesions["kind"] == "nontarget", ["subject", "lesion_id"]]
    add = frame.merge(nontarget, on="subject", how="inner")
    if add.empty:
        return out
    n_visits = add[["subject", "day"]].drop_duplicates().shape[0]
    notes.append(f"{source}: {len(add)} non-target lesion status(es) at {n_visits} "
                 "visit(s) without TUMSTATE were taken from the visit's RS non-target response (NTRGRESP), "
                 "a patient-level result given to each non-target lesion")
    add = add.assign(lesion_id=add["lesion_id"].astype("string"), status=add["status"].astype("string"))
    return pd.concat([out, add[out.columns]], ignore_index=True)


def _first_by_subject(frame: pd.DataFrame | None, cols: tuple[str, ...]) -> pd.DataFrame:
    if frame is None or "USUBJID" not in frame.columns:
        return pd.DataFrame(index=pd.Index([], dtype=object))
    present = [c for c in cols if c in frame.columns]
    out = frame.loc[:, ["USUBJID", *present]].copy()
    out["USUBJID"] = out["USUBJID"].astype("string").str.strip()
    return out.dropna(subset=["USUBJID"]).drop_duplicates("USUBJID").set_index("USUBJID")


def _patients(
    lesions: pd.DataFrame,
    tu: pd.DataFrame,
    data: dict[str, pd.DataFrame],
    src: dict[str, str],
    origin: pd.Series,
    notes: list[str],
) -> pd.DataFrame:
    ids = pd.Index(sorted(lesions["patient_id"].dropna().astype(str).unique()), dtype=object)
    dm = _first_by_subject(data.get("dm"), ("STUDYID", "AGE", "SEX", "RACE", "ARM", "RFSTDTC", "RFXSTDTC"))
    adsl = _first_by_subject(data.get("adsl"), ("STUDYID", "AGE", "SEX", "RACE", "TRT01A", "TRT01P", "ARM", "BMIBL"))
    tu_study = _first_by_subject(tu, ("STUDYID",))

    def pick(*sources: tuple[pd.DataFrame, str]) -> pd.Series:
        out = pd.Series(pd.NA, index=ids, dtype=object)
        for frame, col in sources:
            if col in frame.columns:
                values = frame[col].reindex(ids)
                out = out.where(out.notna(), values.astype(object))
        return out

    patients = pd.DataFrame(
        {
            "patient_id": pd.Series(ids, index=ids, dtype="string"),
            "study_id": pick((dm, "STUDYID"), (adsl, "STUDYID"), (tu_study, "STUDYID")),
            "age": _float(pick((dm, "AGE"), (adsl, "AGE"))),
            "sex": pick((dm, "SEX"), (adsl, "SEX")),
            "race": pick((dm, "RACE"), (adsl, "RACE")),
            "bmi": _float(pick((adsl, "BMIBL"))),
            "treatment": pick((dm, "ARM"), (adsl, "TRT01A"), (adsl, "TRT01P"), (adsl, "ARM")),
        }
    ).reset_index(drop=True)
    for col in ("study_id", "sex", "race", "treatment"):
        patients[col] = patients[col].astype("string")
    subjects = data.get("dm", data.get("adsl"))
    where = src.get("dm", src.get("adsl"))
    if subjects is not None and "USUBJID" in subjects.columns:
        listed = set(subjects["USUBJID"].dropna().astype(str))
        left_out = len(listed - set(ids))
        if left_out:
            notes.append(f"{where}: {left_out} of {len(listed)} subject(s) have no tumour records for this "
                         "evaluator and are not in patients")
        unknown = sorted(set(ids) - listed)
        if unknown:
            notes.append(f"{where}: {len(unknown)} subject(s) with tumour records are not listed "
                         f"({', '.join(unknown[:3])}{', ...' if len(unknown) > 3 else ''}); "
                         "their demographics are missing")
    no_origin = sorted(set(ids) - set(origin.index))
    if no_origin and len(origin):
        notes.append(f"{where}: {len(no_origin)} patient(s) have no RFSTDTC; only their --DY days can be used")
    if "RFSTDTC" in dm.columns and "RFXSTDTC" in dm.columns:
        both = dm.reindex(ids)
        first_dose, start = both["RFXSTDTC"].astype(str).str[:10], both["RFSTDTC"].astype(str).str[:10]
        differ = both["RFXSTDTC"].notna() & (first_dose != start)
        if differ.any():
            notes.append(f"{src['dm']}: for {int(differ.sum())} patient(s) the first dose (RFXSTDTC) is not "
                         "RFSTDTC; days are counted from RFSTDTC, the origin of the SDTM study days")
    return patients


def _survival(
    patients: pd.DataFrame,
    adtte: pd.DataFrame,
    origin: pd.Series,
    source: str,
    partial: PartialDates,
    notes: list[str],
) -> pd.DataFrame:
    if not {"USUBJID", "PARAMCD"} <= set(adtte.columns):
        notes.append(f"{source}: ADTTE without USUBJID or PARAMCD was not used")
        return patients
    patients = patients.copy()
    ids = patients["patient_id"].astype(str)
    param = _key(adtte, "PARAMCD")
    for code, prefix in (("OS", "os"), ("PFS", "pfs")):
        rows = adtte[(param == code).to_numpy()].copy()
        if rows.empty:
            continue
        rows["USUBJID"] = rows["USUBJID"].astype("string").str.strip()
        rows = rows[rows["USUBJID"].isin(ids)]
        dup = rows["USUBJID"].duplicated()
        if dup.any():
            notes.append(f"{source}: {int(dup.sum())} repeated {code} row(s) for a patient; the first was used")
            rows = rows[~dup]
        rows = rows.set_index(rows["USUBJID"].astype(str))
        start = origin.reindex(rows.index).astype("datetime64[ns]")
        if "ADT" in rows.columns:
            adt, _ = parse_dtc(rows["ADT"], partial)
        else:
            adt = pd.Series(pd.NaT, index=rows.index, dtype="datetime64[ns]")
        value = (adt.to_numpy() - start.to_numpy()) / np.timedelta64(1, "D")
        value = pd.Series(value, index=rows.index, dtype="float64")
        aval = _number(rows, "AVAL")
        use_aval = value.isna() & aval.notna()
        if use_aval.any():
            if "STARTDT" in rows.columns:
                startdt, _ = parse_dtc(rows["STARTDT"], partial)
                offset = ((startdt - start) / np.timedelta64(1, "D")).fillna(0.0)
            else:
                offset = pd.Series(0.0, index=rows.index)
            value[use_aval] = aval[use_aval] - 1.0 + offset[use_aval]
            notes.append(f"{source}: {int(use_aval.sum())} {code} time(s) without ADT or RFSTDTC were taken as "
                         "AVAL - 1 (+ STARTDT - RFSTDTC when known), AVAL counting the start day as day 1")
        cnsr = _number(rows, "CNSR")
        event = pd.Series(pd.NA, index=rows.index, dtype="boolean")
        event[cnsr.notna().to_numpy()] = (cnsr[cnsr.notna()] == 0).to_numpy()
        patients[f"{prefix}_days"] = ids.map(value).astype("float64").to_numpy()
        patients[f"{prefix}_event"] = pd.array(ids.map(event).to_numpy(), dtype="boolean")
    return patients


__all__ = [
    "DOMAINS",
    "REQUIRED_DOMAINS",
    "SDTM_SUFFIXES",
    "TOO_SMALL_MM",
    "find_domain_files",
    "parse_dtc",
    "read_domain_file",
    "read_sdtm",
    "read_sdtm_raw",
    "study_day_to_day",
]

"""Format detection and the one entry point that reads any supported input into a Cohort."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from ...config import DEFAULT_AXIS_RATIO, DEFAULT_LIMIT_MM3
from ...errors import DataError, DataWarning, FormatError
from ..organs import OrganMap, load_organ_map
from .base import RawTables
from .tidy import find_table_file

Format = Literal["tidy", "monolix", "sdtm"]
FORMATS: tuple[str, ...] = ("tidy", "monolix", "sdtm")
_SDTM_SUFFIXES = (".xpt", ".sas7bdat", ".csv")


def _has_sdtm(folder: Path) -> bool:
    stems = {p.stem.lower() for p in folder.iterdir() if p.suffix.lower() in _SDTM_SUFFIXES}
    has = lambda d: any(s == d or s.startswith(d + "_") for s in stems)  # noqa: E731
    return has("tu") and has("tr")


def detect_format(path: str | Path) -> str:
    """``tidy`` (folder with patients/lesions/measurements tables), ``sdtm`` (folder with TU and TR
    domains) or ``monolix`` (a single CSV file).

    Raises
    ------
    FormatError
        When the path does not exist or matches no format.
    """
    path = Path(path)
    if not path.exists():
        raise FormatError(f"{path}: no such file or folder", code="not-found")
    if path.is_file():
        if path.suffix.lower() in (".csv", ".txt", ".tsv", ".gz"):
            return "monolix"
        raise FormatError(
            f"{path}: a single file must be a Monolix/NONMEM-style CSV; got {path.suffix or 'no extension'}",
            code="unknown-format",
        )
    if find_table_file(path, "lesions") is not None or find_table_file(path, "measurements") is not None:
        return "tidy"
    if _has_sdtm(path):
        return "sdtm"
    raise FormatError(
        f"{path}: not a recognised cohort folder: expected tidy tables (patients, lesions, measurements "
        "as .csv/.parquet) or SDTM domains (tu and tr as .xpt/.sas7bdat/.csv); use --format to force one",
        code="unknown-format",
    )


def read_raw(path: str | Path, format: str | None = None, **options: Any) -> RawTables:
    """Read ``path`` in ``format`` (detected when ``None``) into :class:`RawTables`, unchecked.

    ``options`` go to the format's reader (Monolix column names, SDTM evaluator, ...).
    """
    fmt = format or detect_format(path)
    if fmt not in FORMATS:
        raise FormatError(f"unknown format {fmt!r}; formats are {', '.join(FORMATS)}", code="unknown-format")
    options = {k: v for k, v in options.items() if v is not None}
    if fmt == "tidy":
        if options:
            raise DataError(f"options {sorted(options)} do not apply to the tidy format", code="bad-option")
        from .tidy import read_tidy_raw

        return read_tidy_raw(path)
    if fmt == "monolix":
        from .monolix import read_monolix_raw

        return read_monolix_raw(path, **options)
    from .sdtm import read_sdtm_raw

    return read_sdtm_raw(path, **options)


def cohort_from_raw(
    raw: RawTables,
    *,
    organ_map: OrganMap | None = None,
    axis_ratio: float = DEFAULT_AXIS_RATIO,
    limit_mm3: float = DEFAULT_LIMIT_MM3,
    validate: bool = True,
):  # -> Cohort
    """Validate ``raw`` (raising :class:`DataError` listing every problem), warn about dirty data, and
    build the Cohort (rows identical after conversion dropped)."""
    from ..cohort import Cohort
    from ..validate import validate_tables

    if validate:
        report = validate_tables(raw, organ_map=organ_map)
        report.raise_for_errors()
        for message in report.warning_messages():
            warnings.warn(message, DataWarning, stacklevel=3)
    for note in raw.notes:
        warnings.warn(note, DataWarning, stacklevel=3)
    tables = raw.tables
    meta = dict(raw.meta)
    meta.setdefault("format", raw.format)
    return Cohort.from_tables(
        tables["patients"],
        tables["lesions"],
        tables["measurements"],
        tables.get("assessments", pd.DataFrame()),
        axis_ratio=meta.pop("axis_ratio", axis_ratio) if raw.format == "tidy" else axis_ratio,
        limit_mm3=meta.pop("limit_mm3", limit_mm3) if raw.format == "tidy" else limit_mm3,
        organ_map=organ_map,
        meta=meta,
        warn_unmapped=not validate,
    )


def read_cohort(
    path: str | Path,
    format: str | None = None,
    *,
    organ_map: str | Path | pd.DataFrame | OrganMap | None = None,
    axis_ratio: float = DEFAULT_AXIS_RATIO,
    limit_mm3: float = DEFAULT_LIMIT_MM3,
    **options: Any,
):  # -> Cohort
    """Read any supported input into a validated :class:`~lesionatlas.data.cohort.Cohort`.

    Parameters
    ----------
    path : path
        A tidy folder, a Monolix/NONMEM-style CSV, or a folder of SDTM domains.
    format : {'tidy', 'monolix', 'sdtm'}, optional
        Forces the format instead of detecting it.
    organ_map : path, DataFrame or OrganMap, optional
        Extra site -> organ rows (``site, organ[, match]``) that win over the shipped map.
    axis_ratio, limit_mm3 : float
        Volume formula and quantification limit (a tidy folder written by lesionatlas keeps its own).
    **options
        Reader options: Monolix ``id, time, dv, cens, limit, patient``; SDTM ``evaluator, domains, suffix,
        partial_dates`` (see :func:`~lesionatlas.data.readers.sdtm.read_sdtm_raw`).

    Raises
    ------
    DataError
        When the data cannot be used; the message lists every problem found.
    """
    omap = organ_map if isinstance(organ_map, OrganMap) else load_organ_map(organ_map)
    raw = read_raw(path, format, **options)
    return cohort_from_raw(raw, organ_map=omap, axis_ratio=axis_ratio, limit_mm3=limit_mm3)

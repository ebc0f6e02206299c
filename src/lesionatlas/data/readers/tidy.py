"""The tidy format: a folder with patients, lesions, measurements and (optionally) assessments tables."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...errors import DataError, FormatError
from .base import RawTables

#: Tables a tidy folder must have.
TIDY_REQUIRED = ("patients", "lesions", "measurements")
TIDY_OPTIONAL = ("assessments",)
_SUFFIXES = (".parquet", ".csv", ".csv.gz", ".tsv")


def find_table_file(folder: Path, name: str) -> Path | None:
    """``folder/name.parquet`` (preferred), ``.csv``, ``.csv.gz`` or ``.tsv``; ``None`` when absent."""
    for suffix in _SUFFIXES:
        candidate = folder / f"{name}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def read_table_file(path: Path) -> pd.DataFrame:
    """Read one table file as text columns (Parquet keeps its types); clear error when unreadable."""
    try:
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            sep = "\t" if path.suffix == ".tsv" else ","
            frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=True, skipinitialspace=True)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path}: the file is empty; it needs a header row and data rows", code="empty-file") from exc
    except Exception as exc:  # pyarrow / parser errors have many classes
        raise DataError(
            f"{path}: cannot be read as {'Parquet' if path.suffix == '.parquet' else 'CSV'} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'})",
            code="unreadable-file",
        ) from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def read_tidy_raw(path: str | Path) -> RawTables:
    """Read a tidy folder into :class:`RawTables` (no checks beyond readability).

    Raises
    ------
    DataError
        When the folder or a required table file is missing or a file cannot be read.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise FormatError(f"{folder}: not a folder; a tidy cohort is a folder of table files", code="not-found")
    tables: dict[str, pd.DataFrame] = {}
    sources: dict[str, str] = {}
    missing = []
    for name in TIDY_REQUIRED + TIDY_OPTIONAL:
        file = find_table_file(folder, name)
        if file is None:
            if name in TIDY_REQUIRED:
                missing.append(name)
            continue
        tables[name] = read_table_file(file)
        sources[name] = str(file)
    if missing:
        raise DataError(
            f"{folder}: missing table file(s) {', '.join(missing)}; a tidy cohort needs "
            f"patients, lesions and measurements as .parquet or .csv (assessments optional)",
            code="missing-file",
        )
    from ..cohort import load_meta

    meta = {"source": str(folder), "format": "tidy", **load_meta(folder)}
    return RawTables(tables=tables, sources=sources, format="tidy", meta=meta)


def read_tidy(path: str | Path):  # -> Cohort (import cycle kept local)
    """Read and validate a tidy folder into a :class:`~lesionatlas.data.cohort.Cohort`."""
    from .detect import read_cohort

    return read_cohort(path, format="tidy")

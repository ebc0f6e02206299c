"""Atomic writing of tables and folders: outputs appear whole or not at all."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd


@contextmanager
def atomic_dir(path: str | Path, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` in one rename.

    On an exception the temporary folder is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            if not overwrite:
                raise FileExistsError(path)
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented, key-sorted JSON."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_table(frame: pd.DataFrame, folder: Path, name: str, *, csv: bool = True, parquet: bool = True) -> None:
    """Write ``frame`` as ``folder/name.parquet`` and/or ``folder/name.csv`` (no index)."""
    if parquet:
        frame.to_parquet(folder / f"{name}.parquet", index=False)
    if csv:
        frame.to_csv(folder / f"{name}.csv", index=False, lineterminator="\n")


def write_result_dir(
    path: str | Path,
    tables: dict[str, pd.DataFrame],
    meta: dict[str, Any],
    *,
    meta_name: str = "meta.json",
    csv: bool = True,
    parquet: bool = True,
    extra: Any = None,
) -> Path:
    """Write a result folder atomically: each table (Parquet and/or CSV), the ``meta`` JSON, and whatever
    ``extra(tmp_folder)`` adds (sub-results, figures). Every result's ``to_dir`` goes through here."""
    path = Path(path)
    with atomic_dir(path) as tmp:
        for name, frame in tables.items():
            write_table(frame, tmp, name, csv=csv, parquet=parquet)
        if extra is not None:
            extra(tmp)
        write_json(tmp / meta_name, meta)
    return path

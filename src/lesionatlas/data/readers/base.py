"""What every reader returns before validation: the raw tables, and where each came from."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd


@dataclass(frozen=True, eq=False)
class RawTables:
    """Tables as read, with canonical column names but values not yet checked or converted.

    Attributes
    ----------
    tables : dict
        ``patients``, ``lesions``, ``measurements`` and ``assessments`` (the last may be absent) as read.
        Values may still be text; validation reports what cannot be converted.
    sources : dict
        Table name -> the file (or file and row range) it came from, used in messages.
    format : str
        ``tidy``, ``monolix``, ``sdtm`` or ``simulated``.
    meta : dict
        Reader facts kept with the Cohort (source path, evaluator chosen, ...).
    notes : list of str
        Things the reader did that a user should know (rows skipped, defaults used); shown as warnings.
    """

    tables: dict[str, pd.DataFrame]
    sources: dict[str, str] = field(default_factory=dict)
    format: str = "tidy"
    meta: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def source(self, table: str) -> str:
        """Where ``table`` came from, for messages."""
        return self.sources.get(table, table)

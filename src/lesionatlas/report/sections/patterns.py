"""Report section (being written)."""
from __future__ import annotations

from typing import Any

from ..document import Section


def build(run: Any) -> list[Section]:
    return []

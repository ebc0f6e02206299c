"""A run view with chosen stage statuses and results, for the section builders' tests."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any


class FakeRun:
    """``results``: stage -> result object; ``statuses``: stage -> (status, reason), default done."""

    def __init__(self, results: dict[str, Any], statuses: dict[str, tuple[str, str]], config: Any = None):
        self.results, self.statuses, self.config = results, statuses, config

    def __getitem__(self, name: str) -> Any:
        status, reason = self.statuses.get(name, ("done", ""))
        return SimpleNamespace(name=name, status=status, reason=reason, seconds=None, warnings=())

    def load(self, name: str) -> Any:
        return self.results.get(name) if self[name].status == "done" else None

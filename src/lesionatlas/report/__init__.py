"""The report: the paper's figures and tables, the fit diagnostics and the run facts, as one HTML page.

:func:`build_report` takes a finished run (:class:`lesionatlas.pipeline.RunResult`, or anything with
the same few attributes, see :class:`RunView`) and writes ``report.html`` (self-contained: figures
embedded, no network needed) and ``figures/`` (every figure as PNG and SVG) into the run folder.

A section that fails to draw does not stop the report: it shows what went wrong, and the failure is
listed in the returned :class:`ReportResult` (and in the run facts).
"""
from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .document import Note, Section, write_report


class StageView(Protocol):
    name: str
    status: str
    reason: str
    seconds: float | None
    warnings: tuple[str, ...]


class RunView(Protocol):
    """What a section builder may use of a run."""

    out: Path
    config: Any
    stages: tuple[StageView, ...]

    def __getitem__(self, name: str) -> StageView: ...

    def load(self, name: str) -> Any: ...


@dataclass(frozen=True)
class ReportResult:
    """Where the report went, how long it took, and the sections that failed to draw (``id: error``)."""

    path: Path
    figures: Path
    seconds: float
    n_figures: int
    failures: tuple[str, ...]


def _builders() -> list[tuple[str, str, Callable[[Any], list[Section]]]]:
    from .sections import cohort, facts, growth, hazards, patterns, prediction

    return [
        ("overview", "Overview", facts.overview),
        ("cohort", "Cohort", cohort.build),
        ("growth", "Lesion growth dynamics", growth.build),
        ("hazards", "Organ response and progression", hazards.build),
        ("patterns", "Progression patterns and survival", patterns.build),
        ("prediction", "Predicting the pattern group", prediction.build),
        ("run", "Run facts", facts.run_facts),
    ]


def build_sections(run: RunView, *, only: Sequence[str] | None = None) -> tuple[list[Section], list[str]]:
    """Every section of the report, and the failures (``"id: Error: message"``) of builders that raised."""
    sections: list[Section] = []
    failures: list[str] = []
    for key, title, builder in _builders():
        if only is not None and key not in only:
            continue
        try:
            sections.extend(builder(run))
        except Exception as exc:  # noqa: BLE001 - one broken figure must not cost the whole report
            message = f"{key}: {type(exc).__name__}: {exc}"
            failures.append(message)
            detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
            sections.append(Section(key, title, blocks=[Note(
                f"This part of the report could not be drawn ({detail}). The tables are in the run folder; "
                "please report this with the run's manifest.json.", "warning")]))
    if failures:
        for s in sections:
            if s.id == "run":
                s.note("Parts of the report could not be drawn: " + "; ".join(failures), "warning")
    return sections, failures


def build_report(run: RunView, out: str | Path | None = None, *, dpi: int = 110) -> ReportResult:
    """Write ``report.html`` and ``figures/`` for ``run`` into ``out`` (default: the run folder)."""
    started = time.perf_counter()
    out = Path(out) if out is not None else Path(run.out)
    sections, failures = build_sections(run)
    n_figures = sum(1 for s in sections for b in s.blocks if type(b).__name__ == "Figure")
    from .sections.facts import page_titles

    title, subtitle, footer = page_titles(run)
    path = write_report(sections, out, title=title, subtitle=subtitle, footer=footer, dpi=dpi)
    return ReportResult(path=path, figures=out / "figures", seconds=round(time.perf_counter() - started, 3),
                        n_figures=n_figures, failures=tuple(failures))


__all__ = ["ReportResult", "RunView", "build_report", "build_sections"]

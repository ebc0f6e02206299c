"""The report as data: sections of figures, tables and notes, written as one self-contained HTML page.

A section builder (``lesionatlas.report.sections.*``) returns :class:`Section` objects; it never writes
files. :func:`write_report` renders every figure once as PNG (embedded in the page as base64, so the
page needs no network and no other file) and saves it as PNG and SVG under ``figures/``, then writes
``report.html`` atomically. Figures are Agg-backed :class:`matplotlib.figure.Figure` objects made with
:func:`new_figure`, which touches no global pyplot state.
"""
from __future__ import annotations

import base64
import html
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..io import atomic_dir, atomic_write_text

#: colours for categorical series (colour-blind safe, Okabe-Ito order then greys)
PALETTE: tuple[str, ...] = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442",
                            "#000000", "#7f7f7f", "#b07aa1", "#9c755f", "#59a14f")


def colour(i: int) -> str:
    """The ``i``-th categorical colour (cycles)."""
    return PALETTE[i % len(PALETTE)]


def new_figure(width: float = 6.4, height: float = 4.2, *, nrows: int = 1, ncols: int = 1,
               **subplots: Any) -> tuple[Any, Any]:
    """An Agg-backed figure and its axes (``fig.subplots(nrows, ncols, **subplots)``), constrained layout.

    With ``nrows = ncols = 1`` the second value is one Axes, otherwise an array of them (``squeeze``
    as in matplotlib unless given).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, **subplots)
    return fig, axes


@dataclass(frozen=True)
class Figure:
    """One figure: ``name`` is its file stem under ``figures/`` (e.g. ``fig2b_parameters_by_organ``)."""

    name: str
    title: str
    figure: Any
    caption: str = ""


@dataclass(frozen=True)
class Table:
    """One table, shown with at most ``max_rows`` rows; ``source`` names the run-folder file it comes from."""

    name: str
    title: str
    frame: pd.DataFrame
    caption: str = ""
    max_rows: int = 40
    source: str = ""


@dataclass(frozen=True)
class Note:
    """A paragraph of text; ``kind`` is ``info``, ``warning`` or ``skipped`` (a stage that could not run)."""

    text: str
    kind: str = "info"


@dataclass(frozen=True)
class Facts:
    """Key figures shown as a row of tiles: ``(label, value)`` pairs."""

    items: tuple[tuple[str, str], ...]


Block = Figure | Table | Note | Facts


@dataclass
class Section:
    """A titled part of the report; ``id`` is its HTML anchor (also used by tests to find it)."""

    id: str
    title: str
    intro: str = ""
    blocks: list[Block] = field(default_factory=list)

    def figure(self, name: str, title: str, figure: Any, caption: str = "") -> Section:
        self.blocks.append(Figure(name, title, figure, caption))
        return self

    def table(self, name: str, title: str, frame: pd.DataFrame, caption: str = "", *, max_rows: int = 40,
              source: str = "") -> Section:
        self.blocks.append(Table(name, title, frame, caption, max_rows, source))
        return self

    def note(self, text: str, kind: str = "info") -> Section:
        self.blocks.append(Note(text, kind))
        return self

    def facts(self, items: Sequence[tuple[str, Any]]) -> Section:
        self.blocks.append(Facts(tuple((str(k), str(v)) for k, v in items)))
        return self

    def skipped(self, stage: str, reason: str) -> Section:
        """Say that ``stage`` did not run and why (the section shows this instead of its figures)."""
        return self.note(f"The {stage} stage did not run on these data: {reason}", "skipped")


# ------------------------------------------------------------------------------------------ formatting
def format_value(value: Any) -> str:
    """A cell as text: integers with thousands separators, floats to 4 significant digits, p-values small."""
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return ""
        if math.isinf(v):
            return "∞" if v > 0 else "−∞"
        if v.is_integer() and abs(v) < 1e15:
            return f"{int(v):,}"
        if v != 0 and abs(v) < 1e-3:
            return f"{v:.2e}"
        return f"{v:.4g}"
    if value is pd.NA or value is pd.NaT:
        return ""
    return str(value)


def _is_p_column(name: str) -> bool:
    name = name.lower()
    return name in ("p", "pvalue") or name.startswith("p_") or name.endswith("_p") or "p_value" in name


def table_html(frame: pd.DataFrame, max_rows: int = 40) -> str:
    """``frame`` as an HTML table (escaped, numbers formatted); rows beyond ``max_rows`` are counted, not shown."""
    shown = frame.head(max_rows)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in shown.columns)
    rows = []
    p_columns = {i for i, c in enumerate(shown.columns) if _is_p_column(str(c))}
    for rec in shown.itertuples(index=False):
        cells = []
        for i, v in enumerate(rec):
            text = format_value(v)
            if i in p_columns and text == "0":
                text = "<1e-300"  # a p-value that underflowed double precision
            num = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
            cells.append(f'<td class="num">{html.escape(text)}</td>' if num else f"<td>{html.escape(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    more = len(frame) - len(shown)
    foot = f'<p class="more">{more:,} more rows not shown.</p>' if more > 0 else ""
    return f'<div class="tablewrap"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>{foot}'


# ------------------------------------------------------------------------------------------ rendering
_CSS = """
:root { --ink:#1d2733; --muted:#5b6877; --line:#d9dee5; --accent:#0072B2; --bg:#ffffff; --soft:#f4f6f9; }
* { box-sizing: border-box; }
body { margin:0; font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--ink); background: var(--bg); }
header.top { background:#12324a; color:#fff; padding:28px 40px 22px; }
header.top h1 { margin:0 0 6px; font-size:26px; font-weight:600; }
header.top p { margin:0; color:#c9d6e2; }
nav.toc { position:sticky; top:0; background:#fff; border-bottom:1px solid var(--line); padding:8px 40px;
          z-index:10; font-size:13px; white-space:nowrap; overflow-x:auto; }
nav.toc a { color: var(--accent); text-decoration:none; margin-right:16px; }
main { max-width: 1180px; margin: 0 auto; padding: 8px 40px 60px; }
section { border-bottom:1px solid var(--line); padding: 18px 0 26px; }
section h2 { font-size:21px; margin: 8px 0 6px; }
section > p.intro { color: var(--muted); margin-top:0; max-width: 900px; }
figure { margin: 18px 0; }
figure h3, .block h3 { font-size:16px; margin: 0 0 6px; }
figure img { max-width:100%; height:auto; border:1px solid var(--line); border-radius:4px; background:#fff; }
figcaption { color: var(--muted); font-size: 13px; max-width: 900px; margin-top:4px; }
.tablewrap { overflow-x:auto; max-width:100%; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 10px; text-align:left; vertical-align:top; }
th { background: var(--soft); font-weight:600; position: sticky; top: 0; }
td.num { text-align:right; font-variant-numeric: tabular-nums; }
p.more, p.source { color: var(--muted); font-size: 12px; margin: 2px 0; }
.note { padding: 8px 12px; border-left: 4px solid var(--accent); background: var(--soft); margin: 10px 0; max-width: 900px; }
.note.warning { border-color: #E69F00; background: #fff8e8; }
.note.skipped { border-color: #D55E00; background: #fdf0ea; }
.facts { display:flex; flex-wrap:wrap; gap:10px; margin: 12px 0; }
.facts div { background: var(--soft); border-radius:6px; padding: 8px 14px; min-width: 130px; }
.facts b { display:block; font-size: 19px; }
.facts span { color: var(--muted); font-size: 12px; }
footer { color: var(--muted); font-size: 12px; padding: 20px 40px; }
"""


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def _render_figure(fig: Figure, folder: Path | None, dpi: int) -> str:
    buf = io.BytesIO()
    fig.figure.savefig(buf, format="png", dpi=dpi)
    png = buf.getvalue()
    if folder is not None:
        # keep the layout the PNG got: the SVG then has the same one, and constrained layout (a third of
        # the rendering time) does not run again
        fig.figure.set_layout_engine("none")
        (folder / f"{fig.name}.png").write_bytes(png)
        fig.figure.savefig(folder / f"{fig.name}.svg", format="svg")
    data = base64.b64encode(png).decode("ascii")
    caption = f"<figcaption>{html.escape(fig.caption)}</figcaption>" if fig.caption else ""
    return (f'<figure id="fig-{html.escape(fig.name)}"><h3>{html.escape(fig.title)}</h3>'
            f'<img alt="{html.escape(fig.title)}" src="data:image/png;base64,{data}">{caption}</figure>')


def _render_block(block: Block, folder: Path | None, dpi: int) -> str:
    if isinstance(block, Figure):
        return _render_figure(block, folder, dpi)
    if isinstance(block, Table):
        caption = f"<figcaption>{html.escape(block.caption)}</figcaption>" if block.caption else ""
        source = f'<p class="source">Full table: {html.escape(block.source)}</p>' if block.source else ""
        return (f'<div class="block" id="tab-{html.escape(block.name)}"><h3>{html.escape(block.title)}</h3>'
                f"{table_html(block.frame, block.max_rows)}{caption}{source}</div>")
    if isinstance(block, Note):
        return f'<div class="note {html.escape(block.kind)}">{html.escape(block.text)}</div>'
    if isinstance(block, Facts):
        tiles = "".join(f"<div><b>{html.escape(v)}</b><span>{html.escape(k)}</span></div>" for k, v in block.items)
        return f'<div class="facts">{tiles}</div>'
    raise TypeError(f"not a report block: {type(block).__name__}")  # pragma: no cover


def render_html(sections: Sequence[Section], *, title: str, subtitle: str = "", footer: str = "",
                figures_dir: Path | None = None, dpi: int = 110) -> str:
    """The whole page as one string; figures are saved (PNG + SVG) into ``figures_dir`` when given."""
    parts = []
    for s in sections:
        intro = f'<p class="intro">{html.escape(s.intro)}</p>' if s.intro else ""
        body = "".join(_render_block(b, figures_dir, dpi) for b in s.blocks)
        parts.append(f'<section id="{html.escape(s.id or _slug(s.title))}"><h2>{html.escape(s.title)}</h2>'
                     f"{intro}{body}</section>")
    toc = "".join(f'<a href="#{html.escape(s.id)}">{html.escape(s.title)}</a>' for s in sections)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>"
            f'<header class="top"><h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p></header>'
            f'<nav class="toc">{toc}</nav><main>{"".join(parts)}</main>'
            f"<footer>{html.escape(footer)}</footer></body></html>\n")


def write_report(sections: Sequence[Section], out: str | Path, *, title: str, subtitle: str = "",
                 footer: str = "", dpi: int = 110) -> Path:
    """Write ``out/report.html`` and ``out/figures/`` (PNG + SVG of every figure), each atomically.

    Returns the path of report.html. Figures are closed after rendering.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out / "figures") as tmp:
        page = render_html(sections, title=title, subtitle=subtitle, footer=footer, figures_dir=tmp, dpi=dpi)
    atomic_write_text(out / "report.html", page)
    return out / "report.html"


__all__ = ["PALETTE", "Block", "Facts", "Figure", "Note", "Section", "Table", "colour", "format_value",
           "new_figure", "render_html", "table_html", "write_report"]

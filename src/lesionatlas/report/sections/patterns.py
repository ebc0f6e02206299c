"""Report sections: organ progression sequences and their groups (Fig. 4), survival by pattern group,
phenotype and treatment (Fig. 5).

Two sections:

- ``patterns`` - the sequence heatmaps (Fig. 4a: every patient's organs in progression order, and the
  paper's count heatmap), how k was chosen (Supplementary Fig. 7), overall and progression-free
  survival by pattern group (Fig. 4b) and the times to the 1st and between successive progressions by
  group with Kruskal–Wallis and Dunn's tests (Fig. 4c);
- ``survival`` - overall survival by treatment within each pattern group (Fig. 5a), group proportions by
  treatment with the chi-square test (Fig. 5b), the most frequent sequences by treatment (Fig. 5c-e),
  inter-progression times by treatment within each group (Fig. 5f-h), and survival by organ phenotype
  (Supplementary Fig. 5) and by treatment.

Every Kaplan–Meier panel is drawn by :func:`draw_km` from the survival stage's tables (curves, medians,
log-rank, numbers at risk), never recomputed here.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ...data.organs import ORGAN_GROUPS, ORGAN_LABELS
from ..document import PALETTE, Section, colour, new_figure

NO_PROGRESSION = "No-Progression"
#: intervals drawn: the 1st progression and the next three gaps (the paper's Fig. 4c and 5f-h)
MAX_STEPS = 4
#: positions shown in the per-patient sequence heatmap
MAX_POSITIONS = 8
#: sequences shown in Fig. 5c
TOP_SEQUENCES = 10
OUTCOME_LABELS = {"os": "Overall survival", "pfs": "Progression-free survival"}
TREATMENT_LABELS = {"antibody+chemo": "Antibody + chemo", "chemo": "Chemo alone"}
PHENOTYPE_COMPARISONS = {
    "any_low_high": ("Any low-high organ", {"yes": "any low-high organ", "no": "no low-high organ"}),
    "only_high_low": ("High-low organs only", {"yes": "high-low organs only", "no": "other patients"}),
}
_GREY = "#7f7f7f"


# ------------------------------------------------------------------------------------------ formatting
def format_p(p: Any, *, prefix: str = "p", plain: bool = False) -> str:
    """A p-value as printed on the figures: ``p = 0.034``, ``p = 3.1×10⁻¹²`` (mathtext), ``p = n/a``.

    ``plain=True`` writes small values as ``3.1e-12`` (for text outside figures).

    Examples
    --------
    >>> format_p(0.03431)
    'p = 0.0343'
    >>> format_p(3.124e-12)
    'p = $3.1\\\\times10^{-12}$'
    """
    try:
        v = float(p)
    except (TypeError, ValueError):
        return f"{prefix} = n/a"
    if not math.isfinite(v):
        return f"{prefix} = n/a"
    if v == 0.0:
        return f"{prefix} < $10^{{-300}}$"
    if v >= 1e-4:
        return f"{prefix} = {v:.3g}"
    if plain:
        return f"{prefix} = {v:.1e}"
    exponent = int(math.floor(math.log10(v)))
    mantissa = v / 10.0 ** exponent
    if round(mantissa, 1) >= 10.0:
        mantissa, exponent = mantissa / 10.0, exponent + 1
    return f"{prefix} = ${mantissa:.1f}\\times10^{{{exponent}}}$"


def _days(v: Any) -> str:
    v = float(v)
    if not math.isfinite(v):
        return "NR"
    return f"{v:,.0f}"


def median_text(median: Any, lower: Any, upper: Any) -> str:
    """``327 d [278–405]``; a median the curve never reaches is ``not reached``, an open CI end ``NR``."""
    if not math.isfinite(float(median)):
        return f"not reached [{_days(lower)}–{_days(upper)}]"
    return f"{_days(median)} d [{_days(lower)}–{_days(upper)}]"


def organ_label(organ: Any) -> str:
    """Display name of an organ (``lymph_node_distal`` -> ``Lymph node (distal)``)."""
    organ = str(organ)
    return ORGAN_LABELS.get(organ, organ.replace("_", " ").capitalize())


def sequence_label(sequence: str) -> str:
    """``liver > lung`` -> ``Liver → Lung``."""
    return " → ".join(organ_label(o.strip()) for o in str(sequence).split(">"))


def treatment_label(value: Any) -> str:
    return TREATMENT_LABELS.get(str(value), str(value))


# ------------------------------------------------------------------------------------------ colours
def group_colours(groups: Sequence[str]) -> dict[str, str]:
    """One colour per pattern group, in the order given; No-Progression grey."""
    out, i = {}, 0
    for g in groups:
        if g == NO_PROGRESSION:
            out[g] = _GREY
        else:
            out[g] = colour(i)
            i += 1
    return out


def organ_colours() -> dict[str, str]:
    """A fixed colour per organ group (the same organ has the same colour in every figure)."""
    import matplotlib

    tab20 = matplotlib.colormaps["tab20"].colors
    cycle = [matplotlib.colors.to_hex(tab20[i]) for i in list(range(0, 20, 2)) + list(range(1, 20, 2))]
    return {o: cycle[i % len(cycle)] for i, o in enumerate(ORGAN_GROUPS)}


def _treatment_colours(levels: Sequence[str]) -> dict[str, str]:
    order = (0, 3, 2, 4, 1, 5)
    return {t: PALETTE[order[i % len(order)]] for i, t in enumerate(levels)}


# ------------------------------------------------------------------------------------------ Kaplan–Meier
def km_figure(n_panels: int, *, ncols: int = 1, n_risk_rows: int = 2, width: float = 6.5,
              panel_height: float = 3.0) -> tuple[Any, list[tuple[Any, Any]]]:
    """A figure of ``n_panels`` Kaplan–Meier panels, each an (axes, at-risk axes) pair stacked vertically.

    ``panel_height`` is the height of the curves (inches); room for a legend of ``n_risk_rows`` groups
    above them (:func:`draw_km`'s ``legend="top"``) and for the at-risk rows under them is added. Unused
    cells of the grid are hidden. The at-risk axes share the x axis of the panel above them.
    """
    ncols = max(1, min(ncols, n_panels))
    nrows = math.ceil(n_panels / ncols)
    panel_height = panel_height + 0.17 * (n_risk_rows + 1)
    risk_height = 0.35 + 0.17 * n_risk_rows
    height = nrows * (panel_height + risk_height)
    fig, axes = new_figure(width, height, nrows=2 * nrows, ncols=ncols, squeeze=False,
                           gridspec_kw={"height_ratios": [panel_height, risk_height] * nrows})
    pairs = []
    for i in range(nrows * ncols):
        r, c = divmod(i, ncols)
        ax, risk = axes[2 * r, c], axes[2 * r + 1, c]
        if i >= n_panels:
            ax.set_visible(False)
            risk.set_visible(False)
            continue
        risk.sharex(ax)
        pairs.append((ax, risk))
    return fig, pairs


def km_tables(survival: Any, outcome: str, comparison: str, stratum: str = "all") -> dict[str, pd.DataFrame]:
    """The rows of one comparison in each survival table: ``curves, medians, logrank, pairwise, at_risk``."""
    out = {}
    for name in ("curves", "medians", "logrank", "pairwise", "at_risk"):
        t = getattr(survival, name, None)
        if t is None or t.empty or "outcome" not in t.columns:
            out[name] = pd.DataFrame()
            continue
        keep = (t["outcome"] == outcome) & (t["comparison"] == comparison) & (t["stratum"].astype(str) == stratum)
        out[name] = t[keep].reset_index(drop=True)
    return out


def draw_km(ax: Any, tables: dict[str, pd.DataFrame], *, risk_ax: Any = None, groups: Sequence[str] | None = None,
            colours: dict[str, str] | None = None, labels: dict[str, str] | None = None, outcome: str = "os",
            ci: bool = True, censor_ticks: bool = True, legend: str | None = "top", legend_fontsize: float = 8,
            title: str | None = None, show_n: bool = True, risk_labels: bool = True,
            max_risk_times: int | None = None) -> Any:
    """Kaplan–Meier curves of one comparison as drawn in every survival figure of the report.

    Each group's curve is a post-step function of ``curves.time`` / ``curves.survival`` with its 95% CI
    band, ticks where patients were censored, and a legend entry with ``n`` and the median [95% CI]
    from ``medians``; the legend's title is the log-rank p-value from ``logrank``. Numbers at risk from
    ``at_risk`` are written on ``risk_ax`` (one row per group, at the table's times, which also become
    the x ticks).

    Parameters
    ----------
    ax : Axes
        Where the curves go.
    tables : dict of DataFrame
        ``curves`` (``group, time, survival, ci_lower, ci_upper, censored``), and optionally ``medians``
        (``group, n, median, ci_lower, ci_upper``), ``logrank`` (``p_value``), ``at_risk``
        (``group, time, at_risk``), as from :func:`km_tables`.
    risk_ax : Axes, optional
        Where the numbers at risk go (see :func:`km_figure`).
    groups : sequence of str, optional
        Groups to draw and their order (default: as in ``curves``).
    colours, labels : dict, optional
        Colour and display name per group.
    outcome : {"os", "pfs"}
        Names the y axis.
    legend : {"top", "right", "inside"} or None
        Where the legend goes (``top``: above the axes, titled with ``title`` and the log-rank p-value).
    show_n : bool
        Put each group's size in its legend entry.
    risk_labels : bool
        Name the at-risk rows (off for panels right of the first in a grid).
    max_risk_times : int, optional
        Show at most this many of the at-risk times (every second, third, ... one), for narrow panels.

    Returns
    -------
    Axes
        ``ax``, labelled ``km:<outcome>`` (``risk_ax``: ``at-risk:<outcome>``); each curve is a Line2D whose
        ``gid`` is the group, each at-risk number a Text whose ``gid`` is ``"<group>|<time>"``.
    """
    curves = tables.get("curves", pd.DataFrame())
    medians = tables.get("medians", pd.DataFrame())
    logrank = tables.get("logrank", pd.DataFrame())
    at_risk = tables.get("at_risk", pd.DataFrame())
    present = list(pd.unique(curves["group"].astype(str))) if len(curves) else []
    groups = [g for g in (groups if groups is not None else present) if g in present]
    groups += [g for g in present if g not in groups]
    colours = dict(colours or {})
    for i, g in enumerate(groups):
        colours.setdefault(g, colour(i))
    labels = labels or {}
    med = medians.assign(group=medians["group"].astype(str)).set_index("group") if len(medians) else pd.DataFrame()
    t_max = 0.0
    for g in groups:
        sub = curves[curves["group"].astype(str) == g].sort_values("time", kind="stable")
        t = sub["time"].to_numpy(dtype=float)
        s = sub["survival"].to_numpy(dtype=float)
        t_max = max(t_max, float(t.max()) if len(t) else 0.0)
        c = colours[g]
        name = labels.get(g, g)
        if g in med.index:
            row = med.loc[g]
            n_text = f" (n = {int(row['n']):,})" if show_n else ""
            name = f"{name}{n_text}: {median_text(row['median'], row['ci_lower'], row['ci_upper'])}"
        line, = ax.step(t, s, where="post", color=c, lw=1.4, label=name, gid=g)
        if ci and {"ci_lower", "ci_upper"} <= set(sub.columns):
            ax.fill_between(t, sub["ci_lower"].to_numpy(dtype=float), sub["ci_upper"].to_numpy(dtype=float),
                            step="post", color=c, alpha=0.13 if len(groups) <= 3 else 0.07, lw=0,
                            rasterized=bool(len(t) > 200))
        if censor_ticks and "censored" in sub.columns:
            cens = sub["censored"].to_numpy(dtype=float) > 0
            if cens.any():
                ax.plot(t[cens], s[cens], "|", color=c, ms=4, mew=0.7, rasterized=bool(cens.sum() > 300))
    ax.set_ylim(0, 1.03)
    ax.set_xlim(0, t_max * 1.02 if t_max > 0 else 1.0)
    ax.set_ylabel(f"{OUTCOME_LABELS.get(outcome, outcome)}\n(probability)")
    ax.grid(True, color="0.92", lw=0.6)
    ax.set_axisbelow(True)
    p = float(logrank["p_value"].iloc[0]) if len(logrank) and "p_value" in logrank else float("nan")
    p_text = f"log-rank {format_p(p)}" if len(logrank) else None
    if legend and groups:
        head = " — ".join(x for x in (title, p_text) if x)
        where = {"top": {"loc": "lower left", "bbox_to_anchor": (0.0, 1.01)},
                 "right": {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0)},
                 "inside": {"loc": "upper right"}}[str(legend)]
        leg = ax.legend(**where, fontsize=legend_fontsize, frameon=False, title=head or None,
                        title_fontsize=legend_fontsize + 1, handlelength=1.4, borderaxespad=0.2)
        leg._legend_box.align = "left"
    else:
        if title:
            ax.set_title(title, fontsize=10)
        if p_text:
            ax.text(0.98, 0.97, p_text, transform=ax.transAxes, ha="right", va="top", fontsize=8)
    times = sorted(at_risk["time"].astype(float).unique()) if len(at_risk) else []
    if max_risk_times and len(times) > max_risk_times:
        times = times[:: math.ceil(len(times) / max_risk_times)]
        at_risk = at_risk[at_risk["time"].astype(float).isin(times)]
    if times:
        ax.set_xticks(times)
        ax.set_xticklabels([f"{t:,.0f}" for t in times])
    ax.set_xlabel("days since treatment start")
    ax.set_label(f"km:{outcome}")
    if risk_ax is not None:
        _draw_at_risk(risk_ax, at_risk, groups, colours, labels, risk_labels)
        risk_ax.set_label(f"at-risk:{outcome}")
    return ax


def _draw_at_risk(risk_ax: Any, at_risk: pd.DataFrame, groups: Sequence[str], colours: dict[str, str],
                  labels: dict[str, str], named: bool = True) -> None:
    for side in ("top", "right", "bottom", "left"):
        risk_ax.spines[side].set_visible(False)
    risk_ax.tick_params(axis="x", bottom=False, labelbottom=False)
    rows = [g for g in groups if len(at_risk) and (at_risk["group"].astype(str) == g).any()]
    if not rows:
        risk_ax.set_yticks([])
        risk_ax.text(0.0, 0.5, "numbers at risk not available", transform=risk_ax.transAxes, fontsize=8,
                     va="center", color="0.4")
        return
    for i, g in enumerate(rows):
        sub = at_risk[at_risk["group"].astype(str) == g]
        for t, n in zip(sub["time"].astype(float), sub["at_risk"].astype(int)):
            risk_ax.text(t, i, f"{n:,}", ha="center", va="center", fontsize=8, color=colours.get(g, "k"),
                         gid=f"{g}|{t:g}", clip_on=False)
    risk_ax.set_ylim(len(rows) - 0.5, -0.5)
    if named:
        short = [_short(labels.get(g, g)) for g in rows]
        risk_ax.set_yticks(range(len(rows)), short, fontsize=8)
        for tick, g in zip(risk_ax.get_yticklabels(), rows):
            tick.set_color(colours.get(g, "k"))
        # the numbers at the first time are centred on the axis edge: keep the row names clear of them
        first = at_risk[at_risk["time"].astype(float) == float(at_risk["time"].astype(float).min())]
        widest = max((len(f"{int(n):,}") for n in first["at_risk"]), default=1)
        risk_ax.tick_params(axis="y", length=0, pad=6 + 3.2 * widest)
    else:
        risk_ax.set_yticks([])
    risk_ax.set_title("Number at risk", fontsize=8, loc="left", pad=2)


def _short(text: str, n: int = 22) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


# ------------------------------------------------------------------------------------------ helpers
def _status(run: Any, stage: str) -> tuple[str, str]:
    try:
        st = run[stage]
    except (KeyError, IndexError):
        return "not run", f"the {stage} stage is not part of this run"
    return str(getattr(st, "status", "not run")), str(getattr(st, "reason", "") or "")


def _load(run: Any, stage: str) -> tuple[Any, str]:
    """The stage's result, or None and the reason it is missing."""
    status, reason = _status(run, stage)
    if status != "done":
        return None, reason or f"status {status}"
    result = run.load(stage)
    if result is None:
        return None, "its results could not be read from the run folder"
    return result, ""


def _group_order(patterns: Any, survival: Any = None) -> list[str]:
    """Pattern groups largest first, No-Progression last (the order of every figure and table)."""
    groups: list[str] = []
    if patterns is not None:
        groups = [str(g) for g in patterns.groups]
        if (patterns.assignments["group"] == NO_PROGRESSION).any():
            groups.append(NO_PROGRESSION)
    elif survival is not None and "pattern_group" in getattr(survival, "patients", pd.DataFrame()):
        counts = survival.patients["pattern_group"].dropna().astype(str).value_counts()
        groups = [g for g in counts.index if g != NO_PROGRESSION] + ([NO_PROGRESSION] if NO_PROGRESSION in counts else [])
    return groups


def _arm(survival: Any) -> str | None:
    pats = getattr(survival, "patients", pd.DataFrame())
    return next((c for c in ("treatment_group", "treatment") if c in pats and pats[c].notna().any()), None)


def _has(tables: dict[str, pd.DataFrame]) -> bool:
    return len(tables.get("curves", ())) > 0


def _medians_table(survival: Any, comparison: str, labels: dict[str, str] | None = None,
                   strata: bool = False) -> pd.DataFrame:
    """Medians with CI and the comparison's log-rank p, one row per outcome (and stratum) and group."""
    m = survival.medians
    m = m[m["comparison"] == comparison].copy()
    if m.empty:
        return pd.DataFrame()
    lr = survival.logrank
    lr = lr[lr["comparison"] == comparison][["outcome", "stratum", "statistic", "df", "p_value"]]
    m = m.merge(lr.rename(columns={"statistic": "logrank_chi2", "df": "logrank_df", "p_value": "logrank_p"}),
                on=["outcome", "stratum"], how="left")
    m["group"] = m["group"].astype(str).map(lambda g: (labels or {}).get(g, g))
    cols = {"outcome": "outcome", "stratum": "pattern_group", "group": "group", "n": "n", "events": "events",
            "median": "median_days", "ci_lower": "ci_lower_days", "ci_upper": "ci_upper_days",
            "logrank_chi2": "logrank_chi2", "logrank_df": "logrank_df", "logrank_p": "logrank_p"}
    if not strata:
        cols.pop("stratum")
    out = m[list(cols)].rename(columns=cols)
    out["outcome"] = out["outcome"].str.upper()
    return out.reset_index(drop=True)


# ------------------------------------------------------------------------------------------ Fig. 4a
def _patient_matrix(sequences: pd.DataFrame, assignments: pd.DataFrame, groups: Sequence[str],
                    max_positions: int) -> tuple[np.ndarray, list[str], list[tuple[str, int]]]:
    """Organ index per (patient, position): rows grouped by pattern group, then sorted by sequence."""
    seq = sequences.astype({"patient_id": str, "organ": str})
    seq = seq[seq["position"] <= max_positions]
    organs = [o for o in ORGAN_GROUPS if o in set(seq["organ"])] + sorted(set(seq["organ"]) - set(ORGAN_GROUPS))
    code = {o: i for i, o in enumerate(organs)}
    wide = (seq.assign(code=seq["organ"].map(code)).pivot_table(index="patient_id", columns="position",
                                                                 values="code", aggfunc="first")
            .reindex(columns=range(1, max_positions + 1)))
    a = assignments.astype({"patient_id": str})
    a = a[a["group"].isin(groups) & (a["group"] != NO_PROGRESSION)]
    blocks, sizes = [], []
    for g in groups:
        ids = a.loc[a["group"] == g, "patient_id"]
        if ids.empty:
            continue
        block = wide.reindex(ids)
        # most common first organs on top, then by the following positions (missing last)
        keys = block.fillna(len(organs)).to_numpy()
        first_freq = pd.Series(keys[:, 0]).map(pd.Series(keys[:, 0]).value_counts()).to_numpy()
        order = np.lexsort(tuple(keys[:, j] for j in range(keys.shape[1] - 1, -1, -1)) + (-first_freq,))
        blocks.append(block.to_numpy(dtype=float)[order])
        sizes.append((g, len(ids)))
    mat = np.vstack(blocks) if blocks else np.empty((0, max_positions))
    return mat, organs, sizes


def _fig_sequences_by_patient(patterns: Any, sequences: pd.DataFrame, groups: Sequence[str],
                              colours: dict[str, str]) -> tuple[Any, str]:
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    n_pos_max = int(sequences["position"].max()) if len(sequences) else 1
    max_positions = min(MAX_POSITIONS, n_pos_max)
    mat, organs, sizes = _patient_matrix(sequences, patterns.assignments, groups, max_positions)
    ocol = organ_colours()
    cmap = ListedColormap([ocol.get(o, "#333333") for o in organs]).with_extremes(bad="white")
    fig, ax = new_figure(8.5, 6.2)
    ax.imshow(np.ma.masked_invalid(mat), aspect="auto", cmap=cmap, vmin=-0.5, vmax=len(organs) - 0.5,
              interpolation="nearest", rasterized=True)
    edges = np.cumsum([0] + [n for _, n in sizes])
    for e in edges[1:-1]:
        ax.axhline(e - 0.5, color="black", lw=1.0)
    ax.set_yticks([(edges[i] + edges[i + 1]) / 2 - 0.5 for i in range(len(sizes))],
                  [f"{g}\n(n = {n:,})" for g, n in sizes], fontsize=8)
    for tick, (g, _) in zip(ax.get_yticklabels(), sizes):
        tick.set_color(colours.get(g, "k"))
    ax.tick_params(axis="y", length=0)
    ax.set_xticks(range(max_positions), [_ordinal(i + 1) for i in range(max_positions)])
    ax.set_xlabel("progression order (organ that progressed 1st, 2nd, ...)")
    ax.set_ylabel("patients, by pattern group")
    ax.set_title("Organ progression sequence of every patient with a progressing organ", fontsize=10)
    handles = [Patch(facecolor=ocol.get(o, "#333333"), label=organ_label(o)) for o in organs]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False,
              title="organ", title_fontsize=8)
    n_more = int((sequences.groupby("patient_id")["position"].max() > max_positions).sum()) if len(sequences) else 0
    extra = (f" {n_more:,} patient(s) had more than {max_positions} progressing organs; positions beyond "
             f"{max_positions} are not shown." if n_more else "")
    caption = ("Each row is one patient, each column the order in which an organ first progressed; the colour "
               "is the organ (white: no further organ progressed). Rows are grouped by the k-means pattern group "
               "and sorted by sequence within a group." + extra)
    return fig, caption


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def _fig_sequence_counts(heatmap: pd.DataFrame, groups: Sequence[str], colours: dict[str, str]) -> Any:
    """The paper's Fig. 4a: per group, organ x progression order, colour log10(patients + 1)."""
    h = heatmap.astype({"group": str, "organ": str})
    groups = [g for g in groups if g in set(h["group"])]
    positions = list(range(1, min(MAX_POSITIONS, int(h["position"].max())) + 1)) if len(h) else [1]
    h = h[h["position"].isin(positions)]
    totals = h.groupby("organ")["n_patients"].sum().sort_values(ascending=False, kind="stable")
    organs = list(totals.index)
    vmax = float(np.log10(h["n_patients"].max() + 1.0)) if len(h) else 1.0
    ncols = len(groups)
    width = min(11.0, 2.2 + 1.55 * ncols + 0.12 * len(positions) * ncols)
    fig, axes = new_figure(width, 1.4 + 0.2 * len(organs), ncols=ncols, squeeze=False, sharey=True)
    im = None
    for j, g in enumerate(groups):
        ax = axes[0, j]
        mat = (h[h["group"] == g].pivot_table(index="organ", columns="position", values="n_patients", aggfunc="sum")
               .reindex(index=organs, columns=positions).fillna(0.0))
        im = ax.imshow(np.log10(mat.to_numpy() + 1.0), aspect="auto", cmap="viridis", vmin=0.0, vmax=vmax,
                       interpolation="nearest")
        ax.set_xticks(range(len(positions)), [str(p) for p in positions], fontsize=8)
        ax.set_title(g, fontsize=9, color=colours.get(g, "k"))
        ax.set_xlabel("order", fontsize=8)
        if j == 0:
            ax.set_yticks(range(len(organs)), [organ_label(o) for o in organs], fontsize=8)
    if im is not None:
        cb = fig.colorbar(im, ax=axes[0, :].tolist(), shrink=0.9, pad=0.01)
        cb.set_label("log10(patients + 1)", fontsize=8)
        cb.ax.tick_params(labelsize=8)
    return fig


# ------------------------------------------------------------------------------------------ choice of k
def _fig_choice_of_k(patterns: Any) -> Any:
    from matplotlib.ticker import MaxNLocator

    from ...patterns.cluster import knee_point

    s = patterns.selection.sort_values("k")
    k = s["k"].to_numpy(dtype=int)
    choices = {r: v for r, v in (patterns.meta.get("choices") or {}).items() if v is not None}
    fig, axes = new_figure(11.0, 3.1, ncols=4)
    panels = [
        ("inertia", "within-cluster sum of squares", "elbow (knee)", None),
        ("silhouette", "silhouette score", "silhouette", "max"),
        (("aic", "bic"), "information criterion", "AIC / BIC", "min"),
        ("logrank_log10_p", "log-rank −log10 p (OS)", "survival separation", "min"),
    ]
    for ax, (col, ylabel, title, _) in zip(axes, panels):
        cols = col if isinstance(col, tuple) else (col,)
        drawn = False
        for ci, c in enumerate(cols):
            v = s[c].to_numpy(dtype=float)
            if c == "logrank_log10_p":
                v = -v
            ok = np.isfinite(v)
            if ok.any():
                ax.plot(k[ok], v[ok], "o-", ms=3.5, lw=1.2, color=colour(ci), label=c.upper() if len(cols) > 1 else None)
                drawn = True
        if not drawn:
            ax.text(0.5, 0.5, "not available", transform=ax.transAxes, ha="center", va="center", fontsize=8,
                    color="0.4")
        ax.axvline(patterns.chosen_k, color="0.25", ls="--", lw=0.9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("number of groups k")
        ax.set_ylabel(ylabel, fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=8)
        if len(cols) > 1 and drawn:
            ax.legend(fontsize=8, frameon=False)
    if len(s) >= 3:
        knee = int(knee_point(s["k"], s["inertia"]))
        row = s[s["k"] == knee]
        if len(row):
            axes[0].plot([knee], row["inertia"], "o", ms=9, mfc="none", mec=colour(3), mew=1.5)
            axes[0].annotate(f"knee: k = {knee}", (knee, float(row["inertia"].iloc[0])), xytext=(10, 16),
                             textcoords="offset points", fontsize=8, color=colour(3),
                             arrowprops={"arrowstyle": "-", "color": colour(3), "lw": 0.8})
    picked = ", ".join(f"{r.replace('_', ' + ')} {v}" for r, v in choices.items())
    fig.suptitle(f"Choice of k: k = {patterns.chosen_k} ({patterns.rule})" + (f" — k picked by each rule: {picked}"
                                                                             if picked else ""), fontsize=9)
    return fig


def _selection_table(patterns: Any) -> pd.DataFrame:
    s = patterns.selection.sort_values("k").copy()
    choices = {r: v for r, v in (patterns.meta.get("choices") or {}).items() if v is not None}
    s["picked_by"] = [", ".join(r for r, v in choices.items() if int(v) == int(k)) for k in s["k"]]
    s["chosen"] = s["k"] == patterns.chosen_k
    s["logrank_minus_log10_p"] = -s["logrank_log10_p"]
    return s[["k", "chosen", "picked_by", "inertia", "silhouette", "aic", "bic", "logrank_chi2", "logrank_df",
              "logrank_minus_log10_p"]].reset_index(drop=True)


# ------------------------------------------------------------------------------------------ intervals
def draw_interval_boxes(ax: Any, data: pd.DataFrame, category: str, categories: Sequence[str],
                        colours: dict[str, str], labels: dict[str, str] | None = None,
                        tests: pd.DataFrame | None = None, legend: bool = True, test_name: str = "KW") -> Any:
    """Box plots of ``days`` by progression step (x) and ``category`` (boxes side by side).

    Boxes span the quartiles, whiskers the 10th to 90th percentiles, points beyond are shown (as the
    paper's Fig. 4c and 5f-h). ``tests`` (``step, p_value``) adds each step's p-value to its tick label.
    """
    labels = labels or {}
    steps = (data.drop_duplicates("step_index").sort_values("step_index")[["step_index", "step"]]
             if len(data) else pd.DataFrame(columns=["step_index", "step"]))
    cats = [c for c in categories if (data[category].astype(str) == c).any()]
    width = 0.8 / max(len(cats), 1)
    n_points = 0
    for ci, c in enumerate(cats):
        sub = data[data[category].astype(str) == c]
        values, pos = [], []
        for si, s in enumerate(steps["step_index"]):
            v = sub.loc[sub["step_index"] == s, "days"].to_numpy(dtype=float)
            v = v[np.isfinite(v)]
            if len(v):
                values.append(v)
                pos.append(si + (ci - (len(cats) - 1) / 2) * width)
        if not values:
            continue
        n_points += sum(len(v) for v in values)
        col = colours.get(c, colour(ci))
        bp = ax.boxplot(values, positions=pos, widths=width * 0.85, whis=(10, 90), patch_artist=True,
                        showfliers=True, manage_ticks=False,
                        flierprops={"marker": ".", "markersize": 3, "markerfacecolor": col, "markeredgecolor": "none",
                                    "alpha": 0.6, "rasterized": True},
                        medianprops={"color": "black", "lw": 1.0}, whiskerprops={"color": col},
                        capprops={"color": col}, boxprops={"edgecolor": col})
        for box in bp["boxes"]:
            box.set_facecolor(col)
            box.set_alpha(0.55)
        ax.plot([], [], "s", color=col, alpha=0.7, label=labels.get(c, c), ms=7)
    p_by_step = (tests.drop_duplicates("step").set_index("step")["p_value"]
                 if tests is not None and len(tests) else pd.Series(dtype=float))
    prefix = f"{test_name} " if test_name else ""
    ticks = [f"{s}\n{prefix}{format_p(p_by_step[s])}" if s in p_by_step.index else str(s) for s in steps["step"]]
    ax.set_xticks(range(len(steps)), ticks)
    ax.set_xlim(-0.6, len(steps) - 0.4)
    ax.set_ylabel("days")
    ax.grid(True, axis="y", color="0.92", lw=0.6)
    ax.set_axisbelow(True)
    if legend and cats:
        ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return ax


def _intervals_for_plot(patterns: Any) -> pd.DataFrame:
    t = patterns.intervals
    return t[t["step_index"] <= MAX_STEPS].astype({"group": str, "patient_id": str})


def _interval_tests(survival: Any, by: str, stratum: str) -> pd.DataFrame:
    t = getattr(survival, "interval_tests", pd.DataFrame()) if survival is not None else pd.DataFrame()
    if t is None or t.empty:
        return pd.DataFrame(columns=["step", "p_value"])
    return t[(t["by"] == by) & (t["stratum"].astype(str) == stratum)].reset_index(drop=True)


# ------------------------------------------------------------------------------------------ section: Fig. 4
def build_patterns(run: Any) -> Section:
    """The ``patterns`` section (Fig. 4)."""
    section = Section("patterns", "Figure 4 — Organ progression sequences and patterns", intro=(
        "Each patient's organs are ordered by the day their first lesion progressed; k-means on the encoded "
        "sequences groups patients with similar sequences, and each group is named by what its members share "
        "(one progressing organ, many, or a common first organ). Patients without a progressing organ are "
        "shown as No-Progression and are not clustered."))
    patterns, reason = _load(run, "patterns")
    if patterns is None:
        return section.skipped("patterns", reason)
    survival, s_reason = _load(run, "survival")
    events, e_reason = _load(run, "events")
    groups = _group_order(patterns)
    colours = group_colours(groups)
    n_none = int((patterns.assignments["group"] == NO_PROGRESSION).sum())
    facts: list[tuple[str, Any]] = [
        ("groups (k)", patterns.chosen_k),
        ("k chosen by", patterns.rule),
        ("patients clustered", f"{int(patterns.meta.get('n_clustered', len(patterns.features))):,}"),
        ("without a progressing organ", f"{n_none:,}"),
        ("encoding", patterns.encoding.get("name", "")),
    ]
    os_tables = km_tables(survival, "os", "pattern_group") if survival is not None else {}
    if os_tables and len(os_tables["logrank"]):
        facts.append(("OS by group, log-rank", format_p(os_tables["logrank"]["p_value"].iloc[0], plain=True)))
    section.facts(facts)

    # 4a
    if events is not None and len(getattr(events, "sequences", ())):
        fig, caption = _fig_sequences_by_patient(patterns, events.sequences, groups, colours)
        section.figure("fig4a_sequences_by_patient", "Fig. 4a — Organ progression sequences of every patient, "
                       "by pattern group", fig, caption)
    else:
        section.note("The per-patient sequence heatmap needs the events stage's sequences"
                     + (f" ({e_reason})." if e_reason else ", which are empty."))
    if len(patterns.heatmap):
        section.figure("fig4a_sequence_counts", "Fig. 4a — Progression sequences by group (counts)",
                       _fig_sequence_counts(patterns.heatmap, groups, colours),
                       "Per pattern group, how many patients had each organ progress 1st, 2nd, ...; colour "
                       "log10(patients + 1), as in the paper's Fig. 4a. Organs are ordered by how often they "
                       "progress.")
    summary = patterns.summary()
    summary["top_first_organ"] = summary["top_first_organ"].map(lambda o: organ_label(o) if o else "")
    total = max(int(summary["n_patients"].sum()), 1)
    summary.insert(3, "percent", 100.0 * summary["n_patients"] / total)
    order = {g: i for i, g in enumerate(groups)}
    summary = summary.sort_values("group", key=lambda s: s.map(order).fillna(len(order)), kind="stable")
    section.table("table4_groups", "Pattern groups: size and what names them", summary.reset_index(drop=True),
                  "share_mono: share of members with one progressing organ; share_hetero: with three or more; "
                  "top_first_organ: the most common first progressing organ and its share; rule: the naming rule "
                  "that applied.", source="patterns/naming.csv")

    # choice of k (Supplementary Fig. 7)
    if len(patterns.selection):
        section.figure("figS7_choice_of_k", "Supplementary Fig. 7 — How the number of groups was chosen",
                       _fig_choice_of_k(patterns),
                       "k-means criteria for each number of groups k: the within-cluster sum of squares with its "
                       "knee (elbow), the silhouette score (higher is better), AIC and BIC (lower is better) and the "
                       "separation of overall survival between the groups (log-rank −log10 p, higher separates "
                       "better). The dashed line marks the k used. Choosing k by survival separation makes the "
                       "log-rank p-value of the chosen grouping optimistic.")
        section.table("table4_choice_of_k", "Criteria by k", _selection_table(patterns),
                      source="patterns/selection.csv")

    # 4b
    if survival is None:
        section.skipped("survival", s_reason + " (Kaplan–Meier curves by pattern group are not shown)")
    else:
        outcomes = [o for o in ("os", "pfs") if _has(km_tables(survival, o, "pattern_group"))]
        if not outcomes:
            section.note("The survival stage has no comparison by pattern group.", "warning")
        else:
            fig, pairs = km_figure(len(outcomes), ncols=len(outcomes), n_risk_rows=len(groups),
                                   width=5.5 * len(outcomes) if len(outcomes) > 1 else 7.0, panel_height=3.2)
            for (ax, risk), o in zip(pairs, outcomes):
                draw_km(ax, km_tables(survival, o, "pattern_group"), risk_ax=risk, groups=groups, colours=colours,
                        outcome=o, title=OUTCOME_LABELS[o], legend_fontsize=8)
            section.figure("fig4b_survival_by_group", "Fig. 4b — Overall (and progression-free) survival by "
                           "pattern group", fig,
                           "Kaplan–Meier estimates with 95% confidence bands; ticks mark censored patients. The legend "
                           "gives each group's size and median survival [95% CI] in days (NR: not reached) and the "
                           "log-rank test across all groups; numbers at risk are under each panel.")
            section.table("table4_survival_medians", "Median survival by pattern group",
                          _medians_table(survival, "pattern_group"), source="survival/medians.csv")
            pw = survival.pairwise[survival.pairwise["comparison"] == "pattern_group"]
            if len(pw):
                pw = pw[["outcome", "group_a", "group_b", "statistic", "p_value", "p_adjusted"]].copy()
                pw["outcome"] = pw["outcome"].str.upper()
                section.table("table4_pairwise_logrank", "Pairwise log-rank tests between pattern groups",
                              pw.reset_index(drop=True),
                              f"p_adjusted: {survival.meta.get('adjust', 'holm')}-adjusted for the number of pairs.",
                              source="survival/pairwise.csv")

    # 4c
    intervals = _intervals_for_plot(patterns)
    clustered = [g for g in groups if g != NO_PROGRESSION]
    if len(intervals):
        tests = _interval_tests(survival, "group", "all")
        n_steps = intervals["step_index"].nunique()
        fig, ax = new_figure(min(11.0, 3.0 + 1.4 * n_steps + 0.25 * n_steps * len(clustered)), 4.2)
        draw_interval_boxes(ax, intervals, "group", clustered, colours, tests=tests)
        ax.set_xlabel("progression step (1st: days to the first progression; 2nd-1st: days between the 1st and 2nd, ...)")
        ax.set_title("Time to the first progression and between successive progressions, by pattern group",
                     fontsize=10)
        section.figure("fig4c_intervals_by_group", "Fig. 4c — Inter-progression times by pattern group", fig,
                       "Boxes: quartiles and median; whiskers: 10th to 90th percentiles; points: patients beyond "
                       "them. Under each step: Kruskal–Wallis test across the groups (Dunn's pairwise tests in the "
                       "table below). Organs progressing on the same day count as one step."
                       + (" Tests are not available because the survival stage did not run." if survival is None else ""))
        if len(tests):
            kw = tests[["step", "statistic", "df", "p_value", "n", "n_groups"]].copy()
            section.table("table4_interval_tests", "Kruskal–Wallis tests of inter-progression times across groups",
                          kw, source="survival/interval_tests.csv")
        pairs_t = getattr(survival, "interval_pairs", pd.DataFrame()) if survival is not None else pd.DataFrame()
        if pairs_t is not None and len(pairs_t):
            d = pairs_t[(pairs_t["by"] == "group") & (pairs_t["stratum"].astype(str) == "all")]
            if len(d):
                d = d[["step", "group_a", "group_b", "p_adjusted"]].copy()
                d["significant"] = d["p_adjusted"] < 0.05
                section.table("table4_dunn_intervals", "Dunn's pairwise tests of inter-progression times between "
                              "groups", d.reset_index(drop=True),
                              f"{survival.meta.get('adjust', 'holm')}-adjusted p-values; significant: p < 0.05.",
                              source="survival/interval_pairs.csv")
    else:
        section.note("No inter-progression times: no patient has a dated organ progression.")
    return section


# ------------------------------------------------------------------------------------------ section: Fig. 5
def _fig_km_within_groups(survival: Any, groups: Sequence[str], outcome: str) -> tuple[Any, list[str]] | None:
    strata = [g for g in groups if _has(km_tables(survival, outcome, "treatment_within_group", g))]
    if not strata:
        return None
    levels = sorted(survival.medians.loc[survival.medians["comparison"] == "treatment_within_group", "group"]
                    .astype(str).unique())
    tcol = _treatment_colours(levels)
    labels = {t: treatment_label(t) for t in levels}
    ncols = min(3, len(strata))
    fig, pairs = km_figure(len(strata), ncols=ncols, n_risk_rows=len(levels), width=min(11.0, 3.7 * ncols),
                           panel_height=2.3)
    for i, ((ax, risk), g) in enumerate(zip(pairs, strata)):
        first = i % ncols == 0
        draw_km(ax, km_tables(survival, outcome, "treatment_within_group", g), risk_ax=risk, groups=levels,
                colours=tcol, labels=labels, outcome=outcome, title=g, legend_fontsize=8, show_n=False,
                risk_labels=first, max_risk_times=4)
        ax.set_xlabel("days", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.yaxis.label.set_fontsize(8)
        if not first:
            ax.set_ylabel("")
    return fig, strata


def _fig_group_proportions(survival: Any, groups: Sequence[str], colours: dict[str, str]) -> Any:
    counts = survival.group_counts
    arm = next(c for c in counts.columns if c not in ("pattern_group", "n", "percent_of_col"))
    levels = sorted(counts[arm].astype(str).unique())
    gs = [g for g in groups if g in set(counts["pattern_group"].astype(str))]
    gs += sorted(set(counts["pattern_group"].astype(str)) - set(gs))
    fig, ax = new_figure(7.0, 0.9 + 0.55 * len(levels) + 0.25 * max(len(gs) - 4, 0))
    totals = counts.groupby(arm)["n"].sum()
    for i, t in enumerate(levels):
        left = 0.0
        sub = counts[counts[arm].astype(str) == t].set_index("pattern_group")
        for g in gs:
            pct = float(sub["percent_of_col"].get(g, 0.0)) if g in sub.index else 0.0
            ax.barh(i, pct, left=left, color=colours.get(g, _GREY), edgecolor="white", lw=0.8,
                    label=g if i == 0 else None, gid=f"{t}|{g}")
            if pct >= 6:
                ax.text(left + pct / 2, i, f"{pct:.0f}%", ha="center", va="center", fontsize=8, color="white")
            left += pct
    ax.set_yticks(range(len(levels)), [f"{treatment_label(t)}\n(n = {int(totals.get(t, 0)):,})" for t in levels],
                  fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("patients of the treatment arm (%)")
    test = survival.group_by_treatment
    if len(test):
        r = test.iloc[0]
        ax.set_title(f"Pattern group by treatment: χ² = {float(r['statistic']):.2f}, df = {int(r['df'])}, "
                     f"{format_p(r['p_value'])}", fontsize=9)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False, title="pattern group",
              title_fontsize=8)
    return fig


def _fig_sequences_by_treatment(table: pd.DataFrame) -> tuple[Any, pd.DataFrame]:
    arm = next(c for c in table.columns if c not in ("sequence", "n", "percent_of_treatment"))
    levels = sorted(table[arm].astype(str).unique())
    top = table.groupby("sequence")["n"].sum().sort_values(ascending=False, kind="stable")
    top = list(top.index[:TOP_SEQUENCES])
    wide = (table.pivot_table(index="sequence", columns=arm, values="percent_of_treatment", aggfunc="sum")
            .reindex(index=top, columns=levels).fillna(0.0))
    tcol = _treatment_colours(levels)
    fig, ax = new_figure(7.5, 1.0 + 0.36 * len(top))
    h = 0.8 / max(len(levels), 1)
    for j, t in enumerate(levels):
        y = np.arange(len(top)) + (j - (len(levels) - 1) / 2) * h
        ax.barh(y, wide[t].to_numpy(), height=h * 0.95, color=tcol[t], label=treatment_label(t))
    ax.set_yticks(range(len(top)), [sequence_label(s) for s in top], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("patients of the treatment arm (%)")
    ax.set_title(f"The {len(top)} most frequent organ progression sequences, by treatment", fontsize=10)
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    ax.grid(True, axis="x", color="0.92", lw=0.6)
    ax.set_axisbelow(True)
    out = wide.reset_index()
    out.insert(1, "organs", out["sequence"].map(sequence_label))
    out.columns = ["sequence", "organs"] + [f"percent_{treatment_label(t).lower().replace(' + ', '_').replace(' ', '_')}"
                                            for t in levels]
    counts = table.pivot_table(index="sequence", columns=arm, values="n", aggfunc="sum").reindex(index=top).fillna(0)
    for t in levels:
        out[f"n_{treatment_label(t).lower().replace(' + ', '_').replace(' ', '_')}"] = counts[t].astype(int).to_numpy()
    return fig, out


def _fig_intervals_by_treatment(patterns: Any, survival: Any, arm: str, groups: Sequence[str]) -> Any | None:
    from matplotlib.patches import Patch

    t = _intervals_for_plot(patterns)
    pats = survival.patients[["patient_id", arm]].astype({"patient_id": str})
    t = t.merge(pats, on="patient_id", how="left").dropna(subset=[arm])
    t[arm] = t[arm].astype(str)
    strata = [g for g in groups if g != NO_PROGRESSION and (t["group"] == g).any()]
    if not strata:
        return None
    levels = sorted(t[arm].unique())
    tcol = _treatment_colours(levels)
    # panels as wide as their number of steps, wrapped into rows of at most row_units steps
    row_units = 13.0
    units = [t.loc[t["group"] == g, "step_index"].nunique() + 0.6 for g in strata]
    rows: list[list[int]] = [[]]
    for i, u in enumerate(units):
        if rows[-1] and sum(units[j] for j in rows[-1]) + u > row_units:
            rows.append([])
        rows[-1].append(i)
    width = min(11.0, 1.6 + 0.8 * max(sum(units[j] for j in r) for r in rows))
    fig, first = new_figure(width, 3.2 * len(rows))
    first.remove()
    subfigs = np.atleast_1d(fig.subfigures(len(rows), 1))
    widest = max(sum(units[j] for j in r) for r in rows)
    for subfig, members in zip(subfigs, rows):
        ratios = [units[j] for j in members]
        spare = widest - sum(ratios)
        axes = np.atleast_1d(subfig.subplots(1, len(members) + (spare > 0.5),
                                             width_ratios=ratios + ([spare] if spare > 0.5 else [])))
        if spare > 0.5:
            axes[-1].set_visible(False)
        for ci, (ax, j) in enumerate(zip(axes, members)):
            g = strata[j]
            draw_interval_boxes(ax, t[t["group"] == g], arm, levels, tcol, {v: treatment_label(v) for v in levels},
                                tests=_interval_tests(survival, arm, g), legend=False, test_name="")
            ax.set_title(g, fontsize=9)
            ax.tick_params(labelsize=8)
            ax.yaxis.label.set_fontsize(8)
            if ci:
                ax.set_ylabel("")
    handles = [Patch(facecolor=tcol[v], alpha=0.7, label=treatment_label(v)) for v in levels]
    fig.legend(handles=handles, loc="outside upper center", ncols=len(levels), fontsize=8, frameon=False)
    return fig


def _fig_km_pairs(survival: Any, comparisons: Sequence[tuple[str, str, dict[str, str]]], outcome: str) -> Any:
    fig, pairs = km_figure(len(comparisons), ncols=len(comparisons), n_risk_rows=2,
                           width=min(11.0, 5.3 * len(comparisons)), panel_height=3.0)
    for (ax, risk), (comparison, title, labels) in zip(pairs, comparisons):
        tables = km_tables(survival, outcome, comparison)
        levels = sorted(tables["curves"]["group"].astype(str).unique(), reverse=True)
        draw_km(ax, tables, risk_ax=risk, groups=levels, colours=_treatment_colours(levels), labels=labels,
                outcome=outcome, title=title, legend_fontsize=8)
    return fig


def build_survival(run: Any) -> Section:
    """The ``survival`` section (Fig. 5 and the survival comparisons by phenotype and treatment)."""
    section = Section("survival", "Figure 5 — Survival by pattern, phenotype and treatment", intro=(
        "Whether antibody-targeted therapy changes survival within each progression pattern, the share of "
        "patients in each pattern, the sequences themselves and the times between progressions; and survival "
        "of patients grouped by the phenotypes of their metastatic organs."))
    survival, reason = _load(run, "survival")
    if survival is None:
        return section.skipped("survival", reason)
    patterns, p_reason = _load(run, "patterns")
    groups = _group_order(patterns, survival)
    colours = group_colours(groups)
    arm = _arm(survival)
    has_groups = patterns is not None or "pattern_group" in survival.patients
    if patterns is None:
        section.skipped("patterns", p_reason + " (figures by pattern group are not shown)")
    if arm is None:
        section.note("The data have no treatment column: the comparisons by treatment (Fig. 5a–h) are left out.")

    # 5a
    if arm is not None and has_groups:
        drawn = _fig_km_within_groups(survival, groups, "os")
        if drawn is None:
            section.note("No comparison of treatments within pattern groups in the survival tables "
                         "(survival.by_treatment off, or too few patients).")
        else:
            fig, strata = drawn
            section.figure("fig5a_os_by_treatment_within_group", "Fig. 5a — Overall survival by treatment within "
                           "each pattern group", fig,
                           "Kaplan–Meier estimates with 95% confidence bands, one panel per pattern group; legends "
                           "give n and median OS [95% CI] in days and the log-rank test between treatments.")
            section.table("table5_medians_by_treatment_within_group", "Median survival by treatment within each "
                          "pattern group", _medians_table(survival, "treatment_within_group",
                                                          {t: treatment_label(t) for t in survival.medians["group"]
                                                           .astype(str).unique()}, strata=True),
                          source="survival/medians.csv", max_rows=60)
    # 5b
    if arm is not None and len(getattr(survival, "group_counts", ())):
        section.figure("fig5b_group_proportions_by_treatment", "Fig. 5b — Pattern group proportions by treatment",
                       _fig_group_proportions(survival, groups, colours),
                       "Share of each treatment arm's patients (with a progressing organ) in each pattern group; "
                       "chi-square test of independence of group and treatment.")
        counts = survival.group_counts.copy()
        section.table("table5_group_counts", "Patients by pattern group and treatment", counts,
                      source="survival/group_counts.csv")
    # 5c
    seq = getattr(survival, "sequences_by_treatment", pd.DataFrame())
    if arm is not None and seq is not None and len(seq):
        fig, table = _fig_sequences_by_treatment(seq)
        section.figure("fig5c_sequences_by_treatment", "Fig. 5c — Most frequent organ progression sequences by "
                       "treatment", fig,
                       "Percent of each treatment arm's patients with a progressing organ whose organs progressed "
                       "in this order (→: then). The most frequent sequences over both arms are shown.")
        section.table("table5_sequences_by_treatment", "Most frequent sequences by treatment", table,
                      source="survival/sequences_by_treatment.csv")
    # 5f-h
    if arm is not None and patterns is not None and len(patterns.intervals):
        fig = _fig_intervals_by_treatment(patterns, survival, arm, groups)
        if fig is not None:
            section.figure("fig5f_intervals_by_treatment_within_group", "Fig. 5f–h — Inter-progression times by "
                           "treatment within each pattern group", fig,
                           "Days to the 1st progression and between successive progressions, by treatment; boxes: "
                           "quartiles and median, whiskers: 10th to 90th percentiles, points beyond them. Under each "
                           "step: Kruskal–Wallis test between treatments.")
            tests = survival.interval_tests
            tests = tests[tests["by"] == arm] if len(tests) else tests
            if len(tests):
                section.table("table5_interval_tests_by_treatment", "Kruskal–Wallis tests of inter-progression "
                              "times between treatments, within each group",
                              tests.rename(columns={"stratum": "pattern_group"})
                              [["pattern_group", "step", "statistic", "df", "p_value", "n"]].reset_index(drop=True),
                              source="survival/interval_tests.csv", max_rows=60)

    # phenotypes (Supplementary Fig. 5) and treatment overall
    comps = [(c, title, labels) for c, (title, labels) in PHENOTYPE_COMPARISONS.items()
             if _has(km_tables(survival, "os", c))]
    if comps:
        caption = ("Patients with any lesion in a low-response/high-progression (low-high) organ against the "
                   "others, and patients whose lesions are all in high-response/low-progression (high-low) organs "
                   "against the others (the paper: 378 vs 561 and 770 vs 524 days).")
        phenotypes, _ = _load(run, "phenotypes")
        if phenotypes is not None and "phenotype" in getattr(phenotypes, "table", pd.DataFrame()):
            ph = phenotypes.table
            named = {k: ", ".join(organ_label(o) for o in ph.loc[ph["phenotype"] == k, "organ"]) or "none"
                     for k in ("low-high", "high-low")}
            caption += f" Low-high organs in these data: {named['low-high']}; high-low: {named['high-low']}."
        section.figure("figS5_os_by_phenotype", "Supplementary Fig. 5 — Overall survival by organ phenotype",
                       _fig_km_pairs(survival, comps, "os"), caption)
        frames = [_medians_table(survival, c, labels) for c, _, labels in comps]
        section.table("table5_medians_by_phenotype", "Median survival by organ phenotype group",
                      pd.concat([f.assign(comparison=c) for f, (c, _, _) in zip(frames, comps)], ignore_index=True)
                      [["comparison", "outcome", "group", "n", "events", "median_days", "ci_lower_days",
                        "ci_upper_days", "logrank_p"]], source="survival/medians.csv")
    else:
        status, why = _status(run, "phenotypes")
        section.note("No survival comparison by organ phenotype"
                     + (f": the phenotypes stage did not run ({why})." if status != "done" else "."))
    if arm is not None and _has(km_tables(survival, "os", "treatment")):
        outcomes = [o for o in ("os", "pfs") if _has(km_tables(survival, o, "treatment"))]
        fig, pairs = km_figure(len(outcomes), ncols=len(outcomes), n_risk_rows=2,
                               width=min(11.0, 5.3 * len(outcomes)), panel_height=3.0)
        for (ax, risk), o in zip(pairs, outcomes):
            tables = km_tables(survival, o, "treatment")
            levels = sorted(tables["curves"]["group"].astype(str).unique())
            draw_km(ax, tables, risk_ax=risk, groups=levels, colours=_treatment_colours(levels),
                    labels={t: treatment_label(t) for t in levels}, outcome=o,
                    title=OUTCOME_LABELS[o], legend_fontsize=8)
        section.figure("survival_by_treatment", "Overall and progression-free survival by treatment (all patients)",
                       fig, "Kaplan–Meier estimates with 95% confidence bands and the log-rank test between arms.")
        section.table("table5_medians_by_treatment", "Median survival by treatment",
                      _medians_table(survival, "treatment", {t: treatment_label(t) for t in
                                                             survival.medians["group"].astype(str).unique()}),
                      source="survival/medians.csv")
    return section


def build(run: Any) -> list[Section]:
    """The ``patterns`` (Fig. 4) and ``survival`` (Fig. 5) sections of the report."""
    return [build_patterns(run), build_survival(run)]


__all__ = ["build", "build_patterns", "build_survival", "draw_interval_boxes", "draw_km", "format_p",
           "group_colours", "km_figure", "km_tables", "median_text", "organ_colours"]

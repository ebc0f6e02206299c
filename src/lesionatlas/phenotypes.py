"""Organ phenotypes: each organ placed by its response and progression hazard ratios (Zhou et al. Fig. 3c,d).

An organ whose lesions respond faster than the reference (response HR > 1) has a *high* response; one
whose lesions progress faster (progression HR > 1) has a *high* progression. The four phenotypes are
``high-high`` (e.g. liver), ``high-low`` (lung, lymph nodes), ``low-high`` (bone, brain/CNS) and
``low-low``. The threshold is HR = 1 (the reference organ) by default, or the median HR across organs
(on the log scale); organs whose 95% CI crosses the threshold on either axis are flagged ``uncertain``.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from .data.organs import ORGAN_LABELS
from .errors import ConfigError, DataError

PHENOTYPES: tuple[str, ...] = ("high-high", "high-low", "low-high", "low-low")
PHENOTYPE_COLORS: dict[str, str] = {
    "high-high": "#c0392b",
    "high-low": "#2e86c1",
    "low-high": "#8e44ad",
    "low-low": "#7f8c8d",
}
INPUT_COLUMNS = ("organ", "response_hr", "response_ci_lower", "response_ci_upper",
                 "progression_hr", "progression_ci_lower", "progression_ci_upper")

#: Where each organ sits on the schematic body of :func:`plot_anatomy` (x, y in axis units: body centred on
#: x = 0.5, head at the top, feet at y = 0). ``None``: not placed on the body, listed beside it. Organs
#: missing here (a user's own organ groups) are listed beside the body too. Drawn, not traced from any image.
ORGAN_POSITIONS: dict[str, tuple[float, float] | None] = {
    "brain_cns": (0.500, 0.935),
    "head_neck": (0.500, 0.845),
    "lymph_node_distal": (0.395, 0.790),
    "lung": (0.420, 0.700),
    "pleura": (0.590, 0.735),
    "liver": (0.430, 0.560),
    "spleen": (0.590, 0.580),
    "adrenal": (0.550, 0.530),
    "pancreas": (0.500, 0.505),
    "kidney": (0.590, 0.480),
    "abdominal": (0.500, 0.440),
    "peritoneum": (0.400, 0.460),
    "gi": (0.570, 0.415),
    "lymph_node_regional": (0.430, 0.370),
    "gr": (0.500, 0.330),
    "skin": (0.240, 0.520),
    "muscle": (0.425, 0.170),
    "bone": (0.575, 0.120),
    "other": None,
}


@dataclass(frozen=True, eq=False)
class OrganPhenotypes:
    """Organs classified by response and progression hazard ratios.

    Attributes
    ----------
    table : DataFrame
        ``organ, response_hr, response_ci_lower, response_ci_upper, progression_hr, progression_ci_lower,
        progression_ci_upper, response_level, progression_level, phenotype, uncertain``.
    threshold : str
        ``reference`` (HR = 1) or ``median``.
    response_threshold, progression_threshold : float
        The HR values used as thresholds.
    """

    table: pd.DataFrame
    threshold: str
    response_threshold: float
    progression_threshold: float
    meta: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> pd.DataFrame:
        """Organs per phenotype: ``phenotype, n_organs, organs, n_uncertain``."""
        rows = []
        for p in PHENOTYPES:
            sub = self.table[self.table["phenotype"] == p]
            rows.append({"phenotype": p, "n_organs": len(sub), "organs": ", ".join(sub["organ"]),
                         "n_uncertain": int(sub["uncertain"].sum())})
        return pd.DataFrame(rows)

    def phenotype_of(self, organ: str) -> str:
        row = self.table.loc[self.table["organ"] == organ, "phenotype"]
        if row.empty:
            raise KeyError(f"organ {organ!r} not classified; organs are {', '.join(self.table['organ'])}")
        return str(row.iloc[0])

    def __repr__(self) -> str:
        counts = self.table["phenotype"].value_counts()
        parts = ", ".join(f"{p}: {int(counts.get(p, 0))}" for p in PHENOTYPES)
        return f"OrganPhenotypes({len(self.table)} organs; {parts}; threshold {self.threshold})"

    def plot_quadrant(self, ax: Any = None, *, sizes: Mapping[str, float] | None = None,
                      labels: Mapping[str, str] | None = None, show_ci: bool = True) -> Any:
        """Response HR (x) against progression HR (y) per organ, log scales, thresholds as lines (Fig. 3c).

        Each organ is a dot coloured by its phenotype, faded with a white edge when ``uncertain`` (a 95%
        CI crosses a threshold), with its 95% CIs as thin bars; the thresholds are dashed lines and the
        quadrants are named in the corners. Each side of a threshold is as wide as its dots need.

        Parameters
        ----------
        ax : matplotlib Axes, optional
        sizes : mapping, optional
            Organ -> number of lesions: dot area proportional to it (with a size legend).
        labels : mapping, optional
            Organ code -> name shown (default :data:`lesionatlas.data.organs.ORGAN_LABELS`).
        show_ci : bool
            Draw the 95% CIs.

        Returns
        -------
        matplotlib.axes.Axes
            The dots are one collection with gid ``organs`` (in table order); the threshold lines have
            gids ``response-threshold`` and ``progression-threshold``.
        """
        import matplotlib.pyplot as plt
        from matplotlib.colors import to_rgba

        if ax is None:
            _, ax = plt.subplots(figsize=(7.5, 6.2), layout="constrained")
        t = self.table.reset_index(drop=True)
        names = labels if labels is not None else ORGAN_LABELS
        rt, pt = float(self.response_threshold), float(self.progression_threshold)
        x = t["response_hr"].to_numpy(float)
        y = t["progression_hr"].to_numpy(float)
        colors = [PHENOTYPE_COLORS[p] for p in t["phenotype"]]
        uncertain = t["uncertain"].to_numpy(bool)
        area = _marker_areas(t["organ"], sizes)
        if show_ci:
            for k in range(len(t)):
                c = to_rgba(colors[k], 0.35)
                ax.plot([t["response_ci_lower"].iloc[k], t["response_ci_upper"].iloc[k]], [y[k], y[k]], color=c,
                        lw=1.0, zorder=1)
                ax.plot([x[k], x[k]], [t["progression_ci_lower"].iloc[k], t["progression_ci_upper"].iloc[k]],
                        color=c, lw=1.0, zorder=1)
        dots = ax.scatter(x, y, s=area, c=[to_rgba(c, 0.55 if u else 1.0) for c, u in zip(colors, uncertain)],
                          edgecolors=["white" if u else "0.15" for u in uncertain], linewidths=0.9, zorder=3)
        dots.set_gid("organs")
        ax.axvline(rt, color="0.4", lw=1.0, ls="--", zorder=2).set_gid("response-threshold")
        ax.axhline(pt, color="0.4", lw=1.0, ls="--", zorder=2).set_gid("progression-threshold")
        ax.set_xscale("log")
        ax.set_yscale("log")
        for v, at, setter, room in ((x, rt, ax.set_xlim, 0.0), (y, pt, ax.set_ylim, 0.14)):
            # each side of the threshold as wide as its own points need (an outlier on one side does not
            # squeeze the other), at least a factor 1.25 wide; y leaves room for the corner names
            d = np.log(v / at) if len(v) else np.zeros(1)
            below = max(-float(np.min(d)), float(np.log(1.25))) * 1.1 + 0.04
            above = max(float(np.max(d)), float(np.log(1.25))) * 1.1 + 0.04
            pad = room * (below + above)
            setter(at * np.exp(-below - pad), at * np.exp(above + pad))
        _plain_log_ticks(ax)
        reference = self.meta.get("reference")
        ref_label = f" vs {names.get(reference, reference)}" if reference else ""
        ax.set_xlabel(f"response hazard ratio{ref_label} (log scale)")
        ax.set_ylabel(f"progression hazard ratio{ref_label} (log scale)")
        corners = {"high-high": (0.99, 0.99, "right", "top"), "low-high": (0.01, 0.99, "left", "top"),
                   "high-low": (0.99, 0.01, "right", "bottom"), "low-low": (0.01, 0.01, "left", "bottom")}
        for p, (cx, cy, ha, va) in corners.items():
            r, q = p.split("-")
            ax.text(cx, cy, f"{p}\n{r} response, {q} progression", transform=ax.transAxes, ha=ha, va=va,
                    fontsize=8, color=PHENOTYPE_COLORS[p], weight="bold", linespacing=1.2, zorder=0)
        ax.set_title(f"Organ phenotypes (threshold: {_threshold_words(self)})")
        if sizes is not None:
            _size_legend(ax, sizes, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        texts = [f"{names.get(o, o)}{' (reference)' if o == reference else ''}" for o in t["organ"]]
        _place_labels(ax, x, y, texts, np.sqrt(area / np.pi), fontsize=8)
        return ax

    def plot_anatomy(self, ax: Any = None, *, sizes: Mapping[str, float] | None = None,
                     labels: Mapping[str, str] | None = None) -> Any:
        """A schematic body with each classified organ at its place, coloured by its phenotype (Fig. 3d).

        See :func:`plot_anatomy`; ``sizes`` (organ -> number of lesions) sets the dot areas.
        """
        return plot_anatomy(dict(zip(self.table["organ"], self.table["phenotype"])),
                            uncertain=set(self.table.loc[self.table["uncertain"], "organ"]), sizes=sizes,
                            labels=labels, ax=ax)

    def to_dir(self, path: Any) -> Any:
        """Write the table (Parquet + CSV) and ``meta.json`` atomically."""
        from pathlib import Path

        from .io import write_result_dir

        return write_result_dir(Path(path), {"phenotypes": self.table},
                                {"threshold": self.threshold, "response_threshold": self.response_threshold,
                                 "progression_threshold": self.progression_threshold, **self.meta})

    @classmethod
    def from_dir(cls, path: Any) -> OrganPhenotypes:
        import json
        from pathlib import Path

        path = Path(path)
        meta = json.loads((path / "meta.json").read_text())
        table = pd.read_parquet(path / "phenotypes.parquet")
        return cls(table=table, threshold=meta.pop("threshold"), response_threshold=meta.pop("response_threshold"),
                   progression_threshold=meta.pop("progression_threshold"), meta=meta)


def classify_organs(
    hazard_ratios: pd.DataFrame,
    threshold: Literal["reference", "median"] = "reference",
    *,
    reference: str | None = None,
) -> OrganPhenotypes:
    """Classify organs into the four phenotypes by their response and progression hazard ratios.

    Parameters
    ----------
    hazard_ratios : DataFrame
        One row per organ: ``organ, response_hr, response_ci_lower, response_ci_upper, progression_hr,
        progression_ci_lower, progression_ci_upper`` (the reference organ may be included with HR 1 and
        no CI; it is classified ``reference`` and never uncertain).
    threshold : {'reference', 'median'}
        HR = 1 (the reference organ), or the median HR across organs on each axis.
    reference : str, optional
        The reference organ, recorded in the result.

    Returns
    -------
    OrganPhenotypes

    Notes
    -----
    An organ is *high* on an axis when its HR is above the threshold, else *low*. It is ``uncertain``
    when the 95% CI of either HR contains the threshold.
    """
    if threshold not in ("reference", "median"):
        raise ConfigError(f"threshold must be 'reference' or 'median', got {threshold!r}")
    missing = [c for c in INPUT_COLUMNS if c not in hazard_ratios.columns]
    if missing:
        raise DataError(f"hazard ratio table: column(s) {', '.join(missing)} missing", code="missing-column")
    t = hazard_ratios.loc[:, list(INPUT_COLUMNS)].copy()
    for c in INPUT_COLUMNS[1:]:
        t[c] = pd.to_numeric(t[c], errors="coerce").astype(float)
    bad = t[["response_hr", "progression_hr"]].le(0).any(axis=1) | t[["response_hr", "progression_hr"]].isna().any(axis=1)
    if bad.any():
        raise DataError(f"hazard ratio table: organ(s) {', '.join(map(str, t.loc[bad, 'organ']))} have a missing or "
                        "non-positive hazard ratio", code="bad-value")
    if threshold == "median":
        rt = float(np.exp(np.median(np.log(t["response_hr"]))))
        pt = float(np.exp(np.median(np.log(t["progression_hr"]))))
    else:
        rt = pt = 1.0
    t["response_level"] = np.where(t["response_hr"] > rt, "high", "low")
    t["progression_level"] = np.where(t["progression_hr"] > pt, "high", "low")
    t["phenotype"] = t["response_level"] + "-" + t["progression_level"]

    def crosses(lo: pd.Series, hi: pd.Series, at: float) -> pd.Series:
        return (lo <= at) & (hi >= at)

    t["uncertain"] = (crosses(t["response_ci_lower"], t["response_ci_upper"], rt)
                      | crosses(t["progression_ci_lower"], t["progression_ci_upper"], pt)).fillna(False).astype(bool)
    return OrganPhenotypes(table=t.reset_index(drop=True), threshold=threshold, response_threshold=rt,
                           progression_threshold=pt, meta={"reference": reference})


def patient_phenotype_groups(lesions: pd.DataFrame, phenotypes: OrganPhenotypes) -> pd.DataFrame:
    """Per patient: does any lesion sit in a ``low-high`` organ; are all lesions in ``high-low`` organs?

    ``lesions`` needs ``patient_id`` and ``organ``. Returns ``patient_id, any_low_high, only_high_low,
    n_lesions`` (the paper compared OS of these groups with the other patients).
    """
    pheno = dict(zip(phenotypes.table["organ"], phenotypes.table["phenotype"]))
    p = lesions["organ"].map(pheno)
    frame = pd.DataFrame({"patient_id": lesions["patient_id"].to_numpy(), "low_high": (p == "low-high").to_numpy(),
                          "high_low": (p == "high-low").to_numpy()})
    g = frame.groupby("patient_id", sort=True)
    return pd.DataFrame({"any_low_high": g["low_high"].any(), "only_high_low": g["high_low"].all(),
                         "n_lesions": g.size()}).reset_index()


def plot_anatomy(organ_phenotypes: Mapping[str, str], *, uncertain: set[str] | None = None,
                 sizes: Mapping[str, float] | None = None, labels: Mapping[str, str] | None = None,
                 ax: Any = None) -> Any:
    """Draw a stylised body and a dot per organ at its place, coloured by its phenotype.

    The body (head, neck, thorax, abdomen, pelvis, arms, legs) is drawn with simple patches; each organ
    sits at :data:`ORGAN_POSITIONS` and is labelled in a column on its side of the body, joined to its
    dot by a thin line. Organs without a position (``other``, organs not in the table) are listed beside
    the body, with the legends of the phenotype colours and of the dot sizes.

    Parameters
    ----------
    organ_phenotypes : mapping
        Organ -> phenotype (one of :data:`PHENOTYPES`; others are not drawn).
    uncertain : set of str, optional
        Organs drawn faded (a 95% CI crosses the threshold).
    sizes : mapping, optional
        Organ -> number of lesions: dot area proportional to it, shown in the labels.
    labels : mapping, optional
        Organ code -> name shown (default :data:`lesionatlas.data.organs.ORGAN_LABELS`).
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
        The dots are one collection with gid ``organs``.
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgba
    from matplotlib.lines import Line2D

    if ax is None:
        _, ax = plt.subplots(figsize=(10.0, 6.0), layout="constrained")
    names = labels if labels is not None else ORGAN_LABELS
    uncertain = uncertain or set()
    _draw_body(ax)
    ax.set_xlim(-0.46, 1.46)  # provisional: widened to the laid-out axes' shape at the end
    ax.set_ylim(-0.01, 1.0)
    ax.axis("off")
    known = {o: p for o, p in organ_phenotypes.items() if p in PHENOTYPE_COLORS}
    placed = [o for o in known if ORGAN_POSITIONS.get(o) is not None]
    beside = [o for o in known if ORGAN_POSITIONS.get(o) is None]
    area = _marker_areas(placed, sizes)

    def text_of(o: str) -> str:
        n = f" (n={int(sizes[o]):,})" if sizes is not None and o in sizes else ""
        return f"{names.get(o, o)}{n}"

    if placed:
        xy = np.array([ORGAN_POSITIONS[o] for o in placed], dtype=float)
        face = [to_rgba(PHENOTYPE_COLORS[known[o]], 0.55 if o in uncertain else 1.0) for o in placed]
        dots = ax.scatter(xy[:, 0], xy[:, 1], s=area, c=face, linewidths=0.9, zorder=4,
                          edgecolors=["white" if o in uncertain else "0.15" for o in placed])
        dots.set_gid("organs")
        # labels in two columns beside the body, spaced so that they never overlap
        order = np.argsort(-xy[:, 1], kind="stable")
        side: dict[int, str] = {}
        counts = {"left": 0, "right": 0}
        for k in order:
            s = "left" if xy[k, 0] < 0.49 else "right" if xy[k, 0] > 0.51 else min(counts, key=counts.get)
            side[int(k)] = s
            counts[s] += 1
        gap = _data_per_point(ax) * 8 * 1.55
        for s, x_text, ha in (("left", 0.15, "right"), ("right", 0.85, "left")):
            ks = [int(k) for k in order if side[int(k)] == s]
            ys = _spread(xy[ks, 1], gap, low=0.0)
            for k, yt in zip(ks, ys, strict=True):
                ax.plot([xy[k, 0], x_text + (0.012 if ha == "right" else -0.012)], [xy[k, 1], yt], color="0.55",
                        lw=0.6, zorder=3)
                ax.text(x_text, yt, text_of(placed[k]), ha=ha, va="center", fontsize=8, zorder=5)
    legends = []
    handles = [Line2D([], [], marker="o", ls="", color=PHENOTYPE_COLORS[p], ms=8, label=p) for p in PHENOTYPES]
    legends.append(ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8,
                             frameon=False, title="phenotype\n(response-progression)", title_fontsize=8,
                             alignment="left"))
    if beside:
        handles = [Line2D([], [], marker="o", ls="", ms=8, color=PHENOTYPE_COLORS[known[o]],
                          alpha=0.55 if o in uncertain else 1.0, label=text_of(o)) for o in beside]
        legends.append(ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 0.62), fontsize=8,
                                 frameon=False, title="not placed\non the body", title_fontsize=8,
                                 alignment="left"))
    if sizes is not None and placed:
        legends.append(_size_legend(ax, {o: sizes[o] for o in placed if o in sizes}, loc="lower left",
                                    bbox_to_anchor=(1.0, 0.0)))
    for leg in legends[:-1]:
        ax.add_artist(leg)
        leg.set_clip_on(False)  # add_artist clips to the axes, which would hide it from the layout engine
    _equal_aspect(ax)
    return ax


# ------------------------------------------------------------------------------------------ drawing helpers
def _draw_body(ax: Any) -> None:
    """The stylised body: head, neck, thorax, abdomen, pelvis, two arms and two legs (patches only)."""
    from matplotlib.patches import Circle, Ellipse, FancyBboxPatch, Polygon, Rectangle

    edge = dict(edgecolor="0.55", lw=1.0)
    skin, thorax, abdomen, pelvis = "#f3ede6", "#e8eef4", "#f1ebe1", "#efe7ef"
    for sign in (1, -1):  # arms and legs, mirrored about x = 0.5
        def m(points: list[tuple[float, float]], sign: int = sign) -> list[tuple[float, float]]:
            return [(0.5 + sign * (px - 0.5), py) for px, py in points]

        ax.add_patch(Polygon(m([(0.345, 0.815), (0.300, 0.795), (0.205, 0.430), (0.250, 0.420),
                                (0.335, 0.660)]), closed=True, facecolor=skin, zorder=0, **edge))
        ax.add_patch(Circle((0.5 + sign * (0.227 - 0.5), 0.405), 0.024, facecolor=skin, zorder=0, **edge))
        ax.add_patch(Polygon(m([(0.375, 0.300), (0.495, 0.300), (0.480, 0.030), (0.405, 0.030)]), closed=True,
                             facecolor=skin, zorder=0, **edge))
        ax.add_patch(Ellipse((0.5 + sign * (0.438 - 0.5), 0.022), 0.085, 0.03, facecolor=skin, zorder=0, **edge))
    ax.add_patch(Polygon([(0.352, 0.405), (0.648, 0.405), (0.628, 0.285), (0.372, 0.285)], closed=True,
                         facecolor=pelvis, zorder=1, **edge))
    ax.add_patch(FancyBboxPatch((0.352, 0.395), 0.296, 0.235, boxstyle="round,pad=0,rounding_size=0.03",
                                facecolor=abdomen, zorder=1, **edge))
    ax.add_patch(FancyBboxPatch((0.335, 0.62), 0.33, 0.215, boxstyle="round,pad=0,rounding_size=0.045",
                                facecolor=thorax, zorder=1, **edge))
    ax.add_patch(Rectangle((0.465, 0.825), 0.07, 0.05, facecolor=skin, zorder=0, **edge))
    ax.add_patch(Ellipse((0.5, 0.925), 0.125, 0.135, facecolor=skin, zorder=1, **edge))


def _equal_aspect(ax: Any) -> None:
    """Widen or narrow the x range about its centre so that one unit is as long on both axes.

    Unlike ``set_aspect("equal")`` this keeps the axes' box, so legends anchored beside it stay inside
    the space the layout engine reserved for them.
    """
    fig = ax.figure
    try:
        fig.draw_without_rendering()
    except Exception:  # noqa: BLE001 - a backend without a renderer: keep the provisional limits
        return
    box = ax.get_window_extent()
    lo, hi = ax.get_ylim()
    half = (hi - lo) * box.width / max(box.height, 1.0) / 2
    mid = sum(ax.get_xlim()) / 2
    ax.set_xlim(mid - half, mid + half)


def _marker_areas(organs: Any, sizes: Mapping[str, float] | None) -> np.ndarray:
    """Dot areas (points^2): proportional to the lesion count when ``sizes`` is given, else all equal."""
    organs = list(organs)
    if sizes is None:
        return np.full(len(organs), 110.0)
    n = np.array([float(sizes.get(o, 0.0)) for o in organs])
    top = max(float(np.nanmax(n)) if len(n) else 1.0, 1.0)
    return 18.0 + 400.0 * np.nan_to_num(n) / top


def _size_legend(ax: Any, sizes: Mapping[str, float], **where: Any) -> Any:
    """A legend of three dot sizes (lesion counts) matching :func:`_marker_areas`."""
    from matplotlib.lines import Line2D

    top = max(float(max(sizes.values(), default=1.0)), 1.0)
    values = sorted({_round_nice(top / 20), _round_nice(top / 4), _round_nice(top)})
    handles = [Line2D([], [], marker="o", ls="", color="0.6", mec="0.3",
                      ms=float(np.sqrt(18.0 + 400.0 * v / top)), label=f"{v:,.0f}") for v in values]
    return ax.legend(handles=handles, title="lesions", fontsize=8, title_fontsize=8, frameon=False,
                     labelspacing=1.1, borderpad=0.8, alignment="left", **where)


def _round_nice(v: float) -> float:
    """``v`` rounded to the nearest (on a log scale) of 1, 2 or 5 times a power of ten (at least 1)."""
    if v <= 1:
        return 1.0
    k = 10 ** np.floor(np.log10(v))
    return float(min((m * k for m in (1, 2, 5, 10)), key=lambda c: abs(np.log(c / v))))


def _threshold_words(p: OrganPhenotypes) -> str:
    if p.threshold == "median":
        return (f"median hazard ratio across organs, response {p.response_threshold:.3g}, "
                f"progression {p.progression_threshold:.3g}")
    return "hazard ratio 1, the reference organ"


def _plain_log_ticks(ax: Any) -> None:
    """Log axes labelled with plain numbers (0.5, 1, 2) rather than powers of ten."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    for axis, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        subs = (1.0, 2.0, 5.0) if hi / lo > 30 else (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)
        if hi / lo < 2.5:
            subs = tuple(float(v) for v in np.arange(1.0, 10.0, 0.5))
        axis.set_major_locator(LogLocator(base=10, subs=subs))
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(NullFormatter())


def _data_per_point(ax: Any) -> float:
    """Data units (y) per typographic point at the axes' laid-out size."""
    fig = ax.figure
    try:
        fig.draw_without_rendering()  # runs the layout engine, so the axes have their final size
    except Exception:  # noqa: BLE001 - a backend without a renderer: the size before layout will do
        pass
    height_points = ax.get_window_extent().height * 72.0 / fig.dpi
    lo, hi = ax.get_ylim()
    return float((hi - lo) / max(height_points, 1.0))


def _spread(targets: np.ndarray, gap: float, *, low: float) -> np.ndarray:
    """Positions as near ``targets`` (sorted high to low) as possible, at least ``gap`` apart, >= ``low``."""
    y = np.asarray(targets, dtype=float).copy()
    for i in range(1, len(y)):
        y[i] = min(y[i], y[i - 1] - gap)
    if len(y) and y[-1] < low:
        y[-1] = low
        for i in range(len(y) - 2, -1, -1):
            y[i] = max(y[i], y[i + 1] + gap)
    return y


def _place_labels(ax: Any, x: np.ndarray, y: np.ndarray, texts: list[str], radii: np.ndarray, *,
                  fontsize: float = 8.0) -> list[Any]:
    """Label each point where its text overlaps the fewest other labels and dots (greedy, biggest first).

    Positions are tried in eight directions at three distances; a label set off from its dot gets a
    thin leader line. Text extents are estimated from the font size (no renderer needed).
    """
    fig = ax.figure
    try:
        fig.draw_without_rendering()
    except Exception:  # noqa: BLE001 - as in _data_per_point
        pass
    to_points = 72.0 / fig.dpi
    pts = ax.transData.transform(np.column_stack([x, y])) * to_points
    box = ax.get_window_extent()
    x0, y0, x1, y1 = (box.x0 * to_points, box.y0 * to_points, box.x1 * to_points, box.y1 * to_points)
    dots = [(px - r, py - r, px + r, py + r) for (px, py), r in zip(pts, radii, strict=True)]
    placed: list[tuple[float, float, float, float]] = []
    directions = [(1, 0.6), (1, -0.6), (-1, 0.6), (-1, -0.6), (0, 1), (0, -1), (1, 0), (-1, 0)]

    def overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
        w = min(a[2], b[2]) - max(a[0], b[0])
        h = min(a[3], b[3]) - max(a[1], b[1])
        return w * h if w > 0 and h > 0 else 0.0

    artists = []
    for i in sorted(range(len(texts)), key=lambda k: -radii[k]):
        w = 0.56 * fontsize * len(texts[i]) + 2.0
        h = 1.25 * fontsize
        best, best_cost = None, np.inf
        for level, extra in enumerate((2.0, 10.0, 22.0)):
            for rank, (dx, dy) in enumerate(directions):
                d = radii[i] + extra
                cx = pts[i, 0] + dx * (d + w / 2)
                cy = pts[i, 1] + dy * (d + h / 2)
                cand = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
                cost = sum(overlap(cand, b) for b in placed) * 3.0
                cost += sum(overlap(cand, b) for b in dots)
                inside = overlap(cand, (x0, y0, x1, y1))
                cost += (w * h - inside) * 5.0 + level * 12.0 + rank * 0.5
                if cost < best_cost:
                    best, best_cost = (cx, cy, level), cost
        assert best is not None
        cx, cy, level = best
        placed.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
        arrow = dict(arrowstyle="-", color="0.55", lw=0.6, shrinkA=0, shrinkB=float(radii[i])) if level else None
        artists.append(ax.annotate(texts[i], (x[i], y[i]), xytext=(cx - pts[i, 0], cy - pts[i, 1]),
                                   textcoords="offset points", ha="center", va="center", fontsize=fontsize,
                                   zorder=4, arrowprops=arrow))
    return artists

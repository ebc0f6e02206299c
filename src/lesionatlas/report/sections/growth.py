r"""Report sections: lesion growth dynamics by organ (Fig. 2) and the tumour growth model's diagnostics.

:func:`build` returns two sections:

- ``growth`` — "Figure 2 — Lesion growth dynamics by organ": the model at the population estimates
  (Fig. 2a, :func:`plot_model_schematic`); Kd, F and Kg by organ with the Kruskal–Wallis p-values
  (Fig. 2b, :meth:`lesionatlas.stats.ParameterStatistics.plot_boxes`); correlations between the
  parameters and with the baseline volume, between organ medians (as the paper) and between lesions
  (Fig. 2c, :func:`plot_organ_correlations`, :func:`plot_lesion_correlations`); the treatment effect on
  each parameter by organ (Fig. 2d, :func:`plot_treatment_effects`); the fit as Monolix prints it, its
  statistics, the organ medians and Dunn's pairwise tests as tables.
- ``tgi-diagnostics`` — "Tumour growth model: fit and diagnostics": observed vs population and individual
  predictions, IWRES and NPDE against time and prediction, the VPC with its censored-proportion panel,
  the conditional VPC, the SAEM trajectories and individual fits (the plot methods of :class:`lesionatlas.tgi.TGIFit`).

Decisions
---------
- Lesion parameters are the conditional modes of the fit (``TGIFit.individual``), the values the paper
  compares across organs; organ, patient and treatment group come from the events stage's lesion table
  (the selected cohort's tables when the events stage did not run).
- All statistics come from :func:`lesionatlas.stats.lesion_parameter_statistics` (Kruskal–Wallis, Dunn,
  Pearson on the model's normal scale: log Kg, log Kd, logit F, log V0), except the treatment effects
  by organ, computed here with the same functions (:func:`~lesionatlas.stats.cohens_d`,
  :func:`~lesionatlas.stats.mann_whitney`) on each organ's lesions. The depth of response is
  :math:`\operatorname{logit}(1 - F)`; a positive Cohen's d means a larger value in the compared group.
- The schematic draws the model for the typical lesion (the population estimates), with the median
  baseline day of the fitted lesions as :math:`T_0`, relative to the volume at treatment start.

References
----------
Zhou J, et al. Mapping lesion-specific response and progression dynamics and inter-organ variability in
metastatic colorectal cancer. Nat Commun 2024 (Fig. 2, Supplementary Fig. 1 and 2, Supplementary Table 1).
"""
from __future__ import annotations

import math
from typing import Any, Final

import numpy as np
import pandas as pd

from ...data.organs import ORGAN_LABELS
from ...stats import (
    ParameterStatistics,
    cohens_d,
    format_p,
    lesion_parameter_statistics,
    mann_whitney,
)
from ..document import Section, colour, new_figure

#: Group column of the treatment comparison and the group the others are compared with.
GROUP_COLUMN: Final[str] = "treatment_group"
REFERENCE_GROUP: Final[str] = "chemo"
#: Readable names of the treatment groups (others are shown as they are).
GROUP_LABELS: Final[dict[str, str]] = {"chemo": "chemotherapy alone", "antibody+chemo": "antibody + chemotherapy"}
#: The paper's panel order in Fig. 2b.
PANEL_ORDER: Final[tuple[str, ...]] = ("kd", "f", "kg")
#: Fewest lesions of each group in an organ for a treatment effect in that organ.
MIN_GROUP_LESIONS: Final[int] = 3
#: Lesions drawn in the individual-fits figure of the diagnostics.
N_INDIVIDUAL_FITS: Final[int] = 12

_NAMES: Final[dict[str, str]] = {
    "log_kg": "Kg (1/day)", "log_kd": "Kd (1/day)", "logit_f": "F", "log_volume": "baseline volume (mm³)",
}
_SHORT: Final[dict[str, str]] = {"log_kg": "Kg", "log_kd": "Kd", "logit_f": "F", "log_volume": "V0"}
_MEANING: Final[dict[str, str]] = {
    "kd": "regression (killing) rate", "f": "resistant fraction", "kg": "progression (regrowth) rate",
}
#: Short organ names for labels inside scatter plots (the caption spells them out).
_SHORT_ORGANS: Final[dict[str, str]] = {"lymph_node_regional": "LN regional", "lymph_node_distal": "LN distal",
                                         "gi": "GI", "gr": "GR", "brain_cns": "Brain/CNS", "muscle": "Muscle"}
#: Monolix's names of the population parameters -> what they are.
_POPULATION_MEANING: Final[dict[str, str]] = {
    "kg_pop": "typical progression rate Kg (1/day)",
    "kd_pop": "typical regression rate Kd (1/day)",
    "f_pop": "typical resistant fraction F",
    "omega_kg": "SD of log Kg between lesions",
    "omega_kd": "SD of log Kd between lesions",
    "omega_f": "SD of logit F between lesions",
    "a": "constant residual error (mm³)",
    "b": "proportional residual error",
}
#: (x, y) pairs of Fig. 2c: the parameters against each other (paper's 2c), then against V0 (paper's 2d).
CORRELATION_PAIRS: Final[tuple[tuple[str, str], ...]] = (
    ("log_kd", "logit_f"), ("log_kg", "logit_f"), ("log_kd", "log_kg"),
    ("log_volume", "log_kd"), ("log_volume", "logit_f"), ("log_volume", "log_kg"),
)


# ------------------------------------------------------------------------------------------ data
def _stage_reason(run: Any, stage: str) -> str:
    record = run[stage]
    if record.reason:
        return record.reason
    if record.status == "not run":
        return "an earlier stage failed, so it was not run"
    return f"its status is {record.status!r}"


def _lesion_tables(run: Any) -> tuple[pd.DataFrame, pd.DataFrame | None] | None:
    """``(lesions, patients)`` giving organ and treatment group per lesion: the events stage, else the cohort."""
    if run["events"].status == "done":
        events = run.load("events")
        if events is not None:
            return events.table, events.patients
    if run["select"].status == "done":
        selection = run.load("select")
        if selection is not None:
            return selection.cohort.lesions, selection.cohort.patients
    return None


def parameter_statistics(fit: Any, lesions: pd.DataFrame, patients: pd.DataFrame | None) -> ParameterStatistics:
    """The statistics of Fig. 2: :func:`~lesionatlas.stats.lesion_parameter_statistics` on the fit's lesions."""
    return lesion_parameter_statistics(fit.individual, lesions, patients, group_col=GROUP_COLUMN,
                                       reference_group=REFERENCE_GROUP)


def treatment_effects_by_organ(stats: ParameterStatistics, *, min_lesions: int = MIN_GROUP_LESIONS) -> pd.DataFrame:
    r"""Cohen's d and the Mann–Whitney p of each group against the reference, for every organ and overall.

    Returns
    -------
    DataFrame
        ``organ`` (``"all"`` for every lesion), ``parameter`` (``depth, kg, kd``), ``group, reference,
        cohens_d, ci_lower, ci_upper, effect_size, p_value, n_group, n_reference``. The 95% CI of d is the
        normal approximation :math:`d \pm 1.96 \sqrt{(n_1 + n_2)/(n_1 n_2) + d^2 / (2 (n_1 + n_2))}`.
        Organs with fewer than ``min_lesions`` lesions in a group are left out. Empty when there are not
        two treatment groups.
    """
    columns = ["organ", "parameter", "group", "reference", "cohens_d", "ci_lower", "ci_upper", "effect_size",
               "p_value", "n_group", "n_reference"]
    overall = stats.treatment_effects
    if overall.empty:
        return pd.DataFrame(columns=columns)
    reference = str(overall["reference"].iloc[0])
    frame = stats.lesions
    group = frame["treatment_group"].astype("string")
    values = {"depth": -frame["logit_f"], "kg": frame["log_kg"], "kd": frame["log_kd"]}
    kept = set(stats.by_organ["organ"])
    rows = []
    for organ in ["all", *sorted(kept)]:
        in_organ = np.ones(len(frame), bool) if organ == "all" else (frame["organ"] == organ).to_numpy()
        for g in sorted(set(overall["group"].astype(str))):
            for name, series in values.items():
                x = series[in_organ & (group == g).fillna(False).to_numpy(dtype=bool)].dropna().to_numpy(float)
                y = series[in_organ & (group == reference).fillna(False).to_numpy(dtype=bool)].dropna().to_numpy(float)
                if len(x) < min_lesions or len(y) < min_lesions or x.var(ddof=1) + y.var(ddof=1) == 0:
                    continue
                d = cohens_d(x, y)
                mw = mann_whitney(x, y).iloc[0]
                n1, n2 = len(x), len(y)
                half = 1.959963984540054 * math.sqrt((n1 + n2) / (n1 * n2) + d * d / (2 * (n1 + n2)))
                rows.append({"organ": organ, "parameter": name, "group": g, "reference": reference, "cohens_d": d,
                             "ci_lower": d - half, "ci_upper": d + half, "effect_size": float(mw["effect_size"]),
                             "p_value": float(mw["p_value"]), "n_group": n1, "n_reference": n2})
    return pd.DataFrame(rows, columns=columns)


def _organ_label(organ: str) -> str:
    return "All organs" if organ == "all" else ORGAN_LABELS.get(organ, organ)


def _group_label(group: str) -> str:
    return GROUP_LABELS.get(group, group)


# ------------------------------------------------------------------------------------------ Fig. 2a
def _percent(value: float, _pos: Any = None) -> str:
    if value >= 1:
        return f"{value * 100:,.0f}%"
    return f"{value * 100:.3g}%"


def plot_model_schematic(fit: Any) -> Any:
    r"""The two-phase model at the population estimates, relative to the volume at treatment start.

    Before treatment :math:`V = V_0 e^{K_g (t - T_0)}`; from day 0 the sum of a resistant part
    :math:`F e^{K_g t}` and a sensitive part :math:`(1 - F) e^{-K_d t}` (dashed), on a log axis where each
    part is a straight line of slope :math:`K_g` or :math:`-K_d` and the resistant part starts at F.
    Returns the Figure.
    """
    from matplotlib.ticker import FuncFormatter

    pop = fit.population.set_index("parameter")["estimate"]
    kg, kd, f = float(pop["kg_pop"]), float(pop["kd_pop"]), float(pop["f_pop"])
    t0 = min(float(np.median(fit.individual["t0_day"])), -1.0)
    nadir = max(math.log((1 - f) * kd / (f * kg)) / (kg + kd), 0.0)
    back_to_start = -math.log(f) / kg  # day the resistant part alone is back at V(0)
    t_end = float(np.clip(1.15 * back_to_start, max(365.0, 2.5 * nadir), 4 * 365.0))
    t_start = min(-60.0, 2 * t0)
    before = np.linspace(t_start, 0.0, 60)
    after = np.linspace(0.0, t_end, 400)
    resistant = f * np.exp(kg * after)
    sensitive = (1 - f) * np.exp(-kd * after)
    total = resistant + sensitive

    fig, ax = new_figure(9.0, 5.0)
    ax.axvspan(t_start, 0, color="#f2f2f2", lw=0)
    ax.plot(before, np.exp(kg * before), color="#7f7f7f", lw=2.2, label="before treatment: growth at Kg")
    ax.plot(after, total, color="black", lw=2.4, label="V(t) after treatment start")
    ax.plot(after, resistant, color=colour(3), ls="--", lw=1.6, label="resistant part  F·exp(Kg·t)")
    ax.plot(after, sensitive, color=colour(0), ls="--", lw=1.6, label="sensitive part  (1 − F)·exp(−Kd·t)")
    ax.axvline(0, color="black", lw=0.8, ls=":")
    arrow = {"arrowstyle": "-", "color": "#7f7f7f", "lw": 0.8}
    ax.scatter([t0], [math.exp(kg * t0)], s=36, color="#7f7f7f", zorder=4)
    ax.annotate("baseline scan (T0, V0)", (t0, math.exp(kg * t0)), xytext=(18, 26), textcoords="offset points",
                fontsize=9, color="#4d4d4d", arrowprops=arrow)
    v_nadir = f * math.exp(kg * nadir) + (1 - f) * math.exp(-kd * nadir)
    ax.scatter([nadir], [v_nadir], s=40, color="black", zorder=4)
    ax.annotate(f"nadir: day {nadir:.0f}, {_percent(v_nadir)} of V(0)", (nadir, v_nadir), xytext=(60, -16),
                textcoords="offset points", ha="left", va="center", fontsize=9, arrowprops=arrow)
    ax.scatter([0], [f], s=40, color=colour(3), zorder=4)
    ax.annotate(f"F = {f:.3g} (resistant fraction at day 0)", (0, f), xytext=(10, -8), textcoords="offset points",
                fontsize=9, color=colour(3), va="top")
    lo = min(float(total.min()) / 3, f / 3)
    t_kd = min(0.25 * max(nadir, 30.0), t_end / 4)
    y_kd = (1 - f) * math.exp(-kd * t_kd)
    if y_kd > lo:
        ax.annotate(f"Kd = {kd:.3g} /day\n(regression rate)", (t_kd, y_kd), xytext=(18, 8), textcoords="offset points",
                    fontsize=9, color=colour(0))
    t_kg = 0.8 * t_end
    ax.annotate(f"Kg = {kg:.3g} /day\n(regrowth rate)", (t_kg, f * math.exp(kg * t_kg)), xytext=(-10, 14),
                textcoords="offset points", ha="right", fontsize=9, color=colour(3))
    formula = (r"$t < 0:\ V(t) = V_0\,e^{K_g\,(t - T_0)}$" "\n"
               r"$t \geq 0:\ V(t) = V_0\,e^{-K_g T_0}\,\left[F\,e^{K_g t} + (1 - F)\,e^{-K_d t}\right]$")
    ax.text(0.985, 0.97, formula, transform=ax.transAxes, ha="right", va="top", fontsize=10,
            bbox={"boxstyle": "round,pad=0.4", "facecolor": "white", "edgecolor": "#bbbbbb"})
    ax.set_yscale("log")
    ax.set_ylim(lo, max(2.0, float(total.max()) * 2.5))
    ax.set_xlim(t_start, t_end)
    ax.yaxis.set_major_formatter(FuncFormatter(_percent))
    ax.set_xlabel("days since treatment start")
    ax.set_ylabel("volume, % of volume at day 0 (log scale)")
    ax.set_title(f"Tumour growth model at the population estimates (Kg = {kg:.3g}/day, Kd = {kd:.3g}/day, "
                 f"F = {f:.3g})", fontsize=10)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=9, frameon=False)
    return fig


# ------------------------------------------------------------------------------------------ Fig. 2b
def plot_parameters_by_organ(stats: ParameterStatistics) -> Any:
    """Kd, F and Kg by organ (the paper's Fig. 2b), one row each, with the Kruskal–Wallis p; returns the Figure."""
    n_organs = len(stats.by_organ)
    fig, axes = new_figure(min(11.0, max(7.0, 0.5 * n_organs + 2.5)), 10.5, nrows=3)
    for ax, name in zip(axes, PANEL_ORDER):
        stats.plot_boxes(name, ax=ax)
        ax.set_title(f"{name.capitalize() if name != 'f' else 'F'} — {_MEANING[name]}", fontsize=10, loc="left")
        ax.tick_params(axis="y", labelsize=8)
    return fig


# ------------------------------------------------------------------------------------------ Fig. 2c
def _axis_values(values: np.ndarray, name: str) -> np.ndarray:
    """Normal-scale values back on the natural scale (exp, or the logistic function for F)."""
    return 1.0 / (1.0 + np.exp(-values)) if name == "logit_f" else np.exp(values)


_LOGIT_TICKS: Final[tuple[float, ...]] = (1e-4, 1e-3, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 0.8, 0.9, 0.95,
                                         0.99, 0.999)


def _ticks(lo: float, hi: float, name: str) -> list[float]:
    """A few round tick values inside ``[lo, hi]``: 1-2-5 steps over decades (fixed values for F), or
    evenly spaced round values when the range is narrower than that gives two ticks."""
    from matplotlib.ticker import MaxNLocator

    if name == "logit_f":
        ticks = [v for v in _LOGIT_TICKS if lo <= v <= hi]
    else:
        decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
        ticks = [m * 10.0 ** k for k in decades for m in (1, 2, 5) if lo <= m * 10.0 ** k <= hi]
        if len(ticks) > 6:
            ticks = [v for v in ticks if math.isclose(math.log10(v) % 1, 0, abs_tol=1e-9)
                     or math.isclose(math.log10(v) % 1, 1, abs_tol=1e-9)]
    if len(ticks) < 2:
        ticks = [v for v in MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi) if lo <= v <= hi and v > 0]
    return ticks


def _set_scale(ax: Any, axis: str, name: str) -> None:
    """Log (logit for F) scale with a few plain tick labels (``0.005``, not ``5 x 10^-3``), no minor labels.

    Call after the data are drawn: the ticks are chosen within the axis limits.
    """
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    target = ax.xaxis if axis == "x" else ax.yaxis
    getattr(ax, f"set_{axis}scale")("logit" if name == "logit_f" else "log")
    lo, hi = sorted(getattr(ax, f"get_{axis}lim")())
    target.set_major_locator(FixedLocator(_ticks(lo, hi, name)))
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 100 else f"{v:.3g}"))
    target.set_minor_formatter(NullFormatter())
    getattr(ax, f"set_{axis}label")(_NAMES[name])


def _correlation(table: pd.DataFrame, x: str, y: str) -> pd.Series | None:
    hit = table[((table["x"] == x) & (table["y"] == y)) | ((table["x"] == y) & (table["y"] == x))]
    return None if hit.empty else hit.iloc[0]


def _r_text(row: pd.Series | None) -> str:
    if row is None:
        return "r = n/a"
    return f"r = {row['r']:.2f}, {format_p(row['p_value'])}"


def plot_organ_correlations(stats: ParameterStatistics) -> Any:
    """Organ medians of the parameters against each other and against the baseline volume (Fig. 2c-d).

    One dot per organ (size: number of lesions), the least-squares line on the normal scale with its 95%
    confidence band, Pearson r and p between organ medians in each title. Returns the Figure.
    """
    from scipy.stats import t as student_t

    frame = stats.lesions[stats.lesions["organ"].isin(stats.by_organ["organ"])]
    medians = frame.groupby("organ")[list(_NAMES)].median()
    sizes = frame.groupby("organ").size().reindex(medians.index)
    fig, axes = new_figure(11.0, 7.4, nrows=2, ncols=3)
    area = 25 + 350 * np.sqrt(sizes.to_numpy(float) / max(float(sizes.max()), 1.0))
    for ax, (x, y) in zip(axes.ravel(), CORRELATION_PAIRS):
        ok = medians[[x, y]].dropna()
        xs, ys = ok[x].to_numpy(float), ok[y].to_numpy(float)
        ax.scatter(_axis_values(xs, x), _axis_values(ys, y), s=area[medians.index.get_indexer(ok.index)],
                   color=colour(0), alpha=0.55, edgecolor="white", lw=0.6, zorder=3)
        if len(xs) >= 3 and np.ptp(xs) > 0:
            slope, intercept = np.polyfit(xs, ys, 1)
            grid = np.linspace(xs.min(), xs.max(), 100)
            resid = ys - (intercept + slope * xs)
            s = math.sqrt(float(resid @ resid) / (len(xs) - 2)) if len(xs) > 2 else 0.0
            sxx = float(((xs - xs.mean()) ** 2).sum())
            half = student_t.ppf(0.975, len(xs) - 2) * s * np.sqrt(1 / len(xs) + (grid - xs.mean()) ** 2 / sxx)
            fitted = intercept + slope * grid
            ax.fill_between(_axis_values(grid, x), _axis_values(fitted - half, y), _axis_values(fitted + half, y),
                            color="#bdbdbd", alpha=0.45, lw=0, zorder=1)
            ax.plot(_axis_values(grid, x), _axis_values(fitted, y), color="#4d4d4d", ls="--", lw=1.2, zorder=2)
        for organ, xv, yv in zip(ok.index, xs, ys):
            if sizes[organ] >= sizes.quantile(0.5):  # name the larger organs; the table has them all
                right = xv > xs.min() + 0.7 * np.ptp(xs)  # names of the rightmost dots go to their left
                label = ax.annotate(_SHORT_ORGANS.get(organ, ORGAN_LABELS.get(organ, organ)), (_axis_values(np.array([xv]), x)[0],
                                    _axis_values(np.array([yv]), y)[0]), xytext=(-4 if right else 4, 3),
                                    textcoords="offset points", ha="right" if right else "left", fontsize=8,
                                    color="#333333", annotation_clip=True, clip_on=True)
                label.set_in_layout(False)  # a name near the edge must not shrink the panel
        ax.margins(x=0.1, y=0.08)
        _set_scale(ax, "x", x)
        _set_scale(ax, "y", y)
        ax.tick_params(labelsize=8)
        ax.set_title(f"{_SHORT[y]} vs {_SHORT[x]}: {_r_text(_correlation(stats.organ_correlations, x, y))}",
                     fontsize=9.5)
    fig.suptitle(f"Organ medians ({len(medians)} organs; dot area: number of lesions; dashed: linear fit with "
                 "95% CI)", fontsize=10)
    return fig


def plot_lesion_correlations(stats: ParameterStatistics) -> Any:
    """The same pairs between lesions: density (hexagons, log count) with Pearson r and p; returns the Figure."""
    from matplotlib.colors import LogNorm

    frame = stats.lesions
    fig, axes = new_figure(11.0, 7.0, nrows=2, ncols=3)
    mappable = None
    for ax, (x, y) in zip(axes.ravel(), CORRELATION_PAIRS):
        ok = frame[[x, y]].dropna()
        ok = ok[np.isfinite(ok[x]) & np.isfinite(ok[y])]
        if ok.empty:
            ax.text(0.5, 0.5, "no values", transform=ax.transAxes, ha="center")
            continue
        mappable = ax.hexbin(ok[x], ok[y], gridsize=40, mincnt=1, cmap="viridis", norm=LogNorm(), linewidths=0,
                             rasterized=True)
        ax.set_xlabel(f"{'logit' if x == 'logit_f' else 'log'} {_NAMES[x]}")
        ax.set_ylabel(f"{'logit' if y == 'logit_f' else 'log'} {_NAMES[y]}")
        ax.tick_params(labelsize=8)
        ax.set_title(f"{_SHORT[y]} vs {_SHORT[x]}: {_r_text(_correlation(stats.lesion_correlations, x, y))}",
                     fontsize=9.5)
    if mappable is not None:
        fig.colorbar(mappable, ax=axes, shrink=0.6, label="lesions per hexagon")
    fig.suptitle(f"Lesions ({len(frame):,}; model's normal scale: natural log, logit for F)", fontsize=10)
    return fig


# ------------------------------------------------------------------------------------------ Fig. 2d
def plot_treatment_effects(effects: pd.DataFrame) -> Any:
    """Cohen's d (95% CI) of each group against the reference, by organ, for depth, Kg and Kd.

    Filled dots: Mann–Whitney p < 0.05; the p-value is printed beside each row. Returns the Figure.
    """
    organs = (effects[effects["organ"] != "all"].groupby("organ")["n_group"].max()
              .sort_values(ascending=False).index.tolist())
    order = ["all", *organs]
    groups = sorted(effects["group"].unique())
    height = min(11.0, 1.6 + 0.3 * len(order) * max(1, len(groups)) ** 0.5)
    fig, axes = new_figure(11.0, height, ncols=3, sharey=True)
    titles = {"depth": "depth of response, logit(1 − F)", "kg": "progression rate, log Kg",
              "kd": "regression rate, log Kd"}
    offsets = np.linspace(-0.18, 0.18, len(groups)) if len(groups) > 1 else np.zeros(1)
    for ax, name in zip(axes, ("depth", "kg", "kd")):
        part = effects[effects["parameter"] == name]
        for gi, g in enumerate(groups):
            rows = part[part["group"] == g].set_index("organ").reindex(order).dropna(subset=["cohens_d"])
            ypos = np.array([order.index(o) for o in rows.index]) + offsets[gi]
            sig = rows["p_value"].to_numpy() < 0.05
            c = colour(gi + 1) if len(groups) > 1 else colour(0)
            ax.errorbar(rows["cohens_d"], ypos, xerr=[rows["cohens_d"] - rows["ci_lower"],
                        rows["ci_upper"] - rows["cohens_d"]], fmt="none", ecolor=c, elinewidth=1, capsize=0)
            ax.scatter(rows["cohens_d"][sig], ypos[sig], color=c, s=28, zorder=3,
                       label=f"{_group_label(g)}" if name == "depth" else None)
            ax.scatter(rows["cohens_d"][~sig], ypos[~sig], facecolor="white", edgecolor=c, s=28, zorder=3)
            for yv, p in zip(ypos, rows["p_value"]):
                ax.text(1.01, yv, format_p(p).replace("p = ", ""), transform=ax.get_yaxis_transform(), fontsize=8,
                        va="center", color="#333333")
        ax.axvline(0, color="black", lw=0.8)
        ax.axhline(0.5, color="#bbbbbb", lw=0.6)
        ax.set_title(titles[name], fontsize=10)
        ax.set_xlabel("Cohen's d")
        ax.tick_params(labelsize=8)
        ax.text(1.01, 1.0, "MW p", transform=ax.transAxes, fontsize=8, va="bottom", color="#333333")
    axes[0].set_yticks(range(len(order)), [_organ_label(o) for o in order], fontsize=8)
    axes[0].set_ylim(len(order) - 0.5, -0.5)
    reference = _group_label(str(effects["reference"].iloc[0]))
    if len(groups) > 1:
        axes[0].legend(fontsize=8, loc="lower left")
    fig.suptitle(f"Treatment effect by organ: {', '.join(_group_label(g) for g in groups)} vs {reference} "
                 "(positive: larger in the compared group; filled: Mann–Whitney p < 0.05)", fontsize=9.5)
    return fig


# ------------------------------------------------------------------------------------------ tables
def fit_table(fit: Any) -> pd.DataFrame:
    """The population estimates as Monolix prints them, with what each parameter is."""
    table = fit.population[["parameter", "estimate", "se", "rse_percent", "ci_lower", "ci_upper"]].copy()
    table.insert(1, "meaning", table["parameter"].map(_POPULATION_MEANING).fillna(""))
    return table


def fit_statistics(fit: Any) -> pd.DataFrame:
    """``quantity, value``: −2LL, AIC, BIC, shrinkage, iterations, chains, time and convergence flags."""
    diag = fit.diagnostics

    def criterion(value: float | None) -> str:  # all digits: differences between models matter, not 4 digits
        return "not computed (tgi.n_is_draws = 0)" if value is None else f"{value:,.1f}"

    rows: list[tuple[str, Any]] = [
        ("lesions fitted", int(fit.n_lesions)),
        ("observations", int(fit.n_obs)),
        ("observations below the limit (censored, M3)", diag.get("n_censored")),
        ("−2 log-likelihood (importance sampling)", criterion(None if fit.loglik is None else -2.0 * fit.loglik)),
        ("AIC", criterion(fit.aic)),
        ("BIC", criterion(fit.bic)),
        ("Monte-Carlo SE of the log-likelihood (importance sampling)", diag.get("is_relative_se")),
        ("bias correction included in the log-likelihood (importance sampling)", diag.get("is_bias_correction")),
    ]
    for kind in ("mode", "mean"):
        for name, value in (diag.get(f"shrinkage_{kind}_percent") or {}).items():
            label = "F" if name == "f" else name.capitalize()
            rows.append((f"η-shrinkage of {label}, conditional {kind} (%)", value))
    rows += [
        ("SAEM iterations", diag.get("n_iterations")),
        ("of which exploratory (after burn-in)", diag.get("n_explore")),
        ("exploration stopped early", diag.get("stopped_exploration_early")),
        ("Markov chains per lesion", diag.get("n_chains")),
        ("Fisher information positive definite", diag.get("fisher_positive_definite")),
        ("observations treated as outliers at the estimate", diag.get("n_clipped_final")),
        ("fit time (s)", diag.get("seconds")),
        ("error model", fit.spec.error_model),
        ("censoring", fit.spec.censoring),
        ("limit (mm³)", diag.get("limit_mm3")),
    ]
    return pd.DataFrame([(k, v) for k, v in rows if v is not None], columns=["quantity", "value"])


def organ_medians(stats: ParameterStatistics) -> pd.DataFrame:
    """Median and quartiles of Kd, F and Kg by organ (most lesions first), then a row of Kruskal–Wallis p."""
    by = stats.by_organ.sort_values(["n_lesions", "organ"], ascending=[False, True]).reset_index(drop=True)
    cols = ["n_lesions"] + [f"{p}_{s}" for p in PANEL_ORDER for s in ("median", "q25", "q75")]
    table = by[cols].astype(float)
    table.insert(0, "organ", [ORGAN_LABELS.get(o, o) for o in by["organ"]])
    kw = stats.kruskal.set_index("parameter")["p_value"]
    last = {"organ": "Kruskal–Wallis p", "n_lesions": float(by["n_lesions"].sum())}
    last.update({f"{p}_median": float(kw.get(p, np.nan)) for p in PANEL_ORDER})
    table = pd.concat([table, pd.DataFrame([last])], ignore_index=True)
    table["n_lesions"] = table["n_lesions"].astype(int)
    return table


def correlation_table(stats: ParameterStatistics) -> pd.DataFrame:
    """Pearson correlations between organ medians and between lesions, on the model's normal scale."""
    parts = []
    for level, frame in (("organ medians", stats.organ_correlations), ("lesions", stats.lesion_correlations)):
        part = frame.copy()
        part.insert(0, "level", level)
        parts.append(part)
    parts = [p for p in parts if len(p) and not p.drop(columns="level").isna().all().all()] or parts[:1]
    out = pd.concat(parts, ignore_index=True)
    names = {"log_kg": "log Kg", "log_kd": "log Kd", "logit_f": "logit F", "log_volume": "log V0"}
    out["x"] = out["x"].map(names).fillna(out["x"])
    out["y"] = out["y"].map(names).fillna(out["y"])
    out["n"] = out["n"].astype(int)
    return out


# ------------------------------------------------------------------------------------------ sections
def _growth_section(run: Any, fit: Any) -> Section:
    section = Section(
        "growth", "Figure 2 — Lesion growth dynamics by organ",
        intro=("Each target lesion's volume was fitted with a two-phase tumour growth model (nonlinear mixed "
               "effects, SAEM, M3 likelihood for volumes below the limit): before treatment the lesion grows at "
               "rate Kg; from treatment start a sensitive part (1 − F) shrinks at rate Kd while a resistant part F "
               "regrows at Kg. The lesions' parameters are then compared across organs and treatments."),
    )
    section.facts([("target lesions fitted", f"{fit.n_lesions:,}"), ("observations", f"{fit.n_obs:,}"),
                   ("below the limit", f"{int(fit.diagnostics.get('n_censored', 0)):,}"),
                   ("−2LL", "n/a" if fit.loglik is None else f"{-2 * fit.loglik:,.1f}"),
                   ("BIC", "n/a" if fit.bic is None else f"{fit.bic:,.1f}")])
    section.figure("fig2a_model_schematic", "Fig. 2a — The tumour growth model", plot_model_schematic(fit),
                   "V(t) of the model for the typical lesion (the population estimates below), as a percentage of "
                   "the volume at treatment start, log scale: each part is a straight line, of slope Kg (resistant, "
                   "starting at F) or −Kd (sensitive). T0 is the median baseline-scan day of the fitted lesions.")
    section.table("table2_tgi_fit", "Population parameters (Monolix-style)", fit_table(fit),
                  "Typical values (_pop), SDs of the random effects (omega: log Kg, log Kd, logit F) and the residual "
                  "error, with standard errors from the Fisher information (stochastic approximation), relative SE "
                  "(%) and 95% CIs. Empty SE: standard errors were not computed (tgi.standard_errors = false).",
                  source="tgi/population.csv")
    section.table("table2_tgi_fit_statistics", "Fit statistics", fit_statistics(fit),
                  "−2LL by importance sampling; BIC = −2LL + P·log(number of "
                  "lesions), as Monolix; η-shrinkage = 1 − var(η)/ω².", max_rows=40, source="tgi/meta.json")

    tables = _lesion_tables(run)
    if tables is None:
        section.skipped("events", _stage_reason(run, "events"))
        return section
    lesions, patients = tables
    stats = parameter_statistics(fit, lesions, patients)
    left_out = stats.meta.get("organs_left_out") or []
    if stats.kruskal.empty:
        section.note("Fewer than two organs have enough target lesions to compare the parameters across organs.",
                     "warning")
        return section
    note_left = (f" Organs with fewer than {stats.meta['min_lesions']} target lesions are left out: "
                 f"{', '.join(ORGAN_LABELS.get(o, o) for o in left_out)}." if left_out else "")
    section.figure("fig2b_parameters_by_organ", "Fig. 2b — Kd, F and Kg by organ", plot_parameters_by_organ(stats),
                   "Conditional modes of the lesions' parameters by organ, ordered by median (number of lesions in "
                   "brackets). Boxes: 25th–75th percentiles and median; whiskers: 10th and 90th percentiles; points: "
                   f"lesions beyond them. Kruskal–Wallis test across organs.{note_left}")
    section.table("table2_organ_medians", "Lesion parameters by organ: median (25th, 75th percentile)",
                  organ_medians(stats),
                  "Rates in 1/day. Last row: the Kruskal–Wallis p-value of each parameter across organs.",
                  max_rows=60)
    section.figure("fig2c_organ_correlations", "Fig. 2c–d — Correlations between organ medians",
                   plot_organ_correlations(stats),
                   "Top: the parameters against each other (the paper's Fig. 2c); bottom: against the baseline "
                   "volume V0 (the paper's Fig. 2d). Pearson r and two-sided p between organ medians on the model's "
                   "normal scale (log Kg, log Kd, logit F, log V0). Names are shown for the larger half of the organs "
                   "(LN: lymph nodes; GI: gastrointestinal; GR: genitourinary and reproductive).")
    section.figure("fig2c_lesion_correlations", "Fig. 2c (lesions) — Correlations between lesions",
                   plot_lesion_correlations(stats),
                   "The same pairs with one value per lesion (conditional modes), on the model's normal scale; colour: "
                   "number of lesions per hexagon (log scale). With thousands of lesions a weak correlation has a "
                   "tiny p-value; compare the r values.")
    section.table("table2_parameter_correlations", "Pearson correlations", correlation_table(stats),
                  "Between organ medians (one value per organ) and between lesions; 95% CI by Fisher's z.")

    effects = treatment_effects_by_organ(stats)
    if effects.empty:
        section.note(f"No treatment comparison (Fig. 2d): the data have no '{GROUP_COLUMN}' column with two or "
                     "more groups.", "info")
    else:
        section.figure("fig2d_treatment_effects", "Fig. 2d — Treatment effect on the lesion parameters by organ",
                       plot_treatment_effects(effects),
                       "Cohen's d (95% CI) between the treatment groups on the model's normal scale, per organ and "
                       "for all lesions (the paper's effect sizes: depth 0.43, Kg 0.26, Kd 0.06); two-sided "
                       f"Mann–Whitney p on the right. Organs with fewer than {MIN_GROUP_LESIONS} lesions in a group "
                       "are left out.")
        section.table("table2_treatment_effects", "Treatment effects by organ",
                      effects.assign(organ=effects["organ"].map(_organ_label)), max_rows=60,
                      caption="effect_size: rank-biserial correlation of the Mann–Whitney test.")
    dunn = stats.dunn.copy()
    if not dunn.empty:
        n_sig = int((dunn["p_adjusted"] < 0.05).sum())
        dunn = dunn.sort_values(["parameter", "p_adjusted"], kind="stable").reset_index(drop=True)
        for col in ("group_a", "group_b"):
            dunn[col] = dunn[col].map(lambda o: ORGAN_LABELS.get(o, o))
        section.table("table2_dunn", "Dunn's pairwise tests between organs", dunn.rename(
                      columns={"group_a": "organ_a", "group_b": "organ_b"}), max_rows=30,
                      caption=f"{n_sig} of {len(dunn)} organ pairs differ at adjusted p < 0.05 "
                              f"({stats.meta.get('adjust', 'holm')} adjustment); smallest p first within each "
                              "parameter.")
    return section


def _diagnostics_section(fit: Any) -> Section:
    section = Section(
        "tgi-diagnostics", "Tumour growth model: fit and diagnostics",
        intro=("Goodness of fit of the tumour growth model (the paper's Supplementary Fig. 1): predictions against "
               "observations, residuals, a visual predictive check with censoring, the SAEM trajectories and "
               "individual fits. Rows below the limit are imputed as Monolix does and drawn in red."),
    )
    if fit.observations is None:
        section.note("This fit carries no observations table (written by an older version); refit the model to "
                     "see its diagnostics.", "warning")
        return section
    fig, axes = new_figure(11.0, 5.0, ncols=2)
    fit.plot_observed_vs_predicted(axes[0], kind="population")
    fit.plot_observed_vs_predicted(axes[1], kind="individual")
    section.figure("tgi_observed_vs_predicted", "Observed vs predicted volumes", fig,
                   "Log-log axes; black line: identity; dashed: the limit. Population predictions use the typical "
                   "parameters with each lesion's V0 and T0; individual predictions the conditional modes.")
    fig, axes = new_figure(11.0, 12.5, nrows=3, ncols=2)
    for row, kind in enumerate(("iwres", "npde", "cnpde")):
        fit.plot_residuals(axes[row, 0], x="day", kind=kind)
        fit.plot_residuals(axes[row, 1], x="prediction", kind=kind)
    section.figure("tgi_residuals", "Residuals: IWRES, NPDE and conditional NPDE", fig,
                   "Individual weighted residuals, normalised prediction distribution errors and conditional NPDE "
                   "against time and prediction; lines at 0 and ±1.96. About 95% of points should lie between the "
                   "dashed lines, with no trend. Scans stop at progression, so late observations are those of "
                   "lesions that did not grow: the NPDE drift there even for a right model, the conditional NPDE "
                   "(each observation against its prediction given the lesion's earlier ones) do not. Rare extreme "
                   "residuals are drawn on the plot's edge (black triangles; their number and the largest are "
                   "given under the axis).")
    fig, axes = new_figure(11.0, 4.8, ncols=2, width_ratios=[1.6, 1])
    fit.plot_vpc(axes[0])
    fit.plot_vpc_censored(axes[1])
    vpc = fit.vpc()
    n_out = int(vpc.percentiles["outside_pi"].sum())
    section.figure("tgi_vpc", "Visual predictive check", fig,
                   f"Observed 10th, 50th and 90th percentiles per time bin (lines) over the {vpc.n_simulations} "
                   f"simulated data sets' {round(100 * vpc.prediction_interval)}% prediction intervals (bands); "
                   "values below the limit are set to it in both. Hollow points: a percentile at the limit; red and "
                   f"ringed: outside its interval ({n_out} of {len(vpc.percentiles)}). Right: the proportion below the "
                   "limit. Scans stop at progression, so late bins hold the lesions that did not progress: the "
                   "upper percentiles fall below their bands there even for a right model (see the conditional VPC).")
    fig, ax = new_figure(8.0, 4.8)
    fit.plot_vpc(ax, conditional=True)
    cvpc = fit.vpc(conditional=True)
    n_out = int(cvpc.percentiles["outside_pi"].sum())
    section.figure("tgi_vpc_conditional", "Conditional visual predictive check", fig,
                   f"The same percentiles over bands from {cvpc.n_simulations} replicates in which each observation "
                   "is simulated given the lesion's earlier observations (its one-step-ahead predictive "
                   "distribution, as for the conditional NPDE). Replicates and data then share the rule that stops "
                   "the scans, so a right model keeps every bin inside its band (about 1 in 10 outside by chance); "
                   f"outside here: {n_out} of {len(cvpc.percentiles)}.")
    section.figure("tgi_saem_trajectories", "SAEM trajectories", fit.plot_trace(),
                   "Every population parameter along the SAEM iterations; dotted: end of the exploratory phase; "
                   "grey line: the final estimate.")
    n_fits = min(N_INDIVIDUAL_FITS, len(fit.individual))
    section.figure("tgi_individual_fits", "Individual fits", fit.plot_individual_fits(n=n_fits, seed=0),
                   f"{n_fits} lesions drawn at random: observations (black; red triangles: below the limit, at the "
                   "limit), the individual fit (conditional mode, solid) and the population prediction with the "
                   "lesion's V0 and T0 (dashed).")
    residuals = fit.residuals()
    section.facts([
        ("mean NPDE (expected 0)", f"{residuals['npde'].mean():.3f}"),
        ("SD of NPDE (expected 1)", f"{residuals['npde'].std():.3f}"),
        ("mean conditional NPDE (expected 0)", f"{residuals['cnpde'].mean():.3f}"),
        ("SD of conditional NPDE (expected 1)", f"{residuals['cnpde'].std():.3f}"),
        ("IWRES outside ±1.96", f"{100 * (residuals['iwres'].abs() > 1.959963984540054).mean():.1f}%"),
    ])
    return section


def build(run: Any) -> list[Section]:
    """The ``growth`` (Fig. 2) and ``tgi-diagnostics`` sections of the report."""
    growth_id, growth_title = "growth", "Figure 2 — Lesion growth dynamics by organ"
    diag_id, diag_title = "tgi-diagnostics", "Tumour growth model: fit and diagnostics"
    fit = run.load("tgi") if run["tgi"].status == "done" else None
    if fit is None:
        reason = _stage_reason(run, "tgi")
        return [Section(growth_id, growth_title).skipped("tgi", reason),
                Section(diag_id, diag_title).skipped("tgi", reason)]
    return [_growth_section(run, fit), _diagnostics_section(fit)]


__all__ = ["CORRELATION_PAIRS", "GROUP_COLUMN", "REFERENCE_GROUP", "build", "correlation_table", "fit_statistics",
           "fit_table", "organ_medians", "parameter_statistics", "plot_lesion_correlations", "plot_model_schematic",
           "plot_organ_correlations", "plot_parameters_by_organ", "plot_treatment_effects",
           "treatment_effects_by_organ"]

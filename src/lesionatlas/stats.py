"""Group comparisons and correlations as tidy tables (scipy.stats and scikit-posthocs compute them)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .errors import ConfigError, DataError


def _clean(frame: pd.DataFrame, value: str, group: str) -> pd.DataFrame:
    missing = [c for c in (value, group) if c not in frame.columns]
    if missing:
        raise DataError(f"column(s) {', '.join(missing)} missing", code="missing-column")
    out = pd.DataFrame({"value": pd.to_numeric(frame[value], errors="coerce"),
                        "group": frame[group].astype("string")}).dropna()
    return out[np.isfinite(out["value"])]


def kruskal_wallis(frame: pd.DataFrame, value: str, group: str) -> pd.DataFrame:
    """Kruskal–Wallis H test of ``value`` across ``group``: ``statistic, df, p_value, n, n_groups``."""
    from scipy.stats import kruskal

    data = _clean(frame, value, group)
    samples = [g["value"].to_numpy() for _, g in data.groupby("group")]
    if len(samples) < 2:
        raise DataError(f"Kruskal-Wallis: {group} has fewer than 2 groups with values", code="too-few-groups")
    if data["value"].nunique() < 2:  # all values tied: the test is undefined
        return pd.DataFrame([{"statistic": np.nan, "df": len(samples) - 1, "p_value": np.nan, "n": len(data),
                              "n_groups": len(samples)}])
    res = kruskal(*samples)
    return pd.DataFrame([{"statistic": float(res.statistic), "df": len(samples) - 1, "p_value": float(res.pvalue),
                          "n": len(data), "n_groups": len(samples)}])


def dunn(frame: pd.DataFrame, value: str, group: str, adjust: str = "holm") -> pd.DataFrame:
    """Dunn's pairwise test after Kruskal–Wallis: ``group_a, group_b, p_adjusted`` (scikit-posthocs)."""
    import scikit_posthocs as sp

    data = _clean(frame, value, group)
    if data["value"].nunique() < 2:  # all values tied: no pairwise difference can be tested
        groups = sorted(data["group"].unique())
        return pd.DataFrame([{"group_a": a, "group_b": b, "p_adjusted": np.nan}
                             for i, a in enumerate(groups) for b in groups[i + 1:]],
                            columns=["group_a", "group_b", "p_adjusted"])
    matrix = sp.posthoc_dunn(data, val_col="value", group_col="group", p_adjust=adjust)
    groups = list(matrix.index)
    rows = [{"group_a": a, "group_b": b, "p_adjusted": float(matrix.loc[a, b])}
            for i, a in enumerate(groups) for b in groups[i + 1:]]
    return pd.DataFrame(rows, columns=["group_a", "group_b", "p_adjusted"])


def mann_whitney(x: np.ndarray, y: np.ndarray) -> pd.DataFrame:
    """Two-sided Mann–Whitney U test with the rank-biserial correlation as effect size.

    ``r = 2 U_x / (n_x n_y) - 1``, positive when ``x`` tends
    to exceed ``y``. Columns ``statistic (U_x), p_value, effect_size, n_x, n_y``.
    """
    from scipy.stats import mannwhitneyu

    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    res = mannwhitneyu(x, y, alternative="two-sided")
    r = 2.0 * float(res.statistic) / (len(x) * len(y)) - 1.0
    return pd.DataFrame([{"statistic": float(res.statistic), "p_value": float(res.pvalue), "effect_size": r,
                          "n_x": len(x), "n_y": len(y)}])


def cohens_d(x: np.ndarray, y: np.ndarray) -> float:
    """Standardised mean difference ``(mean x - mean y) / pooled sd`` (pooled with n - 1)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    nx, ny = len(x), len(y)
    pooled = np.sqrt(((nx - 1) * x.var(ddof=1) + (ny - 1) * y.var(ddof=1)) / (nx + ny - 2))
    return float((x.mean() - y.mean()) / pooled)


def pearson(x: np.ndarray, y: np.ndarray) -> pd.DataFrame:
    """Pearson correlation with its p-value and 95% CI (Fisher z): ``r, p_value, ci_lower, ci_upper, n``."""
    from scipy.stats import pearsonr

    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    res = pearsonr(x[ok], y[ok])
    ci = res.confidence_interval(0.95)
    return pd.DataFrame([{"r": float(res.statistic), "p_value": float(res.pvalue), "ci_lower": float(ci.low),
                          "ci_upper": float(ci.high), "n": int(ok.sum())}])


def chi_square(frame: pd.DataFrame, row: str, col: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Chi-square test of independence of two categorical columns (e.g. pattern group by treatment).

    Returns ``(counts, test)``: the tidy contingency table ``row, col, n, percent_of_col`` and
    ``statistic, df, p_value, n`` (scipy's ``chi2_contingency``, no continuity correction beyond its
    default for 2 x 2 tables).
    """
    from scipy.stats import chi2_contingency

    missing = [c for c in (row, col) if c not in frame.columns]
    if missing:
        raise DataError(f"column(s) {', '.join(missing)} missing", code="missing-column")
    data = frame[[row, col]].dropna().astype(str)
    table = pd.crosstab(data[row], data[col])
    if table.shape[0] < 2 or table.shape[1] < 2:
        raise DataError(f"chi-square: {row} x {col} needs at least 2 levels of each", code="too-few-groups")
    res = chi2_contingency(table.to_numpy())
    counts = table.stack().rename("n").reset_index()
    counts["percent_of_col"] = 100.0 * counts["n"] / counts.groupby(col)["n"].transform("sum")
    test = pd.DataFrame([{"statistic": float(res.statistic), "df": int(res.dof), "p_value": float(res.pvalue),
                          "n": int(table.to_numpy().sum())}])
    return counts, test


def format_p(p: float) -> str:
    """A p-value as text for a figure: ``p = 0.0014``, ``p = 3.2e-09``, ``p < 1e-300`` (underflow), ``p = n/a``."""
    p = float(p)
    if not np.isfinite(p):
        return "p = n/a"
    if p == 0.0:
        return "p < 1e-300"
    if p < 1e-4:
        return f"p = {p:.1e}"
    return f"p = {p:.2g}"


# ------------------------------------------------------------------------------------------------
# Lesion growth parameters across organs and treatments (Zhou et al. 2024, step 4 and Fig. 2)

#: Parameter -> (column of the parameter table, label, transform to the normal scale of the model).
LESION_PARAMETERS: dict[str, tuple[str, str, str]] = {
    "kg": ("kg", "Kg (1/day)", "log"),
    "kd": ("kd", "Kd (1/day)", "log"),
    "f": ("f", "F", "logit"),
}


def _normal_scale(values: pd.Series, transform: str) -> pd.Series:
    v = pd.to_numeric(values, errors="coerce").astype(float)
    if transform == "log":
        return np.log(v.where(v > 0))
    return np.log(v.where((v > 0) & (v < 1)) / (1 - v.where((v > 0) & (v < 1))))


@dataclass(frozen=True, eq=False)
class ParameterStatistics:
    """Lesion growth parameters compared across organs and treatment groups.

    Attributes
    ----------
    lesions : DataFrame
        One row per target lesion: ``lesion_id, patient_id, organ, treatment_group, kg, kd, f,
        baseline_volume_mm3`` and the normal-scale values ``log_kg, log_kd, logit_f, log_volume``.
    by_organ : DataFrame
        ``organ, n_lesions`` and the median (and 25/75th percentiles) of each parameter.
    kruskal : DataFrame
        ``parameter, statistic, df, p_value, n, n_groups``: Kruskal–Wallis across organs.
    dunn : DataFrame
        ``parameter, group_a, group_b, p_adjusted``: Dunn's test between organs.
    organ_correlations, lesion_correlations : DataFrame
        ``x, y, r, p_value, ci_lower, ci_upper, n``: Pearson correlations among the parameters and with
        the baseline volume, between organ medians and between lesions, on the model's normal scale.
    treatment_effects : DataFrame
        ``parameter, group, reference, cohens_d, effect_size, p_value, n_group, n_reference``.
    """

    lesions: pd.DataFrame
    by_organ: pd.DataFrame
    kruskal: pd.DataFrame
    dunn: pd.DataFrame
    organ_correlations: pd.DataFrame
    lesion_correlations: pd.DataFrame
    treatment_effects: pd.DataFrame
    meta: dict = field(default_factory=dict)

    def summary(self) -> pd.DataFrame:
        """Kruskal–Wallis p by parameter with the organ of the lowest and highest median."""
        rows = []
        for _, k in self.kruskal.iterrows():
            med = self.by_organ.set_index("organ")[f"{k['parameter']}_median"]
            rows.append({"parameter": k["parameter"], "kruskal_p": k["p_value"], "lowest_organ": med.idxmin(),
                         "highest_organ": med.idxmax()})
        return pd.DataFrame(rows)

    def __repr__(self) -> str:
        return (f"ParameterStatistics({len(self.lesions)} lesions, {len(self.by_organ)} organs; "
                + ", ".join(f"KW p({r.parameter}) = {r.p_value:.2g}" for r in self.kruskal.itertuples()) + ")")

    def plot_boxes(self, parameter: str = "kd", ax: Any = None, *, counts: bool = True,
                   points: bool = True) -> Any:
        """Box plot of one parameter by organ, as the paper's Fig. 2b; returns the Axes.

        Organs ordered by median (lowest first), boxes from the 25th to the 75th percentile, whiskers at
        the 10th and 90th, lesions beyond the whiskers as small points (``points``, rasterized); the organ
        names carry the number of lesions (``counts``); log scale for the rates, logit scale for F; the
        Kruskal–Wallis p-value in the title (:func:`format_p`).
        """
        from .data.organs import ORGAN_LABELS

        if parameter not in LESION_PARAMETERS:
            raise ConfigError(f"parameter must be one of {', '.join(LESION_PARAMETERS)}, got {parameter!r}")
        if ax is None:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure

            fig = Figure(figsize=(7, 4), layout="constrained")
            FigureCanvasAgg(fig)
            ax = fig.add_subplot()
        col, label, _ = LESION_PARAMETERS[parameter]
        order = self.by_organ.sort_values(f"{parameter}_median", kind="stable")["organ"].tolist()
        data = [self.lesions.loc[self.lesions["organ"] == o, col].dropna().to_numpy() for o in order]
        parts = ax.boxplot(data, whis=(10, 90), showfliers=points, widths=0.6, patch_artist=True,
                           medianprops={"color": "black", "lw": 1.5},
                           boxprops={"facecolor": "#cfe3f3", "edgecolor": "#1d4f73"},
                           whiskerprops={"color": "#1d4f73"}, capprops={"color": "#1d4f73"},
                           flierprops={"marker": ".", "markersize": 2, "alpha": 0.35,
                                       "markerfacecolor": "#7f7f7f", "markeredgecolor": "none"})
        for line in parts.get("fliers", []):
            line.set_rasterized(True)
        names = [ORGAN_LABELS.get(o, o) for o in order]
        if counts:
            names = [f"{name} ({len(d):,})" for name, d in zip(names, data)]
        ax.set_xticks(range(1, len(order) + 1), names, rotation=40, ha="right", rotation_mode="anchor", fontsize=8)
        if parameter == "f":
            from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

            ax.set_yscale("logit")
            ax.yaxis.set_major_locator(FixedLocator([1e-5, 1e-4, 1e-3, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999]))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
        else:
            ax.set_yscale("log")
        ax.set_ylabel(label)
        ax.grid(axis="y", color="#e5e5e5", lw=0.6)
        ax.set_axisbelow(True)
        kw = self.kruskal.set_index("parameter")
        if parameter in kw.index:
            ax.set_title(f"Kruskal–Wallis {format_p(kw.loc[parameter, 'p_value'])}", fontsize=9, loc="right")
        return ax

    def to_dir(self, path: Any) -> Any:
        """Write every table (Parquet + CSV) and ``meta.json`` atomically."""
        from .io import write_result_dir

        names = ("lesions", "by_organ", "kruskal", "dunn", "organ_correlations", "lesion_correlations",
                 "treatment_effects")
        return write_result_dir(path, {n: getattr(self, n) for n in names}, dict(self.meta))


def _correlations(frame: pd.DataFrame) -> pd.DataFrame:
    pairs = [("logit_f", "log_kd"), ("logit_f", "log_kg"), ("log_kg", "log_kd"),
             ("log_kg", "log_volume"), ("log_kd", "log_volume"), ("logit_f", "log_volume")]
    rows = []
    for x, y in pairs:
        ok = frame[[x, y]].dropna()
        if len(ok) >= 3 and ok[x].nunique() > 1 and ok[y].nunique() > 1:  # constant: r undefined
            rows.append({"x": x, "y": y, **pearson(ok[x].to_numpy(), ok[y].to_numpy()).iloc[0].to_dict()})
    return pd.DataFrame(rows, columns=["x", "y", "r", "p_value", "ci_lower", "ci_upper", "n"])


def lesion_parameter_statistics(
    parameters: pd.DataFrame,
    lesions: pd.DataFrame,
    patients: pd.DataFrame | None = None,
    *,
    group_col: str = "treatment_group",
    reference_group: str | None = "chemo",
    adjust: str = "holm",
    min_lesions: int = 5,
) -> ParameterStatistics:
    """Compare the lesions' growth parameters across organs and treatment groups (the paper's Fig. 2).

    Parameters
    ----------
    parameters : DataFrame
        One row per target lesion with ``lesion_id, kg, kd, f`` and optionally the baseline volume
        (``v0_mm3``, ``v0`` or ``baseline_volume_mm3``): :attr:`lesionatlas.tgi.TGIFit.individual` (its
        conditional modes) or the simulator's truth.
    lesions : DataFrame
        ``lesion_id, patient_id, organ`` (the Cohort's lesions table).
    patients : DataFrame, optional
        ``patient_id`` and ``group_col`` for the treatment comparison.
    reference_group : str, optional
        The group the others are compared with (default ``chemo``; the most frequent group when absent).
    adjust : str
        Multiplicity adjustment of Dunn's test (scikit-posthocs / statsmodels method name).
    min_lesions : int
        Organs with fewer target lesions are left out of the organ comparisons (listed in ``meta``).

    Notes
    -----
    Organ differences: Kruskal–Wallis, then Dunn's pairwise test. Correlations: Pearson, on the model's
    normal scale (log Kg, log Kd, logit F, log baseline volume), between organ medians (the paper's
    organ-level correlations: F vs Kd r = -0.69, F vs Kg r = 0.53) and between lesions. Treatment effects:
    Cohen's d of each group against the reference on the normal scale, for the depth of response
    ``logit(1 - F) = -logit F``, log Kg and log Kd (positive: larger in the group), with the Mann–Whitney p
    and the rank-biserial correlation as a distribution-free effect size.
    """
    need = [c for c in ("lesion_id", "kg", "kd", "f") if c not in parameters.columns]
    if need:
        raise DataError(f"parameter table: column(s) {', '.join(need)} missing", code="missing-column")
    vol_col = next((c for c in ("v0_mm3", "v0", "baseline_volume_mm3") if c in parameters.columns), None)
    frame = parameters.loc[:, ["lesion_id", "kg", "kd", "f"]].copy()
    frame["baseline_volume_mm3"] = parameters[vol_col].to_numpy(dtype=float) if vol_col else np.nan
    frame["lesion_id"] = frame["lesion_id"].astype(str)
    les = lesions.loc[:, ["lesion_id", "patient_id", "organ"]].astype({"lesion_id": str, "patient_id": str})
    frame = frame.merge(les, on="lesion_id", how="inner")
    if patients is not None and group_col in patients.columns:
        groups = patients.loc[:, ["patient_id", group_col]].astype({"patient_id": str})
        frame = frame.merge(groups.rename(columns={group_col: "treatment_group"}), on="patient_id", how="left")
    else:
        frame["treatment_group"] = pd.NA
    if frame.empty:
        raise DataError("no lesion of the parameter table is in the lesions table (check lesion ids)",
                        code="unknown-id")
    for name, (col, _, transform) in LESION_PARAMETERS.items():
        frame[f"{transform}_{name}"] = _normal_scale(frame[col], transform)
    frame["log_volume"] = _normal_scale(frame["baseline_volume_mm3"], "log")

    counts = frame["organ"].value_counts()
    small = sorted(counts[counts < min_lesions].index)
    organs = frame[~frame["organ"].isin(small)]
    stats_rows, dunn_rows = [], []
    agg: dict[str, Any] = {"n_lesions": ("lesion_id", "size")}
    for name in LESION_PARAMETERS:
        agg[f"{name}_median"] = (name, "median")
        agg[f"{name}_q25"] = (name, lambda s: s.quantile(0.25))
        agg[f"{name}_q75"] = (name, lambda s: s.quantile(0.75))
        if organs["organ"].nunique() >= 2:
            stats_rows.append({"parameter": name, **kruskal_wallis(organs, name, "organ").iloc[0].to_dict()})
            dunn_rows.append(dunn(organs, name, "organ", adjust=adjust).assign(parameter=name))
    by_organ = organs.groupby("organ").agg(**agg).reset_index()
    medians = organs.groupby("organ")[["log_kg", "log_kd", "logit_f", "log_volume"]].median()

    effects = []
    present = frame["treatment_group"].dropna().astype(str)
    if present.nunique() >= 2:
        ref = reference_group if reference_group in set(present) else present.value_counts().idxmax()
        base = frame[frame["treatment_group"].astype("string") == ref]
        for g in sorted(set(present) - {ref}):
            grp = frame[frame["treatment_group"].astype("string") == g]
            for name, x, y in (("depth", -grp["logit_f"], -base["logit_f"]), ("kg", grp["log_kg"], base["log_kg"]),
                               ("kd", grp["log_kd"], base["log_kd"])):
                mw = mann_whitney(x.to_numpy(), y.to_numpy()).iloc[0]
                effects.append({"parameter": name, "group": g, "reference": ref, "cohens_d": cohens_d(x, y),
                                "effect_size": mw["effect_size"], "p_value": mw["p_value"],
                                "n_group": int(mw["n_x"]), "n_reference": int(mw["n_y"])})
    return ParameterStatistics(
        lesions=frame,
        by_organ=by_organ,
        kruskal=pd.DataFrame(stats_rows, columns=["parameter", "statistic", "df", "p_value", "n", "n_groups"]),
        dunn=(pd.concat(dunn_rows, ignore_index=True)[["parameter", "group_a", "group_b", "p_adjusted"]]
              if dunn_rows else pd.DataFrame(columns=["parameter", "group_a", "group_b", "p_adjusted"])),
        organ_correlations=_correlations(medians),
        lesion_correlations=_correlations(frame),
        treatment_effects=pd.DataFrame(effects, columns=["parameter", "group", "reference", "cohens_d",
                                                         "effect_size", "p_value", "n_group", "n_reference"]),
        meta={"adjust": adjust, "min_lesions": min_lesions, "organs_left_out": small, "group_col": group_col},
    )

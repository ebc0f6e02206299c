"""Kaplan–Meier and log-rank comparisons as tidy tables (lifelines does the estimation).

Every function takes a DataFrame with a duration column, an event column (1/True = event) and an
optional group column, and returns tidy tables a report can draw. Medians come with their 95%
confidence interval (lifelines' exponential Greenwood interval of the survival curve, inverted).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import DataError
from .io import write_result_dir

ALL = "all"


def _prepare(frame: pd.DataFrame, duration: str, event: str, group: str | None) -> pd.DataFrame:
    missing = [c for c in (duration, event, group) if c is not None and c not in frame.columns]
    if missing:
        raise DataError(f"survival data: column(s) {', '.join(missing)} missing; columns are "
                        f"{', '.join(map(str, frame.columns))}", code="missing-column")
    out = pd.DataFrame({
        "duration": pd.to_numeric(frame[duration], errors="coerce"),
        "event": pd.to_numeric(frame[event].astype("Float64"), errors="coerce"),
        "group": frame[group].astype("string") if group is not None else ALL,
    })
    out = out.dropna(subset=["duration", "event", "group"])
    if (out["duration"] < 0).any():
        raise DataError(f"survival data: {int((out['duration'] < 0).sum())} negative value(s) in {duration}; "
                        "durations must be >= 0", code="negative")
    out["event"] = out["event"].astype(float) > 0
    if out.empty:
        raise DataError(f"survival data: no row has both {duration} and {event}", code="empty-table")
    return out


def _groups(data: pd.DataFrame) -> list[str]:
    return sorted(data["group"].unique(), key=str)


def km_curves(frame: pd.DataFrame, duration: str, event: str, group: str | None = None) -> pd.DataFrame:
    """Kaplan–Meier curves: ``group, time, survival, ci_lower, ci_upper, at_risk, events, censored``.

    One row per distinct time (starting at time 0 with survival 1) per group.
    """
    from lifelines import KaplanMeierFitter

    data = _prepare(frame, duration, event, group)
    rows = []
    for g in _groups(data):
        sub = data[data["group"] == g]
        km = KaplanMeierFitter().fit(sub["duration"], sub["event"])
        table = km.event_table
        ci = km.confidence_interval_survival_function_
        rows.append(pd.DataFrame({
            "group": g,
            "time": km.survival_function_.index.to_numpy(dtype=float),
            "survival": km.survival_function_.iloc[:, 0].to_numpy(),
            "ci_lower": ci.iloc[:, 0].to_numpy(),
            "ci_upper": ci.iloc[:, 1].to_numpy(),
            "at_risk": table["at_risk"].to_numpy(),
            "events": table["observed"].to_numpy(),
            "censored": table["censored"].to_numpy(),
        }))
    return pd.concat(rows, ignore_index=True)


def km_medians(frame: pd.DataFrame, duration: str, event: str, group: str | None = None) -> pd.DataFrame:
    """Median survival by group with its 95% CI: ``group, n, events, median, ci_lower, ci_upper``.

    A median (or CI end) that the curve never reaches is ``inf``.
    """
    from lifelines import KaplanMeierFitter
    from lifelines.utils import median_survival_times

    data = _prepare(frame, duration, event, group)
    rows = []
    for g in _groups(data):
        sub = data[data["group"] == g]
        km = KaplanMeierFitter().fit(sub["duration"], sub["event"])
        ci = median_survival_times(km.confidence_interval_)
        rows.append({"group": g, "n": len(sub), "events": int(sub["event"].sum()),
                     "median": float(km.median_survival_time_),
                     "ci_lower": float(ci.iloc[0, 0]), "ci_upper": float(ci.iloc[0, 1])})
    return pd.DataFrame(rows)


def logrank(frame: pd.DataFrame, duration: str, event: str, group: str) -> pd.DataFrame:
    """The log-rank test of equal survival across all groups: ``test, statistic, df, p_value``."""
    from lifelines.statistics import multivariate_logrank_test

    data = _prepare(frame, duration, event, group)
    n_groups = data["group"].nunique()
    if n_groups < 2:
        raise DataError(f"log-rank test: {group} has {n_groups} group(s); at least 2 are needed",
                        code="too-few-groups")
    res = multivariate_logrank_test(data["duration"], data["group"], data["event"])
    return pd.DataFrame([{"test": "log-rank", "statistic": float(res.test_statistic),
                          "df": int(res.degrees_of_freedom), "p_value": float(res.p_value)}])


def pairwise_logrank(frame: pd.DataFrame, duration: str, event: str, group: str,
                     adjust: str = "holm") -> pd.DataFrame:
    """Log-rank tests for every pair of groups, p-values adjusted for multiplicity.

    Columns ``group_a, group_b, statistic, p_value, p_adjusted``; ``adjust`` is a method of
    :func:`statsmodels.stats.multitest.multipletests` (``holm``, ``bonferroni``, ``fdr_bh``, ...).
    """
    from lifelines.statistics import logrank_test
    from statsmodels.stats.multitest import multipletests

    data = _prepare(frame, duration, event, group)
    groups = _groups(data)
    rows = []
    for i, a in enumerate(groups):
        for b in groups[i + 1:]:
            x, y = data[data["group"] == a], data[data["group"] == b]
            res = logrank_test(x["duration"], y["duration"], x["event"], y["event"])
            rows.append({"group_a": a, "group_b": b, "statistic": float(res.test_statistic),
                         "p_value": float(res.p_value)})
    out = pd.DataFrame(rows, columns=["group_a", "group_b", "statistic", "p_value"])
    out["p_adjusted"] = multipletests(out["p_value"], method=adjust)[1] if len(out) else []
    return out


def numbers_at_risk(frame: pd.DataFrame, duration: str, event: str, group: str | None = None,
                    times: Any = None) -> pd.DataFrame:
    """Patients still at risk at each of ``times`` (default: 0 and six evenly spaced times): ``group, time, at_risk``."""
    data = _prepare(frame, duration, event, group)
    if times is None:
        times = np.linspace(0, float(data["duration"].max()), 7).round()
    times = np.asarray(times, dtype=float)
    rows = [{"group": g, "time": t, "at_risk": int((data.loc[data["group"] == g, "duration"] >= t).sum())}
            for g in _groups(data) for t in times]
    return pd.DataFrame(rows)


@dataclass(frozen=True, eq=False)
class SurvivalComparison:
    """Kaplan–Meier curves, medians and log-rank tests of one outcome across groups."""

    outcome: str
    group: str
    curves: pd.DataFrame
    medians: pd.DataFrame
    logrank: pd.DataFrame
    pairwise: pd.DataFrame
    at_risk: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> pd.DataFrame:
        """Medians by group, with the overall log-rank p-value on every row."""
        out = self.medians.copy()
        out["logrank_p"] = float(self.logrank["p_value"].iloc[0]) if len(self.logrank) else np.nan
        return out

    def __repr__(self) -> str:
        p = self.logrank["p_value"].iloc[0] if len(self.logrank) else float("nan")
        return f"SurvivalComparison({self.outcome} by {self.group}: {len(self.medians)} groups, log-rank p = {p:.3g})"

    def plot_km(self, ax: Any = None, *, ci: bool = True, at_risk: bool = True) -> Any:
        """Kaplan–Meier curves by group, medians in the legend, numbers at risk under the axis."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6.5, 4.5))
        medians = self.medians.set_index("group")["median"]
        for g, sub in self.curves.groupby("group", sort=False):
            label = f"{g} (median {medians.get(g, np.nan):.0f})"
            line, = ax.step(sub["time"], sub["survival"], where="post", label=label)
            if ci:
                ax.fill_between(sub["time"], sub["ci_lower"], sub["ci_upper"], step="post",
                                alpha=0.15, color=line.get_color())
        ax.set_ylim(0, 1.02)
        ax.set_xlabel(f"{self.outcome} (days)")
        ax.set_ylabel("probability")
        if len(self.logrank):
            ax.set_title(f"log-rank p = {self.logrank['p_value'].iloc[0]:.3g}", fontsize=9, loc="right")
        ax.legend(fontsize=8, frameon=False)
        if at_risk and len(self.at_risk):
            table = self.at_risk.pivot(index="group", columns="time", values="at_risk")
            text = "\n".join(f"{g}: " + "  ".join(f"{v:d}" for v in row) for g, row in table.iterrows())
            ax.text(0, -0.28, "at risk at " + ", ".join(f"{t:.0f}" for t in table.columns) + "\n" + text,
                    transform=ax.transAxes, fontsize=7, va="top", family="monospace")
        return ax


def compare_survival(frame: pd.DataFrame, duration: str, event: str, group: str, *,
                     adjust: str = "holm", times: Any = None) -> SurvivalComparison:
    """Everything a Kaplan–Meier figure and its caption need, for ``duration``/``event`` by ``group``."""
    has_two = _prepare(frame, duration, event, group)["group"].nunique() >= 2
    return SurvivalComparison(
        outcome=duration,
        group=group,
        curves=km_curves(frame, duration, event, group),
        medians=km_medians(frame, duration, event, group),
        logrank=logrank(frame, duration, event, group) if has_two else
        pd.DataFrame(columns=["test", "statistic", "df", "p_value"]),
        pairwise=pairwise_logrank(frame, duration, event, group, adjust),
        at_risk=numbers_at_risk(frame, duration, event, group, times),
        meta={"adjust": adjust},
    )


@dataclass(frozen=True, eq=False)
class SurvivalTables:
    """Kaplan–Meier medians, log-rank tests, curves and numbers at risk of every comparison, as tidy tables.

    Every table starts with ``outcome`` (``os``, ``pfs``), ``comparison`` (``pattern_group``,
    ``any_low_high``, ``only_high_low``, ``treatment``, ``treatment_within_group``) and ``stratum``
    (``all``, or the pattern group within which treatments are compared), then the columns of
    :func:`lesionatlas.survival.compare_survival`'s tables. ``patients`` holds the per-patient input.
    """

    medians: pd.DataFrame
    logrank: pd.DataFrame
    pairwise: pd.DataFrame
    curves: pd.DataFrame
    at_risk: pd.DataFrame
    patients: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)

    #: group proportions by treatment (``counts``) and their chi-square test (``group_by_treatment``);
    #: Kruskal-Wallis and Dunn tests of the times to 1st and between successive progressions across
    #: groups, and across treatments within each group (``interval_tests``, ``interval_pairs``).
    group_counts: pd.DataFrame = field(default_factory=pd.DataFrame)
    group_by_treatment: pd.DataFrame = field(default_factory=pd.DataFrame)
    interval_tests: pd.DataFrame = field(default_factory=pd.DataFrame)
    interval_pairs: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: organ progression sequences (``liver > lung``) counted by treatment, with percentages per treatment
    sequences_by_treatment: pd.DataFrame = field(default_factory=pd.DataFrame)

    _TABLES = ("medians", "logrank", "pairwise", "curves", "at_risk", "patients", "group_counts",
               "group_by_treatment", "interval_tests", "interval_pairs", "sequences_by_treatment")

    def to_dir(self, path: str | Path) -> Path:
        return write_result_dir(path, {n: getattr(self, n) for n in self._TABLES},
                                {"schema": "lesionatlas.survival/1", **self.meta})

    @classmethod
    def from_dir(cls, path: str | Path) -> SurvivalTables:
        path = Path(path)
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        meta.pop("schema", None)
        return cls(**{n: pd.read_parquet(path / f"{n}.parquet") for n in cls._TABLES}, meta=meta)

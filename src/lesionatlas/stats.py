"""Group comparisons and correlations as tidy tables (scipy.stats and scikit-posthocs compute them)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .errors import DataError


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
    res = kruskal(*samples)
    return pd.DataFrame([{"statistic": float(res.statistic), "df": len(samples) - 1, "p_value": float(res.pvalue),
                          "n": len(data), "n_groups": len(samples)}])


def dunn(frame: pd.DataFrame, value: str, group: str, adjust: str = "holm") -> pd.DataFrame:
    """Dunn's pairwise test after Kruskal–Wallis: ``group_a, group_b, p_adjusted`` (scikit-posthocs)."""
    import scikit_posthocs as sp

    data = _clean(frame, value, group)
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

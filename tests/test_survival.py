from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import KaplanMeierFitter
from lifelines.statistics import multivariate_logrank_test

from lesionatlas.errors import DataError
from lesionatlas.survival import compare_survival, km_curves, km_medians, logrank, numbers_at_risk, pairwise_logrank


@pytest.fixture
def small():
    return pd.DataFrame({
        "os_days": [1, 2, 2, 3, 4, 5, 2, 6, 7, 8, 9, 9],
        "os_event": [1, 1, 0, 1, 0, 1, 1, 1, 0, 1, 1, 0],
        "arm": ["A"] * 6 + ["B"] * 6,
    })


def test_km_by_hand(small):
    a = small[small["arm"] == "A"]
    curve = km_curves(a, "os_days", "os_event").set_index("time")["survival"]
    # S(1) = 5/6, S(2) = 5/6 * 4/5, S(3) = S(2) * 2/3, S(5) = 0
    assert curve.loc[1.0] == pytest.approx(5 / 6)
    assert curve.loc[2.0] == pytest.approx(4 / 6)
    assert curve.loc[3.0] == pytest.approx(4 / 6 * 2 / 3)
    assert curve.loc[5.0] == pytest.approx(0.0)
    med = km_medians(a, "os_days", "os_event")
    assert med["median"].iloc[0] == 3.0
    assert med["events"].iloc[0] == 4 and med["n"].iloc[0] == 6


def _logrank_by_hand(t, e, g):
    """Two-group log-rank chi-square from its definition (sum of O - E over event times, hypergeometric variance)."""
    t, e, g = map(np.asarray, (t, e, g))
    o_minus_e = 0.0
    var = 0.0
    for s in np.unique(t[e == 1]):
        at_risk = t >= s
        n = at_risk.sum()
        n1 = (at_risk & (g == g[0])).sum()
        d = ((t == s) & (e == 1)).sum()
        d1 = ((t == s) & (e == 1) & (g == g[0])).sum()
        o_minus_e += d1 - d * n1 / n
        if n > 1:
            var += d * (n1 / n) * (1 - n1 / n) * (n - d) / (n - 1)
    return o_minus_e**2 / var


def test_logrank_by_hand(small):
    res = logrank(small, "os_days", "os_event", "arm")
    expected = _logrank_by_hand(small["os_days"], small["os_event"], small["arm"])
    assert res["statistic"].iloc[0] == pytest.approx(expected, rel=1e-10)
    assert res["df"].iloc[0] == 1


def test_equals_lifelines_on_simulated_data():
    rng = np.random.default_rng(4)
    n = 400
    grp = rng.choice(["x", "y", "z"], n)
    t = rng.exponential(np.where(grp == "x", 300, np.where(grp == "y", 450, 600)))
    c = rng.uniform(100, 900, n)
    df = pd.DataFrame({"d": np.minimum(t, c).round(), "e": (t <= c).astype(int), "g": grp})
    med = km_medians(df, "d", "e", "g").set_index("group")
    for g in "xyz":
        sub = df[df["g"] == g]
        assert med.loc[g, "median"] == KaplanMeierFitter().fit(sub["d"], sub["e"]).median_survival_time_
    ours = logrank(df, "d", "e", "g")["statistic"].iloc[0]
    assert ours == pytest.approx(multivariate_logrank_test(df["d"], df["g"], df["e"]).test_statistic)
    pw = pairwise_logrank(df, "d", "e", "g")
    assert len(pw) == 3 and (pw["p_adjusted"] >= pw["p_value"]).all()


def test_numbers_at_risk(small):
    nar = numbers_at_risk(small, "os_days", "os_event", "arm", times=[0, 3, 6])
    table = nar.pivot(index="group", columns="time", values="at_risk")
    assert table.loc["A"].tolist() == [6, 3, 0]
    assert table.loc["B"].tolist() == [6, 5, 5]  # durations 2, 6, 7, 8, 9, 9


def test_compare_and_plot(small, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    comp = compare_survival(small, "os_days", "os_event", "arm")
    assert set(comp.summary().columns) >= {"group", "median", "ci_lower", "ci_upper", "logrank_p"}
    assert "os_days by arm" in repr(comp)
    ax = comp.plot_km()
    ax.figure.savefig(tmp_path / "km.png")
    assert (tmp_path / "km.png").stat().st_size > 0


def test_errors(small):
    with pytest.raises(DataError, match="missing"):
        km_curves(small, "nope", "os_event")
    with pytest.raises(DataError, match="at least 2"):
        logrank(small.assign(arm="A"), "os_days", "os_event", "arm")
    bad = small.copy()
    bad.loc[0, "os_days"] = -1
    with pytest.raises(DataError, match="negative"):
        km_medians(bad, "os_days", "os_event")

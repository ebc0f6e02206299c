from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from lesionatlas.stats import cohens_d, dunn, kruskal_wallis, mann_whitney, pearson


@pytest.fixture
def groups():
    rng = np.random.default_rng(7)
    return pd.DataFrame({"v": np.r_[rng.normal(0, 1, 30), rng.normal(0.8, 1, 30), rng.normal(0, 1, 25)],
                         "g": ["a"] * 30 + ["b"] * 30 + ["c"] * 25})


def test_kruskal_matches_scipy(groups):
    res = kruskal_wallis(groups, "v", "g")
    ref = scipy.stats.kruskal(*(groups.loc[groups["g"] == k, "v"] for k in "abc"))
    assert res["statistic"].iloc[0] == pytest.approx(ref.statistic)
    assert res["df"].iloc[0] == 2 and res["n"].iloc[0] == 85


def test_dunn_pairs_and_signal(groups):
    res = dunn(groups, "v", "g").set_index(["group_a", "group_b"])
    assert len(res) == 3
    # b is shifted: a-b and b-c differ more than a-c
    assert res.loc[("a", "b"), "p_adjusted"] < res.loc[("a", "c"), "p_adjusted"]


def test_dunn_by_hand_two_groups():
    # Dunn's z for two groups without ties: (mean rank difference) / sqrt(N(N+1)/12 (1/n1 + 1/n2))
    df = pd.DataFrame({"v": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], "g": list("aaabbbb")})
    ranks = df["v"].rank()
    diff = ranks[df["g"] == "a"].mean() - ranks[df["g"] == "b"].mean()
    z = diff / np.sqrt(7 * 8 / 12 * (1 / 3 + 1 / 4))
    p = 2 * scipy.stats.norm.sf(abs(z))
    assert dunn(df, "v", "g", adjust="bonferroni")["p_adjusted"].iloc[0] == pytest.approx(p)


def test_mann_whitney_effect_size():
    res = mann_whitney(np.array([5.0, 6, 7]), np.array([1.0, 2, 3]))
    assert res["effect_size"].iloc[0] == pytest.approx(1.0)  # every x above every y
    assert res["statistic"].iloc[0] == 9.0


def test_cohens_d_by_hand():
    x, y = np.array([2.0, 4, 6]), np.array([1.0, 3, 5])
    assert cohens_d(x, y) == pytest.approx(1 / 2.0)


def test_pearson():
    rng = np.random.default_rng(1)
    x = rng.normal(size=50)
    y = 0.5 * x + rng.normal(size=50)
    res = pearson(x, np.r_[y[:-1], np.nan])
    assert res["n"].iloc[0] == 49
    ref = scipy.stats.pearsonr(x[:-1], y[:-1])
    assert res["r"].iloc[0] == pytest.approx(ref.statistic)
    assert res["ci_lower"].iloc[0] < res["r"].iloc[0] < res["ci_upper"].iloc[0]


def test_chi_square_matches_scipy_and_percentages():
    from lesionatlas.stats import chi_square

    df = pd.DataFrame({"group": list("aabbbcc" * 5), "arm": list("xyxyxyx" * 5)})
    counts, test = chi_square(df, "group", "arm")
    ref = scipy.stats.chi2_contingency(pd.crosstab(df["group"], df["arm"]).to_numpy())
    assert test["statistic"].iloc[0] == pytest.approx(ref.statistic)
    assert test["df"].iloc[0] == 2 and test["n"].iloc[0] == 35
    assert counts.groupby("arm")["percent_of_col"].sum().tolist() == pytest.approx([100.0, 100.0])

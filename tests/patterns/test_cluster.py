from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import KaplanMeierFitter

from lesionatlas.errors import ConfigError
from lesionatlas.patterns import (
    ProgressionPatterns,
    choose_k,
    cluster_sequences,
    kmeans_information_criteria,
    knee_point,
    subcluster_group,
)


def test_knee_on_a_hand_made_curve():
    assert knee_point([1, 2, 3, 4, 5, 6, 7, 8], [100, 50, 20, 17, 15, 14, 13, 12]) == 3
    assert knee_point([1, 2], [5, 1]) == 1  # too short: first point
    assert knee_point([1, 2, 3], [1, 1, 1]) == 1  # flat


def test_bic_formula_on_a_tiny_case():
    # 4 points in 2-D, one cluster at the origin; RSS = 8 -> sigma^2 = RSS / (n d) = 1
    x = np.array([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]])
    rss = float(((x - x.mean(axis=0)) ** 2).sum())
    aic, bic = kmeans_information_criteria(rss, n=4, d=2, k=1)
    m2ll = 8 * np.log(2 * np.pi) + 8  # -2 log L of N(0, I) at these points
    assert aic == pytest.approx(m2ll + 2 * 3)
    assert bic == pytest.approx(m2ll + 3 * np.log(4))
    # only differences matter: the short form n d log(RSS / nd) + k d log n differs by a constant in k
    _, bic2 = kmeans_information_criteria(2.0, n=4, d=2, k=2)
    assert bic2 - bic == pytest.approx((8 * np.log(2 / 8) + 4 * np.log(4)) - (8 * np.log(8 / 8) + 2 * np.log(4)))


def test_planted_groups_found_and_named(patterns5, planted):
    a = patterns5.assignments.merge(planted, on="patient_id")
    table = pd.crosstab(a["pattern"], a["group"])
    liver = a[a["group"] == "Liver-First"]
    mono = a[a["group"] == "Mono-Organ"]
    hetero = a[a["group"] == "Hetero-Organ"]
    assert len(liver) > 100 and (liver["pattern"] == "liver_first").mean() > 0.9, table
    assert len(mono) > 100 and (mono["pattern"] == "mono_organ").mean() > 0.9, table
    assert len(hetero) > 100 and (hetero["pattern"] == "hetero_organ").mean() > 0.9, table
    # patients without progression are reported, not clustered
    none = a[a["group"] == "No-Progression"]
    assert (none["pattern"] == "no_progression").all() and (none["cluster"] == -1).all()
    assert patterns5.meta["n_no_progression"] == len(none)
    assert patterns5.chosen_k == 5 and patterns5.rule == "forced"


def test_liver_first_os_is_worse(patterns5, sim):
    a = patterns5.assignments.merge(sim.cohort.patients[["patient_id", "os_days", "os_event"]].astype(
        {"patient_id": str}), on="patient_id")

    def median(g):
        s = a[a["group"] == g]
        return KaplanMeierFitter().fit(s["os_days"], s["os_event"].astype(bool)).median_survival_time_

    assert median("Liver-First") < median("Mono-Organ") - 50
    assert median("Hetero-Organ") < median("Mono-Organ") - 50


def test_selection_over_k_1_to_15_is_deterministic(sim, sequences):
    ids = sorted(sequences["patient_id"].astype(str).unique())[:400]
    seq = sequences[sequences["patient_id"].astype(str).isin(ids)]
    pats = sim.cohort.patients[sim.cohort.patients["patient_id"].astype(str).isin(ids)]
    a = cluster_sequences(seq, pats, k_max=15, seed=3)
    b = cluster_sequences(seq, pats, k_max=15, seed=3)
    assert a.equals(b)
    s = a.selection
    assert s["k"].tolist() == list(range(1, 16))
    assert np.isnan(s["silhouette"].iloc[0]) and np.isfinite(s["silhouette"].iloc[1:]).all()
    assert (np.diff(s["inertia"]) <= 1e-9 * s["inertia"].iloc[0]).all()
    assert np.isfinite(s["logrank_chi2"].iloc[1:]).all()
    assert a.chosen_k == choose_k(s, "elbow_survival")
    assert set(a.meta["choices"]) == {"elbow_survival", "knee", "silhouette", "bic", "aic", "logrank"}
    knee = a.meta["choices"]["knee"]
    assert knee <= a.chosen_k <= knee + 3
    # naming depends on content, not on labels: same names with the same seed
    assert a.naming["group"].tolist() == b.naming["group"].tolist()


def test_position_onehot_runs_and_names(sim, sequences):
    r = cluster_sequences(sequences, sim.cohort.patients, encoding="position_onehot", k=5, k_max=5)
    assert r.encoding["name"] == "position_onehot"
    assert len(r.naming) == 5 and r.naming["group"].is_unique
    assert any(g.startswith("Mono-Organ") for g in r.naming["group"])


def test_tables_and_round_trip(patterns5, tmp_path):
    p = patterns5
    assert list(p.assignments.columns) == ["patient_id", "cluster", "group", "n_progressed_organs", "first_organs"]
    assert p.naming["group"].is_unique
    assert set(p.heatmap.columns) == {"group", "position", "organ", "n_patients"}
    # heatmap position 1 counts = organs at position 1 = one per clustered patient
    assert p.heatmap.loc[p.heatmap["position"] == 1, "n_patients"].sum() == p.meta["n_clustered"]
    assert set(p.intervals["step"].head(3)) <= {"1st", "2nd-1st", "3rd-2nd"}
    assert (p.intervals["days"] >= 0).all()
    s = p.summary()
    assert list(s.columns) == ["group", "cluster", "n_patients", "share_mono", "share_hetero", "mean_n_organs",
                               "top_first_organ", "top_first_share", "rule"]
    assert s["n_patients"].sum() == len(p.assignments)
    assert "ProgressionPatterns(k=5" in repr(p)
    q = ProgressionPatterns.from_dir(p.to_dir(tmp_path / "patterns"))
    assert q.equals(p) and q.meta == p.meta


def test_plots(patterns5):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for f in (patterns5.plot_selection, patterns5.plot_heatmap, patterns5.plot_intervals):
        ax = f()
        assert ax is not None
        plt.close(ax.figure)


def test_hetero_subclusters_named_by_liver_rank(patterns5, sequences):
    sub = subcluster_group(patterns5, sequences, k=4)
    names = set(sub.naming["group"])
    assert len(names) == 4
    assert all(n.startswith(("Liver", "No Liver")) for n in names)
    assert "Liver 1st" in names
    hetero = set(patterns5.assignments.loc[patterns5.assignments["group"] == "Hetero-Organ", "patient_id"])
    assert set(sub.assignments["patient_id"]) == hetero


def test_bad_arguments(sequences):
    with pytest.raises(ConfigError, match="rule"):
        cluster_sequences(sequences, rule="gap")
    with pytest.raises(ConfigError, match="k = 0"):
        cluster_sequences(sequences, k=0)

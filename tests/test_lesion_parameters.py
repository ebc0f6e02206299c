"""Lesion growth parameters across organs and treatment groups (issue: lesion-parameter statistics)."""
from __future__ import annotations

import warnings

import matplotlib
import numpy as np
import pandas as pd
import pytest

from lesionatlas.data import simulate_cohort
from lesionatlas.errors import ConfigError, DataError
from lesionatlas.stats import lesion_parameter_statistics

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def sim_stats():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sim = simulate_cohort("mcrc", seed=0, n_patients=1500)
    return sim, lesion_parameter_statistics(sim.truth.table("lesions"), sim.cohort.lesions, sim.cohort.patients)


def test_planted_organ_differences_are_found(sim_stats):
    _, res = sim_stats
    assert (res.kruskal["p_value"] < 1e-6).all()
    by = res.by_organ.set_index("organ")
    # planted: bone and brain lesions hold larger resistant fractions and shrink more slowly than liver's
    assert by.loc["bone", "f_median"] > by.loc["liver", "f_median"]
    assert by.loc["brain_cns", "kd_median"] < by.loc["liver", "kd_median"]
    assert len(res.dunn) == len(res.kruskal) * len(by) * (len(by) - 1) // 2


def test_planted_treatment_effect_on_depth(sim_stats):
    _, res = sim_stats
    eff = res.treatment_effects.set_index("parameter")
    # antibody + chemo responds deeper than chemo alone (the simulator plants it, as in the paper)
    assert eff.loc["depth", "group"] == "antibody+chemo" and eff.loc["depth", "reference"] == "chemo"
    assert eff.loc["depth", "cohens_d"] > 0.1 and eff.loc["depth", "p_value"] < 1e-3


def test_organ_level_correlation_signs_match_the_paper(sim_stats):
    _, res = sim_stats
    corr = res.organ_correlations.set_index(["x", "y"])["r"]
    assert corr.loc[("logit_f", "log_kd")] < 0  # paper: F vs Kd r = -0.69
    assert corr.loc[("logit_f", "log_kg")] > 0  # paper: F vs Kg r = 0.53


def test_by_hand_small_case():
    params = pd.DataFrame({"lesion_id": [f"l{i}" for i in range(12)],
                           "kg": np.r_[np.full(6, 0.01), np.full(6, 0.001)],
                           "kd": np.linspace(0.01, 0.05, 12), "f": np.full(12, 0.1), "v0": 1000.0})
    lesions = pd.DataFrame({"lesion_id": params["lesion_id"], "patient_id": [f"p{i // 2}" for i in range(12)],
                            "organ": ["liver"] * 6 + ["lung"] * 6})
    res = lesion_parameter_statistics(params, lesions)
    by = res.by_organ.set_index("organ")
    assert by.loc["liver", "kg_median"] == 0.01 and by.loc["lung", "n_lesions"] == 6
    assert res.treatment_effects.empty  # no patients table: no treatment comparison
    kw = res.kruskal.set_index("parameter")
    assert kw.loc["kg", "p_value"] < 0.01
    assert np.isnan(kw.loc["f", "p_value"])  # F is the same for every lesion: the test is undefined


def test_small_organs_left_out_and_errors():
    params = pd.DataFrame({"lesion_id": ["a", "b", "c"], "kg": 0.01, "kd": 0.02, "f": 0.1})
    lesions = pd.DataFrame({"lesion_id": ["a", "b", "c"], "patient_id": "p", "organ": ["liver", "liver", "bone"]})
    res = lesion_parameter_statistics(params, lesions, min_lesions=2)
    assert res.meta["organs_left_out"] == ["bone"] and res.kruskal.empty
    with pytest.raises(DataError, match="missing"):
        lesion_parameter_statistics(params.drop(columns="kd"), lesions)
    with pytest.raises(DataError, match="lesion ids"):
        lesion_parameter_statistics(params.assign(lesion_id=["x", "y", "z"]), lesions)


def test_plots_and_files(sim_stats, tmp_path):
    _, res = sim_stats
    for p in ("kg", "kd", "f"):
        res.plot_boxes(p).figure.savefig(tmp_path / f"{p}.png")
    with pytest.raises(ConfigError):
        res.plot_boxes("v0")
    out = res.to_dir(tmp_path / "params")
    assert (out / "kruskal.csv").is_file() and (out / "treatment_effects.parquet").is_file()
    assert "lesions" in repr(res) and set(res.summary()["parameter"]) == {"kg", "kd", "f"}

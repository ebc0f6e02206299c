"""fit_organ_hazards / OrganHazards: planted-truth recovery on the simulator, selection, edge cases, API.

What the simulator plants (``lesionatlas.data.simulate``): organ log-hazard ratios (vs abdominal) and
covariate effects hold *exactly* for non-target lesions' response and progression hazards. Target lesions
carry the organ story only through their growth parameters, and new lesions enter the progression model
at the day they are seen, so the pooled models (the paper's) do not estimate the planted numbers. We test:

- exact recovery where the model is right: non-target response model, every planted log-HR within 3 SE
  and the sum of squared z-scores below the chi-square 99.9% point;
- direction/ranking for the pooled models: correlation across organs of estimated and planted log-HRs
  (response > 0.6, progression > 0.25; seed 0 gives 0.87 and 0.54) and the paper's phenotype anchors
  that the simulator's target-lesion story also reproduces: liver high-high, lung high-low, brain/CNS
  low-high, bone low on response. (Bone's pooled progression HR is below 1 on this cohort - its
  non-target lesions are few and its target lesions respond shallowly - so it is not asserted.)

One pooled result (800 patients, three candidates, stratified) is cached for the module (~20 s); the
other tests use small configurations.
"""
from __future__ import annotations

import dataclasses
import warnings

import matplotlib
import numpy as np
import pandas as pd
import pytest
import scipy.stats

from lesionatlas.data import simulate_cohort
from lesionatlas.errors import ConfigError, ExclusionWarning
from lesionatlas.events import derive_events
from lesionatlas.hazards import MixedCox, OrganHazards, fit_organ_hazards

matplotlib.use("Agg")

N_PATIENTS = 800


@pytest.fixture(scope="module")
def sim():
    return simulate_cohort("mcrc", seed=0, n_patients=N_PATIENTS)


@pytest.fixture(scope="module")
def events(sim):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exclusion notes of the event derivation are tested in tests/events
        ev = derive_events(sim.cohort, sim.truth.table("lesions"))
    table = ev.table.copy()
    rng = np.random.default_rng([7, 0])
    pids = table["patient_id"].unique()
    noise = dict(zip(pids, rng.normal(size=len(pids)), strict=True))
    table["noise"] = table["patient_id"].map(noise).astype(float)  # a patient covariate with no effect
    return dataclasses.replace(ev, table=table)


@pytest.fixture(scope="module")
def pooled(events):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fit_organ_hazards(events, candidates=("line", "treatment_group", "noise"),
                                   reference_levels={"treatment_group": "chemo"})
    return result, caught


def _log_hrs(result, truth, model):
    h = result.hazard_ratios
    h = h[(h["model"] == model) & ~h["reference"]].set_index("organ")
    return h[["coef", "se", "hazard_ratio"]].join(truth.set_index("organ")[f"{model}_log_hr"].rename("planted"),
                                                   how="inner")


# ============================================================================================ recovery
def test_pooled_fit_runs_clean(pooled):
    result, caught = pooled
    assert [str(w.message) for w in caught] == []
    assert result.reference_organ == "abdominal"
    assert result.dropped_organs.empty
    organs = set(result.hazard_ratios["organ"])
    assert len(organs) == 16


@pytest.mark.parametrize(("model", "minimum"), [("response", 0.6), ("progression", 0.25)])
def test_pooled_organ_hrs_follow_planted_direction(pooled, sim, model, minimum):
    result, _ = pooled
    j = _log_hrs(result, sim.truth.table("organ_hazards"), model)
    assert len(j) == 15
    r = np.corrcoef(j["coef"], j["planted"])[0, 1]
    assert r > minimum, f"{model}: correlation of estimated and planted log-HRs {r:.2f}"


def test_pooled_phenotype_anchors(pooled):
    result, _ = pooled
    w = result.phenotype_input().set_index("organ")
    assert w.loc["liver", "response_hr"] > 1 and w.loc["liver", "progression_hr"] > 1  # high-high
    assert w.loc["liver", "response_ci_lower"] > 1
    assert w.loc["lung", "response_hr"] > 1 and w.loc["lung", "progression_hr"] < 1  # high-low
    assert w.loc["brain_cns", "response_hr"] < 1 and w.loc["brain_cns", "progression_hr"] > 1  # low-high
    assert w.loc["bone", "response_ci_upper"] < 1  # low response
    ref = w.loc["abdominal"]
    assert ref["response_hr"] == 1 and ref["progression_hr"] == 1 and np.isnan(ref["response_ci_lower"])


def test_nontarget_response_recovers_planted_hrs_exactly(events, sim):
    """Non-target lesions follow the planted proportional hazards: estimates agree within sampling error."""
    nt = dataclasses.replace(events, table=events.table[events.table["kind"] == "nontarget"].reset_index(drop=True))
    result = fit_organ_hazards(nt, candidates=(), stratify_by=None, models=("response",), organ_p_value="lrt")
    j = _log_hrs(result, sim.truth.table("organ_hazards"), "response")
    z = (j["coef"] - j["planted"]) / j["se"]
    assert len(z) == 15
    assert z.abs().max() < 3.0
    assert (z**2).sum() < scipy.stats.chi2.ppf(0.999, len(z))
    # planted frailty variance 0.5: the estimate is in the right range
    assert 0.2 < result.random_effect_variance["response"] < 1.2
    # organ_p_value="lrt": one LRT per organ, close to the Wald p-values on this scale
    hr = result.hazard_ratios[~result.hazard_ratios["reference"]]
    wald = 2 * scipy.stats.norm.sf(np.abs(hr["coef"] / hr["se"]))
    assert np.all((hr["p_value"] > 0) & (hr["p_value"] <= 1))
    assert np.corrcoef(np.log(hr["p_value"]), np.log(wald))[0, 1] > 0.95


# ============================================================================================ selection
def test_selection_keeps_planted_and_drops_noise(pooled, sim):
    result, _ = pooled
    for model in ("response", "progression"):
        assert "line" in result.selected[model]
        assert "noise" not in result.selected[model]
    assert "treatment_group" in result.selected["progression"]
    steps = result.selection_steps
    noise = steps[steps["term"] == "noise"]
    assert (noise["decision"] == "not added").all() and (noise["p_value"] > 0.05).all()
    added = steps[steps["decision"] == "added"]
    assert (added["p_value"] < 0.05).all() and (added["df"] == 1).all()
    # signs of the planted effects (truth covariate_effects: line[2] -0.30 response, +0.30 progression;
    # antibody + chemo -0.35 on progression)
    cov = result.covariates.set_index(["model", "term"])["coef"]
    assert cov[("response", "line")] < 0 < cov[("progression", "line")]
    assert cov[("progression", "treatment_group[antibody+chemo]")] < 0
    planted = sim.truth.table("covariate_effects")
    assert set(planted["term"]) >= {"line[2]", "treatment_group[antibody+chemo]"}


def test_backward_selection_and_determinism(events):
    kw = dict(candidates=("line", "noise", "sex"), selection="backward", stratify_by=None, models=("progression",))
    first = fit_organ_hazards(events, **kw)
    second = fit_organ_hazards(events, **kw)
    assert first.equals(second)
    pd.testing.assert_frame_equal(first.hazard_ratios, second.hazard_ratios)
    assert first.selected["progression"] == ("line",)
    steps = first.selection_steps
    assert set(steps.loc[steps["decision"] == "removed", "term"]) == {"noise", "sex"}
    assert (steps.loc[steps["decision"] == "removed", "p_value"] >= 0.05).all()
    last = steps[steps["step"] == steps["step"].max()]
    assert list(last["decision"]) == ["kept"] and last["p_value"].iloc[0] < 0.05


def test_unusable_candidates_are_skipped_with_a_note(events):
    table = events.table.assign(constant=1.0, age=events.table["age"].where(events.table.index % 3 != 0))
    ev = dataclasses.replace(events, table=table)
    result = fit_organ_hazards(ev, candidates=("bsa", "constant", "age"), stratify_by=None, models=("response",))
    steps = result.selection_steps
    skipped = steps[steps["decision"] == "skipped"]
    assert set(skipped["term"]) == {"bsa", "constant"}  # bsa is all missing in the mcrc preset
    assert any("'bsa' skipped" in n for n in result.notes)
    # age has a third of its values missing: its LRT compares both models on the complete rows only
    age = steps[steps["term"] == "age"]
    assert age["n_lesions"].iloc[0] == int(ev.model_table("response")["age"].notna().sum())
    # the final (organ-only) model keeps every row
    assert result.models["n_lesions"].iloc[0] == len(ev.model_table("response"))


# ============================================================================================ edge cases
def test_nested_candidates_treatment_and_group(events):
    """treatment_group is a function of treatment: backward selection cannot start with both (collinear),
    and within a group the treatment's overall reference level may be absent (it then takes the
    stratum's most frequent level)."""
    result = fit_organ_hazards(events, candidates=("treatment", "treatment_group"), selection="backward",
                               models=("response",))
    steps = result.selection_steps
    bad = steps[steps["decision"] == "not estimable"]
    assert bad["term"].tolist() == ["treatment_group"] and "collinear" in bad["reason"].iloc[0]
    assert result.selected["response"] == ("treatment",)
    assert steps.loc[steps["term"] == "treatment", "df"].iloc[0] == 6  # 7 treatments: a block of 6 terms
    assert set(result.stratified["group"]) == {"chemo", "antibody+chemo"}
    assert any("reference level of treatment is not in the stratum" in n for n in result.notes)


def test_stratum_leaves_out_covariates_collinear_there(events):
    """In the simulator (as in the demo cohort) the line of therapy is a function of the treatment within
    antibody + chemo (panitumumab + FOLFIRI is the only second-line regimen there) but not within chemo.
    With both selected on the whole cohort, the antibody + chemo model leaves out the one selected later,
    says so, and is the plain fit of organ + the other on that group's rows; chemo keeps both.
    alpha = 0.9999 makes the forward selection take both candidates whatever their p-values."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fit_organ_hazards(events, candidates=("treatment", "line"), alpha=0.9999, models=("response",))
    assert not [str(w.message) for w in caught if "could not be fitted" in str(w.message)]
    first, second = result.selected["response"]
    assert {first, second} == {"treatment", "line"}
    st = result.stratified
    assert set(st["group"]) == {"chemo", "antibody+chemo"}
    left_out = st.groupby("group")["covariates_left_out"].agg(set)
    assert left_out["antibody+chemo"] == {second} and left_out["chemo"] == {""}
    covs = result.models.set_index("stratum")["covariates"]
    assert covs["antibody+chemo"] == first and covs["chemo"] == f"{first};{second}"
    assert any(f"covariate {second!r} is left out" in n and "collinear" in n for n in result.notes)

    # the same model fitted directly on the group's rows (treatment's reference: the group's most
    # frequent regimen, as the stratified fit takes it when the overall reference is absent)
    table = events.model_table("response")
    rows = table[(table["treatment_group"] == "antibody+chemo").to_numpy(bool)]
    rows = rows.assign(organ=rows["organ"].astype(str), line=rows["line"].astype(float),
                       treatment=rows["treatment"].astype(str), event=rows["event"].astype(float))
    categorical = {"organ": "abdominal"}
    if first == "treatment":
        counts = rows["treatment"].value_counts()
        categorical["treatment"] = sorted(counts.index, key=lambda v: (-int(counts[v]), v))[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        direct = MixedCox(profile_ci=False).fit(rows, "duration_day", "event", "patient_id",
                                                [] if first == "treatment" else [first], categorical)
    s = direct.summary().set_index("term")
    ours = st[(st["group"] == "antibody+chemo") & ~st["reference"]].set_index("organ")
    assert len(ours) == int(s.index.str.startswith("organ[").sum())
    for organ, row in ours.iterrows():
        # same data, same model: the same optimum up to the variance search's tolerance
        assert row["coef"] == pytest.approx(s.loc[f"organ[{organ}]", "coef"], abs=1e-3 * row["se"])


def test_organ_without_events_and_missing_reference(events):
    table = events.table.copy()
    spleen = (table["organ"] == "spleen").to_numpy()
    table.loc[spleen, "progression_event"] = False
    table.loc[spleen, "progression_day"] = table.loc[spleen, "last_day"]
    table.loc[table["organ"] == "abdominal", "organ"] = "abdominal_wall"
    ev = dataclasses.replace(events, table=table)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fit_organ_hazards(ev, candidates=(), stratify_by=None)
    messages = [str(w.message) for w in caught if issubclass(w.category, ExclusionWarning)]
    assert any("reference organ 'abdominal' has no lesions" in m and "'liver'" in m for m in messages)
    assert any("spleen" in m and "no progression events" in m for m in messages)
    assert len(caught) == 2
    assert result.reference_organ == "liver"
    hr = result.hazard_ratios
    assert "spleen" not in set(hr.loc[hr["model"] == "progression", "organ"])
    assert "spleen" in set(hr.loc[hr["model"] == "response", "organ"])
    assert result.dropped_organs[["model", "organ", "n_events"]].values.tolist() == [["progression", "spleen", 0]]
    assert "spleen" not in set(result.phenotype_input()["organ"])
    assert hr.loc[hr["organ"] == "liver", "hazard_ratio"].eq(1).all()


def test_bad_arguments(events):
    with pytest.raises(ConfigError, match="not columns"):
        fit_organ_hazards(events, candidates=("shoe_size",))
    with pytest.raises(ConfigError, match="selection"):
        fit_organ_hazards(events, selection="stepwise")
    with pytest.raises(ConfigError, match="alpha"):
        fit_organ_hazards(events, alpha=1.5)
    with pytest.raises(ConfigError, match="stratify_by"):
        fit_organ_hazards(events, stratify_by="arm")
    with pytest.raises(ConfigError, match="reference_levels"):
        fit_organ_hazards(events, candidates=("sex",), reference_levels={"sex": "X"}, stratify_by=None)


# ============================================================================================ result API
def test_tables_and_stratified(pooled):
    result, _ = pooled
    hr = result.hazard_ratios
    assert list(hr.columns[:8]) == ["model", "organ", "hazard_ratio", "ci_lower", "ci_upper", "p_value",
                                    "n_lesions", "n_events"]
    assert (hr.loc[hr["reference"], "organ"] == "abdominal").all() and hr["reference"].sum() == 2
    ok = hr[~hr["reference"]]
    assert ((ok["ci_lower"] < ok["hazard_ratio"]) & (ok["hazard_ratio"] < ok["ci_upper"])).all()
    # response leaves out new lesions
    n = result.models.set_index(["model", "stratum"])["n_lesions"]
    assert n[("response", "all")] < n[("progression", "all")]
    st = result.stratified
    assert set(st["group"]) == {"chemo", "antibody+chemo"}
    for model in ("response", "progression"):
        for group in ("chemo", "antibody+chemo"):
            part = st[(st["model"] == model) & (st["group"] == group)]
            assert part.loc[part["reference"], "hazard_ratio"].tolist() == [1.0]
        # the strata split the pooled rows
        assert n[(model, "chemo")] + n[(model, "antibody+chemo")] == n[(model, "all")]
    tests = result.organ_tests.set_index(["model", "test"])
    for model in ("response", "progression"):
        assert tests.loc[(model, "organ"), "p_value"] < 1e-6
        inter = tests.loc[(model, "organ:treatment_group")]
        assert inter["df"] > 0 and 0 <= inter["p_value"] <= 1
    re = result.random_effect_variance
    assert set(re) == {"response", "progression"} and all(0 < v < 5 for v in re.values())
    s = result.summary()
    assert list(s.columns) == ["model", "kind", "term", "hazard_ratio", "ci_lower", "ci_upper", "p_value",
                               "n_lesions", "n_events"]
    assert set(s["kind"]) == {"organ", "covariate"}
    assert "OrganHazards" in repr(result) and "<p>" in result._repr_html_()


def test_phenotype_input_feeds_classify_organs(pooled):
    from lesionatlas.phenotypes import classify_organs

    result, _ = pooled
    table = result.phenotype_input()
    phen = classify_organs(table, reference=result.reference_organ)
    assert phen.table.set_index("organ").loc["liver", "phenotype"] == "high-high"


def test_round_trip(pooled, tmp_path):
    result, _ = pooled
    path = result.to_dir(tmp_path / "organ_hazards")
    assert (path / "hazard_ratios.csv").is_file() and (path / "meta.json").is_file()
    back = OrganHazards.from_dir(path)
    assert back.equals(result)
    assert back.notes == result.notes and back.parameters == result.parameters
    assert set(back.fits) == {"response", "progression"}
    pd.testing.assert_frame_equal(back.fits["response"].summary(), result.fits["response"].summary())


def test_plots_return_axes(pooled):
    import matplotlib.pyplot as plt

    result, _ = pooled
    for model in ("response", "progression"):
        ax = result.plot_forest(model)
        assert isinstance(ax, matplotlib.axes.Axes)
        assert ax.get_xscale() == "log"
        assert any("abdominal" in t.get_text() and "reference" in t.get_text() for t in ax.get_yticklabels())
        ax2 = result.plot_stratified(model)
        assert isinstance(ax2, matplotlib.axes.Axes)
        assert "interaction" in ax2.get_title()
    with pytest.raises(ConfigError):
        result.plot_forest("survival")
    plt.close("all")


def test_progress_counts_every_fit():
    from lesionatlas.data import simulate_cohort
    from lesionatlas.events import derive_events
    from lesionatlas.hazards import fit_organ_hazards

    sim = simulate_cohort("mcrc", seed=3, n_patients=150)
    ev = derive_events(sim.cohort, sim.truth.table("lesions"))
    seen: list[int] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit_organ_hazards(ev, candidates=("line",), stratify_by=None, progress=seen.append)
    assert seen == list(range(1, len(seen) + 1)) and len(seen) >= 4  # 2 models: candidate LRT + final fits

"""The Figure 2 section of the report (lesion growth parameters by organ) and the TGI diagnostics section."""
from __future__ import annotations

import math
import re
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from lesionatlas import pipeline
from lesionatlas.data.organs import ORGAN_LABELS
from lesionatlas.report.document import Facts, Figure, Note, Table
from lesionatlas.report.sections import growth as section
from lesionatlas.stats import cohens_d, format_p, lesion_parameter_statistics, mann_whitney
from lesionatlas.tgi import TGIFit
from fakes import FakeRun

MONOLIX_ROWS = ["kg_pop", "kd_pop", "f_pop", "omega_kg", "omega_kd", "omega_f", "b"]


@pytest.fixture(scope="module")
def run(base_run):
    return pipeline.open_run(base_run)


@pytest.fixture(scope="module")
def built(run):
    return section.build(run)


@pytest.fixture(scope="module")
def stats(run):
    """The statistics computed directly with the stats function, independently of the section."""
    fit, events = run.load("tgi"), run.load("events")
    return lesion_parameter_statistics(fit.individual, events.table, events.patients,
                                       group_col="treatment_group", reference_group="chemo")


def _blocks(sec, kind) -> Any:
    found = [b for b in sec.blocks if isinstance(b, kind)]
    return {b.name: b for b in found} if kind in (Figure, Table) else found


def _has_data(ax) -> bool:
    return bool(ax.lines or ax.collections or ax.patches or ax.images)


# ------------------------------------------------------------------------------------------ whole sections
def test_builder_on_base_run(built):
    growth, diagnostics = built
    assert (growth.id, growth.title) == ("growth", "Figure 2 — Lesion growth dynamics by organ")
    assert (diagnostics.id, diagnostics.title) == ("tgi-diagnostics", "Tumour growth model: fit and diagnostics")
    figures = _blocks(growth, Figure)
    assert set(figures) == {"fig2a_model_schematic", "fig2b_parameters_by_organ", "fig2c_organ_correlations",
                            "fig2c_lesion_correlations", "fig2d_treatment_effects"}
    assert set(_blocks(growth, Table)) == {"table2_tgi_fit", "table2_tgi_fit_statistics", "table2_organ_medians",
                                           "table2_parameter_correlations", "table2_treatment_effects", "table2_dunn"}
    diag_figures = _blocks(diagnostics, Figure)
    assert set(diag_figures) == {"tgi_observed_vs_predicted", "tgi_residuals", "tgi_vpc", "tgi_vpc_conditional",
                                 "tgi_saem_trajectories", "tgi_individual_fits"}
    for fig in [*figures.values(), *diag_figures.values()]:
        visible = [ax for ax in fig.figure.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]
        assert visible and all(_has_data(ax) for ax in visible), fig.name
        width, _ = fig.figure.get_size_inches()
        assert 6 <= width <= 11, fig.name
    assert not [n for n in growth.blocks + diagnostics.blocks if isinstance(n, Note) and n.kind != "info"]
    assert _blocks(growth, Facts) and _blocks(diagnostics, Facts)


def test_fig2b_shows_the_kruskal_wallis_p_of_the_stats_function(built, stats):
    fig = _blocks(built[0], Figure)["fig2b_parameters_by_organ"].figure
    axes = fig.axes
    assert len(axes) == 3
    kw = stats.kruskal.set_index("parameter")["p_value"]
    for ax, parameter in zip(axes, ("kd", "f", "kg")):
        shown = ax.get_title(loc="right")
        assert shown == f"Kruskal–Wallis {format_p(kw[parameter])}"
        assert re.fullmatch(r"Kruskal–Wallis p (=|<) [\d.e+-]+", shown)
        # organs ordered by median (lowest first), each with its number of lesions
        by = stats.by_organ.sort_values(f"{parameter}_median", kind="stable")
        labels = [t.get_text() for t in ax.get_xticklabels()]
        assert labels == [f"{ORGAN_LABELS.get(o, o)} ({n:,})" for o, n in zip(by["organ"], by["n_lesions"])]
        medians = [ln.get_ydata()[0] for ln in ax.lines if ln.get_color() == "black" and ln.get_linestyle() == "-"]
        assert np.allclose(medians, by[f"{parameter}_median"])
    table = _blocks(built[0], Table)["table2_organ_medians"].frame
    last = table.iloc[-1]
    assert last["organ"] == "Kruskal–Wallis p"
    for parameter in ("kd", "f", "kg"):
        assert last[f"{parameter}_median"] == pytest.approx(kw[parameter], rel=1e-12)
    assert table["n_lesions"].iloc[:-1].sum() == last["n_lesions"] == stats.by_organ["n_lesions"].sum()


def test_fit_tables_have_the_seven_monolix_rows(built, run):
    fit = run.load("tgi")
    tables = _blocks(built[0], Table)
    frame = tables["table2_tgi_fit"].frame
    assert frame["parameter"].tolist() == MONOLIX_ROWS
    assert list(frame.columns) == ["parameter", "meaning", "estimate", "se", "rse_percent", "ci_lower", "ci_upper"]
    assert np.array_equal(frame["estimate"].to_numpy(), fit.population["estimate"].to_numpy())
    assert frame["meaning"].str.len().gt(0).all()
    stats_table = tables["table2_tgi_fit_statistics"].frame.set_index("quantity")["value"]
    assert stats_table["SAEM iterations"] == fit.diagnostics["n_iterations"]
    assert stats_table["Markov chains per lesion"] == fit.diagnostics["n_chains"]
    assert stats_table["fit time (s)"] == fit.diagnostics["seconds"]
    for name in ("Kg", "Kd", "F"):
        key = "f" if name == "F" else name.lower()
        assert stats_table[f"η-shrinkage of {name}, conditional mode (%)"] == \
            fit.diagnostics["shrinkage_mode_percent"][key]
    for name in ("−2 log-likelihood (importance sampling)", "AIC", "BIC"):
        assert name in stats_table.index
    if fit.loglik is None:  # the quick config draws no importance samples
        assert stats_table["AIC"].startswith("not computed")
    else:
        assert stats_table["BIC"] == f"{fit.bic:,.1f}"


def test_fit_statistics_with_a_likelihood(run):
    fit = run.load("tgi")
    with_ll = TGIFit(**{k: getattr(fit, k) for k in ("spec", "seed", "population", "individual", "trace",
                                                     "n_lesions", "n_obs", "diagnostics", "observations")},
                     loglik=-1234.5)
    table = section.fit_statistics(with_ll).set_index("quantity")["value"]
    assert table["−2 log-likelihood (importance sampling)"] == "2,469.0"
    assert table["AIC"] == "2,483.0"
    assert table["BIC"] == f"{2469.0 + 7 * math.log(fit.n_lesions):,.1f}"


# ------------------------------------------------------------------------------------------ figures
def test_schematic_draws_the_population_model(run, built):
    fit = run.load("tgi")
    pop = fit.population.set_index("parameter")["estimate"]
    ax = _blocks(built[0], Figure)["fig2a_model_schematic"].figure.axes[0]
    texts = " ".join(t.get_text() for t in ax.texts)
    assert f"Kg = {pop['kg_pop']:.3g} /day" in texts and f"Kd = {pop['kd_pop']:.3g} /day" in texts
    assert f"F = {pop['f_pop']:.3g}" in texts
    assert r"$t \geq 0:\ V(t) = V_0\,e^{-K_g T_0}" in texts  # the formula, as mathtext
    total = next(ln for ln in ax.lines if ln.get_label() == "V(t) after treatment start")
    t, v = total.get_xdata(), total.get_ydata()
    expected = pop["f_pop"] * np.exp(pop["kg_pop"] * t) + (1 - pop["f_pop"]) * np.exp(-pop["kd_pop"] * t)
    assert v[0] == pytest.approx(1.0) and np.allclose(v, expected)


def test_correlation_figures_show_the_stats_r(built, stats):
    figures = _blocks(built[0], Figure)
    for name, table in (("fig2c_organ_correlations", stats.organ_correlations),
                        ("fig2c_lesion_correlations", stats.lesion_correlations)):
        axes = [ax for ax in figures[name].figure.axes if ax.get_label() != "<colorbar>"]
        assert len(axes) == len(section.CORRELATION_PAIRS)
        for ax, (x, y) in zip(axes, section.CORRELATION_PAIRS):
            row = table[((table["x"] == x) & (table["y"] == y)) | ((table["x"] == y) & (table["y"] == x))].iloc[0]
            assert f"r = {row['r']:.2f}, {format_p(row['p_value'])}" in ax.get_title()
    organ_ax = figures["fig2c_organ_correlations"].figure.axes[0]
    assert len(organ_ax.collections[0].get_offsets()) == len(stats.by_organ)  # one dot per organ


def test_treatment_effects_by_organ(stats, built):
    effects = section.treatment_effects_by_organ(stats)
    overall = effects[effects["organ"] == "all"].set_index("parameter")
    reference = stats.treatment_effects.set_index("parameter")
    for name in ("depth", "kg", "kd"):
        assert overall.loc[name, "cohens_d"] == pytest.approx(reference.loc[name, "cohens_d"], rel=1e-12)
        assert overall.loc[name, "p_value"] == pytest.approx(reference.loc[name, "p_value"], rel=1e-12)
    # one organ by hand
    lesions = stats.lesions
    organ = stats.by_organ.sort_values("n_lesions").iloc[-1]["organ"]
    in_organ = lesions[lesions["organ"] == organ]
    x = in_organ.loc[in_organ["treatment_group"] == "antibody+chemo", "log_kg"].to_numpy(float)
    y = in_organ.loc[in_organ["treatment_group"] == "chemo", "log_kg"].to_numpy(float)
    row = effects[(effects["organ"] == organ) & (effects["parameter"] == "kg")].iloc[0]
    assert row["cohens_d"] == pytest.approx(cohens_d(x, y))
    assert row["p_value"] == pytest.approx(mann_whitney(x, y).iloc[0]["p_value"])
    assert row["ci_lower"] < row["cohens_d"] < row["ci_upper"]
    assert effects.groupby(["organ", "parameter"]).size().max() == 1  # two groups: one row each
    # the figure prints these p-values
    fig = _blocks(built[0], Figure)["fig2d_treatment_effects"].figure
    printed = {t.get_text() for t in fig.axes[0].texts}
    depth = effects[effects["parameter"] == "depth"]
    assert {format_p(p).replace("p = ", "") for p in depth["p_value"]} <= printed
    assert len(fig.axes[0].get_yticklabels()) == depth["organ"].nunique()


# ------------------------------------------------------------------------------------------ missing inputs
def test_skipped_when_the_tgi_stage_did_not_run():
    fake = FakeRun({}, {"tgi": ("skipped", "no patient was selected")})
    growth, diagnostics = section.build(fake)
    assert (growth.id, diagnostics.id) == ("growth", "tgi-diagnostics")
    for sec in (growth, diagnostics):
        assert len(sec.blocks) == 1 and sec.blocks[0].kind == "skipped"
        assert "tgi" in sec.blocks[0].text and "no patient was selected" in sec.blocks[0].text
    not_run = section.build(FakeRun({}, {"tgi": ("not run", "")}))
    assert "earlier stage failed" in not_run[0].blocks[0].text


def test_no_treatment_group_leaves_fig2d_out_with_a_note(run):
    events = run.load("events")
    plain = SimpleNamespace(table=events.table.drop(columns="treatment_group"),
                            patients=events.patients.drop(columns="treatment_group"))
    growth, _ = section.build(FakeRun({"tgi": run.load("tgi"), "events": plain}, {}))
    figures, tables = _blocks(growth, Figure), _blocks(growth, Table)
    assert "fig2d_treatment_effects" not in figures and "table2_treatment_effects" not in tables
    assert "fig2b_parameters_by_organ" in figures
    notes = [n.text for n in _blocks(growth, Note)]
    assert any("No treatment comparison" in n and "treatment_group" in n for n in notes)


def test_falls_back_to_the_selected_cohort_then_skips(run):
    fit, selection = run.load("tgi"), run.load("select")
    growth, _ = section.build(FakeRun({"tgi": fit, "select": selection},
                                      {"events": ("skipped", "no events")}))
    assert "fig2b_parameters_by_organ" in _blocks(growth, Figure)
    growth, diagnostics = section.build(FakeRun({"tgi": fit}, {"events": ("failed", "boom"),
                                                               "select": ("failed", "boom")}))
    assert set(_blocks(growth, Figure)) == {"fig2a_model_schematic"}
    assert set(_blocks(growth, Table)) == {"table2_tgi_fit", "table2_tgi_fit_statistics"}
    skipped = [n for n in _blocks(growth, Note) if n.kind == "skipped"]
    assert len(skipped) == 1 and "events" in skipped[0].text and "boom" in skipped[0].text
    assert "tgi_vpc" in _blocks(diagnostics, Figure)


def test_diagnostics_on_a_fit_read_back_and_without_observations(run):
    fit = TGIFit.from_dir(run.out / "tgi")  # what run.load gives
    sec = section._diagnostics_section(fit)
    vpc = _blocks(sec, Figure)["tgi_vpc"].figure
    assert any(len(c.get_offsets()) == fit.n_obs for c in vpc.axes[0].collections)  # every observation drawn
    trace = _blocks(sec, Figure)["tgi_saem_trajectories"].figure
    assert sorted(ax.get_title() for ax in trace.axes if ax.get_visible()) == sorted(MONOLIX_ROWS)
    npde = fit.residuals()["npde"]
    facts = dict(_blocks(sec, Facts)[0].items)
    assert facts["mean NPDE (expected 0)"] == f"{npde.mean():.3f}"
    bare = TGIFit(**{k: getattr(fit, k) for k in ("spec", "seed", "population", "individual", "trace", "loglik",
                                                  "n_lesions", "n_obs", "diagnostics")})
    sec = section._diagnostics_section(bare)
    assert not _blocks(sec, Figure) and _blocks(sec, Note)[0].kind == "warning"


def test_organ_tables(built, stats):
    tables = _blocks(built[0], Table)
    medians = tables["table2_organ_medians"].frame
    assert list(medians.columns[:3]) == ["organ", "n_lesions", "kd_median"]
    assert medians["n_lesions"].iloc[:-1].is_monotonic_decreasing
    correlations = tables["table2_parameter_correlations"].frame
    assert set(correlations["level"]) == {"organ medians", "lesions"}
    assert len(correlations) == len(stats.organ_correlations) + len(stats.lesion_correlations)
    dunn = tables["table2_dunn"].frame
    assert len(dunn) == len(stats.dunn) and set(dunn.columns) == {"parameter", "organ_a", "organ_b", "p_adjusted"}
    assert isinstance(dunn, pd.DataFrame) and dunn["organ_a"].isin(ORGAN_LABELS.values()).all()

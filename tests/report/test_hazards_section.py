"""The Figure 3 section of the report: organ hazard ratios (3a, 3b), phenotypes (3c, 3d), strata (3e, 3f)."""
from __future__ import annotations

import dataclasses
import re
from typing import Any

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb

from lesionatlas import pipeline
from lesionatlas.data.organs import ORGAN_GROUPS, ORGAN_LABELS
from lesionatlas.phenotypes import ORGAN_POSITIONS, PHENOTYPE_COLORS, classify_organs, plot_anatomy
from lesionatlas.report.document import Facts, Figure, Note, Table, new_figure
from lesionatlas.report.sections import hazards as section
from fakes import FakeRun


@pytest.fixture(scope="module")
def run(base_run):
    return pipeline.open_run(base_run)


@pytest.fixture(scope="module")
def built(run):
    sections = section.build(run)
    assert len(sections) == 1
    return sections[0]


def _blocks(sec, kind) -> Any:
    """Figures and tables by name; notes and facts as a list."""
    found = [b for b in sec.blocks if isinstance(b, kind)]
    return {b.name: b for b in found} if kind in (Figure, Table) else found


def _gid(ax, gid: str) -> Any:
    found = [c for c in ax.collections if c.get_gid() == gid] + [ln for ln in ax.lines if ln.get_gid() == gid]
    assert len(found) == 1, f"no single artist with gid {gid!r}"
    return found[0]


def _organ_of_label(label: str) -> str:
    """The organ code of a forest-plot tick label such as 'Lymph node (distal) (n=1,234)'."""
    name = re.sub(r" \((reference, )?n=[\d,]+\)$", "", label)
    codes = {v: k for k, v in ORGAN_LABELS.items()}
    return codes.get(name, name)


# ------------------------------------------------------------------------------------------ the whole section
def test_builder_on_base_run(run, built):
    oh = run.load("hazards")
    assert built.id == "hazards" and built.title == "Figure 3 — Organ-specific response and progression"
    figures = _blocks(built, Figure)
    expected = {"fig3a_response_hazard_ratios", "fig3b_progression_hazard_ratios", "fig3c_phenotype_quadrant",
                "fig3d_anatomical_chart"}
    for m, letter in (("response", "e"), ("progression", "f")):
        if (oh.stratified["model"] == m).any():
            expected.add(f"fig3{letter}_{m}_by_treatment")
    assert set(figures) == expected
    assert len(expected) == 6  # the quick demo config stratifies by treatment group
    tables = _blocks(built, Table)
    assert {"table3_response_hazard_ratios", "table3_progression_hazard_ratios", "table3_organ_tests",
            "table3_selection_steps", "table3_models", "table3_phenotypes",
            "table3_stratified_hazard_ratios"} <= set(tables)
    assert ("table3_covariates" in tables) == bool(len(oh.covariates))
    for fig in figures.values():
        assert fig.title.startswith("Figure 3") and fig.caption
        w, h = fig.figure.get_size_inches()
        assert 6 <= w <= 11 and h <= 11
        axes = fig.figure.axes
        assert axes and all(ax.collections or ax.lines for ax in axes)
        fig.figure.draw_without_rendering()
        sizes = [t.get_fontsize() for ax in axes for t in ax.texts + ax.get_xticklabels() + ax.get_yticklabels()
                 if t.get_text()]
        assert min(sizes) >= 8
    # the facts are the pooled models'
    facts = dict(_blocks(built, Facts)[0].items)
    pooled = oh.models[oh.models["stratum"] == "all"].set_index("model")
    for m in ("response", "progression"):
        assert facts[f"{m}: lesions / events"] == f"{pooled.loc[m, 'n_lesions']:,} / {pooled.loc[m, 'n_events']:,}"
    assert facts["reference organ"] == ORGAN_LABELS[oh.reference_organ]
    assert not [n for n in _blocks(built, Note) if n.kind == "skipped"]


def test_whole_report_page_renders(built, tmp_path):
    from lesionatlas.report.document import render_html

    page = render_html([built], title="t", figures_dir=tmp_path)
    assert 'id="hazards"' in page and "fig3a_response_hazard_ratios" in page
    assert (tmp_path / "fig3d_anatomical_chart.svg").is_file()


# ------------------------------------------------------------------------------------------ Fig. 3a, 3b
@pytest.mark.parametrize("model", ["response", "progression"])
def test_forest_values_equal_the_hazard_ratio_table(run, model):
    oh = run.load("hazards")
    table = oh.hazard_ratios[oh.hazard_ratios["model"] == model].set_index("organ")
    fig = section.forest_figure(oh, model)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    ticks = {float(t): _organ_of_label(lab.get_text()) for t, lab in zip(ax.get_yticks(), ax.get_yticklabels())}
    assert set(ticks.values()) == set(table.index)
    # the estimates with intervals: points and bars
    container = ax.containers[0]
    xs, ys = container.lines[0].get_data()
    segments = container.lines[2][0].get_segments()
    assert len(xs) == len(table) - int(table["reference"].sum())
    for x, y, seg in zip(xs, ys, segments, strict=True):
        row = table.loc[ticks[float(y)]]
        assert x == pytest.approx(row["hazard_ratio"], rel=1e-12)
        assert (seg[0][0], seg[1][0]) == pytest.approx((row["ci_lower"], row["ci_upper"]), rel=1e-12)
    # the reference organ at 1, labelled so
    ref = oh.reference_organ
    assert any("reference" in lab.get_text() and _organ_of_label(lab.get_text()) == ref
               for lab in ax.get_yticklabels())
    diamonds = [ln for ln in ax.lines if ln.get_marker() == "D"]
    assert diamonds and diamonds[0].get_xdata()[0] == 1.0
    # the printed HR (CI) and p of each row
    texts = [t for t in ax.texts]
    by_y: dict[float, list[str]] = {}
    for t in texts:
        by_y.setdefault(float(t.get_position()[1]), []).append(t.get_text())
    for y, organ in ticks.items():
        row = table.loc[organ]
        printed = by_y[y]
        if row["reference"]:
            assert "1 (reference)" in printed
            continue
        assert f"{row['hazard_ratio']:.2f} ({row['ci_lower']:.2f}–{row['ci_upper']:.2f})" in printed
        p_text = [s for s in printed if "(" not in s][0]
        assert float(p_text) == pytest.approx(row["p_value"], rel=0.06)
    # the p-value of the organ block in the caption is the LRT of the organ_tests table
    test = oh.organ_tests[(oh.organ_tests["model"] == model) & (oh.organ_tests["test"] == "organ")].iloc[0]
    block = _blocks(section.build(FakeRun({"hazards": oh}, {"phenotypes": ("skipped", "x")}))[0], Figure)
    caption = block[f"fig3{'a' if model == 'response' else 'b'}_{model}_hazard_ratios"].caption
    m = re.search(r"χ² = ([\d.]+) on (\d+) df, p = ([\de.+-]+)\.", caption)
    assert m and float(m.group(1)) == pytest.approx(test["lrt_statistic"], abs=0.05)
    assert int(m.group(2)) == int(test["df"])
    assert float(m.group(3)) == pytest.approx(test["p_value"], rel=0.06)


def test_hazard_ratio_tables_hold_the_stage_values(run, built):
    oh = run.load("hazards")
    tables = _blocks(built, Table)
    for m in ("response", "progression"):
        t = tables[f"table3_{m}_hazard_ratios"].frame
        assert list(t.columns) == ["organ", "hazard_ratio", "ci_lower", "ci_upper", "p_value", "n_lesions",
                                   "n_events", "reference"]
        src = oh.hazard_ratios[oh.hazard_ratios["model"] == m]
        assert t["hazard_ratio"].is_monotonic_decreasing
        merged = t.assign(code=[_organ_of_label(o) for o in t["organ"]]).merge(src, left_on="code",
                                                                               right_on="organ")
        assert len(merged) == len(src)
        np.testing.assert_allclose(merged["hazard_ratio_x"], merged["hazard_ratio_y"])
        assert (merged["n_events_x"] == merged["n_events_y"]).all()
    models = tables["table3_models"].frame
    assert {"random_effect_variance", "n_patients", "n_events", "loglik_integrated"} <= set(models.columns)
    assert len(models) == len(oh.models)
    steps = tables["table3_selection_steps"].frame
    pd.testing.assert_frame_equal(steps, oh.selection_steps[list(steps.columns)].reset_index(drop=True))


# ------------------------------------------------------------------------------------------ Fig. 3c, 3d
def test_phenotype_colours_match_the_phenotype_table(run, built):
    ph = run.load("phenotypes")
    t = ph.table
    quadrant = _blocks(built, Figure)["fig3c_phenotype_quadrant"].figure.axes[0]
    dots = _gid(quadrant, "organs")
    np.testing.assert_allclose(dots.get_offsets(), t[["response_hr", "progression_hr"]].to_numpy(float))
    for rgba, phenotype in zip(dots.get_facecolors(), t["phenotype"], strict=True):
        assert tuple(rgba[:3]) == pytest.approx(to_rgb(PHENOTYPE_COLORS[phenotype]))
    assert quadrant.get_xscale() == "log" and quadrant.get_yscale() == "log"
    labels = {a.get_text() for a in quadrant.texts}
    assert all(any(lab.startswith(ORGAN_LABELS.get(o, o)) for lab in labels) for o in t["organ"])

    anatomy = _blocks(built, Figure)["fig3d_anatomical_chart"].figure.axes[0]
    dots = _gid(anatomy, "organs")
    placed = [o for o in t["organ"] if ORGAN_POSITIONS.get(o) is not None]
    phen = dict(zip(t["organ"], t["phenotype"]))
    np.testing.assert_allclose(dots.get_offsets(), [ORGAN_POSITIONS[o] for o in placed])
    for rgba, organ in zip(dots.get_facecolors(), placed, strict=True):
        assert tuple(rgba[:3]) == pytest.approx(to_rgb(PHENOTYPE_COLORS[phen[organ]]))
    # dot areas follow the lesion counts of the progression model
    counts = section.lesion_counts(run.load("hazards"))
    sizes = dots.get_sizes()
    biggest = max(placed, key=lambda o: counts[o])
    assert sizes[placed.index(biggest)] == sizes.max()
    # organs without a place ("other") are listed beside the body
    beside = [o for o in t["organ"] if ORGAN_POSITIONS.get(o) is None]
    legend_texts = [x.get_text() for leg in anatomy.get_children() if type(leg).__name__ == "Legend"
                    for x in leg.get_texts()]
    for o in beside:
        assert any(x.startswith(ORGAN_LABELS.get(o, o)) for x in legend_texts)
    table = _blocks(built, Table)["table3_phenotypes"].frame
    assert sorted(table["phenotype"]) == sorted(t["phenotype"])
    assert set(table["n_lesions"]) <= set(counts.values())


@pytest.mark.parametrize("threshold", ["reference", "median"])
def test_quadrant_lines_sit_at_the_threshold(run, threshold):
    oh = run.load("hazards")
    inputs = oh.phenotype_input()
    ph = classify_organs(inputs, threshold, reference=oh.reference_organ)
    ax = section.quadrant_figure(ph, section.lesion_counts(oh)).axes[0]
    vline, hline = _gid(ax, "response-threshold"), _gid(ax, "progression-threshold")
    if threshold == "reference":
        expect_r = expect_p = 1.0
    else:
        expect_r = float(np.exp(np.median(np.log(inputs["response_hr"]))))
        expect_p = float(np.exp(np.median(np.log(inputs["progression_hr"]))))
    assert vline.get_xdata()[0] == pytest.approx(expect_r) and hline.get_ydata()[0] == pytest.approx(expect_p)
    # the thresholds and every dot are inside the axes
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    assert x0 < expect_r < x1 and y0 < expect_p < y1
    assert ((inputs["response_hr"] > x0) & (inputs["response_hr"] < x1)).all()
    assert ((inputs["progression_hr"] > y0) & (inputs["progression_hr"] < y1)).all()


def test_configured_threshold_reaches_the_figure(run, built):
    ph = run.load("phenotypes")
    assert ph.threshold == run.config.phenotypes.threshold
    ax = _blocks(built, Figure)["fig3c_phenotype_quadrant"].figure.axes[0]
    assert _gid(ax, "response-threshold").get_xdata()[0] == ph.response_threshold
    assert _gid(ax, "progression-threshold").get_ydata()[0] == ph.progression_threshold


def test_every_organ_of_the_vocabulary_has_a_place_or_is_listed():
    assert set(ORGAN_GROUPS) <= set(ORGAN_POSITIONS)
    assert [o for o in ORGAN_GROUPS if ORGAN_POSITIONS[o] is None] == ["other"]
    for x, y in (p for p in ORGAN_POSITIONS.values() if p is not None):
        assert 0.15 < x < 0.85 and 0 < y < 1
    # an organ group of a user's own organ map is listed beside the body, not dropped
    _, ax = new_figure(10, 6)
    plot_anatomy({"liver": "high-high", "made_up_site": "low-low", "other": "high-low"}, sizes={
        "liver": 10, "made_up_site": 3, "other": 2}, ax=ax)
    assert len(_gid(ax, "organs").get_offsets()) == 1
    texts = [x.get_text() for leg in ax.get_children() if type(leg).__name__ == "Legend" for x in leg.get_texts()]
    assert "made_up_site (n=3)" in texts and "Other (n=2)" in texts


# ------------------------------------------------------------------------------------------ skipped and missing
def test_skipped_note_when_hazards_did_not_run():
    fake = FakeRun({}, {"hazards": ("skipped", "12 patient(s) have a lesion response or progression"),
                        "phenotypes": ("not run", "")})
    (sec,) = section.build(fake)
    assert sec.id == "hazards"
    assert not _blocks(sec, Figure) and not _blocks(sec, Table)
    notes = [n for n in _blocks(sec, Note) if n.kind == "skipped"]
    assert len(notes) == 2
    assert "hazards" in notes[0].text and "12 patient(s)" in notes[0].text
    assert "phenotypes" in notes[1].text and "not run" in notes[1].text


def test_skipped_note_when_phenotypes_did_not_run(run):
    fake = FakeRun({"hazards": run.load("hazards")},
                   {"phenotypes": ("failed", "the hazards stage has not both models")})
    (sec,) = section.build(fake)
    figures = _blocks(sec, Figure)
    assert "fig3a_response_hazard_ratios" in figures and "fig3c_phenotype_quadrant" not in figures
    assert "fig3d_anatomical_chart" not in figures and "table3_phenotypes" not in _blocks(sec, Table)
    notes = [n.text for n in _blocks(sec, Note) if n.kind == "skipped"]
    assert notes == ["The phenotypes stage did not run on these data: the hazards stage has not both models"]


def test_note_instead_of_stratified_figures_when_there_are_no_strata(run):
    oh = run.load("hazards")
    bare = dataclasses.replace(oh, stratified=oh.stratified.iloc[0:0],
                               organ_tests=oh.organ_tests[oh.organ_tests["test"] == "organ"],
                               parameters={**oh.parameters, "stratify_by": None})
    (sec,) = section.build(FakeRun({"hazards": bare, "phenotypes": run.load("phenotypes")}, {}))
    figures = _blocks(sec, Figure)
    assert not [n for n in figures if n.startswith(("fig3e", "fig3f"))]
    assert "table3_stratified_hazard_ratios" not in _blocks(sec, Table)
    assert any("No treatment-stratified" in n.text and "stratify_by" in n.text for n in _blocks(sec, Note))


def test_p_value_that_underflowed_is_shown_as_a_bound(run):
    oh = run.load("hazards")
    tests = oh.organ_tests.copy()
    tests.loc[tests["test"] == "organ", "p_value"] = 0.0
    (sec,) = section.build(FakeRun({"hazards": dataclasses.replace(oh, organ_tests=tests)},
                                   {"phenotypes": ("skipped", "x")}))
    assert "p < 1e-300" in _blocks(sec, Figure)["fig3a_response_hazard_ratios"].caption
    assert dict(_blocks(sec, Facts)[0].items)["response: organ effect, LRT p"] == "< 1e-300"

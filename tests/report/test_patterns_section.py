"""The report's Fig. 4 (progression patterns) and Fig. 5 (survival by pattern, phenotype and treatment) sections."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest

from lesionatlas import pipeline
from lesionatlas.report.document import Figure, Note, Table, new_figure
from lesionatlas.report.sections import patterns as section
from lesionatlas.stats import chi_square, kruskal_wallis
from lesionatlas.survival import logrank


# ----------------------------------------------------------------------------------------------- helpers
@dataclass
class _Stage:
    name: str
    status: str
    reason: str = ""
    seconds: float | None = None
    warnings: tuple[str, ...] = ()


class _PartialRun:
    """A finished run seen with some stages marked as not run, or some results replaced."""

    def __init__(self, run: Any, missing: dict[str, str] | None = None, replace: dict[str, Any] | None = None):
        self._run, self._missing, self._replace = run, missing or {}, replace or {}
        self.out, self.config, self.stages = run.out, run.config, run.stages

    def __getitem__(self, name: str) -> Any:
        if name in self._missing:
            return _Stage(name, "skipped", self._missing[name])
        return self._run[name]

    def load(self, name: str) -> Any:
        if name in self._missing:
            return None
        return self._replace[name] if name in self._replace else self._run.load(name)


@pytest.fixture(scope="module")
def run(base_run):
    return pipeline.open_run(base_run)


@pytest.fixture(scope="module")
def built(run):
    sections = section.build(run)
    yield {s.id: s for s in sections}
    for s in sections:
        for b in s.blocks:
            if isinstance(b, Figure):
                b.figure.clear()


def _figure(sec, name):
    found = [b for b in sec.blocks if isinstance(b, Figure) and b.name == name]
    assert found, f"{name} not in {[b.name for b in sec.blocks if isinstance(b, Figure)]}"
    return found[0].figure


def _table(sec, name):
    found = [b for b in sec.blocks if isinstance(b, Table) and b.name == name]
    assert found, f"{name} not in {[b.name for b in sec.blocks if isinstance(b, Table)]}"
    return found[0].frame


def _texts(fig) -> list[str]:
    out = [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text") and callable(a.get_text))]
    return out + [t.get_text() for ax in fig.axes for t in ax.get_xticklabels()]


def _axes(fig, label):
    return [ax for ax in fig.axes if ax.get_label() == label]


# ----------------------------------------------------------------------------------------------- units
def test_format_p_and_median_text():
    assert section.format_p(0.03431) == "p = 0.0343"
    assert section.format_p(3.124e-12) == "p = $3.1\\times10^{-12}$"
    assert section.format_p(9.96e-6) == "p = $1.0\\times10^{-5}$"
    assert section.format_p(float("nan")) == "p = n/a"
    assert section.format_p(2.5e-7, plain=True) == "p = 2.5e-07"
    assert section.median_text(327.0, 278.0, 405.0) == "327 d [278–405]"
    assert section.median_text(674.0, 509.0, np.inf) == "674 d [509–NR]"
    assert section.median_text(np.inf, 509.0, np.inf).startswith("not reached")


def test_draw_km_draws_the_table_it_is_given():
    curves = pd.DataFrame({"group": ["a"] * 4 + ["b"] * 3, "time": [0, 10, 20, 30, 0, 5, 40],
                           "survival": [1, 0.8, 0.5, 0.5, 1, 0.6, 0.3], "ci_lower": [1, .6, .3, .3, 1, .4, .1],
                           "ci_upper": [1, .9, .7, .7, 1, .8, .5], "censored": [0, 0, 0, 2, 0, 1, 0]})
    at_risk = pd.DataFrame({"group": ["a", "a", "b", "b"], "time": [0.0, 20.0, 0.0, 20.0], "at_risk": [5, 2, 4, 1]})
    medians = pd.DataFrame({"group": ["a", "b"], "n": [5, 4], "median": [20.0, np.inf], "ci_lower": [10.0, 5.0],
                            "ci_upper": [np.inf, np.inf]})
    lr = pd.DataFrame({"p_value": [0.0123]})
    fig, [(ax, risk)] = section.km_figure(1)
    section.draw_km(ax, {"curves": curves, "at_risk": at_risk, "medians": medians, "logrank": lr}, risk_ax=risk)
    lines = {ln.get_gid(): ln for ln in ax.get_lines() if ln.get_gid()}
    assert set(lines) == {"a", "b"}
    np.testing.assert_array_equal(lines["b"].get_xdata(), [0, 5, 40])
    np.testing.assert_array_equal(lines["b"].get_ydata(), [1, 0.6, 0.3])
    assert lines["a"].get_drawstyle() == "steps-post"
    ticks = [ln for ln in ax.get_lines() if ln.get_marker() == "|"]  # censoring ticks at a's day 30, b's day 5
    assert sorted(float(ln.get_xdata()[0]) for ln in ticks) == [5.0, 30.0]
    legend = ax.get_legend()
    assert legend.get_title().get_text().endswith("log-rank p = 0.0123")
    entries = [t.get_text() for t in legend.get_texts()]
    assert entries == ["a (n = 5): 20 d [10–NR]", "b (n = 4): not reached [5–NR]"]
    shown = {t.get_gid(): t.get_text() for t in risk.texts if t.get_gid()}
    assert shown == {"a|0": "5", "a|20": "2", "b|0": "4", "b|20": "1"}
    assert list(ax.get_xticks()) == [0.0, 20.0]


def test_draw_interval_boxes_puts_the_p_value_under_each_step():
    data = pd.DataFrame({"group": ["x"] * 6 + ["y"] * 6, "step": ["1st"] * 3 + ["2nd-1st"] * 3 + ["1st"] * 6,
                         "step_index": [1] * 3 + [2] * 3 + [1] * 6, "days": np.arange(12.0) + 1})
    tests = pd.DataFrame({"step": ["1st"], "p_value": [0.0456]})
    fig, ax = new_figure()
    section.draw_interval_boxes(ax, data, "group", ["x", "y"], {"x": "red", "y": "blue"}, tests=tests)
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["1st\nKW p = 0.0456", "2nd-1st"]
    assert len(ax.patches) == 3  # x: two steps, y: one


# ----------------------------------------------------------------------------------------------- full builder
def test_build_on_base_run_gives_both_sections(run, built):
    assert list(built) == ["patterns", "survival"]
    assert built["patterns"].title == "Figure 4 — Organ progression sequences and patterns"
    assert built["survival"].title == "Figure 5 — Survival by pattern, phenotype and treatment"
    figs4 = [b.name for b in built["patterns"].blocks if isinstance(b, Figure)]
    assert figs4 == ["fig4a_sequences_by_patient", "fig4a_sequence_counts", "figS7_choice_of_k",
                     "fig4b_survival_by_group", "fig4c_intervals_by_group"]
    figs5 = [b.name for b in built["survival"].blocks if isinstance(b, Figure)]
    expected = ["fig5a_os_by_treatment_within_group", "fig5b_group_proportions_by_treatment",
                "fig5c_sequences_by_treatment", "fig5f_intervals_by_treatment_within_group"]
    if run["phenotypes"].status == "done":
        expected.append("figS5_os_by_phenotype")
    expected.append("survival_by_treatment")
    assert figs5 == expected
    for sec in built.values():
        assert not [b for b in sec.blocks if isinstance(b, Note) and b.kind in ("skipped", "warning")]
        for b in sec.blocks:
            if isinstance(b, Figure):
                w, h = b.figure.get_size_inches()
                assert 6.0 <= w <= 11.0 and h > 1.5, (b.name, w, h)
                visible = [ax for ax in b.figure.axes if ax.get_visible()]
                assert visible, b.name
                for ax in visible:
                    if ax.get_label().startswith("at-risk"):
                        assert ax.texts, b.name
                    else:
                        assert ax.lines or ax.images or ax.patches or ax.collections, (b.name, ax.get_title())
            if isinstance(b, Table):
                assert len(b.frame), b.name
                assert all(" " not in str(c) for c in b.frame.columns), b.name


def test_group_table_matches_the_patterns_stage(run, built):
    patterns = run.load("patterns")
    groups = _table(built["patterns"], "table4_groups")
    sizes = patterns.assignments["group"].value_counts()
    assert dict(zip(groups["group"], groups["n_patients"])) == {g: int(n) for g, n in sizes.items()}
    assert groups["percent"].sum() == pytest.approx(100.0)
    k = _table(built["patterns"], "table4_choice_of_k")
    assert k.loc[k["chosen"], "k"].tolist() == [patterns.chosen_k]
    assert k["inertia"].tolist() == patterns.selection.sort_values("k")["inertia"].tolist()


def test_km_step_curves_equal_the_curves_table(run, built):
    survival = run.load("survival")
    fig = _figure(built["patterns"], "fig4b_survival_by_group")
    for outcome in ("os", "pfs"):
        [ax] = _axes(fig, f"km:{outcome}")
        curves = survival.curves[(survival.curves["outcome"] == outcome)
                                 & (survival.curves["comparison"] == "pattern_group")]
        lines = {ln.get_gid(): ln for ln in ax.get_lines() if ln.get_gid()}
        assert set(lines) == set(curves["group"].astype(str))
        for g, sub in curves.groupby("group"):
            np.testing.assert_array_equal(lines[str(g)].get_xdata(), sub["time"].to_numpy())
            np.testing.assert_array_equal(lines[str(g)].get_ydata(), sub["survival"].to_numpy())
            assert lines[str(g)].get_drawstyle() == "steps-post"


def test_at_risk_numbers_equal_the_at_risk_table(run, built):
    survival = run.load("survival")
    fig = _figure(built["patterns"], "fig4b_survival_by_group")
    for outcome in ("os", "pfs"):
        [risk] = _axes(fig, f"at-risk:{outcome}")
        shown = {t.get_gid(): int(t.get_text().replace(",", "")) for t in risk.texts if t.get_gid()}
        table = survival.at_risk[(survival.at_risk["outcome"] == outcome)
                                 & (survival.at_risk["comparison"] == "pattern_group")]
        expected = {f"{g}|{float(t):g}": int(n) for g, t, n in zip(table["group"], table["time"], table["at_risk"])}
        assert shown == expected


def test_medians_and_logrank_shown_equal_the_survival_tables(run, built):
    survival = run.load("survival")
    fig = _figure(built["patterns"], "fig4b_survival_by_group")
    [ax] = _axes(fig, "km:os")
    legend = ax.get_legend()
    entries = [t.get_text() for t in legend.get_texts()]
    med = survival.medians[(survival.medians["outcome"] == "os") & (survival.medians["comparison"] == "pattern_group")]
    for _, row in med.iterrows():
        text = section.median_text(row["median"], row["ci_lower"], row["ci_upper"])
        assert f"{row['group']} (n = {int(row['n']):,}): {text}" in entries
    # the p-value printed is the survival stage's, and the log-rank test on the same patients gives it again
    p_table = survival.logrank[(survival.logrank["outcome"] == "os")
                               & (survival.logrank["comparison"] == "pattern_group")]["p_value"].iloc[0]
    p_again = logrank(survival.patients, "os_days", "os_event", "pattern_group")["p_value"].iloc[0]
    assert p_again == pytest.approx(p_table, rel=1e-9)
    assert legend.get_title().get_text().endswith(f"log-rank {section.format_p(p_again)}")
    shown = _table(built["patterns"], "table4_survival_medians")
    os_rows = shown[shown["outcome"] == "OS"].set_index("group")
    for _, row in med.iterrows():
        assert os_rows.loc[row["group"], "median_days"] == row["median"]
        assert os_rows.loc[row["group"], "ci_lower_days"] == row["ci_lower"]
        assert os_rows.loc[row["group"], "logrank_p"] == p_table


def test_within_group_panels_show_each_groups_logrank(run, built):
    survival = run.load("survival")
    fig = _figure(built["survival"], "fig5a_os_by_treatment_within_group")
    titles = [ax.get_legend().get_title().get_text() for ax in _axes(fig, "km:os")]
    lr = survival.logrank[(survival.logrank["outcome"] == "os")
                          & (survival.logrank["comparison"] == "treatment_within_group")]
    assert len(titles) == len(lr)
    for _, row in lr.iterrows():
        assert f"{row['stratum']} — log-rank {section.format_p(row['p_value'])}" in titles


def test_interval_p_values_equal_kruskal_wallis(run, built):
    patterns = run.load("patterns")
    fig = _figure(built["patterns"], "fig4c_intervals_by_group")
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    first = patterns.intervals[patterns.intervals["step"] == "1st"]
    p = kruskal_wallis(first, "days", "group")["p_value"].iloc[0]
    assert f"1st\nKW {section.format_p(p)}" in labels
    dunn = _table(built["patterns"], "table4_dunn_intervals")
    assert set(dunn["step"]) <= set(patterns.intervals["step"])
    assert (dunn["significant"] == (dunn["p_adjusted"] < 0.05)).all()


def test_group_proportions_show_the_chi_square_test(run, built):
    survival = run.load("survival")
    fig = _figure(built["survival"], "fig5b_group_proportions_by_treatment")
    pats = survival.patients[survival.patients["pattern_group"].notna()
                             & (survival.patients["pattern_group"] != "No-Progression")]
    arm = "treatment_group" if "treatment_group" in pats else "treatment"
    _, test = chi_square(pats, "pattern_group", arm)
    assert fig.axes[0].get_title().endswith(section.format_p(test["p_value"].iloc[0]))
    widths = {p.get_gid(): p.get_width() for p in fig.axes[0].patches if p.get_gid()}
    counts = survival.group_counts
    for _, row in counts.iterrows():
        assert widths[f"{row[arm]}|{row['pattern_group']}"] == pytest.approx(row["percent_of_col"])


def test_sequences_by_treatment_are_the_top_ten(run, built):
    survival = run.load("survival")
    table = _table(built["survival"], "table5_sequences_by_treatment")
    seq = survival.sequences_by_treatment
    top = seq.groupby("sequence")["n"].sum().sort_values(ascending=False, kind="stable").index[:10]
    assert table["sequence"].tolist() == list(top)
    fig = _figure(built["survival"], "fig5c_sequences_by_treatment")
    assert len(fig.axes[0].patches) == len(top) * seq.iloc[:, 0].nunique()


# ----------------------------------------------------------------------------------------------- stages missing
def test_skipped_notes_when_patterns_and_survival_did_not_run(run):
    fake = _PartialRun(run, missing={"patterns": "only 3 patient(s) have an organ progression",
                                     "survival": "no survival data: no patient has os_days"})
    sections = {s.id: s for s in section.build(fake)}
    for sid, stage, reason in (("patterns", "patterns", "only 3 patient(s)"), ("survival", "survival", "no survival")):
        blocks = sections[sid].blocks
        assert len(blocks) == 1 and isinstance(blocks[0], Note) and blocks[0].kind == "skipped"
        assert f"The {stage} stage did not run" in blocks[0].text and reason in blocks[0].text


def test_survival_missing_keeps_the_pattern_figures(run):
    fake = _PartialRun(run, missing={"survival": "no survival data"})
    sec = {s.id: s for s in section.build(fake)}["patterns"]
    names = [b.name for b in sec.blocks if isinstance(b, Figure)]
    assert "fig4b_survival_by_group" not in names
    assert {"fig4a_sequences_by_patient", "fig4c_intervals_by_group"} <= set(names)
    assert any(isinstance(b, Note) and b.kind == "skipped" and "survival" in b.text for b in sec.blocks)


def test_patterns_missing_keeps_the_treatment_and_phenotype_curves(run):
    fake = _PartialRun(run, missing={"patterns": "too few patients"})
    sec = {s.id: s for s in section.build(fake)}["survival"]
    names = [b.name for b in sec.blocks if isinstance(b, Figure)]
    assert "survival_by_treatment" in names
    assert "fig5f_intervals_by_treatment_within_group" not in names
    assert any(isinstance(b, Note) and b.kind == "skipped" and "too few patients" in b.text for b in sec.blocks)


def test_no_treatment_column_leaves_the_treatment_figures_out(run):
    survival = run.load("survival")
    keep = ~survival.medians["comparison"].isin(["treatment", "treatment_within_group"])
    cut = {n: getattr(survival, n)[~getattr(survival, n)["comparison"].isin(["treatment", "treatment_within_group"])]
           for n in ("medians", "logrank", "pairwise", "curves", "at_risk")}
    assert keep.any()
    bare = dataclasses.replace(survival, **cut, patients=survival.patients.drop(columns=["treatment",
                                                                                         "treatment_group"]),
                               group_counts=pd.DataFrame(), group_by_treatment=pd.DataFrame(),
                               sequences_by_treatment=pd.DataFrame())
    sec = {s.id: s for s in section.build(_PartialRun(run, replace={"survival": bare}))}["survival"]
    names = [b.name for b in sec.blocks if isinstance(b, Figure)]
    assert not [n for n in names if n.startswith("fig5")]
    assert "survival_by_treatment" not in names
    assert any(isinstance(b, Note) and "no treatment column" in b.text for b in sec.blocks)

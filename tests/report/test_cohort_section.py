"""The cohort sections of the report: Fig. 1a (CONSORT), Fig. 1b (lesions by organ), Table 1, data checks."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from lesionatlas import pipeline
from lesionatlas.data import ValidationReport
from lesionatlas.report.document import Facts, Figure, Note, Table
from lesionatlas.report.sections import cohort as section
from lesionatlas.survival import km_medians
from fakes import FakeRun


def _blocks(sec, kind):
    return [b for b in sec.blocks if isinstance(b, kind)]


def _by_id(sections):
    return {s.id: s for s in sections}


def _consort_numbers(fig) -> tuple[list[tuple[int, ...]], list[int]]:
    """The counts printed in the step boxes and the excluded patients printed beside them, in order."""
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    boxes = []
    for text in texts:
        m = re.fullmatch(r"([\d,]+) patients  ·  ([\d,]+) lesions\n([\d,]+) target lesions  ·  ([\d,]+) measurements",
                         text)
        if m:
            boxes.append(tuple(int(g.replace(",", "")) for g in m.groups()))
    excluded = [int(m.group(1).replace(",", "")) for t in texts if (m := re.match(r"Excluded: ([\d,]+) patients", t))]
    return boxes, excluded


def _consort(n_criteria: int) -> pd.DataFrame:
    rows = [{"step": "all patients", "patients": 1000, "lesions": 9000, "target_lesions": 4000,
             "measurements": 20000, "excluded_patients": 0, "reason": ""}]
    for i in range(n_criteria):
        prev = rows[-1]
        rows.append({"step": f"criterion {i + 1}: a step described in a sentence long enough to wrap in its box",
                     "patients": prev["patients"] - (i + 3), "lesions": prev["lesions"] - 11 * (i + 1),
                     "target_lesions": prev["target_lesions"] - 5 * (i + 1),
                     "measurements": prev["measurements"] - 17 * (i + 1), "excluded_patients": i + 3,
                     "reason": f"reason {i + 1}, said at some length so that it has to wrap onto a second line"})
    rows.append({**rows[-1], "step": "analysed", "excluded_patients": 0, "reason": ""})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------ Fig. 1a
@pytest.mark.parametrize("n_criteria", [1, 2, 6])
def test_consort_figure_prints_the_consort_counts(n_criteria):
    consort = _consort(n_criteria)
    fig = section.plot_consort(consort)
    boxes, excluded = _consort_numbers(fig)
    expected = [tuple(int(v) for v in r) for r in
                consort[["patients", "lesions", "target_lesions", "measurements"]].to_numpy()]
    assert boxes == expected
    assert excluded == consort["excluded_patients"].iloc[1:-1].tolist()
    # the excluded lesions are the differences between consecutive steps
    texts = " ".join(t.get_text() for t in fig.axes[0].texts)
    assert f"({11:,} lesions, {5:,} target lesions)" in texts
    assert "reason 1" in texts
    # boxes stay inside the drawing and do not overlap one another
    ax = fig.axes[0]
    frames = [p.get_extents().transformed(ax.transData.inverted()) for p in ax.patches
              if type(p).__name__ == "FancyBboxPatch"]
    assert len(frames) == len(consort) + n_criteria
    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    for i, a in enumerate(frames):
        assert a.x0 >= x0 - 0.05 and a.x1 <= x1 + 0.05 and a.y0 >= y0 - 0.05 and a.y1 <= y1 + 0.05
        for b in frames[i + 1:]:
            assert not (a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1)
    width, height = fig.get_size_inches()
    assert 6 <= width <= 11


# ------------------------------------------------------------------------------------------ Table 1
@pytest.fixture
def patients() -> pd.DataFrame:
    return pd.DataFrame({
        "patient_id": ["P1", "P2", "P3", "P4", "P5", "P6"],
        "age": [40.0, 50.0, 60.0, 70.0, np.nan, 80.0],
        "sex": pd.array(["M", "M", "F", "F", "M", pd.NA], dtype="string"),
        "prior_surgery": pd.array([True, False, True, pd.NA, True, True], dtype="boolean"),
        "line": pd.array([2, 1, 1, 1, 2, 1], dtype="Int64"),
        "bsa": np.nan,
        "treatment_group": pd.array(["A", "A", "A", "B", "B", "B"], dtype="string"),
        "os_days": [100.0, 250.0, 300.0, 420.0, 500.0, 610.0],
        "os_event": pd.array([True, True, False, True, True, False], dtype="boolean"),
    })


def _cell(table: pd.DataFrame, characteristic: str, level: str, column: str) -> str:
    row = table[(table["characteristic"] == characteristic) & (table["level"] == level)]
    assert len(row) == 1, (characteristic, level)
    return row[column].iloc[0]


def test_table_one_counts_percentages_and_medians(patients):
    table = section.table_one(patients, "treatment_group")
    assert list(table.columns) == ["characteristic", "level", "Overall (n=6)", "A (n=3)", "B (n=3)"]
    overall, a, b = table.columns[2:]
    # n (%) of the column's patients, unknown values counted as a level
    assert _cell(table, "Sex", "Male", overall) == "3 (50.0%)"
    assert _cell(table, "Sex", "Male", a) == "2 (66.7%)"
    assert _cell(table, "Sex", "Female", b) == "1 (33.3%)"
    assert _cell(table, "Sex", "Unknown", overall) == "1 (16.7%)"
    assert _cell(table, "Sex", "Unknown", a) == "0 (0.0%)"
    assert table.loc[table["characteristic"] == "Sex", "level"].tolist() == ["Male", "Female", "Unknown"]
    assert _cell(table, "Prior surgery", "Yes", overall) == "4 (66.7%)"
    assert _cell(table, "Prior surgery", "No", a) == "1 (33.3%)"
    assert _cell(table, "Prior surgery", "Unknown", b) == "1 (33.3%)"
    assert table.loc[table["characteristic"] == "Line of therapy", "level"].tolist() == ["1", "2"]
    assert _cell(table, "Line of therapy", "2", a) == "1 (33.3%)"
    # median (IQR) and mean (SD) of the known values (40, 50, 60, 70, 80 overall)
    assert _cell(table, "Age, years", "median (IQR)", overall) == "60 (50–70)"
    assert _cell(table, "Age, years", "median (IQR)", a) == "50 (45–55)"
    assert _cell(table, "Age, years", "median (IQR)", b) == "75.0 (72.5–77.5)"
    assert _cell(table, "Age, years", "mean (SD)", overall) == f"60.0 ({np.std([40, 50, 60, 70, 80], ddof=1):.1f})"
    assert _cell(table, "Age, years", "Unknown", b) == "1 (33.3%)"
    # Kaplan–Meier median of overall survival, as the survival module computes it
    km = km_medians(patients, "os_days", "os_event", "treatment_group").set_index("group")
    for group, column in (("A", a), ("B", b)):
        med = km.loc[group, "median"]
        text = _cell(table, "Overall survival, days", "KM median (95% CI)", column)
        assert text.startswith(f"{med:,.0f} (") or (not np.isfinite(med) and text.startswith("NR"))
    assert _cell(table, "Overall survival, days", "events", overall) == "4 (66.7%)"
    # identifiers, the grouping column, event flags and empty columns are not described
    described = set(table["characteristic"])
    assert not described & {"patient_id", "Treatment group", "os_event", "Body surface area, m²"}


def test_table_one_without_groups_and_unknown_columns():
    frame = pd.DataFrame({"patient_id": ["P1", "P2", "P3", "P4"], "ecog": [0, 1, 1, 2],
                          "albumin_g_l": [30.5, 41.0, 38.2, 35.0], "site_note": ["a", "b", "a", None]})
    table = section.table_one(frame)
    assert list(table.columns) == ["characteristic", "level", "Overall (n=4)"]
    assert _cell(table, "ECOG performance status", "1", "Overall (n=4)") == "2 (50.0%)"
    assert _cell(table, "Albumin g l", "median (IQR)", "Overall (n=4)") == "36.6 (33.9–38.9)"
    assert _cell(table, "Site note", "a", "Overall (n=4)") == "2 (50.0%)"
    assert _cell(table, "Site note", "Unknown", "Overall (n=4)") == "1 (25.0%)"
    with pytest.raises(KeyError, match="treatment"):
        section.table_one(frame, "treatment")


# ------------------------------------------------------------------------------------------ Fig. 1b
def test_organ_counts_and_organs_per_patient():
    lesions = pd.DataFrame({
        "lesion_id": [f"L{i}" for i in range(9)],
        "patient_id": ["P1", "P1", "P1", "P2", "P2", "P3", "P3", "P3", "P3"],
        "kind": ["target", "target", "nontarget", "target", "new", "target", "nontarget", "nontarget", "target"],
        "organ": ["liver", "liver", "lung", "lung", "bone", "liver", "lung", "bone", "lymph_node_distal"],
    })
    counts = section.organ_counts(lesions).set_index("organ")
    assert counts["all_lesions"].to_dict() == {"liver": 3, "lung": 3, "bone": 2, "lymph_node_distal": 1}
    assert counts["target_lesions"].to_dict() == {"liver": 3, "lung": 1, "bone": 0, "lymph_node_distal": 1}
    assert counts.loc["liver", "organ_name"] == "Liver"
    assert counts.loc["lung", "target_percent"] == pytest.approx(20.0)
    assert counts.loc["bone", "patients"] == 2
    # baseline organs only: P2's bone lesion is new
    n = section.organs_per_patient(lesions, ["P1", "P2", "P3", "P4"])
    assert n.to_dict() == {"P1": 2, "P2": 1, "P3": 4, "P4": 0}
    dist = section.organ_count_distribution(n)
    assert dist["organs"].tolist() == ["0", "1", "2", "3", "≥4"]
    assert dist["patients"].tolist() == [1, 1, 1, 0, 1]
    assert dist["percent"].tolist() == [25.0, 25.0, 25.0, 0.0, 25.0]


# ------------------------------------------------------------------------------------------ sections
def _report(problems: list[tuple[str, str]]) -> ValidationReport:
    rows = [{"rule": "r", "severity": sev, "code": code, "table": "lesions", "column": "kind", "n": 2,
             "ids": "L1, L2", "message": f"{code} message"} for sev, code in problems]
    frame = pd.DataFrame(rows, columns=["rule", "severity", "code", "table", "column", "n", "ids", "message"])
    return ValidationReport(problems=frame, source="data/", counts={"patients": 3, "lesions": 9})


def test_sections_skipped_when_select_did_not_run():
    run = FakeRun({"validate": _report([])}, {"select": ("skipped", "the data have no target lesion")})
    sections = _by_id(section.build(run))
    assert list(sections) == ["cohort", "table1", "data-checks"]
    for key in ("cohort", "table1"):
        notes = sections[key].blocks
        assert len(notes) == 1 and isinstance(notes[0], Note) and notes[0].kind == "skipped"
        assert "select" in notes[0].text and "the data have no target lesion" in notes[0].text
    checks = sections["data-checks"]
    assert dict(_blocks(checks, Facts)[0].items)["errors"] == "0"
    assert any("No problem found" in n.text for n in _blocks(checks, Note))
    assert not _blocks(checks, Table)

    run = FakeRun({}, {"select": ("failed", ""), "validate": ("not run", "")})
    sections = _by_id(section.build(run))
    assert all(b.kind == "skipped" for s in sections.values() for b in s.blocks)
    assert "failed" in sections["cohort"].blocks[0].text


def test_data_checks_lists_the_problems():
    report = _report([("error", "unknown-kind"), ("warning", "no-lesions"), ("warning", "missing-site")])
    checks = _by_id(section.build(FakeRun({"validate": report}, {"select": ("not run", "")})))["data-checks"]
    facts = dict(_blocks(checks, Facts)[0].items)
    assert (facts["errors"], facts["warnings"], facts["lesions rows read"]) == ("1", "2", "9")
    (table,) = _blocks(checks, Table)
    assert table.frame["code"].tolist() == ["unknown-kind", "no-lesions", "missing-site"]
    assert table.frame["rows or ids"].tolist() == [2, 2, 2]


def test_build_on_a_finished_run(base_run):
    run = pipeline.open_run(base_run)
    selection, report = run.load("select"), run.load("validate")
    sections = _by_id(section.build(run))
    assert list(sections) == ["cohort", "table1", "data-checks"]
    assert sections["cohort"].title == "Figure 1 — Cohort and lesions"
    assert sections["table1"].title == "Table 1 — Patient characteristics"
    assert sections["data-checks"].title == "Data checks"

    fig_section = sections["cohort"]
    figures = {f.name: f for f in _blocks(fig_section, Figure)}
    assert set(figures) == {"fig1a_consort", "fig1b_lesions_by_organ"}
    consort = selection.consort
    boxes, excluded = _consort_numbers(figures["fig1a_consort"].figure)
    assert boxes == [tuple(int(v) for v in r) for r in
                     consort[["patients", "lesions", "target_lesions", "measurements"]].to_numpy()]
    assert excluded == consort["excluded_patients"].iloc[1:-1].tolist()
    facts = dict(_blocks(fig_section, Facts)[0].items)
    assert facts["patients analysed"] == f"{selection.n_selected:,}"
    assert facts["patients excluded"] == f"{selection.n_excluded:,}"
    assert facts["target lesions"] == f"{int(consort['target_lesions'].iloc[-1]):,}"

    # Fig. 1b: bar lengths are the lesion counts of the selected cohort
    lesions = selection.cohort.lesions
    bars_ax, organs_ax = figures["fig1b_lesions_by_organ"].figure.axes
    heights = [p.get_width() for p in bars_ax.patches]
    counts = lesions["organ"].value_counts()
    assert sorted(heights[:len(counts)], reverse=True) == sorted(counts.tolist(), reverse=True)
    assert heights[0] == counts.max()
    targets = lesions.loc[lesions["kind"] == "target", "organ"].value_counts()
    assert sum(heights[len(counts):]) == targets.sum()
    assert [t.get_text() for t in bars_ax.get_yticklabels()][0] == section.organ_label(counts.idxmax())
    assert sum(p.get_height() for p in organs_ax.patches) == selection.n_selected
    tables = {t.name: t for t in _blocks(fig_section, Table)}
    assert tables["table_lesions_by_organ"].frame["all lesions"].sum() == len(lesions)
    assert tables["table_organs_per_patient"].frame["patients"].sum() == selection.n_selected

    # Table 1 on the selected patients, by treatment group
    (table1,) = _blocks(sections["table1"], Table)
    frame = table1.frame
    patients = selection.cohort.patients
    assert frame.columns[2] == f"Overall (n={len(patients):,})"
    assert len(frame.columns) == 3 + patients["treatment_group"].nunique()
    male = int((patients["sex"] == "M").sum())
    row = frame.index[frame["level"] == "Male"][0]
    assert frame.loc[row, frame.columns[2]] == f"{male:,} ({100 * male / len(patients):.1f}%)"
    assert "Measurements per target lesion" in set(frame["characteristic"])

    checks = sections["data-checks"]
    facts = dict(_blocks(checks, Facts)[0].items)
    assert facts["errors"] == f"{len(report.errors):,}" and facts["warnings"] == f"{len(report.warnings):,}"
    assert len(_blocks(checks, Table)) == (0 if report.problems.empty else 1)

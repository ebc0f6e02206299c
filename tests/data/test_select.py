"""Cohort selection: who drops for which reason, config changes, CONSORT arithmetic, files."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from lesionatlas.config import SelectionConfig
from lesionatlas.data import Cohort
from lesionatlas.data.select import CONSORT_COLUMNS, EXCLUDED_COLUMNS, Selection, select_patients, target_scans
from lesionatlas.errors import ConfigError, ExclusionWarning

NAN = np.nan


@pytest.fixture
def cohort() -> Cohort:
    """Eight patients whose fate under the default criteria is known.

    P1 kept: target lesion with 3 scans, baseline day -10.
    P2 out (a): its only target lesion has 1 scan.
    P3 out (a): no target lesion (a non-target lesion with assessments).
    P4 out (b): 2 scans, baseline day -100.
    P5 kept: 2 scans, baseline exactly 84 days before day 0.
    P6 out (b): one lesion has 2 scans, but another target lesion was scanned on day -200.
    P7 out (a): 2 rows, one without a value: 1 scan.
    P8 out (a): no lesions.
    """
    patients = pd.DataFrame({"patient_id": [f"P{i}" for i in range(1, 9)]})
    lesions = pd.DataFrame(
        {
            "lesion_id": ["L1", "L1b", "L2", "L3", "L4", "L5", "L6a", "L6b", "L7"],
            "patient_id": ["P1", "P1", "P2", "P3", "P4", "P5", "P6", "P6", "P7"],
            "kind": ["target", "nontarget", "target", "nontarget", "target", "target", "target", "target", "target"],
            "site": "LIVER",
        }
    )
    rows = [
        ("L1", -10, 30), ("L1", 42, 25), ("L1", 84, 20),
        ("L2", 0, 20),
        ("L4", -100, 40), ("L4", 40, 35),
        ("L5", -84, 15), ("L5", 42, 12),
        ("L6a", -200, 22), ("L6b", -5, 18), ("L6b", 40, 17),
        ("L7", -3, 30), ("L7", 40, NAN),
    ]
    measurements = pd.DataFrame(rows, columns=["lesion_id", "day", "diameter_mm"])
    assessments = pd.DataFrame({"lesion_id": ["L1b", "L3", "L3"], "day": [-10, -5, 40], "status": ["present"] * 3})
    return Cohort.from_tables(patients, lesions, measurements, assessments)


def _consistent(consort: pd.DataFrame) -> None:
    assert list(consort.columns) == list(CONSORT_COLUMNS)
    assert consort["step"].iloc[0] == "all patients" and consort["step"].iloc[-1] == "analysed"
    assert consort["excluded_patients"].iloc[0] == 0 and consort["excluded_patients"].iloc[-1] == 0
    patients = consort["patients"].to_numpy()
    assert (patients[1:] == patients[:-1] - consort["excluded_patients"].to_numpy()[1:]).all()
    for col in ("lesions", "target_lesions", "measurements"):
        assert (np.diff(consort[col].to_numpy()) <= 0).all()


def test_default_criteria(cohort):
    sel = select_patients(cohort)
    assert sorted(sel.cohort.patients["patient_id"]) == ["P1", "P5"]
    reasons = dict(zip(sel.excluded["patient_id"], sel.excluded["reason"]))
    no_scans = "no target lesion with at least 2 scans"
    early = "baseline scan more than 84 days before day 0"
    assert reasons == {"P2": no_scans, "P3": no_scans, "P7": no_scans, "P8": no_scans, "P4": early, "P6": early}
    consort = sel.consort
    _consistent(consort)
    assert consort["patients"].tolist() == [8, 4, 2, 2]
    assert consort["excluded_patients"].tolist() == [0, 4, 2, 0]
    assert consort["lesions"].tolist() == [9, 6, 3, 3]
    assert consort["target_lesions"].tolist() == [7, 5, 2, 2]
    assert consort["measurements"].tolist() == [13, 10, 5, 5]
    assert consort["reason"].tolist() == ["", no_scans, early, ""]
    # the selected cohort keeps all lesions of its patients, non-target too
    assert sorted(sel.cohort.lesions["lesion_id"]) == ["L1", "L1b", "L5"]
    assert sel.cohort.n_patients == sel.n_selected == 2 and sel.n_excluded == 6
    details = dict(zip(sel.excluded["patient_id"], sel.excluded["detail"]))
    assert details["P6"] == "baseline scan on day -200"
    assert details["P7"] == "most scans of one target lesion: 1"
    assert list(sel.excluded.columns) == list(EXCLUDED_COLUMNS)


def test_target_scans(cohort):
    facts = target_scans(cohort).set_index("patient_id")
    assert facts["max_target_scans"].to_dict() == {"P1": 3, "P2": 1, "P3": 0, "P4": 2, "P5": 2, "P6": 2,
                                                   "P7": 1, "P8": 0}
    assert facts.loc["P6", "baseline_day"] == -200
    assert np.isnan(facts.loc["P3", "baseline_day"])


@pytest.mark.parametrize(
    ("config", "kept"),
    [
        (SelectionConfig(min_target_scans=1), ["P1", "P2", "P5", "P7"]),
        (SelectionConfig(min_target_scans=3), ["P1"]),
        (SelectionConfig(max_baseline_days_before=120), ["P1", "P4", "P5"]),
        (SelectionConfig(max_baseline_days_before=83), ["P1"]),
        (SelectionConfig(require_target_measurements=False), ["P1", "P2", "P3", "P5", "P7", "P8"]),
        (SelectionConfig(require_target_measurements=False, max_baseline_days_before=float("inf")),
         [f"P{i}" for i in range(1, 9)]),
    ],
)
def test_config_changes_take_effect(cohort, config, kept):
    sel = select_patients(cohort, config)
    assert sorted(sel.cohort.patients["patient_id"]) == kept
    assert sel.config == config
    _consistent(sel.consort)
    assert sel.consort["excluded_patients"].sum() == sel.n_excluded == 8 - len(kept)


def test_switched_off_criterion_is_not_a_step(cohort):
    sel = select_patients(cohort, SelectionConfig(require_target_measurements=False))
    assert len(sel.consort) == 3
    assert not sel.consort["step"].str.contains("longitudinal").any()


def test_input_cohort_unchanged(cohort):
    before = {name: cohort.table(name).copy() for name in ("patients", "lesions", "measurements", "assessments")}
    select_patients(cohort)
    for name, frame in before.items():
        pd.testing.assert_frame_equal(cohort.table(name), frame)


def test_no_warning_on_a_normal_run_but_when_nobody_is_left(cohort):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        select_patients(cohort)
    with pytest.warns(ExclusionWarning, match="no patient of 8 meets the inclusion criteria"):
        sel = select_patients(cohort, SelectionConfig(min_target_scans=10))
    assert sel.cohort.n_patients == 0
    assert sel.consort["patients"].iloc[-1] == 0


def test_bad_config_type(cohort):
    with pytest.raises(ConfigError, match="SelectionConfig"):
        select_patients(cohort, {"min_target_scans": 2})  # type: ignore[arg-type]


def test_summary_and_repr(cohort):
    sel = select_patients(cohort)
    pd.testing.assert_frame_equal(sel.summary(), sel.consort)
    text = repr(sel)
    assert text.startswith("Selection(2 of 8 patients analysed; excluded: 4 no target lesion")
    assert "2 baseline scan more than 84 days" in text


def test_to_dir_and_back(tmp_path, cohort):
    sel = select_patients(cohort, SelectionConfig(max_baseline_days_before=90))
    out = sel.to_dir(tmp_path / "selection")
    names = {p.name for p in out.iterdir()}
    assert {"consort.csv", "consort.parquet", "excluded.csv", "excluded.parquet", "selection.json", "cohort"} <= names
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    back = Selection.from_dir(out)
    assert back.config == sel.config
    assert back.cohort.equals(sel.cohort)
    pd.testing.assert_frame_equal(back.consort, sel.consort, check_dtype=False)
    pd.testing.assert_frame_equal(back.excluded, sel.excluded)
    csv = pd.read_csv(out / "consort.csv", keep_default_na=False)
    assert csv["patients"].tolist() == sel.consort["patients"].tolist()

"""Validation: every rule with its code, severity and message; all problems at once; inputs untouched."""
from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lesionatlas.data import RawTables, read_cohort, validate_cohort
from lesionatlas.data.validate import RULES, ValidationReport, validate_tables, validation_rules
from lesionatlas.errors import DataError, DataWarning

Tables = dict[str, pd.DataFrame]


def _copy(tables: Tables) -> Tables:
    return {k: v.copy() for k, v in tables.items()}


def _raw(tables: Tables, **sources: str) -> RawTables:
    return RawTables(tables=tables, sources=sources, meta={"source": "test"})


def _add_row(frame: pd.DataFrame, **values: object) -> pd.DataFrame:
    return pd.concat([frame, pd.DataFrame([values])], ignore_index=True)


def _set(table: str, row: int, column: str, value: object) -> Callable[[Tables], Tables]:
    def change(t: Tables) -> Tables:
        frame = t[table].astype(object)
        if column not in frame.columns:
            frame[column] = None
        frame.loc[row, column] = value
        t[table] = frame
        return t

    return change


def _write_tidy(folder: Path, tables: Tables) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        frame.to_csv(folder / f"{name}.csv", index=False)
    return folder


# ------------------------------------------------------------------------------------------ clean data
def test_clean_data_has_no_problems(tiny_tables):
    report = validate_tables(_raw(tiny_tables))
    assert report.ok
    assert report.problems.empty, report.to_text()
    assert report.counts == {"patients": 2, "lesions": 4, "measurements": 5, "assessments": 3}
    assert "usable (0 errors, 0 warnings)" in report.to_text()


def test_known_spellings_of_kinds_and_statuses_are_accepted(tiny_tables):
    t = _copy(tiny_tables)
    t["lesions"]["kind"] = ["TL", "Non-Target", " Target ", "NEW LESION"]
    t["assessments"]["status"] = ["Present", "Progressive Disease", "new"]
    report = validate_tables(_raw(t))
    assert report.ok and report.problems.empty, report.to_text()


def test_parquet_typed_tables_are_clean(tmp_path, tiny_tables):
    # numbers as numbers (not text), as Parquet keeps them
    t = _copy(tiny_tables)
    t["measurements"]["day"] = t["measurements"]["day"].astype(float)
    t["measurements"]["diameter_mm"] = t["measurements"]["diameter_mm"].astype(float)
    t["patients"]["age"] = t["patients"]["age"].astype(float)
    for name, frame in t.items():
        frame.to_parquet(tmp_path / f"{name}.parquet", index=False)
    report = validate_cohort(tmp_path)
    assert report.ok and report.problems.empty, report.to_text()


# ------------------------------------------------------------------------------------------ one rule each
def _drop_table(name: str) -> Callable[[Tables], Tables]:
    def change(t: Tables) -> Tables:
        del t[name]
        return t

    return change


def _drop_column(table: str, *columns: str) -> Callable[[Tables], Tables]:
    def change(t: Tables) -> Tables:
        t[table] = t[table].drop(columns=list(columns))
        return t

    return change


def _append(table: str, **values: object) -> Callable[[Tables], Tables]:
    def change(t: Tables) -> Tables:
        t[table] = _add_row(t[table], **values)
        return t

    return change


def _chain(*changes: Callable[[Tables], Tables]) -> Callable[[Tables], Tables]:
    def change(t: Tables) -> Tables:
        for c in changes:
            t = c(t)
        return t

    return change


def _empty(table: str) -> Callable[[Tables], Tables]:
    def change(t: Tables) -> Tables:
        t[table] = t[table].iloc[0:0]
        return t

    return change


# (id, change, code, table, column, words that the message must contain)
CASES = [
    ("missing-table", _drop_table("measurements"), "missing-table", "measurements", "",
     ["table measurements is missing"]),
    ("missing-column", _drop_column("lesions", "kind"), "missing-column", "lesions", "kind",
     ["required column(s) kind missing", "columns found: lesion_id, patient_id, site"]),
    ("missing-size-columns", _drop_column("measurements", "diameter_mm"), "missing-column", "measurements",
     "diameter_mm, volume_mm3", ["neither diameter_mm nor volume_mm3"]),
    ("empty-lesions", _empty("lesions"), "empty-table", "lesions", "", ["header but no rows"]),
    ("empty-patients", _empty("patients"), "empty-table", "patients", "", ["header but no rows"]),
    ("missing-lesion-id", _set("lesions", 1, "lesion_id", None), "missing-id", "lesions", "lesion_id",
     ["1 row has no lesion_id"]),
    ("unknown-patient", _set("lesions", 3, "patient_id", "P9"), "unknown-id", "lesions", "patient_id",
     ["P9", "not in the patients table", "add those patients"]),
    ("unknown-lesion", _append("measurements", lesion_id="L99", day="5", diameter_mm="10"), "unknown-id",
     "measurements", "lesion_id", ["L99", "not in the lesions table"]),
    ("unknown-lesion-assessed", _append("assessments", lesion_id="L77", day="5", status="PD"), "unknown-id",
     "assessments", "lesion_id", ["L77"]),
    ("duplicate-patient", _append("patients", patient_id="P1", age="62", sex="M"), "duplicate-id", "patients",
     "patient_id", ["P1", "several rows with different values", "exactly one row"]),
    ("duplicate-lesion", _append("lesions", lesion_id="L1", patient_id="P1", kind="target", site="LUNG"),
     "duplicate-id", "lesions", "lesion_id", ["L1", "in site"]),
    ("lesion-two-patients", _append("lesions", lesion_id="L1", patient_id="P2", kind="target", site="LIVER"),
     "conflicting-patient", "lesions", "patient_id", ["L1", "different patients", "P1, P2"]),
    ("child-patient-clash", _chain(_set("measurements", 0, "patient_id", "P2"),
                                   _set("measurements", 1, "patient_id", "P1")),
     "conflicting-patient", "measurements", "patient_id", ["1 row of lesion L1", "P2 here, P1 in lesions"]),
    ("missing-day", _set("measurements", 1, "day", None), "missing-value", "measurements", "day",
     ["1 row of lesion L1 has no day"]),
    ("day-not-number", _chain(_set("measurements", 0, "day", "baseline"), _set("measurements", 1, "day", "wk6")),
     "not-numeric", "measurements", "day",
     ["2 rows of lesion L1", "not a number", "'baseline'", "'wk6'", "relative to treatment start (day 0"]),
    ("assessment-day-not-number", _set("assessments", 0, "day", "C1D1"), "not-numeric", "assessments", "day",
     ["'C1D1'"]),
    ("day-infinite", _set("measurements", 0, "day", "inf"), "not-finite", "measurements", "day", ["infinite"]),
    ("day-is-date", _set("measurements", 0, "day", "20190312"), "implausible", "measurements", "day",
     ["look like dates"]),
    ("diameter-not-number", _set("measurements", 2, "diameter_mm", "12 mm"), "not-numeric", "measurements",
     "diameter_mm", ["1 row of lesion L1", "'12 mm'", "numbers in mm"]),
    ("diameter-infinite", _set("measurements", 2, "diameter_mm", "-inf"), "not-finite", "measurements",
     "diameter_mm", ["infinite"]),
    ("diameter-negative", _set("measurements", 3, "diameter_mm", "-4"), "negative", "measurements",
     "diameter_mm", ["lesion L3", "'-4'", "from 0 to 400 mm"]),
    ("diameter-implausible", _set("measurements", 3, "diameter_mm", "450"), "implausible", "measurements",
     "diameter_mm", ["above 400 mm", "'450'", "cm vs mm"]),
    ("volume-implausible", _set("measurements", 3, "volume_mm3", "1e9"), "implausible", "measurements",
     "volume_mm3", ["mm3", "'1e9'"]),
    ("volume-negative", _set("measurements", 3, "volume_mm3", "-100"), "negative", "measurements",
     "volume_mm3", ["'-100'"]),
    ("unknown-kind", _set("lesions", 0, "kind", "primary"), "unknown-kind", "lesions", "kind",
     ["L1", "'primary'", "kinds are target, nontarget, new"]),
    ("missing-kind", _set("lesions", 1, "kind", None), "missing-value", "lesions", "kind", ["L2", "no kind"]),
    ("unknown-status", _set("assessments", 1, "status", "progressing"), "unknown-status", "assessments",
     "status", ["'progressing'", "statuses are present, absent, CR, PR, SD, PD, NE, new"]),
    ("missing-status", _set("assessments", 1, "status", None), "missing-value", "assessments", "status",
     ["no status"]),
    ("conflicting-measurement", _append("measurements", lesion_id="L1", day="42", diameter_mm="25"),
     "conflicting-duplicate", "measurements", "lesion_id, day",
     ["L1 on day 42: diameter_mm 22 vs 25", "one row per lesion and day"]),
    ("conflicting-assessment", _append("assessments", lesion_id="L2", day="42", status="SD"),
     "conflicting-duplicate", "assessments", "lesion_id, day", ["L2 on day 42: status PD vs SD"]),
    ("no-target-values", _set("measurements", slice(None), "diameter_mm", None), "no-target-measurements",
     "measurements", "", ["no target lesion has a usable measurement"]),
    ("no-target-lesions", _set("lesions", slice(None), "kind", "nontarget"), "no-target-measurements",
     "lesions", "kind", ["none of 4 lesions is a target lesion"]),
]

WARNING_CASES = [
    ("duplicate-rows", _append("measurements", lesion_id="L1", day="42", diameter_mm="22"), "duplicate-rows",
     "measurements", "", ["1 row repeats an earlier row", "L1", "dropped"]),
    ("duplicate-rows-same-number", _append("measurements", lesion_id="L1", day="42.0", diameter_mm="22.0"),
     "duplicate-rows", "measurements", "", ["1 row repeats"]),
    ("missing-measurement", _set("measurements", 1, "diameter_mm", None), "missing-measurement",
     "measurements", "diameter_mm, volume_mm3", ["1 row of lesion L1 has neither a diameter nor a volume"]),
    ("nontarget-measured", _append("measurements", lesion_id="L2", day="42", diameter_mm="12"),
     "nontarget-measured", "measurements", "lesion_id", ["1 row of lesion L2", "not target lesions"]),
    ("single-measurement", _set("measurements", 4, "lesion_id", "L1"), "single-measurement", "lesions",
     "lesion_id", ["1 target lesion (L3) has a single usable measurement"]),
    ("unmeasured-lesion", _append("lesions", lesion_id="L5", patient_id="P2", kind="target", site="LIVER"),
     "unmeasured-lesion", "lesions", "lesion_id", ["1 target lesion (L5) has no usable measurement"]),
    ("unassessed-lesion", lambda t: {**t, "assessments": t["assessments"].iloc[:2]}, "unassessed-lesion",
     "lesions", "lesion_id", ["L4", "no assessment"]),
    ("no-assessments-table", _drop_table("assessments"), "unassessed-lesion", "lesions", "lesion_id",
     ["L2, L4", "no assessments table"]),
    ("no-lesions", _append("patients", patient_id="P3", age="70", sex="F"), "no-lesions", "patients",
     "patient_id", ["1 patient (P3) has no lesion"]),
    ("unmapped-site", _set("lesions", 0, "site", "SPACESHIP"), "unmapped-site", "lesions", "site",
     ["'SPACESHIP'", "mapped to 'other'", "--organ-map"]),
    ("missing-site", _set("lesions", 0, "site", None), "missing-site", "lesions", "site",
     ["1 lesion (L1) has neither a site nor an organ"]),
    ("unknown-sex", _set("patients", 0, "sex", "Other"), "unknown-sex", "patients", "sex",
     ["'Other'", "M or F"]),
    ("age-unparseable", _set("patients", 1, "age", "abc"), "unparseable", "patients", "age",
     ["1 patient (P2)", "'abc'", "treated as missing"]),
    ("flag-unparseable", _set("patients", 0, "prior_surgery", "maybe"), "unparseable", "patients",
     "prior_surgery", ["'maybe'", "yes/no"]),
    ("line-unparseable", _set("patients", 0, "line", "first"), "unparseable", "patients", "line",
     ["'first'", "whole numbers"]),
    ("age-out-of-range", _set("patients", 0, "age", "250"), "out-of-range", "patients", "age",
     ["'250'", "0 to 120 years"]),
    ("os-negative", _set("patients", 0, "os_days", "-5"), "out-of-range", "patients", "os_days", ["'-5'"]),
]


def _check(report: ValidationReport, code: str, table: str, column: str, words: list[str], severity: str):
    rows = report.problems[report.problems["code"] == code]
    assert not rows.empty, f"no {code} in:\n{report.to_text()}"
    row = rows.iloc[0]
    assert row["severity"] == severity == RULES[code][0]
    assert row["table"] == table
    assert row["column"] == column
    assert row["n"] >= 1
    for w in words:
        assert w in row["message"], (w, row["message"])


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_error_rule(tiny_tables, case):
    _, change, code, table, column, words = case
    report = validate_tables(_raw(change(_copy(tiny_tables))))
    assert not report.ok
    _check(report, code, table, column, words, "error")


@pytest.mark.parametrize("case", WARNING_CASES, ids=[c[0] for c in WARNING_CASES])
def test_warning_rule(tiny_tables, case):
    _, change, code, table, column, words = case
    report = validate_tables(_raw(change(_copy(tiny_tables))))
    assert report.ok, report.to_text()
    _check(report, code, table, column, words, "warning")


def test_message_names_the_file(tiny_tables):
    t = _copy(tiny_tables)
    t["measurements"].loc[0, "day"] = "baseline"
    report = validate_tables(_raw(t, measurements="/data/trial/measurements.csv"))
    (message,) = report.error_messages()
    assert message.startswith("/data/trial/measurements.csv (measurements.day): 1 row of lesion L1 has a day")


def test_ids_column_lists_first_ids_and_count(tiny_tables):
    t = _copy(tiny_tables)
    extra = pd.DataFrame({"lesion_id": [f"X{i}" for i in range(8)], "day": "1", "diameter_mm": "10"})
    t["measurements"] = pd.concat([t["measurements"], extra], ignore_index=True)
    row = validate_tables(_raw(t)).errors.iloc[0]
    assert row["code"] == "unknown-id" and row["n"] == 8
    assert row["ids"] == "X0, X1, X2, X3, X4, ..."
    assert "X0, X1, X2, X3, X4 and 3 more" in row["message"]


def test_monolix_file_validates(tmp_path):
    # the Monolix reader checks that its numbers are numbers; validation checks their range
    path = tmp_path / "d.csv"
    path.write_text("ID,TIME,DV\n1,0,1000\n1,40,800\n2,0,500\n2,40,3000\n2,80,.\n3,0,1e12\n3,40,900\n")
    report = validate_cohort(path)
    assert report.errors["code"].tolist() == ["implausible"]
    assert "d.csv (measurements.volume_mm3): 1 row of lesion 3" in report.error_messages()[0]
    # the reader skips the row without DV and says so: a reader note, shown as a warning
    assert report.warnings["code"].tolist() == ["reader-note"]
    assert "without a DV value skipped" in report.warning_messages()[0]


# ------------------------------------------------------------------------------------------ the report
def test_reports_every_problem_at_once(tiny_tables):
    t = _copy(tiny_tables)
    t["measurements"].loc[0, "day"] = "baseline"
    t["measurements"].loc[1, "diameter_mm"] = "-3"
    t["lesions"].loc[1, "kind"] = "primary"
    t["lesions"].loc[3, "patient_id"] = "P9"
    t["assessments"].loc[2, "status"] = "progressing"
    t["patients"].loc[1, "age"] = "abc"
    t["lesions"].loc[0, "site"] = "SPACESHIP"
    report = validate_tables(_raw(t))
    assert set(report.errors["code"]) == {"not-numeric", "negative", "unknown-kind", "unknown-id", "unknown-status"}
    assert {"unparseable", "unmapped-site"} <= set(report.warnings["code"])
    # errors come first, then warnings
    assert list(report.problems["severity"]) == sorted(report.problems["severity"])
    assert list(report.summary().columns) == ["rule", "severity", "code", "table", "column", "n", "ids", "message"]
    assert repr(report) == f"ValidationReport(5 errors, {len(report.warnings)} warnings)"
    text = str(report)
    assert text.splitlines()[0].startswith("test: NOT usable (5 errors")
    assert "error [unknown-kind]: lesions.kind: 1 lesion (L2)" in text


def test_raise_for_errors_lists_all(tiny_tables):
    t = _copy(tiny_tables)
    t["measurements"].loc[0, "day"] = "baseline"
    t["lesions"].loc[1, "kind"] = "primary"
    with pytest.raises(DataError) as info:
        validate_tables(_raw(t)).raise_for_errors()
    assert info.value.code == "not-numeric"
    assert "2 problem(s)" in info.value.message
    assert "[unknown-kind]" in info.value.message and "[not-numeric]" in info.value.message


def test_inputs_are_never_modified(tiny_tables):
    t = _copy(tiny_tables)
    t["measurements"].loc[0, "day"] = "baseline"
    t["measurements"] = _add_row(t["measurements"], lesion_id="L1", day="42", diameter_mm="22")
    t["lesions"].loc[1, "kind"] = "NT"
    t["patients"].loc[1, "age"] = "abc"
    before = _copy(t)
    raw = _raw(t)
    validate_tables(raw)
    validate_cohort(raw)
    for name, frame in before.items():
        pd.testing.assert_frame_equal(raw.tables[name], frame)


def test_every_code_is_documented():
    table = validation_rules()
    assert list(table.columns) == ["code", "severity", "description"]
    codes = {c[2] for c in CASES} | {c[2] for c in WARNING_CASES}
    assert codes <= set(table["code"])
    assert set(table["severity"]) == {"error", "warning"}


def test_reader_notes_become_warnings(tiny_tables):
    raw = RawTables(tables=_copy(tiny_tables), notes=["3 dosing rows skipped"])
    report = validate_cohort(raw)
    assert report.ok and report.codes == ["reader-note"]
    assert report.warning_messages() == ["3 dosing rows skipped"]


def test_reader_failure_is_one_error(tmp_path, tiny_tables):
    folder = _write_tidy(tmp_path / "d", {k: v for k, v in tiny_tables.items() if k != "measurements"})
    report = validate_cohort(folder)
    assert report.codes == ["missing-file"]
    assert "measurements" in report.error_messages()[0]
    (folder / "measurements.csv").write_text("")
    assert validate_cohort(folder).codes == ["empty-file"]


def test_header_only_file_is_empty_table(tmp_path, tiny_tables):
    folder = _write_tidy(tmp_path / "d", tiny_tables)
    (folder / "measurements.csv").write_text("lesion_id,day,diameter_mm\n")
    report = validate_cohort(folder)
    assert "empty-table" in report.errors["code"].tolist()
    assert str(folder / "measurements.csv") in report.errors.iloc[0]["message"]


def test_organ_column_given_skips_site_lookup(tiny_tables):
    t = _copy(tiny_tables)
    t["lesions"]["site"] = "SPACESHIP"
    t["lesions"]["organ"] = "liver"
    assert validate_tables(_raw(t)).problems.empty


def test_user_organ_map_knows_more_sites(tiny_tables):
    from lesionatlas.data import load_organ_map

    t = _copy(tiny_tables)
    t["lesions"].loc[0, "site"] = "SPACESHIP"
    omap = load_organ_map(pd.DataFrame({"site": ["SPACESHIP"], "organ": ["other"]}))
    assert validate_tables(_raw(t), organ_map=omap).problems.empty


# ------------------------------------------------------------------------------------------ read_cohort
def test_read_cohort_raises_listing_all_problems(tmp_path, tiny_tables):
    t = _copy(tiny_tables)
    t["measurements"].loc[0, "day"] = "baseline"
    t["measurements"].loc[3, "diameter_mm"] = "500"
    t["lesions"].loc[1, "kind"] = "primary"
    folder = _write_tidy(tmp_path / "bad", t)
    with pytest.raises(DataError) as info:
        read_cohort(folder)
    message = info.value.message
    assert message.startswith("3 problem(s) make the data unusable:")
    for code in ("not-numeric", "implausible", "unknown-kind"):
        assert f"[{code}]" in message


def test_dirty_but_usable_data_builds_with_warnings(tmp_path, tiny_tables):
    t = _copy(tiny_tables)
    t["measurements"] = _add_row(t["measurements"], lesion_id="L1", day="42", diameter_mm="22")  # duplicate
    t["measurements"] = _add_row(t["measurements"], lesion_id="L3", day="80", diameter_mm=None)  # missing
    t["lesions"].loc[0, "site"] = "SPACESHIP"
    t["patients"].loc[1, "age"] = "abc"
    folder = _write_tidy(tmp_path / "dirty", t)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    report = validate_cohort(folder)
    assert report.ok
    assert set(report.codes) >= {"duplicate-rows", "missing-measurement", "unmapped-site", "unparseable"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cohort = read_cohort(folder)
    messages = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert any("repeats an earlier row" in m for m in messages)
    assert any("'abc'" in m for m in messages)
    assert len(cohort.measurements) == 6  # the duplicate dropped, the missing value kept
    assert np.isnan(cohort.patients.set_index("patient_id").loc["P2", "age"])
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_paper_scale_is_fast():
    """40,000 lesions and 100,000 measurements in well under the ~1 s budget (checked loosely here)."""
    import time

    rng = np.random.default_rng(0)
    n_pat, n_les, n_mea = 4_300, 40_000, 100_000
    pid = np.char.add("P", np.arange(n_pat).astype(str))
    lid = np.char.add("L", np.arange(n_les).astype(str))
    kind = np.where(np.arange(n_les) % 2 == 0, "target", "nontarget")
    raw = _raw({
        "patients": pd.DataFrame({"patient_id": pid, "age": "60", "sex": "F"}),
        "lesions": pd.DataFrame({"lesion_id": lid, "patient_id": pid[np.arange(n_les) % n_pat], "kind": kind,
                                 "site": "LIVER"}),
        "measurements": pd.DataFrame({"lesion_id": lid[(np.arange(n_mea) % (n_les // 2)) * 2],
                                      "day": (np.arange(n_mea) // (n_les // 2) * 42 - 7).astype(str),
                                      "diameter_mm": rng.uniform(5, 90, n_mea).round(1).astype(str)}),
        "assessments": pd.DataFrame({"lesion_id": lid[1::2], "day": "40", "status": "SD"}),
    })
    start = time.perf_counter()
    report = validate_tables(raw)
    elapsed = time.perf_counter() - start
    assert report.ok and report.problems.empty, report.to_text()
    assert elapsed < 5.0  # about 0.4 s on a laptop core; loose for shared CI machines

"""derive_events on hand-made cohorts: censoring, kinds, sequences, covariates, files, determinism."""
from __future__ import annotations

import math
import warnings
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from lesionatlas.data import Cohort
from lesionatlas.errors import ConfigError, DataError, ExclusionWarning
from lesionatlas.events import EventRules, LesionEvents, derive_events, lesion_parameters

KD50 = -math.log(0.8) / 50.0  # pure decay reaching 0.8 V(0) on day 50
KG40 = math.log(1.3) / 40.0  # pure growth reaching 1.3 V(0) on day 40


def _cohort() -> Cohort:
    patients = pd.DataFrame({
        "patient_id": ["P1", "P2", "P3", "P4", "P5"],
        "age": [61, 55, 70, 48, 66], "sex": ["M", "F", "M", "F", "M"], "race": ["White"] * 5,
        "bmi": [25.0, 22.0, 30.0, 27.0, 24.0], "prior_surgery": [True, False, True, True, False],
        "line": [1, 2, 1, 1, 2], "treatment": ["FOLFOX", "FOLFIRI", "FOLFOX", "FOLFOX", "FOLFIRI"],
        "treatment_group": ["chemo", "chemo", "chemo", "antibody+chemo", "chemo"],
        "os_days": [400.0, 300.0, 500.0, 200.0, 100.0], "os_event": [True, False, True, True, False],
    })
    lesions = pd.DataFrame({
        "lesion_id": ["P1-T1", "P1-T2", "P1-NT1", "P1-N1", "P2-T1", "P3-T1", "P4-T1", "P5-NT1"],
        "patient_id": ["P1", "P1", "P1", "P1", "P2", "P3", "P4", "P5"],
        "kind": ["target", "target", "nontarget", "new", "target", "target", "target", "nontarget"],
        "site": ["LIVER", "LUNG", "BONE", "BRAIN", "LIVER", "SKIN", "LIVER", "LUNG"],
        "organ": ["liver", "lung", "bone", "brain_cns", "liver", "skin", "liver", "lung"],
    })
    measurements = pd.DataFrame({
        "lesion_id": ["P1-T1", "P1-T1", "P1-T2", "P1-T2", "P2-T1", "P2-T1", "P3-T1", "P3-T1", "P4-T1", "P4-T1"],
        "day": [-5, 100, -5, 100, -3, 120, -10, 60, -3, 50],
        "diameter_mm": [30.0, 25.0, 15.0, 18.0, 20.0, 22.0, 40.0, 38.0, 25.0, 22.0],
    })
    assessments = pd.DataFrame({
        "lesion_id": ["P1-NT1"] * 4 + ["P1-N1"] + ["P5-NT1"] * 2,
        "day": [-5, 42, 84, 100, 84, -2, 45],
        "status": ["present", "PR", "PD", "PD", "new", "present", "SD"],
    })
    return Cohort.from_tables(patients, lesions, measurements, assessments)


def _parameters() -> pd.DataFrame:
    return pd.DataFrame({
        "lesion_id": ["P1-T1", "P1-T2", "P2-T1", "P3-T1", "P4-T1"],
        "kg": [0.01, KG40, math.log(1.3) / 150.0, 0.002, 0.01],
        "kd": [KD50, 0.01, 0.01, 0.003, KD50],
        "f": [0.0, 1.0, 1.0, 0.5, 0.0],
        "v0": [1000.0, 100.0, 100.0, 5000.0, 800.0],
        "t0": [0.0, 0.0, 0.0, -10.0, 0.0],
    })


@pytest.fixture(scope="module")
def events() -> LesionEvents:
    return derive_events(_cohort(), _parameters())


def _row(ev, lesion_id):
    return ev.table.set_index("lesion_id").loc[lesion_id]


def test_table_columns_and_dtypes(events):
    t = events.table
    assert list(t.columns[:9]) == ["lesion_id", "patient_id", "organ", "kind", "response_day", "response_event",
                                   "progression_day", "progression_event", "last_day"]
    for col in ("treatment", "treatment_group", "age", "bmi", "sex", "race", "prior_surgery", "line"):
        assert col in t.columns
    assert str(t["response_event"].dtype) == "boolean" and str(t["progression_event"].dtype) == "boolean"
    assert len(t) == 8
    assert _row(events, "P2-T1")["treatment"] == "FOLFIRI"


def test_target_events_and_censoring(events):
    r = _row(events, "P1-T1")  # response exactly on day 50, never progresses; last day 100
    assert r["response_event"] and r["response_day"] == pytest.approx(50.0, abs=1e-9)
    assert not r["progression_event"] and r["progression_day"] == 100.0
    r = _row(events, "P1-T2")  # progression on day 40, never responds
    assert r["progression_event"] and r["progression_day"] == pytest.approx(40.0, abs=1e-9)
    assert not r["response_event"] and r["response_day"] == 100.0
    r = _row(events, "P2-T1")  # progression on day 150, after the last day (120): censored there
    assert not r["progression_event"] and r["progression_day"] == 120.0 and r["last_day"] == 120.0
    r = _row(events, "P4-T1")  # response on day 50 = the last day: an event
    assert r["response_event"] and r["response_day"] == pytest.approx(50.0, abs=1e-9)
    assert r["response_day"] <= r["last_day"]
    curves = events.curves.set_index("lesion_id")
    assert curves.loc["P2-T1", "latent_progression_day"] == pytest.approx(150.0, abs=1e-9)
    assert curves.loc["P1-T1", "latent_progression_day"] == math.inf


def test_nontarget_and_new(events):
    r = _row(events, "P1-NT1")
    assert (r["response_day"], r["response_event"]) == (42.0, True)
    assert (r["progression_day"], r["progression_event"]) == (84.0, True)
    r = _row(events, "P1-N1")
    assert np.isnan(r["response_day"]) and pd.isna(r["response_event"])
    assert (r["progression_day"], r["progression_event"]) == (84.0, True)
    r = _row(events, "P5-NT1")  # no target lesion, stable: censored at its last assessment
    assert not r["response_event"] and not r["progression_event"] and r["progression_day"] == 45.0


def test_sequences_ties_and_patients_without_progression(events):
    seq = events.sequences
    p1 = seq[seq["patient_id"] == "P1"]
    assert p1["organ"].tolist() == ["lung", "bone", "brain_cns"]
    assert p1["rank"].tolist() == [1, 2, 2]
    assert p1["tied"].tolist() == [False, True, True]
    tuples = events.sequence_tuples()
    assert tuples["P1"] == ("lung", "bone", "brain_cns")
    assert events.sequence_tuples(grouped=True)["P1"] == (("lung",), ("bone", "brain_cns"))
    assert tuples["P2"] == () and tuples["P3"] == ()
    pts = events.patients.set_index("patient_id")
    assert list(pts.index) == ["P1", "P2", "P3", "P4", "P5"]
    assert pts.loc["P1", "n_progressed_organs"] == 3 and pts.loc["P1", "first_organs"] == "lung"
    assert pts.loc["P1", "first_progression_day"] == pytest.approx(40.0)
    assert pts.loc["P2", "n_progressed_organs"] == 0 and pd.isna(pts.loc["P2", "first_organs"])
    assert pts.loc["P2", "n_lesions"] == 1 and pts.loc["P1", "n_target_lesions"] == 2
    assert pts.loc["P1", "os_days"] == 400.0


def test_summary_organ_without_events(events):
    s = events.summary()
    assert list(s.columns) == ["kind", "organ", "n_lesions", "n_response_events", "n_progression_events",
                               "response_percent", "progression_percent"]
    skin = s[(s["kind"] == "target") & (s["organ"] == "skin")].iloc[0]
    assert (skin["n_lesions"], skin["n_response_events"], skin["n_progression_events"]) == (1, 0, 0)
    new = s[s["kind"] == "new"].iloc[0]
    assert np.isnan(new["response_percent"]) and new["progression_percent"] == 100.0
    assert s["n_lesions"].sum() == len(events.table)


def test_repr_and_html(events):
    text = repr(events)
    assert text.startswith("LesionEvents(8 lesions [5 target, 2 non-target, 1 new]")
    assert "<table" in events._repr_html_()


def test_model_tables(events):
    resp = events.model_table("response")
    assert set(resp["kind"]) == {"target", "nontarget"}
    assert resp["event"].dtype == bool and "duration_day" in resp.columns
    prog = events.model_table("progression")
    assert len(prog) == 8 and prog["event"].sum() == 3
    with pytest.raises(ConfigError):
        events.model_table("os")


def test_round_trip(tmp_path, events):
    folder = events.to_dir(tmp_path / "events")
    for name in ("table", "sequences", "patients", "curves"):
        assert (folder / f"{name}.parquet").is_file() and (folder / f"{name}.csv").is_file()
    back = LesionEvents.from_dir(folder)
    assert back.equals(events)
    assert back.rules == events.rules and back.meta == events.meta
    with pytest.raises(DataError):
        LesionEvents.from_dir(tmp_path)


def test_round_trip_recist(tmp_path):
    ev = derive_events(_cohort(), _parameters(), EventRules.recist())
    back = LesionEvents.from_dir(ev.to_dir(tmp_path / "e"))
    assert back.rules.name == "recist" and back.rules.progression_mm3 is None and back.equals(ev)


def test_determinism_and_input_order():
    a = derive_events(_cohort(), _parameters())
    b = derive_events(_cohort(), _parameters().iloc[::-1].reset_index(drop=True))
    assert a.equals(b)


def test_recist_is_stricter():
    paper = derive_events(_cohort(), _parameters())
    recist = derive_events(_cohort(), _parameters(), EventRules.recist())
    assert recist.table["response_event"].fillna(False).sum() <= paper.table["response_event"].fillna(False).sum()
    t = recist.table.set_index("lesion_id")
    assert not t.loc["P1-T1", "response_event"]  # -20% on day 50 is not -65.7%


def test_fit_like_inputs_mode_and_mean():
    p = _parameters().rename(columns={"v0": "v0_mm3", "t0": "t0_day"})
    for c in ("kg", "kd", "f"):
        p[f"{c}_mean"] = p[c]
    p.loc[0, "kd_mean"] = KD50 * 2  # response on day 25 with the conditional mean
    fit = SimpleNamespace(individual=p)
    mode = derive_events(_cohort(), fit)
    mean = derive_events(_cohort(), fit, estimate="mean")
    assert _row(mode, "P1-T1")["response_day"] == pytest.approx(50.0)
    assert _row(mean, "P1-T1")["response_day"] == pytest.approx(25.0)
    assert mean.meta["estimate"] == "mean"
    with pytest.raises(ConfigError):
        derive_events(_cohort(), fit, estimate="median")
    with pytest.raises(DataError):
        derive_events(_cohort(), _parameters().drop(columns="kg"))
    with pytest.raises(DataError):
        derive_events(_cohort(), pd.concat([_parameters(), _parameters().iloc[:1]]))


def test_v0_t0_from_the_cohort_when_missing():
    p = lesion_parameters(_parameters().drop(columns=["v0", "t0"]), _cohort())
    row = p.set_index("lesion_id").loc["P3-T1"]
    assert row["t0"] == -10.0
    assert row["v0"] == pytest.approx(40.0 * (40.0 / 1.31) ** 2 / 2)


def test_missing_parameters_and_unseen_new_lesions_are_left_out_with_a_warning():
    c = _cohort()
    lesions = pd.concat([c.lesions, pd.DataFrame({"lesion_id": ["P3-N9"], "patient_id": ["P3"], "kind": ["new"],
                                                   "site": ["LUNG"], "organ": ["lung"]})])
    c2 = Cohort.from_tables(c.patients, lesions, c.measurements, c.assessments)
    p = _parameters()
    p = p[p["lesion_id"] != "P3-T1"]
    with pytest.warns(ExclusionWarning) as record:
        ev = derive_events(c2, p)
    messages = " ".join(str(w.message) for w in record)
    assert "P3-T1" in messages and "P3-N9" in messages
    assert "P3-T1" not in set(ev.table["lesion_id"]) and "P3-N9" not in set(ev.table["lesion_id"])
    assert ev.patients.set_index("patient_id").loc["P3", "n_lesions"] == 0


def test_no_warning_on_clean_input():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        derive_events(_cohort(), _parameters())


def test_bad_rules_argument():
    with pytest.raises(ConfigError):
        derive_events(_cohort(), _parameters(), rules={"response_fraction": 0.3})


def _one_lesion_cohort() -> Cohort:
    return Cohort.from_tables(
        pd.DataFrame({"patient_id": ["P1"]}),
        pd.DataFrame({"lesion_id": ["L1"], "patient_id": ["P1"], "kind": ["target"], "site": ["LIVER"],
                      "organ": ["liver"]}),
        pd.DataFrame({"lesion_id": ["L1", "L1"], "day": [-3, 60], "diameter_mm": [20.0, 21.0]}),
    )


def test_patient_with_one_lesion_and_no_event():
    params = pd.DataFrame({"lesion_id": ["L1"], "kg": [0.01], "kd": [0.01], "f": [0.5], "v0": [1000.0],
                           "t0": [-3.0]})
    ev = derive_events(_one_lesion_cohort(), params)
    row = ev.table.iloc[0]
    assert not row["response_event"] and not row["progression_event"]
    assert row["response_day"] == row["progression_day"] == row["last_day"] == 60.0
    assert ev.sequences.empty and ev.sequence_tuples()["P1"] == ()
    assert ev.patients["n_progressed_organs"].tolist() == [0]


def test_every_target_without_parameters_gives_an_empty_table():
    empty = pd.DataFrame({"lesion_id": pd.Series([], dtype="string"), "kg": [], "kd": [], "f": [], "v0": [],
                          "t0": []})
    with pytest.warns(ExclusionWarning, match="L1"):
        ev = derive_events(_one_lesion_cohort(), empty)
    assert ev.table.empty and ev.summary().empty and ev.patients["patient_id"].tolist() == ["P1"]
    assert str(ev.table["progression_event"].dtype) == "boolean"

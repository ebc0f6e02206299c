"""Non-target and new lesions: days from assessments (lesionatlas.events.assessed)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from lesionatlas.events import EventRules, new_lesion_days, nontarget_days


def _assess(rows):
    return pd.DataFrame(rows, columns=["lesion_id", "day", "status"]).astype(
        {"lesion_id": "string", "day": float, "status": "string"})


def test_nontarget_first_response_and_first_progression():
    a = _assess([
        ("A", -7, "present"), ("A", 42, "SD"), ("A", 84, "PR"), ("A", 126, "CR"), ("A", 168, "PD"), ("A", 210, "PD"),
        ("B", -7, "present"), ("B", 42, "absent"),
        ("C", -7, "present"), ("C", 42, "PD"), ("C", 84, "absent"),  # gone after progressing: no response
        ("D", -7, "present"), ("D", 42, "NE"), ("D", 84, "SD"),
        ("E", -7, "PD"), ("E", 42, "present"),  # a pre-treatment status is not an event
    ])
    out = nontarget_days(pd.Series(["A", "B", "C", "D", "E", "F"]), a, EventRules())
    assert out["lesion_id"].tolist() == ["A", "B", "C", "D", "E", "F"]
    np.testing.assert_array_equal(out["response_day"], [84, 42, np.nan, np.nan, np.nan, np.nan])
    np.testing.assert_array_equal(out["progression_day"], [168, np.nan, 42, np.nan, np.nan, np.nan])


def test_response_on_the_progression_day_does_not_count():
    a = _assess([("A", 0, "present"), ("A", 42, "PD"), ("B", 42, "PR"), ("B", 84, "PD")])
    out = nontarget_days(pd.Series(["A", "B"]), a, EventRules())
    np.testing.assert_array_equal(out["response_day"], [np.nan, 42])


def test_statuses_are_configurable():
    a = _assess([("A", 42, "PR"), ("A", 84, "CR")])
    out = nontarget_days(pd.Series(["A"]), a, EventRules(response_statuses=("CR",)))
    assert out["response_day"].tolist() == [84.0]


def test_new_lesions_day_first_seen():
    a = _assess([
        ("N1", 84, "new"), ("N1", 126, "PD"),
        ("N2", 42, "present"), ("N2", 84, "new"),  # flagged day wins over an earlier plain assessment
        ("N3", 126, "present"),  # no 'new' status: first assessment
        ("N4", -3, "new"),  # before treatment start: day 0
    ])
    out = new_lesion_days(pd.Series(["N1", "N2", "N3", "N4", "N5"]), a, EventRules())
    np.testing.assert_array_equal(out["progression_day"], [84, 84, 126, 0, np.nan])


def test_empty_inputs():
    a = _assess([])
    assert nontarget_days(pd.Series([], dtype="string"), a, EventRules()).empty
    out = new_lesion_days(pd.Series(["N"]), a, EventRules())
    assert np.isnan(out["progression_day"].iloc[0])

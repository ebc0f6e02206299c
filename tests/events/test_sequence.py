"""Organ progression sequences: order, ties, empty sequences (lesionatlas.events.sequence)."""
from __future__ import annotations

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from lesionatlas.events import organ_sequences, sequence_tuples


def _events(rows):
    return pd.DataFrame(rows, columns=["patient_id", "organ", "progression_day", "progression_event"])


def test_order_ties_and_censored_lesions():
    ev = _events([
        ("P1", "lung", 84.0, True), ("P1", "liver", 42.0, True), ("P1", "liver", 20.0, False),  # censored
        ("P1", "bone", 42.0, True), ("P1", "liver", 126.0, True), ("P1", "skin", 300.0, False),
        ("P2", "liver", 10.0, True), ("P2", None, 30.0, True),
        ("P3", "lung", 50.0, False),
    ])
    seq = organ_sequences(ev)
    p1 = seq[seq["patient_id"] == "P1"]
    assert p1["organ"].tolist() == ["bone", "liver", "lung"]
    assert p1["rank"].tolist() == [1, 1, 3]
    assert p1["position"].tolist() == [1, 2, 3]
    assert p1["tied"].tolist() == [True, True, False]
    assert p1["day"].tolist() == [42.0, 42.0, 84.0]
    assert seq[seq["patient_id"] == "P2"]["organ"].tolist() == ["liver", "unknown"]
    assert "P3" not in set(seq["patient_id"])
    flat = sequence_tuples(seq, ["P1", "P2", "P3"])
    assert flat["P1"] == ("bone", "liver", "lung")
    assert flat["P3"] == ()
    grouped = sequence_tuples(seq, ["P1", "P3"], grouped=True)
    assert grouped["P1"] == (("bone", "liver"), ("lung",))
    assert grouped["P3"] == ()


def test_row_order_does_not_matter():
    ev = _events([("P1", "lung", 84.0, True), ("P1", "bone", 42.0, True), ("P1", "liver", 42.0, True)])
    a = organ_sequences(ev)
    b = organ_sequences(ev.iloc[::-1].reset_index(drop=True))
    pd.testing.assert_frame_equal(a, b)


organs = st.sampled_from(["liver", "lung", "bone", "peritoneum", "skin"])
rows = st.lists(st.tuples(st.sampled_from(["P1", "P2", "P3"]), organs, st.integers(0, 10).map(float), st.booleans()),
                max_size=30)


@settings(max_examples=100, deadline=None)
@given(rows)
def test_sequence_properties(data):
    ev = _events(data)
    seq = organ_sequences(ev)
    # one row per (patient, progressing organ), at that organ's first progression
    hit = ev.loc[ev["progression_event"].astype(bool).to_numpy()]
    expected = hit.groupby(["patient_id", "organ"])["progression_day"].min()
    got = seq.set_index(["patient_id", "organ"])["day"]
    assert dict(got) == dict(expected)
    for _, g in seq.groupby("patient_id"):
        assert g["position"].tolist() == list(range(1, len(g) + 1))
        assert g["day"].is_monotonic_increasing
        # rank = 1 + number of organs strictly earlier
        days = g["day"].tolist()
        assert g["rank"].tolist() == [1 + sum(d < x for d in days) for x in days]
        assert g["tied"].tolist() == [days.count(x) > 1 for x in days]

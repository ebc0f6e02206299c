from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lesionatlas.data import Cohort, diameter_from_volume, read_cohort, volume_from_diameter
from lesionatlas.data.schema import COLUMNS, TABLES


def test_volume_formula_by_hand():
    # L = 20 mm, S = 20 / 1.31, V = L S^2 / 2
    s = 20 / 1.31
    assert volume_from_diameter(20.0) == pytest.approx(20 * s * s / 2, rel=1e-12)
    assert volume_from_diameter(10.0, axis_ratio=1.0) == pytest.approx(500.0)


@given(st.floats(min_value=0.1, max_value=500), st.floats(min_value=1.0, max_value=3.0))
def test_volume_diameter_round_trip(diameter, ratio):
    v = volume_from_diameter(diameter, ratio)
    assert diameter_from_volume(v, ratio) == pytest.approx(diameter, rel=1e-9)
    # volume scales with the cube of the diameter
    assert volume_from_diameter(2 * diameter, ratio) == pytest.approx(8 * v, rel=1e-9)


def test_from_tables_derives_volume_flag_and_organ(tiny_tables):
    c = Cohort.from_tables(**tiny_tables)
    m = c.measurements.set_index(["lesion_id", "day"])
    assert m.loc[("L1", -10.0), "volume_mm3"] == pytest.approx(volume_from_diameter(30.0))
    # 8 mm -> 149 mm3 < 200 mm3 limit
    assert bool(m.loc[("L1", 84.0), "below_limit"]) is True
    assert bool(m.loc[("L1", 42.0), "below_limit"]) is False
    organs = dict(zip(c.lesions["lesion_id"], c.lesions["organ"]))
    assert organs == {"L1": "liver", "L2": "lung", "L3": "lymph_node_distal", "L4": "bone"}
    for name in TABLES:
        assert list(c.table(name).columns) == list(COLUMNS[name])
        for col, dtype in COLUMNS[name].items():
            assert str(c.table(name)[col].dtype) == dtype, (name, col)


def test_inputs_not_modified(tiny_tables):
    before = {k: v.copy() for k, v in tiny_tables.items()}
    Cohort.from_tables(**tiny_tables)
    for k in before:
        pd.testing.assert_frame_equal(before[k], tiny_tables[k])


def test_limit_and_axis_ratio_configurable(tiny_tables):
    c = Cohort.from_tables(**tiny_tables, axis_ratio=1.0, limit_mm3=20_000)
    assert c.meta["axis_ratio"] == 1.0
    assert c.measurements["below_limit"].all()
    assert c.measurements["volume_mm3"].iloc[0] == pytest.approx(30**3 / 2)


@pytest.mark.parametrize("csv", [False, True])
def test_round_trip_parquet_and_csv(tmp_path, tiny_tables, csv):
    c = Cohort.from_tables(**tiny_tables, limit_mm3=150.0)
    out = c.to_dir(tmp_path / "cohort", csv=csv, parquet=not csv)
    back = read_cohort(out)
    assert back.equals(c)
    assert back.meta["limit_mm3"] == 150.0


def test_tidy_csv_folder_reads(tidy_dir):
    c = read_cohort(tidy_dir)
    assert c.counts() == {
        "patients": 2, "lesions": 4, "target_lesions": 2, "nontarget_lesions": 1, "new_lesions": 1,
        "measurements": 5, "measurements_below_limit": 1, "assessments": 3,
    }
    assert c.patients["age"].tolist() == [61.0, 55.0]


def test_subset_keeps_children(tiny_tables):
    c = Cohort.from_tables(**tiny_tables).subset(["P2"])
    assert c.patients["patient_id"].tolist() == ["P2"]
    assert set(c.lesions["lesion_id"]) == {"L3", "L4"}
    assert set(c.measurements["lesion_id"]) == {"L3"}
    assert set(c.assessments["lesion_id"]) == {"L4"}


def test_summary_and_repr(tiny_tables):
    c = Cohort.from_tables(**tiny_tables)
    s = c.summary().set_index("quantity")["value"]
    assert s["lesions_per_patient_median"] == 2
    # P2's bone lesion is new: not a baseline metastatic organ
    assert s["patients_with_2_organs_percent"] == 50.0
    assert s["patients_with_1_organs_percent"] == 50.0
    assert "2 patients" in repr(c)
    assert math.isclose(s["measurements_per_target_lesion_median"], 2.5)


def test_write_is_atomic_on_failure(tmp_path, tiny_tables, monkeypatch):
    c = Cohort.from_tables(**tiny_tables)
    out = c.to_dir(tmp_path / "cohort")
    before = sorted(p.name for p in out.iterdir())

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", boom)
    with pytest.raises(RuntimeError):
        c.to_dir(out)
    assert sorted(p.name for p in out.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["cohort"]
    assert np.isfinite(read_cohort(out).measurements["volume_mm3"]).all()


def test_sex_spellings_and_converted_duplicates(tiny_tables):
    t = {k: v.copy() for k, v in tiny_tables.items()}
    t["patients"]["sex"] = ["male", "Female"]
    # "30" and "30.0" are the same measurement once converted: one row survives
    extra = pd.DataFrame({"lesion_id": ["L1"], "day": ["-10.0"], "diameter_mm": ["30.0"]})
    t["measurements"] = pd.concat([t["measurements"], extra], ignore_index=True)
    c = Cohort.from_tables(**t)
    assert c.patients["sex"].tolist() == ["M", "F"]
    assert len(c.measurements) == 5

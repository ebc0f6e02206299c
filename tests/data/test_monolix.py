from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lesionatlas.data import detect_format, read_cohort
from lesionatlas.errors import DataError, DataWarning

# The layout of the authors' Monolix demo dataset (model265.mlxtran): lesionID, time, DV, CENSORING with
# DV holding the limit, LIMIT = 0 on censored rows and "." elsewhere, V0/T0 regressors, extra columns.
DEMO = """lesionID,time,size,shortaxis,volume,V0,T0,CENSORING,LIMIT,DV,time_o,T02
1,-21,39,29.77,17283.08374,17283.08374,-21,0,.,17283.08374,-21,-21
1,41,35,26.71,12491.98765,17283.08374,-21,0,.,12491.98765,41,-21
1,91,30,22.90,7866.674436,17283.08374,-21,0,.,7866.674436,91,-21
6,-3,22,16.79,3102.383311,3102.383311,-3,0,.,3102.383311,-3,-3
6,39,17,12.97,1431.443389,3102.383311,-3,0,.,1431.443389,39,-3
6,128,4,3.05,18.646932,3102.383311,-3,1,0,200,128,-3
6,170,6,4.58,62.93339549,3102.383311,-3,1,0,200,170,-3
"""


@pytest.fixture
def demo_csv(tmp_path):
    path = tmp_path / "demo.csv"
    path.write_text(DEMO)
    return path


def test_detects_monolix(demo_csv):
    assert detect_format(demo_csv) == "monolix"


def test_reads_authors_layout(demo_csv):
    before = demo_csv.read_bytes()
    c = read_cohort(demo_csv)
    assert demo_csv.read_bytes() == before
    assert c.counts()["target_lesions"] == 2
    assert c.counts()["patients"] == 2  # one pseudo-patient per lesion
    m = c.measurements
    assert len(m) == 7
    cens = m[m["below_limit"]]
    assert cens["lesion_id"].tolist() == ["6", "6"]
    assert cens["volume_mm3"].tolist() == [200.0, 200.0]  # DV holds the limit
    assert cens["lower_limit_mm3"].tolist() == [0.0, 0.0]  # LIMIT column: interval [0, 200]
    assert m.loc[~m["below_limit"], "lower_limit_mm3"].isna().all()
    assert m.loc[m["lesion_id"] == "1", "volume_mm3"].iloc[0] == pytest.approx(17283.08374)
    les = c.lesions.set_index("lesion_id")
    assert les.loc["1", "baseline_volume_mm3"] == pytest.approx(17283.08374)
    assert les.loc["6", "baseline_day"] == -3
    assert (c.lesions["kind"] == "target").all()
    # the size column is the longest diameter
    assert m["diameter_mm"].iloc[0] == 39


def test_measured_values_under_limit_are_not_censored(tmp_path):
    # An uncensored DV of 150 is a measurement, not a censored value: the file's flag decides.
    path = tmp_path / "d.csv"
    path.write_text("ID,TIME,DV,CENS\n1,0,1000,0\n1,40,150,0\n1,80,200,1\n")
    m = read_cohort(path).measurements
    assert m["below_limit"].tolist() == [False, False, True]


def test_patient_column_and_mdv(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text(
        "USUBJID,LESID,TIME,Y,MDV\n"
        "P1,1,0,1000,0\nP1,1,40,800,0\nP1,2,0,500,0\nP2,1,0,700,0\nP2,1,30,.,1\n"
    )
    with pytest.warns(DataWarning) as caught:
        c = read_cohort(path)
    assert any("1 dosing or missing-DV" in str(w.message) for w in caught)
    assert sorted(c.patients["patient_id"]) == ["P1", "P2"]
    # lesion ids repeat across patients: made unique with the patient id
    assert sorted(c.lesions["lesion_id"]) == ["P1-1", "P1-2", "P2-1"]
    assert len(c.measurements) == 4


def test_explicit_columns(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("lesion,when,vol,flag\na,0,1000,0\na,40,200,1\n")
    with pytest.raises(DataError, match="no column found for id, time, dv"):
        read_cohort(path)
    c = read_cohort(path, id="lesion", time="when", dv="vol", cens="flag")
    assert c.measurements["below_limit"].tolist() == [False, True]
    with pytest.raises(DataError, match="'nope' given for --id"):
        read_cohort(path, id="nope", time="when", dv="vol")


def test_non_numeric_dv_is_a_clear_error(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("ID,TIME,DV\n1,0,1000\n1,40,big\n")
    with pytest.raises(DataError) as err:
        read_cohort(path)
    assert "DV" in str(err.value)


def test_empty_and_missing(tmp_path):
    empty = tmp_path / "e.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        read_cohort(empty)
    header = tmp_path / "h.csv"
    header.write_text("ID,TIME,DV\n")
    with pytest.raises(DataError, match="no rows"):
        read_cohort(header)
    with pytest.raises(DataError, match="no such file"):
        read_cohort(tmp_path / "missing.csv")


def test_volumes_kept_exactly(tmp_path):
    rng = np.random.default_rng(0)
    vol = rng.lognormal(8, 1, size=20)
    frame = pd.DataFrame({"ID": np.repeat(np.arange(5), 4), "TIME": np.tile([-7, 40, 80, 120], 5), "DV": vol})
    path = tmp_path / "d.csv"
    frame.to_csv(path, index=False)
    m = read_cohort(path).measurements
    np.testing.assert_allclose(np.sort(m["volume_mm3"].to_numpy()), np.sort(vol), rtol=1e-12)


def test_monolix_export_round_trip(tmp_path, tiny_tables):
    from lesionatlas.data import Cohort
    from lesionatlas.data.writers import write_monolix

    c = Cohort.from_tables(**tiny_tables)
    path = write_monolix(c, tmp_path / "mlx.csv")
    back = read_cohort(path)
    assert sorted(back.lesions["lesion_id"]) == ["L1", "L3"]
    assert dict(zip(back.lesions["lesion_id"], back.lesions["patient_id"])) == {"L1": "P1", "L3": "P2"}
    a = c.measurements.set_index(["lesion_id", "day"])
    b = back.measurements.set_index(["lesion_id", "day"])
    observed = ~a["below_limit"]
    np.testing.assert_allclose(b.loc[a.index[observed], "volume_mm3"], a.loc[observed, "volume_mm3"], rtol=1e-9)
    # the censored row holds the limit in DV, with the interval [0, limit]
    assert b.loc[("L1", 84.0), "volume_mm3"] == 200.0 and bool(b.loc[("L1", 84.0), "below_limit"])
    assert b.loc[("L1", 84.0), "lower_limit_mm3"] == 0.0
    assert back.lesions.set_index("lesion_id").loc["L1", "baseline_day"] == -10

"""The CDISC SDTM reader, on the public pharmaverse test files in ../shared/data/sdtm_onco and on tiny
hand-made domains.

Expected values are computed here from the source tables with plain pandas, independently of the reader.
Known caveats of the shared data (see its README): ``*_onco`` values are random and ``rs_onco`` is not
derivable from ``tr_onco``; only the ``*_onco_recist`` set is internally consistent.
"""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lesionatlas.data import Cohort, detect_format, read_cohort
from lesionatlas.data.readers.sdtm import (
    find_domain_files,
    parse_dtc,
    read_domain_file,
    read_sdtm,
    read_sdtm_raw,
    study_day_to_day,
)
from lesionatlas.errors import DataError, DataWarning

SDTM_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "sdtm_onco"
RECIST = ("tu_onco_recist", "tr_onco_recist", "rs_onco_recist", "dm", "adsl", "adtte_onco")
ONCO = ("tu_onco", "tr_onco", "rs_onco", "dm", "adsl", "adtte_onco")

needs_data = pytest.mark.skipif(not SDTM_DIR.is_dir(), reason=f"shared SDTM test data not found at {SDTM_DIR}")


def _copy(folder: Path, names: tuple[str, ...], ext: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(SDTM_DIR / f"{name}.{ext}", folder / f"{name}.{ext}")
    return folder


def _source(name: str) -> pd.DataFrame:
    return pd.read_csv(SDTM_DIR / f"{name}.csv", dtype=str)


def _quiet(fn, *args, **kwargs):
    """Call a reader that warns (its notes become DataWarnings) and return (result, messages)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(*args, **kwargs)
    assert all(issubclass(w.category, DataWarning) for w in caught), [str(w.message) for w in caught]
    return out, [str(w.message) for w in caught]


@pytest.fixture(scope="module")
def recist_dir(tmp_path_factory) -> Path:
    if not SDTM_DIR.is_dir():
        pytest.skip("shared SDTM test data not found")
    return _copy(tmp_path_factory.mktemp("recist") / "xpt", RECIST, "xpt")


@pytest.fixture(scope="module")
def recist_csv_dir(tmp_path_factory) -> Path:
    if not SDTM_DIR.is_dir():
        pytest.skip("shared SDTM test data not found")
    return _copy(tmp_path_factory.mktemp("recist") / "csv", RECIST, "csv")


@pytest.fixture(scope="module")
def onco_dir(tmp_path_factory) -> Path:
    if not SDTM_DIR.is_dir():
        pytest.skip("shared SDTM test data not found")
    return _copy(tmp_path_factory.mktemp("onco") / "xpt", ONCO, "xpt")


@pytest.fixture(scope="module")
def recist_raw(recist_dir):
    return read_sdtm_raw(recist_dir)


@pytest.fixture(scope="module")
def onco_raw(onco_dir):
    return read_sdtm_raw(onco_dir)


def _origin() -> pd.Series:
    dm = _source("dm")
    return pd.Series(pd.to_datetime(dm["RFSTDTC"]).to_numpy(), index=dm["USUBJID"])


# ------------------------------------------------------------------------------------------- recist set
@needs_data
def test_recist_lesion_counts_per_subject_and_kind(recist_raw):
    tu = _source("tu_onco_recist")
    tu = tu[tu["TUEVAL"] == "INVESTIGATOR"]
    expected = tu.groupby(["USUBJID", "TUSTRESC"]).size()
    expected.index = expected.index.set_levels(
        expected.index.levels[1].map({"TARGET": "target", "NON-TARGET": "nontarget"}), level=1
    )
    lesions = recist_raw.tables["lesions"]
    got = lesions.groupby(["patient_id", "kind"]).size()
    assert got.sort_index().to_dict() == expected.sort_index().to_dict()
    assert lesions["lesion_id"].is_unique
    assert len(lesions) == 25 and (lesions["kind"] == "target").sum() == 20
    assert set(lesions["lesion_id"]) == set(tu["USUBJID"] + "/" + tu["TULNKID"])
    assert lesions.set_index("lesion_id").loc["01-701-1015/T02", "site"] == "LYMPH NODE"


@needs_data
def test_recist_diameters_match_source_rows(recist_raw):
    """LPERP (short axis) for LYMPH NODE lesions, LDIAM otherwise; day = TRDTC - RFSTDTC in days."""
    tu = _source("tu_onco_recist")
    tr = _source("tr_onco_recist")
    tu, tr = tu[tu["TUEVAL"] == "INVESTIGATOR"], tr[tr["TREVAL"] == "INVESTIGATOR"]
    site = tu.set_index(tu["USUBJID"] + "/" + tu["TULNKID"])["TULOC"]
    tr = tr.assign(lesion_id=tr["USUBJID"] + "/" + tr["TRLNKID"])
    tr = tr[tr["TRGRPID"] == "TARGET"]
    wanted = np.where(tr["lesion_id"].map(site) == "LYMPH NODE", "LPERP", "LDIAM")
    tr = tr[tr["TRTESTCD"] == wanted].drop_duplicates(["lesion_id", "VISITNUM"])
    # caveat: subject 01-701-1015 WEEK 6 has the partial date 2014-02 (no TRDY): imputed to the 15th
    dates = pd.to_datetime(tr["TRDTC"].where(tr["TRDTC"].str.len() == 10, tr["TRDTC"] + "-15"))
    day = (dates.to_numpy() - tr["USUBJID"].map(_origin()).to_numpy()) / np.timedelta64(1, "D")
    expected = pd.DataFrame({"lesion_id": tr["lesion_id"], "day": day, "diameter_mm": tr["TRSTRESN"].astype(float)})
    got = recist_raw.tables["measurements"]
    assert len(got) == len(expected) == 78
    merged = expected.merge(got, on=["lesion_id", "day"], how="outer", suffixes=("_expected", "_got"), indicator=True)
    assert (merged["_merge"] == "both").all()
    np.testing.assert_allclose(merged["diameter_mm_got"], merged["diameter_mm_expected"], rtol=1e-12)
    # 0 mm = the lesion is gone: kept as a measurement
    assert (got["diameter_mm"] == 0).sum() == (expected["diameter_mm"] == 0).sum() > 0
    # a lymph node is measured by its short axis: 1015/T02 at screening LPERP 32, not LDIAM 33.28
    row = got[(got["lesion_id"] == "01-701-1015/T02") & (got["day"] == 0)]
    assert row["diameter_mm"].tolist() == [32.0]


@needs_data
def test_recist_study_day_from_dates_day1_convention(recist_raw):
    """No TRDY in tr_onco_recist: day = TRDTC - RFSTDTC, so the screening scan on RFSTDTC is day 0."""
    m = recist_raw.tables["measurements"]
    assert set(m.loc[m["lesion_id"].str.startswith("01-701-1015/"), "day"]) == {0.0, 21.0, 44.0, 63.0}
    # 01-701-1028: RFSTDTC 2013-07-19; WEEK 3 scan 2013-08-09 -> 21 days
    assert sorted(set(m.loc[m["lesion_id"].str.startswith("01-701-1028/"), "day"])) == [0.0, 21.0, 42.0, 63.0]
    assert any("partial TRDTC" in n and "15th" in n for n in recist_raw.notes)


@needs_data
@pytest.mark.parametrize(("policy", "day", "n"), [("mid", 44.0, 78), ("first", 30.0, 78), ("skip", None, 76)])
def test_partial_dates_policy(recist_dir, policy, day, n):
    raw = read_sdtm_raw(recist_dir, partial_dates=policy)
    m = raw.tables["measurements"]
    assert len(m) == n
    days = set(m.loc[m["lesion_id"] == "01-701-1015/T01", "day"])
    if day is None:
        assert days == {0.0, 21.0, 63.0}
        assert any("skipped (partial_dates='skip')" in note for note in raw.notes)
    else:
        assert day in days


@needs_data
def test_recist_nontarget_tumstate_statuses(recist_raw):
    tr = _source("tr_onco_recist")
    tr = tr[(tr["TREVAL"] == "INVESTIGATOR") & (tr["TRTESTCD"] == "TUMSTATE")]
    expected = pd.DataFrame(
        {
            "lesion_id": tr["USUBJID"] + "/" + tr["TRLNKID"],
            "day": ((pd.to_datetime(tr["TRDTC"]).to_numpy() - tr["USUBJID"].map(_origin()).to_numpy())
                    / np.timedelta64(1, "D")),
            "status": tr["TRSTRESC"].str.lower(),
        }
    ).drop_duplicates()  # caveat: tr_onco_recist repeats the non-target rows of 01-701-1034 and -1097
    got = recist_raw.tables["assessments"]
    key = ["lesion_id", "day", "status"]
    assert sorted(map(tuple, got[key].astype(object).to_numpy())) == sorted(
        map(tuple, expected[key].astype(object).to_numpy())
    )
    assert any("repeated identical assessment" in n for n in recist_raw.notes)


@needs_data
def test_recist_patients_demographics_and_survival(recist_raw):
    p = recist_raw.tables["patients"].set_index("patient_id")
    tu = _source("tu_onco_recist")
    assert set(p.index) == set(tu["USUBJID"])  # only the tumour-evaluated subjects of DM's 306
    assert any("298 of 306" in n for n in recist_raw.notes)
    dm = _source("dm").set_index("USUBJID").loc[p.index]
    assert p["age"].tolist() == dm["AGE"].astype(float).tolist()
    assert p["sex"].tolist() == dm["SEX"].tolist()
    assert p["treatment"].tolist() == dm["ARM"].tolist()
    assert set(p["study_id"]) == {"CDISCPILOT01"}
    adtte = _source("adtte_onco")
    for code, prefix in (("OS", "os"), ("PFS", "pfs")):
        rows = adtte[adtte["PARAMCD"] == code].set_index("USUBJID").loc[p.index]
        # STARTDT = RFSTDTC here, and AVAL counts the start day as day 1: days from day 0 = AVAL - 1
        assert (rows["STARTDT"] == dm["RFSTDTC"]).all()
        assert p[f"{prefix}_days"].tolist() == (rows["AVAL"].astype(float) - 1).tolist()
        assert p[f"{prefix}_event"].tolist() == (rows["CNSR"] == "0").tolist()
    assert p.loc["01-701-1028", "pfs_days"] == 42 and bool(p.loc["01-701-1028", "pfs_event"])


@needs_data
def test_xpt_and_csv_give_the_same_cohort(recist_dir, recist_csv_dir):
    a, _ = _quiet(read_cohort, recist_dir)
    b, _ = _quiet(read_cohort, recist_csv_dir)
    for name in ("patients", "lesions", "measurements", "assessments"):
        # SAS transport stores IBM floats: diameters agree to ~1e-15, not bit for bit
        pd.testing.assert_frame_equal(a.table(name), b.table(name), check_exact=False, rtol=1e-12)
    assert a.meta["files"]["tu"].endswith("tu_onco_recist.xpt")
    assert b.meta["files"]["tu"].endswith("tu_onco_recist.csv")


@needs_data
def test_read_cohort_end_to_end(recist_dir):
    assert detect_format(recist_dir) == "sdtm"
    cohort, messages = _quiet(read_cohort, recist_dir)  # the reader's notes come back as DataWarnings
    assert any("partial TRDTC" in m for m in messages)
    assert isinstance(cohort, Cohort)
    assert cohort.counts()["patients"] == 8
    assert cohort.counts()["target_lesions"] == 20 and cohort.counts()["nontarget_lesions"] == 5
    assert cohort.meta["format"] == "sdtm" and cohort.meta["evaluator"] == "INVESTIGATOR"
    organ = cohort.lesions.set_index("lesion_id")["organ"]
    assert organ["01-701-1015/T02"].startswith("lymph_node") and organ["01-701-1015/T01"] == "adrenal"
    assert cohort.measurements["volume_mm3"].notna().all()
    same, _ = _quiet(read_sdtm, recist_dir)
    assert same.equals(cohort)


# ------------------------------------------------------------------------------------------- onco set
@needs_data
def test_onco_counts_and_diameters(onco_raw):
    tu, tr = _source("tu_onco"), _source("tr_onco")
    tu, tr = tu[tu["TUEVAL"] == "INVESTIGATOR"], tr[tr["TREVAL"] == "INVESTIGATOR"]
    lesions = onco_raw.tables["lesions"]
    assert len(lesions) == len(tu) == 198
    kinds = lesions.groupby("patient_id")["kind"].value_counts().unstack(fill_value=0)
    assert len(kinds) == 19 and (kinds["target"] == 5).all() and (kinds["nontarget"] == 5).all()
    assert kinds["new"].sum() == 8
    # non-target and new lesions have no TULOC in tu_onco: site stays missing (organ 'other')
    assert lesions.loc[lesions["kind"] != "target", "site"].isna().all()
    site = tu.set_index(tu["USUBJID"] + "/" + tu["TULNKID"])["TULOC"]
    tr = tr.assign(lesion_id=tr["USUBJID"] + "/" + tr["TRLNKID"])
    wanted = np.where(tr["lesion_id"].map(site) == "LYMPH NODE", "LPERP", "LDIAM")
    done = tr[(tr["TRGRPID"] == "TARGET") & (tr["TRTESTCD"] == wanted) & (tr["TRSTAT"] != "NOT DONE")]
    expected = pd.DataFrame(
        {"lesion_id": done["lesion_id"], "day": done["TRDY"].astype(float) - 1,
         "diameter_mm": done["TRSTRESN"].astype(float)}
    )
    got = onco_raw.tables["measurements"]
    assert len(got) == len(expected) == 443
    merged = expected.merge(got, on=["lesion_id", "day"], validate="one_to_one")
    np.testing.assert_allclose(merged["diameter_mm_x"], merged["diameter_mm_y"], rtol=1e-12)


@needs_data
def test_onco_not_done_rows_skipped(onco_raw):
    tr = _source("tr_onco")
    nd = tr[(tr["TREVAL"] == "INVESTIGATOR") & (tr["TRSTAT"] == "NOT DONE")]
    assert len(nd) == 21
    assert any("21 TR row(s) with TRSTAT = NOT DONE" in n for n in onco_raw.notes)
    keys = set(zip(nd["USUBJID"] + "/" + nd["TRLNKID"], nd["TRDY"].astype(float) - 1))
    for table in ("measurements", "assessments"):
        t = onco_raw.tables[table]
        assert not keys & set(zip(t["lesion_id"], t["day"]))


@needs_data
def test_onco_tumstate_statuses_and_new_lesions(onco_raw):
    tr = _source("tr_onco")
    tr = tr[(tr["TREVAL"] == "INVESTIGATOR") & (tr["TRTESTCD"] == "TUMSTATE") & tr["TRSTRESC"].notna()]
    mapping = {"PRESENT": "present", "ABSENT": "absent", "UNEQUIVOCAL": "PD", "EQUIVOCAL": "present"}
    status = tr["TRSTRESC"].map(mapping).where(tr["TRGRPID"] != "NEW", "new")  # new lesions: one visit each
    expected = pd.DataFrame(
        {"lesion_id": tr["USUBJID"] + "/" + tr["TRLNKID"], "day": tr["TRDY"].astype(float) - 1, "status": status}
    )
    got = onco_raw.tables["assessments"]
    merged = expected.merge(got, on=["lesion_id", "day"], how="outer", indicator=True, validate="one_to_one")
    assert (merged["_merge"] == "both").all() and len(merged) == 438
    assert (merged["status_x"] == merged["status_y"]).all()
    assert got["status"].value_counts().to_dict() == {"present": 214, "absent": 192, "PD": 24, "new": 8}


@needs_data
def test_onco_evaluator_choice(onco_dir, onco_raw):
    accepted = read_sdtm_raw(onco_dir, evaluator="ACCEPTED")
    radiologist = read_sdtm_raw(onco_dir, evaluator="radiologist 1")
    inv = onco_raw.tables["lesions"].set_index("lesion_id")
    acc = accepted.tables["lesions"].set_index("lesion_id")
    assert set(inv.index).isdisjoint(acc.index)  # the independent reads use link ids R1-...
    assert all(i.split("/")[1].startswith("R1-") for i in acc.index)
    assert len(acc) == len(inv) == 198
    # the same lesion slot has other sites in the two reads (caveat: tu_onco sites are random)
    paired = inv["site"].rename(lambda i: i.replace("/", "/R1-")).reindex(acc.index)
    assert (paired.fillna("") != acc["site"].fillna("")).sum() > 0
    # TR NOT DONE rows: 21 for the investigator, 43 for radiologist 1 (the accepted read)
    assert any("43 TR row(s) with TRSTAT = NOT DONE" in n for n in accepted.notes)
    assert len(accepted.tables["measurements"]) == 435 != len(onco_raw.tables["measurements"])
    assert accepted.meta["evaluator"] == "ACCEPTED"
    for name in ("lesions", "measurements", "assessments"):
        pd.testing.assert_frame_equal(accepted.tables[name], radiologist.tables[name])


@needs_data
def test_unknown_or_shared_evaluator_is_a_clear_error(onco_dir):
    with pytest.raises(DataError, match="RADIOLOGIST 1") as info:
        read_sdtm_raw(onco_dir, evaluator="RADIOLOGIST 9")
    assert info.value.code == "unknown-evaluator"
    assert "'ACCEPTED'" in info.value.message and "'INVESTIGATOR'" in info.value.message
    with pytest.raises(DataError, match="several readers") as info:
        read_sdtm_raw(onco_dir, evaluator="independent assessor")
    assert info.value.code == "ambiguous-evaluator"


# ------------------------------------------------------------------------------------------- files
@needs_data
def test_ambiguous_folder_names_candidates_and_how_to_choose(tmp_path):
    folder = _copy(tmp_path / "both", ("tu_onco", "tu_onco_recist", "tr_onco", "tr_onco_recist", "dm"), "xpt")
    with pytest.raises(DataError) as info:
        read_sdtm_raw(folder)
    message = info.value.message
    assert info.value.code == "ambiguous-domain"
    for name in ("tu_onco.xpt", "tu_onco_recist.xpt", "tr_onco.xpt", "tr_onco_recist.xpt", "domains=", "suffix="):
        assert name in message
    by_suffix = read_sdtm_raw(folder, suffix="onco_recist")
    by_mapping = read_sdtm_raw(folder, domains={"tu": "tu_onco_recist.xpt", "TR": "tr_onco_recist"})
    assert by_suffix.meta["files"] == by_mapping.meta["files"]
    assert len(by_suffix.tables["lesions"]) == 25
    assert len(read_sdtm_raw(folder, suffix="onco").tables["lesions"]) == 198


@needs_data
def test_xpt_preferred_over_csv_of_the_same_stem(tmp_path):
    folder = _copy(tmp_path / "mixed", ("tu_onco_recist", "tr_onco_recist"), "xpt")
    _copy(folder, ("tu_onco_recist", "tr_onco_recist", "dm"), "csv")
    files = find_domain_files(folder)
    assert files["tu"].name == "tu_onco_recist.xpt" and files["dm"].name == "dm.csv"
    assert "rs" not in files


@needs_data
def test_missing_tr_is_a_missing_file_error(tmp_path):
    folder = _copy(tmp_path / "no_tr", ("tu_onco_recist", "dm"), "csv")
    with pytest.raises(DataError, match="TR") as info:
        read_sdtm_raw(folder)
    assert info.value.code == "missing-file"
    with pytest.raises(DataError) as info:
        read_cohort(folder, format="sdtm")
    assert info.value.code == "missing-file"


def test_unreadable_file_is_a_data_error(tmp_path):
    (tmp_path / "tu.xpt").write_bytes(b"this is not a SAS transport file\x00\x01" * 10)
    (tmp_path / "tr.csv").write_text("USUBJID,TRLNKID,TRTESTCD\n")
    with pytest.raises(DataError) as info:
        read_sdtm_raw(tmp_path)
    assert info.value.code == "unreadable-file" and "tu.xpt" in info.value.message
    assert read_domain_file(tmp_path / "tr.csv").empty
    with pytest.raises(DataError) as info:  # a TR table given as TU lacks TULNKID
        read_sdtm_raw(tmp_path, domains={"tu": "tr.csv"})
    assert info.value.code == "missing-column" and "TULNKID" in info.value.message


def test_not_a_folder(tmp_path):
    with pytest.raises(DataError) as info:
        read_sdtm_raw(tmp_path / "nope")
    assert info.value.code == "not-found"


# ------------------------------------------------------------------------------------------- tiny domains
def _write(folder: Path, name: str, rows: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(folder / f"{name}.csv", index=False)


def _tr(subject, link, group, test, result, day=None, dtc=None, **extra) -> dict:
    number = pd.to_numeric(pd.Series([result]), errors="coerce").iloc[0]
    row = {"USUBJID": subject, "TRLNKID": link, "TRGRPID": group, "TRTESTCD": test, "TRORRES": result,
           "TRSTRESC": result, "TRSTRESN": number, "TRSTRESU": "mm" if test != "TUMSTATE" else "",
           "TRDY": day, "TRDTC": dtc}
    row.update(extra)
    return row


@pytest.fixture
def tiny_dir(tmp_path) -> Path:
    """One subject: a liver target (LDIAM, one 'too small'), a node measured by DIAMETER only, a lung target
    in cm, a non-target lesion with one visit lacking TUMSTATE (RS fills it), and a new lesion."""
    folder = tmp_path / "tiny"
    tu = [
        {"USUBJID": "S1", "TULNKID": "T01", "TUSTRESC": "TARGET", "TULOC": "LIVER", "TUDY": -3},
        {"USUBJID": "S1", "TULNKID": "T02", "TUSTRESC": "TARGET", "TULOC": "MEDIASTINAL LYMPH NODE", "TUDY": -3},
        {"USUBJID": "S1", "TULNKID": "T03", "TUSTRESC": "TARGET", "TULOC": "LUNG", "TUDY": -3},
        {"USUBJID": "S1", "TULNKID": "NT01", "TUSTRESC": "NON-TARGET", "TULOC": "BONE", "TUDY": -3},
        {"USUBJID": "S1", "TULNKID": "NEW01", "TUSTRESC": "NEW", "TULOC": "", "TUDY": 85},
        {"USUBJID": "S1", "TULNKID": "NEW02", "TUSTRESC": "NEW", "TULOC": "BRAIN", "TUDY": 120},
    ]
    tr = [
        _tr("S1", "T01", "TARGET", "LDIAM", "30", day=-3),
        _tr("S1", "T01", "TARGET", "LDIAM", "TOO SMALL TO MEASURE", day=43),
        _tr("S1", "T01", "TARGET", "LDIAM", "0", day=85),
        _tr("S1", "T02", "TARGET", "DIAMETER", "18", day=-3),
        _tr("S1", "T02", "TARGET", "DIAMETER", "12", day=43),
        _tr("S1", "T03", "TARGET", "LDIAM", "2.5", day=-3, TRSTRESU="cm"),
        _tr("S1", "T03", "TARGET", "LDIAM", "", day=43, TRSTAT="NOT DONE"),
        _tr("S1", "", "TARGET", "SUMDIAM", "48", day=-3),
        _tr("S1", "NT01", "NON-TARGET", "TUMSTATE", "PRESENT", day=-3, VISITNUM=1),
        _tr("S1", "NT01", "NON-TARGET", "TUMSTATE", "UNEQUIVOCAL", day=85, VISITNUM=3),
        _tr("S1", "NEW01", "NEW", "TUMSTATE", "EQUIVOCAL", day=85, VISITNUM=3),
        _tr("S1", "NEW01", "NEW", "TUMSTATE", "UNEQUIVOCAL", day=127, VISITNUM=4),
        _tr("S1", "X09", "TARGET", "LDIAM", "11", day=-3),  # no TU record
    ]
    for row in tr:
        row.setdefault("VISITNUM", {-3: 1, 43: 2, 85: 3, 127: 4}[row["TRDY"]])
    rs = [
        {"USUBJID": "S1", "RSTESTCD": "NTRGRESP", "RSSTRESC": "NON-CR/NON-PD", "RSDY": 43, "VISITNUM": 2},
        {"USUBJID": "S1", "RSTESTCD": "NTRGRESP", "RSSTRESC": "PD", "RSDY": 85, "VISITNUM": 3},
        {"USUBJID": "S1", "RSTESTCD": "OVRLRESP", "RSSTRESC": "PD", "RSDY": 85, "VISITNUM": 3},
    ]
    dm = [{"STUDYID": "ST", "USUBJID": "S1", "RFSTDTC": "2020-01-10", "RFXSTDTC": "2020-01-11", "AGE": 60, "SEX": "M",
           "ARM": "Drug"},
          {"STUDYID": "ST", "USUBJID": "S2", "RFSTDTC": "2020-02-01", "AGE": 50, "SEX": "F", "ARM": "Drug"}]
    adtte = [
        {"USUBJID": "S1", "PARAMCD": "OS", "AVAL": 301, "STARTDT": "2020-01-10", "ADT": "2020-11-05", "CNSR": 0},
        {"USUBJID": "S1", "PARAMCD": "PFS", "AVAL": 86, "STARTDT": "2020-01-10", "ADT": "", "CNSR": 0},
    ]
    for name, rows in (("tu", tu), ("tr", tr), ("rs", rs), ("dm", dm), ("adtte", adtte)):
        _write(folder, name, rows)
    return folder


def test_tiny_measurements(tiny_dir):
    raw = read_sdtm_raw(tiny_dir)
    m = raw.tables["measurements"].set_index(["lesion_id", "day"])
    # TRDY -> day: DY - 1 for DY >= 1, DY itself for DY <= -1
    assert m.loc[("S1/T01", -3.0), "diameter_mm"] == 30
    assert m.loc[("S1/T01", 42.0), "diameter_mm"] == 5  # too small to measure
    assert bool(m.loc[("S1/T01", 42.0), "below_limit"])
    assert m.loc[("S1/T01", 84.0), "diameter_mm"] == 0  # gone, kept
    assert m.loc[("S1/T02", 42.0), "diameter_mm"] == 12  # node without LPERP: DIAMETER (noted)
    assert m.loc[("S1/T03", -3.0), "diameter_mm"] == 25  # cm -> mm
    assert ("S1/T03", 42.0) not in m.index  # NOT DONE
    assert len(m) == 7
    notes = " | ".join(raw.notes)
    for text in ("too small to measure", "NOT DONE", "no short axis", "no TU record", "1 of 2 subject(s)", "RFXSTDTC"):
        assert text in notes


def test_tiny_assessments_and_rs_fallback(tiny_dir):
    raw = read_sdtm_raw(tiny_dir)
    a = raw.tables["assessments"]
    got = {(r.lesion_id, r.day): r.status for r in a.itertuples()}
    assert got == {
        ("S1/NT01", -3.0): "present",
        ("S1/NT01", 42.0): "present",  # from RS NTRGRESP NON-CR/NON-PD: no TUMSTATE at that visit
        ("S1/NT01", 84.0): "PD",  # TUMSTATE UNEQUIVOCAL (RS PD not used: TUMSTATE exists)
        ("S1/NEW01", 84.0): "new",  # first appearance
        ("S1/NEW01", 126.0): "PD",
        ("S1/NEW02", 119.0): "new",  # no TR rows: TU day
    }
    assert any("NTRGRESP" in n for n in raw.notes)


def test_tiny_lesions_patients_and_survival(tiny_dir):
    raw = read_sdtm_raw(tiny_dir)
    lesions = raw.tables["lesions"].set_index("lesion_id")
    assert lesions.loc["S1/X09", "kind"] == "target" and pd.isna(lesions.loc["S1/X09", "site"])
    assert lesions.loc["S1/NEW01", "kind"] == "new" and pd.isna(lesions.loc["S1/NEW01", "site"])
    p = raw.tables["patients"]
    assert p["patient_id"].tolist() == ["S1"]  # S2 is in DM only
    assert p.loc[0, "treatment"] == "Drug" and p.loc[0, "age"] == 60
    assert p.loc[0, "os_days"] == 300 and bool(p.loc[0, "os_event"])  # 2020-11-05 - 2020-01-10
    assert p.loc[0, "pfs_days"] == 85  # no ADT: AVAL - 1
    assert any("AVAL - 1" in n for n in raw.notes)
    cohort, messages = _quiet(read_cohort, tiny_dir)
    assert cohort.counts()["new_lesions"] == 2
    assert any("no TU record" in m for m in messages)


def test_tiny_dates_without_dy(tmp_path):
    folder = tmp_path / "dates"
    _write(folder, "tu", [{"USUBJID": "S1", "TULNKID": "T01", "TUSTRESC": "TARGET", "TULOC": "LIVER"}])
    _write(folder, "tr", [
        _tr("S1", "T01", "TARGET", "LDIAM", "20", dtc="2020-01-08"),  # before RFSTDTC: SDTM day -2
        _tr("S1", "T01", "TARGET", "LDIAM", "21", dtc="2020-01-10T09:30"),
        _tr("S1", "T01", "TARGET", "LDIAM", "22", dtc="2020-03"),
        _tr("S1", "T01", "TARGET", "LDIAM", "23", dtc=""),
    ])
    _write(folder, "dm", [{"USUBJID": "S1", "RFSTDTC": "2020-01-10"}])
    raw = read_sdtm_raw(folder)
    m = raw.tables["measurements"]
    assert dict(zip(m["diameter_mm"], m["day"])) == {20.0: -2.0, 21.0: 0.0, 22.0: 65.0}
    assert any("neither TRDY nor a usable TRDTC" in n for n in raw.notes)


def test_evaluator_columns_absent_means_one_reader(tiny_dir):
    assert len(read_sdtm_raw(tiny_dir).tables["lesions"]) == 7
    with pytest.raises(DataError) as info:
        read_sdtm_raw(tiny_dir, evaluator="ACCEPTED")
    assert info.value.code == "unknown-evaluator" and "ACPTFL" in info.value.message


def test_bad_options(tiny_dir):
    with pytest.raises(DataError) as info:
        read_sdtm_raw(tiny_dir, domains={"xx": "tu.csv"})
    assert info.value.code == "bad-option"
    with pytest.raises(DataError) as info:
        read_sdtm_raw(tiny_dir, partial_dates="guess")  # type: ignore[arg-type]
    assert info.value.code == "bad-option"
    with pytest.raises(DataError) as info:
        read_sdtm_raw(tiny_dir, domains={"tu": "missing.xpt"})
    assert info.value.code == "missing-file"
    raw = read_sdtm_raw(tiny_dir, domains={"rs": None, "adtte": None})
    assert "rs" not in raw.meta["files"] and "os_days" not in raw.tables["patients"].columns
    assert ("S1/NT01", 42.0) not in set(zip(raw.tables["assessments"]["lesion_id"], raw.tables["assessments"]["day"]))


# ------------------------------------------------------------------------------------------- helpers
def test_study_day_to_day():
    assert study_day_to_day(pd.Series([1, 2, 43, -1, -7])).tolist() == [0, 1, 42, -1, -7]
    assert np.isnan(study_day_to_day(pd.Series([0])).iloc[0])


def test_parse_dtc_partial_policies():
    values = pd.Series(["2014-01-02", "2014-01", "2014", "2014-01-02T10:00", None, "garbage", "2014-02-30"])
    mid, partial = parse_dtc(values, "mid")
    assert partial.tolist() == [False, True, True, False, False, False, False]
    assert [str(d.date()) if pd.notna(d) else None for d in mid] == [
        "2014-01-02", "2014-01-15", "2014-07-01", "2014-01-02", None, None, None
    ]
    first, _ = parse_dtc(values, "first")
    assert str(first[1].date()) == "2014-01-01" and str(first[2].date()) == "2014-01-01"
    skip, _ = parse_dtc(values, "skip")
    assert skip[1:3].isna().all() and skip[0] == pd.Timestamp("2014-01-02")
    days = float((pd.Timestamp("2014-01-02") - pd.Timestamp("1960-01-01")).days)
    sas, _ = parse_dtc(pd.Series([0.0, days]))  # SAS date numbers: days since 1960-01-01
    assert sas.tolist() == [pd.Timestamp("1960-01-01"), pd.Timestamp("2014-01-02")]

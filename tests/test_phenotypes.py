from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest

from lesionatlas.data import ORGAN_GROUPS
from lesionatlas.errors import ConfigError, DataError
from lesionatlas.phenotypes import ORGAN_POSITIONS, OrganPhenotypes, classify_organs, patient_phenotype_groups

matplotlib.use("Agg")


def _hr(organ, r, p, width=0.2):
    return {"organ": organ, "response_hr": r, "response_ci_lower": r * np.exp(-width),
            "response_ci_upper": r * np.exp(width), "progression_hr": p,
            "progression_ci_lower": p * np.exp(-width), "progression_ci_upper": p * np.exp(width)}


@pytest.fixture
def hrs():
    return pd.DataFrame([_hr("liver", 1.6, 1.8), _hr("lung", 1.4, 0.6), _hr("bone", 0.5, 1.5),
                         _hr("skin", 0.8, 0.7), _hr("spleen", 1.05, 1.3, width=0.5)])


def test_paper_phenotypes(hrs):
    res = classify_organs(hrs)
    assert res.phenotype_of("liver") == "high-high"
    assert res.phenotype_of("lung") == "high-low"
    assert res.phenotype_of("bone") == "low-high"
    assert res.phenotype_of("skin") == "low-low"
    unc = dict(zip(res.table["organ"], res.table["uncertain"]))
    assert unc["spleen"] and not unc["liver"]  # spleen's response CI crosses 1
    assert res.summary()["n_organs"].sum() == 5


def test_median_threshold_moves_the_cut(hrs):
    res = classify_organs(hrs, threshold="median")
    assert res.response_threshold == pytest.approx(1.05)
    assert res.phenotype_of("spleen") == "low-low"  # not above the median on the response axis


def test_bad_input(hrs):
    with pytest.raises(ConfigError):
        classify_organs(hrs, threshold="mean")
    with pytest.raises(DataError, match="missing"):
        classify_organs(hrs.drop(columns="progression_hr"))
    bad = hrs.copy()
    bad.loc[0, "response_hr"] = 0
    with pytest.raises(DataError, match="non-positive"):
        classify_organs(bad)


def test_patient_groups(hrs):
    les = pd.DataFrame({"patient_id": ["a", "a", "b", "c", "c"], "organ": ["liver", "bone", "lung", "lung", "lung"]})
    g = patient_phenotype_groups(les, classify_organs(hrs)).set_index("patient_id")
    assert g["any_low_high"].tolist() == [True, False, False]
    assert g["only_high_low"].tolist() == [False, True, True]


def test_every_organ_has_a_position():
    assert set(ORGAN_GROUPS) <= set(ORGAN_POSITIONS)


def test_plots_and_round_trip(hrs, tmp_path):
    res = classify_organs(hrs, reference="abdominal")
    res.plot_quadrant().figure.savefig(tmp_path / "q.png")
    res.plot_anatomy().figure.savefig(tmp_path / "a.png")
    assert (tmp_path / "q.png").stat().st_size > 0 and (tmp_path / "a.png").stat().st_size > 0
    back = OrganPhenotypes.from_dir(res.to_dir(tmp_path / "ph"))
    pd.testing.assert_frame_equal(back.table, res.table)
    assert back.meta["reference"] == "abdominal" and "5 organs" in repr(back)

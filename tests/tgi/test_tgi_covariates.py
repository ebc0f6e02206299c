"""Covariates of the individual parameters: the design from the cohort's tables, the fit, the outputs."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from tgi_simulate import two_organ_tables

from lesionatlas.cli import main
from lesionatlas.config import load_config
from lesionatlas.data.cohort import Cohort
from lesionatlas.errors import ConfigError, DataError
from lesionatlas.tgi import TGIFit, TGIModel
from lesionatlas.tgi.covariates import build_design


def _small_cohort():
    lesions = pd.DataFrame({"lesion_id": ["A", "B", "C", "D"], "patient_id": ["P1", "P1", "P2", "P3"],
                            "kind": "target", "organ": ["liver", "lung", "liver", "bone"]})
    patients = pd.DataFrame({"patient_id": ["P1", "P2", "P3"], "age": [50.0, 60.0, 70.0],
                             "treatment_group": ["x", "y", "x"]})
    measurements = pd.DataFrame({"lesion_id": list("AABBCCDD"), "day": [-5.0, 40.0] * 4,
                                 "volume_mm3": [1000.0, 800.0, 2000.0, 2500.0, 500.0, 300.0, 4000.0, 4100.0]})
    return Cohort.from_tables(patients, lesions, measurements)


def test_specs_written_either_way_are_the_same():
    a = TGIModel(covariates={"kd": ["organ"], "kg": ["organ", "log_v0"]})
    b = TGIModel(covariates=["kg:organ", "kd:organ", "kg:log_v0", "kg:organ"])
    assert a == b and a.covariates == ("kg:organ", "kg:log_v0", "kd:organ")
    assert TGIModel(covariates=list(a.covariates)) == a  # as read back from meta.json
    with pytest.raises(ConfigError, match="unknown parameter.*kx"):
        TGIModel(covariates={"kx": ["organ"]})
    with pytest.raises(ConfigError, match="'param:name'"):
        TGIModel(covariates=["organ"])


def test_design_codes_levels_centres_numbers_and_joins_patients():
    cohort = _small_cohort()
    ids = np.array(["A", "B", "C", "D"])
    v0 = np.array([1000.0, 2000.0, 500.0, 4000.0])
    design = build_design(("kg:organ", "kg:age", "kd:organ", "f:treatment_group", "f:log_v0"), cohort, ids, v0)
    # organ: liver is the most frequent level, the reference; the other levels in sorted order
    assert design.columns == ("intercept", "organ_bone", "organ_lung", "age", "treatment_group_y", "log_v0")
    np.testing.assert_array_equal(design.x[:, 1], [0, 0, 0, 1])
    np.testing.assert_array_equal(design.x[:, 2], [0, 1, 0, 0])
    np.testing.assert_allclose(design.x[:, 3], [-7.5, -7.5, 2.5, 12.5])  # ages 50, 50, 60, 70 less their mean over lesions
    np.testing.assert_array_equal(design.x[:, 4], [0, 0, 1, 0])  # patient P2's group, joined to lesion C
    np.testing.assert_allclose(design.x[:, 5], np.log(v0) - np.log(v0).mean())
    assert design.mask.tolist() == [[True] * 3, [True, True, False], [True, True, False], [True, False, False],
                                    [False, False, True], [False, False, True]]
    names = [name for _, _, name in design.coefficient_names]
    assert names == ["beta_kg_organ_bone", "beta_kd_organ_bone", "beta_kg_organ_lung", "beta_kd_organ_lung",
                     "beta_kg_age", "beta_f_treatment_group_y", "beta_f_log_v0"]
    assert design.info[0] == {"name": "organ", "kind": "categorical", "reference": "liver",
                              "levels": ["liver", "bone", "lung"], "counts": {"liver": 2, "bone": 1, "lung": 1},
                              "parameters": ["kg", "kd"]}


@pytest.mark.parametrize(
    ("covariates", "message"),
    [
        (("kg:stage",), "no such column in the lesions or patients table"),
        (("kg:bmi",), "missing for 4 fitted lesion"),
        (("kg:kind",), "takes a single value"),
    ],
)
def test_design_errors_are_one_line(covariates, message):
    with pytest.raises(DataError, match=message) as err:
        build_design(covariates, _small_cohort(), np.array(["A", "B", "C", "D"]), np.ones(4))
    assert "\n" not in err.value.message


def test_a_measurements_table_covariate_must_be_constant_within_lesions():
    m = pd.DataFrame({"lesion_id": ["A", "A", "B"], "day": [0.0, 1.0, 0.0], "volume_mm3": [1.0, 2.0, 3.0],
                      "arm": ["x", "y", "x"]})
    with pytest.raises(DataError, match="varies within lesion"):
        build_design(("kg:arm",), m, np.array(["A", "B"]), np.ones(2))
    design = build_design(("kg:arm",), m.assign(arm=["x", "x", "y"]), np.array(["A", "B"]), np.ones(2))
    assert design.columns == ("intercept", "arm_y")


def test_config_takes_covariates_and_checks_them(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[tgi]\ncovariates = ["kd:organ", "kg:organ"]\n')
    assert load_config(path).tgi.covariates == ("kg:organ", "kd:organ")
    path.write_text('[tgi]\ncovariates = ["v:organ"]\n')
    with pytest.raises(ConfigError, match="tgi.covariates: unknown parameter"):
        load_config(path)


@pytest.fixture(scope="module")
def organ_fit():
    patients, lesions, measurements = two_organ_tables(300, seed=3)
    cohort = Cohort.from_tables(patients, lesions, measurements)
    spec = TGIModel(covariates={"kg": ["organ"], "kd": ["log_v0"]}, n_explore=200, n_smooth=150, n_is_draws=200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return spec.fit(cohort, seed=2), cohort


def test_fit_recovers_a_planted_organ_effect(organ_fit):
    fit, _ = organ_fit
    pop = fit.population.set_index("parameter")
    assert list(pop.index) == ["kg_pop", "kd_pop", "f_pop", "beta_kg_organ_lung", "beta_kd_log_v0",
                               "omega_kg", "omega_kd", "omega_f", "b"]
    beta = pop.loc["beta_kg_organ_lung"]
    assert beta["ci_lower"] < math.log(2.0) < beta["ci_upper"]  # planted: lung Kg twice liver's
    assert 0.03 < beta["se"] < 0.15
    null = pop.loc["beta_kd_log_v0"]
    assert null["ci_lower"] < 0.0 < null["ci_upper"]  # V0 plays no part in the simulation
    kg = pop.loc["kg_pop"]
    assert kg["ci_lower"] < 0.005 < kg["ci_upper"]  # the typical Kg of the reference organ (liver)
    assert fit.diagnostics["fisher_positive_definite"]
    assert fit.diagnostics["covariates"][0]["reference"] == "liver"
    assert "beta_kg_organ_lung" in fit.trace.columns
    assert fit.n_parameters == 9  # AIC/BIC count the coefficients


def test_random_effects_and_population_predictions_follow_the_covariates(organ_fit):
    fit, _ = organ_fit
    ind = fit.individual
    lung = ind["lesion_id"].str.startswith("lung").to_numpy()
    # the organ shift went into the typical values, not the random effects: without the covariate the
    # organs' mean eta_kg would differ by about log 2 (0.69) less the shrinkage
    assert abs(ind.loc[lung, "eta_kg"].mean() - ind.loc[~lung, "eta_kg"].mean()) < 0.15
    typical = fit.typical_phi()
    pop = fit.population.set_index("parameter")["estimate"]
    np.testing.assert_allclose(typical[~lung, 0], math.log(pop["kg_pop"]), atol=1e-9)
    np.testing.assert_allclose(typical[lung, 0], math.log(pop["kg_pop"]) + pop["beta_kg_organ_lung"], atol=1e-9)
    # a liver and a lung lesion of the same V0/T0: the lung lesion's population curve grows faster
    pred = fit.predict([300.0], kind="population").set_index("lesion_id")["volume_mm3"]
    rows = ind.set_index("lesion_id")
    growth = np.log(pred / rows["v0_mm3"])
    assert growth[lung].mean() > growth[~lung].mean()


def test_covariate_fit_round_trips(organ_fit, tmp_path):
    fit, _ = organ_fit
    back = TGIFit.from_dir(fit.to_dir(tmp_path / "fit"))
    assert back.equals(fit) and back.spec.covariates == ("kg:organ", "kd:log_v0")
    np.testing.assert_allclose(back.typical_phi(), fit.typical_phi())


def test_cli_covariate_option(tmp_path, capsys):
    patients, lesions, measurements = two_organ_tables(20, seed=1)
    folder = tmp_path / "tidy"
    folder.mkdir()
    for name, frame in (("patients", patients), ("lesions", lesions), ("measurements", measurements)):
        frame.to_csv(folder / f"{name}.csv", index=False)
    code = main(["fit-tgi", str(folder), "--out", str(tmp_path / "bad"), "--covariate", "kg=stage"])
    assert code == 2 and "covariate 'stage'" in capsys.readouterr().err
    code = main(["fit-tgi", str(folder), "--out", str(tmp_path / "bad"), "--covariate", "kg"])
    assert code == 2 and "--covariate must be PARAM=NAME" in capsys.readouterr().err
    code = main(["fit-tgi", str(folder), "--out", str(tmp_path / "out"), "--covariate", "kg=organ",
                 "--iterations", "40,20"])
    assert code == 0, capsys.readouterr().err
    population = pd.read_csv(tmp_path / "out" / "population.csv")
    assert "beta_kg_organ_lung" in set(population["parameter"])

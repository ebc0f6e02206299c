"""`lesionatlas predict MODEL DATA`: a model trained on simulated patterns scores new patients."""
from __future__ import annotations

import warnings

import pandas as pd
import pytest

from lesionatlas.cli import main
from lesionatlas.data import simulate_cohort
from lesionatlas.patterns import baseline_features, train_group_predictor


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    sim = simulate_cohort("mcrc", seed=3, n_patients=400)
    truth = sim.truth.table("patients").set_index("patient_id")
    features = baseline_features(sim.cohort)
    groups = truth.loc[features.index, "pattern"].astype(str)
    predictor = train_group_predictor(features, groups, seed=0, grid={"learning_rate": [0.1]}, cv=3, n_repeats=1,
                                      exclude=("no_progression",))
    folder = tmp_path_factory.mktemp("model")
    path = predictor.save(folder / "model.joblib")
    return predictor, path, features, folder


def test_predict_from_features_csv(trained, capsys):
    predictor, path, features, folder = trained
    csv = folder / "features.csv"
    features.reset_index().to_csv(csv, index=False)
    out = folder / "pred.csv"
    assert main(["predict", str(path), str(csv), "--out", str(out)]) == 0
    pred = pd.read_csv(out, dtype={"patient_id": str})
    assert len(pred) == len(features)
    expected = predictor.predict(features)
    assert pred.set_index("patient_id")["predicted_group"].tolist() == expected.loc[pred["patient_id"]].tolist()
    prob = pred.filter(like="probability_")
    assert (prob.sum(axis=1) - 1).abs().max() < 1e-6
    assert "Predicted groups" in capsys.readouterr().out


def test_predict_from_a_cohort_folder(trained, tmp_path):
    _, path, _, _ = trained
    other = simulate_cohort("mcrc", seed=4, n_patients=50)
    other.cohort.to_dir(tmp_path / "cohort")
    out = tmp_path / "pred.csv"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["predict", str(path), str(tmp_path / "cohort"), "--out", str(out)]) == 0
    assert len(pd.read_csv(out)) == 50


def test_predict_errors(trained, tmp_path, capsys):
    _, path, _, folder = trained
    assert main(["predict", str(tmp_path / "none.joblib"), str(folder)]) == 2
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n1,2\n")
    assert main(["predict", str(path), str(bad)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "patient_id" in err

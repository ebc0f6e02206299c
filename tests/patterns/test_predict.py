from __future__ import annotations

import pandas as pd
import pytest

from lesionatlas.errors import DataError
from lesionatlas.patterns import GroupPredictor, train_group_predictor


@pytest.fixture(scope="module")
def predictor(patterns5, features):
    groups = patterns5.assignments.set_index("patient_id")["group"]
    return train_group_predictor(features, groups, seed=0, grid={"learning_rate": [0.1], "max_leaf_nodes": [7, 15]})


def test_baseline_features_use_baseline_only(features, sim):
    assert features.index.name == "patient_id" and len(features) == len(sim.cohort.patients)
    for col in ("best_response", "pfs_days", "os_days", "os_event"):
        assert col not in features.columns
    assert "n_lesions_new" not in features.columns and "has_liver" in features.columns
    assert (features["baseline_volume_sum_mm3"] >= features["baseline_volume_max_mm3"]).all()
    assert isinstance(features["treatment"].dtype, pd.CategoricalDtype)
    lesions = sim.cohort.lesions
    pid = str(lesions["patient_id"].iloc[0])
    base = lesions[(lesions["patient_id"].astype(str) == pid) & lesions["kind"].isin(["target", "nontarget"])]
    assert features.loc[pid, "n_organs"] == base["organ"].nunique()


def test_predictor_beats_majority(predictor):
    m = predictor
    assert m.metric("accuracy") > m.metric("majority_accuracy") + 0.1
    assert m.metric("f1_macro") > m.metric("majority_f1_macro") + 0.2
    assert m.metric("auc_macro") > 0.7
    assert m.confusion["n"].sum() == m.metric("n_test")
    assert set(m.roc["curve"]) == set(m.classes) | {"micro", "macro"}
    assert m.importance["importance_mean"].iloc[0] > 0
    assert "GroupPredictor(5 groups" in repr(m)


def test_save_load_identical_predictions(predictor, features, tmp_path):
    path = predictor.save(tmp_path / "model.joblib")
    loaded = GroupPredictor.load(path)
    sample = features.iloc[:200]
    pd.testing.assert_series_equal(loaded.predict(sample), predictor.predict(sample))
    pd.testing.assert_frame_equal(loaded.predict_proba(sample), predictor.predict_proba(sample))
    pd.testing.assert_frame_equal(loaded.metrics, predictor.metrics)
    # columns in another order and an unseen category still work
    shuffled = sample[sample.columns[::-1]].copy()
    shuffled["treatment"] = shuffled["treatment"].astype(str).where(shuffled.index != shuffled.index[0], "NEW-DRUG")
    assert len(loaded.predict(shuffled)) == len(sample)


def test_plots(predictor):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for f in (predictor.plot_roc, predictor.plot_confusion, predictor.plot_importance):
        ax = f()
        plt.close(ax.figure)


def test_too_small_groups(features):
    groups = pd.Series(["a"] * (len(features) - 3) + ["b"] * 3, index=features.index)
    with pytest.raises(DataError, match="too small"):
        train_group_predictor(features, groups)


def test_missing_columns(predictor, features):
    with pytest.raises(DataError, match="missing"):
        predictor.predict(features.drop(columns=["age"]))

"""The shell: Cohort -> padded arrays, spec checks, buckets (no SAEM run here)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lesionatlas.data.cohort import Cohort
from lesionatlas.errors import ConfigError, DataError
from lesionatlas.tgi import TGIModel
from lesionatlas.tgi.fit import build_arrays, lesion_bucket, observation_bucket


def _cohort(meta=None, baseline=False):
    lesions = pd.DataFrame(
        {
            "lesion_id": ["A", "B", "C", "N"],
            "patient_id": ["P1", "P1", "P2", "P2"],
            "kind": ["target", "target", "target", "nontarget"],
        }
    )
    if baseline:
        lesions["baseline_volume_mm3"] = [5000.0, np.nan, np.nan, np.nan]
        lesions["baseline_day"] = [-20.0, np.nan, np.nan, np.nan]
    measurements = pd.DataFrame(
        {
            "lesion_id": ["A", "A", "A", "B", "B", "C", "C", "N"],
            "day": [-7.0, 40.0, 90.0, -3.0, 45.0, -10.0, 42.0, -5.0],
            "volume_mm3": [4000.0, 150.0, 1000.0, 120.0, 300.0, 800.0, 200.0, 50.0],
            "below_limit": [False, True, False, True, False, False, True, False],
            "lower_limit_mm3": [np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, 0.0, np.nan],
        }
    )
    patients = pd.DataFrame({"patient_id": ["P1", "P2"]})
    return Cohort.from_tables(patients, lesions, measurements, meta=meta)


def test_arrays_from_cohort():
    arrays, notes = build_arrays(_cohort(), TGIModel())
    assert list(arrays.lesion_id) == ["A", "B", "C"]  # target lesions only
    assert arrays.n_lesions == 3 and arrays.t.shape == (256, 8)
    # V0/T0 from the first measurement; a censored first value uses the limit
    np.testing.assert_allclose(arrays.v0[:3], [4000.0, 200.0, 800.0])
    np.testing.assert_allclose(arrays.t0[:3], [-7.0, -3.0, -10.0])
    assert notes["n_first_censored"] == 1
    # censored rows: upper = the limit (tidy data), lower = -inf (M3) or the given lower bound
    assert arrays.censored[0, 1] and arrays.y[0, 1] == 200.0 and arrays.lower[0, 1] == -np.inf
    assert arrays.censored[2, 1] and arrays.y[2, 1] == 200.0 and arrays.lower[2, 1] == 0.0
    assert arrays.obs_mask[:3].sum() == 7 and not arrays.obs_mask[3:].any()


def test_baseline_regressors_and_dropping_the_baseline_row():
    arrays, notes = build_arrays(_cohort(baseline=True), TGIModel(baseline_observation="drop"))
    assert arrays.v0[0] == 5000.0 and arrays.t0[0] == -20.0
    assert notes["n_baseline_from_regressors"] == 1
    # lesion A keeps its day -7 row (after T0 = -20); B and C lose their baseline rows
    assert arrays.obs_mask[:3].sum(axis=1).tolist() == [3, 1, 1]


def test_monolix_censored_rows_keep_their_dv_as_upper_bound():
    arrays, _ = build_arrays(_cohort(meta={"format": "monolix"}), TGIModel())
    assert arrays.y[0, 1] == 150.0  # DV of a censored Monolix row is its limit


def test_censoring_drop():
    arrays, notes = build_arrays(_cohort(), TGIModel(censoring="drop"))
    assert notes["n_censored_dropped"] == 3
    assert not (arrays.censored & arrays.obs_mask).any()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"error_model": "exponential"},
        {"censoring": "m4"},
        {"f": 1.5},
        {"n_explore": 0},
        {"n_chains": 0},
        {"precision": "float16"},
        {"annealing_factor": 1.5},
        {"is_defensive": 1.0},
        {"is_inflate": 0.0},
    ],
)
def test_bad_spec_values_are_named(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ConfigError, match=name):
        TGIModel(**kwargs).fit(_cohort())


def test_bad_input():
    with pytest.raises(DataError):
        TGIModel().fit(pd.DataFrame({"lesion_id": ["A"], "day": [1.0]}))


def test_buckets():
    assert [lesion_bucket(n) for n in (1, 256, 257, 385, 3072, 3073, 4096)] == [256, 256, 384, 512, 3072, 4096, 4096]
    # above 4,096 lesions: multiples of 1,024 (the paper's 19,180 lesions pad to 19,456, not 24,576)
    assert [lesion_bucket(n) for n in (4097, 5120, 5121, 19180, 1_000_000)] == [5120, 5120, 6144, 19456, 1_000_448]
    assert [observation_bucket(m) for m in (1, 8, 9, 29)] == [8, 8, 16, 32]

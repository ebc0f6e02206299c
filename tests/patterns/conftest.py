"""Simulated cohorts with planted progression patterns, built once per test run."""
from __future__ import annotations

import pandas as pd
import pytest

import lesionatlas.data as data
from lesionatlas.patterns import baseline_features, cluster_sequences


@pytest.fixture(scope="session")
def sim():
    return data.simulate_cohort("mcrc", seed=0, n_patients=2000)


@pytest.fixture(scope="session")
def sequences(sim) -> pd.DataFrame:
    return sim.truth.table("sequences")


@pytest.fixture(scope="session")
def planted(sim) -> pd.DataFrame:
    t = sim.truth.table("patients")
    return pd.DataFrame({"patient_id": t["patient_id"].astype(str), "pattern": t["pattern"].astype(str)})


@pytest.fixture(scope="session")
def patterns5(sim, sequences):
    return cluster_sequences(sequences, sim.cohort.patients, k=5, k_max=6, seed=0)


@pytest.fixture(scope="session")
def features(sim) -> pd.DataFrame:
    return baseline_features(sim.cohort)

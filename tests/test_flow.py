"""The stages compose: simulate -> events -> organ hazards -> phenotypes -> patterns -> survival.

Uses the simulator's planted growth parameters instead of a TGI fit (the fit has its own tests), so the
whole flow runs in seconds; it checks that each stage accepts what the previous one returns.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import lesionatlas as la


@pytest.fixture(scope="module")
def flow():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dirty-data and exclusion warnings are expected here
        sim = la.simulate_cohort("mcrc", seed=5, n_patients=500)
        selection = la.select_patients(sim.cohort)
        events = la.derive_events(selection.cohort, sim.truth.table("lesions"))
        hazards = la.fit_organ_hazards(events, candidates=("line",))
        phenotypes = la.classify_organs(hazards.phenotype_input(), reference=hazards.reference_organ)
        patterns = la.cluster_sequences(events.sequences, events.patients, k=5, seed=0)
    return sim, selection, events, hazards, phenotypes, patterns


def test_events_cover_the_selected_cohort(flow):
    _, selection, events, *_ = flow
    assert set(events.table["patient_id"]) <= set(selection.cohort.patients["patient_id"])
    assert len(events.patients) == selection.n_selected


def test_hazards_feed_phenotypes(flow):
    *_, hazards, phenotypes, _ = flow
    organs = set(hazards.hazard_ratios["organ"])
    assert set(phenotypes.table["organ"]) <= organs
    assert phenotypes.phenotype_of("liver") == "high-high"


def test_patterns_and_survival(flow):
    *_, patterns = flow
    assignments = patterns.assignments
    events = flow[2]
    data = assignments.merge(events.patients[["patient_id", "os_days", "os_event"]], on="patient_id")
    comparison = la.compare_survival(data, "os_days", "os_event", "group")
    assert len(comparison.medians) == data["group"].nunique()
    assert np.isfinite(comparison.logrank["p_value"].iloc[0])

"""Planted truth: events derived from the simulator's true growth parameters reproduce its own events.

The simulator (``truth.json`` conventions) takes target-lesion baseline and nadir from day 0, progression
at ``min(1.3 nadir, nadir + 200 mm3)``, and censors at the patient's last *scheduled* scan. The events
stage can only see the scans in the data: when every lesion's measurement and assessment is missing at
a patient's last scan (the simulator drops measurements at random), its last day is earlier. Lesions of
such patients are compared separately; all others must agree exactly (days to 1e-8, root-finding
round-off).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lesionatlas.data import simulate_cohort
from lesionatlas.events import derive_events


@pytest.fixture(scope="module")
def sim():
    return simulate_cohort("mcrc", seed=1, n_patients=300)


@pytest.fixture(scope="module")
def events(sim):
    return derive_events(sim.cohort, sim.truth.table("lesions"))


def test_same_lesions_and_windows(sim, events):
    truth = sim.truth.table("lesion_events").set_index("lesion_id")
    table = events.table.set_index("lesion_id")
    assert set(truth.index) == set(table.index)
    truth = truth.reindex(table.index)
    same_window = np.isclose(table["last_day"], truth["window_end_day"], rtol=0, atol=1e-9)
    assert same_window.mean() > 0.99
    assert (table["last_day"] <= truth["window_end_day"] + 1e-9).all()  # never later than the truth


@pytest.mark.parametrize("model", ["response", "progression"])
def test_events_match_truth(sim, events, model):
    truth = sim.truth.table("lesion_events").set_index("lesion_id")
    table = events.table.set_index("lesion_id")
    truth = truth.reindex(table.index)
    keep = np.isclose(table["last_day"], truth["window_end_day"], rtol=0, atol=1e-9)
    if model == "response":
        keep &= (table["kind"] != "new").to_numpy()
    ours = table.loc[keep, f"{model}_event"].astype(bool).to_numpy()
    theirs = truth.loc[keep, f"{model}_event"].to_numpy(bool)
    assert np.array_equal(ours, theirs)
    assert ours.sum() > 100
    np.testing.assert_allclose(table.loc[keep, f"{model}_day"].to_numpy()[ours],
                               truth.loc[keep, f"{model}_day"].to_numpy()[ours], rtol=0, atol=1e-8)


def test_latent_target_crossings_match_truth(sim, events):
    truth = sim.truth.table("lesion_events").set_index("lesion_id")
    curves = events.curves.set_index("lesion_id")
    truth = truth.loc[curves.index]
    for model in ("response", "progression"):
        ours = curves[f"latent_{model}_day"].to_numpy()
        theirs = truth[f"latent_{model}_day"].to_numpy()
        assert np.array_equal(np.isinf(ours), np.isinf(theirs))
        fin = np.isfinite(ours)
        np.testing.assert_allclose(ours[fin], theirs[fin], rtol=1e-9, atol=1e-8)


def test_sequences_match_truth(sim, events):
    truth = sim.truth.table("sequences")
    window = sim.truth.table("patients").set_index("patient_id")["last_scan_day"].clip(lower=0.0)
    ours_last = events.patients.set_index("patient_id")["last_day"]
    same = ours_last.index[np.isclose(ours_last, window.reindex(ours_last.index), atol=1e-9)]
    a = events.sequences[events.sequences["patient_id"].isin(same)][["patient_id", "rank", "organ", "day"]]
    b = truth[truth["patient_id"].isin(same)]
    a, b = a.reset_index(drop=True), b.reset_index(drop=True)
    pd.testing.assert_frame_equal(a.drop(columns="day"), b.drop(columns="day"), check_dtype=False)
    np.testing.assert_allclose(a["day"], b["day"], rtol=0, atol=1e-8)
    n_truth = sim.truth.table("patients").set_index("patient_id")["n_progressed_organs"]
    ours = events.patients.set_index("patient_id")["n_progressed_organs"]
    assert (ours.loc[same] == n_truth.loc[same]).all()
    assert (ours == 0).sum() > 0  # some patients never progress in the window, and are listed


def test_every_patient_listed_and_covariates_joined(sim, events):
    assert events.patients["patient_id"].tolist() == sim.cohort.patients["patient_id"].tolist()
    assert events.table[["treatment", "treatment_group", "age", "line"]].notna().all().all()


def test_deterministic(sim, events):
    again = derive_events(sim.cohort, sim.truth.table("lesions"))
    assert again.equals(events)


@pytest.mark.slow
def test_from_a_real_tgi_fit(request):
    """A short SAEM fit (about 40 s): the fit object itself is accepted; events agree mostly with truth."""
    import warnings

    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("a 40 s SAEM fit; run with -m slow")

    from lesionatlas.tgi import TGIModel, fit_tgi

    small = simulate_cohort("mcrc", seed=3, n_patients=80)
    spec = TGIModel(n_explore=60, n_smooth=40, min_explore=30, n_chains=1, n_is_draws=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a short fit warns about convergence
        fit = fit_tgi(spec, small.cohort, seed=0)
    ev = derive_events(small.cohort, fit)
    truth = derive_events(small.cohort, small.truth.table("lesions"))
    a = ev.table.set_index("lesion_id")
    b = truth.table.set_index("lesion_id").reindex(a.index)
    target = a["kind"] == "target"
    assert target.sum() == len(small.truth.table("lesions"))
    for model in ("response", "progression"):
        assert (a.loc[target, f"{model}_event"] == b.loc[target, f"{model}_event"]).mean() > 0.75
    mean = derive_events(small.cohort, fit, estimate="mean")
    assert len(mean.table) == len(ev.table)

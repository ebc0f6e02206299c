"""Goodness-of-fit diagnostics: tables (shapes, columns, calibration on a well-specified fit) and plots.

One small fit (400 lesions, short SAEM) is shared by the whole module.
"""
from __future__ import annotations

import numpy as np
import pytest
from tgi_simulate import simulate

from lesionatlas.data.cohort import Cohort
from lesionatlas.errors import ConfigError, DataError
from lesionatlas.tgi import TGIFit, TGIModel
from lesionatlas.tgi.diagnostics import PLOTS, VPCData, residual_table, simulate_observations

# the spec and shape bucket (512 x 6) of the quick fits in test_tgi_saem.py: JAX compiles once per worker
SPEC = TGIModel(baseline_observation="drop", n_explore=95, n_smooth=50, n_is_draws=0)


@pytest.fixture(scope="module")
def fit() -> TGIFit:
    return SPEC.fit(Cohort.from_tables(*simulate(400, seed=21).tables()), seed=0)


def test_observations_are_kept_and_round_trip(fit, tmp_path):
    obs = fit.observations
    assert list(obs.columns) == ["lesion_id", "day", "volume_mm3", "below_limit", "lower_limit_mm3"]
    assert len(obs) == fit.n_obs and obs["below_limit"].sum() == fit.diagnostics["n_censored"]
    back = TGIFit.from_dir(fit.to_dir(tmp_path / "fit"))
    assert back.equals(fit)
    assert back.residuals()["npde"].equals(fit.residuals()["npde"])  # same seed, same simulations


def test_residual_table(fit):
    table = fit.residuals()
    assert list(table.columns) == [
        "lesion_id", "day", "observed_mm3", "below_limit", "lower_limit_mm3", "pred_mm3", "ipred_mm3",
        "imputed_mm3", "iwres", "npd", "npde",
    ]
    assert len(table) == fit.n_obs
    assert table[["pred_mm3", "ipred_mm3", "iwres", "npde", "npd"]].notna().all().all()
    # censored rows are imputed inside their interval (M3: below the limit); the others are untouched
    cens = table["below_limit"]
    assert (table.loc[cens, "imputed_mm3"] <= table.loc[cens, "observed_mm3"]).all()
    assert table.loc[~cens, "imputed_mm3"].equals(table.loc[~cens, "observed_mm3"])
    # well-specified model: NPDE ~ N(0, 1). IWRES of conditional modes is centred but narrower than 1
    # with ~4.5 observations and 3 parameters per lesion (the modes overfit each series; seen sd 0.8)
    assert abs(table["npde"].mean()) < 0.15 and 0.85 < table["npde"].std() < 1.15
    assert abs(table["iwres"].mean()) < 0.2 and 0.65 < table["iwres"].std() < 1.15
    # cached: a second call returns the same numbers without recomputing
    assert fit.residuals().equals(table)


def test_simulations_are_seeded(fit):
    one = simulate_observations(fit, n_simulations=20, seed=5)
    assert one.shape == (20, fit.n_obs)
    fit._cache.clear()
    assert np.array_equal(one, simulate_observations(fit, n_simulations=20, seed=5))
    assert not np.array_equal(one, simulate_observations(fit, n_simulations=20, seed=6))


def test_vpc(fit):
    vpc = fit.vpc()
    assert isinstance(vpc, VPCData)
    per = vpc.percentiles
    assert set(per["percentile"]) == {10.0, 50.0, 90.0}
    assert len(per) == 3 * per["bin"].nunique() and per["bin"].nunique() == 8
    assert (per["simulated_lower_mm3"] <= per["simulated_median_mm3"]).all()
    assert (per["simulated_median_mm3"] <= per["simulated_upper_mm3"]).all()
    assert per.groupby("bin")["n_obs"].first().sum() == fit.n_obs
    # the observed median lies in the simulated 90% PI for most bins (scanning stops at progression, so
    # the late bins of the data lack the growing lesions the simulations keep: seen 6 of 8)
    median = per[per["percentile"] == 50.0]
    assert (~median["outside_pi"]).mean() >= 0.6
    cens = vpc.censored
    assert len(cens) == 8 and cens["observed_fraction"].between(0, 1).all()
    assert (~cens["outside_pi"]).mean() >= 0.6


def test_bad_options(fit):
    with pytest.raises(ConfigError, match="n_simulations"):
        fit.residuals(n_simulations=1)
    with pytest.raises(ConfigError, match="n_bins"):
        fit.vpc(n_bins=0)
    with pytest.raises(ConfigError, match="kind"):
        fit.plot_residuals(kind="cwres")
    no_obs = TGIFit(**{k: getattr(fit, k) for k in ("spec", "seed", "population", "individual", "trace", "loglik",
                                                     "n_lesions", "n_obs", "diagnostics")})
    with pytest.raises(DataError, match="refit"):
        residual_table(no_obs)


def test_plots_return_axes_and_figures(fit):
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    assert isinstance(fit.plot_observed_vs_predicted(kind="population"), Axes)
    assert isinstance(fit.plot_residuals(x="prediction", kind="npde"), Axes)
    assert isinstance(fit.plot_vpc(), Axes)
    assert isinstance(fit.plot_vpc_censored(), Axes)
    trace = fit.plot_trace()
    assert isinstance(trace, Figure) and len([a for a in trace.axes if a.get_visible()]) == 7
    assert isinstance(fit.plot_individual_fits(n=4), Figure)
    # drawing into a given Axes
    fig = Figure()
    ax = fig.add_subplot()
    assert fit.plot_residuals(ax) is ax


def test_write_diagnostics(fit, tmp_path):
    paths = fit.write_diagnostics(tmp_path / "diagnostics")
    assert [p.stem for p in paths] == list(PLOTS)
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000

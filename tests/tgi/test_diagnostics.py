"""Goodness-of-fit diagnostics: tables (shapes, columns, calibration on a well-specified fit) and plots.

One small fit (400 lesions, short SAEM) is shared by the whole module.
"""
from __future__ import annotations

import dataclasses

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
        "imputed_mm3", "iwres", "npd", "npde", "cnpde",
    ]
    assert len(table) == fit.n_obs
    assert table[["pred_mm3", "ipred_mm3", "iwres", "npde", "npd", "cnpde"]].notna().all().all()
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


def _by_scan(table):
    table = table.sort_values(["lesion_id", "day"]).copy()
    table["scan"] = table.groupby("lesion_id").cumcount()
    return table


def test_conditional_npde_stays_calibrated_when_scans_stop_at_progression(fit):
    """The simulator stops scanning a lesion at progression: late observations are those of lesions that
    did not grow, so their NPD sit below 0 and the NPDE are too narrow even for a well-specified model;
    the conditional NPDE (each row given the lesion's earlier rows) stay N(0, 1) and uncorrelated."""
    table = _by_scan(fit.residuals())
    late = table[table["scan"] >= 3]
    assert len(late) > 500
    assert late["npd"].mean() < -0.15  # seen -0.29: the design, not the model
    assert abs(late["cnpde"].mean()) < 0.12 and 0.9 < late["cnpde"].std() < 1.1  # seen -0.005, 1.01
    assert abs(table["cnpde"].mean()) < 0.08 and 0.93 < table["cnpde"].std() < 1.07
    previous = table.groupby("lesion_id")["cnpde"].shift()
    assert abs(np.corrcoef(table["cnpde"][previous.notna()], previous.dropna())[0, 1]) < 0.1  # seen 0.04
    # at the first scan nothing conditions the prediction: the same probability as the simulated NPD
    first = table[(table["scan"] == 0) & ~table["below_limit"]]
    assert np.corrcoef(first["npd"], first["cnpde"])[0, 1] > 0.97  # seen 0.991


def test_conditional_npde_flags_a_wrong_model(fit):
    import dataclasses

    def altered(name, factor):
        pop = fit.population.copy()
        pop.loc[pop["parameter"] == name, "estimate"] *= factor
        return dataclasses.replace(fit, population=pop).residuals()["cnpde"]

    assert altered("kg_pop", 2.0).mean() < -0.25  # seen -0.41 (the NPDE's mean stayed at -0.01)
    assert altered("b", 0.5).std() > 1.3  # seen 1.48


@pytest.fixture(scope="module")
def limit_fit() -> TGIFit:
    """The same lesions with Monolix LIMIT censoring: a censored row lies in [100, 200] or [0, 100] mm3."""
    return SPEC.fit(Cohort.from_tables(*simulate(400, seed=21, interval_lower=100.0).tables()), seed=0)


def test_conditional_npde_with_interval_censoring(limit_fit):
    """Interval-censored rows condition the later ones by the probability of their interval (a copy of
    that log-difference of CDFs in numpy gave NaN here); the conditional NPDE stay N(0, 1)."""
    table = _by_scan(limit_fit.residuals())
    assert table["below_limit"].sum() > 150 and np.isfinite(table["lower_limit_mm3"]).sum() == table["below_limit"].sum()
    assert np.isfinite(table["cnpde"]).all()
    assert abs(table["cnpde"].mean()) < 0.08 and 0.93 < table["cnpde"].std() < 1.07
    after = table.groupby("lesion_id")["below_limit"].transform(lambda c: c.shift(fill_value=False).cummax())
    assert after.sum() > 100  # rows that follow an interval-censored row of their lesion
    assert abs(table.loc[after, "cnpde"].mean()) < 0.15 and 0.85 < table.loc[after, "cnpde"].std() < 1.15


@pytest.mark.parametrize("which", ["fit", "limit_fit"])
def test_conditional_probabilities_match_brute_force(which, request):
    """P(Y_j <= y_j | earlier rows) of a few lesions against 400,000 draws from the population distribution
    weighted by the likelihood of the earlier rows, written out with the simulator's formula (censored
    rows: the probability of (-inf, limit] or of [LIMIT, limit])."""
    from scipy.stats import norm
    from tgi_simulate import true_volume

    from lesionatlas.tgi.diagnostics import _conditional_pd, _design

    fit = request.getfixturevalue(which)
    d = _design(fit)
    pd_is = _conditional_pd(fit, d, np.random.default_rng(3), 4000)
    pop = fit.population.set_index("parameter")["estimate"]
    mu, omega, b = fit.typical_phi(), pop[["omega_kg", "omega_kd", "omega_f"]].to_numpy(float), pop["b"]
    rng = np.random.default_rng(4)
    checked = n_censored_before = 0
    for lesion in range(200):
        rows = np.flatnonzero(d.lesion == lesion)
        rows = rows[np.argsort(d.t[rows])]
        if len(rows) < 3 or d.censored[rows[2]] or (checked >= 3 and not d.censored[rows[:2]].any()):
            continue  # half of the lesions checked have a censored row among the conditioning ones
        phi = mu[lesion] + omega * rng.standard_normal((400_000, 3))
        kg, kd, f = np.exp(phi[:, 0]), np.exp(phi[:, 1]), 1 / (1 + np.exp(-phi[:, 2]))
        log_w = np.zeros(len(phi))
        for j, row in enumerate(rows[:3]):
            v = true_volume(d.t[row], kg, kd, f, np.exp(d.log_v0[row]), d.t0[row])
            if j == 2:
                w = np.exp(log_w - log_w.max())
                exact = float(np.sum(w * norm.cdf((d.y[row] - v) / (b * v))) / w.sum())
                assert abs(pd_is[row] - exact) < 0.03, (lesion, pd_is[row], exact)
            elif d.censored[row]:
                z_hi, z_lo = (d.y[row] - v) / (b * v), (d.lower[row] - v) / (b * v)  # z_lo -inf for M3
                prob = np.where(z_lo > 0, norm.sf(z_lo) - norm.sf(z_hi), norm.cdf(z_hi) - norm.cdf(z_lo))
                with np.errstate(divide="ignore"):  # a draw whose interval has probability 0 gets no weight
                    log_w += np.log(prob)
            else:
                log_w += norm.logpdf((d.y[row] - v) / (b * v)) - np.log(b * v)
        checked += 1
        n_censored_before += bool(d.censored[rows[:2]].any())
        if checked == 6:
            break
    assert checked == 6 and n_censored_before >= 3


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


def test_conditional_vpc_stays_calibrated_when_scans_stop_at_progression(fit):
    """The VPC's late bins lack the growing lesions its replicates keep (the design); the conditional VPC
    simulates each observed row given the lesion's earlier rows, so its bands follow the data."""
    standard = fit.vpc().percentiles
    conditional = fit.vpc(conditional=True).percentiles
    late_top = lambda per: per[(per["percentile"] == 90.0) & (per["bin"] >= 7)]  # noqa: E731
    assert (late_top(standard)["observed_mm3"] < late_top(standard)["simulated_lower_mm3"]).all()  # seen 2 of 2
    assert not late_top(conditional)["outside_pi"].any()
    assert conditional["outside_pi"].sum() <= 5  # of 24; seen 3 (standard: 6)
    assert (conditional[["bin", "percentile", "observed_mm3"]].to_numpy() == standard[["bin", "percentile",
                                                                                         "observed_mm3"]].to_numpy()).all()


def test_conditional_simulations_follow_the_conditional_probabilities(fit):
    """The replicates resample the importance draws behind the conditional NPDE: the share of replicates
    below each observation is that observation's one-step-ahead probability (up to 200-replicate noise);
    a lesion's first row has nothing before it, so it is simulated as by the population model."""
    from lesionatlas.tgi import diagnostics as dg

    d = dg._design(fit)
    sims = dg.conditional_simulations(fit)
    assert sims.shape == (200, fit.n_obs) and np.isfinite(sims).all()
    assert np.array_equal(dg.conditional_simulations(fit, seed=0), sims)
    assert not np.array_equal(dg.conditional_simulations(fit, seed=1, n_simulations=200), sims)
    prob = dg._conditional_pd(fit, d, np.random.default_rng(5), dg._CONDITIONAL_DRAWS)
    share = (sims <= d.y).mean(axis=0)
    seen = ~d.censored
    assert np.corrcoef(share[seen], prob[seen])[0, 1] > 0.97  # seen 0.987
    assert np.abs(share - prob)[seen].mean() < 0.05  # seen 0.035 (binomial noise alone ~0.028)
    first = (fit.observations.groupby("lesion_id")["day"].rank(method="first") == 1).to_numpy()
    population = simulate_observations(fit)
    assert np.corrcoef(np.log(np.median(sims[:, first], 0)), np.log(np.median(population[:, first], 0)))[0, 1] > 0.99


def test_residuals_and_conditional_vpc_share_one_importance_pass(fit, monkeypatch):
    """The residual table's conditional NPDE and the conditional VPC's replicates (same seed and number of
    simulations) come from one importance pass, and each has its own random stream: neither depends on
    whether, or in which order, the other was computed."""
    from lesionatlas.tgi import diagnostics as dg

    first = dataclasses.replace(fit)  # a new result object: an empty cache
    sims_first = dg.conditional_simulations(first).copy()
    cnpde_first = dg.residual_table(first)["cnpde"]
    calls = []
    chunks = dg._conditional_chunks
    monkeypatch.setattr(dg, "_conditional_chunks", lambda *a, **k: calls.append(1) or chunks(*a, **k))
    other = dataclasses.replace(fit)
    cnpde = dg.residual_table(other)["cnpde"]
    dg.vpc_table(other, conditional=True)
    assert len(calls) == 1
    assert cnpde.equals(cnpde_first)
    assert np.array_equal(dg.conditional_simulations(other), sims_first)


def test_conditional_vpc_flags_a_wrong_model(fit):
    pop = fit.population.copy()
    pop.loc[pop["parameter"] == "kg_pop", "estimate"] *= 2.0
    per = dataclasses.replace(fit, population=pop).vpc(conditional=True).percentiles
    assert per.loc[per["percentile"] == 50.0, "outside_pi"].sum() >= 6  # of 8; seen 8


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
    assert fit.plot_residuals(kind="cnpde").get_ylabel() == "conditional NPDE"
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


def test_npde_do_not_depend_on_the_scale_and_do_not_overflow(fit):
    """The decorrelation is the same whatever the unit of each row, and simulated volumes near the
    largest float (a wide omega_f) give finite NPDE without overflow warnings."""
    import warnings

    from lesionatlas.tgi.diagnostics import _design, _npde

    d = _design(fit)
    sims = simulate_observations(fit, n_simulations=100, seed=2)
    _, npde, _ = _npde(d, sims, np.random.default_rng(0))
    factor = np.exp(np.random.default_rng(1).uniform(-5, 5, len(d.y)))
    scaled = dataclasses.replace(d, y=d.y * factor, lower=d.lower * factor)
    _, npde_scaled, _ = _npde(scaled, sims * factor, np.random.default_rng(0))
    assert np.mean(npde == npde_scaled) > 0.999  # equal up to rounding at the ties of the ranks
    huge = sims.copy()
    huge[:, ::7] *= 1e300 / np.abs(huge[:, ::7]).max(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        _, npde_huge, _ = _npde(d, huge, np.random.default_rng(0))
    assert np.isfinite(npde_huge).all()

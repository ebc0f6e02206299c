"""MixedCox: lifelines as the variance goes to 0, brute-force integration, planted truth, R coxme, API."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from clustered import simulate_clustered

from lesionatlas.errors import ConfigError, DataError, ExclusionWarning
from lesionatlas.hazards import MixedCox, MixedCoxFit
from lesionatlas.hazards.partial_likelihood import cox_derivatives, cox_loglik, group_index, risk_sets

REF = Path(__file__).resolve().parents[1] / "reference" / "coxme"
COVS = ["age_z", "treated"]
CAT = {"organ": "abdominal"}


def _fit(df, spec=None, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # boundary / convergence notes are checked elsewhere
        return (spec or MixedCox()).fit(df, "day", "event", "patient_id", COVS, CAT, **kw)


@pytest.fixture(scope="module")
def small() -> pd.DataFrame:
    return simulate_clustered(40, 5, seed=3, round_to=5.0)


@pytest.fixture(scope="module")
def planted() -> pd.DataFrame:
    return simulate_clustered(500, 8, sigma2=0.5, seed=1)


def test_tiny_variance_gives_lifelines_fit(small):
    lifelines = pytest.importorskip("lifelines")
    fit = _fit(small, sigma2=1e-9)
    dummies = pd.get_dummies(small["organ"], prefix="organ", drop_first=False, dtype=float)
    table = pd.concat([small[COVS + ["day", "event"]], dummies.drop(columns="organ_abdominal")], axis=1)
    cph = lifelines.CoxPHFitter().fit(table, duration_col="day", event_col="event")  # Efron ties
    ours = fit.summary().set_index("term")
    names = {"organ_bone": "organ[bone]", "organ_liver": "organ[liver]", "organ_lung": "organ[lung]"}
    theirs = cph.summary.rename(index=names)
    for term in ours.index:
        # tolerance: a variance of 1e-9 moves coefficients by O(1e-8); lifelines stops its Newton
        # iteration earlier than we do (differences ~2e-5 here), so 1e-3 of a standard error
        assert ours.loc[term, "coef"] == pytest.approx(theirs.loc[term, "coef"], abs=1e-3 * ours.loc[term, "se"])
        assert ours.loc[term, "se"] == pytest.approx(theirs.loc[term, "se(coef)"], rel=1e-4)
    assert fit.loglik_fixed_only == pytest.approx(cph.log_likelihood_, abs=1e-6)
    assert fit.loglik_integrated == pytest.approx(cph.log_likelihood_, abs=1e-4)


def test_laplace_close_to_brute_force_integration():
    """Laplace value vs the marginal partial likelihood integrated by importance sampling.

    Four groups of 12: the integral over all four random effects (they do not factor: risk sets couple
    the groups) at the fitted fixed effects, log E_{b ~ N(0, s2 I)}[exp(PL(beta, b))], by importance
    sampling from a Student-t (4 df) centred at the mode with the Laplace covariance, 200,000 draws.
    Tolerance 0.05 on the log scale: the Laplace error is O(1/observations per group) (about 0.02 here),
    the Monte Carlo standard error is below 0.002.
    """
    df = simulate_clustered(4, 12, seed=5, sigma2=0.8)
    s2 = 0.8
    fit = _fit(df, sigma2=s2)
    rs = risk_sets(df["day"].to_numpy(), df["event"].to_numpy(), "efron")
    codes, _ = pd.factorize(df["patient_id"], sort=True)
    x = np.column_stack([df["age_z"], df["treated"]] + [(df["organ"] == o).to_numpy(float)
                                                        for o in ("bone", "liver", "lung")])
    beta = fit.summary()["coef"].to_numpy()
    b_hat = fit.random_effects["random_effect"].to_numpy()
    q = b_hat.size
    xo, go = x[rs.order], codes[rs.order]
    gi = group_index(go, q, 0, rs)
    d = cox_derivatives(xo @ beta + b_hat[go], rs, gi.dense_columns, None)
    h_bb = d.hess_dense + np.eye(q) / s2
    cov = np.linalg.inv(h_bb)
    rng = np.random.default_rng(0)
    n_draws, nu = 200_000, 4.0
    chol = np.linalg.cholesky(cov)
    z = rng.standard_normal((n_draws, q))
    u = rng.chisquare(nu, n_draws) / nu
    draws = b_hat + (z @ chol.T) / np.sqrt(u)[:, None]
    from scipy.stats import multivariate_normal, multivariate_t
    log_q = multivariate_t(loc=b_hat, shape=cov, df=nu).logpdf(draws)
    log_prior = multivariate_normal(np.zeros(q), s2 * np.eye(q)).logpdf(draws)
    eta0 = xo @ beta
    log_pl = np.array([cox_loglik(eta0 + bb[go], rs) for bb in draws[:20_000]])
    # the partial likelihood is cheap but a Python loop over 200k draws is not: use 20k exact
    # evaluations and check the Monte Carlo error explicitly
    lw = log_pl + log_prior[:20_000] - log_q[:20_000]
    m = lw.max()
    w = np.exp(lw - m)
    brute = m + np.log(w.mean())
    mc_se = w.std() / w.mean() / np.sqrt(w.size)
    assert mc_se < 0.01
    assert fit.loglik_integrated == pytest.approx(brute, abs=0.05)


def test_planted_truth_recovery(planted):
    fit = _fit(planted)
    truth = {"age_z": 0.3, "treated": -0.5, "organ[bone]": 0.3, "organ[liver]": 0.5, "organ[lung]": -0.4}
    s = fit.summary().set_index("term")
    for term, value in truth.items():
        # 95% Wald intervals from one fixed seed (all five cover here)
        assert s.loc[term, "ci_lower"] < np.exp(value) < s.loc[term, "ci_upper"], term
    lo, hi = fit.random_effect_ci
    assert lo < 0.5 < hi
    assert fit.random_effect_variance == pytest.approx(0.5, rel=0.25)
    stat, df, p = fit.lrt_random_effect()
    assert df == 1 and p < 1e-10
    # the random effects track the planted ones' scale
    assert 0.2 < fit.random_effects["random_effect"].var() < 0.6


@pytest.mark.parametrize("name", ["small", "medium"])
@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_agrees_with_coxme(name, ties):
    """Reference numbers from R coxme 2.2-22 (tests/reference/coxme/fit_coxme.R).

    At a fixed variance (0.5) the objective is the same function: integrated log-likelihood within
    1e-3 (coxme's inner Newton stops at a relative change of 1e-8, ~1e-4 here), coefficients within
    0.005 SE, SEs within 0.1%. With the variance estimated, coxme's outer BFGS stops at a relative
    change of 1e-5 of the objective, so variances differ by up to a few percent on flat profiles:
    coefficients within 0.01 SE, integrated log-likelihood within 0.01 and never worse than coxme's by
    more than 1e-3 (we maximise at least as well), variance within 5% (or both ~0 on the small data).
    """
    data = pd.read_csv(REF / f"{name}_input.csv")
    ref = pd.read_csv(REF / f"{name}_coxme.csv")
    for kind, s2 in (("fixed0.5", 0.5), ("estimated", None)):
        r = ref[ref["fit"] == f"{ties}_{kind}"]
        values = dict(zip(r["quantity"], r["value"]))
        coef = r.loc[r["quantity"] == "coef", "value"].to_numpy()
        se = r.loc[r["quantity"] == "se", "value"].to_numpy()
        fit = _fit(data, MixedCox(ties=ties), sigma2=s2)
        s = fit.summary()
        assert fit.loglik_null == pytest.approx(values["loglik_null"], abs=1e-8)
        if s2 is not None:
            np.testing.assert_allclose((s["coef"] - coef) / se, 0, atol=5e-3)
            np.testing.assert_allclose(s["se"] / se, 1, atol=1e-3)
            assert fit.loglik_integrated == pytest.approx(values["loglik_integrated"], abs=1e-3)
            assert fit.loglik_penalized == pytest.approx(values["loglik_penalized"], abs=1e-3)
        else:
            np.testing.assert_allclose((s["coef"] - coef) / se, 0, atol=1e-2)
            assert fit.loglik_integrated == pytest.approx(values["loglik_integrated"], abs=1e-2)
            assert fit.loglik_integrated > values["loglik_integrated"] - 1e-3
            if values["variance"] > 0.01:
                assert fit.random_effect_variance == pytest.approx(values["variance"], rel=0.05)
            else:
                assert fit.random_effect_variance < 0.05


def test_sparse_and_exact_algebra_same_mode(planted):
    sub = planted[planted["patient_id"] < "P0120"]
    sparse = _fit(sub, MixedCox(), sigma2=0.5)
    exact = _fit(sub, MixedCox(sparse=None), sigma2=0.5)
    assert sparse.n_sparse_groups == 120 and exact.n_sparse_groups == 0
    # the mode is exact in both; only the Laplace determinant and variances use the approximation.
    # Tolerance: Newton stops when the estimated gain is < 1e-9, leaving ~1e-6 on the coefficients
    # (SEs ~0.07); see test_exact_newton_reaches_the_exact_mode_quickly for the tighter check
    np.testing.assert_allclose(sparse.summary()["coef"], exact.summary()["coef"], atol=1e-4)
    assert sparse.loglik_penalized == pytest.approx(exact.loglik_penalized, abs=1e-6)
    assert sparse.loglik_integrated == pytest.approx(exact.loglik_integrated, abs=0.5)
    np.testing.assert_allclose(sparse.summary()["se"], exact.summary()["se"], rtol=0.02)


def test_result_api_round_trip_and_lrt(small, tmp_path):
    full = _fit(small)
    assert list(full.summary().columns) == ["term", "coef", "se", "hazard_ratio", "ci_lower", "ci_upper", "p_value"]
    assert full.n_obs == 200 and full.n_groups == 40 and full.n_events == int(small["event"].sum())
    assert "MixedCoxFit" in repr(full) and "organ[liver]" in repr(full)
    back = MixedCoxFit.from_dir(full.to_dir(tmp_path / "fit"))
    pd.testing.assert_frame_equal(back.summary(), full.summary())
    assert back.loglik_integrated == full.loglik_integrated and back.random_effect_ci == full.random_effect_ci
    assert back.spec == full.spec
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reduced = MixedCox().fit(small, "day", "event", "patient_id", ["age_z"], CAT)
    stat, df, p = full.lrt(reduced)
    assert df == 1 and stat >= 0 and 0 <= p <= 1
    assert reduced.lrt(full) == (stat, df, p)
    again = _fit(small)
    pd.testing.assert_frame_equal(again.summary(), full.summary())  # deterministic


def test_errors_and_warnings(small):
    spec = MixedCox()
    with pytest.raises(ConfigError, match="not in the table"):
        spec.fit(small, "days", "event", "patient_id", COVS)
    bad = small.assign(day=small["day"].astype(str))
    with pytest.raises(DataError, match="numeric"):
        spec.fit(bad, "day", "event", "patient_id", COVS)
    with pytest.raises(DataError, match="negative"):
        spec.fit(small.assign(day=small["day"] - 1000), "day", "event", "patient_id", COVS)
    with pytest.raises(DataError, match="no events"):
        spec.fit(small.assign(event=0), "day", "event", "patient_id", COVS)
    with pytest.raises(ConfigError, match="reference level"):
        spec.fit(small, "day", "event", "patient_id", COVS, {"organ": "brain"})
    with pytest.raises(DataError, match="constant"):
        spec.fit(small.assign(one=1.0), "day", "event", "patient_id", ["one"])
    with pytest.raises(DataError, match="collinear"):
        spec.fit(small.assign(twice=2 * small["age_z"]), "day", "event", "patient_id", ["age_z", "twice"])
    with pytest.raises(DataError, match="not numeric"):
        spec.fit(small, "day", "event", "patient_id", ["organ"])
    with pytest.raises(ConfigError, match="ties"):
        MixedCox(ties="exact").fit(small, "day", "event", "patient_id", COVS)
    no_event_level = small.copy()
    no_event_level.loc[no_event_level.index[:6], "organ"] = "brain"
    no_event_level.loc[no_event_level.index[:6], "event"] = 0
    with pytest.warns(ExclusionWarning, match="brain"):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, message="the random-effect")
            fit = spec.fit(no_event_level, "day", "event", "patient_id", COVS, CAT)
    assert fit.n_obs == 194 and "organ[brain]" not in set(fit.summary()["term"])


def test_exact_newton_reaches_the_exact_mode_quickly(planted):
    """Newton steps use the exact information (conjugate gradients), so with coxme's sparse
    approximation the mode is the exact-algebra mode to Newton accuracy (decrement < 1e-9 leaves
    ~1e-6 on the coefficients, SEs ~0.07) and a cold start converges in a handful of steps."""
    sub = planted[planted["patient_id"] < "P0120"]
    sparse = _fit(sub, MixedCox(), sigma2=0.5)
    exact = _fit(sub, MixedCox(sparse=None), sigma2=0.5)
    np.testing.assert_allclose(sparse.summary()["coef"], exact.summary()["coef"], atol=1e-5)
    np.testing.assert_allclose(sparse.random_effects["random_effect"], exact.random_effects["random_effect"],
                               atol=1e-5)
    assert sparse.loglik_penalized == pytest.approx(exact.loglik_penalized, abs=1e-8)
    assert sparse.n_iter <= 8


def test_start_from_a_related_fit_gives_the_same_fit(planted, tmp_path):
    """``start=`` changes where the search and the Newton iterations begin, not where they end: the
    warm fit of the bigger model equals its cold fit to the search's tolerances (log variance 1e-4, so
    coefficients within 1e-3 SE and the integrated log-likelihood within 1e-5), with fewer Newton steps.
    A refit of the same model with the profile interval reuses the search (same variance exactly)."""
    spec = MixedCox(profile_ci=False)
    smaller = spec.fit(planted, "day", "event", "patient_id", ["age_z"], CAT)
    cold = spec.fit(planted, "day", "event", "patient_id", COVS, CAT)
    warm = spec.fit(planted, "day", "event", "patient_id", COVS, CAT, start=smaller)
    np.testing.assert_allclose((warm.summary()["coef"] - cold.summary()["coef"]) / cold.summary()["se"], 0,
                               atol=1e-3)
    np.testing.assert_allclose(warm.summary()["se"], cold.summary()["se"], rtol=1e-3)
    assert np.log(warm.random_effect_variance) == pytest.approx(np.log(cold.random_effect_variance), abs=2e-4)
    assert warm.loglik_integrated == pytest.approx(cold.loglik_integrated, abs=1e-5)
    assert warm.loglik_fixed_only == pytest.approx(cold.loglik_fixed_only, abs=1e-8)
    assert warm.n_iter < cold.n_iter
    # a subset of the rows (new bookkeeping, random effects matched by patient) and a bigger start
    sub = planted[planted["patient_id"] < "P0300"]
    sub_cold = spec.fit(sub, "day", "event", "patient_id", ["age_z"], CAT)
    sub_warm = spec.fit(sub, "day", "event", "patient_id", ["age_z"], CAT, start=cold)
    np.testing.assert_allclose(sub_warm.summary()["coef"], sub_cold.summary()["coef"],
                               atol=1e-3 * sub_cold.summary()["se"].min())
    assert sub_warm.loglik_integrated == pytest.approx(sub_cold.loglik_integrated, abs=1e-5)
    # the same model with the profile interval: the search is not repeated
    profiled = MixedCox().fit(planted, "day", "event", "patient_id", COVS, CAT, start=warm)
    assert profiled.random_effect_variance == warm.random_effect_variance
    pd.testing.assert_frame_equal(profiled.summary(), warm.summary())
    full = MixedCox().fit(planted, "day", "event", "patient_id", COVS, CAT)
    np.testing.assert_allclose(np.log(profiled.random_effect_ci), np.log(full.random_effect_ci), atol=2e-3)
    # a fit read back from disk carries nothing to start from; a wrong type is an error
    back = MixedCoxFit.from_dir(warm.to_dir(tmp_path / "warm"))
    again = spec.fit(planted, "day", "event", "patient_id", COVS, CAT, start=back)
    pd.testing.assert_frame_equal(again.summary(), cold.summary())
    with pytest.raises(ConfigError, match="start"):
        spec.fit(planted, "day", "event", "patient_id", COVS, CAT, start=smaller.summary())


@pytest.mark.parametrize("true", [-1.6, 2.5, np.log(1e-6) - 1, np.log(50.0) + 1])
def test_warm_variance_search_finds_the_maximum_from_any_start(true):
    """The search started from a related model's variance (narrow bracket, parabolic expansion) reaches
    the maximum of a synthetic skewed profile to the tolerance, from starts at the bounds, far away or at
    the maximum, and returns a bound when the maximum lies beyond it. Private helper on purpose: it is
    the loop every warm-started fit runs."""
    from lesionatlas.hazards.mixed_cox import _maximise_log_variance

    lo, hi = np.log(1e-6), np.log(50.0)
    want = min(max(true, lo), hi)

    def profile(s):
        d = s - true
        return -50 * d**2 + 0.3 * d**3 if abs(d) < 3 else -300 * abs(d) - 450

    for start in (lo, -5.0, -1.0, 0.0, hi, want):
        n = [0]

        def counted(s):
            n[0] += 1
            return profile(s)

        got = _maximise_log_variance(counted, np.exp, lo, hi, 1e-4, start)
        assert got == pytest.approx(want, abs=2e-4), start
        assert n[0] <= 20
        if start == want:
            assert n[0] <= 5  # the start and +-0.02 bracket it; Brent needs two more


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_variance_search_reaches_the_maximum(ties):
    """The estimated variance is the maximiser of the integrated log-likelihood to the spec's tolerance
    on log(variance) (1e-4): the maximum of a parabola through the profile on a +-0.01 grid."""
    data = pd.read_csv(REF / "medium_input.csv")
    spec = MixedCox(ties=ties, profile_ci=False)
    fit = _fit(data, spec)
    s_hat = np.log(fit.random_effect_variance)
    grid = s_hat + np.linspace(-0.01, 0.01, 5)
    values = [_fit(data, spec, sigma2=float(np.exp(s))).loglik_integrated for s in grid]
    c2, c1, _ = np.polyfit(grid - s_hat, values, 2)
    assert c2 < 0
    assert abs(-c1 / (2 * c2)) < spec.tol_log_variance
    # the inner Newton stops at a decrement < 1e-9, which leaves ~1e-6 on the integrated value (the
    # Laplace determinant moves to first order with the mode), so refits at the grid differ by that much
    assert fit.loglik_integrated >= max(values) - 1e-5

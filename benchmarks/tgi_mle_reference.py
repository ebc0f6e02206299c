"""A maximum-likelihood reference for the growth model's SAEM: simulated maximum likelihood by importance
sampling with the draws held fixed, on simulated data sets.

``.venv/bin/python benchmarks/tgi_mle_reference.py [--lesions 500] [--seed 1001] [--draws 4000]
[--saem-seeds 4] [--kernels 0 2] [--replicates 3] [--check-draws 4] [--is-draws 1000 4000 10000]
[--is-defensive 0.1 0] [--is-inflate 1.5 1] [--truth-sets 8] [--is-pilot 0] [--is-keys 8]``

For each lesion a proposal q_i is fitted to its conditional distribution (adaptive importance sampling:
draws from the population distribution, then twice from a defensive mixture of the population
distribution (10%) and a Student-t (5 df) with the weighted mean and 1.2^2 x the weighted covariance of
the previous round). With M draws phi_im ~ q_i held fixed,

    log L(theta) ~= sum_i log (1/M) sum_m p(y_i | phi_im; b) p(phi_im; theta) / q_i(phi_im)

is a smooth, deterministic function of theta: it is maximised by L-BFGS with exact JAX gradients, the
proposals are refitted at the maximum and the maximisation repeated until theta stops moving (3 rounds).
The same likelihood as the fit's (M3 censoring, proportional error, the outlier floor of
``TGIModel.max_relative_residual``). Its own error is measured, not assumed: the final round is repeated
with ``--replicates`` independent sets of draws (the spread of the maximiser and of the maximum) and once
with ``--check-draws`` times the draws (default 4).

It then evaluates, with the same fixed draws (common random numbers, so differences are precise), log L
at the SAEM estimates of several SAEM seeds for each ``n_independent_kernel`` in ``--kernels``, and prints
how far each estimate is from the MLE in units of the MLE's SE (inverse Hessian of log L) and in log L.
Last, the -2LL that a fit reports (``TGIModel.n_is_draws`` in ``--is-draws``, ``is_defensive`` in
``--is-defensive`` and ``is_inflate`` in ``--is-inflate``, at the estimate of SAEM seed 0), with and without its bias correction, against a long
reference run at that estimate: proposals refitted there and ``--truth-sets`` x ``--draws`` draws, each
lesion's log mean weight plus half its relative variance. The fit's importance-sampling call (its own
proposal from the MCMC moments; ``n_pilot`` in ``--is-pilot``) is repeated with ``--is-keys`` keys, the first the fit's own, so that the
output gives the mean and the spread of the difference, not one draw of it.

Writes ``benchmarks/out/tgi_mle_reference_<seed>_<lesions>.json``.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
import warnings
from functools import partial
from unittest import mock
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from scipy.optimize import minimize  # noqa: E402

from tgi_scale import simulate  # noqa: E402

jax.config.update("jax_enable_x64", True)

from lesionatlas.tgi import TGIModel, saem  # noqa: E402
from lesionatlas.tgi import fit as fit_module  # noqa: E402
from lesionatlas.tgi.fit import build_arrays  # noqa: E402
from lesionatlas.tgi.likelihood import loglik_from_prediction, predict_log_volume  # noqa: E402

NAMES = ["kg_pop", "kd_pop", "f_pop", "omega_kg", "omega_kd", "omega_f", "b"]
DF = 5.0
DEFENSIVE = 0.10  # share of the population distribution in each proposal
INFLATE = 1.2  # the Student-t's scale, relative to the weighted conditional SD
CHUNK = 500  # draws evaluated at once
T_CONST = math.lgamma((DF + 3) / 2) - math.lgamma(DF / 2) - 1.5 * math.log(DF * math.pi)


def to_theta(pop) -> np.ndarray:
    f = pop["f_pop"]
    return np.array([math.log(pop["kg_pop"]), math.log(pop["kd_pop"]), math.log(f / (1 - f)),
                     math.log(pop["omega_kg"]), math.log(pop["omega_kd"]), math.log(pop["omega_f"]),
                     math.log(pop["b"])])


def natural(theta: np.ndarray) -> dict:
    v = np.exp(theta)
    v[2] = 1 / (1 + math.exp(-theta[2]))
    return dict(zip(NAMES, map(float, v)))


def log_normal(phi, mu, omega):
    return saem.log_prior(phi, mu, omega ** 2)


def log_t(phi, mean, chol):
    """Multivariate Student-t log density; phi (..., N, 3), mean (N, 3), chol (N, 3, 3) lower factor of the
    scale."""
    factor = [[chol[:, k, j] if j <= k else None for j in range(3)] for k in range(3)]
    log_det = sum(jnp.log(chol[:, k, k]) for k in range(3))
    return T_CONST - log_det + saem._t_log_kernel(jnp.moveaxis(phi, -1, 0), mean.T, factor, DF)


@partial(jax.jit, static_argnames=("n_chunks", "n"))
def _draw_prior(key, mu, omega, n_chunks, n):
    def one(c):
        phi = mu + omega * jax.random.normal(jax.random.fold_in(key, c), (CHUNK, n, 3))
        return phi, log_normal(phi, mu, omega)

    return jax.lax.map(one, jnp.arange(n_chunks))


@partial(jax.jit, static_argnames=("n_chunks", "n"))
def _draw_mixture(key, mu, omega, mean, chol, n_chunks, n):
    shape = (CHUNK, n)

    def one(c):
        k1, k2, k3, k4 = jax.random.split(jax.random.fold_in(key, c), 4)
        prior = mu + omega * jax.random.normal(k1, shape + (3,))
        z = jax.random.normal(k2, shape + (3,))
        chi2 = 2.0 * jax.random.gamma(k3, DF / 2, shape)
        u = z * jnp.sqrt(DF / chi2)[..., None]
        t_draw = mean + jnp.einsum("nij,knj->kni", chol, u)
        pick = jax.random.uniform(k4, shape) < DEFENSIVE
        phi = jnp.where(pick[..., None], prior, t_draw)
        log_q = jnp.logaddexp(math.log(DEFENSIVE) + log_normal(phi, mu, omega),
                              math.log(1 - DEFENSIVE) + log_t(phi, mean, chol))
        return phi, log_q

    return jax.lax.map(one, jnp.arange(n_chunks))


class Reference:
    def __init__(self, data, lesion_mask, max_relative_residual: float):
        self.mask = lesion_mask
        self.mrr = max_relative_residual
        self.n = lesion_mask.shape[0]

        def chunk_terms(theta, phi, log_q):  # phi (k, N, 3) -> log weights (k, N)
            mu, omega, b = theta[:3], jnp.exp(theta[3:6]), jnp.exp(theta[6])
            ll, _ = loglik_from_prediction(predict_log_volume(phi, data), data, jnp.stack([jnp.zeros_like(b), b]),
                                           error_model="proportional", max_relative_residual=self.mrr)
            lw = ll + log_normal(phi, mu, omega) - log_q
            return jnp.where(jnp.isnan(lw), -jnp.inf, lw)

        chunk_terms = jax.checkpoint(chunk_terms)

        def per_lesion(theta, phi, log_q):  # phi (C, k, N, 3)
            lw = jax.lax.map(lambda a: chunk_terms(theta, a[0], a[1]), (phi, log_q))  # (C, k, N)
            lw = lw.reshape(-1, lw.shape[-1])
            return jax.scipy.special.logsumexp(lw, axis=0) - math.log(lw.shape[0]), lw

        def total(theta, phi, log_q):
            li, _ = per_lesion(theta, phi, log_q)
            return jnp.sum(jnp.where(self.mask, li, 0.0))

        self.per_lesion = jax.jit(per_lesion)
        self.total = jax.jit(total)
        self.value_and_grad = jax.jit(jax.value_and_grad(lambda t, p, q: -total(t, p, q)))
        self.hessian = jax.jit(jax.hessian(total))

    # proposals -------------------------------------------------------------------------------------
    def draw(self, key, theta, proposal, n_draws):
        """Draws (C, CHUNK, N, 3) and their log proposal density; proposal None = the population law.
        Drawn chunk by chunk (``lax.map``), so that the intermediates stay the size of one chunk."""
        n_chunks = -(-n_draws // CHUNK)
        mu, omega = jnp.asarray(theta[:3]), jnp.exp(jnp.asarray(theta[3:6]))
        if proposal is None:
            return _draw_prior(key, mu, omega, n_chunks, self.n)
        return _draw_mixture(key, mu, omega, *proposal, n_chunks, self.n)

    def fit_proposal(self, theta, phi, log_q):
        """Weighted mean and covariance of each lesion's conditional distribution -> (mean, chol), ESS."""
        _, lw = self.per_lesion(jnp.asarray(theta), phi, log_q)
        w = jax.nn.softmax(lw, axis=0)  # (M, N)
        p = phi.reshape(-1, self.n, 3)
        mean = jnp.einsum("mn,mni->ni", w, p)
        d = p - mean
        cov = jnp.einsum("mn,mni,mnj->nij", w, d, d)
        ess = 1.0 / jnp.sum(w ** 2, axis=0)
        # a lesion whose weights collapse onto a few draws keeps a covariance no smaller than 1e-4
        cov = cov + 1e-4 * jnp.eye(3)
        chol = INFLATE * jnp.linalg.cholesky(cov)
        return (mean, chol), np.asarray(ess)

    def adapt(self, key, theta, n_draws, proposal=None, rounds=3):
        ess = None
        for _ in range(rounds):
            key, sub = jax.random.split(key)
            phi, log_q = self.draw(sub, theta, proposal, max(n_draws, 4000) if proposal is None else n_draws)
            proposal, ess = self.fit_proposal(theta, phi, log_q)
        return proposal, ess

    def evaluate(self, key, theta, proposal, n_draws, n_sets):
        """log L(theta) from ``n_sets`` independent sets of ``n_draws`` (a set at a time, so memory stays that
        of one set), each lesion's log mean weight plus half its relative variance (the second-order bias
        correction), with the Monte-Carlo SE: (corrected, uncorrected, SE)."""
        acc = acc2 = -np.inf
        for s in range(n_sets):
            phi, log_q = self.draw(jax.random.fold_in(key, s), theta, proposal, n_draws)
            _, lw = self.per_lesion(jnp.asarray(theta), phi, log_q)
            acc = np.logaddexp(acc, np.asarray(jax.scipy.special.logsumexp(lw, axis=0)))
            acc2 = np.logaddexp(acc2, np.asarray(jax.scipy.special.logsumexp(2.0 * lw, axis=0)))
            m = (s + 1) * lw.shape[0]
        mask = np.asarray(self.mask)
        log_p = acc - math.log(m)
        rel_var = np.maximum((np.exp(acc2 - math.log(m) - 2.0 * log_p) - 1.0) / m, 0.0)
        raw = float(np.sum(log_p[mask]))
        return raw + 0.5 * float(np.sum(rel_var[mask])), raw, float(np.sqrt(np.sum(rel_var[mask])))

    # maximisation ----------------------------------------------------------------------------------
    def maximise(self, theta, phi, log_q):
        def f(t):
            v, g = self.value_and_grad(jnp.asarray(t), phi, log_q)
            return float(v), np.asarray(g, float)

        r = minimize(f, theta, jac=True, method="L-BFGS-B", options={"maxiter": 500, "gtol": 1e-7})
        return r.x, -r.fun


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lesions", type=int, default=500)
    ap.add_argument("--seed", type=int, default=1001, help="data seed")
    ap.add_argument("--max-scans", type=int, default=5)
    ap.add_argument("--draws", type=int, default=4000)
    ap.add_argument("--saem-seeds", type=int, default=4)
    ap.add_argument("--kernels", type=int, nargs="+", default=[0, 2], help="n_independent_kernel values")
    ap.add_argument("--replicates", type=int, default=3)
    ap.add_argument("--check-draws", type=int, default=4, help="the last maximisation uses this many times --draws")
    ap.add_argument("--is-draws", type=int, nargs="*", default=[1000, 4000, 10000],
                    help="check the fit's own -2LL (TGIModel n_is_draws) at the first SAEM estimate")
    ap.add_argument("--is-defensive", type=float, nargs="*", default=[0.1, 0.0],
                    help="TGIModel is_defensive values of that check")
    ap.add_argument("--truth-sets", type=int, default=8,
                    help="sets of --draws of the long reference run at that estimate (bias-corrected)")
    ap.add_argument("--is-pilot", type=int, nargs="*", default=[0], help="importance_loglik n_pilot values")
    ap.add_argument("--is-inflate", type=float, nargs="*", default=[1.5, 1.0],
                    help="TGIModel is_inflate values of that check")
    ap.add_argument("--is-keys", type=int, default=8,
                    help="the fit's importance sampling repeated with this many keys (the first its own)")
    args = ap.parse_args()
    t_start = time.time()

    _, cohort = simulate(args.lesions, args.seed, args.max_scans)
    spec = TGIModel(baseline_observation="drop", n_is_draws=0)
    arrays, _ = build_arrays(cohort, spec)
    data = arrays.to_data(jnp.float64)
    ref = Reference(data, data.lesion_mask, spec.max_relative_residual)

    saem_fits = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in args.kernels:
            for s in range(args.saem_seeds):
                pop = TGIModel(baseline_observation="drop", n_is_draws=0, n_independent_kernel=k).fit(
                    cohort, seed=s).population.set_index("parameter")
                saem_fits[(k, s)] = to_theta(pop["estimate"])
    print(f"{len(saem_fits)} SAEM fits in {time.time() - t_start:.0f} s", flush=True)

    # rounds of: proposals at theta -> fixed draws -> maximise
    theta = saem_fits[(args.kernels[0], 0)].copy()
    key = jax.random.PRNGKey(args.seed)
    proposal = None
    for rnd in range(3):
        key, k_adapt, k_draw = jax.random.split(key, 3)
        proposal, ess = ref.adapt(k_adapt, theta, args.draws, proposal, rounds=3 if rnd == 0 else 1)
        phi, log_q = ref.draw(k_draw, theta, proposal, args.draws)
        new, value = ref.maximise(theta, phi, log_q)
        step = np.max(np.abs(new - theta))
        theta = new
        print(f"round {rnd}: log L {value:.3f}, max |step| {step:.2e} (normal scale), "
              f"ESS per lesion min {ess.min():.0f} median {np.median(ess):.0f}; {time.time() - t_start:.0f} s",
              flush=True)

    # its own Monte-Carlo error: independent sets of draws, and 4x the draws
    proposal, ess = ref.adapt(jax.random.fold_in(key, 99), theta, args.draws, proposal, rounds=1)
    reps = []
    for r in range(args.replicates):
        phi, log_q = ref.draw(jax.random.fold_in(key, 1000 + r), theta, proposal, args.draws)
        reps.append(ref.maximise(theta, phi, log_q))
    phi4, log_q4 = ref.draw(jax.random.fold_in(key, 2000), theta, proposal, args.check_draws * args.draws)
    theta4, value4 = ref.maximise(theta, phi4, log_q4)
    rep_theta = np.array([t for t, _ in reps])
    rep_value = np.array([v for _, v in reps])
    hess = np.asarray(ref.hessian(jnp.asarray(theta4), phi4, log_q4))
    se = np.sqrt(np.diag(np.linalg.inv(-hess)))
    print(f"MLE ({args.replicates} x {args.draws} draws): log L {rep_value.mean():.3f} (SD {rep_value.std(ddof=1):.3f}); "
          f"{args.check_draws * args.draws} draws: log L {value4:.3f}; maximiser SD over replicates / SE: "
          + " ".join(f"{n}:{s:.3f}" for n, s in zip(NAMES, rep_theta.std(0, ddof=1) / se))
          + f"; {args.check_draws}x draws vs replicate mean, in SE: "
          + " ".join(f"{n}:{d:+.2f}" for n, d in zip(NAMES, (theta4 - rep_theta.mean(0)) / se)), flush=True)
    mle = natural(theta4)
    print("MLE: " + " ".join(f"{n} {v:.5g} (SE {s:.3f} normal scale)" for (n, v), s in zip(mle.items(), se)))

    rows, loglik_at = [], {}
    for (k, s), th in saem_fits.items():
        value = loglik_at[(k, s)] = float(ref.total(jnp.asarray(th), phi4, log_q4))
        z = (th - theta4) / se
        rows.append({"kernel": k, "saem_seed": s, "loglik_minus_mle": value - value4,
                     **{f"z_{n}": float(v) for n, v in zip(NAMES, z)}, **{n: v for n, v in natural(th).items()}})
        print(f"kernel {k} seed {s}: log L - log L(MLE) {value - value4:+.3f}; (SAEM - MLE)/SE "
              + " ".join(f"{n}:{v:+.2f}" for n, v in zip(NAMES, z)), flush=True)
    # the fit's own -2LL (importance sampling around the MCMC conditional moments) against a long
    # reference run at the same estimate: proposals refitted there, --truth-sets x --draws draws
    is_rows = []
    k0 = args.kernels[0]
    truth = None
    if args.is_draws:
        th0 = saem_fits[(k0, 0)]
        prop0, _ = ref.adapt(jax.random.fold_in(key, 3000), th0, args.draws, proposal, rounds=1)
        ll_c, ll_raw, ll_se = ref.evaluate(jax.random.fold_in(key, 4000), th0, prop0, args.draws, args.truth_sets)
        truth = {"m2ll": -2 * ll_c, "m2ll_uncorrected": -2 * ll_raw, "m2ll_se": 2 * ll_se,
                 "draws": args.draws * args.truth_sets, "fixed_draw_m2ll": -2 * loglik_at[(k0, 0)]}
        print(f"reference -2LL at SAEM seed 0's estimate, {truth['draws']} draws: {truth['m2ll']:.1f} (SE "
              f"{truth['m2ll_se']:.1f}; uncorrected {truth['m2ll_uncorrected']:.1f}; the fixed draws of the "
              f"maximisation {truth['fixed_draw_m2ll']:.1f}); {time.time() - t_start:.0f} s", flush=True)
    if args.is_draws:
        # the fit's own importance-sampling call (its MCMC proposal, at its estimate), repeated with
        # --is-keys keys: the Monte-Carlo spread of the -2LL a fit reports, not one draw of it
        with warnings.catch_warnings(), mock.patch.object(
                fit_module.saem, "importance_loglik_jit", wraps=saem.importance_loglik_jit) as call:
            warnings.simplefilter("ignore")
            fit = TGIModel(baseline_observation="drop", n_is_draws=args.is_draws[0],
                           n_independent_kernel=k0).fit(cohort, seed=0)
        is_args, is_kwargs = call.call_args
        fit_key = is_args[0]
    for a, c, pilot, m in itertools.product(args.is_defensive, args.is_inflate, args.is_pilot, args.is_draws):
        m2ll, m2ll_raw, m2ll_se, secs = [], [], [], []
        for r in range(args.is_keys):
            key_r = fit_key if r == 0 else jax.random.fold_in(fit_key, r)
            t0 = time.time()
            ll, rel_se = saem.importance_loglik_jit(key_r, *is_args[1:7], m, *is_args[8:],
                                                    **{**is_kwargs, "defensive": a, "inflate": c,
                                                       "n_pilot": pilot})
            ll, rel_var = np.asarray(ll, float), np.asarray(rel_se, float) ** 2
            secs.append(time.time() - t0)
            m2ll.append(-2 * ll.sum())
            m2ll_raw.append(-2 * ll.sum() + rel_var.sum())
            m2ll_se.append(2 * math.sqrt(rel_var.sum()))
            if (r == 0 and m == args.is_draws[0] and a == fit.spec.is_defensive and c == fit.spec.is_inflate
                    and pilot == 0):
                # this call repeats the fit's own
                assert math.isclose(m2ll[0], -2 * fit.loglik, rel_tol=1e-12), (m2ll[0], -2 * fit.loglik)
        d, d_raw = np.array(m2ll) - truth["m2ll"], np.array(m2ll_raw) - truth["m2ll"]
        is_rows.append({"n_is_draws": m, "is_defensive": a, "is_inflate": c, "n_pilot": pilot, "keys": args.is_keys, "m2ll": m2ll,
                        "m2ll_uncorrected": m2ll_raw, "reported_se": m2ll_se, "reference_m2ll": truth["m2ll"],
                        "minus_reference_mean": float(d.mean()), "minus_reference_sd": float(d.std(ddof=1))
                        if len(d) > 1 else None, "uncorrected_minus_reference_mean": float(d_raw.mean()),
                        "seconds_median": float(np.median(secs))})
        sd = f"SD {d.std(ddof=1):.1f} over {len(d)} keys, " if len(d) > 1 else ""
        print(f"fit's -2LL, is_defensive={a}, is_inflate={c}, n_pilot={pilot}, n_is_draws={m}: minus the reference {d.mean():+.1f} ({sd}"
              f"reported SE {np.mean(m2ll_se):.1f}; the fit's own key {d[0]:+.1f}); uncorrected "
              f"{d_raw.mean():+.1f}; {np.median(secs):.1f} s per call", flush=True)
    for k in args.kernels:
        d = np.array([r["loglik_minus_mle"] for r in rows if r["kernel"] == k])
        zs = np.array([[r[f"z_{n}"] for n in NAMES] for r in rows if r["kernel"] == k])
        print(f"kernel {k}: mean log L deficit {-d.mean():.3f} (range {-d.max():.3f}..{-d.min():.3f}); "
              "mean z " + " ".join(f"{n}:{v:+.2f}" for n, v in zip(NAMES, zs.mean(0))), flush=True)

    out = Path(__file__).resolve().parent / "out" / f"tgi_mle_reference_{args.seed}_{args.lesions}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({
        "args": vars(args), "seconds": time.time() - t_start,
        "mle": mle, "mle_se_normal_scale": dict(zip(NAMES, map(float, se))), "loglik_mle": value4,
        "replicate_loglik": rep_value.tolist(), "replicate_theta": rep_theta.tolist(),
        "ess_min": float(ess.min()), "ess_median": float(np.median(ess)), "saem": rows, "fit_m2ll": is_rows,
        "reference_m2ll": truth,
    }, indent=1))
    print(f"wrote {out} ({time.time() - t_start:.0f} s)")


if __name__ == "__main__":
    main()

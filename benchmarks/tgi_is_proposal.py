"""The importance-sampling proposal of the growth model's -2LL, at paper scale: how wide, how defensive.

``.venv/bin/python benchmarks/tgi_is_proposal.py [--lesions 19180] [--seed 0] [--draws 1000] [--keys 16]
[--proposals 0.1:1.0 0.1:1.3 ...] [--ref-draws 16000] [--ref-pilot 1000] [--ref-keys 2]``

Fits the ``tgi_scale.py`` data (``TGIModel(baseline_observation="drop")``, defaults otherwise) once and
keeps the fit's own importance-sampling call (its estimate, its MCMC conditional means and covariances).
The reference: that call with ``--ref-pilot`` pilot draws that refit each lesion's proposal and
``--ref-draws`` draws (``is_defensive`` 0.1, ``is_inflate`` 1), repeated with ``--ref-keys`` keys; their
mean is the reference log-likelihood of each lesion. Then each proposal ``DEFENSIVE:INFLATE`` of
``--proposals`` (``TGIModel.is_defensive``, ``TGIModel.is_inflate``) with ``--draws`` draws per lesion and
``--keys`` keys, the same keys for every proposal (common random numbers: the standard draws are the same,
so the paired differences between proposals are precise). Prints, per proposal, the -2LL minus the
reference (mean and SD over keys), the SE the fit would report, the paired difference from the first
proposal, and the seconds per call. Writes ``benchmarks/out/tgi_is_proposal.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from unittest import mock

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import jax  # noqa: E402
from tgi_scale import machine, simulate  # noqa: E402

from lesionatlas.tgi import TGIModel  # noqa: E402
from lesionatlas.tgi import fit as fit_module  # noqa: E402
from lesionatlas.tgi import saem  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lesions", type=int, default=19180)
    ap.add_argument("--seed", type=int, default=0, help="data seed")
    ap.add_argument("--max-scans", type=int, default=5)
    ap.add_argument("--draws", type=int, default=1000, help="importance draws per lesion of each proposal")
    ap.add_argument("--keys", type=int, default=16)
    ap.add_argument("--proposals", nargs="+", default=["0.1:1.0", "0.1:1.3", "0.1:1.5", "0.1:1.7", "0.2:1.3",
                                                      "0.2:1.5"], help="DEFENSIVE:INFLATE pairs")
    ap.add_argument("--ref-draws", type=int, default=16000)
    ap.add_argument("--ref-pilot", type=int, default=1000)
    ap.add_argument("--ref-keys", type=int, default=2)
    ap.add_argument("--replace", type=float, nargs="*", default=[0.005, 0.01, 0.02, 0.05, 0.1],
                    help="shares of lesions (largest reported relative variance first) replaced by the reference")
    args = ap.parse_args(argv)
    proposals = [tuple(float(v) for v in p.split(":")) for p in args.proposals]
    t_start = time.time()
    jax.config.update("jax_enable_x64", True)

    _, cohort = simulate(args.lesions, args.seed, args.max_scans)
    with warnings.catch_warnings(), mock.patch.object(
            fit_module.saem, "importance_loglik_jit", wraps=saem.importance_loglik_jit) as call:
        warnings.simplefilter("ignore")
        fit = TGIModel(baseline_observation="drop").fit(cohort)
    (key, *is_args), is_kwargs = call.call_args
    n = fit.n_lesions
    print(f"fit: {n:,} lesions, -2LL {-2 * fit.loglik:,.1f}; {time.time() - t_start:.0f} s", flush=True)

    def loglik(k, n_draws: int, **options) -> tuple[np.ndarray, np.ndarray, float]:
        t0 = time.time()
        ll, rel_se = saem.importance_loglik_jit(k, *is_args[:6], n_draws, *is_args[7:], **{**is_kwargs, **options})
        ll, rel_se = np.asarray(ll, float)[:n], np.asarray(rel_se, float)[:n]
        return ll, rel_se, time.time() - t0

    refs = []
    for r in range(args.ref_keys):
        ll, rel_se, secs = loglik(jax.random.fold_in(key, 1000 + r), args.ref_draws, n_pilot=args.ref_pilot,
                                  defensive=0.1, inflate=1.0)
        refs.append(ll)
        print(f"reference {r}: -2LL {-2 * ll.sum():,.1f} (reported SE {2 * np.sqrt(np.sum(rel_se**2)):.1f}); "
              f"{secs:.0f} s", flush=True)
    ref = np.mean(refs, axis=0)
    ref_m2ll = float(-2 * ref.sum())
    ref_spread = float(np.std([-2 * r.sum() for r in refs], ddof=1)) if len(refs) > 1 else None

    rows = []
    for defensive, inflate in proposals:
        errors, ses, secs = [], [], []
        replaced: dict[float, list[float]] = {share: [] for share in args.replace}
        for r in range(args.keys):
            ll, rel_se, s = loglik(jax.random.fold_in(key, 77 + r), args.draws, defensive=defensive, inflate=inflate)
            errors.append(float(-2 * (ll - ref).sum()))
            # would a second pass on the lesions that look worst help? Their error, set to 0 (as if the
            # second pass were exact): what is left of the total
            order = np.argsort(-rel_se)
            for share in args.replace:
                err = ll - ref
                err[order[: int(share * n)]] = 0.0
                replaced[share].append(float(-2 * err.sum()))
            ses.append(float(2 * np.sqrt(np.sum(rel_se**2))))
            secs.append(s)
        rows.append({"is_defensive": defensive, "is_inflate": inflate, "minus_reference": errors,
                     "mean": float(np.mean(errors)), "sd": float(np.std(errors, ddof=1)),
                     "reported_se": float(np.mean(ses)), "seconds_median": float(np.median(secs)),
                     "worst_replaced": {str(k): float(np.mean(v)) for k, v in replaced.items()}})
        base = np.array(rows[0]["minus_reference"])
        diff = np.array(errors) - base
        rows[-1]["paired_vs_first"] = float(diff.mean())
        rows[-1]["paired_vs_first_se"] = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(rows) > 1 else 0.0
        print(f"is_defensive {defensive}, is_inflate {inflate}: -2LL minus the reference {rows[-1]['mean']:+.1f} "
              f"(SD {rows[-1]['sd']:.1f} over {args.keys} keys, reported SE {rows[-1]['reported_se']:.1f}); "
              f"paired against the first {rows[-1]['paired_vs_first']:+.1f} (SE {rows[-1]['paired_vs_first_se']:.1f}); "
              f"{rows[-1]['seconds_median']:.1f} s per call", flush=True)
        if replaced:
            print("  -2LL minus the reference with the lesions of largest reported relative variance replaced by "
                  "the reference: " + ", ".join(f"{100 * k:g}%: {np.mean(v):+.1f}" for k, v in replaced.items()),
                  flush=True)

    OUT.mkdir(exist_ok=True)
    path = OUT / "tgi_is_proposal.json"
    path.write_text(json.dumps({"args": vars(args), "machine": machine(), "seconds": time.time() - t_start,
                                "fit_m2ll": -2 * fit.loglik, "fit_spec": {"is_defensive": fit.spec.is_defensive,
                                                                          "is_inflate": fit.spec.is_inflate},
                                "reference_m2ll": ref_m2ll, "reference_sd_over_keys": ref_spread,
                                "proposals": rows}, indent=1))
    print(f"wrote {path} ({time.time() - t_start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

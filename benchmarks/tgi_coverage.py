"""Coverage of the growth model's 95% confidence intervals over many simulated data sets.

Run ``.venv/bin/python benchmarks/tgi_coverage.py [--seeds 50] [--lesions 500] [--max-scans 5]``.
For each seed, a cohort of ``--lesions`` target lesions is simulated with the truth of
``benchmarks/tgi_scale.py`` (the authors' Monolix demo-fit typical values; scans every ~6 weeks, values
below 200 mm3 censored) and fitted with the default ``TGIModel`` (standard errors from the Fisher
information; no -2LL, which the intervals do not use). For each population parameter it reports:

- ``coverage``: share of seeds whose 95% CI holds the truth, with its 95% Clopper-Pearson interval
  (target 90-98%: the intervals are Wald intervals on the estimation scale, so a little off 95% is expected
  for the variances);
- ``bias_percent``: mean relative error of the estimate;
- ``se_ratio``: mean reported SE over the empirical SD of the estimates across seeds (1 = the SEs are right).

Results go to ``benchmarks/out/tgi_coverage.csv`` (one row per seed and parameter) and ``.json`` (summary).
"""
from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import beta

from tgi_scale import ROWS, TRUTH, machine, simulate

OUT = Path(__file__).resolve().parent / "out"


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--first-seed", type=int, default=1000)
    parser.add_argument("--lesions", type=int, default=500)
    parser.add_argument("--max-scans", type=int, default=5)
    parser.add_argument("--n-smooth", type=int, default=None, help="SAEM smoothing iterations (default: the model's)")
    parser.add_argument("--n-chains", type=int, default=None, help="chains per lesion (default: the model's)")
    parser.add_argument("--n-independent-kernel", type=int, default=None,
                        help="moves of the independence sampler per iteration (default: the model's)")
    parser.add_argument("--auto-stop", action="store_true",
                        help="end the exploratory phase when the trajectories are flat (TGIModel.auto_stop)")
    args = parser.parse_args(argv)

    from lesionatlas.tgi import TGIModel

    options = {k: v for k, v in (("n_smooth", args.n_smooth), ("n_chains", args.n_chains),
                                 ("n_independent_kernel", args.n_independent_kernel)) if v is not None}
    if args.auto_stop:
        options["auto_stop"] = True
    spec = TGIModel(baseline_observation="drop", n_is_draws=0, **options)
    rows = []
    started = time.perf_counter()
    for i, seed in enumerate(range(args.first_seed, args.first_seed + args.seeds)):
        _, cohort = simulate(args.lesions, seed, args.max_scans)
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = spec.fit(cohort, seed=seed)
        secs = time.perf_counter() - t
        pop = fit.population.set_index("parameter")
        for name, key in ROWS.items():
            truth = TRUTH[key]
            rows.append({"seed": seed, "parameter": name, "truth": truth, "estimate": pop.loc[name, "estimate"],
                         "se": pop.loc[name, "se"], "se_mc": pop.loc[name, "se_mc"], "ci_lower": pop.loc[name, "ci_lower"],
                         "ci_upper": pop.loc[name, "ci_upper"], "seconds": secs,
                         "n_explore": fit.diagnostics["n_explore"],
                         "covered": bool(pop.loc[name, "ci_lower"] <= truth <= pop.loc[name, "ci_upper"])})
        print(f"seed {seed}: {secs:.1f} s ({i + 1}/{args.seeds})", flush=True)
    table = pd.DataFrame(rows)
    summary = []
    for name, sub in table.groupby("parameter", sort=False):
        ok = sub[np.isfinite(sub["se"])]
        k, n = int(ok["covered"].sum()), len(ok)
        lo, hi = clopper_pearson(k, n) if n else (float("nan"), float("nan"))
        summary.append({"parameter": name, "n": n, "coverage": k / n if n else float("nan"), "coverage_lower": lo,
                        "coverage_upper": hi,
                        "bias_percent": float(100 * (ok["estimate"] / ok["truth"] - 1).mean()),
                        "se_ratio": float(ok["se"].mean() / ok["estimate"].std(ddof=1)) if n > 1 else float("nan"),
                        "total_se_ratio": float(np.sqrt(ok["se"] ** 2 + ok["se_mc"].fillna(0.0) ** 2).mean()
                                                / ok["estimate"].std(ddof=1)) if n > 1 else float("nan")})
    summary = pd.DataFrame(summary)
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    total = time.perf_counter() - started
    explore = table.groupby("seed")["n_explore"].first()
    print(f"{args.seeds} fits of {args.lesions} lesions in {total:.0f} s; exploratory iterations "
          f"{explore.mean():.0f} on average ({explore.min()}-{explore.max()})")
    OUT.mkdir(exist_ok=True)
    stem = "tgi_coverage" + "".join(f"_{k}{v}" for k, v in options.items())
    table.to_csv(OUT / f"{stem}.csv", index=False)
    (OUT / f"{stem}.json").write_text(json.dumps({"args": vars(args), "machine": machine(), "seconds": total,
                                                       "summary": summary.to_dict(orient="records")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""NPDE against the conditional NPDE when scans stop at progression, at paper scale.

Run ``.venv/bin/python benchmarks/tgi_npde.py [--lesions 19180] [--seed 0] [--max-scans 8]``.
A cohort is simulated with the truth of ``benchmarks/tgi_scale.py`` (scans every ~6 weeks until the
lesion progresses, i.e. its volume reaches 2.2 x its nadir, as real trials stop scanning at
progression), fitted with the default ``TGIModel``, and its residual table computed. For the NPD, the
NPDE and the conditional NPDE it reports the mean and SD overall and by scan number (1st, 2nd, ...
observation of a lesion after baseline): under a right model all three should be N(0, 1); the design
makes the late observations those of lesions that did not grow. Also the seconds of each step of the
residual table (simulations, NPDE decorrelation, conditional probabilities alone: a first call,
compilation included, and a second) and of the one importance pass that gives both the conditional NPDE's
probabilities and the conditional VPC's 200 replicates (``conditional_simulations``, as the residual table
and the VPC share it).

Results go to ``benchmarks/out/tgi_npde.csv`` (by scan) and ``.json`` (overall, timings, machine).
"""
from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from tgi_scale import cohort_parser, machine, simulate

OUT = Path(__file__).resolve().parent / "out"
COLUMNS = ["npd", "npde", "cnpde"]


def main(argv: list[str] | None = None) -> int:
    parser = cohort_parser(__doc__.splitlines()[0], max_scans=8)
    args = parser.parse_args(argv)

    from lesionatlas.tgi import TGIModel
    from lesionatlas.tgi import diagnostics as dg

    _, cohort = simulate(args.lesions, args.seed, args.max_scans)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = TGIModel(baseline_observation="drop", n_is_draws=0).fit(cohort, seed=0)
        design = dg._design(fit)
        seconds = {}
        start = time.perf_counter()
        sims = dg.simulate_observations(fit)
        seconds["simulations"] = time.perf_counter() - start
        start = time.perf_counter()
        dg._npde(design, sims, np.random.default_rng(0))
        seconds["npde_decorrelation"] = time.perf_counter() - start
        start = time.perf_counter()
        dg._conditional_pd(fit, design, np.random.default_rng(0), dg._CONDITIONAL_DRAWS)
        seconds["conditional_probabilities"] = time.perf_counter() - start  # compilation included
        start = time.perf_counter()
        dg._conditional_pd(fit, design, np.random.default_rng(1), dg._CONDITIONAL_DRAWS)
        seconds["conditional_probabilities_again"] = time.perf_counter() - start
        start = time.perf_counter()
        dg.conditional_simulations(fit)  # the replicates of the conditional VPC, and the cnpde's probabilities
        seconds["conditional_pass"] = time.perf_counter() - start
        table = fit.residuals()
    table = table.sort_values(["lesion_id", "day"])
    table["scan"] = table.groupby("lesion_id").cumcount() + 1
    by_scan = table.groupby("scan")[COLUMNS].agg(["mean", "std"])
    by_scan.columns = [f"{a}_{b}" for a, b in by_scan.columns]
    by_scan.insert(0, "n_obs", table.groupby("scan").size())
    overall = {c: {"mean": float(table[c].mean()), "sd": float(table[c].std())} for c in COLUMNS}
    OUT.mkdir(exist_ok=True)
    by_scan.round(4).to_csv(OUT / "tgi_npde.csv")
    summary = {"lesions": args.lesions, "observations": int(fit.n_obs), "seed": args.seed, "overall": overall,
               "seconds": {k: round(v, 2) for k, v in seconds.items()}, "machine": machine()}
    (OUT / "tgi_npde.json").write_text(json.dumps(summary, indent=2))
    pd.set_option("display.width", 160)
    print(by_scan.round(3).to_string())
    print(json.dumps({k: summary[k] for k in ("observations", "overall", "seconds")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""How often the VPC flags a right model when scans stop at progression: the VPC against the conditional VPC.

Run ``.venv/bin/python benchmarks/tgi_vpc.py [--lesions 1000] [--seed 0] [--max-scans 8] [--datasets 20]``.
``--datasets`` cohorts (data seeds ``--seed``, ``--seed + 1``, ...) are simulated with the truth of
``benchmarks/tgi_scale.py`` (scans every ~6 weeks until the lesion's volume reaches 2.2 x its nadir) and
fitted with the default ``TGIModel`` (no importance sampling). For each, the VPC (replicates from the
population model at the observed days) and the conditional VPC (each observation simulated given the
lesion's earlier ones, ``vpc_table(conditional=True)``), 200 replicates, 8 time bins, 90% prediction
intervals. The model is the truth, so a calibrated check puts an observed percentile outside its PI about
10% of the time in every bin. Reported: that rate by bin for the 10th, 50th and 90th percentiles and for
the censored proportion, and the seconds of the conditional replicates.

Results go to ``benchmarks/out/tgi_vpc.csv`` (rates by bin) and ``.json`` (overall, timings, machine).
"""
from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import pandas as pd

from tgi_scale import cohort_parser, machine, simulate

OUT = Path(__file__).resolve().parent / "out"


def main(argv: list[str] | None = None) -> int:
    parser = cohort_parser(__doc__.splitlines()[0], max_scans=8)
    parser.set_defaults(lesions=1000)
    parser.add_argument("--datasets", type=int, default=20)
    args = parser.parse_args(argv)

    from lesionatlas.tgi import TGIModel

    rows, seconds = [], []
    for k in range(args.datasets):
        _, cohort = simulate(args.lesions, args.seed + k, args.max_scans)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = TGIModel(baseline_observation="drop", n_is_draws=0).fit(cohort, seed=0)
        for conditional in (False, True):
            start = time.perf_counter()
            vpc = fit.vpc(conditional=conditional)
            if conditional:
                seconds.append(time.perf_counter() - start)
            kind = "conditional" if conditional else "standard"
            for r in vpc.percentiles.itertuples():
                rows.append({"dataset": k, "vpc": kind, "bin": r.bin, "what": f"P{r.percentile:g}",
                             "outside_pi": r.outside_pi, "n_obs": r.n_obs})
            for r in vpc.censored.itertuples():
                rows.append({"dataset": k, "vpc": kind, "bin": r.bin, "what": "censored",
                             "outside_pi": r.outside_pi, "n_obs": r.n_obs})
        print(f"data set {k + 1}/{args.datasets}: {fit.n_obs} observations", flush=True)
    table = pd.DataFrame(rows)
    rates = table.pivot_table(index=["vpc", "what"], columns="bin", values="outside_pi", aggfunc="mean")
    rates["all bins"] = table.groupby(["vpc", "what"])["outside_pi"].mean()
    OUT.mkdir(exist_ok=True)
    rates.round(4).to_csv(OUT / "tgi_vpc.csv")
    summary = {"lesions": args.lesions, "datasets": args.datasets, "seed": args.seed,
               "outside_rate": {kind: float(table.loc[table["vpc"] == kind, "outside_pi"].mean())
                                for kind in ("standard", "conditional")},
               "conditional_seconds": [round(s, 2) for s in seconds], "machine": machine()}
    (OUT / "tgi_vpc.json").write_text(json.dumps(summary, indent=2))
    pd.set_option("display.width", 160)
    print(rates.round(3).to_string())
    print(json.dumps({k: summary[k] for k in ("outside_rate", "conditional_seconds")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

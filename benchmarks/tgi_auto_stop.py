"""The growth-model fit with and without ``auto_stop`` at paper scale, in one process.

Run ``.venv/bin/python benchmarks/tgi_auto_stop.py [--lesions 19180] [--seed 0]``. Simulates the
``tgi_scale.py`` data and fits ``TGIModel(baseline_observation="drop")`` four times, in the order default,
auto_stop, default, auto_stop (the first two include compilation; the last two are warm calls), printing
each fit's seconds, exploratory iterations, phase seconds, estimates, SEs, Monte-Carlo SEs and -2LL.
Results also go to ``benchmarks/out/tgi_auto_stop.json``.
"""
from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

from tgi_scale import ROWS, cohort_parser, machine, simulate

OUT = Path(__file__).resolve().parent / "out"


def main(argv: list[str] | None = None) -> int:
    parser = cohort_parser(__doc__.splitlines()[0])
    args = parser.parse_args(argv)

    from lesionatlas.tgi import TGIModel

    _, cohort = simulate(args.lesions, args.seed, args.max_scans)
    runs = []
    for name, auto in (("default", False), ("auto_stop", True), ("default_warm", False), ("auto_stop_warm", True)):
        spec = TGIModel(baseline_observation="drop", auto_stop=auto)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            fit = spec.fit(cohort, seed=0)
            seconds = time.perf_counter() - start
        pop = fit.population.set_index("parameter")
        run = {"run": name, "seconds": round(seconds, 2), "n_explore": fit.diagnostics["n_explore"],
               "phase_seconds": fit.diagnostics["phase_seconds"],
               "estimate": {k: float(pop.loc[k, "estimate"]) for k in ROWS},
               "se": {k: float(pop.loc[k, "se"]) for k in ROWS},
               "se_mc": {k: float(pop.loc[k, "se_mc"]) for k in ROWS},
               "minus2_loglik": None if fit.loglik is None else -2 * fit.loglik}
        runs.append(run)
        print(json.dumps(run), flush=True)
    OUT.mkdir(exist_ok=True)
    (OUT / "tgi_auto_stop.json").write_text(json.dumps({"args": vars(args), "machine": machine(), "runs": runs},
                                                       indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

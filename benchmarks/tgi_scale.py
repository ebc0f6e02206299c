"""The tumor growth model at paper scale: lesionatlas SAEM vs a naive per-lesion two-stage fit.

Run ``python benchmarks/tgi_scale.py`` (options: ``--lesions`` (default 19,180, the paper's target
lesions), ``--seed``, ``--naive-sample N`` (time the naive loop on N random lesions and extrapolate
linearly to all; 0 = run it on all), ``--max-scans``, ``--precision``, ``--data``, ``--no-warm``).
Results go to ``benchmarks/out/tgi_scale.json`` and ``tgi_scale.csv`` (git-ignored; with ``--data
mcrc``, ``tgi_scale_mcrc.*``) and are printed as tables.

The data: the tgi tests' numpy simulator (``tests/tgi/tgi_simulate.py``: scans about every 6 weeks until
progression or ``--max-scans``, proportional error, values below 200 mm3 censored) with the typical values
of the authors' Monolix demo fit (``paper/FACTS.md``: Kg 0.00473/day, Kd 0.0292/day, F 0.051, omegas
1.11, 1.19, 3.29, b 0.366) and a median baseline volume of 10,000 mm3 (a 33 mm lesion). With the
default 5 scans after baseline this gives about 5 rows per lesion, baseline row included (paper:
94,174 measurements of 19,180 lesions).

``--data mcrc`` fits instead the target lesions of the package's simulated mCRC cohort
(``simulate_cohort("mcrc", seed)`` after the paper's selection, as ``lesionatlas demo`` does) with the
pipeline's default spec (``TGIModel()``): about 19,400 lesions with a long tail of observation counts
(up to 21). That simulator plants covariate effects and a structured residual error that the model
without covariates does not have, so its estimates are compared with nothing; it times the tgi stage
of a pipeline run.

Timed, in one process on one machine:

- ``saem_first``: ``TGIModel(baseline_observation="drop").fit(cohort)`` including JIT compilation
  (default settings: 300 + 200 SAEM iterations, Fisher information, conditional modes, -2LL by
  importance sampling), with the wall-clock seconds of each phase (``fit.diagnostics["phase_seconds"]``),
  the process CPU seconds (all threads) and the load average of the machine before and after;
- ``saem_warm``: the same call again (compiled code reused);
- ``naive``: what many Python users write: ``scipy.optimize.least_squares`` on log volumes looped over
  lesions (uncensored rows after the baseline; censored rows dropped), then the mean and SD of the
  per-lesion estimates as "population" values (two-stage). Same starting values as SAEM.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).resolve().parent / "out"
TRUTH = {"kg": 0.00473, "kd": 0.0292, "f": 0.051, "omega_kg": 1.11, "omega_kd": 1.19, "omega_f": 3.29, "b": 0.366}
ROWS = {"kg_pop": "kg", "kd_pop": "kd", "f_pop": "f", "omega_kg": "omega_kg", "omega_kd": "omega_kd",
        "omega_f": "omega_f", "b": "b"}


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram_gib = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    import jax

    return {
        "nproc": os.cpu_count(),
        "sched_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu": cpu,
        "ram_gib": ram_gib,
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jax_backend": jax.default_backend(),
    }


def simulate(n_lesions: int, seed: int, max_scans: int):
    sys.path.insert(0, str(ROOT / "tests" / "tgi"))
    from tgi_simulate import simulate as simulate_helper

    from lesionatlas.data.cohort import Cohort

    sim = simulate_helper(n_lesions, seed=seed, truth=TRUTH, max_scans=max_scans, v0_median=10000.0,
                          v0_log_sd=0.8)
    return sim, Cohort.from_tables(*sim.tables())


def simulate_mcrc(seed: int):
    """Target lesions of the simulated mCRC cohort after the paper's selection, as padded arrays."""
    from lesionatlas.data.select import select_patients
    from lesionatlas.data.simulate import simulate_cohort
    from lesionatlas.tgi import TGIModel
    from lesionatlas.tgi.fit import build_arrays

    cohort = select_patients(simulate_cohort("mcrc", seed=seed).cohort).cohort
    arrays, _ = build_arrays(cohort, TGIModel())
    return arrays, cohort


def naive_fit(sim, lesions: np.ndarray) -> tuple[np.ndarray, int]:
    """Per-lesion least squares on log volumes; returns (len(lesions), 3) phi and the failure count.

    ``sim`` has padded ``t, y, censored, obs_mask, v0, t0`` arrays (the tests' simulator's output or the
    shell's ``LesionArrays``)."""
    from scipy.optimize import least_squares

    x0 = np.array([math.log(0.01), math.log(0.01), math.log(0.1 / 0.9)])
    out = np.full((len(lesions), 3), np.nan)
    failed = 0
    for row, i in enumerate(lesions):
        keep = sim.obs_mask[i] & ~sim.censored[i]
        t, y = sim.t[i, keep], np.log(sim.y[i, keep])
        if len(t) == 0:
            failed += 1
            continue
        log_v0, t0 = math.log(sim.v0[i]), sim.t0[i]

        def residuals(p, t=t, y=y, log_v0=log_v0, t0=t0):
            kg, kd = np.exp(p[0]), np.exp(p[1])
            log_f, log_1mf = -np.logaddexp(0.0, -p[2]), -np.logaddexp(0.0, p[2])
            after = log_v0 - kg * t0 + np.logaddexp(log_f + kg * t, log_1mf - kd * t)
            return np.where(t < 0, log_v0 + kg * (t - t0), after) - y

        try:
            res = least_squares(residuals, x0)
            out[row] = res.x
            failed += int(not res.success)
        except Exception:  # noqa: BLE001 - a naive loop skips lesions it cannot fit
            failed += 1
    return out, failed


def cohort_parser(description: str, *, max_scans: int = 5) -> argparse.ArgumentParser:
    """A parser with the options of :func:`simulate`: ``--lesions``, ``--seed`` and ``--max-scans``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--lesions", type=int, default=19180)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-scans", type=int, default=max_scans)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = cohort_parser(__doc__.splitlines()[0])
    parser.add_argument("--naive-sample", type=int, default=0,
                        help="time the naive loop on this many random lesions and extrapolate (0 = all)")
    parser.add_argument("--precision", choices=["float64", "float32"], default="float64")
    parser.add_argument("--data", choices=["tgi", "mcrc"], default="tgi",
                        help="tgi: the tests' simulator with the demo-fit truth; mcrc: the simulated cohort")
    parser.add_argument("--no-warm", action="store_true", help="skip the second (warm) SAEM call")
    args = parser.parse_args(argv)

    from lesionatlas.tgi import TGIModel

    info: dict = {"machine": machine(), "args": vars(args), "truth": TRUTH if args.data == "tgi" else None}
    t = time.perf_counter()
    if args.data == "tgi":
        sim, cohort = simulate(args.lesions, args.seed, args.max_scans)
        n_lesions, n_after, cens = args.lesions, sim.n_obs, sim.censored_fraction
        spec = TGIModel(baseline_observation="drop", precision=args.precision)
    else:
        sim, cohort = simulate_mcrc(args.seed)
        n_lesions, n_after = sim.n_lesions, sim.n_obs
        cens = float((sim.censored & sim.obs_mask).sum() / sim.obs_mask.sum())
        spec = TGIModel(precision=args.precision)
    info["simulate_seconds"] = round(time.perf_counter() - t, 2)
    info["n_lesions"] = int(n_lesions)
    info["n_rows"] = int(len(cohort.measurements))
    info["n_rows_fitted"] = int(n_after)
    info["censored_fraction"] = round(cens, 4)
    print(f"data ({args.data}): {n_lesions:,} lesions, {info['n_rows']:,} rows ({n_after:,} fitted, "
          f"{100 * cens:.1f}% below 200 mm3); simulated in {info['simulate_seconds']} s", flush=True)

    timings = []
    phases = []
    fit = None
    for label in ("saem_first", "saem_warm"):
        if label == "saem_warm" and args.no_warm:
            continue
        load_before = os.getloadavg()[0]
        t, cpu = time.perf_counter(), time.process_time()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit = spec.fit(cohort, seed=args.seed)
        secs, cpu = time.perf_counter() - t, time.process_time() - cpu
        load_after = os.getloadavg()[0]
        timings.append({"method": label, "seconds": round(secs, 2), "cpu_seconds": round(cpu, 2),
                        "load_before": round(load_before, 2), "load_after": round(load_after, 2),
                        "lesions_timed": n_lesions, "extrapolated": False})
        phases.append({"call": label, **fit.diagnostics["phase_seconds"]})
        print(f"{label}: {secs:.1f} s wall, {cpu:.1f} s CPU, load average {load_before:.1f} -> {load_after:.1f} "
              f"({len(caught)} warning(s): {'; '.join(sorted({str(w.message)[:80] for w in caught}))})", flush=True)
        print("  phases (s): " + ", ".join(f"{k} {v:.1f}" for k, v in fit.diagnostics["phase_seconds"].items()),
              flush=True)
    assert fit is not None

    rng = np.random.default_rng([7, args.seed])
    n_sample = n_lesions if args.naive_sample <= 0 else min(args.naive_sample, n_lesions)
    sample = np.sort(rng.choice(n_lesions, n_sample, replace=False))
    load_before = os.getloadavg()[0]
    t, cpu = time.perf_counter(), time.process_time()
    phi_naive, failed = naive_fit(sim, sample)
    secs, cpu = time.perf_counter() - t, time.process_time() - cpu
    extrapolated = n_sample < n_lesions
    naive_all = secs * n_lesions / n_sample
    timings.append({"method": "naive_least_squares", "seconds": round(naive_all, 2),
                    "cpu_seconds": round(cpu * n_lesions / n_sample, 2), "load_before": round(load_before, 2),
                    "load_after": round(os.getloadavg()[0], 2), "lesions_timed": n_sample,
                    "extrapolated": extrapolated})
    print(f"naive: {secs:.1f} s for {n_sample:,} lesions ({failed} failed)"
          + (f", extrapolated to {naive_all:.1f} s for all {n_lesions:,}" if extrapolated else ""), flush=True)
    saem_ref = next(r["seconds"] for r in timings[::-1] if r["method"].startswith("saem"))
    for r in timings:
        r["ratio_naive_over_this"] = round(naive_all / r["seconds"], 2)

    info["timings"] = timings
    info["phase_seconds"] = phases
    info["saem_seconds_reference"] = saem_ref
    info["saem_diagnostics"] = {k: v for k, v in fit.diagnostics.items() if not isinstance(v, dict)}
    info["minus_2_loglik"] = None if fit.loglik is None else -2 * fit.loglik
    info["population"] = fit.population.to_dict(orient="records")
    OUT.mkdir(parents=True, exist_ok=True)
    m = info["machine"]
    print(f"\nmachine: {m['nproc']} CPUs ({m['cpu']}), {m['ram_gib']} GiB RAM, jax {m['jax']} ({m['jax_backend']})")
    print(pd.DataFrame(timings).to_string(index=False))
    print()
    print(pd.DataFrame(phases).to_string(index=False))
    print()
    if args.data == "mcrc":
        (OUT / "tgi_scale_mcrc.json").write_text(json.dumps(info, indent=2, default=float))
        pd.DataFrame(timings).to_csv(OUT / "tgi_scale_mcrc.csv", index=False)
        print(fit.population.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        print(f"\n-2LL {info['minus_2_loglik']:.1f} (importance sampling, relative SE "
              f"{fit.diagnostics['is_relative_se']:.2f})")
        print(f"\nwritten: {OUT / 'tgi_scale_mcrc.json'}, {OUT / 'tgi_scale_mcrc.csv'}")
        return 0

    # recovery: estimate vs truth
    pop = fit.population.set_index("parameter")
    ok = np.isfinite(phi_naive).all(axis=1)
    p = phi_naive[ok]
    naive = {
        "kg_pop": math.exp(np.mean(p[:, 0])), "kd_pop": math.exp(np.mean(p[:, 1])),
        "f_pop": 1 / (1 + math.exp(-np.mean(p[:, 2]))),
        "omega_kg": float(np.std(p[:, 0])), "omega_kd": float(np.std(p[:, 1])), "omega_f": float(np.std(p[:, 2])),
        "b": float("nan"),
    }
    recovery = pd.DataFrame(
        [
            {
                "parameter": name,
                "truth": TRUTH[key],
                "saem_estimate": pop.loc[name, "estimate"],
                "saem_se": pop.loc[name, "se"],
                "saem_rel_error_percent": 100 * (pop.loc[name, "estimate"] / TRUTH[key] - 1),
                "truth_in_saem_ci": bool(pop.loc[name, "ci_lower"] <= TRUTH[key] <= pop.loc[name, "ci_upper"]),
                "naive_estimate": naive[name],
                "naive_rel_error_percent": 100 * (naive[name] / TRUTH[key] - 1),
            }
            for name, key in ROWS.items()
        ]
    )
    info["recovery"] = recovery.to_dict(orient="records")
    (OUT / "tgi_scale.json").write_text(json.dumps(info, indent=2, default=float))
    pd.DataFrame(timings).to_csv(OUT / "tgi_scale.csv", index=False)
    recovery.to_csv(OUT / "tgi_scale_recovery.csv", index=False)
    print(recovery.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    within = recovery["truth_in_saem_ci"].all()
    worst = recovery["saem_rel_error_percent"].abs().max()
    print(f"\nevery parameter within its 95% CI: {within}; largest relative error {worst:.2f}%; -2LL "
          f"{info['minus_2_loglik']:.1f} (importance sampling, relative SE {fit.diagnostics['is_relative_se']:.2f})")
    print(f"\nwritten: {OUT / 'tgi_scale.json'}, {OUT / 'tgi_scale.csv'}, {OUT / 'tgi_scale_recovery.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Progression patterns at paper scale: clustering + choice of k (k = 1..15) + predictor training.

Run ``python benchmarks/patterns_scale.py [--patients 4308] [--seed 0]``. Prints the time of each step,
the recovery of the planted patterns (planted vs found), OS medians by group and the predictor's test
metrics; writes ``benchmarks/out/patterns_scale.json`` (git-ignored). Goal: the three timed steps under
30 s on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import pandas as pd

OUT = Path(__file__).resolve().parent / "out"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=4308)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--encoding", default="rank")
    args = ap.parse_args()

    from lifelines import KaplanMeierFitter

    import lesionatlas.data as data
    from lesionatlas.patterns import baseline_features, cluster_sequences, train_group_predictor

    sim = data.simulate_cohort("mcrc", seed=args.seed, n_patients=args.patients)
    seq = sim.truth.table("sequences")
    times: dict[str, float] = {}

    t = time.perf_counter()
    auto = cluster_sequences(seq, sim.cohort.patients, encoding=args.encoding, k_max=15, seed=args.seed)
    times["cluster k=1..15 (auto)"] = time.perf_counter() - t
    t = time.perf_counter()
    pat = cluster_sequences(seq, sim.cohort.patients, encoding=args.encoding, k=5, k_max=15, seed=args.seed)
    times["cluster k=1..15 (k=5 forced)"] = time.perf_counter() - t
    t = time.perf_counter()
    feats = baseline_features(sim.cohort)
    times["baseline features"] = time.perf_counter() - t
    t = time.perf_counter()
    pred = train_group_predictor(feats, pat.assignments.set_index("patient_id")["group"], seed=args.seed)
    times["predictor (grid 2x2, 5-fold CV, importance)"] = time.perf_counter() - t

    planted = sim.truth.table("patients")[["patient_id", "pattern"]].astype(str)
    a = pat.assignments.merge(planted, on="patient_id").merge(
        sim.cohort.patients[["patient_id", "os_days", "os_event"]].astype({"patient_id": str}), on="patient_id")
    cross = pd.crosstab(a["pattern"], a["group"])
    medians = {g: float(KaplanMeierFitter().fit(s["os_days"], s["os_event"].astype(bool)).median_survival_time_)
               for g, s in a.groupby("group")}
    print(f"{args.patients} patients, encoding {args.encoding}, {os.cpu_count()} cores, load "
          f"{os.getloadavg()[0]:.1f}, {platform.processor() or platform.machine()}")
    for k, v in times.items():
        print(f"{k:48s} {v:7.2f} s")
    timed = times["cluster k=1..15 (auto)"] + times["baseline features"] + times[
        "predictor (grid 2x2, 5-fold CV, importance)"]
    print(f"{'total (auto clustering + features + predictor)':48s} {timed:7.2f} s")
    print(f"\nautomatic choice: {auto!r}\nchoices by rule: {auto.meta['choices']}")
    print(f"\nk = 5: {pat!r}\n\nplanted (rows) vs found (columns):\n{cross.to_string()}")
    print("\nOS median by group (days):", {g: round(m) for g, m in medians.items()})
    print(f"\n{pred!r}\n{pred.metrics.to_string(index=False)}")
    OUT.mkdir(exist_ok=True)
    (OUT / "patterns_scale.json").write_text(json.dumps({
        "patients": args.patients, "seed": args.seed, "encoding": args.encoding, "seconds": times,
        "total_seconds": timed, "chosen_k": auto.chosen_k, "choices": auto.meta["choices"],
        "crosstab": cross.to_dict(), "os_medians": medians,
        "metrics": dict(zip(pred.metrics["metric"], pred.metrics["value"])),
        "load_average": os.getloadavg()[0]}, indent=2, default=str))


if __name__ == "__main__":
    main()

"""The whole analysis of the default cohort: wall time of every stage and of the report.

Run ``.venv/bin/python benchmarks/pipeline.py [--patients 4308] [--seed 0] [--disease mcrc] [--keep DIR]``.
It simulates the cohort (not timed as part of the analysis), runs :func:`lesionatlas.pipeline.run` into
a fresh run folder, and prints each stage's seconds (from the run's manifest), the report's, the total,
the machine and its load. A second call with ``--rerun`` times a rerun on the same folder (every stage
reused). Results go to ``benchmarks/out/pipeline.json`` (git-ignored).

Goal (issue: one command from data to report): the analysis under 3 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"


def machine() -> dict[str, object]:
    info: dict[str, object] = {"python": platform.python_version(), "cores": os.cpu_count(),
                               "platform": platform.platform()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        info["load_before"] = os.getloadavg()
    except OSError:
        pass
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=None, help="patients (default: the preset's, 4,308 for mcrc)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--disease", default="mcrc", choices=("mcrc", "hnscc"))
    parser.add_argument("--keep", type=Path, default=None, help="keep the run folder here")
    parser.add_argument("--rerun", action="store_true", help="also time a rerun (every stage reused)")
    args = parser.parse_args(argv)

    from lesionatlas import pipeline
    from lesionatlas.config import load_config
    from lesionatlas.data.simulate import simulate_cohort

    work = Path(tempfile.mkdtemp(prefix="lesionatlas-bench-"))
    out = args.keep or work / "run"
    if out.exists():
        shutil.rmtree(out)
    info = machine()
    t0 = time.perf_counter()
    sim = simulate_cohort(args.disease, seed=args.seed, n_patients=args.patients)
    data = work / "input"
    sim.to_dir(data)
    simulate_s = time.perf_counter() - t0
    counts = sim.cohort.counts()
    config = load_config(None, {"run": {"seed": args.seed, "disease": args.disease}})

    t0 = time.perf_counter()
    result = pipeline.run(data, out, config, quiet=True)
    total = time.perf_counter() - t0
    manifest = json.loads((out / "manifest.json").read_text())
    rows = [(s["stage"], s["status"], s["seconds"]) for s in manifest["stages"]]
    report = manifest.get("report") or {}
    rows.append(("report", "done" if report else "off", report.get("seconds")))
    rerun = None
    if args.rerun:
        t0 = time.perf_counter()
        pipeline.run(data, out, config, quiet=True)
        rerun = time.perf_counter() - t0

    print(f"cohort: {counts['patients']:,} patients, {counts['lesions']:,} lesions, "
          f"{counts['measurements']:,} measurements (simulated and written in {simulate_s:.1f} s, not counted)")
    print(f"{'stage':<12}{'status':<10}{'seconds':>10}")
    for name, status, sec in rows:
        print(f"{name:<12}{status:<10}{'' if sec is None else f'{sec:10.1f}'}")
    print(f"{'total':<22}{total:10.1f}   (goal: under 180 s on 2 cores)")
    if rerun is not None:
        print(f"{'rerun':<22}{rerun:10.1f}   (every stage reused)")
    try:
        info["load_after"] = os.getloadavg()
    except OSError:
        pass
    print(f"machine: {info}")
    OUT.mkdir(exist_ok=True)
    (OUT / "pipeline.json").write_text(json.dumps({
        "cohort": counts, "stages": [{"stage": n, "status": s, "seconds": sec} for n, s, sec in rows],
        "total_seconds": total, "rerun_seconds": rerun, "machine": info, "ok": result.ok,
        "argv": sys.argv[1:]}, indent=2, default=str))
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

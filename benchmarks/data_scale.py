"""The data layer at paper scale: wall time and peak memory of each step, printed as a table.

Run ``python benchmarks/data_scale.py`` (options: ``--preset``, ``--patients``, ``--repeat``,
``--no-memory``). Results also go to ``benchmarks/out/data_scale.csv`` and ``.json`` (git-ignored).

Each measurement is a function ``step(context) -> None`` registered with :func:`measurement`; it reads
what earlier steps left in ``context`` (a dict: ``preset``, ``patients``, ``seed``, ``workdir``, ``sim``,
...) and may add to it. Steps run in registration order. Time is the best of ``--repeat`` runs
(``time.perf_counter``) without memory tracing; peak memory is measured in one more run under
:mod:`tracemalloc` (Python and numpy allocations; pyarrow's own C++ buffers are not seen by it) and
the process's peak resident set size (``resource.getrusage``) is reported at the end.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "out"

Step = Callable[[dict[str, Any]], None]
MEASUREMENTS: list[tuple[str, str, Step]] = []


def measurement(name: str, what: str) -> Callable[[Step], Step]:
    """Register ``step`` as a measurement called ``name`` (``what`` says what it does)."""

    def register(step: Step) -> Step:
        MEASUREMENTS.append((name, what, step))
        return step

    return register


@dataclass
class Result:
    step: str
    what: str
    seconds: float
    peak_mib: float | None
    rows: str


# ------------------------------------------------------------------------------------------ steps
@measurement("simulate", "simulate_cohort(preset, seed, n_patients): cohort + truth in memory")
def bench_simulate(ctx: dict[str, Any]) -> None:
    from lesionatlas.data.simulate import simulate_cohort

    ctx["sim"] = simulate_cohort(ctx["preset"], seed=ctx["seed"], n_patients=ctx["patients"])
    c = ctx["sim"].cohort.counts()
    ctx["rows"] = f"{c['lesions']:,} lesions, {c['measurements']:,} measurements, {c['assessments']:,} assessments"


@measurement("write", "SimulatedCohort.to_dir: Parquet + CSV of the cohort and truth/, atomically")
def bench_write(ctx: dict[str, Any]) -> None:
    out = Path(ctx["workdir"]) / "cohort"
    ctx["sim"].to_dir(out)
    ctx["cohort_dir"] = out
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    ctx["rows"] = f"{size / 2**20:.1f} MiB on disk"


def _quiet_read(path: Path, **options: Any):
    import warnings

    from lesionatlas.data import read_cohort

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dirty-data warnings are expected on simulated data
        return read_cohort(path, **options)


@measurement("read-parquet", "read_cohort(tidy Parquet folder): read + validate + build the Cohort")
def bench_read_parquet(ctx: dict[str, Any]) -> None:
    c = _quiet_read(ctx["cohort_dir"])
    ctx["rows"] = f"{c.n_lesions:,} lesions"


@measurement("read-csv", "read_cohort(tidy CSV folder): read + validate + build the Cohort")
def bench_read_csv(ctx: dict[str, Any]) -> None:
    folder = Path(ctx["workdir"]) / "csv"
    if not folder.exists():
        folder.mkdir()
        for name in ("patients", "lesions", "measurements", "assessments"):
            (folder / f"{name}.csv").write_bytes((Path(ctx["cohort_dir"]) / f"{name}.csv").read_bytes())
    c = _quiet_read(folder)
    ctx["rows"] = f"{c.n_lesions:,} lesions"


@measurement("read-monolix", "read_cohort(Monolix CSV of the target lesions, authors' layout)")
def bench_read_monolix(ctx: dict[str, Any]) -> None:
    from lesionatlas.data.writers import write_monolix

    path = Path(ctx["workdir"]) / "monolix.csv"
    if not path.exists():
        write_monolix(ctx["sim"].cohort, path)
    c = _quiet_read(path)
    ctx["rows"] = f"{c.n_lesions:,} target lesions, {len(c.measurements):,} rows"


def _write_sdtm(cohort: Any, folder: Path) -> None:
    """The cohort as minimal SDTM domains (DM, TU, TR as CSV) with study days (--DY, no day 0)."""
    import pandas as pd

    folder.mkdir()
    les = cohort.lesions
    kind = les["kind"].map({"target": "TARGET", "nontarget": "NON-TARGET", "new": "NEW"})
    pd.DataFrame({"STUDYID": "SIM", "USUBJID": cohort.patients["patient_id"], "RFSTDTC": "2020-01-01",
                  "AGE": cohort.patients["age"], "SEX": cohort.patients["sex"]}).to_csv(folder / "dm.csv", index=False)
    pd.DataFrame({"STUDYID": "SIM", "USUBJID": les["patient_id"], "TULNKID": les["lesion_id"],
                  "TUTESTCD": "TUMIDENT", "TUSTRESC": kind, "TULOC": les["site"],
                  "TUEVAL": "INVESTIGATOR"}).to_csv(folder / "tu.csv", index=False)
    pid = les.set_index("lesion_id")["patient_id"]
    grp = kind.set_axis(les["lesion_id"])
    m, a = cohort.measurements, cohort.assessments
    study_day = lambda d: d.where(d < 0, d + 1)  # noqa: E731  SDTM has no day 0
    tr_m = pd.DataFrame({"USUBJID": pid.loc[m["lesion_id"]].to_numpy(), "TRLNKID": m["lesion_id"],
                         "TRGRPID": grp.loc[m["lesion_id"]].to_numpy(), "TRTESTCD": "LDIAM",
                         "TRSTRESN": m["diameter_mm"], "TRDY": study_day(m["day"]), "TREVAL": "INVESTIGATOR"})
    status = a["status"].map({"present": "PRESENT", "absent": "ABSENT", "PD": "UNEQUIVOCAL", "new": "UNEQUIVOCAL",
                              "CR": "ABSENT", "PR": "PRESENT", "SD": "PRESENT", "NE": "PRESENT"})
    tr_a = pd.DataFrame({"USUBJID": pid.loc[a["lesion_id"]].to_numpy(), "TRLNKID": a["lesion_id"],
                         "TRGRPID": grp.loc[a["lesion_id"]].to_numpy(), "TRTESTCD": "TUMSTATE",
                         "TRSTRESC": status, "TRDY": study_day(a["day"]), "TREVAL": "INVESTIGATOR"})
    pd.concat([tr_m, tr_a], ignore_index=True).to_csv(folder / "tr.csv", index=False)


@measurement("read-sdtm", "read_cohort(SDTM DM/TU/TR CSV domains made from the cohort)")
def bench_read_sdtm(ctx: dict[str, Any]) -> None:
    folder = Path(ctx["workdir"]) / "sdtm"
    if not folder.exists():
        _write_sdtm(ctx["sim"].cohort, folder)
    c = _quiet_read(folder)
    ctx["rows"] = f"{c.n_lesions:,} lesions, {len(c.measurements):,} measurements"


@measurement("select", "select_patients(cohort): the paper's two exclusion criteria + CONSORT")
def bench_select(ctx: dict[str, Any]) -> None:
    from lesionatlas.data import select_patients

    sel = select_patients(ctx["sim"].cohort)
    ctx["rows"] = f"{sel.n_selected:,} of {ctx['sim'].cohort.n_patients:,} patients analysed"


# ------------------------------------------------------------------------------------------ runner
def _run(step: Step, ctx: dict[str, Any], *, trace: bool) -> tuple[float, float | None]:
    if trace:
        tracemalloc.start()
    t0 = time.perf_counter()
    step(ctx)
    seconds = time.perf_counter() - t0
    peak = None
    if trace:
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return seconds, peak


def run(preset: str = "mcrc", patients: int | None = None, seed: int = 0, repeat: int = 3,
        memory: bool = True) -> list[Result]:
    """Run every registered measurement and return one :class:`Result` per step."""
    results = []
    with tempfile.TemporaryDirectory(prefix="lesionatlas-bench-") as workdir:
        ctx: dict[str, Any] = {"preset": preset, "patients": patients, "seed": seed, "workdir": workdir}
        for name, what, step in MEASUREMENTS:
            best = float("inf")
            for _ in range(max(1, repeat)):
                seconds, _peak = _run(step, ctx, trace=False)
                best = min(best, seconds)
            peak = _run(step, ctx, trace=True)[1] if memory else None
            results.append(Result(name, what, best, peak, str(ctx.pop("rows", ""))))
    return results


def table(results: list[Result]) -> str:
    """The results as a fixed-width text table."""
    lines = [f"{'step':<12} {'seconds':>9} {'peak MiB':>9}  rows / notes", "-" * 78]
    for r in results:
        peak = f"{r.peak_mib:9.0f}" if r.peak_mib is not None else f"{'-':>9}"
        lines.append(f"{r.step:<12} {r.seconds:9.2f} {peak}  {r.rows}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mcrc", choices=["mcrc", "hnscc"])
    parser.add_argument("--patients", type=int, default=None, help="default: the preset's (4,308 for mcrc)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per step (best is reported)")
    parser.add_argument("--no-memory", action="store_true", help="skip the tracemalloc run")
    args = parser.parse_args(argv)
    results = run(args.preset, args.patients, args.seed, args.repeat, memory=not args.no_memory)
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(f"lesionatlas data layer, preset {args.preset}, patients {args.patients or 'default'}, seed {args.seed}")
    print(table(results))
    print(f"process peak resident memory: {rss_mib:.0f} MiB")
    OUT.mkdir(parents=True, exist_ok=True)
    import pandas as pd

    frame = pd.DataFrame([asdict(r) for r in results])
    frame.to_csv(OUT / "data_scale.csv", index=False)
    info = {
        "preset": args.preset, "patients": args.patients, "seed": args.seed, "repeat": args.repeat,
        "python": sys.version.split()[0], "machine": platform.machine(), "processor": platform.processor(),
        "peak_rss_mib": rss_mib, "results": [asdict(r) for r in results],
    }
    (OUT / "data_scale.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"written to {OUT / 'data_scale.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

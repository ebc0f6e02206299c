"""The ``lesionatlas`` command line: thin wrappers that parse, call the library, print, return a code.

Exit codes: 0 ok, 2 unusable data or bad usage, 1 unexpected failure (a bug: please report it).
Heavy libraries (jax, matplotlib) are imported inside commands so that ``--help`` is instant.
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer

from .errors import LesionAtlasError

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_USAGE = 2

app = typer.Typer(
    name="lesionatlas",
    help="Lesion-level response and progression dynamics, organ by organ, for metastatic cancer cohorts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Lesion-level response and progression dynamics, organ by organ, for metastatic cancer cohorts."""


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True, markup=False)


def _show_warnings(caught: list[warnings.WarningMessage]) -> None:
    err = _console(stderr=True)
    seen = set()
    for w in caught:
        text = str(w.message)
        if text not in seen:
            seen.add(text)
            err.print(f"warning: {text}")


FormatOpt = Annotated[Optional[str], typer.Option("--format", help="Input format: tidy, monolix or sdtm (default: detected).")]
OrganMapOpt = Annotated[Optional[Path], typer.Option("--organ-map", help="CSV of extra site,organ[,match] rows.")]
IdOpt = Annotated[Optional[str], typer.Option("--id", help="Monolix: the lesion id column.")]
TimeOpt = Annotated[Optional[str], typer.Option("--time", help="Monolix: the time column (days from treatment start).")]
DvOpt = Annotated[Optional[str], typer.Option("--dv", help="Monolix: the volume column (mm3).")]
CensOpt = Annotated[Optional[str], typer.Option("--cens", help="Monolix: the censoring flag column.")]
LimitOpt = Annotated[Optional[str], typer.Option("--limit", help="Monolix: the censoring interval's lower-bound column.")]
EvaluatorOpt = Annotated[Optional[str], typer.Option("--evaluator", help="SDTM: INVESTIGATOR (default), ACCEPTED (--ACPTFL = Y) or a reader id such as 'RADIOLOGIST 1'.")]
SuffixOpt = Annotated[Optional[str], typer.Option("--sdtm-suffix", help="SDTM: pick the domain files named <domain>_<suffix> when a folder holds several sets.")]


def _reader_options(id=None, time=None, dv=None, cens=None, limit=None, evaluator=None, suffix=None) -> dict:
    return {"id": id, "time": time, "dv": dv, "cens": cens, "limit": limit, "evaluator": evaluator,
            "suffix": suffix}


@app.command()
def validate(
    data: Annotated[Path, typer.Argument(help="A tidy folder, a Monolix-style CSV or an SDTM folder.")],
    format: FormatOpt = None,
    organ_map: OrganMapOpt = None,
    id: IdOpt = None,
    time: TimeOpt = None,
    dv: DvOpt = None,
    cens: CensOpt = None,
    limit: LimitOpt = None,
    evaluator: EvaluatorOpt = None,
    sdtm_suffix: SuffixOpt = None,
) -> None:
    """Check a dataset: exit 0 when usable (warnings listed), exit 2 listing every problem when not."""
    from .data.organs import load_organ_map
    from .data.validate import validate_cohort

    out = _console()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = validate_cohort(
            data, format, organ_map=load_organ_map(organ_map),
            **_reader_options(id, time, dv, cens, limit, evaluator, sdtm_suffix),
        )
    _show_warnings(caught)
    for message in report.warning_messages():
        out.print(f"warning: {message}")
    if not report.ok:
        err = _console(stderr=True)
        for _, row in report.errors.iterrows():
            err.print(f"error [{row['code']}]: {row['message']}")
        raise typer.Exit(EXIT_USAGE)
    n_warn = len(report.warnings)
    out.print(f"ok: {data} is usable ({n_warn} warning{'s' if n_warn != 1 else ''})")


def _print_table(frame, title: str) -> None:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in frame.columns:
        table.add_column(str(col), justify="right" if frame[col].dtype.kind in "if" else "left")
    for row in frame.itertuples(index=False):
        table.add_row(*(f"{v:,.1f}" if isinstance(v, float) and not float(v).is_integer()
                        else f"{int(v):,}" if isinstance(v, (int, float)) else str(v) for v in row))
    _console().print(table)


PresetOpt = Annotated[str, typer.Option("--preset", help="Cohort preset: mcrc (the paper's cohort) or hnscc.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed; same seed, same numbers.")]
PatientsOpt = Annotated[Optional[int], typer.Option("--patients", min=1, help="Number of patients (default: the preset's).")]


@app.command()
def simulate(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the cohort and its truth/ into.")],
    preset: PresetOpt = "mcrc",
    seed: SeedOpt = 0,
    patients: PatientsOpt = None,
) -> None:
    """Simulate a synthetic cohort (tidy tables) and the truth it planted (truth/)."""
    from .data.simulate import simulate_cohort

    with _console(stderr=True).status(f"simulating the {preset} cohort (seed {seed})"):
        sim = simulate_cohort(preset, seed=seed, n_patients=patients)
        sim.to_dir(out)
    _console().print(repr(sim.cohort))
    _console().print(f"written to {out} (truth in {out / 'truth'})")


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Run folder.")] = Path("demo_run"),
    seed: SeedOpt = 0,
    patients: PatientsOpt = None,
    small: Annotated[bool, typer.Option("--small", help="A 300-patient cohort, for a quick look.")] = False,
) -> None:
    """Simulate the default mCRC cohort and run the analysis on it (so far: validate and select)."""
    import time

    from .data import read_cohort
    from .data.select import select_patients
    from .data.simulate import simulate_cohort

    n = 300 if small and patients is None else patients
    err = _console(stderr=True)
    timings = []
    t0 = time.perf_counter()
    with err.status("simulating the mCRC cohort"):
        sim = simulate_cohort("mcrc", seed=seed, n_patients=n)
        sim.to_dir(out / "cohort")
    timings.append(("simulate", time.perf_counter() - t0))
    t0 = time.perf_counter()
    with err.status("reading and validating the cohort"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cohort = read_cohort(out / "cohort")
    _show_warnings(caught)
    timings.append(("read + validate", time.perf_counter() - t0))
    t0 = time.perf_counter()
    selection = select_patients(cohort)
    selection.to_dir(out / "selection")
    timings.append(("select", time.perf_counter() - t0))

    _print_table(cohort.summary(), "Cohort")
    _print_table(selection.consort[["step", "patients", "lesions", "target_lesions", "excluded_patients"]],
                 "Selection (CONSORT)")
    for step, secs in timings:
        err.print(f"{step}: {secs:.1f} s")
    _console().print(f"cohort: {out / 'cohort'}  truth: {out / 'cohort' / 'truth'}  selection: {out / 'selection'}")


@app.command("fit-tgi")
def fit_tgi_command(
    data: Annotated[Path, typer.Argument(help="A tidy folder, a Monolix-style CSV or an SDTM folder.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for population.csv, individual.csv, diagnostics/ and fit/.")],
    format: FormatOpt = None,
    seed: SeedOpt = 0,
    id: IdOpt = None,
    time: TimeOpt = None,
    dv: DvOpt = None,
    cens: CensOpt = None,
    limit: LimitOpt = None,
    evaluator: EvaluatorOpt = None,
    sdtm_suffix: SuffixOpt = None,
    iterations: Annotated[Optional[str], typer.Option("--iterations", help="SAEM iterations K1,K2: exploratory and smoothing phases (default 300,200).")] = None,
) -> None:
    """Fit the tumor growth model (SAEM) to the target lesions; write estimates and diagnostic plots."""
    import dataclasses

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .data import read_cohort
    from .errors import ConfigError
    from .tgi import TGIModel

    spec = TGIModel()
    if iterations is not None:
        try:
            n_explore, n_smooth = (int(part) for part in iterations.split(","))
        except ValueError:
            raise ConfigError(
                f"--iterations must be two integers K1,K2 (exploratory, smoothing), e.g. 300,200; got {iterations!r}",
                code="bad-option",
            ) from None
        spec = dataclasses.replace(spec, n_explore=n_explore, n_smooth=n_smooth)
    err = _console(stderr=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with err.status(f"reading {data}"):
            cohort = read_cohort(data, format, **_reader_options(id, time, dv, cens, limit, evaluator, sdtm_suffix))
        columns = (TextColumn("SAEM"), BarColumn(), MofNCompleteColumn(), TextColumn("iterations"), TimeElapsedColumn())
        with Progress(*columns, console=err) as bar:
            task = bar.add_task("saem", total=spec.n_burn_in + spec.n_explore + spec.n_smooth)
            fit = spec.fit(cohort, seed=seed, progress=lambda done, total, _: bar.update(task, completed=done, total=total))
        with err.status("writing tables and diagnostic plots"):
            out.mkdir(parents=True, exist_ok=True)
            fit.population.to_csv(out / "population.csv", index=False)
            fit.individual.to_csv(out / "individual.csv", index=False)
            fit.write_diagnostics(out / "diagnostics")
            fit.to_dir(out / "fit")
    _show_warnings(caught)
    summary = fit.summary()
    shown = summary.assign(**{c: summary[c].map(lambda v: "" if v != v else f"{v:.4g}") for c in summary.columns[1:]})
    _print_table(shown, f"Tumor growth model: {fit.n_lesions:,} lesions, {fit.n_obs:,} observations (seed {seed})")
    _console().print(f"written to {out} (population.csv, individual.csv, diagnostics/, fit/)")


@app.command("predict")
def predict_command(
    model: Annotated[Path, typer.Argument(help="A saved group predictor (GroupPredictor.save).")],
    data: Annotated[Path, typer.Argument(help="Baseline features as CSV (one row per patient, a patient_id "
                                              "column), or a cohort (tidy folder, SDTM folder) to build them from.")],
    out: Annotated[Optional[Path], typer.Option("--out", help="CSV to write the predictions to.")] = None,
    format: FormatOpt = None,
    evaluator: EvaluatorOpt = None,
    sdtm_suffix: SuffixOpt = None,
) -> None:
    """Predict each patient's progression-pattern group from baseline data with a saved model."""
    import pandas as pd

    from .errors import DataError
    from .io import atomic_write_text
    from .patterns.predict import GroupPredictor, baseline_features

    if not model.is_file():
        raise DataError(f"{model}: no such model file", code="not-found")
    predictor = GroupPredictor.load(model)
    if data.is_file() and data.suffix.lower() == ".csv" and format is None:
        features = pd.read_csv(data, float_precision="round_trip")  # exact floats: trees split on them
        if "patient_id" not in features.columns:
            raise DataError(f"{data}: a features table needs a patient_id column (as written by baseline_features)",
                            code="missing-column")
        features = features.assign(patient_id=features["patient_id"].astype(str)).set_index("patient_id")
    else:
        from .data import read_cohort

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cohort = read_cohort(data, format, **_reader_options(evaluator=evaluator, suffix=sdtm_suffix))
        _show_warnings(caught)
        organs = tuple(c[len("has_"):] for c in predictor.feature_columns if c.startswith("has_"))
        features = baseline_features(cohort, organs=organs or None)
    proba = predictor.predict_proba(features)
    result = pd.concat([predictor.predict(features), proba.add_prefix("probability_")], axis=1)
    result = result.reset_index().rename(columns={"index": "patient_id"})
    if out is not None:
        atomic_write_text(out, result.to_csv(index=False, lineterminator="\n", float_format="%.10g"))
    counts = result["predicted_group"].value_counts().rename_axis("group").reset_index(name="patients")
    _print_table(counts, f"Predicted groups ({len(result)} patients)")
    if out is not None:
        _console().print(f"predictions written to {out}")


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code instead of raising."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        code = app(args=args, prog_name="lesionatlas", standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except LesionAtlasError as exc:
        _console(stderr=True).print(f"error [{exc.code}]: {exc.message}", markup=False)
        return EXIT_USAGE
    except (typer.Abort, KeyboardInterrupt):
        _console(stderr=True).print("aborted", markup=False)
        return 130
    except Exception as exc:
        # usage errors of the (vendored) click parser: they print themselves and carry their exit code
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            return int(exc.exit_code or EXIT_USAGE)
        import traceback

        traceback.print_exc()
        _console(stderr=True).print(
            f"error [unexpected]: {type(exc).__name__}: {exc} (this is a bug in lesionatlas; please report it)",
            markup=False,
        )
        return EXIT_UNEXPECTED
    return int(code) if isinstance(code, int) else EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

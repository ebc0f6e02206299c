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

from .errors import ConfigError, LesionAtlasError

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


ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="A TOML file of settings (see `lesionatlas config --show`).")]
FromOpt = Annotated[Optional[str], typer.Option("--from", help="Redo this stage and every later one: read, validate, select, tgi, events, hazards, phenotypes, patterns, survival, predictor.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="No progress display and no summary.")]
DiseaseOpt = Annotated[Optional[str], typer.Option("--disease", help="Disease preset: mcrc, hnscc or custom (reference organ, candidate covariates, group naming; default: the config's run.disease).")]


def _disease_override(disease: Optional[str]) -> dict:
    if disease is None:
        return {}
    from .config import DISEASES

    if disease not in DISEASES:
        raise ConfigError(f"--disease {disease!r}: give one of {', '.join(DISEASES)}", code="bad-option")
    return {"disease": disease}


def _run_progress(err):
    """A progress callback for pipeline.run: a rich display on a terminal, plain lines otherwise."""
    import contextlib

    if not err.is_terminal:
        def plain(stage: str, status: str, done, total) -> None:
            if status == "update":
                return
            err.print(f"{stage}: {status}")
        return plain, contextlib.nullcontext()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[state]}"), TimeElapsedColumn(), console=err, transient=False)
    tasks: dict[str, int] = {}

    def rich(stage: str, status: str, done, total) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=None, state="")
        task = tasks[stage]
        if status == "update":
            bar.update(task, completed=done, total=total,
                       state={"tgi": "SAEM iterations", "hazards": "mixed Cox fits"}.get(stage, ""))
        elif status == "start":
            bar.update(task, state="running")
        else:
            bar.update(task, total=1 if bar.tasks[task].total is None else bar.tasks[task].total,
                       completed=bar.tasks[task].total or 1, state=status)
    return rich, bar


def _load_config(config: Optional[Path], overrides: dict | None = None):
    from .config import load_config

    return load_config(config, overrides)


def _cohort_overrides(format=None, organ_map=None, id=None, time=None, dv=None, cens=None, limit=None,
                      evaluator=None, suffix=None) -> dict:
    values = {"format": format, "organ_map": None if organ_map is None else str(organ_map), "monolix_id": id,
              "monolix_time": time, "monolix_dv": dv, "monolix_cens": cens, "monolix_limit": limit,
              "evaluator": evaluator, "sdtm_suffix": suffix}
    values = {k: v for k, v in values.items() if v is not None}
    return {"cohort": values} if values else {}


def _compilation_cache() -> None:
    """Keep compiled JAX programs between runs (:mod:`lesionatlas.cache`; LESIONATLAS_CACHE_DIR=off: no)."""
    from .cache import enable_compilation_cache

    enable_compilation_cache()


def _run_pipeline(data: Path, out: Path, cfg, from_stage: Optional[str], quiet: bool):
    from . import pipeline

    _compilation_cache()
    err = _console(stderr=True)
    if quiet:
        return pipeline.run(data, out, cfg, from_stage=from_stage, quiet=True)
    callback, display = _run_progress(err)
    with display:
        return pipeline.run(data, out, cfg, from_stage=from_stage, progress=callback)


def _fmt(value) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if v != v:
        return ""
    if v in (float("inf"), float("-inf")):
        return "not reached" if v > 0 else "-inf"
    return f"{v:,.0f}" if v.is_integer() and abs(v) >= 1 else f"{v:.4g}"


def _print_run_summary(result) -> None:
    """Counts per stage and the key numbers, read from the run folder."""
    import pandas as pd

    out = _console()
    rows = [{"stage": r.name, "status": r.status + (" (reused)" if r.reused else ""),
             "seconds": "" if r.seconds is None else f"{r.seconds:.1f}", "note": r.reason[:90]} for r in result.stages]
    _print_table(pd.DataFrame(rows), "Stages")
    folder = result.out
    select = result.load("select")
    if select is not None:
        c = select.cohort.counts()
        out.print(f"cohort: {c['patients']:,} patients selected ({select.n_excluded:,} excluded), "
                  f"{c['lesions']:,} lesions ({c['target_lesions']:,} target), {c['measurements']:,} measurements")
    if result["tgi"].status == "done":
        pop = pd.read_csv(folder / "tgi" / "population.csv")
        shown = pop[["parameter", "estimate", "se", "rse_percent"]]
        _print_table(shown.assign(**{c: shown[c].map(_fmt) for c in ("estimate", "se", "rse_percent")}),
                     "Tumor growth model (population)")
    if result["events"].status == "done":
        ev = pd.read_csv(folder / "events" / "table.csv", usecols=["kind", "response_event", "progression_event"])
        out.print(f"events: {len(ev):,} lesions, {int(ev['response_event'].eq(True).sum()):,} "
                  f"responses, {int(ev['progression_event'].eq(True).sum()):,} progressions")
    if result["hazards"].status == "done":
        hr = pd.read_csv(folder / "hazards" / "hazard_ratios.csv")
        for model in ("response", "progression"):
            top = hr[(hr["model"] == model) & ~hr["reference"].astype(bool)].sort_values("hazard_ratio", ascending=False)
            top = top.head(5)[["organ", "hazard_ratio", "ci_lower", "ci_upper", "p_value", "n_lesions"]]
            _print_table(top.assign(**{c: top[c].map(_fmt) for c in ("hazard_ratio", "ci_lower", "ci_upper",
                                                                       "p_value")}),
                         f"Top organ hazard ratios, {model} (vs the reference organ)")
    if result["patterns"].status == "done":
        groups = pd.read_csv(folder / "patterns" / "assignments.csv")["group"].value_counts()
        table = groups.rename_axis("group").reset_index(name="patients")
        if result["survival"].status == "done":
            med = pd.read_csv(folder / "survival" / "medians.csv")
            med = med[(med["outcome"] == "os") & (med["comparison"] == "pattern_group")]
            table = table.merge(med[["group", "median", "ci_lower", "ci_upper"]].rename(
                columns={"median": "os_median_days"}), on="group", how="left")
            for col in ("os_median_days", "ci_lower", "ci_upper"):
                table[col] = table[col].map(_fmt)
        _print_table(table, "Progression-pattern groups (OS medians in days)")
    if result["predictor"].status == "done":
        m = pd.read_csv(folder / "predictor" / "metrics.csv").set_index("metric")["value"]
        out.print(f"predictor: test accuracy {m.get('accuracy', float('nan')):.3f}, macro F1 "
                  f"{m.get('f1_macro', float('nan')):.3f} (majority class {m.get('majority_accuracy', float('nan')):.3f})")
    skipped = [r for r in result.stages if r.status == "skipped"]
    for r in skipped:
        out.print(f"skipped {r.name}: {r.reason}")
    n_warn = sum(len(r.warnings) for r in result.stages)
    if n_warn:
        out.print(f"{n_warn} warning(s) recorded in the stages' stage.json")
    out.print(f"run folder: {folder} (README.txt says what each file is; manifest.json what ran)")
    if (folder / "report.html").is_file():
        out.print(f"report: {(folder / 'report.html').resolve()}")


@app.command("run")
def run_command(
    data: Annotated[Path, typer.Argument(help="A tidy folder, a Monolix-style CSV or an SDTM folder.")],
    out: Annotated[Path, typer.Option("--out", help="Run folder (an earlier run there is resumed).")],
    config: ConfigOpt = None,
    from_stage: FromOpt = None,
    quiet: QuietOpt = False,
    format: FormatOpt = None,
    organ_map: OrganMapOpt = None,
    id: IdOpt = None,
    time: TimeOpt = None,
    dv: DvOpt = None,
    cens: CensOpt = None,
    limit: LimitOpt = None,
    evaluator: EvaluatorOpt = None,
    sdtm_suffix: SuffixOpt = None,
    disease: DiseaseOpt = None,
) -> None:
    """Run the whole analysis on DATA into a run folder; stages whose inputs are unchanged are reused."""
    overrides = _cohort_overrides(format, organ_map, id, time, dv, cens, limit, evaluator, sdtm_suffix)
    if disease is not None:
        overrides["run"] = _disease_override(disease)
    cfg = _load_config(config, overrides)
    result = _run_pipeline(data, out, cfg, from_stage, quiet)
    if not quiet:
        _print_run_summary(result)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Run folder (the simulated cohort goes to DIR/input/).")] = Path("demo_run"),
    seed: Annotated[Optional[int], typer.Option("--seed", help="Run and simulation seed (default: the config's run.seed, 0).")] = None,
    patients: PatientsOpt = None,
    small: Annotated[bool, typer.Option("--small", help="A 300-patient cohort, for a quick look.")] = False,
    config: ConfigOpt = None,
    from_stage: FromOpt = None,
    quiet: QuietOpt = False,
    disease: Annotated[Optional[str], typer.Option("--disease", help="mcrc (the paper's cohort, default) or hnscc (its head-and-neck validation cohort): the cohort simulated and the preset of the analysis.")] = None,
) -> None:
    """Simulate the default mCRC cohort (or the head-and-neck one) into DIR/input/ and run the whole analysis on it."""
    from .data.simulate import simulate_cohort

    run_overrides: dict = {"seed": seed} if seed is not None else {}
    if disease is not None:
        if disease not in ("mcrc", "hnscc"):
            raise ConfigError(f"--disease {disease!r}: the demo simulates mcrc or hnscc", code="bad-option")
        run_overrides["disease"] = disease
    cfg = _load_config(config, {"run": run_overrides} if run_overrides else None)
    preset = cfg.run.disease if cfg.run.disease in ("mcrc", "hnscc") else "mcrc"
    n = 300 if small and patients is None else patients
    sim_seed = int(cfg.run.seed)
    err = _console(stderr=True)
    data = out / "input"
    marker = {"preset": preset, "seed": sim_seed, "n_patients": n}
    marker_file = out / "input.json"
    import json

    current = json.loads(marker_file.read_text()) if marker_file.is_file() else None
    if current != marker or not data.is_dir():
        if quiet:
            simulate_cohort(preset, seed=sim_seed, n_patients=n).to_dir(data)
        else:
            with err.status(f"simulating the {preset} cohort (seed {sim_seed})"):
                simulate_cohort(preset, seed=sim_seed, n_patients=n).to_dir(data)
        from .io import write_json

        write_json(marker_file, marker)
    result = _run_pipeline(data, out, cfg, from_stage, quiet)
    if not quiet:
        _print_run_summary(result)
        _console().print(f"simulated cohort: {data} (the planted truth: {data / 'truth'})")


@app.command("report")
def report_command(
    run_dir: Annotated[Path, typer.Argument(help="A run folder made by `lesionatlas run` or `demo`.")],
    out: Annotated[Optional[Path], typer.Option("--out", help="Where report.html and figures/ go (default: the run folder).")] = None,
    dpi: Annotated[Optional[int], typer.Option("--dpi", help="Resolution of the PNG figures (default: the run's report.dpi).")] = None,
) -> None:
    """Draw report.html and figures/ again from a finished run folder (no stage is rerun)."""
    from . import pipeline
    from .report import build_report

    run = pipeline.open_run(run_dir)
    if dpi is not None and not 30 <= dpi <= 600:
        raise ConfigError(f"--dpi {dpi}: give an integer from 30 to 600", code="bad-option")
    err = _console(stderr=True)
    with err.status("drawing the report"):
        built = build_report(run, out, dpi=dpi if dpi is not None else int(run.config.report.dpi))
    for failure in built.failures:
        err.print(f"warning: part of the report could not be drawn: {failure}")
    _console().print(f"report: {built.path.resolve()} ({built.n_figures} figures, {built.seconds:.1f} s; "
                     f"PNG and SVG in {built.figures})")


@app.command("config")
def config_command(
    show: Annotated[bool, typer.Option("--show", help="Print the effective configuration as TOML.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Check a configuration file; with --show print the effective settings (defaults + FILE) as TOML."""
    from .config import defaults_path

    cfg = _load_config(config)
    if show:
        sys.stdout.write(cfg.to_toml())
    else:
        _console().print(f"ok: {config or defaults_path()} is a valid configuration (--show prints it)")


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
    covariate: Annotated[Optional[list[str]], typer.Option("--covariate", help="A covariate of an individual parameter, PARAM=NAME[,NAME...] (PARAM kg, kd or f; NAME a column of the lesions or patients table, or log_v0); repeatable, e.g. --covariate kg=organ,log_v0.")] = None,
    covariance: Annotated[Optional[str], typer.Option("--covariance", help="Covariance of the random effects: diagonal (default, the authors' model) or full (correlations of Kg, Kd, F estimated too).")] = None,
    is_draws: Annotated[Optional[int], typer.Option("--is-draws", help="Importance-sampling draws per lesion for the -2LL, AIC and BIC (default 1000; 0 skips them). Its Monte-Carlo SD at paper scale is about 21 at 1000 draws and 9 at 4000: use 4000 or more for a final value or one to set beside Monolix's.")] = None,
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
    if covariate:
        pairs = []
        for item in covariate:
            param, sep, names = item.partition("=")
            if not sep or not param.strip() or not names.strip():
                raise ConfigError(f"--covariate must be PARAM=NAME[,NAME...], e.g. kg=organ; got {item!r}",
                                  code="bad-option")
            pairs += [f"{param.strip()}:{name.strip()}" for name in names.split(",") if name.strip()]
        spec = dataclasses.replace(spec, covariates=tuple(pairs))
    if covariance is not None:
        if covariance not in ("diagonal", "full"):
            raise ConfigError(f"--covariance must be diagonal or full; got {covariance!r}", code="bad-option")
        spec = dataclasses.replace(spec, covariance=covariance)
    if is_draws is not None:
        if is_draws < 0:
            raise ConfigError(f"--is-draws must be 0 (no -2LL) or a positive number of draws; got {is_draws}",
                              code="bad-option")
        spec = dataclasses.replace(spec, n_is_draws=is_draws)
    _compilation_cache()
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

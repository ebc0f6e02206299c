"""The whole analysis, stage by stage, into one run folder that can be resumed.

:func:`run` chains read -> validate -> select -> tgi -> events -> hazards -> phenotypes -> patterns ->
survival -> predictor. Each stage writes its result into ``out/<stage>/`` (the result's own ``to_dir``:
tables as Parquet + CSV and the result's ``meta.json``) plus ``stage.json``, the pipeline's record: the
stage's config section, the hashes of its inputs (the data, the upstream stages' outputs, the config),
its seed, package versions, wall time, the warnings raised and the size and SHA-256 of every file it
wrote. A stage folder is written to a temporary folder and renamed, so it is whole or absent.

On a rerun a stage is reused when its ``stage.json`` is intact, its input key matches and every file it
lists is there with the same hash; otherwise (changed config or input, a deleted or damaged file, an
interrupted run) it is redone, and so is everything downstream whose inputs changed. ``from_stage``
forces a restart at a stage.

A stage that cannot run on the data (too few patients, no events, no survival data, ...) writes
``skipped.json`` with the reason instead of failing; the stages that need it are skipped too, saying so.

Seeds: each stage derives its own seed from (run seed, stage name) (:func:`stage_seed`); the TGI fit
takes the run seed and derives its JAX stream itself (``jax.random.fold_in`` with its stage name).
``lesionatlas.pipeline`` is the only module (with the CLI) that knows the whole flow.
"""
from __future__ import annotations

import hashlib
import json
import platform
import shutil
import sys
import time
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .config import Config, load_config, section_dict
from .errors import ConfigError, ConvergenceError, DataError
from .io import atomic_dir, write_json, write_result_dir
from .survival import SurvivalTables

#: The stages, in order.
STAGES: tuple[str, ...] = (
    "read", "validate", "select", "tgi", "events", "hazards", "phenotypes", "patterns", "survival", "predictor",
)
#: Stages each stage needs (skipped when one of them was skipped).
NEEDS: dict[str, tuple[str, ...]] = {
    "read": (), "validate": ("read",), "select": ("read",), "tgi": ("select",), "events": ("select", "tgi"),
    "hazards": ("events",), "phenotypes": ("hazards",), "patterns": ("events",), "survival": ("events",),
    "predictor": ("select", "patterns"),
}
#: Stages a stage uses when they ran (their comparisons are left out otherwise).
USES: dict[str, tuple[str, ...]] = {"survival": ("patterns", "phenotypes")}
#: The config sections each stage's result depends on.
SECTIONS_OF: dict[str, tuple[str, ...]] = {
    "read": ("cohort",), "validate": ("cohort",), "select": ("selection",), "tgi": ("tgi",), "events": ("events",),
    "hazards": ("hazards", "run"), "phenotypes": ("phenotypes",), "patterns": ("patterns",),
    "survival": ("survival",), "predictor": ("predictor",),
}
#: What each stage folder holds (README.txt of the run folder).
DESCRIPTIONS: dict[str, str] = {
    "read": "the input read into the canonical cohort: patients, lesions, measurements, assessments "
            "(Parquet + CSV) and cohort.json (source, volume formula, limit)",
    "validate": "every data problem found (problems.csv: rule, severity, code, table, column, count, ids, "
                "message) and report.json (counts)",
    "select": "the paper's inclusion criteria: consort.csv (CONSORT steps), excluded.csv (who and why), "
              "cohort/ (the selected cohort)",
    "tgi": "tumor growth model (SAEM): population.csv (parameter, estimate, se, rse_percent, ci), individual.csv "
           "(per lesion), trace.csv (SAEM trajectories), observations.csv, meta.json (spec, -2LL, diagnostics)",
    "events": "lesion response and progression: table.csv (per lesion), sequences.csv (organ progression "
              "sequences), patients.csv, curves.csv",
    "hazards": "mixed Cox organ hazard ratios: hazard_ratios.csv, covariates.csv, selection_steps.csv, "
               "stratified.csv (by treatment group), organ_tests.csv, models.csv, dropped_organs.csv, fits/",
    "phenotypes": "organ phenotypes (high/low response x progression hazard): phenotypes.csv",
    "patterns": "progression-sequence groups (k-means): assignments.csv, selection.csv (criteria by k), "
                "centroids.csv, naming.csv, heatmap.csv, intervals.csv, features.parquet",
    "survival": "Kaplan-Meier and log-rank by pattern group, phenotype group and treatment within group: "
                "medians.csv, logrank.csv, pairwise.csv, curves.csv, at_risk.csv, patients.csv",
    "predictor": "gradient-boosting predictor of the pattern group from baseline data: metrics.csv, "
                 "confusion.csv, roc.csv, importance.csv, cv_results.csv, model.joblib (lesionatlas predict)",
}

#: ``progress(stage, status, done, total)``; status is start, update, done, reused, skipped or failed.
Progress = Callable[[str, str, "int | None", "int | None"], None]

_RECORD = "stage.json"
_SKIPPED = "skipped.json"
_SCHEMA = "lesionatlas.stage/1"


class StageSkipped(Exception):
    """Raised inside a stage that cannot run on these data; the message says why."""


# ============================================================================================ results
@dataclass(frozen=True)
class StageRecord:
    """What happened to one stage in a run.

    ``status``: ``done`` (a result is in ``path``), ``skipped`` (``reason`` says why), ``failed`` or
    ``not run`` (an earlier stage failed); ``reused``: the folder of an earlier run was kept.
    """

    name: str
    status: str
    reused: bool
    seconds: float | None
    path: Path
    reason: str = ""
    key: str = ""
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunResult:
    """The run folder and what each stage did; :meth:`load` reads a stage's result back."""

    out: Path
    config: Config
    stages: tuple[StageRecord, ...]
    seconds: float
    _cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __getitem__(self, name: str) -> StageRecord:
        for record in self.stages:
            if record.name == name:
                return record
        raise KeyError(f"no stage {name!r}; stages are {', '.join(STAGES)}")

    @property
    def ok(self) -> bool:
        """Every stage done or skipped."""
        return all(r.status in ("done", "skipped") for r in self.stages)

    def load(self, name: str) -> Any:
        """The result of stage ``name`` (read from its folder), or None when it was skipped."""
        if self[name].status != "done":
            return None
        if name not in self._cache:
            self._cache[name] = _load(name, self.out / name)
        return self._cache[name]

    def summary(self) -> pd.DataFrame:
        """``stage, status, reused, seconds, reason``."""
        return pd.DataFrame([{"stage": r.name, "status": r.status, "reused": r.reused, "seconds": r.seconds,
                              "reason": r.reason} for r in self.stages])

    def __repr__(self) -> str:
        counts = self.summary()["status"].value_counts().to_dict()
        return f"RunResult({self.out}: " + ", ".join(f"{v} {k}" for k, v in counts.items()) + ")"


# ============================================================================================ helpers
def stage_seed(seed: int, stage: str) -> int:
    """The seed of ``stage``: ``np.random.default_rng([crc32(stage), seed])`` drawn once (STYLE section 6)."""
    rng = np.random.default_rng([zlib.crc32(stage.encode()), int(seed)])
    return int(rng.integers(0, 2**31 - 1))


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def hash_path(path: str | Path) -> str:
    """SHA-256 of a file, or of every file under a folder (relative names and contents, hidden files left out)."""
    path = Path(path)
    if path.is_file():
        return _sha256_file(path)
    h = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = file.relative_to(path)
        if any(part.startswith(".") for part in rel.parts):
            continue
        h.update(rel.as_posix().encode() + b"\0" + _sha256_file(file).encode() + b"\n")
    return h.hexdigest()


def _hash_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _file_list(folder: Path) -> dict[str, dict[str, Any]]:
    return {p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": _sha256_file(p)}
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != _RECORD}


def versions() -> dict[str, str]:
    """Versions of Python and of the packages the analysis runs on."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("lesionatlas", "numpy", "pandas", "scipy", "jax", "scikit-learn", "lifelines", "statsmodels"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:  # pragma: no cover - a source tree without metadata
            out[name] = "unknown"
    return out


def _read_record(folder: Path) -> dict[str, Any] | None:
    """The stage record when the folder is intact (every listed file there with its hash), else None."""
    try:
        record = json.loads((folder / _RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("schema") != _SCHEMA or record.get("status") not in ("done", "skipped"):
        return None
    files = record.get("files")
    if not isinstance(files, dict) or not files:
        return None
    for rel, info in files.items():
        file = folder / rel
        try:
            if not file.is_file() or file.stat().st_size != info["size"] or _sha256_file(file) != info["sha256"]:
                return None
        except (OSError, KeyError, TypeError):
            return None
    return record


def _output_hash(record: dict[str, Any]) -> str:
    return _hash_json({"status": record["status"], "files": {k: v["sha256"] for k, v in record["files"].items()}})


def _plain_progress(stage: str, status: str, done: int | None, total: int | None) -> None:
    if status == "update":
        return
    print(f"{stage}: {status}", file=sys.stderr, flush=True)


# ============================================================================================ loaders
def _load(name: str, path: Path) -> Any:
    if name in ("read",):
        from .data.readers.detect import cohort_from_raw
        from .data.readers.tidy import read_tidy_raw

        return cohort_from_raw(read_tidy_raw(path), validate=False)
    if name == "validate":
        from .data import ValidationReport

        report = json.loads((path / "report.json").read_text(encoding="utf-8"))
        return ValidationReport(problems=pd.read_parquet(path / "problems.parquet"), source=report.get("source", ""),
                                counts=report.get("counts", {}))
    if name == "select":
        from .data import Selection

        return Selection.from_dir(path)
    if name == "tgi":
        from .tgi import TGIFit

        return TGIFit.from_dir(path)
    if name == "events":
        from .events import LesionEvents

        return LesionEvents.from_dir(path)
    if name == "hazards":
        from .hazards import OrganHazards

        return OrganHazards.from_dir(path)
    if name == "phenotypes":
        from .phenotypes import OrganPhenotypes

        return OrganPhenotypes.from_dir(path)
    if name == "patterns":
        from .patterns import ProgressionPatterns

        return ProgressionPatterns.from_dir(path)
    if name == "survival":
        return SurvivalTables.from_dir(path)
    if name == "predictor":
        from .patterns import GroupPredictor

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a version note; the stage record has the versions
            return GroupPredictor.load(path / "model.joblib")
    raise KeyError(name)  # pragma: no cover


# ============================================================================================ stages
@dataclass
class _Context:
    data: Path
    out: Path
    config: Config
    results: dict[str, Any]
    status: dict[str, str]
    progress: Progress | None
    notes: list[str] = field(default_factory=list)

    def get(self, name: str) -> Any:
        if name not in self.results:
            self.results[name] = _load(name, self.out / name)
        return self.results[name]

    def tick(self, stage: str, done: int | None, total: int | None) -> None:
        if self.progress is not None:
            self.progress(stage, "update", done, total)


def _organ_map(config: Config) -> Any:
    return config.cohort.organ_map or None


def _stage_read(ctx: _Context) -> tuple[Any, Callable[[Path], Any]]:
    from .data import read_cohort

    c = ctx.config.cohort
    cohort = read_cohort(ctx.data, c.format or None, organ_map=_organ_map(ctx.config), axis_ratio=c.axis_ratio,
                         limit_mm3=c.limit_mm3, **c.reader_options())
    return cohort, lambda tmp: cohort.to_dir(tmp, csv=True)


def _stage_validate(ctx: _Context) -> tuple[Any, Callable[[Path], Any]]:
    from .data import load_organ_map, validate_cohort

    c = ctx.config.cohort
    report = validate_cohort(ctx.data, c.format or None, organ_map=load_organ_map(_organ_map(ctx.config)),
                             **c.reader_options())

    def write(tmp: Path) -> None:
        write_result_dir(tmp, {"problems": report.problems.astype({col: "string" for col in report.problems.columns
                                                                   if report.problems[col].dtype == object})},
                         {"schema": "lesionatlas.validation/1", "ok": bool(report.ok), "source": report.source,
                          "counts": report.counts, "n_errors": len(report.errors), "n_warnings": len(report.warnings)},
                         meta_name="report.json")
    return report, write


def _stage_select(ctx: _Context) -> tuple[Any, Callable[[Path], Any]]:
    from .data import select_patients

    selection = select_patients(ctx.get("read"), ctx.config.selection)
    if selection.n_selected == 0:
        ctx.notes.append("no patient meets the inclusion criteria")
    return selection, lambda tmp: selection.to_dir(tmp)


def _tgi_spec(config: Config) -> Any:
    from .tgi import TGIModel

    values = section_dict(config.tgi)
    return TGIModel(**values)


def _stage_tgi(ctx: _Context) -> tuple[Any, Callable[[Path], Any]]:
    selection = ctx.get("select")
    if selection.n_selected == 0:
        raise StageSkipped("no patient was selected (see select/consort.csv)")
    spec = _tgi_spec(ctx.config)
    fit = spec.fit(selection.cohort, seed=int(ctx.config.run.seed),
                   progress=lambda done, total, _: ctx.tick("tgi", done, total))
    return fit, lambda tmp: fit.to_dir(tmp)


def _event_rules(config: Config) -> Any:
    from .events import EventRules

    values = section_dict(config.events)
    values.pop("estimate")
    if values["progression_mm3"] is False:
        values["progression_mm3"] = None
    return EventRules.from_dict(values)


def _stage_events(ctx: _Context) -> tuple[Any, Callable[[Path], Any]]:
    from .events import derive_events

    events = derive_events(ctx.get("select").cohort, ctx.get("tgi"), _event_rules(ctx.config),
                           estimate=ctx.config.events.estimate)
    return events, lambda tmp: events.to_dir(tmp)


def _stage_hazards(ctx: _Context) -> tuple[Any, Callable[[Path], Any]]:
    from .hazards import MixedCox, fit_organ_hazards

    h = ctx.config.hazards
    events = ctx.get("events")
    t = events.table
    has_event = (t["progression_event"].fillna(False).astype(bool) | t["response_event"].fillna(False).astype(bool))
    n_patients = int(t.loc[has_event.to_numpy(bool), "patient_id"].nunique())
    if n_patients < h.min_patients:
        raise StageSkipped(f"{n_patients} patient(s) have a lesion response or progression; the organ hazard "
                           f"models need at least {h.min_patients} (hazards.min_patients)")
    if t["organ"].nunique() < 2:
        raise StageSkipped("lesions in fewer than two organs; there is no organ to compare")
    preset = ctx.config.run.preset
    reference = preset["reference_organ"] if h.reference_organ == "auto" else h.reference_organ
    wanted = preset["candidates"] if h.candidates == "auto" else h.candidates
    candidates = tuple(c for c in wanted if c in t.columns)
    dropped = [c for c in wanted if c not in t.columns]
    if dropped:
        ctx.notes.append(f"candidate covariates not in the data: {', '.join(dropped)}")
    stratify = h.stratify_by or None
    if stratify is not None and (stratify not in t.columns or t[stratify].dropna().nunique() < 2):
        ctx.notes.append(f"no stratified models: {stratify!r} has fewer than two levels in the data")
        stratify = None
    hazards = fit_organ_hazards(events, reference_organ=reference, candidates=candidates, selection=h.selection,
                                alpha=h.alpha, stratify_by=stratify, seed=stage_seed(ctx.config.run.seed, "hazards"),
                                organ_p_value=h.organ_p_value,
                                mixed_cox=MixedCox(ties=h.ties, profile_ci=h.profile_ci),
                                progress=lambda n: ctx.tick("hazards", n, None))
    return hazards, lambda tmp: hazards.to_dir(tmp)


def _stage_phenotypes(ctx: _Context) -> tuple[Any, Callable[[Path], Any]]:
    from .phenotypes import classify_organs

    hazards = ctx.get("hazards")
    try:
        table = hazards.phenotype_input()
    except ConfigError as exc:
        raise StageSkipped(f"the hazards stage has not both models: {exc.message}") from None
    if table.empty:
        raise StageSkipped("no organ has both a response and a progression hazard ratio")
    phenotypes = classify_organs(table, ctx.config.phenotypes.threshold, reference=hazards.reference_organ)
    return phenotypes, lambda tmp: phenotypes.to_dir(tmp)


def _stage_patterns(ctx: _Context) -> tuple[Any, Callable[[Path], Any]]:
    from .patterns import cluster_sequences

    p = ctx.config.patterns
    events = ctx.get("events")
    n = int((events.patients["n_progressed_organs"] > 0).sum())
    if n < p.min_patients:
        raise StageSkipped(f"{n} patient(s) have an organ progression; clustering sequences needs at least "
                           f"{p.min_patients} (patterns.min_patients)")
    kwargs = dict(encoding=p.encoding, k_max=p.k_max, rule=p.rule, seed=stage_seed(ctx.config.run.seed, "patterns"),
                  n_init=p.n_init, silhouette_sample=p.silhouette_sample, naming=p.naming,
                  naming_organ=ctx.config.run.preset["naming_organ"] if p.naming_organ == "auto" else p.naming_organ)
    try:
        patterns = cluster_sequences(events.sequences, events.patients, k=p.k or None, **kwargs)
    except ConfigError as exc:
        if not p.k or not exc.message.startswith("k ="):
            raise
        ctx.notes.append(f"patterns.k = {p.k} not possible ({exc.message}); k picked by rule {p.rule!r}")
        patterns = cluster_sequences(events.sequences, events.patients, k=None, **kwargs)
    return patterns, lambda tmp: patterns.to_dir(tmp)


_OUTCOMES = {"os": ("os_days", "os_event"), "pfs": ("pfs_days", "pfs_event")}


def _stage_survival(ctx: _Context) -> tuple[Any, Callable[[Path], Any]]:
    from .survival import compare_survival

    s = ctx.config.survival
    events = ctx.get("events")
    pats = events.patients.copy()
    pats["patient_id"] = pats["patient_id"].astype(str)
    outcomes = []
    for o in s.outcomes:
        dur, ev = _OUTCOMES[o]
        if dur in pats and ev in pats and (pd.to_numeric(pats[dur], errors="coerce").notna()
                                           & pats[ev].notna()).any():
            outcomes.append(o)
        else:
            ctx.notes.append(f"no {o.upper()} data ({dur}, {ev} missing): {o.upper()} not compared")
    if not outcomes:
        raise StageSkipped(f"no survival data: no patient has {' or '.join(_OUTCOMES[o][0] for o in s.outcomes)}")
    keep = ["patient_id", "treatment", "treatment_group"] + [c for o in outcomes for c in _OUTCOMES[o]]
    frame = pats[[c for c in keep if c in pats]].copy()
    comparisons: list[tuple[str, str, str]] = []  # (comparison, stratum, column)
    if ctx.status.get("patterns") == "done":
        groups = ctx.get("patterns").assignments[["patient_id", "group"]].astype({"patient_id": str})
        frame = frame.merge(groups.rename(columns={"group": "pattern_group"}), on="patient_id", how="left")
        comparisons.append(("pattern_group", "all", "pattern_group"))
    else:
        ctx.notes.append("no comparison by pattern group: the patterns stage did not run")
    if ctx.status.get("phenotypes") == "done":
        from .phenotypes import patient_phenotype_groups

        lesions = events.table[["patient_id", "organ"]].astype(str)
        pg = patient_phenotype_groups(lesions, ctx.get("phenotypes"))[["patient_id", "any_low_high", "only_high_low"]]
        pg = pg.assign(**{c: pg[c].map({True: "yes", False: "no"}) for c in ("any_low_high", "only_high_low")})
        frame = frame.merge(pg.astype({"patient_id": str}), on="patient_id", how="left")
        comparisons += [("any_low_high", "all", "any_low_high"), ("only_high_low", "all", "only_high_low")]
    else:
        ctx.notes.append("no comparison by phenotype group: the phenotypes stage did not run")
    # treatments as the paper compared them: chemotherapy alone vs antibody + chemotherapy (treatment_group)
    arm = next((c for c in ("treatment_group", "treatment") if c in frame and frame[c].notna().any()), None)
    if arm is not None:
        comparisons.append(("treatment", "all", arm))
        if s.by_treatment and "pattern_group" in frame:
            comparisons += [("treatment_within_group", str(g), arm)
                            for g in sorted(frame["pattern_group"].dropna().unique())]
    parts: dict[str, list[pd.DataFrame]] = {n: [] for n in ("medians", "logrank", "pairwise", "curves", "at_risk")}
    times = list(s.at_risk_days) or None
    for o in outcomes:
        dur, ev = _OUTCOMES[o]
        for comparison, stratum, column in comparisons:
            sub = frame if stratum == "all" else frame[frame["pattern_group"] == stratum]
            try:
                res = compare_survival(sub, dur, ev, column, adjust=s.adjust, times=times)
            except DataError as exc:
                ctx.notes.append(f"{o} by {comparison} ({stratum}): {exc.message}")
                continue
            for name in parts:
                table = getattr(res, name)
                parts[name].append(pd.concat([pd.DataFrame({"outcome": [o] * len(table),
                                                             "comparison": comparison, "stratum": stratum}),
                                              table.reset_index(drop=True)], axis=1))
    tables = {n: (pd.concat(v, ignore_index=True) if v else pd.DataFrame(columns=["outcome", "comparison", "stratum"]))
              for n, v in parts.items()}
    if "pattern_group" in frame:
        tables.update(_group_tests(ctx, frame, arm, s.adjust))
    result = SurvivalTables(**tables, patients=frame.reset_index(drop=True),
                            meta={"outcomes": outcomes, "adjust": s.adjust})
    return result, lambda tmp: result.to_dir(tmp)


def _group_tests(ctx: _Context, frame: pd.DataFrame, arm: str | None, adjust: str) -> dict[str, pd.DataFrame]:
    """Group proportions by treatment (chi-square) and the inter-progression times compared across groups
    and, within each group, across treatments (Kruskal-Wallis + Dunn) - the paper's Fig. 4c and 5."""
    from .stats import chi_square, dunn, kruskal_wallis

    out: dict[str, pd.DataFrame] = {}
    grouped = frame[frame["pattern_group"].notna() & (frame["pattern_group"] != "No-Progression")]
    if arm is not None:
        try:
            out["group_counts"], out["group_by_treatment"] = chi_square(grouped, "pattern_group", arm)
        except DataError as exc:
            ctx.notes.append(f"group proportions by treatment: {exc.message}")
    intervals = ctx.get("patterns").intervals.astype({"patient_id": str})
    if arm is not None:
        intervals = intervals.merge(frame[["patient_id", arm]], on="patient_id", how="left")
    tests, pairs = [], []
    for step, sub in intervals.groupby("step", sort=False):
        cases = [("group", "all", sub)]
        if arm is not None:
            cases += [(arm, str(g), gsub) for g, gsub in sub.groupby("group")]
        for by, stratum, data in cases:
            if data[by].nunique() < 2 or len(data) < 3:
                continue
            label = {"step": step, "by": by, "stratum": stratum}
            tests.append({**label, **kruskal_wallis(data, "days", by).iloc[0].to_dict()})
            pairs.append(dunn(data, "days", by, adjust=adjust).assign(**label))
    if tests:
        out["interval_tests"] = pd.DataFrame(tests)
        out["interval_pairs"] = pd.concat(pairs, ignore_index=True)
    seq = ctx.get("events").sequences
    if arm is not None and len(seq):
        text = (seq.sort_values(["patient_id", "position"]).astype({"patient_id": str})
                .groupby("patient_id")["organ"].agg(" > ".join).rename("sequence").reset_index())
        text = text.merge(frame[["patient_id", arm]], on="patient_id").dropna(subset=[arm])
        counts = text.groupby([arm, "sequence"]).size().rename("n").reset_index()
        counts["percent_of_treatment"] = 100.0 * counts["n"] / counts.groupby(arm)["n"].transform("sum")
        out["sequences_by_treatment"] = counts.sort_values([arm, "n", "sequence"], ascending=[True, False, True],
                                                           ignore_index=True)
    return out


def _stage_predictor(ctx: _Context) -> tuple[Any, Callable[[Path], Any]]:
    from .patterns import baseline_features, train_group_predictor

    p = ctx.config.predictor
    if not p.enabled:
        raise StageSkipped("switched off (predictor.enabled = false)")
    groups = ctx.get("patterns").assignments.set_index("patient_id")["group"]
    n = int((groups != "No-Progression").sum())
    if n < p.min_patients:
        raise StageSkipped(f"{n} patient(s) have a pattern group; the predictor needs at least {p.min_patients} "
                           "(predictor.min_patients)")
    features = baseline_features(ctx.get("select").cohort)
    predictor = train_group_predictor(features, groups, seed=stage_seed(ctx.config.run.seed, "predictor"),
                                      test_size=p.test_size, cv=p.cv, max_iter=p.max_iter, n_repeats=p.n_repeats)

    def write(tmp: Path) -> None:
        tables = {n: getattr(predictor, n) for n in ("metrics", "confusion", "roc", "importance", "cv_results")}
        tables["cv_results"] = tables["cv_results"].astype({"params": str}) if "params" in tables["cv_results"] \
            else tables["cv_results"]

        def extra(folder: Path) -> None:
            predictor.save(folder / "model.joblib")
            features.reset_index().to_csv(folder / "features.csv", index=False, lineterminator="\n")

        write_result_dir(tmp, tables, {"schema": "lesionatlas.predictor/1", "classes": predictor.classes,
                                       "best_params": predictor.best_params, "feature_columns": predictor.feature_columns,
                                       **predictor.meta}, extra=extra)
    return predictor, write


_RUNNERS: dict[str, Callable[[_Context], tuple[Any, Callable[[Path], Any]]]] = {
    "read": _stage_read, "validate": _stage_validate, "select": _stage_select, "tgi": _stage_tgi,
    "events": _stage_events, "hazards": _stage_hazards, "phenotypes": _stage_phenotypes,
    "patterns": _stage_patterns, "survival": _stage_survival, "predictor": _stage_predictor,
}


# ============================================================================================ run
def run(
    data: str | Path,
    out: str | Path,
    config: Config | str | Path | None = None,
    *,
    from_stage: str | None = None,
    quiet: bool = False,
    progress: Progress | None = None,
) -> RunResult:
    """Run the whole analysis of ``data`` into the run folder ``out``, reusing what is still valid.

    Parameters
    ----------
    data : path
        A tidy folder, a Monolix/NONMEM-style CSV or a folder of SDTM domains (``config.cohort`` says how
        to read it).
    out : path
        The run folder (created; an earlier run there is resumed).
    config : Config or path, optional
        The configuration (default: ``load_config()``); a path is read with :func:`load_config`.
    from_stage : str, optional
        Redo this stage and every later one even when their inputs are unchanged.
    quiet : bool
        No progress at all (``progress`` is not called).
    progress : callable, optional
        ``progress(stage, status, done, total)``; default: one plain line per stage on stderr.

    Returns
    -------
    RunResult

    Raises
    ------
    DataError
        The input cannot be read or is unusable (the message lists every problem).
    ConfigError
        A setting is not allowed (``from_stage`` unknown, a candidate covariate missing, ...).
    """
    started = time.perf_counter()
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if config is None:
        config = load_config()
    elif not isinstance(config, Config):
        config = load_config(config)
    if from_stage is not None and from_stage not in STAGES:
        raise ConfigError(f"unknown stage {from_stage!r}; stages are {', '.join(STAGES)}", code="bad-option")
    data = Path(data)
    if not data.exists():
        raise DataError(f"{data}: no such file or folder", code="not-found")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in [*out.glob(".*.tmp"), *out.glob(".*.old-*")]:  # left by an interrupted run
        if stale.is_dir() and any(stale.name.startswith(f".{s}.") for s in (*STAGES, "figures")):
            shutil.rmtree(stale, ignore_errors=True)
    if progress is None and not quiet:
        progress = _plain_progress
    if quiet:
        progress = None
    (out / "config.toml").write_text(config.to_toml(), encoding="utf-8")
    data_hash = hash_path(data)
    organ_map_hash = hash_path(config.cohort.organ_map) if config.cohort.organ_map else ""
    forced = set(STAGES[STAGES.index(from_stage):]) if from_stage else set()
    vers = versions()
    ctx = _Context(data=data, out=out, config=config, results={}, status={}, progress=progress)
    records: list[StageRecord] = []
    output_hash: dict[str, str] = {}
    failure: BaseException | None = None
    for name in STAGES:
        if failure is not None:
            records.append(StageRecord(name, "not run", False, None, out / name, reason="an earlier stage failed"))
            continue
        folder = out / name
        upstream = NEEDS[name] + USES.get(name, ())
        inputs: dict[str, Any] = {u: output_hash[u] for u in upstream}
        if name in ("read", "validate"):
            inputs["data"] = data_hash
            inputs["organ_map"] = organ_map_hash
        seed = int(config.run.seed) if name == "tgi" else stage_seed(config.run.seed, name)
        cfg = {s: section_dict(config.section(s)) for s in SECTIONS_OF[name]}
        if name in ("hazards", "patterns"):
            cfg["run"] = {"disease": config.run.disease}
        key = _hash_json({"stage": name, "inputs": inputs, "config": cfg, "seed": seed,
                          "lesionatlas": vers["lesionatlas"]})
        record = None if name in forced else _read_record(folder)
        if record is not None and record.get("key") == key:
            ctx.status[name] = record["status"]
            output_hash[name] = _output_hash(record)
            records.append(StageRecord(name, record["status"], True, record.get("seconds"), folder,
                                       reason=record.get("reason", ""), key=key,
                                       warnings=tuple(record.get("warnings", ()))))
            if progress is not None:
                progress(name, "reused", None, None)
            continue
        if progress is not None:
            progress(name, "start", None, None)
        ctx.notes = []
        t0 = time.perf_counter()
        status, reason, result, writer = "done", "", None, None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                missing = [u for u in NEEDS[name] if ctx.status.get(u) != "done"]
                if missing:
                    raise StageSkipped(f"needs {' and '.join(missing)}, which "
                                       f"{'was' if len(missing) == 1 else 'were'} skipped")
                result, writer = _RUNNERS[name](ctx)
            except StageSkipped as exc:
                status, reason = "skipped", str(exc)
            except (DataError, ConvergenceError) as exc:
                if name in ("read", "validate", "select"):
                    failure = exc
                else:
                    status, reason = "skipped", f"{exc.message} [{exc.code}]"
            except BaseException as exc:  # noqa: BLE001 - recorded in the manifest, then raised
                failure = exc
        seconds = round(time.perf_counter() - t0, 3)
        messages = tuple(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught))
        if failure is not None:
            ctx.status[name] = "failed"
            records.append(StageRecord(name, "failed", False, seconds, folder, reason=str(failure), key=key,
                                       warnings=messages))
            if progress is not None:
                progress(name, "failed", None, None)
            continue
        stage_meta = {"schema": _SCHEMA, "stage": name, "status": status, "key": key, "inputs": inputs,
                      "config": cfg, "seed": seed, "versions": vers, "seconds": seconds, "finished": _now(),
                      "warnings": list(messages), "notes": list(ctx.notes)}
        if status == "skipped":
            stage_meta["reason"] = reason
        with atomic_dir(folder) as tmp:
            if status == "done":
                assert writer is not None
                writer(tmp)
            else:
                write_json(tmp / _SKIPPED, {"stage": name, "reason": reason, "notes": list(ctx.notes)})
            stage_meta["files"] = _file_list(tmp)
            write_json(tmp / _RECORD, stage_meta)
        if status == "done":
            ctx.results[name] = result
        ctx.status[name] = status
        output_hash[name] = _output_hash(stage_meta)
        records.append(StageRecord(name, status, False, seconds, folder, reason=reason, key=key, warnings=messages))
        if progress is not None:
            progress(name, status, None, None)
    total = round(time.perf_counter() - started, 3)
    _write_manifest(out, data, config, records, vers, data_hash, started_at, total, failure)
    _write_readme(out, records)
    if failure is not None:
        raise failure
    result = RunResult(out=out, config=config, stages=tuple(records), seconds=total, _cache=dict(ctx.results))
    if config.report.enabled:
        if progress is not None:
            progress("report", "start", None, None)
        report = _report(result, output_hash)
        total = round(time.perf_counter() - started, 3)
        _write_manifest(out, data, config, records, vers, data_hash, started_at, total, None, report=report)
        result = RunResult(out=out, config=config, stages=tuple(records), seconds=total, _cache=dict(ctx.results))
        if progress is not None:
            progress("report", "reused" if report["reused"] else "done", None, None)
    return result


#: bump when the report's content changes, so that a rerun redraws it
_REPORT_VERSION = 1


def _report(result: RunResult, output_hash: dict[str, str]) -> dict[str, Any]:
    """Build ``report.html`` and ``figures/`` unless the same stage outputs already made the report there."""
    out = result.out
    key = _hash_json({"stages": output_hash, "report": section_dict(result.config.report),
                      "lesionatlas": versions()["lesionatlas"], "version": _REPORT_VERSION})
    stamp = out / "figures" / ".report-key"
    if (out / "report.html").is_file() and stamp.is_file() and stamp.read_text(encoding="utf-8") == key:
        return {"path": "report.html", "figures": "figures", "reused": True, "key": key, "seconds": None,
                "failures": []}
    from .report import build_report

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        built = build_report(result, dpi=int(result.config.report.dpi))
    stamp.write_text(key, encoding="utf-8")
    messages = list(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught))
    return {"path": "report.html", "figures": "figures", "reused": False, "key": key, "seconds": built.seconds,
            "n_figures": built.n_figures, "failures": list(built.failures), "warnings": messages}


def open_run(out: str | Path) -> RunResult:
    """The run folder ``out`` of an earlier :func:`run`, read back (stages as its manifest records them).

    Raises
    ------
    DataError
        ``out`` has no readable ``manifest.json`` (not a run folder, or a run that never finished a stage).
    """
    out = Path(out)
    try:
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise DataError(f"{out}: not a run folder (no readable manifest.json); make one with `lesionatlas run`",
                        code="not-a-run") from None
    config_file = out / "config.toml"
    config = load_config(config_file) if config_file.is_file() else load_config()
    records = []
    for entry in manifest.get("stages", []):
        name = entry["stage"]
        record = _read_record(out / name) if entry["status"] in ("done", "skipped") else None
        status = entry["status"] if record is not None or entry["status"] not in ("done", "skipped") else "not run"
        reason = entry.get("reason", "") if record is not None or status != "not run" else \
            "its folder is missing or damaged; rerun `lesionatlas run` to redo it"
        records.append(StageRecord(name, status, bool(entry.get("reused")), entry.get("seconds"), out / name,
                                   reason=reason, key=entry.get("key", ""),
                                   warnings=tuple((record or {}).get("warnings", ()))))
    return RunResult(out=out, config=config, stages=tuple(records), seconds=float(manifest.get("seconds") or 0.0))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_manifest(out: Path, data: Path, config: Config, records: list[StageRecord], vers: dict[str, str],
                    data_hash: str, started_at: str, total: float, failure: BaseException | None,
                    report: dict[str, Any] | None = None) -> None:
    fmt = config.cohort.format
    if not fmt:
        try:
            from .data import detect_format

            fmt = detect_format(data)
        except Exception:  # noqa: BLE001 - the read stage reports it
            fmt = "unknown"
    write_json(out / "manifest.json", {
        "schema": "lesionatlas.run/1",
        "status": "failed" if failure is not None else "complete",
        "error": None if failure is None else f"{type(failure).__name__}: {failure}",
        "seed": int(config.run.seed),
        "disease": config.run.disease,
        "data": {"path": str(data.resolve()), "format": fmt, "sha256": data_hash},
        "config": "config.toml",
        "versions": vers,
        "started": started_at,
        "seconds": total,
        "stages": [{"stage": r.name, "status": r.status, "reused": r.reused, "seconds": r.seconds,
                    "reason": r.reason, "key": r.key, "n_warnings": len(r.warnings),
                    "path": r.name} for r in records],
        "report": report,
    })


def _write_readme(out: Path, records: list[StageRecord]) -> None:
    lines = [
        "lesionatlas run folder",
        "======================",
        "",
        "manifest.json   what ran: stages, status (done, skipped, failed), timings, seed, versions, data source",
        "config.toml     the effective configuration (lesionatlas run DATA --out DIR --config config.toml redoes it)",
        "README.txt      this file",
        "report.html     the report: the paper's figures and tables for this run, the model diagnostics and the",
        "                run facts, in one self-contained page (open it in a browser; no network needed)",
        "figures/        every figure of the report as PNG and SVG",
        "",
        "One folder per stage, in the order they run. Each holds its tables as CSV and Parquet, the result's",
        "meta.json, and stage.json (the pipeline's record: config section, input hashes, seed, versions, wall",
        "time, warnings, and the size and SHA-256 of every file; a rerun reuses the folder when they match).",
        "A stage that could not run on these data holds skipped.json with the reason instead of tables.",
        "",
    ]
    for r in records:
        state = r.status if not r.reason else f"{r.status}: {r.reason}"
        lines.append(f"{r.name}/")
        lines.append(f"    {DESCRIPTIONS[r.name]}")
        lines.append(f"    [{state}]")
    from .io import atomic_write_text

    atomic_write_text(out / "README.txt", "\n".join(lines) + "\n")


__all__ = ["DESCRIPTIONS", "NEEDS", "STAGES", "RunResult", "StageRecord", "SurvivalTables", "hash_path", "open_run", "run",
           "stage_seed", "versions"]

"""Report sections: the overview at the top (key numbers and findings) and the run facts at the end.

The findings are sentences computed from the run's tables (the organ with the highest progression
hazard, the pattern group with the shortest survival, ...); nothing here is written in advance.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from ...data.organs import ORGAN_LABELS
from ..document import Section, format_value, new_figure

_STATUS_COLOUR = {"done": "#009E73", "skipped": "#E69F00", "failed": "#D55E00", "not run": "#7f7f7f"}


def _manifest(run: Any) -> dict[str, Any]:
    try:
        return json.loads((Path(run.out) / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _status(run: Any, stage: str) -> str:
    try:
        return run[stage].status
    except KeyError:
        return "not run"


def _load(run: Any, stage: str) -> Any:
    return run.load(stage) if _status(run, stage) == "done" else None


def page_titles(run: Any) -> tuple[str, str, str]:
    """The page's title, subtitle (data source and size) and footer (versions, seed)."""
    manifest = _manifest(run)
    disease = {"mcrc": "metastatic colorectal cancer", "hnscc": "head and neck cancer"}.get(
        str(getattr(run.config.run, "disease", "")), "")
    title = "Lesion-level response and progression atlas" + (f" — {disease}" if disease else "")
    data = manifest.get("data", {})
    parts = [f"Data: {data.get('path', '?')} ({data.get('format', '?')})"]
    select = _load(run, "select")
    if select is not None:
        c = select.cohort.counts()
        parts.append(f"{c['patients']:,} patients, {c['lesions']:,} lesions, {c['measurements']:,} measurements")
    parts.append(f"seed {manifest.get('seed', run.config.run.seed)}")
    versions = manifest.get("versions", {})
    footer = (f"lesionatlas {versions.get('lesionatlas', '?')} · run folder {Path(run.out).resolve()} · "
              f"started {manifest.get('started', '?')} · every table behind this page is in the run folder "
              "(README.txt says what each file is)")
    return title, " · ".join(parts), footer


def _organ(name: Any) -> str:
    return ORGAN_LABELS.get(str(name), str(name).replace("_", " ")).lower() \
        if str(name) != "brain_cns" else "brain/CNS"


def _findings(run: Any) -> list[str]:
    """Plain-language sentences on the main results, each computed from a stage's tables."""
    out: list[str] = []
    tgi = _load(run, "tgi")
    if tgi is not None:
        pop = tgi.population.set_index("parameter")["estimate"]
        if {"kg_pop", "kd_pop", "f_pop"} <= set(pop.index):
            doubling = 0.6931471805599453 / float(pop["kg_pop"])
            out.append(f"A typical target lesion doubles in volume every {doubling:,.0f} days without treatment; "
                       f"under treatment {100 * (1 - float(pop['f_pop'])):.0f}% of its cells are sensitive and "
                       f"shrink with a half-life of {0.6931471805599453 / float(pop['kd_pop']):,.0f} days.")
    hazards = _load(run, "hazards")
    if hazards is not None:
        hr = hazards.hazard_ratios
        for model, verb in (("response", "respond"), ("progression", "progress")):
            sub = hr[(hr["model"] == model) & ~hr["reference"].astype(bool) & hr["p_value"].notna()]
            if sub.empty:
                continue
            top = sub.sort_values("hazard_ratio", ascending=False).iloc[0]
            low = sub.sort_values("hazard_ratio").iloc[0]
            out.append(f"Lesions {verb} fastest in {_organ(top['organ'])} (HR {top['hazard_ratio']:.2f}, "
                       f"95% CI {top['ci_lower']:.2f}–{top['ci_upper']:.2f}) and slowest in "
                       f"{_organ(low['organ'])} (HR {low['hazard_ratio']:.2f}), relative to "
                       f"{_organ(hazards.reference_organ)} lesions (mixed-effects Cox model).")
    phen = _load(run, "phenotypes")
    if phen is not None:
        table = phen.table if hasattr(phen, "table") else None
        if isinstance(table, pd.DataFrame) and "phenotype" in table:
            lh = sorted(table.loc[table["phenotype"] == "low-high", "organ"].astype(str))
            if lh:
                out.append("Organs whose lesions respond little and progress fast (low response, high "
                           "progression): " + ", ".join(ORGAN_LABELS.get(o, o) for o in lh) + ".")
    surv = _load(run, "survival")
    if surv is not None and not surv.medians.empty:
        m = surv.medians[(surv.medians["outcome"] == "os") & (surv.medians["comparison"] == "pattern_group")]
        lr = surv.logrank[(surv.logrank["outcome"] == "os") & (surv.logrank["comparison"] == "pattern_group")]
        if len(m) >= 2:
            m = m.sort_values("median")
            worst, best = m.iloc[0], m.iloc[-1]
            p = f" (log-rank p = {format_value(float(lr['p_value'].iloc[0]))})" if len(lr) and "p_value" in lr else ""
            out.append(f"Median overall survival ranges from {format_value(worst['median'])} days in the "
                       f"{worst['group']} group to {format_value(best['median'])} days in the {best['group']} "
                       f"group{p}.")
    pred = _load(run, "predictor")
    if pred is not None:
        met = pred.metrics.set_index("metric")["value"]
        if {"accuracy", "majority_accuracy"} <= set(met.index):
            out.append(f"From baseline data alone, the pattern group is predicted with accuracy "
                       f"{met['accuracy']:.2f} on held-out patients (always guessing the largest group: "
                       f"{met['majority_accuracy']:.2f}).")
    return out


def overview(run: Any) -> list[Section]:
    """Key numbers, the main findings in words, and which stages ran."""
    s = Section("overview", "Overview",
                intro="What this run found, in a few lines; the figures below follow the order of the paper "
                      "(Zhou et al., Nat Commun 2024).")
    tiles: list[tuple[str, Any]] = []
    select = _load(run, "select")
    if select is not None:
        c = select.cohort.counts()
        tiles += [("patients analysed", f"{c['patients']:,}"), ("lesions", f"{c['lesions']:,}"),
                  ("target lesions", f"{c['target_lesions']:,}"), ("measurements", f"{c['measurements']:,}")]
    events = _load(run, "events")
    if events is not None:
        t = events.table
        tiles += [("lesion responses", f"{int(t['response_event'].fillna(False).astype(bool).sum()):,}"),
                  ("lesion progressions", f"{int(t['progression_event'].fillna(False).astype(bool).sum()):,}")]
    patterns = _load(run, "patterns")
    if patterns is not None:
        tiles.append(("pattern groups", str(patterns.assignments["group"].nunique())))
    if tiles:
        s.facts(tiles)
    findings = _findings(run)
    for f in findings:
        s.note(f)
    rows = [{"stage": r.name, "status": r.status, "seconds": r.seconds, "note": r.reason} for r in run.stages]
    s.table("stages", "What ran", pd.DataFrame(rows), max_rows=20, source="manifest.json")
    for r in run.stages:
        if r.status in ("skipped", "failed", "not run"):
            s.note(f"{r.name}: {r.status} — {r.reason}", "skipped" if r.status == "skipped" else "warning")
    return [s]


def _timing_figure(run: Any) -> Any:
    rows = [(r.name, float(r.seconds or 0.0), r.status) for r in run.stages]
    fig, ax = new_figure(7.0, 0.32 * len(rows) + 1.0)
    names = [r[0] for r in rows][::-1]
    secs = [r[1] for r in rows][::-1]
    cols = [_STATUS_COLOUR.get(r[2], "#7f7f7f") for r in rows][::-1]
    ax.barh(names, secs, color=cols)
    for i, v in enumerate(secs):
        ax.text(v, i, f" {v:.1f} s", va="center", fontsize=8)
    ax.set_xlabel("wall time (seconds; this run, reused stages show their original time)")
    ax.set_title("Time per stage")
    ax.margins(x=0.15)
    return fig


def run_facts(run: Any) -> list[Section]:
    """Data source, configuration, seed, versions, timings and every warning the stages raised."""
    manifest = _manifest(run)
    s = Section("run", "Run facts", intro="Everything needed to reproduce this page: "
                "`lesionatlas run DATA --out DIR --config DIR/config.toml` with the same data gives the same tables.")
    data = manifest.get("data", {})
    s.facts([("seed", manifest.get("seed", run.config.run.seed)), ("disease preset", run.config.run.disease),
             ("data format", data.get("format", "?")),
             ("total time", f"{float(manifest.get('seconds') or 0):.0f} s")])
    facts = pd.DataFrame([
        {"item": "data", "value": data.get("path", "")},
        {"item": "data SHA-256", "value": data.get("sha256", "")},
        {"item": "started", "value": manifest.get("started", "")},
        {"item": "status", "value": manifest.get("status", "")},
    ])
    s.table("run_facts", "Source", facts, source="manifest.json")
    versions = manifest.get("versions", {})
    if versions:
        s.table("versions", "Versions", pd.DataFrame({"package": list(versions), "version": list(versions.values())}),
                source="manifest.json")
    s.figure("run_stage_times", "Time per stage", _timing_figure(run))
    from ...config import section_dict

    cfg_rows = []
    for name in ("run", "tgi", "events", "hazards", "phenotypes", "patterns", "survival", "predictor"):
        try:
            values = section_dict(run.config.section(name))
        except (AttributeError, KeyError):
            continue
        for k, v in values.items():
            cfg_rows.append({"section": name, "setting": k, "value": json.dumps(v, default=str)})
    if cfg_rows:
        s.table("config", "Configuration (effective)", pd.DataFrame(cfg_rows), max_rows=400, source="config.toml")
    warn_rows = [{"stage": r.name, "warning": w} for r in run.stages for w in r.warnings]
    if warn_rows:
        s.table("warnings", "Warnings raised", pd.DataFrame(warn_rows), max_rows=100,
                source="<stage>/stage.json")
    else:
        s.note("No stage raised a warning.")
    return [s]


__all__ = ["overview", "page_titles", "run_facts"]

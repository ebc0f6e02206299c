"""The pipeline through the command line: run folder, reuse, restart, resume, corruption, config, SDTM.

One small demo run (simulated cohort, quick SAEM) is built once per test session and shared by the
xdist workers (a file lock); each test copies it into its own tmp_path before changing anything.
"""
from __future__ import annotations

import html
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from lesionatlas import pipeline
from lesionatlas.cli import main
from lesionatlas.config import Config, EventsConfig, HazardsConfig, TGIConfig, load_config

SDTM_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sdtm_onco"

@pytest.fixture
def run_copy(base_run, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(base_run, out)
    return out


def _records(out: Path) -> dict[str, bytes]:
    return {s: (out / s / "stage.json").read_bytes() for s in pipeline.STAGES}


def _manifest(out: Path) -> dict:
    return {s["stage"]: s for s in json.loads((out / "manifest.json").read_text())["stages"]}


def _csvs(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.csv"))}


def _run(out: Path, config: Path, *extra: str) -> int:
    return main(["run", str(out / "input"), "--out", str(out), "--config", str(config), "--quiet", *extra])


@pytest.fixture
def stages_config(quick_config, tmp_path) -> Path:
    """The quick config without the report (a minute of drawing): for the tests of which stages run again."""
    path = tmp_path / "stages.toml"
    path.write_text(quick_config.read_text() + "\n[report]\nenabled = false\n")
    return path


# ----------------------------------------------------------------------------------------- the run
def test_demo_writes_every_stage_and_the_manifest(base_run):
    manifest = json.loads((base_run / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["seed"] == 1
    assert [s["stage"] for s in manifest["stages"]] == list(pipeline.STAGES)
    assert all(s["status"] == "done" for s in manifest["stages"]), manifest["stages"]
    assert manifest["data"]["format"] == "tidy" and len(manifest["data"]["sha256"]) == 64
    assert {"lesionatlas", "numpy", "jax", "python"} <= set(manifest["versions"])
    for name in ("README.txt", "config.toml", "input/patients.csv", "input/truth"):
        assert (base_run / name).exists(), name
    for stage in pipeline.STAGES:
        record = json.loads((base_run / stage / "stage.json").read_text())
        assert record["status"] == "done" and record["seconds"] >= 0
        assert {"key", "inputs", "config", "seed", "versions", "files"} <= set(record)
        assert stage in (base_run / "README.txt").read_text()
    for name in ("read/patients.csv", "validate/problems.csv", "select/consort.csv", "tgi/population.csv",
                 "tgi/individual.csv", "events/table.csv", "events/sequences.csv", "hazards/hazard_ratios.csv",
                 "phenotypes/phenotypes.csv", "patterns/assignments.csv", "survival/medians.csv",
                 "survival/logrank.csv", "predictor/metrics.csv", "predictor/model.joblib"):
        assert (base_run / name).is_file(), name
    # seeds: derived per stage from (run seed, stage name); the TGI fit derives its own stream from the run seed
    seeds = {s: json.loads((base_run / s / "stage.json").read_text())["seed"] for s in pipeline.STAGES}
    assert seeds["tgi"] == 1 and seeds["patterns"] == pipeline.stage_seed(1, "patterns") != seeds["predictor"]
    import pandas as pd

    medians = pd.read_csv(base_run / "survival" / "medians.csv")
    assert set(medians["outcome"]) == {"os", "pfs"}
    assert {"pattern_group", "any_low_high", "only_high_low", "treatment", "treatment_within_group"} <= set(
        medians["comparison"])
    # group proportions by treatment (chi-square) and inter-progression times (Kruskal-Wallis + Dunn)
    chi = pd.read_csv(base_run / "survival" / "group_by_treatment.csv")
    assert 0 <= chi["p_value"].iloc[0] <= 1 and chi["df"].iloc[0] >= 1
    intervals = pd.read_csv(base_run / "survival" / "interval_tests.csv")
    assert "1st" in set(intervals["step"]) and {"group", "treatment_group"} <= set(intervals["by"])
    seqs = pd.read_csv(base_run / "survival" / "sequences_by_treatment.csv")
    assert seqs.groupby("treatment_group")["percent_of_treatment"].sum().round(6).eq(100).all()


def test_rerun_reuses_every_stage(run_copy, quick_config):
    before = _records(run_copy)
    assert _run(run_copy, quick_config) == 0
    assert _records(run_copy) == before
    assert all(s["reused"] and s["status"] == "done" for s in _manifest(run_copy).values())


def test_from_events_redoes_events_and_later_only_with_identical_tables(run_copy, base_run, stages_config):
    before = _records(run_copy)
    assert _run(run_copy, stages_config, "--from", "events") == 0
    after, manifest = _records(run_copy), _manifest(run_copy)
    later = pipeline.STAGES[pipeline.STAGES.index("events"):]
    for stage in pipeline.STAGES:
        assert (after[stage] == before[stage]) is (stage not in later), stage
        assert manifest[stage]["reused"] is (stage not in later)
    # same seed, same data: the redone stages write byte-identical tables
    for stage in later:
        assert _csvs(run_copy / stage) == _csvs(base_run / stage), stage


def test_interrupted_run_resumes(run_copy, stages_config, monkeypatch, capsys):
    for stage in ("patterns", "survival", "predictor"):  # as if the run had stopped before them
        shutil.rmtree(run_copy / stage)

    def interrupted(ctx):
        raise KeyboardInterrupt

    monkeypatch.setitem(pipeline._RUNNERS, "patterns", interrupted)
    assert _run(run_copy, stages_config) == 130
    manifest = json.loads((run_copy / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert not (run_copy / "patterns").exists()
    assert not list(run_copy.glob(".*.tmp"))
    monkeypatch.undo()
    assert _run(run_copy, stages_config) == 0
    manifest = _manifest(run_copy)
    for stage in pipeline.STAGES:
        assert manifest[stage]["status"] == "done"
        assert manifest[stage]["reused"] is (stage not in ("patterns", "survival", "predictor")), stage


def test_corrupted_stage_folders_are_detected_and_redone(run_copy, stages_config):
    (run_copy / "events" / "table.csv").unlink()
    (run_copy / "hazards" / "meta.json").write_text("garbage")
    (run_copy / "phenotypes" / "stage.json").write_text("{not json")
    assert _run(run_copy, stages_config) == 0
    manifest = _manifest(run_copy)
    for stage in ("events", "hazards", "phenotypes"):
        assert not manifest[stage]["reused"], stage
    for stage in ("read", "validate", "select", "tgi", "patterns"):
        assert manifest[stage]["reused"], stage
    assert (run_copy / "events" / "table.csv").is_file()
    json.loads((run_copy / "hazards" / "meta.json").read_text())
    json.loads((run_copy / "phenotypes" / "stage.json").read_text())


def test_changed_config_redoes_the_stage_and_what_depends_on_it(run_copy, stages_config, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(stages_config.read_text().replace("[patterns]\n", "[patterns]\nrule = \"knee\"\nk = 3\n"))
    assert _run(run_copy, config) == 0
    manifest = _manifest(run_copy)
    assert [s for s in pipeline.STAGES if not manifest[s]["reused"]] == ["patterns", "survival", "predictor"]


# ----------------------------------------------------------------------------------------- config
@pytest.mark.parametrize(("text", "needle"), [
    ("[tgi]\nnope = 1\n", "tgi.nope"),
    ("[nope]\n", "[nope]"),
    ("[tgi]\nn_explore = \"many\"\n", "tgi.n_explore must be an integer"),
    ("[hazards]\nselection = \"sideways\"\n", "allowed values are"),
    ("[tgi\n", "not a valid TOML"),
])
def test_config_errors_exit_2(tmp_path, capsys, text, needle):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    assert main(["run", str(tmp_path), "--out", str(tmp_path / "out"), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error [config") and needle in err and "Traceback" not in err
    if "nope" in text and "[nope]" not in text:
        assert "n_explore" in err  # the allowed keys are listed
    assert not (tmp_path / "out").exists()


def test_bad_usage_and_bad_data_exit_2(tmp_path, capsys):
    assert main(["run", str(tmp_path / "none"), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert capsys.readouterr().err.startswith("error [not-found]")
    assert main(["run", str(tmp_path), "--out", str(tmp_path / "out"), "--from", "nowhere", "--quiet"]) == 2
    assert "unknown stage" in capsys.readouterr().err
    assert main(["config", "--config", str(tmp_path / "missing.toml")]) == 2


def test_config_show_round_trips(tmp_path, capsys, quick_config):
    assert main(["config", "--show", "--config", str(quick_config)]) == 0
    shown = tmp_path / "shown.toml"
    shown.write_text(capsys.readouterr().out)
    assert load_config(shown) == load_config(quick_config)
    assert load_config(shown).tgi.n_explore == 40
    assert main(["config", "--show"]) == 0
    assert load_config() == Config()


def test_config_defaults_match_the_stage_specs():
    import dataclasses

    from lesionatlas.events import EventRules
    from lesionatlas.hazards import DEFAULT_CANDIDATES
    from lesionatlas.tgi import TGIModel

    model = TGIModel()
    for f in dataclasses.fields(TGIConfig):
        assert getattr(TGIConfig(), f.name) == getattr(model, f.name), f.name
    rules = EventRules()
    for f in dataclasses.fields(EventsConfig):
        if f.name != "estimate":
            assert getattr(EventsConfig(), f.name) == getattr(rules, f.name), f.name
    assert HazardsConfig().candidates == "auto"
    assert Config().run.preset["candidates"] == DEFAULT_CANDIDATES


def test_disease_presets_fill_the_auto_settings():
    from lesionatlas.config import DISEASE_CANDIDATES

    hn = load_config(None, {"run": {"disease": "hnscc"}})
    assert hn.run.preset == {"reference_organ": "head_neck", "candidates": DISEASE_CANDIDATES["hnscc"],
                             "naming_organ": "lung"}
    assert set(DISEASE_CANDIDATES["hnscc"]) == {"treatment", "age", "prior_radiation", "bsa"}  # the paper's
    # an explicit setting wins over the preset
    assert load_config(None, {"hazards": {"candidates": ["age"]}}).hazards.candidates == ("age",)


def test_unknown_disease_is_a_clear_error(tmp_path, capsys):
    assert main(["run", str(tmp_path), "--out", str(tmp_path / "o"), "--disease", "melanoma"]) == 2
    err = capsys.readouterr().err
    assert "--disease 'melanoma'" in err and "mcrc, hnscc, custom" in err and "Traceback" not in err


def test_hnscc_preset_end_to_end(tmp_path, quick_config):
    """The paper's external validation workflow: the head-and-neck cohort through the same command."""
    out = tmp_path / "hn"
    config = tmp_path / "hn.toml"
    config.write_text(quick_config.read_text().replace('candidates = ["line"]', 'candidates = "auto"'))
    assert main(["demo", "--disease", "hnscc", "--patients", "160", "--out", str(out), "--config", str(config),
                 "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["disease"] == "hnscc"
    assert {s["stage"]: s["status"] for s in manifest["stages"]} == {s: "done" for s in pipeline.STAGES}
    assert json.loads((out / "input.json").read_text())["preset"] == "hnscc"
    hr = pd.read_csv(out / "hazards" / "hazard_ratios.csv")
    assert set(hr.loc[hr["reference"], "organ"]) == {"head_neck"}
    steps = pd.read_csv(out / "hazards" / "selection_steps.csv")
    assert set(steps["term"]) <= {"treatment", "age", "prior_radiation", "bsa"}
    assert {"prior_radiation", "bsa"} <= set(steps["term"])
    assert "head and neck" in (out / "report.html").read_text()


# ----------------------------------------------------------------------------------------- SDTM sample
@pytest.mark.skipif(not SDTM_DIR.is_dir(), reason=f"the SDTM sample folder {SDTM_DIR} is not here")
def test_sdtm_sample_runs_and_says_why_stages_are_skipped(tmp_path, quick_config):
    out = tmp_path / "sdtm"
    assert main(["run", str(SDTM_DIR), "--sdtm-suffix", "onco_recist", "--out", str(out), "--config",
                 str(quick_config), "--quiet"]) == 0
    manifest = _manifest(out)
    for stage in ("read", "validate", "select", "tgi", "events"):
        assert manifest[stage]["status"] == "done", manifest[stage]
    skipped = [s for s in pipeline.STAGES if manifest[s]["status"] == "skipped"]
    assert {"hazards", "patterns", "predictor"} <= set(skipped)
    for stage in skipped:
        why = json.loads((out / stage / "skipped.json").read_text())
        assert why["reason"] and manifest[stage]["reason"] == why["reason"]
    assert "at least" in manifest["hazards"]["reason"]
    assert "needs" in manifest["predictor"]["reason"]
    # the report is still written, and says why each missing part is missing instead of failing
    page = (out / "report.html").read_text()
    assert "could not be drawn" not in page
    assert 'id="cohort"' in page and 'id="growth"' in page
    for stage in skipped:
        reason = json.loads((out / stage / "skipped.json").read_text())["reason"]
        assert html.escape(reason) in page, stage

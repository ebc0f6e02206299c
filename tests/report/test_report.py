"""The report page: its document model, the whole page from a run, rebuilding it, and a real browser."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lesionatlas import pipeline
from lesionatlas import report as report_mod
from lesionatlas.cli import main
from lesionatlas.report.document import Section, format_value, new_figure, table_html, write_report

#: section anchors every complete run's report has
SECTION_IDS = ("overview", "cohort", "table1", "data-checks", "growth", "tgi-diagnostics", "hazards", "patterns",
               "survival", "prediction", "run")


def test_format_value():
    assert format_value(1234567) == "1,234,567"
    assert format_value(12.0) == "12"
    assert format_value(0.123456) == "0.1235"
    assert format_value(3.2e-7) == "3.20e-07"
    assert format_value(float("nan")) == ""
    assert format_value(float("inf")) == "∞"
    assert format_value(np.bool_(True)) == "yes"
    assert format_value(None) == ""


def test_table_html_escapes_and_counts_hidden_rows():
    frame = pd.DataFrame({"organ": ["<liver>", "lung", "bone"], "hr": [1.5, 0.25, np.nan]})
    text = table_html(frame, max_rows=2)
    assert "&lt;liver&gt;" in text and "<liver>" not in text
    assert "bone" not in text and "1 more rows not shown" in text
    assert '<td class="num">1.5</td>' in text
    # a p-value that underflowed to 0 is shown as a bound, other zeros as 0
    text = table_html(pd.DataFrame({"p_value": [0.0, 0.02], "n": [0, 3]}))
    assert "&lt;1e-300" in text and '<td class="num">0</td>' in text


def test_write_report_is_self_contained_and_saves_png_and_svg(tmp_path):
    fig, ax = new_figure(3, 2)
    ax.plot([0, 1], [0, 1])
    s = Section("one", "One", intro="An <intro>").figure("fig9_line", "A line", fig, "caption").note("hello")
    path = write_report([s], tmp_path, title="T")
    page = path.read_text()
    assert (tmp_path / "figures" / "fig9_line.png").stat().st_size > 1000
    assert (tmp_path / "figures" / "fig9_line.svg").read_text().lstrip().startswith("<?xml")
    assert "data:image/png;base64," in page and 'id="one"' in page and "An &lt;intro&gt;" in page
    # nothing fetched from elsewhere: no src or href pointing outside the page
    assert not re.search(r'(src|href)="(?!data:|#)', page)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_failing_section_does_not_stop_the_report(base_run, monkeypatch):
    run = pipeline.open_run(base_run)
    from lesionatlas.report.sections import hazards

    def broken(run):
        raise ValueError("no such column: organ")

    monkeypatch.setattr(hazards, "build", broken)
    sections, failures = report_mod.build_sections(run, only=("hazards", "run"))
    assert failures == ["hazards: ValueError: no such column: organ"]
    hz = next(s for s in sections if s.id == "hazards")
    assert "could not be drawn" in hz.blocks[0].text and hz.blocks[0].kind == "warning"
    facts = next(s for s in sections if s.id == "run")
    assert any("could not be drawn" in getattr(b, "text", "") for b in facts.blocks)


def test_the_run_writes_a_complete_report(base_run):
    page = (base_run / "report.html").read_text()
    for sid in SECTION_IDS:
        assert f'<section id="{sid}">' in page, sid
    assert "could not be drawn" not in page
    manifest = json.loads((base_run / "manifest.json").read_text())
    assert manifest["report"]["failures"] == [] and manifest["report"]["path"] == "report.html"
    pngs = sorted(p.stem for p in (base_run / "figures").glob("*.png"))
    svgs = sorted(p.stem for p in (base_run / "figures").glob("*.svg"))
    assert pngs == svgs and len(pngs) == manifest["report"]["n_figures"] >= 25
    # every figure on disk is on the page
    for stem in pngs:
        assert f'id="fig-{stem}"' in page


def test_rerun_reuses_the_report_and_the_report_command_redraws_it(base_run, tmp_path, quick_config, capsys):
    out = tmp_path / "run"
    shutil.copytree(base_run, out)
    before = (out / "report.html").stat().st_mtime_ns
    assert main(["run", str(out / "input"), "--out", str(out), "--config", str(quick_config), "--quiet"]) == 0
    assert (out / "report.html").stat().st_mtime_ns == before
    assert json.loads((out / "manifest.json").read_text())["report"]["reused"] is True
    assert main(["report", str(out), "--out", str(tmp_path / "again"), "--dpi", "60"]) == 0
    assert "report:" in capsys.readouterr().out
    assert (tmp_path / "again" / "report.html").is_file()


def test_report_command_on_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a run folder" in err and "Traceback" not in err


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_the_page_renders_in_a_headless_browser(base_run, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium on this machine (Debian: apt-get install chromium); the page was not rendered")
    shot = tmp_path / "report.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars"]
    url = (base_run / "report.html").resolve().as_uri()
    dom = subprocess.run([browser, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=300)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for sid in SECTION_IDS:
        assert f'id="{sid}"' in dom.stdout
    done = subprocess.run([browser, *flags, "--window-size=1280,3000", f"--screenshot={shot}", url],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and shot.stat().st_size > 50_000, done.stderr[-2000:]
    from matplotlib.image import imread

    pixels = imread(str(shot))
    assert pixels.shape[1] == 1280
    # the page is drawn (not blank): the header band is dark, and the body has many distinct colours
    assert pixels[20, 20, :3].mean() < 0.3
    assert len(np.unique((pixels[:, :, :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 200
    shutil.copy(shot, Path(base_run).parent / "report_screenshot.png")

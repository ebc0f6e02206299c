"""Shared fixtures: small hand-made cohorts, the SDTM sample folder and one small demo run (``base_run``)."""
from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
SDTM_DIR = REPO.parent / "shared" / "data" / "sdtm_onco"

# The command line keeps compiled programs in ~/.cache/lesionatlas; the tests that call it in process must
# not write there (tests/test_cache.py turns the cache on in subprocesses, in their own folders).
os.environ["LESIONATLAS_CACHE_DIR"] = "off"


@pytest.fixture
def tiny_tables() -> dict[str, pd.DataFrame]:
    """Two patients, four lesions (2 target, 1 non-target, 1 new), as raw text tables."""
    patients = pd.DataFrame({"patient_id": ["P1", "P2"], "age": ["61", "55"], "sex": ["M", "F"]})
    lesions = pd.DataFrame(
        {
            "lesion_id": ["L1", "L2", "L3", "L4"],
            "patient_id": ["P1", "P1", "P2", "P2"],
            "kind": ["target", "nontarget", "target", "new"],
            "site": ["LIVER", "LUNG", "LYMPH NODE", "BONE"],
        }
    )
    measurements = pd.DataFrame(
        {
            "lesion_id": ["L1", "L1", "L1", "L3", "L3"],
            "day": ["-10", "42", "84", "-3", "40"],
            "diameter_mm": ["30", "22", "8", "18", "20"],
        }
    )
    assessments = pd.DataFrame(
        {"lesion_id": ["L2", "L2", "L4"], "day": ["-10", "42", "40"], "status": ["present", "PD", "new"]}
    )
    return {"patients": patients, "lesions": lesions, "measurements": measurements, "assessments": assessments}


@pytest.fixture
def tidy_dir(tmp_path: Path, tiny_tables) -> Path:
    """The tiny cohort as a folder of CSV files."""
    folder = tmp_path / "tidy"
    folder.mkdir()
    for name, frame in tiny_tables.items():
        frame.to_csv(folder / f"{name}.csv", index=False)
    return folder


# SAEM and the other stages cut down so that a run takes seconds, not minutes (compilation dominates)
QUICK = """
[run]
seed = 1

[tgi]
n_explore = 40
n_smooth = 30
n_posterior_iter = 30
n_is_draws = 0
standard_errors = false

[hazards]
candidates = ["line"]

[patterns]
k_max = 8
n_init = 3

[predictor]
cv = 2
max_iter = 30
n_repeats = 1
"""


def _shared_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.getbasetemp()
    return root.parent if root.name.startswith("popen-gw") else root


@pytest.fixture(scope="session")
def quick_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "quick.toml"
    path.write_text(QUICK)
    return path


@pytest.fixture(scope="session")
def base_run(tmp_path_factory, quick_config) -> Path:
    """`lesionatlas demo` on 200 simulated patients (seed 1) with the quick config, built once for all workers."""
    root = _shared_root(tmp_path_factory) / "pipeline_base"
    root.mkdir(exist_ok=True)
    with open(root / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        out = root / "run"
        if not (root / "done").exists():
            shutil.rmtree(out, ignore_errors=True)
            config = root / "quick.toml"
            config.write_text(QUICK)
            from lesionatlas.cli import main

            code = main(["demo", "--patients", "200", "--out", str(out), "--config", str(config),
                         "--quiet"])
            (root / "done").write_text(str(code))
        code = int((root / "done").read_text())
    assert code == 0
    return out

"""Shared fixtures: small hand-made cohorts and the SDTM sample folder."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
SDTM_DIR = REPO.parent / "shared" / "data" / "sdtm_onco"


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

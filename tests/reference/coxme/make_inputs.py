"""Write the input tables of the coxme reference fits (run from the repository root).

    .venv/bin/python tests/reference/coxme/make_inputs.py

Small: 30 patients x 4 lesions, days rounded to weeks (many ties), coxme uses dense algebra (< 50
groups). Medium: 300 patients x 6 lesions, days rounded to days, coxme's sparse algebra (>= 50 groups,
each < 2% of rows).
"""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent.parent / "hazards"))

from clustered import simulate_clustered  # noqa: E402

if __name__ == "__main__":
    simulate_clustered(30, 4, seed=11, round_to=7.0).to_csv(HERE / "small_input.csv", index=False)
    simulate_clustered(300, 6, seed=12, round_to=1.0).to_csv(HERE / "medium_input.csv", index=False)

"""`lesionatlas validate`: exit 2 listing every problem as `error [code]: ...`, exit 0 on usable data."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from lesionatlas.cli import main


def _write(folder: Path, tables: dict[str, pd.DataFrame]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        frame.to_csv(folder / f"{name}.csv", index=False)
    return folder


def _copy(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    return {k: v.copy() for k, v in tables.items()}


def test_bad_data_exits_2_listing_every_problem(tmp_path, tiny_tables, capsys):
    t = _copy(tiny_tables)
    t["measurements"].loc[0, "day"] = "baseline"
    t["measurements"].loc[3, "diameter_mm"] = "-4"
    t["lesions"].loc[1, "kind"] = "primary"
    t["lesions"].loc[3, "patient_id"] = "P9"
    t["patients"].loc[1, "age"] = "abc"  # a warning besides the errors
    folder = _write(tmp_path / "bad", t)
    assert main(["validate", str(folder)]) == 2
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error [")]
    codes = {line.split("]")[0][len("error ["):] for line in errors}
    assert codes == {"not-numeric", "negative", "unknown-kind", "unknown-id"}
    assert any(str(folder / "measurements.csv") in line and "'baseline'" in line for line in errors)
    assert "Traceback" not in captured.err + captured.out
    assert "warning: " in captured.out and "'abc'" in captured.out


def test_dirty_data_exits_0_with_warnings(tmp_path, tiny_tables, capsys):
    t = _copy(tiny_tables)
    t["measurements"] = pd.concat([t["measurements"], t["measurements"].iloc[[0]]], ignore_index=True)
    t["lesions"].loc[0, "site"] = "SPACESHIP"
    folder = _write(tmp_path / "dirty", t)
    assert main(["validate", str(folder)]) == 0
    captured = capsys.readouterr()
    assert "repeats an earlier row" in captured.out
    assert "'SPACESHIP'" in captured.out
    assert "is usable (2 warnings)" in captured.out
    assert "error" not in captured.err and "Traceback" not in captured.err


def test_good_data_exits_0(tidy_dir, capsys):
    assert main(["validate", str(tidy_dir)]) == 0
    assert "is usable (0 warnings)" in capsys.readouterr().out


def test_missing_file_empty_file_and_empty_table(tmp_path, tiny_tables, capsys):
    folder = _write(tmp_path / "d", {k: v for k, v in tiny_tables.items() if k != "measurements"})
    assert main(["validate", str(folder)]) == 2
    assert capsys.readouterr().err.startswith("error [missing-file]:")

    (folder / "measurements.csv").write_text("")
    assert main(["validate", str(folder)]) == 2
    assert capsys.readouterr().err.startswith("error [empty-file]:")

    (folder / "measurements.csv").write_text("lesion_id,day,diameter_mm\n")
    assert main(["validate", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "error [empty-table]:" in err and "header but no rows" in err
    assert "Traceback" not in err


def test_missing_required_column(tmp_path, tiny_tables, capsys):
    t = _copy(tiny_tables)
    t["lesions"] = t["lesions"].drop(columns=["kind"])
    folder = _write(tmp_path / "nokind", t)
    assert main(["validate", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "error [missing-column]:" in err and "kind" in err
    assert "Traceback" not in err

"""The command line: real commands in tmp_path, exit codes, files, no tracebacks."""
from __future__ import annotations

import subprocess
import sys

import pytest

from lesionatlas.cli import main


def test_help_is_light():
    # --help must not pull in the heavy numerical and plotting stacks
    code = (
        "import sys; from lesionatlas.cli import main; "
        "rc = main(['--help']); "
        "heavy = [m for m in ('jax', 'matplotlib', 'scipy') if m in sys.modules]; "
        "print('HEAVY', heavy); sys.exit(rc)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "HEAVY []" in res.stdout
    assert "simulate" in res.stdout and "validate" in res.stdout


def test_unknown_command_and_missing_argument_exit_2(capsys):
    assert main(["no-such-command"]) == 2
    assert main(["validate"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err


def test_validate_missing_path(capsys, tmp_path):
    assert main(["validate", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error [not-found]:")
    assert "Traceback" not in err


def test_validate_good_folder(capsys, tidy_dir):
    assert main(["validate", str(tidy_dir)]) == 0
    assert "is usable" in capsys.readouterr().out


def test_simulate_writes_cohort_and_truth(tmp_path, capsys):
    out = tmp_path / "sim"
    assert main(["simulate", "--preset", "mcrc", "--seed", "3", "--patients", "40", "--out", str(out)]) == 0
    for name in ("patients", "lesions", "measurements", "assessments"):
        assert (out / f"{name}.parquet").is_file()
    assert (out / "truth").is_dir()
    assert main(["validate", str(out)]) == 0


def test_simulate_bad_preset_is_a_clean_error(tmp_path, capsys):
    assert main(["simulate", "--preset", "nope", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error" in err
    assert not (tmp_path / "x").exists()


def test_demo_bad_config_is_a_clean_error(tmp_path, capsys):
    # the demo itself (simulate + the whole pipeline) runs end to end in tests/test_pipeline.py
    config = tmp_path / "bad.toml"
    config.write_text("[tgi]\nno_such_setting = 1\n")
    assert main(["demo", "--small", "--out", str(tmp_path / "run"), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error [config-key]:") and "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv", [["simulate", "--patients", "0", "--out", "x"]])
def test_bad_option_values(argv, capsys):
    assert main(argv) == 2

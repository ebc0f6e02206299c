"""The persistent cache of compiled programs: where it goes, when it is off, and that it changes no number."""
from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd

from lesionatlas.cache import default_cache_dir, enable_compilation_cache


def _env(**values) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "LESIONATLAS_CACHE"))}
    env.update(values)
    return env


def test_default_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("LESIONATLAS_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "lesionatlas"
    monkeypatch.setenv("LESIONATLAS_CACHE_DIR", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    for off in ("off", "0", "", "none", "False"):
        monkeypatch.setenv("LESIONATLAS_CACHE_DIR", off)
        assert default_cache_dir() is None
        assert enable_compilation_cache() is None


def test_the_users_own_jax_setting_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jaxown"))
    assert enable_compilation_cache(tmp_path / "ours") == tmp_path / "jaxown"
    assert not (tmp_path / "ours").exists()


def test_a_folder_that_cannot_be_made_turns_it_off(monkeypatch, tmp_path):
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert enable_compilation_cache(blocker / "cache") is None


_PROGRAM = """
import sys
from lesionatlas.cache import enable_compilation_cache
folder = enable_compilation_cache(sys.argv[1])
import jax, jax.numpy as jnp
jax.config.update("jax_enable_x64", True)
print(folder)
print(repr(float(jax.jit(lambda x: jnp.sum(jnp.sin(x) ** 2))(jnp.linspace(0.0, 3.0, 7)))))
"""


def test_compiled_programs_are_stored_and_reused(tmp_path):
    """Set before jax is imported (through jax's environment variables): the first process writes
    entries in a folder per jax version and host, the second adds none (it loads them) and prints the
    same number."""
    runs = [subprocess.run([sys.executable, "-c", _PROGRAM, str(tmp_path)], capture_output=True, text=True,
                           env=_env(), check=True) for _ in range(2)]
    folder, value = runs[0].stdout.split()
    assert folder.startswith(str(tmp_path / "jax-"))
    entries = sorted(os.listdir(folder))
    assert entries, "nothing was stored"
    assert runs[1].stdout.split() == [folder, value]
    assert sorted(os.listdir(folder)) == entries


_FIT = """
import sys
from lesionatlas.cli import _compilation_cache
_compilation_cache()  # what the commands run, fit-tgi and run among them
sys.path.insert(0, sys.argv[2])
from tgi_simulate import simulate
from lesionatlas.data.cohort import Cohort
from lesionatlas.tgi import TGIModel
spec = TGIModel(baseline_observation="drop", n_explore=30, n_smooth=20, n_posterior_iter=50, n_is_draws=100)
fit = spec.fit(Cohort.from_tables(*simulate(60, seed=3).tables()), seed=5)
fit.population.to_csv(sys.argv[1], index=False)
"""


def test_fit_numbers_do_not_depend_on_the_cache(tmp_path):
    """A fit in a new process with the cache on and empty (it compiles and stores), then on and filled
    (it loads): the same population table to the last digit, and jax has nothing to warn about."""
    folder = tmp_path / "cache"
    helpers = os.path.join(os.path.dirname(__file__), "tgi")
    tables = []
    for k in range(2):
        out = tmp_path / f"population{k}.csv"
        done = subprocess.run([sys.executable, "-c", _FIT, str(out), helpers],
                              env=_env(LESIONATLAS_CACHE_DIR=str(folder)), check=True, capture_output=True, text=True)
        assert "compilation cache" not in done.stderr  # jax warns there when it cannot read or write it
        if k == 0:
            stored = sorted(str(path) for path in folder.rglob("*") if path.is_file())
            assert stored, "nothing was stored"
        tables.append(pd.read_csv(out))
    assert sorted(str(path) for path in folder.rglob("*") if path.is_file()) == stored  # loaded, not recompiled
    pd.testing.assert_frame_equal(tables[0], tables[1], check_exact=True)

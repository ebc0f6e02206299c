"""Fixtures of the tgi tests: float64 in scope, never globally; a compilation cache for the session."""
from __future__ import annotations

import jax
import pytest


@pytest.fixture
def x64():
    """Run the test body with 64-bit JAX types, restoring the previous setting afterwards."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="session", autouse=True)
def _jax_compilation_cache(tmp_path_factory):
    """Share compiled SAEM programs between the xdist workers of one run (each would otherwise compile
    the same chunks, posterior, mode and importance-sampling programs again). Same numbers: only
    compilation is cached. The previous settings come back at the end of the session."""
    root = tmp_path_factory.getbasetemp()
    root = root.parent if root.name.startswith("popen-gw") else root  # one folder for all workers
    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
    old = {name: getattr(jax.config, name) for name in names}
    jax.config.update("jax_compilation_cache_dir", str(root / "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    yield
    for name, value in old.items():
        jax.config.update(name, value)

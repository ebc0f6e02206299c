"""Fixtures of the tgi tests: float64 in scope, never globally."""
from __future__ import annotations

import jax
import pytest


@pytest.fixture
def x64():
    """Run the test body with 64-bit JAX types, restoring the previous setting afterwards."""
    with jax.enable_x64(True):
        yield

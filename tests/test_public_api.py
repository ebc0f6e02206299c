"""Every public name of the top-level package resolves, lazily."""
from __future__ import annotations

import subprocess
import sys

import pytest

import lesionatlas


@pytest.mark.parametrize("name", lesionatlas.__all__)
def test_public_name_resolves(name):
    assert getattr(lesionatlas, name) is not None


def test_unknown_name():
    with pytest.raises(AttributeError):
        lesionatlas.no_such_thing  # noqa: B018


def test_import_is_light():
    code = "import sys, lesionatlas; print([m for m in ('jax', 'matplotlib', 'sklearn') if m in sys.modules])"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "[]"

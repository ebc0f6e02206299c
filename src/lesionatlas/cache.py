"""A persistent cache of compiled JAX programs, so a new process does not compile the fits again.

The growth model's SAEM, posterior sampling, conditional modes and importance sampling are compiled by
XLA on their first call in a process: at paper scale that is about 10 s of a 25 s fit on 2 CPU cores.
With the cache on, the programs compiled by one run are stored on disk and loaded by the next run with
the same array shapes (lesion counts are padded to buckets, so similar cohorts share them) and the same
jax version; the numbers are identical either way.

The command line turns it on by default (:func:`enable_compilation_cache`); the library leaves jax's
settings alone unless asked. The location is ``$LESIONATLAS_CACHE_DIR`` if set, else
``$XDG_CACHE_HOME/lesionatlas`` (``~/.cache/lesionatlas``); ``LESIONATLAS_CACHE_DIR=off`` turns it off,
and a ``JAX_COMPILATION_CACHE_DIR`` set by the user wins over both. Entries live in a subfolder per jax
version and host CPU, since an XLA:CPU executable is specific to the instruction set it was built for
(jax refuses a foreign one and compiles again; the subfolder keeps machines sharing a home folder from
overwriting each other's entries). About 1 MB per cohort shape, at most 1 GB (the least recently used
entries go first); deleting the folder is always safe.
"""
from __future__ import annotations

import hashlib
import os
import platform
import sys
from pathlib import Path

_OFF = {"", "0", "off", "no", "none", "false"}
_SETTINGS = {
    "jax_compilation_cache_dir": None,  # filled in
    # cache every program: most of ours compile in under jax's default threshold of 1 s each
    "jax_persistent_cache_min_compile_time_secs": 0.0,
    "jax_persistent_cache_min_entry_size_bytes": 0,
    # least recently used entries are evicted beyond this (bytes)
    "jax_compilation_cache_max_size": 1 << 30,
}


def _host_tag() -> str:
    """A short fingerprint of the host's instruction set (CPU model and feature flags where known)."""
    text = platform.machine() + platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith(("flags", "Features", "model name")):
                    text += line
                if line.strip() == "":  # the first processor is enough
                    break
    except OSError:
        pass
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _jax_version() -> str:
    try:
        from importlib.metadata import version

        return version("jax")
    except Exception:  # pragma: no cover - jax is a dependency
        return "unknown"


def default_cache_dir() -> Path | None:
    """Where the command line keeps its cache (None when ``LESIONATLAS_CACHE_DIR`` turns it off)."""
    setting = os.environ.get("LESIONATLAS_CACHE_DIR")
    if setting is not None:
        if setting.strip().lower() in _OFF:
            return None
        return Path(setting).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "lesionatlas"


def enable_compilation_cache(directory: str | os.PathLike | None = None) -> Path | None:
    """Store compiled JAX programs under ``directory`` (default :func:`default_cache_dir`) and reuse them.

    Returns the folder used, or None when the cache is off or the folder cannot be created (then
    everything works as before, compiling in each process). Call it before the first fit; it works
    whether or not jax has been imported (before, through jax's environment variables; after, through
    ``jax.config``). A ``JAX_COMPILATION_CACHE_DIR`` already set is left as it is and returned.
    """
    own = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    if own:
        return Path(own)
    root = Path(directory).expanduser() if directory is not None else default_cache_dir()
    if root is None:
        return None
    folder = root / f"jax-{_jax_version()}-{_host_tag()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    if not os.access(folder, os.W_OK):
        return None
    settings = dict(_SETTINGS, jax_compilation_cache_dir=str(folder))
    try:  # jax needs filelock (a dependency) to keep the size limit; without it, no limit rather than no cache
        import filelock  # noqa: F401
    except ImportError:  # pragma: no cover
        settings.pop("jax_compilation_cache_max_size")
    if "jax" in sys.modules:
        import jax

        for name, value in settings.items():
            jax.config.update(name, value)
    else:
        for name, value in settings.items():
            os.environ[name.upper()] = str(value)
    return folder


"""A small numpy simulator of TGI data for the tgi tests (independent of the package's simulator).

Lesions follow the paper's model with log-normal Kg, Kd and logit-normal F (independent, or correlated
when the truth has ``corr_kg_kd``, ``corr_kg_f``, ``corr_kd_f``), baseline scan a few days
before treatment, scans about every 6 weeks until progression (volume >= 2.2 x nadir, i.e. +30% in
diameter) or the end of the schedule, proportional error, values below the limit censored.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

TRUTH = {"kg": 0.005, "kd": 0.03, "f": 0.1, "omega_kg": 0.6, "omega_kd": 0.6, "omega_f": 1.0, "b": 0.2}


def true_volume(t, kg, kd, f, v0, t0):
    """The model's formula written out naively in numpy (fine for moderate arguments)."""
    t = np.asarray(t, dtype=float)
    before = v0 * np.exp(kg * (t - t0))
    after = v0 * np.exp(-kg * t0) * (f * np.exp(kg * t) + (1 - f) * np.exp(-kd * t))
    return np.where(t < 0, before, after)


@dataclass
class Simulated:
    t: np.ndarray
    y: np.ndarray
    lower: np.ndarray
    censored: np.ndarray
    obs_mask: np.ndarray
    v0: np.ndarray
    t0: np.ndarray
    phi: np.ndarray
    truth: dict = field(default_factory=dict)

    @property
    def n_obs(self) -> int:
        return int(self.obs_mask.sum())

    @property
    def censored_fraction(self) -> float:
        return float((self.censored & self.obs_mask).sum() / self.obs_mask.sum())

    def tables(self) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        """patients, lesions, measurements as tidy tables (baseline row included, V0 exact)."""
        n = len(self.v0)
        ids = [f"L{i:04d}" for i in range(n)]
        lesions = pd.DataFrame({"lesion_id": ids, "patient_id": [f"P{i // 2:04d}" for i in range(n)], "kind": "target"})
        patients = pd.DataFrame({"patient_id": sorted(set(lesions["patient_id"]))})
        interval = bool(np.isfinite(self.lower).any())  # then a censored row holds its interval's bounds
        rows = []
        for i in range(n):
            rows.append((ids[i], self.t0[i], self.v0[i], False, np.nan))
            for j in np.flatnonzero(self.obs_mask[i]):
                cens = bool(self.censored[i, j])
                value = self.y[i, j] if interval or not cens else 150.0
                rows.append((ids[i], self.t[i, j], value, cens, self.lower[i, j] if cens and interval else np.nan))
        measurements = pd.DataFrame(rows, columns=["lesion_id", "day", "volume_mm3", "below_limit", "lower_limit_mm3"])
        if not interval:
            measurements = measurements.drop(columns="lower_limit_mm3")
        return patients, lesions, measurements


def simulate(
    n_lesions: int = 400,
    *,
    seed: int = 0,
    truth: dict | None = None,
    limit: float = 200.0,
    interval_lower: float | None = None,
    max_scans: int = 6,
    v0_median: float = 3000.0,
    v0_log_sd: float = 1.0,
) -> Simulated:
    """Simulate ``n_lesions`` lesions; censored rows hold ``limit`` in ``y`` (Monolix style).

    With ``interval_lower`` a censored row is an interval as with a Monolix LIMIT column: ``[interval_lower,
    limit]`` where the value is at least ``interval_lower``, else ``[0, interval_lower]``.
    """
    tr = dict(TRUTH if truth is None else truth)
    rng = np.random.default_rng(seed)
    mu = np.log([tr["kg"], tr["kd"]]).tolist() + [np.log(tr["f"] / (1 - tr["f"]))]
    om = np.array([tr["omega_kg"], tr["omega_kd"], tr["omega_f"]])
    z = rng.standard_normal((n_lesions, 3))
    corr = np.eye(3)
    for (k, j), name in zip(((0, 1), (0, 2), (1, 2)), ("corr_kg_kd", "corr_kg_f", "corr_kd_f")):
        corr[k, j] = corr[j, k] = tr.get(name, 0.0)
    if not np.array_equal(corr, np.eye(3)):
        z = z @ np.linalg.cholesky(corr).T
    phi = np.array(mu) + om * z
    kg, kd, f = np.exp(phi[:, 0]), np.exp(phi[:, 1]), 1 / (1 + np.exp(-phi[:, 2]))
    t0 = -rng.integers(1, 22, n_lesions).astype(float)
    v0 = v0_median * np.exp(v0_log_sd * rng.standard_normal(n_lesions))
    t = np.zeros((n_lesions, max_scans))
    y = np.zeros((n_lesions, max_scans))
    mask = np.zeros((n_lesions, max_scans), bool)
    for i in range(n_lesions):
        day = 0.0
        nadir = v0[i]
        for j in range(max_scans):
            day += 42.0 + rng.integers(-7, 15)
            v = true_volume(day, kg[i], kd[i], f[i], v0[i], t0[i])
            obs = v * (1.0 + tr["b"] * rng.standard_normal())
            t[i, j], y[i, j], mask[i, j] = day, obs, True
            nadir = min(nadir, max(obs, limit))
            if obs > 2.2 * nadir:  # progression: scanning stops
                break
    censored = mask & (y < limit)
    if interval_lower is None:  # M3: below the limit
        lower = np.full_like(y, -np.inf)
        upper = np.full_like(y, limit)
    else:  # Monolix LIMIT: [interval_lower, limit] or, below interval_lower, [0, interval_lower]
        high = y >= interval_lower
        lower = np.where(high, interval_lower, 0.0)
        upper = np.where(high, limit, interval_lower)
    lower = np.where(censored, lower, -np.inf)
    y = np.where(censored, upper, y)
    y = np.where(mask, y, 1.0)
    return Simulated(t=t, y=y, lower=lower, censored=censored, obs_mask=mask, v0=v0, t0=t0, phi=phi, truth=tr)


def to_data(sim: Simulated, *, n_pad: int | None = None, drop_censored: bool = False):
    """Padded ``TGIData`` (float64 when called under ``jax.enable_x64``)."""
    import jax.numpy as jnp

    from lesionatlas.tgi.likelihood import TGIData

    n, m = sim.t.shape
    n_pad = n if n_pad is None else n_pad
    mask = sim.obs_mask & ~sim.censored if drop_censored else sim.obs_mask

    def pad(a, fill):
        out = np.full((n_pad, *a.shape[1:]), fill, dtype=a.dtype)
        out[:n] = a
        return out

    return TGIData(
        t=jnp.asarray(pad(sim.t, 0.0)),
        y=jnp.asarray(pad(sim.y, 1.0)),
        lower=jnp.asarray(pad(sim.lower, -np.inf)),
        censored=jnp.asarray(pad(sim.censored & mask, False)),
        obs_mask=jnp.asarray(pad(mask, False)),
        log_v0=jnp.asarray(pad(np.log(sim.v0), 0.0)),
        t0=jnp.asarray(pad(sim.t0, 0.0)),
        lesion_mask=jnp.asarray(pad(np.ones(n, bool), False)),
        design=jnp.asarray(pad(np.ones((n, 1)), 0.0)),
    )


def two_organ_tables(n_per_organ: int = 300, *, seed: int = 0, log_ratio_kg: float = float(np.log(2.0))):
    """patients, lesions, measurements of liver and lung lesions whose typical Kg differ by the factor
    ``exp(log_ratio_kg)`` (lung faster), the rest as :data:`TRUTH`; lesions carry ``organ``, patients
    ``treatment_group`` (the same split)."""
    parts = []
    for g, organ in enumerate(("liver", "lung")):
        truth = {**TRUTH, "kg": TRUTH["kg"] * float(np.exp(g * log_ratio_kg))}
        patients, lesions, measurements = simulate(n_per_organ, seed=seed * 10 + g, truth=truth).tables()
        for frame in (patients, lesions, measurements):
            for col in ("lesion_id", "patient_id"):
                if col in frame:
                    frame[col] = organ + "-" + frame[col]
        lesions["organ"] = organ
        patients["treatment_group"] = "A" if g == 0 else "B"
        parts.append((patients, lesions, measurements))
    return tuple(pd.concat([p[i] for p in parts], ignore_index=True) for i in range(3))

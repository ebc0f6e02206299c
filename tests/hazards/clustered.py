"""Simulated clustered survival data for the hazards tests (Weibull baseline, Gaussian frailty)."""
from __future__ import annotations

import numpy as np
import pandas as pd

ORGAN_EFFECTS = {"abdominal": 0.0, "liver": 0.5, "lung": -0.4, "bone": 0.3}


def simulate_clustered(n_groups: int, per_group: int, *, sigma2: float = 0.5, seed: int = 0,
                       beta_age: float = 0.3, beta_treat: float = -0.5, shape: float = 1.5,
                       scale: float = 100.0, censor_rate: float = 0.004, round_to: float | None = None
                       ) -> pd.DataFrame:
    """One row per lesion: ``patient_id, organ, age_z, treated, day, event`` (truth in the arguments)."""
    rng = np.random.default_rng([seed, 6])
    n = n_groups * per_group
    group = np.repeat(np.arange(n_groups), per_group)
    b = rng.normal(0.0, np.sqrt(sigma2), n_groups)
    age = rng.normal(size=n_groups)[group]
    treated = (rng.random(n_groups) < 0.5).astype(float)[group]
    organs = np.array(list(ORGAN_EFFECTS))
    organ = organs[rng.integers(0, organs.size, n)]
    eta = beta_age * age + beta_treat * treated + np.array([ORGAN_EFFECTS[o] for o in organ]) + b[group]
    # Weibull: S(t) = exp(-(t/scale)^shape exp(eta))
    t_event = scale * (rng.exponential(size=n) * np.exp(-eta)) ** (1.0 / shape)
    t_censor = rng.exponential(1.0 / censor_rate, size=n)
    day = np.minimum(t_event, t_censor)
    if round_to:
        day = np.maximum(np.ceil(day / round_to) * round_to, round_to)
    return pd.DataFrame({"patient_id": [f"P{g:04d}" for g in group], "organ": organ, "age_z": age,
                         "treated": treated, "day": day, "event": (t_event <= t_censor).astype(int)})

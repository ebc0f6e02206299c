"""The shell of the tumor growth model: a Cohort in, padded arrays to the SAEM core, a ``TGIFit`` out."""
from __future__ import annotations

import json
import math
import platform
import time
import warnings
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..config import DEFAULT_LIMIT_MM3
from ..errors import ConfigError, ConvergenceWarning, DataError, ExclusionWarning
from ..io import atomic_dir, write_json, write_table
from . import saem
from .covariates import CovariateDesign, build_design
from .likelihood import ERROR_MODELS, TGIData, lesion_loglik, prepare_data
from .model import PARAMETERS, log_volume_phi
from .spec import TGIModel

_STAGE = "tgi"
_MIN_LESION_BUCKET = 256
_OBS_BUCKET = 8
# above this many lesions the bucket is a multiple of _LARGE_LESION_STEP (padding < 25%, shrinking with n)
_LARGE_LESION_BUCKET = 4096
_LARGE_LESION_STEP = 1024
# cost of a continuation row beyond its cells (gathering its lesion's parameters, adding its sum back),
# in cells; see row_width
_ROW_OVERHEAD = 4


# ----------------------------------------------------------------------------- checks
def _check_spec(spec: TGIModel) -> None:
    def allowed(name: str, value: Any, options: tuple[Any, ...]) -> None:
        if value not in options:
            raise ConfigError(f"TGIModel.{name} must be one of {', '.join(map(repr, options))}, got {value!r}")

    def positive(name: str, *, integer: bool = False, zero: bool = False) -> None:
        value = getattr(spec, name)
        ok = isinstance(value, int) and not isinstance(value, bool) if integer else isinstance(value, (int, float))
        if not ok or not (value >= 0 if zero else value > 0):
            kind = "an integer" if integer else "a number"
            raise ConfigError(f"TGIModel.{name} must be {kind} {'>= 0' if zero else '> 0'}, got {value!r}")

    allowed("error_model", spec.error_model, ERROR_MODELS)
    allowed("censoring", spec.censoring, ("m3", "drop"))
    allowed("covariance", spec.covariance, ("diagonal", "full"))
    allowed("baseline_observation", spec.baseline_observation, ("keep", "drop"))
    allowed("precision", spec.precision, ("float64", "float32"))
    for name in ("kg", "kd", "omega_kg", "omega_kd", "omega_f", "a", "b", "max_relative_residual", "stop_tolerance",
                 "is_inflate"):
        positive(name)
    if not 0 < spec.f < 1:
        raise ConfigError(f"TGIModel.f must be in (0, 1), got {spec.f!r}")
    if not 0 <= spec.is_defensive < 1:
        raise ConfigError(f"TGIModel.is_defensive must be in [0, 1), got {spec.is_defensive!r}")
    if not 0 < spec.annealing_factor <= 1:
        raise ConfigError(f"TGIModel.annealing_factor must be in (0, 1], got {spec.annealing_factor!r}")
    for name in ("n_explore", "n_smooth", "chunk_size", "n_posterior_iter"):
        positive(name, integer=True)
    for name in ("n_burn_in", "n_prior_kernel", "n_component_kernel", "n_joint_kernel", "n_independent_kernel",
                 "n_is_draws", "n_mode_steps", "min_explore"):
        positive(name, integer=True, zero=True)
    if spec.n_chains != "auto":
        positive("n_chains", integer=True)
    if spec.limit_mm3 is not None and not spec.limit_mm3 > 0:
        raise ConfigError(f"TGIModel.limit_mm3 must be > 0 or None, got {spec.limit_mm3!r}")


# ----------------------------------------------------------------------------- arrays
@dataclass(frozen=True)
class LesionArrays:
    """Padded numpy arrays of the target lesions and their lesion ids (real lesions first)."""

    lesion_id: np.ndarray
    t: np.ndarray
    y: np.ndarray
    lower: np.ndarray
    censored: np.ndarray
    obs_mask: np.ndarray
    v0: np.ndarray
    t0: np.ndarray
    n_lesions: int

    @property
    def n_obs(self) -> int:
        return int(self.obs_mask[: self.n_lesions].sum())

    def to_data(self, dtype: Any, *, width: int | None = None, design: np.ndarray | None = None) -> TGIData:
        r"""Device arrays, folded into rows of ``width`` observations (default :func:`row_width`), with
        :math:`\log |y|` and the index of the censored cells (see :func:`~.likelihood.prepare_data`).

        Row ``i`` holds the first ``width`` observations of lesion ``i``; the rest of a longer lesion
        goes to continuation rows after the ``N`` first rows (``TGIData.row_lesion``), padded to
        :func:`lesion_bucket` rows. ``design`` (n_lesions, P): the covariate design of the real lesions
        (default: the intercept only); padding lesions get rows of zeros.
        """
        n_pad = len(self.v0)
        lesion_mask = np.arange(n_pad) < self.n_lesions
        counts = self.obs_mask.sum(axis=1)
        width = row_width(counts, n_pad) if width is None else int(width)
        lesion, col = np.nonzero(self.obs_mask)
        rank = (np.cumsum(self.obs_mask, axis=1) - 1)[lesion, col]  # position among the lesion's observations
        n_rows = -(-counts // width)
        n_extra = np.maximum(n_rows - 1, 0)
        extra = int(n_extra.sum())
        extra_pad = lesion_bucket(extra) if extra else 0
        start = n_pad + np.concatenate([[0], np.cumsum(n_extra)[:-1]])  # first continuation row of each lesion
        q, c = rank // width, rank % width
        row = np.where(q == 0, lesion, start[lesion] + q - 1)
        shape = (n_pad + extra_pad, width)
        t, y = np.zeros(shape), np.ones(shape)
        lower = np.full(shape, -np.inf)
        cens, mask = np.zeros(shape, bool), np.zeros(shape, bool)
        t[row, c] = self.t[lesion, col]
        y[row, c] = self.y[lesion, col]
        lower[row, c] = self.lower[lesion, col]
        cens[row, c] = self.censored[lesion, col]
        mask[row, c] = True
        x = np.zeros((n_pad, 1 if design is None else np.shape(design)[1]))
        x[: self.n_lesions] = 1.0 if design is None else design
        row_lesion = None
        if extra_pad:
            row_lesion = np.zeros(extra_pad, np.int32)
            row_lesion[:extra] = np.repeat(np.arange(n_pad), n_extra)
        data = TGIData(
            t=jnp.asarray(t, dtype),
            y=jnp.asarray(y, dtype),
            lower=jnp.asarray(lower, dtype),
            censored=jnp.asarray(cens),
            obs_mask=jnp.asarray(mask),
            log_v0=jnp.asarray(np.log(self.v0), dtype),
            t0=jnp.asarray(self.t0, dtype),
            lesion_mask=jnp.asarray(lesion_mask),
            design=jnp.asarray(x, dtype),
            row_lesion=None if row_lesion is None else jnp.asarray(row_lesion),
        )
        return prepare_data(data)


def lesion_bucket(n: int) -> int:
    """Padded lesion count: up to 4,096 lesions the smallest 2^k or 1.5 * 2^k >= n (at least 256): <= 33%
    padding, few shapes; above, the smallest multiple of 1,024 >= n (< 25% padding, 1.4% at 19,180)."""
    if n > _LARGE_LESION_BUCKET:
        return -(-n // _LARGE_LESION_STEP) * _LARGE_LESION_STEP
    size = _MIN_LESION_BUCKET
    while True:
        if size >= n:
            return size
        if size * 3 // 2 >= n:
            return size * 3 // 2
        size *= 2


def row_width(counts: np.ndarray, n_pad: int) -> int:
    """Observations per row of the device arrays: the width ``w`` that minimises the cells evaluated,
    ``n_pad * w + E * (w + 4)`` with ``E`` the continuation rows (padded, see :func:`lesion_bucket`) that
    lesions with more than ``w`` observations need (4: a row's own overhead, in cells).

    Real data have a long tail of observation counts (median 4 per target lesion in the paper, up to
    29): padding every lesion to the longest multiplied the work several times over.
    """
    counts = np.asarray(counts)
    best = (math.inf, 1)
    for w in range(1, max(int(counts.max(initial=0)), 1) + 1):
        extra = int(np.maximum(-(-counts // w) - 1, 0).sum())
        cost = n_pad * w + (lesion_bucket(extra) * (w + _ROW_OVERHEAD) if extra else 0)
        if cost < best[0]:
            best = (cost, w)
    return best[1]


def observation_bucket(m: int) -> int:
    """Padded observations per lesion: a multiple of 8."""
    return max(_OBS_BUCKET, -(-m // _OBS_BUCKET) * _OBS_BUCKET)


def build_arrays(data: Any, spec: TGIModel) -> tuple[LesionArrays, dict[str, Any]]:
    """Target-lesion measurements of a Cohort (or a measurements table) as padded arrays.

    - V0/T0: ``lesions.baseline_volume_mm3`` / ``baseline_day`` where both are given, else the first
      measurement of the lesion (its volume and day); when that first row is censored, V0 is its upper
      bound (the limit), as a Monolix dataset would carry it.
    - A censored row's upper bound is its ``volume_mm3`` when the data come from a Monolix file or the
      row has a ``lower_limit_mm3`` (Monolix: DV holds the limit), else the limit (``spec.limit_mm3`` or
      the cohort's). Its lower bound is ``lower_limit_mm3`` when given (interval), else -inf (M3).
    """
    meta: dict[str, Any] = {}
    lesions: pd.DataFrame | None = None
    if isinstance(data, pd.DataFrame):
        measurements = data
    elif hasattr(data, "measurements") and hasattr(data, "lesions"):
        measurements, lesions, meta = data.measurements, data.lesions, dict(getattr(data, "meta", {}))
    else:
        raise DataError(
            f"TGIModel.fit needs a Cohort or a measurements DataFrame, got {type(data).__name__}", code="tgi-input"
        )
    need = {"lesion_id", "day", "volume_mm3"}
    missing = need - set(measurements.columns)
    if missing:
        raise DataError(
            f"measurements: column(s) {', '.join(sorted(missing))} missing; the tumor growth model needs "
            "lesion_id, day, volume_mm3 (and below_limit for censored rows)",
            code="missing-column",
        )
    notes: dict[str, Any] = {}
    limit = float(spec.limit_mm3 if spec.limit_mm3 is not None else meta.get("limit_mm3", DEFAULT_LIMIT_MM3))
    monolix = meta.get("format") == "monolix"
    m = pd.DataFrame(
        {
            "lesion_id": measurements["lesion_id"].astype("string"),
            "day": pd.to_numeric(measurements["day"], errors="coerce").astype(float),
            "volume": pd.to_numeric(measurements["volume_mm3"], errors="coerce").astype(float),
            "censored": (
                measurements["below_limit"].astype("boolean").fillna(False).astype(bool)
                if "below_limit" in measurements
                else False
            ),
            "lower": (
                pd.to_numeric(measurements["lower_limit_mm3"], errors="coerce").astype(float)
                if "lower_limit_mm3" in measurements
                else np.nan
            ),
        }
    )
    if lesions is not None:
        targets = lesions.loc[lesions["kind"] == "target", "lesion_id"].astype("string")
        m = m[m["lesion_id"].isin(targets)]
    m = m[m["day"].notna() & (m["volume"].notna() | m["censored"])]
    if m.empty:
        raise DataError("measurements: no target-lesion measurement with a day and a volume", code="tgi-no-data")
    upper_from_dv = m["censored"] & m["volume"].notna() & (monolix | m["lower"].notna())
    m["y"] = np.where(m["censored"], np.where(upper_from_dv, m["volume"], limit), m["volume"])
    m["lower"] = np.where(m["censored"] & m["lower"].notna(), m["lower"], -np.inf)
    m = m.sort_values(["lesion_id", "day"], kind="stable")
    first = m.groupby("lesion_id", sort=True).first()
    base = pd.DataFrame({"v0": first["y"], "t0": first["day"]})
    if lesions is not None and {"baseline_volume_mm3", "baseline_day"} <= set(lesions.columns):
        reg = lesions.set_index(lesions["lesion_id"].astype("string"))[["baseline_volume_mm3", "baseline_day"]]
        reg = reg.reindex(base.index)
        given = reg["baseline_volume_mm3"].notna() & reg["baseline_day"].notna()
        base.loc[given, "v0"] = reg.loc[given, "baseline_volume_mm3"].astype(float)
        base.loc[given, "t0"] = reg.loc[given, "baseline_day"].astype(float)
        notes["n_baseline_from_regressors"] = int(given.sum())
    bad_v0 = ~(base["v0"] > 0)
    if spec.baseline_observation == "drop":
        t0_row = m["lesion_id"].map(base["t0"])
        m = m[m["day"] > t0_row]
    if spec.censoring == "drop":
        notes["n_censored_dropped"] = int(m["censored"].sum())
        m = m[~m["censored"]]
    counts = m.groupby("lesion_id").size().reindex(base.index, fill_value=0)
    drop = bad_v0 | (counts == 0)
    if drop.any():
        ids = list(base.index[drop][:5])
        warnings.warn(
            f"tgi: {int(drop.sum())} target lesion(s) left out ({', '.join(map(str, ids))}"
            f"{', ...' if drop.sum() > 5 else ''}): no usable observation or a baseline volume <= 0",
            ExclusionWarning,
            stacklevel=3,
        )
        base = base[~drop]
        m = m[m["lesion_id"].isin(base.index)]
    if base.empty:
        raise DataError("measurements: no target lesion has a usable observation", code="tgi-no-data")
    notes["n_first_censored"] = int(first.loc[base.index, "censored"].sum())
    notes["n_baseline_after_day0"] = int((base["t0"] > 0).sum())
    n = len(base)
    pos = m.groupby("lesion_id", sort=True).cumcount().to_numpy()
    row = pd.Index(base.index).get_indexer(m["lesion_id"])
    n_pad, m_pad = lesion_bucket(n), observation_bucket(int(pos.max()) + 1)
    t = np.zeros((n_pad, m_pad))
    y = np.ones((n_pad, m_pad))
    lower = np.full((n_pad, m_pad), -np.inf)
    cens = np.zeros((n_pad, m_pad), bool)
    mask = np.zeros((n_pad, m_pad), bool)
    t[row, pos] = m["day"].to_numpy()
    y[row, pos] = m["y"].to_numpy()
    lower[row, pos] = m["lower"].to_numpy()
    cens[row, pos] = m["censored"].to_numpy()
    mask[row, pos] = True
    v0 = np.ones(n_pad)
    t0 = np.zeros(n_pad)
    v0[:n] = base["v0"].to_numpy()
    t0[:n] = base["t0"].to_numpy()
    arrays = LesionArrays(
        lesion_id=np.asarray(base.index.astype(str)),
        t=t, y=y, lower=lower, censored=cens, obs_mask=mask, v0=v0, t0=t0, n_lesions=n,
    )
    notes["limit_mm3"] = limit
    return arrays, notes


# ----------------------------------------------------------------------------- result
_POP_COLUMNS = ["parameter", "estimate", "se", "rse_percent", "se_mc", "ci_lower", "ci_upper"]


@dataclass(frozen=True, eq=False)
class TGIFit:
    """A fitted tumor growth model.

    Attributes
    ----------
    spec : TGIModel
    seed : int
    population : DataFrame
        ``parameter, estimate, se, rse_percent, se_mc, ci_lower, ci_upper``; rows ``kg_pop, kd_pop,
        f_pop, omega_kg, omega_kd, omega_f`` and the error parameters (``b``; ``a``; or both), as Monolix
        names them. ``se`` from Louis' formula (stochastic approximation of the Fisher information, with
        the upward bias of its E[g]E[g]^T term removed by batch means) on the normal scale, carried to
        the natural scale by the delta method. ``se_mc`` is the Monte-Carlo error of the SAEM estimate
        itself (the spread a rerun with another seed would show), propagated through the smoothing
        phase's 1/k steps. The CIs use both, sqrt(se^2 + se_mc^2); for the typical values they are the
        normal-scale CIs transformed.
    individual : DataFrame
        One row per lesion: ``lesion_id, v0_mm3, t0_day, n_obs``, the conditional mode (``kg, kd, f``),
        the conditional mean (``kg_mean, kd_mean, f_mean``, from the MCMC draws; see Notes), their
        conditional SDs on the normal scale
        (``sd_log_kg, sd_log_kd, sd_logit_f``) and the random effects of the mode (``eta_kg, eta_kd, eta_f``).
    trace : DataFrame
        SAEM trajectories: ``iteration, gamma, kg_pop, ..., b, acceptance_prior, acceptance_component,
        acceptance_joint, acceptance_independent, n_clipped, complete_loglik``.
    loglik : float or None
        Log-likelihood by importance sampling, bias-corrected (None when ``n_is_draws = 0``; the
        correction is ``diagnostics["is_bias_correction"]``, its Monte-Carlo SE ``is_relative_se``).
    diagnostics : dict
        Counts, shrinkage, flags and warnings raised; ``seconds`` (the whole fit) and ``phase_seconds``
        (wall clock of ``arrays``, ``prepare``, ``saem``, ``posterior``, ``mode``,
        ``importance_sampling``, ``tables``; compilation included where it was waited for).
    observations : DataFrame
        The rows the model was fitted to: ``lesion_id, day, volume_mm3`` (for a censored row, the upper
        bound of its interval), ``below_limit``, ``lower_limit_mm3`` (NaN for plain M3 and observed
        rows); the input of the goodness-of-fit diagnostics (:mod:`lesionatlas.tgi.diagnostics`).

    Notes
    -----
    ``kg_mean`` etc. are the transformed conditional means of the normal-scale parameters
    (``exp(E[log kg | y])``), Monolix's "conditional mean" of the individual parameters on the normal
    scale.
    """

    spec: TGIModel
    seed: int
    population: pd.DataFrame
    individual: pd.DataFrame
    trace: pd.DataFrame
    loglik: float | None
    n_lesions: int
    n_obs: int
    diagnostics: dict[str, Any] = field(default_factory=dict)
    observations: pd.DataFrame | None = None
    # simulations, residuals and VPC tables computed on first use (see lesionatlas.tgi.diagnostics)
    _cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    # ------------------------------------------------------------------ numbers
    @property
    def n_parameters(self) -> int:
        return len(self.population)

    @property
    def aic(self) -> float | None:
        return None if self.loglik is None else -2.0 * self.loglik + 2.0 * self.n_parameters

    @property
    def bic(self) -> float | None:
        """Monolix's BIC: -2LL + P log(number of subjects = lesions)."""
        return None if self.loglik is None else -2.0 * self.loglik + self.n_parameters * math.log(self.n_lesions)

    def summary(self) -> pd.DataFrame:
        """Population estimates plus ``-2LL``, ``AIC``, ``BIC`` rows (stable columns)."""
        extra = pd.DataFrame(
            {
                "parameter": ["minus_2_loglik", "aic", "bic"],
                "estimate": [
                    np.nan if self.loglik is None else -2.0 * self.loglik,
                    np.nan if self.aic is None else self.aic,
                    np.nan if self.bic is None else self.bic,
                ],
            }
        )
        return pd.concat([self.population, extra], ignore_index=True)[_POP_COLUMNS]

    def predict(self, days: Any, *, lesion_ids: Any = None, kind: str = "mode") -> pd.DataFrame:
        """Predicted volumes (mm3) of each lesion at ``days``: ``lesion_id, day, volume_mm3``.

        ``kind``: ``"mode"`` (conditional mode), ``"mean"`` (conditional mean) or ``"population"``
        (each lesion's typical values, given its covariates, with its V0/T0).
        """
        if kind not in ("mode", "mean", "population"):
            raise ConfigError(f"kind must be 'mode', 'mean' or 'population', got {kind!r}")
        ind = self.individual
        rows = np.arange(len(ind))
        if lesion_ids is not None:
            rows = pd.Index(ind["lesion_id"].astype(str)).get_indexer([str(i) for i in lesion_ids])
            if (rows < 0).any():
                raise ConfigError(f"lesion_ids: {np.asarray(list(lesion_ids), object)[rows < 0][:5].tolist()} not fitted")
            ind = ind.iloc[rows].reset_index(drop=True)
        if kind == "population":
            phi = self.typical_phi()[rows]
        else:
            suffix = "" if kind == "mode" else "_mean"
            kg, kd, f = (np.asarray(ind[f"{name}{suffix}"], float) for name in PARAMETERS)
            phi = np.stack([np.log(kg), np.log(kd), np.log(f) - np.log1p(-f)], axis=-1)
        days = np.atleast_1d(np.asarray(days, dtype=float))
        with jax.enable_x64(True):
            lv = log_volume_phi(
                jnp.asarray(days)[None, :],
                jnp.asarray(phi)[:, None, :],
                jnp.log(jnp.asarray(ind["v0_mm3"].to_numpy(float)))[:, None],
                jnp.asarray(ind["t0_day"].to_numpy(float))[:, None],
            )
            vol = np.exp(np.asarray(lv))
        return pd.DataFrame(
            {
                "lesion_id": np.repeat(ind["lesion_id"].to_numpy(), len(days)),
                "day": np.tile(days, len(ind)),
                "volume_mm3": vol.reshape(-1),
            }
        )

    def typical_phi(self) -> np.ndarray:
        """Each lesion's typical normal-scale parameters (n, 3): ``(log kg, log kd, logit f)`` of the
        population model given its covariates (without covariates, the typical values for every
        lesion); the conditional mode minus its random effects."""
        pop = self.population.set_index("parameter")["estimate"]
        f_pop = float(pop["f_pop"])
        mu = np.array([math.log(pop["kg_pop"]), math.log(pop["kd_pop"]), math.log(f_pop / (1 - f_pop))])
        ind = self.individual
        if not self.population["parameter"].str.startswith("beta_").any():
            return np.broadcast_to(mu, (len(ind), 3)).copy()
        f = ind["f"].to_numpy(float)
        mode = np.stack([np.log(ind["kg"].to_numpy(float)), np.log(ind["kd"].to_numpy(float)),
                         np.log(f) - np.log1p(-f)], axis=-1)
        return mode - ind[["eta_kg", "eta_kd", "eta_f"]].to_numpy(float)

    def __repr__(self) -> str:
        est = self.population.set_index("parameter")["estimate"]
        body = ", ".join(f"{k}={v:.4g}" for k, v in est.items())
        ll = "" if self.loglik is None else f", -2LL={-2 * self.loglik:.1f}"
        return f"TGIFit({self.n_lesions} lesions, {self.n_obs} observations: {body}{ll})"

    def _repr_html_(self) -> str:
        return f"<p>{self!r}</p>" + self.summary().to_html(index=False)

    # ------------------------------------------------------------------ files
    def to_dir(self, path: str | Path) -> Path:
        """Write ``population``, ``individual``, ``trace`` (Parquet + CSV) and ``meta.json``."""
        import lesionatlas

        path = Path(path)
        with atomic_dir(path) as tmp:
            write_table(self.population, tmp, "population")
            write_table(self.individual, tmp, "individual")
            write_table(self.trace, tmp, "trace")
            if self.observations is not None:
                write_table(self.observations, tmp, "observations")
            write_json(
                tmp / "meta.json",
                {
                    "schema": "lesionatlas.tgi/1",
                    "spec": asdict(self.spec),
                    "seed": self.seed,
                    "loglik": self.loglik,
                    "n_lesions": self.n_lesions,
                    "n_obs": self.n_obs,
                    "diagnostics": self.diagnostics,
                    "versions": {
                        "lesionatlas": lesionatlas.__version__,
                        "jax": jax.__version__,
                        "numpy": np.__version__,
                        "python": platform.python_version(),
                    },
                },
            )
        return path

    @classmethod
    def from_dir(cls, path: str | Path) -> TGIFit:
        """Read a folder written by :meth:`to_dir`."""
        path = Path(path)
        meta = json.loads((path / "meta.json").read_text())
        # a fit written before a setting existed was made as that setting's value then was
        spec = {**_SETTINGS_BEFORE_THEY_EXISTED, **meta["spec"]}
        return cls(
            spec=TGIModel(**spec),
            seed=int(meta["seed"]),
            population=pd.read_parquet(path / "population.parquet"),
            individual=pd.read_parquet(path / "individual.parquet"),
            trace=pd.read_parquet(path / "trace.parquet"),
            loglik=meta["loglik"],
            n_lesions=int(meta["n_lesions"]),
            n_obs=int(meta["n_obs"]),
            diagnostics=meta["diagnostics"],
            observations=(
                pd.read_parquet(path / "observations.parquet") if (path / "observations.parquet").exists() else None
            ),
        )

    def equals(self, other: TGIFit) -> bool:
        """Same spec, seed, tables and numbers."""
        return (
            self.spec == other.spec
            and self.seed == other.seed
            and self.population.equals(other.population)
            and self.individual.equals(other.individual)
            and self.trace.equals(other.trace)
            and self.loglik == other.loglik
            and (
                (self.observations is None and other.observations is None)
                or (
                    self.observations is not None
                    and other.observations is not None
                    and self.observations.equals(other.observations)
                )
            )
        )

    # ------------------------------------------------------------------ diagnostics
    def residuals(self, *, n_simulations: int = 200, seed: int = 0) -> pd.DataFrame:
        """Per-observation predictions, IWRES and NPDE; see :func:`lesionatlas.tgi.diagnostics.residual_table`."""
        from .diagnostics import residual_table

        return residual_table(self, n_simulations=n_simulations, seed=seed)

    def vpc(self, *, n_simulations: int = 200, n_bins: int = 8, seed: int = 0, conditional: bool = False) -> Any:
        """Visual predictive check as data (``conditional``: each observation simulated given the lesion's
        earlier ones); see :func:`lesionatlas.tgi.diagnostics.vpc_table`."""
        from .diagnostics import vpc_table

        return vpc_table(self, n_simulations=n_simulations, n_bins=n_bins, seed=seed, conditional=conditional)

    def plot_observed_vs_predicted(self, ax: Any = None, *, kind: str = "individual") -> Any:
        """Observed vs individual (``kind="individual"``) or population predictions; returns the Axes."""
        from .diagnostics import plot_observed_vs_predicted

        return plot_observed_vs_predicted(self, ax=ax, kind=kind)

    def plot_residuals(self, ax: Any = None, *, x: str = "day", kind: str = "iwres") -> Any:
        """IWRES or NPDE (``kind``) against ``x`` = ``"day"`` or ``"prediction"``; returns the Axes."""
        from .diagnostics import plot_residuals

        return plot_residuals(self, ax=ax, x=x, kind=kind)

    def plot_vpc(self, ax: Any = None, *, conditional: bool = False) -> Any:
        """VPC: observed 10/50/90th percentiles over the simulated ones' prediction intervals (Axes);
        ``conditional``: the conditional VPC."""
        from .diagnostics import plot_vpc

        return plot_vpc(self, ax=ax, conditional=conditional)

    def plot_vpc_censored(self, ax: Any = None) -> Any:
        """VPC of the proportion of observations below the limit per time bin (Axes)."""
        from .diagnostics import plot_vpc_censored

        return plot_vpc_censored(self, ax=ax)

    def plot_trace(self) -> Any:
        """SAEM trajectories of every population parameter; returns the Figure."""
        from .diagnostics import plot_trace

        return plot_trace(self)

    def plot_individual_fits(self, *, n: int = 12, seed: int = 0, lesion_ids: Any = None) -> Any:
        """Observations and fitted curves of a sample of lesions; returns the Figure."""
        from .diagnostics import plot_individual_fits

        return plot_individual_fits(self, n=n, seed=seed, lesion_ids=lesion_ids)

    def write_diagnostics(self, folder: str | Path) -> list[Path]:
        """Write every diagnostic plot as a PNG into ``folder``; returns the paths."""
        from .diagnostics import write_diagnostics

        return write_diagnostics(self, folder)


# ----------------------------------------------------------------------------- the fit
#: The value each later-added TGIModel setting had, in effect, in fits written before it existed.
_SETTINGS_BEFORE_THEY_EXISTED: dict[str, Any] = {"is_inflate": 1.0}


def _stage_key(seed: int) -> jax.Array:
    return jax.random.fold_in(jax.random.key(seed), zlib.crc32(_STAGE.encode()) & 0x7FFFFFFF)


_CORR_NAMES = ("corr_kg_kd", "corr_kg_f", "corr_kd_f")  # saem._OFF, Monolix's naming


def _error_names(error_model: str) -> list[tuple[str, int]]:
    return {"proportional": [("b", 1)], "constant": [("a", 0)], "combined": [("a", 0), ("b", 1)]}[error_model]


def _population_table(
    coef: np.ndarray,
    omega2: np.ndarray,
    error: np.ndarray,
    cov: np.ndarray | None,
    error_model: str,
    design: CovariateDesign | None = None,
    corr: np.ndarray | None = None,
    cov_mc: np.ndarray | None = None,
) -> pd.DataFrame:
    """Rows in Monolix's order: typical values, covariate coefficients (normal scale), omegas,
    correlations (full covariance only), error. ``se`` from ``cov`` (the data's Fisher information),
    ``se_mc`` from ``cov_mc`` (the Monte-Carlo error of the SAEM estimate), the CIs from their sum."""
    mu = coef[0]
    omega = np.sqrt(omega2)
    n_corr = 0 if corr is None else len(_CORR_NAMES)
    n_theta = coef.size + 3 + n_corr + 2

    def sd_of(c: np.ndarray | None) -> np.ndarray:
        return np.full(n_theta, np.nan) if c is None else np.sqrt(np.clip(np.diag(c), 0, None))

    se_theta, mc_theta = sd_of(cov), sd_of(cov_mc)
    # the CI covers the truth with the error of the estimate as computed: statistical + Monte-Carlo
    ci_theta = np.where(np.isfinite(mc_theta), np.sqrt(se_theta**2 + mc_theta**2), se_theta)
    z = 1.959963984540054
    rows = []
    for k, name in enumerate(PARAMETERS):
        s, m, c = se_theta[k], mc_theta[k], ci_theta[k]
        if name == "f":
            est = 1.0 / (1.0 + math.exp(-mu[k]))
            scale = est * (1 - est)
            lo, hi = (1.0 / (1.0 + math.exp(-(mu[k] - z * c))), 1.0 / (1.0 + math.exp(-(mu[k] + z * c))))
        else:
            est = math.exp(mu[k])
            scale = est
            lo, hi = math.exp(mu[k] - z * c), math.exp(mu[k] + z * c)
        rows.append((f"{name}_pop", est, scale * s, scale * m, lo, hi))
    linear = [(name, coef[j, k], j * 3 + k) for j, k, name in ([] if design is None else design.coefficient_names)]
    linear += [(f"omega_{name}", omega[k], coef.size + k) for k, name in enumerate(PARAMETERS)]
    for name, est, i in linear:
        rows.append((name, est, se_theta[i], mc_theta[i], est - z * ci_theta[i], est + z * ci_theta[i]))
    for m, name in enumerate(_CORR_NAMES[:n_corr]):
        i = coef.size + 3 + m
        r = float(corr[m])
        rows.append((name, r, se_theta[i], mc_theta[i], max(-1.0, r - z * ci_theta[i]), min(1.0, r + z * ci_theta[i])))
    for name, j in _error_names(error_model):
        i = coef.size + 3 + n_corr + j
        rows.append((name, error[j], se_theta[i], mc_theta[i], error[j] - z * ci_theta[i], error[j] + z * ci_theta[i]))
    out = pd.DataFrame(rows, columns=["parameter", "estimate", "se", "se_mc", "ci_lower", "ci_upper"])
    out["rse_percent"] = 100.0 * out["se"] / out["estimate"].abs()
    return out[_POP_COLUMNS]


def _mc_recursion(
    i_obs: np.ndarray, i_c: np.ndarray, v: np.ndarray, gamma: np.ndarray, theta_trace: np.ndarray
) -> np.ndarray:
    """Monte-Carlo covariance of the SAEM estimate: the spread of the exploratory phase's end, carried
    through the smoothing phase by the recursion SAEM's error follows near its limit.

    Linearised about the fixed point, a smoothing iteration moves the estimate's error ``d`` by
    ``gamma_k (-G d + eta_k)``: ``G = I_c^-1 I_obs`` (the complete-data information ``I_c`` is what the
    M-step sees, the observed information ``I_obs`` what remains once the draws follow the estimate;
    ``I - G`` is EM's rate matrix) and ``eta_k`` the M-step's response ``I_c^-1`` to the noise of the
    draws' complete-data score, with long-run covariance ``Q = I_c^-1 v I_c^-1``. So
    ``P <- (I - gamma_k G) P (I - gamma_k G)^T + gamma_k^2 Q`` over the smoothing phase's step sizes
    (``gamma`` < 1), from ``P`` = the covariance of ``theta_trace`` (iterations x parameters) over the
    second half of the exploratory phase (``gamma`` = 1): there the step is too fast for the draws to
    follow the estimate, so that spread is measured, not modelled. With ``gamma_k = 1 / k`` the result
    is about ``Q / (K (2 lambda - 1))`` for an eigenvalue ``lambda`` of ``G`` above 1/2 but decays only
    like ``K^(-2 lambda)`` below it: there more smoothing iterations barely help and more chains do.
    """
    g = np.linalg.solve(i_c, i_obs)
    q = np.linalg.solve(i_c, np.linalg.solve(i_c, v).T)
    q = (q + q.T) / 2
    explore = np.flatnonzero(gamma == 1.0)
    tail = theta_trace[explore[len(explore) // 2 :]]
    p = np.cov(tail, rowvar=False).reshape(len(g), len(g)) if len(tail) > 2 else np.zeros_like(q)
    eye = np.eye(len(g))
    for step in gamma[(gamma > 0.0) & (gamma < 1.0)]:
        a = eye - step * g
        p = a @ p @ a.T + step * step * q
    return (p + p.T) / 2


def _covariances(
    fim: np.ndarray, complete: np.ndarray, lrv: np.ndarray, free: list[int], n_posterior_iter: int,
    gamma: np.ndarray, theta_trace: np.ndarray,
) -> tuple[np.ndarray, np.ndarray | None, bool, bool]:
    """Covariance of the estimate from the data (inverse Fisher information) and its Monte-Carlo part.

    The Fisher information by Louis' formula is corrected for the upward bias of its
    :math:`\\sum_i E[g_i] E[g_i]^T` term (``lrv / n_posterior_iter``, the Monte-Carlo variance of the
    lesions' mean scores) when the corrected matrix stays positive definite. The Monte-Carlo covariance
    of the SAEM estimate comes from :func:`_mc_recursion` with the step sizes ``gamma`` of the run.
    Returns ``(cov, cov_mc, positive_definite, corrected)``; ``cov_mc`` is None when ``lrv`` is not finite.
    """
    n_theta = fim.shape[0]
    sym = lambda a: (a + a.T) / 2  # noqa: E731
    sub = sym(fim[np.ix_(free, free)])
    i_c = sym(complete[np.ix_(free, free)])
    v = sym(lrv[np.ix_(free, free)])
    finite = bool(np.all(np.isfinite(v)) and np.all(np.isfinite(i_c)))
    corrected = False
    if finite:
        adjusted = sub - v / n_posterior_iter
        try:
            if np.all(np.linalg.eigvalsh(adjusted) > 0):
                sub, corrected = adjusted, True
        except np.linalg.LinAlgError:
            pass
    cov = np.full((n_theta, n_theta), np.nan)
    cov_mc = np.full((n_theta, n_theta), np.nan) if finite else None
    try:
        ok = bool(np.all(np.linalg.eigvalsh(sub) > 0))
        cov[np.ix_(free, free)] = np.linalg.inv(sub)
        if cov_mc is not None:
            cov_mc[np.ix_(free, free)] = _mc_recursion(sub, i_c, v, gamma, theta_trace[:, free])
    except np.linalg.LinAlgError:
        return cov, cov_mc, False, corrected
    return cov, cov_mc, ok, corrected


def _trace_table(
    infos: list[saem.SAEMInfo], error_model: str, design: CovariateDesign | None = None, full: bool = False
) -> pd.DataFrame:
    info = jax.tree_util.tree_map(lambda *xs: np.concatenate([np.asarray(x) for x in xs]), *infos)
    mu = info.coef[:, 0, :]
    cols: dict[str, Any] = {"iteration": info.iteration.astype(int), "gamma": info.gamma}
    cols["kg_pop"] = np.exp(mu[:, 0])
    cols["kd_pop"] = np.exp(mu[:, 1])
    cols["f_pop"] = 1.0 / (1.0 + np.exp(-mu[:, 2]))
    for j, k, name in [] if design is None else design.coefficient_names:
        cols[name] = info.coef[:, j, k]
    for k, name in enumerate(PARAMETERS):
        cols[f"omega_{name}"] = np.sqrt(info.omega2[:, k])
    for m, name in enumerate(_CORR_NAMES if full else ()):
        cols[name] = info.omega_corr[:, m]
    for name, j in _error_names(error_model):
        cols[name] = info.error[:, j]
    cols["acceptance_prior"] = info.acceptance[:, 0]
    cols["acceptance_component"] = info.acceptance[:, 1]
    cols["acceptance_joint"] = info.acceptance[:, 2]
    cols["acceptance_independent"] = info.acceptance[:, 3]
    cols["n_clipped"] = info.n_clipped.astype(int)
    cols["complete_loglik"] = info.complete_loglik
    return pd.DataFrame(cols)


def _theta_trace(infos: list[saem.SAEMInfo], full: bool) -> np.ndarray:
    """``theta`` of every iteration (iterations x T), as :func:`saem.pack_theta` packs it."""
    info = jax.tree_util.tree_map(lambda *xs: np.concatenate([np.asarray(x) for x in xs]), *infos)
    coef = np.asarray(info.coef)
    parts = [coef.reshape(len(coef), -1), np.sqrt(np.asarray(info.omega2))]
    parts += [np.asarray(info.omega_corr)] if full else []
    return np.concatenate(parts + [np.asarray(info.error)], axis=1)


def _flat(info: saem.SAEMInfo, full: bool = False) -> np.ndarray:
    """Normal-scale parameters of each iteration (mu, log omega, [correlations,] log error) for the
    stopping rule."""
    coef = np.asarray(info.coef)
    parts = [coef.reshape(len(coef), -1), 0.5 * np.log(np.asarray(info.omega2))]
    parts += [np.asarray(info.omega_corr)] if full else []
    parts += [np.log(np.maximum(np.asarray(info.error), 1e-300))]
    return np.concatenate(parts, axis=1)


def fit_tgi(
    spec: TGIModel,
    data: Any,
    *,
    seed: int = 0,
    progress: Callable[[int, int, dict[str, Any]], None] | None = None,
) -> TGIFit:
    """Fit ``spec`` to the target lesions of ``data`` (a Cohort or a measurements table).

    Precision: the whole fit runs inside ``jax.enable_x64(spec.precision == "float64")``, a context
    manager that restores the previous setting on exit, so importing lesionatlas or calling it never
    changes JAX's global configuration and results do not depend on import order.

    ``progress(iterations_done, iterations_planned, last_values)`` is called between chunks.
    """
    _check_spec(spec)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    started = time.perf_counter()
    arrays, notes = build_arrays(data, spec)
    design = None
    if spec.covariates:
        design = build_design(spec.covariates, data, arrays.lesion_id, arrays.v0[: arrays.n_lesions])
    arrays_seconds = round(time.perf_counter() - started, 3)
    with jax.enable_x64(spec.precision == "float64"):
        result = _fit_arrays(spec, arrays, int(seed), progress, design)
    result["diagnostics"].update(notes)
    result["diagnostics"]["seconds"] = round(time.perf_counter() - started, 3)
    result["diagnostics"]["phase_seconds"] = {"arrays": arrays_seconds, **result["diagnostics"]["phase_seconds"]}
    diag = result["diagnostics"]
    if diag["n_clipped_final"] > 0:
        warnings.warn(
            f"tgi: {diag['n_clipped_final']} observation(s) are more than "
            f"{spec.max_relative_residual:g} times their individual prediction at the estimate; the "
            "likelihood treats them as outliers (max_relative_residual). Check these measurements.",
            ConvergenceWarning,
            stacklevel=3,
        )
    return TGIFit(spec=spec, seed=int(seed), **result)


class _Laps:
    """Wall-clock seconds of the phases of a fit (``diagnostics["phase_seconds"]``)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(self.seconds.get(name, 0.0) + now - self._last, 3)
        self._last = now


def _fit_arrays(
    spec: TGIModel,
    arrays: LesionArrays,
    seed: int,
    progress: Callable[[int, int, dict[str, Any]], None] | None,
    design: CovariateDesign | None = None,
) -> dict[str, Any]:
    lap = _Laps()
    dtype = jnp.float64 if spec.precision == "float64" else jnp.float32
    data = arrays.to_data(dtype, design=None if design is None else design.x)
    n = arrays.n_lesions
    n_chains = max(1, math.ceil(50 / n)) if spec.n_chains == "auto" else int(spec.n_chains)
    config = saem.SAEMConfig(
        error_model=spec.error_model,
        max_relative_residual=float(spec.max_relative_residual),
        n_burn_in=spec.n_burn_in,
        n_prior_kernel=spec.n_prior_kernel,
        n_component_kernel=spec.n_component_kernel,
        n_joint_kernel=spec.n_joint_kernel,
        n_independent_kernel=spec.n_independent_kernel,
        annealing_factor=float(spec.annealing_factor),
        full_covariance=spec.covariance == "full",
    )
    full = config.full_covariance
    key = _stage_key(seed)
    k_saem, k_post, k_is = (jax.random.fold_in(key, i) for i in range(3))
    mu0 = jnp.asarray([math.log(spec.kg), math.log(spec.kd), math.log(spec.f / (1 - spec.f))], dtype)
    state = saem.init_jit(
        k_saem,
        data,
        mu=mu0,
        omega=jnp.asarray([spec.omega_kg, spec.omega_kd, spec.omega_f], dtype),
        error=jnp.asarray([spec.a, spec.b], dtype),
        n_chains=n_chains,
        n_explore=jnp.asarray(spec.n_explore, jnp.int32),
        coef_mask=None if design is None else jnp.asarray(design.mask),
        config=config,
    )
    total = spec.n_burn_in + spec.n_explore + spec.n_smooth
    chunk = spec.chunk_size
    lap("prepare")
    infos: list[saem.SAEMInfo] = []
    done = 0
    explore_end = spec.n_burn_in + spec.n_explore
    stopped_early = False
    while done < total:
        size = min(chunk, total - done)  # a shorter last chunk: same compiled scan, idle tail
        state, info = saem.run_jit(k_saem, state, data, chunk, config, jnp.asarray(size, jnp.int32))
        infos.append(jax.tree_util.tree_map(lambda x, size=size: np.asarray(x)[:size], info))
        done += size
        if spec.auto_stop and not stopped_early and len(infos) >= 2 and done < explore_end:
            if done - spec.n_burn_in >= spec.min_explore:
                last, prev = _flat(infos[-1], full).mean(0), _flat(infos[-2], full).mean(0)
                if np.all(np.abs(last - prev) < spec.stop_tolerance):
                    n_explore = done - spec.n_burn_in
                    state = state._replace(n_explore=jnp.asarray(n_explore, jnp.int32))
                    explore_end = done
                    total = done + spec.n_smooth
                    stopped_early = True
        if progress is not None:
            progress(min(done, total), total, {"iteration": done})
    trace = _trace_table(infos, spec.error_model, design, full)
    lap("saem")
    post = saem.sample_posterior_jit(k_post, state, data, spec.n_posterior_iter, config, fisher=spec.standard_errors)
    jax.block_until_ready(post)
    lap("posterior")
    coef, omega2, error = np.asarray(state.coef), np.asarray(state.omega2), np.asarray(state.error)
    corr = np.asarray(state.omega_corr) if full else None
    corr_jnp = state.omega_corr if full else None
    n_corr = len(_CORR_NAMES) if full else 0
    cov = cov_mc = None
    fisher_ok = True
    louis_corrected = False
    if spec.standard_errors:
        fim = np.asarray(post.fisher, dtype=float)
        free = [int(i) for i in np.flatnonzero(np.asarray(state.coef_mask).reshape(-1))]
        free += [coef.size + k for k in range(3 + n_corr)]
        free += [coef.size + 3 + n_corr + j for _, j in _error_names(spec.error_model)]
        cov, cov_mc, fisher_ok, louis_corrected = _covariances(
            fim, np.asarray(post.complete_info, dtype=float), np.asarray(post.score_lrv, dtype=float), free,
            spec.n_posterior_iter, trace["gamma"].to_numpy(float), _theta_trace(infos, full),
        )
    population = _population_table(coef, omega2, error, cov, spec.error_model, design, corr, cov_mc)
    mode, grad_norm = saem.conditional_mode_jit(
        state.coef, state.omega2, state.error, data, post.phi_mean, config, n_steps=spec.n_mode_steps,
        omega_corr=corr_jnp,
    )
    mode = np.asarray(mode)[:n]
    lap("mode")
    phi_mean = np.asarray(post.phi_mean)[:n]
    phi_sd = np.asarray(post.phi_sd)[:n]
    loglik = None
    if spec.n_is_draws > 0:
        ll, rel_se = saem.importance_loglik_jit(
            k_is, state.coef, state.omega2, state.error, data, post.phi_mean, post.phi_cov, spec.n_is_draws, config,
            omega_corr=corr_jnp, defensive=float(spec.is_defensive), inflate=float(spec.is_inflate),
        )
        loglik = float(np.sum(np.asarray(ll)[:n]))
        rel_var = np.asarray(rel_se)[:n] ** 2
        is_rel_se = float(np.sqrt(np.sum(rel_var)))
        is_correction = float(0.5 * np.sum(rel_var))
        lap("importance_sampling")
    pop_mean = (np.asarray(data.design) @ coef)[:n]
    eta_mode = mode - pop_mean
    eta_mean = phi_mean - pop_mean
    shrink_mode = 1.0 - eta_mode.var(axis=0) / omega2
    shrink_mean = 1.0 - eta_mean.var(axis=0) / omega2

    def natural(phi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return np.exp(phi[:, 0]), np.exp(phi[:, 1]), 1.0 / (1.0 + np.exp(-phi[:, 2]))

    kg, kd, f = natural(mode)
    kg_m, kd_m, f_m = natural(phi_mean)
    individual = pd.DataFrame(
        {
            "lesion_id": pd.Series(arrays.lesion_id, dtype="string"),
            "v0_mm3": arrays.v0[:n],
            "t0_day": arrays.t0[:n],
            "n_obs": arrays.obs_mask[:n].sum(axis=1).astype(int),
            "kg": kg,
            "kd": kd,
            "f": f,
            "kg_mean": kg_m,
            "kd_mean": kd_m,
            "f_mean": f_m,
            "sd_log_kg": phi_sd[:, 0],
            "sd_log_kd": phi_sd[:, 1],
            "sd_logit_f": phi_sd[:, 2],
            "eta_kg": eta_mode[:, 0],
            "eta_kd": eta_mode[:, 1],
            "eta_f": eta_mode[:, 2],
        }
    )
    n_clipped = _count_clipped(
        jnp.asarray(_pad_rows(mode, data.log_v0.shape[0]), dtype),
        data,
        state.error,
        error_model=spec.error_model,
        max_relative_residual=spec.max_relative_residual,
    )
    diagnostics: dict[str, Any] = {
        "n_chains": n_chains,
        "n_iterations": int(total),
        "n_explore": int(state.n_explore),
        "stopped_exploration_early": stopped_early,
        "n_censored": int((arrays.censored & arrays.obs_mask)[:n].sum()),
        "n_clipped_final": int(np.asarray(n_clipped)[:n].sum()),
        "n_clipped_max_iteration": int(trace["n_clipped"].max()),
        "fisher_positive_definite": fisher_ok,
        "louis_bias_corrected": louis_corrected,
        "shrinkage_mode_percent": dict(zip(PARAMETERS, (100 * shrink_mode).round(4).tolist())),
        "shrinkage_mean_percent": dict(zip(PARAMETERS, (100 * shrink_mean).round(4).tolist())),
        "mode_max_gradient": float(np.max(np.asarray(grad_norm))),
        "is_relative_se": None if loglik is None else is_rel_se,
        "is_bias_correction": None if loglik is None else is_correction,
        "lesion_bucket": int(data.log_v0.shape[0]),
        "observation_bucket": int(data.t.shape[1]),
        "n_rows": int(data.t.shape[0]),
        "precision": spec.precision,
        "covariates": [] if design is None else list(design.info),
        "covariance": spec.covariance,
        "phase_seconds": lap.seconds,
    }
    if not fisher_ok and spec.standard_errors:
        warnings.warn(
            "tgi: the Fisher information is not positive definite; standard errors are unreliable "
            "(run more iterations or check identifiability)",
            ConvergenceWarning,
            stacklevel=4,
        )
    obs = arrays.obs_mask[:n]
    rows, cols = np.nonzero(obs)
    observations = pd.DataFrame(
        {
            "lesion_id": pd.Series(arrays.lesion_id[rows], dtype="string"),
            "day": arrays.t[:n][rows, cols],
            "volume_mm3": arrays.y[:n][rows, cols],
            "below_limit": arrays.censored[:n][rows, cols],
            "lower_limit_mm3": np.where(
                np.isfinite(arrays.lower[:n][rows, cols]), arrays.lower[:n][rows, cols], np.nan
            ),
        }
    )
    lap("tables")
    return {
        "observations": observations,
        "population": population,
        "individual": individual,
        "trace": trace,
        "loglik": loglik,
        "n_lesions": n,
        "n_obs": arrays.n_obs,
        "diagnostics": diagnostics,
    }


@partial(jax.jit, static_argnames=("error_model", "max_relative_residual"))
def _count_clipped(phi: jax.Array, data: TGIData, error: jax.Array, *, error_model: str,
                   max_relative_residual: float) -> jax.Array:
    """Observations of each lesion that hit the outlier guard at ``phi`` (one compiled call)."""
    return lesion_loglik(phi, data, error, error_model=error_model, max_relative_residual=max_relative_residual)[1]


def _pad_rows(values: np.ndarray, n_pad: int) -> np.ndarray:
    out = np.zeros((n_pad, values.shape[1]))
    out[: len(values)] = values
    return out


__all__ = ["LesionArrays", "TGIFit", "build_arrays", "fit_tgi", "lesion_bucket", "observation_bucket", "row_width"]

r"""The tumor growth inhibition (TGI) model of one lesion, as pure ``jax.numpy`` functions.

For a target lesion with baseline volume :math:`V_0` observed on day :math:`T_0 \le 0` (regressors taken
from the data, as in the authors' Monolix project):

.. math::

    V(t) = V_0 e^{K_g (t - T_0)} \quad (t < 0), \qquad
    V(t) = V_0 e^{-K_g T_0} \left[F e^{K_g t} + (1 - F) e^{-K_d t}\right] \quad (t \ge 0).

The individual parameters live on the normal scale of the mixed-effects model,
:math:`\phi = (\log K_g, \log K_d, \operatorname{logit} F)`. Everything is computed as
:math:`\log V` with ``logaddexp`` so that neither very long follow-up (``exp(Kg t)`` overflowing) nor a
deep response (``exp(-Kd t)`` underflowing) loses the other term; :math:`\log F` and :math:`\log(1-F)`
come from ``log_sigmoid`` of ``logit F``.

References
----------
Zhou et al. (2024), Nature Communications, "Mapping lesion-specific response and progression dynamics
and inter-organ variability in metastatic colorectal cancer", Methods.
"""
from __future__ import annotations

from typing import Final

import jax
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

#: Names of the three individual parameters, in the order of the last axis of ``phi``.
PARAMETERS: Final[tuple[str, str, str]] = ("kg", "kd", "f")


def log_volume_phi(t: ArrayLike, phi: ArrayLike, log_v0: ArrayLike, t0: ArrayLike) -> Array:
    r""":math:`\log V(t)` from normal-scale parameters ``phi = (log kg, log kd, logit f)``.

    Parameters
    ----------
    t : array_like
        Days relative to treatment start; broadcast against ``phi[..., 0]``.
    phi : array_like, shape (..., 3)
        ``log kg, log kd, logit f``.
    log_v0, t0 : array_like
        Log baseline volume (mm3) and baseline day (<= 0); broadcast like ``t``.

    Returns
    -------
    Array
        :math:`\log V(t)` (log mm3).
    """
    t = jnp.asarray(t)
    phi = jnp.asarray(phi)
    log_kg, log_kd, logit_f = phi[..., 0], phi[..., 1], phi[..., 2]
    kg, kd = jnp.exp(log_kg), jnp.exp(log_kd)
    before = log_v0 + kg * (t - t0)
    log_f = jax.nn.log_sigmoid(logit_f)
    log_1mf = jax.nn.log_sigmoid(-logit_f)
    # both branches are finite everywhere, so jnp.where keeps gradients clean
    after = log_v0 - kg * t0 + jnp.logaddexp(log_f + kg * t, log_1mf - kd * t)
    return jnp.where(t < 0, before, after)


def log_volume(t: ArrayLike, kg: ArrayLike, kd: ArrayLike, f: ArrayLike, v0: ArrayLike, t0: ArrayLike) -> Array:
    r""":math:`\log V(t)` from natural-scale parameters (``kg``, ``kd`` per day, ``0 < f < 1``)."""
    phi = params_to_phi(kg, kd, f)
    return log_volume_phi(t, phi, jnp.log(jnp.asarray(v0)), t0)


def volume(t: ArrayLike, kg: ArrayLike, kd: ArrayLike, f: ArrayLike, v0: ArrayLike, t0: ArrayLike) -> Array:
    r"""Lesion volume :math:`V(t)` (mm3) of the TGI model; see the module docstring for the formula.

    Examples
    --------
    >>> round(float(volume(0.0, 0.005, 0.03, 0.1, 1000.0, -10.0)), 2)  # V0 exp(-Kg T0)
    1051.27
    """
    return jnp.exp(log_volume(t, kg, kd, f, v0, t0))


def phi_to_params(phi: ArrayLike) -> tuple[Array, Array, Array]:
    """``(kg, kd, f)`` from ``phi = (log kg, log kd, logit f)`` (last axis)."""
    phi = jnp.asarray(phi)
    return jnp.exp(phi[..., 0]), jnp.exp(phi[..., 1]), jax.nn.sigmoid(phi[..., 2])


def params_to_phi(kg: ArrayLike, kd: ArrayLike, f: ArrayLike) -> Array:
    """``phi = (log kg, log kd, logit f)`` stacked on a new last axis."""
    kg, kd, f = jnp.asarray(kg), jnp.asarray(kd), jnp.asarray(f)
    kg, kd, f = jnp.broadcast_arrays(kg, kd, f)
    return jnp.stack([jnp.log(kg), jnp.log(kd), jnp.log(f) - jnp.log1p(-f)], axis=-1)


__all__ = ["PARAMETERS", "log_volume", "log_volume_phi", "params_to_phi", "phi_to_params", "volume"]

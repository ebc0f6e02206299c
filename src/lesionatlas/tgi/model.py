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
come from the log-sigmoid of ``logit F``. Both go through :func:`log1p_unit`, a vectorisable
:math:`\log(1 + x)` on :math:`[0, 1]` (XLA's float64 ``log1p`` is a scalar call on CPU).

References
----------
Zhou et al. (2024), Nature Communications, "Mapping lesion-specific response and progression dynamics
and inter-organ variability in metastatic colorectal cancer", Methods.
"""
from __future__ import annotations

import math
from typing import Final

import jax
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

#: Names of the three individual parameters, in the order of the last axis of ``phi``.
PARAMETERS: Final[tuple[str, str, str]] = ("kg", "kd", "f")


# fdlibm's minimax coefficients of log(1 + f) = f - f^2/2 + s (f^2/2 + R(s^2)), s = f / (2 + f), |s| < 0.1716
_LG = (
    6.666666666666735130e-01,
    3.999999999940941908e-01,
    2.857142874366239149e-01,
    2.222219843214978396e-01,
    1.818357216161805012e-01,
    1.531383769920937332e-01,
    1.479819860511658591e-01,
)
_LN2_HI, _LN2_LO = 6.93147180369123816490e-01, 1.90821492927058770002e-10


@jax.custom_jvp
def log1p_unit(x: ArrayLike) -> Array:
    r""":math:`\log(1 + x)` for :math:`0 \le x \le 1`, the term of ``logaddexp`` and ``log_sigmoid``.

    XLA's CPU backend vectorises ``exp`` but calls a scalar routine for the float64 ``log``/``log1p``,
    which made them the most expensive operation of the likelihood. On this bounded range the
    argument :math:`w = 1 + x \in [1, 2]` needs no exponent extraction: :math:`w` is halved when it
    exceeds :math:`\sqrt 2`, :math:`f = w - 1` is then exact, and fdlibm's polynomial gives
    :math:`\log(1 + f)` to within one ulp. The only other error is the rounding of :math:`1 + x`, at most
    :math:`1.1 \times 10^{-16}` in absolute terms, which is what matters here: the result is always
    added to a term of order one or larger. float32 inputs use ``jnp.log1p`` (vectorised already).
    The derivative is exact, :math:`1 / (1 + x)` (a custom JVP).
    """
    x = jnp.asarray(x)
    if x.dtype != jnp.float64:
        return jnp.log1p(x)
    w = 1.0 + x
    big = w > math.sqrt(2.0)
    f = jnp.where(big, 0.5 * w, w) - 1.0
    k = big.astype(x.dtype)
    s = f / (2.0 + f)
    z = s * s
    r = _LG[6]
    for c in _LG[5::-1]:
        r = c + z * r
    r = z * r
    hfsq = 0.5 * f * f
    return k * _LN2_HI - ((hfsq - (s * (hfsq + r) + k * _LN2_LO)) - f)


@log1p_unit.defjvp
def _log1p_unit_jvp(primals: tuple[Array], tangents: tuple[Array]) -> tuple[Array, Array]:
    (x,), (dx,) = primals, tangents
    return log1p_unit(x), dx / (1.0 + x)


def logaddexp(a: ArrayLike, b: ArrayLike) -> Array:
    """``log(exp(a) + exp(b))`` through :func:`log1p_unit` (finite arguments; same values as
    ``jnp.logaddexp`` to rounding)."""
    a, b = jnp.asarray(a), jnp.asarray(b)
    return jnp.maximum(a, b) + log1p_unit(jnp.exp(-jnp.abs(a - b)))


def log_sigmoid_pair(x: ArrayLike) -> tuple[Array, Array]:
    r""":math:`(\log \sigma(x), \log(1 - \sigma(x)))` sharing one ``exp`` and one :func:`log1p_unit`."""
    x = jnp.asarray(x)
    common = log1p_unit(jnp.exp(-jnp.abs(x)))
    return jnp.minimum(x, 0.0) - common, jnp.minimum(-x, 0.0) - common


def lesion_terms(
    log_kg: ArrayLike, log_kd: ArrayLike, logit_f: ArrayLike, log_v0: ArrayLike, t0: ArrayLike
) -> tuple[Array, Array, Array, Array, Array]:
    r"""The per-lesion pieces of :func:`log_volume_phi`: ``(kg, kd, log F, log(1 - F), log V0 - Kg T0)``
    from the three normal-scale parameters; :func:`cell_log_volume` combines them with the days.
    Computing them once per lesion and broadcasting keeps them out of the per-observation work."""
    kg, kd = jnp.exp(jnp.asarray(log_kg)), jnp.exp(jnp.asarray(log_kd))
    log_f, log_1mf = log_sigmoid_pair(logit_f)
    return kg, kd, log_f, log_1mf, log_v0 - kg * t0


def cell_log_volume(
    t: ArrayLike, kg: ArrayLike, kd: ArrayLike, log_f: ArrayLike, log_1mf: ArrayLike, log_v0: ArrayLike, t0: ArrayLike,
    base: ArrayLike,
) -> Array:
    r""":math:`\log V(t)` from the outputs of :func:`lesion_terms` (all broadcast against ``t``)."""
    t = jnp.asarray(t)
    before = log_v0 + kg * (t - t0)
    # both branches are finite everywhere, so jnp.where keeps gradients clean
    after = base + logaddexp(log_f + kg * t, log_1mf - kd * t)
    return jnp.where(t < 0, before, after)


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
    phi = jnp.asarray(phi)
    kg, kd, log_f, log_1mf, base = lesion_terms(phi[..., 0], phi[..., 1], phi[..., 2], log_v0, t0)
    return cell_log_volume(t, kg, kd, log_f, log_1mf, log_v0, t0, base)


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


__all__ = [
    "PARAMETERS",
    "cell_log_volume",
    "lesion_terms",
    "log1p_unit",
    "log_sigmoid_pair",
    "log_volume",
    "log_volume_phi",
    "logaddexp",
    "params_to_phi",
    "phi_to_params",
    "volume",
]

"""An independent, deliberately naive Cox partial likelihood: a Python loop over event times.

Used only by the tests, as the reference the vectorised core must reproduce.
"""
from __future__ import annotations

import numpy as np


def naive_loglik_grad_info(time, event, z, beta, ties="efron"):
    """Log partial likelihood, score and information (minus the Hessian) for design ``z`` at ``beta``."""
    time = np.asarray(time, float)
    event = np.asarray(event, float)
    z = np.asarray(z, float)
    eta = z @ beta
    r = np.exp(eta)
    p = z.shape[1]
    loglik, grad, info = 0.0, np.zeros(p), np.zeros((p, p))
    for t in np.unique(time[event == 1]):
        at_risk = time >= t
        dead = (time == t) & (event == 1)
        d = int(dead.sum())
        s0 = r[at_risk].sum()
        s1 = (r[at_risk, None] * z[at_risk]).sum(0)
        s2 = np.einsum("i,ij,ik->jk", r[at_risk], z[at_risk], z[at_risk])
        e0 = r[dead].sum()
        e1 = (r[dead, None] * z[dead]).sum(0)
        e2 = np.einsum("i,ij,ik->jk", r[dead], z[dead], z[dead])
        loglik += eta[dead].sum()
        grad += z[dead].sum(0)
        for l in range(d):
            f = l / d if ties == "efron" else 0.0
            den = s0 - f * e0
            mean = (s1 - f * e1) / den
            loglik -= np.log(den)
            grad -= mean
            info += (s2 - f * e2) / den - np.outer(mean, mean)
    return loglik, grad, info

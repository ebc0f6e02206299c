"""The vectorised Cox partial likelihood and its derivatives against a naive loop and JAX autodiff."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from naive_cox import naive_loglik_grad_info

from lesionatlas.hazards.partial_likelihood import cox_derivatives, cox_loglik, group_index, risk_sets


def _data(seed=1, n=60, p=3, q=7):
    rng = np.random.default_rng(seed)
    time = rng.integers(1, 12, n).astype(float)  # heavy ties
    event = (rng.random(n) < 0.7).astype(float)
    x = rng.normal(size=(n, p))
    g = rng.integers(0, q, n)
    beta = rng.normal(size=p) * 0.3
    b = rng.normal(size=q) * 0.5
    return time, event, x, g, beta, b


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_loglik_matches_naive_loop(ties):
    time, event, x, g, beta, b = _data()
    z = np.hstack([np.eye(b.size)[g], x])
    ll, _, _ = naive_loglik_grad_info(time, event, z, np.r_[b, beta], ties)
    rs = risk_sets(time, event, ties)
    eta = (x @ beta + b[g])[rs.order]
    # tolerance: float64 round-off of a sum of ~60 logs
    assert cox_loglik(eta, rs) == pytest.approx(ll, abs=1e-10)
    # invariant to a common shift of the linear predictor
    assert cox_loglik(eta + 40.0, rs) == pytest.approx(ll, abs=1e-9)


@pytest.mark.parametrize("ties", ["efron", "breslow"])
@pytest.mark.parametrize("n_sparse", [7, 4, 0])
def test_derivative_blocks_match_naive(ties, n_sparse):
    time, event, x, g, beta, b = _data(seed=2)
    q = b.size
    z = np.hstack([np.eye(q)[g], x])
    ll, grad, info = naive_loglik_grad_info(time, event, z, np.r_[b, beta], ties)
    rs = risk_sets(time, event, ties)
    o = rs.order
    gi = group_index(g[o], q, n_sparse, rs)
    d = cox_derivatives((x @ beta + b[g])[o], rs, np.hstack([gi.dense_columns, x[o]]), gi)
    qs = n_sparse
    np.testing.assert_allclose(d.loglik, ll, atol=1e-10)
    np.testing.assert_allclose(d.grad_sparse, grad[:qs], atol=1e-12)
    np.testing.assert_allclose(d.grad_dense, grad[qs:], atol=1e-12)
    # sparse groups: exact diagonal of their block (coxme keeps only that), exact cross terms
    np.testing.assert_allclose(d.hess_sparse, np.diag(info)[:qs], atol=1e-12)
    np.testing.assert_allclose(d.hess_cross, info[:qs, qs:], atol=1e-12)
    np.testing.assert_allclose(d.hess_dense, info[qs:, qs:], atol=1e-12)


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_gradient_and_hessian_match_jax_autodiff(ties):
    time, event, x, g, beta, b = _data(seed=3, n=40)
    q = b.size
    rs = risk_sets(time, event, ties)
    o = rs.order
    z = np.hstack([np.eye(q)[g], x])[o]
    theta = np.r_[b, beta]
    gi = group_index(g[o], q, 0, rs)
    d = cox_derivatives(z @ theta, rs, z, None)
    with jax.enable_x64(True):
        zj = jnp.asarray(z)

        def f(th):
            return cox_loglik(zj @ th, rs, xp=jnp)

        grad = np.asarray(jax.grad(f)(jnp.asarray(theta)))
        hess = np.asarray(jax.hessian(f)(jnp.asarray(theta)))
        check_grads(f, (jnp.asarray(theta),), order=2, modes=["rev"])
    np.testing.assert_allclose(d.grad_dense, grad, atol=1e-11)
    np.testing.assert_allclose(d.hess_dense, -hess, atol=1e-11)
    assert gi.n_groups == q


def test_gradient_matches_finite_differences():
    time, event, x, g, beta, _ = _data(seed=4)
    rs = risk_sets(time, event, "efron")
    xo = x[rs.order]
    d = cox_derivatives(xo @ beta, rs, xo, None)
    eps = 1e-6
    fd = [(cox_loglik(xo @ (beta + eps * e), rs) - cox_loglik(xo @ (beta - eps * e), rs)) / (2 * eps)
          for e in np.eye(beta.size)]
    # central differences: error ~ eps^2 * third derivative + round-off 1e-16 * |loglik| / eps
    np.testing.assert_allclose(d.grad_dense, fd, atol=1e-7)


@pytest.mark.parametrize("ties", ["efron", "breslow"])
@pytest.mark.parametrize("n_sparse", [7, 4])
def test_information_product_is_exact(ties, n_sparse):
    """The O(n m) product used by the conjugate-gradient Newton step is the *exact* penalised
    information (sparse-group off-diagonal terms included), against the naive loop's full matrix.
    Private helpers are imported on purpose: they are the fast path of every fit."""
    from lesionatlas.hazards.partial_likelihood import _derivatives, _information_product

    time, event, x, g, beta, b = _data(seed=6)
    q = b.size
    z = np.hstack([np.eye(q)[g], x])
    _, _, info = naive_loglik_grad_info(time, event, z, np.r_[b, beta], ties)
    rs = risk_sets(time, event, ties)
    o = rs.order
    gi = group_index(g[o], q, n_sparse, rs)
    dense = np.hstack([gi.dense_columns, x[o]])
    _, cur = _derivatives((x @ beta + b[g])[o], rs, dense, gi)
    pen = 1.7
    penalised = info + np.diag(np.r_[np.full(q, pen), np.zeros(x.shape[1])])
    rng = np.random.default_rng(0)
    for v in rng.normal(size=(3, q + x.shape[1])):
        # tolerance: float64 round-off of sums over ~60 observations
        np.testing.assert_allclose(_information_product(v, cur, rs, dense, gi, pen), penalised @ v, atol=1e-11)


def test_tangent_matches_finite_differences_of_the_mode():
    """d(b, beta)/d log(sigma2) from the implicit function theorem vs central differences of the mode."""
    from lesionatlas.hazards.partial_likelihood import fit_penalized

    time, event, x, g, _, _ = _data(seed=7, n=120)
    q = 7
    rs = risk_sets(time, event, "efron")
    o = rs.order
    gi = group_index(g[o], q, q, rs)
    s2, h = 0.6, 1e-4
    fit = fit_penalized(x[o], rs, gi, s2, tol=1e-14, tangent=True)
    up = fit_penalized(x[o], rs, gi, s2 * np.exp(h), fit.b, fit.beta, tol=1e-14)
    down = fit_penalized(x[o], rs, gi, s2 * np.exp(-h), fit.b, fit.beta, tol=1e-14)
    fd = (np.r_[up.b, up.beta] - np.r_[down.b, down.beta]) / (2 * h)
    # central differences: error ~ h^2 * third derivative (~1e-8 here) + mode error / h (~1e-9)
    np.testing.assert_allclose(fit.tangent, fd, atol=1e-6)

"""Independent exact solver used as the test oracle for the ^ solver.

Minimises f(theta) = sum_i pw_i d(y_i, mu_i) / (2 phi) + sum_l lam_l a_l^2 / 2 over the
FULL parameter vector theta = (beta, a_1, ..., a_K), with an explicit sparse one-hot
design Z = [X | onehot(codes_1) | ...], by damped Fisher-scoring Newton steps solved
with a sparse direct solver (scipy.sparse.linalg.spsolve), until the Newton step is
below 1e-14 relative.  It uses only families.py (R's definitions) and scipy; nothing
from the solver under test.  Suitable for a few thousand parameters.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import spsolve

from impactglm.families import get_family


def design(X, factors):
    """Sparse [X | onehot_1 | ... | onehot_K] and the level-block start offsets."""
    n = X.shape[0]
    blocks = [sp.csr_matrix(X)]
    for codes, q in factors:
        blocks.append(sp.csr_matrix((np.ones(n), (np.arange(n), codes)), shape=(n, q)))
    return sp.hstack(blocks).tocsc()


def objective(Z, theta, y, pw, offset, fam, lam, phi=1.0):
    eta = offset + Z @ theta
    mu = fam.link.inverse(eta)
    return 0.5 * float(np.sum(pw * fam.unit_deviance(y, mu))) / phi + 0.5 * float(np.sum(lam * theta ** 2))


def exact_fit(X, factors, y, weights, offset, family, taus, phi=1.0, maxiter=200):
    """Returns dict(beta, effects (list), objective, cov (full inverse Hessian), grad)."""
    fam = get_family(family)
    n, p = X.shape
    y = np.asarray(y, float)
    pw = np.ones(n) if weights is None else np.asarray(weights, float)
    offset = np.zeros(n) if offset is None else np.asarray(offset, float)
    Z = design(X, factors)
    lam = np.concatenate([np.zeros(p)] + [np.full(q, (1e-5 if t is None else 1.0 / t ** 2))
                                          for (c, q), t in zip(factors, taus)])
    theta = np.zeros(Z.shape[1])
    mu0 = fam.initial_mu(y, pw)
    # start: beta solves X beta ~ g(mu0) (least squares), effects 0
    theta[:p] = np.linalg.lstsq(X, fam.link.link(mu0) - offset, rcond=None)[0]
    f = objective(Z, theta, y, pw, offset, fam, lam, phi)
    for _ in range(maxiter):
        w, grad = _weights_and_gradient(Z, theta, y, pw, offset, fam, lam, phi)
        H = (Z.T @ sp.diags(w) @ Z + sp.diags(lam)).tocsc()
        step = -spsolve(H, grad)
        t = 1.0
        while True:
            new = theta + t * step
            fn = objective(Z, new, y, pw, offset, fam, lam, phi)
            if fn <= f + 1e-12 * abs(f) or t < 1e-8:
                break
            t *= 0.5
        theta, f = new, fn
        if np.max(np.abs(t * step)) <= 1e-14 * (1 + np.max(np.abs(theta))):
            break
    w, grad = _weights_and_gradient(Z, theta, y, pw, offset, fam, lam, phi)
    H = (Z.T @ sp.diags(w) @ Z + sp.diags(lam)).toarray()
    cov = np.linalg.inv(H)
    effects, s = [], p
    for _, q in factors:
        effects.append(theta[s:s + q])
        s += q
    return dict(beta=theta[:p], effects=effects, objective=f, cov=cov, grad=grad, theta=theta)


def _weights_and_gradient(Z, theta, y, pw, offset, fam, lam, phi):
    """Fisher weights w_i = pw_i mu'(eta_i)^2 / (V(mu_i) phi) and the penalised gradient
    -Z'r + lam theta with r_i = pw_i (y_i - mu_i) mu'(eta_i) / (V(mu_i) phi)."""
    eta = offset + Z @ theta
    mu = fam.link.inverse(eta)
    me = fam.link.mu_eta(eta)
    v = fam.variance(mu)
    w = pw * me ** 2 / v / phi
    r = pw * (y - mu) * me / v / phi
    return w, -(Z.T @ r) + lam * theta

"""The gradient certificate, recomputed independently of the solver (test helper).

For a fitted ``ig.glm`` model the penalised objective is

    f(beta, a) = sum_i pw_i d(y_i, mu_i) / (2 phi) + sum_k sum_l a_k[l]^2 / (2 tau_k^2)

and its gradient, with r_i = pw_i (y_i - mu_i) mu'(eta_i) / (V(mu_i) phi), is

    df/dbeta = -X' r,        df/da_k[l] = -sum_{i in l} r_i + a_k[l] / tau_k^2.

The Fisher Hessian's diagonal, with w_i = pw_i mu'(eta_i)^2 / (V(mu_i) phi), is
sum_i X_ij^2 w_i for beta_j and sum_{i in l} w_i + 1/tau_k^2 for a_k[l];
|gradient| / diagonal is the size of a coordinate Newton step (the solver's
convergence test, scale-free).

Only families.py (R's definitions) and numpy are used: nothing from the solver.
"""
from __future__ import annotations

import numpy as np

NO_PRIOR_RIDGE = 1e-5   # the documented ridge of prior_sd=None fits


def penalized_gradient(model, res, diagonal: bool = False):
    """(df/dbeta, [df/da_k]) at the fitted parameters of ``res`` (a fit of ``model``);
    with ``diagonal=True`` also the Hessian diagonals (H_beta, [H_a_k])."""
    d, fam = model.design, model.family
    eta = d.offset + d.X @ np.asarray(res.params, dtype=float)
    for f, e in zip(d.factors, res.factor_effects):
        eta = eta + np.asarray(e.effect)[f.codes]
    mu = fam.link.inverse(eta)
    phi = 1.0 if fam.fixed_scale else float(res.scale)
    r = d.weights * (d.y - mu) * fam.link.mu_eta(eta) / fam.variance(mu) / phi
    w = d.weights * fam.link.mu_eta(eta) ** 2 / fam.variance(mu) / phi
    g_beta, h_beta = -(d.X.T @ r), (d.X ** 2).T @ w
    g_a, h_a = [], []
    for f, e in zip(d.factors, res.factor_effects):
        lam = NO_PRIOR_RIDGE if e.tau is None else 1.0 / e.tau ** 2
        g_a.append(-np.bincount(f.codes, weights=r, minlength=f.n_levels) + lam * e.effect)
        h_a.append(np.bincount(f.codes, weights=w, minlength=f.n_levels) + lam)
    if diagonal:
        return g_beta, g_a, h_beta, h_a
    return g_beta, g_a


def max_newton_step(model, res) -> float:
    """max_j |gradient_j| / H_jj over beta and every level effect (coordinates with a zero
    diagonal are skipped)."""
    g_beta, g_a, h_beta, h_a = penalized_gradient(model, res, diagonal=True)
    ratios = [np.abs(g) / h for g, h in zip([g_beta] + g_a, [h_beta] + h_a)]
    return float(max(np.max(np.where(np.isfinite(q), q, 0.0), initial=0.0) for q in ratios))


def max_abs_gradient(model, res) -> float:
    """max |gradient| over beta and every level effect."""
    g_beta, g_a = penalized_gradient(model, res)
    return float(max([np.max(np.abs(g_beta), initial=0.0)]
                     + [np.max(np.abs(g), initial=0.0) for g in g_a]))

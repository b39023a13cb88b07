"""The fused IRLS row pass (numba) and its NumPy twin.

Given the linear predictor eta (offset included), one pass over the rows computes,
as R's glm.fit does at the top of each iteration,

    mu_i  = g^-1(eta_i)
    W_i   = w_i (dmu/deta)_i^2 / V(mu_i)                  (working weight)
    z_i   = (eta_i - offset_i) + (y_i - mu_i) / (dmu/deta)_i   (working response)
    D     = sum_i w_i d(y_i, mu_i)                         (deviance)

and whether every mu_i / eta_i lies in the family's / link's valid range.  Rows
with w_i = 0 or dmu/deta = 0 get W_i = 0 and z_i = eta_i - offset_i (R drops
them from the least-squares fit: its ``good`` rows).  The outputs are written
into caller-owned arrays so an IRLS loop allocates nothing per pass.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .links import (linkinv, linkinv_numpy, mu_eta, mu_eta_numpy, unit_deviance,
                    unit_deviance_numpy, valid_eta, valid_eta_numpy, valid_mu,
                    valid_mu_numpy, variance, variance_numpy)


@njit(cache=True)
def irls_pass(y, w, eta, offset, link_code, family_code, mu, W, z):
    """Fill mu, W, z from eta; return (deviance, all_valid).  See the module docstring.

    The deviance is summed with Neumaier's compensated summation (R sums in long
    double), so that IRLS convergence tests near 1e-15 are not decided by rounding.
    """
    dev = 0.0
    comp = 0.0
    ok = True
    for i in range(y.shape[0]):
        e = eta[i]
        m = linkinv(e, link_code)
        mu[i] = m
        if not (valid_mu(m, family_code) and valid_eta(e, link_code)):
            ok = False
        d = mu_eta(e, link_code)
        wi = w[i]
        if wi > 0.0 and d != 0.0:
            W[i] = wi * d * d / variance(m, family_code)
            z[i] = (e - offset[i]) + (y[i] - m) / d
        else:
            W[i] = 0.0
            z[i] = e - offset[i]
        if wi > 0.0:
            term = wi * unit_deviance(y[i], m, family_code)
            t = dev + term
            if abs(dev) >= abs(term):
                comp += (dev - t) + term
            else:
                comp += (term - t) + dev
            dev = t
    return dev + comp, ok


def irls_pass_numpy(y, w, eta, offset, link_code, family_code, mu, W, z):
    """NumPy twin of :func:`irls_pass` (same in-place outputs and return value)."""
    mu[:] = linkinv_numpy(eta, link_code)
    ok = bool(np.all(valid_mu_numpy(mu, family_code)) and np.all(valid_eta_numpy(eta, link_code)))
    d = mu_eta_numpy(eta, link_code)
    good = (w > 0.0) & (d != 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        W[:] = np.where(good, w * d * d / variance_numpy(mu, family_code), 0.0)
        z[:] = np.where(good, (eta - offset) + (y - mu) / np.where(good, d, 1.0), eta - offset)
        pos = w > 0.0
        dev = float(np.sum(w[pos] * unit_deviance_numpy(y[pos], mu[pos], family_code)))
    return dev, ok


@njit(cache=True)
def weighted_gram(X, W, z):
    """(X'WX, X'Wz) in one pass over the rows, without an (n, p) temporary.

    Only the lower triangle is accumulated (then mirrored); rows with W_i = 0 are skipped.
    """
    n, p = X.shape
    G = np.zeros((p, p))
    b = np.zeros(p)
    for i in range(n):
        wi = W[i]
        if wi == 0.0:
            continue
        wz = wi * z[i]
        for j in range(p):
            xij = X[i, j]
            wx = wi * xij
            b[j] += xij * wz
            for k in range(j + 1):
                G[j, k] += wx * X[i, k]
    for j in range(p):
        for k in range(j):
            G[k, j] = G[j, k]
    return G, b


def weighted_gram_numpy(X, W, z):
    """NumPy twin of :func:`weighted_gram`."""
    XW = X * W[:, None]
    return XW.T @ X, XW.T @ z

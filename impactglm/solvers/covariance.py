"""Covariances of GLM coefficients at the fitted values: model-based (expected or observed
information) and sandwich (heteroscedasticity- and cluster-robust), as R's sandwich and
statsmodels define them.

With m1 = dmu/deta, m2 = d^2mu/deta^2, V the variance function, V' = dV/dmu, w prior weights:

* expected information weights  W_i = w_i m1_i^2 / V_i  (R's glm, statsmodels' IRLS)
* observed information weights  W_i (1 + (y_i - mu_i) (V'_i/V_i - m2_i/m1_i^2))
  (Stata's default OIM; equal to the expected ones for canonical links)
* bread B = (X' W X)^-1 with one of those; model-based cov = phi B
* score contributions u_i = x_i w_i (y_i - mu_i) m1_i / V_i (the dispersion cancels in a
  sandwich, as in sandwich::estfun.glm / bread.glm)
* HC0  B (sum_i u_i u_i' / f_i) B (f frequency weights, default 1);  HC1 = HC0 n/(n - p);  HC2, HC3 divide u_i u_i' by (1 - h_i)
  and (1 - h_i)^2, h_i = W_i x_i' B x_i the hat values (sandwich::vcovHC, n = rows with
  positive weight)
* cluster  B (sum_g U_g U_g') B G/(G - 1) (n - 1)/(n - p), U_g = sum_{i in g} u_i
  (sandwich::vcovCL(type = "HC1"), statsmodels' cov_type="cluster" defaults)

statsmodels' GLM maps HC1, HC2 and HC3 to HC0 with the observed-information bread; so
``cov_type="HC0", information="observed"`` is statsmodels' GLM HC0 (all links).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import DataError, ModelError
from ..families import Family

COV_TYPES = ("nonrobust", "HC0", "HC1", "HC2", "HC3", "cluster")
INFORMATION = ("expected", "observed")


def information_weights(family: Family, y, w, mu, eta, information: str = "expected"
                        ) -> np.ndarray:
    """W_i of the expected or observed information (module docstring); 0 where w_i = 0."""
    if information not in INFORMATION:
        raise ModelError(f"information must be 'expected' or 'observed', not {information!r}")
    link = family.link
    m1 = link.mu_eta(eta)
    V = family.variance(mu)
    pos = w > 0
    W = np.where(pos, w * m1 * m1 / np.where(pos, V, 1.0), 0.0)
    if information == "observed":
        with np.errstate(divide="ignore", invalid="ignore"):
            corr = family.variance_deriv(mu) / V - link.mu_eta2(eta) / (m1 * m1)
        W = np.where(pos, W * (1.0 + (y - mu) * corr), 0.0)
    return W


def _inverse(G: np.ndarray) -> np.ndarray:
    d = np.sqrt(np.abs(np.diag(G)))
    d[d == 0] = 1.0
    try:
        inv = np.linalg.inv(G / np.outer(d, d))
    except np.linalg.LinAlgError as exc:
        raise ModelError(f"the information matrix is singular ({exc})") from exc
    return inv / np.outer(d, d)


def glm_covariance(X: np.ndarray, y: np.ndarray, w: np.ndarray, mu: np.ndarray, eta: np.ndarray,
                   family: Family, scale: float, cov_type: str = "nonrobust", groups=None,
                   information: str = "expected", freq=None) -> np.ndarray:
    """cov(beta) of the kind ``cov_type`` (see the module docstring) at the fitted values.

    ``groups``: one cluster label per row (``cov_type="cluster"`` only).  ``freq``:
    frequency weights f inside ``w`` (replicated rows): the HC meat is then
    sum_i u_i u_i' / f_i and n = sum f (statsmodels; the cluster meat is unchanged).
    """
    if cov_type not in COV_TYPES:
        raise ModelError(f"cov_type must be one of {', '.join(COV_TYPES)}, not {cov_type!r}")
    if (groups is not None) != (cov_type == "cluster"):
        raise ModelError("groups= is needed with cov_type='cluster' and only then")
    X = np.asarray(X, dtype=np.float64)
    W = information_weights(family, y, w, mu, eta, information)
    B = _inverse((X * W[:, None]).T @ X)
    if cov_type == "nonrobust":
        return scale * B
    pos = w > 0
    n, p = int(pos.sum()), X.shape[1]
    f = np.ones(len(w)) if freq is None else np.asarray(freq, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(pos, w * (y - mu) * family.link.mu_eta(eta) / family.variance(mu), 0.0)
    U = X * r[:, None]
    if cov_type == "cluster":
        codes, G = _group_codes(groups, len(y))
        Ug = np.zeros((G, p))
        np.add.at(Ug, codes, U)
        if G < 2:
            raise ModelError("cluster-robust covariance needs at least 2 clusters")
        meat = Ug.T @ Ug * (G / (G - 1.0)) * ((n - 1.0) / (n - p))
    else:
        if cov_type in ("HC2", "HC3"):
            h = W * np.einsum("ij,jk,ik->i", X, B, X)
            U = U / ((1.0 - h) if cov_type == "HC2" else (1.0 - h) ** 2)[:, None] ** 0.5
        meat = (U / np.where(pos, f, 1.0)[:, None]).T @ U
        if cov_type == "HC1":
            nf = float(np.sum(f[pos]))
            meat = meat * (nf / (nf - p))
    return B @ meat @ B


def _group_codes(groups, n: int) -> tuple[np.ndarray, int]:
    g = pd.Series(np.asarray(groups)) if not isinstance(groups, pd.Series) else groups
    if len(g) != n:
        raise DataError(f"groups has {len(g)} values, expected {n} (one per fitted row)")
    if g.isna().any():
        raise DataError(f"groups has a missing value at position {int(np.flatnonzero(g.isna())[0])}")
    codes, uniques = pd.factorize(g, sort=True)
    return codes, len(uniques)

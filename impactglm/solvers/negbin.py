"""Negative binomial GLMs with theta estimated, exactly as MASS's ``glm.nb``.

1. Poisson IRLS fit (same link) -> mu; theta = theta_ml(y, mu).
2. Repeat (at most ``maxiter`` times) while |L0 - L|/d1 + |dtheta|/d2 > tol, with
   d1 = sqrt(2 max(1, df_resid)), d2 = 1 and L the NB log-likelihood: IRLS with the
   negative binomial(theta) family started at eta = g(mu); theta_ml at the *previous* mu
   (as MASS does); mu from the new fit.

theta_ml is MASS's theta.ml: Newton's method on the score
    s(theta) = sum w [psi(theta + y) - psi(theta) + log theta + 1 - log(theta + mu)
                      - (y + theta)/(mu + theta)]
with the expected-information-like denominator
    i(theta) = sum w [-psi'(theta + y) + psi'(theta) - 1/theta + 2/(mu + theta)
                      - (y + theta)/(mu + theta)^2],
started at n / sum w (y/mu - 1)^2, stopping when |step| <= eps^(1/4); SE(theta) = i^-1/2.
The coefficients' covariance is that of the last IRLS fit (theta held fixed), as R's vcov.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import special

from .._util import user_stacklevel
from ..containers import FitOutput
from ..errors import ConvergenceWarning
from ..families import NegativeBinomial, Poisson
from .irls import fit_irls

_THETA_EPS = np.finfo(float).eps ** 0.25


def theta_ml(y: np.ndarray, mu: np.ndarray, w: np.ndarray, limit: int = 25
             ) -> tuple[float, float]:
    """(theta, SE(theta)): MASS::theta.ml (module docstring); warns as MASS when theta is
    truncated at 0 or the iteration limit is reached."""
    n = float(np.sum(w))
    t0 = n / float(np.sum(w * (y / mu - 1.0) ** 2))
    it, delta, info = 0, 1.0, float("nan")
    while True:
        it += 1
        if not (it < limit and abs(delta) > _THETA_EPS):
            break
        t0 = abs(t0)
        score = np.sum(w * (special.digamma(t0 + y) - special.digamma(t0) + math.log(t0) + 1.0
                            - np.log(t0 + mu) - (y + t0) / (mu + t0)))
        info = np.sum(w * (-special.polygamma(1, t0 + y) + special.polygamma(1, t0) - 1.0 / t0
                           + 2.0 / (mu + t0) - (y + t0) / (mu + t0) ** 2))
        delta = float(score / info)
        t0 += delta
    if t0 < 0:
        t0 = 0.0
        warnings.warn("negative binomial theta estimate truncated at zero", ConvergenceWarning,
                      stacklevel=user_stacklevel())
    if it == limit:
        warnings.warn("negative binomial theta: iteration limit reached", ConvergenceWarning,
                      stacklevel=user_stacklevel())
    return float(t0), float(math.sqrt(1.0 / info)) if info > 0 else float("nan")


def _loglik(theta, mu, y, w) -> float:
    return NegativeBinomial(theta=theta).loglik(y, mu, w)


def fit_negbin(X, y, weights, offset, link: str = "log", *, maxiter: int = 25,
               tol: float = 1e-8, column_names=None, verbose: bool = False
               ) -> tuple[FitOutput, NegativeBinomial]:
    """glm.nb (module docstring): the last IRLS FitOutput (its ``extra`` gains theta,
    theta_se, theta_iterations) and the NegativeBinomial family at the estimated theta."""
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)
    kw = dict(maxiter=maxiter, tol=tol, column_names=column_names, verbose=verbose)
    fit = fit_irls(X, y, w, offset, Poisson(link=link), **kw)
    mu = fit.mu
    th, se = theta_ml(y, mu, w, limit=maxiter)
    d1 = math.sqrt(2.0 * max(1.0, fit.extra["df_resid"]))
    d2 = delta = 1.0
    lm = _loglik(th, mu, y, w)
    lm0 = lm + 2.0 * d1
    it = 0
    fam = NegativeBinomial(link=link, theta=th, theta_estimated=True)
    while True:
        it += 1
        if not (it <= maxiter and abs(lm0 - lm) / d1 + abs(delta) / d2 > tol):
            break
        fam = NegativeBinomial(link=link, theta=th, theta_estimated=True)
        fit = fit_irls(X, y, w, offset, fam, eta_start=fam.link.link(mu), **kw)
        t0 = th
        th, se = theta_ml(y, mu, w, limit=maxiter)      # at the previous mu, as MASS
        mu = fit.mu
        delta = t0 - th
        lm0, lm = lm, _loglik(th, mu, y, w)
        if verbose:
            print(f"glm.nb iteration {it}: theta = {th:.8g}, loglik = {lm:.10g}")
    if it > maxiter:
        warnings.warn("negative binomial: alternation limit reached (theta and the "
                      "coefficients did not settle)", ConvergenceWarning,
                      stacklevel=user_stacklevel())
    extra = dict(fit.extra, theta=th, theta_se=se, theta_iterations=it - 1)
    out = FitOutput(beta=fit.beta, cov_beta=fit.cov_beta, eta=fit.eta, mu=fit.mu,
                    scale=fit.scale, n_iter=fit.n_iter, converged=fit.converged and it <= maxiter,
                    log=fit.log, extra=extra)
    # R reports the family at the final theta (the last fit used the one before it)
    return out, NegativeBinomial(link=link, theta=th, theta_estimated=True)

"""Iteratively reweighted least squares, exactly as R's ``glm.fit``.

Each iteration solves the weighted least-squares problem

    beta = argmin_b sum_i W_i (z_i - x_i' b)^2

with the working weights W and working response z of the current eta (one fused
numba pass, :func:`impactglm.kernels.glm.irls_pass`), then recomputes eta, mu
and the deviance D.  It stops when |D - D_old| / (|D| + 0.1) < tol (R's
criterion).  A step giving a non-finite deviance, an invalid mu/eta, or (after
the first iteration) a larger deviance (by more than max(tol, 1e-10) relative, so
that rounding noise never triggers it) is halved towards the previous
coefficients (R halves only in the first two cases; the third is glm2's safeguard
and does not change the optimum).

At the end cov(beta) = phi (X'WX)^-1 with W the working weights **at the final
coefficients** (R's glm reports the weights of the last least-squares fit, i.e. of
the previous iterate; the two agree as the fit converges, and at R's default
tolerance they differ by about the last deviance change), phi = 1 for fixed-scale
families and otherwise the moment estimate sum_i W_i r_i^2 / (n - p) with working
residuals r_i = (y_i - mu_i) / (dmu/deta)_i, i.e. the Pearson chi-square over the
residual degrees of freedom, also at the final coefficients.  The iterations and
the stopping rule are R's, so the coefficients equal R's iteration for iteration.

Families with a parameter (negative binomial, Tweedie: ``family.code == -1``) use a
NumPy pass built from the family's own methods instead of the numba kernel.
"""
from __future__ import annotations

import time
import warnings
from typing import Sequence
import numpy as np
import pandas as pd
from scipy import linalg


from .._util import user_stacklevel
from ..containers import FitOutput
from ..errors import ConvergenceWarning, DataError, ModelError, SeparationWarning
from ..families import Family, get_family
from ..kernels.glm import irls_pass, weighted_gram
from .linalg import check_full_rank



_SEP_EPS = 10 * np.finfo(float).eps      # R: fitted probabilities numerically 0 or 1


_PIVOT_TOL = 1e-4      # scaled-Cholesky pivots below this: fall back to QR (and rank check)


def weighted_least_squares(X: np.ndarray, W: np.ndarray, z: np.ndarray, *, force_qr: bool = False
         ) -> tuple[np.ndarray, np.ndarray, bool]:
    """beta = (X'WX)^-1 X'Wz, (X'WX)^-1, and whether the QR path was taken.

    Cholesky of the Jacobi-scaled Gram matrix S = D^-1 X'WX D^-1 (D^2 = diag X'WX).
    Its pivot L_jj is the norm of column j of sqrt(W)X orthogonalised against the
    earlier columns, relative to the column's norm: the quantity R's rank check
    (dqrdc2) thresholds.  When a pivot is below 1e-4 the Gram matrix is too
    ill-conditioned to trust, and the solve uses QR of sqrt(W) X instead (which does
    not square the condition number); the caller then runs the exact rank check.
    """
    if not force_qr:
        G, Xtz = weighted_gram(X, W, z)          # one numba pass, no (n, p) temporary
        d = np.sqrt(np.diag(G))
        if np.all(d > 0):
            try:
                c, low = linalg.cho_factor(G / np.outer(d, d), lower=True, check_finite=False)
                ok = np.min(np.abs(np.diag(c))) > _PIVOT_TOL
            except linalg.LinAlgError:
                ok = False
            if ok:
                beta = linalg.cho_solve((c, low), Xtz / d, check_finite=False) / d
                inv = linalg.cho_solve((c, low), np.eye(len(d)), check_finite=False)
                return beta, inv / np.outer(d, d), False
    sw = np.sqrt(W)
    Xw = X * sw[:, None]
    zw = z * sw
    Q, R = np.linalg.qr(Xw)
    beta = linalg.solve_triangular(R, Q.T @ zw)
    Rinv = linalg.solve_triangular(R, np.eye(R.shape[0]))
    return beta, Rinv @ Rinv.T, True


def _check_inputs(X, y, weights, offset, column_names):
    X = np.ascontiguousarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise DataError(f"X must be 2-dimensional, got shape {X.shape}")
    n, p = X.shape
    y = np.ascontiguousarray(y, dtype=np.float64)
    weights = np.ones(n) if weights is None else np.ascontiguousarray(weights, dtype=np.float64)
    offset = np.zeros(n) if offset is None else np.ascontiguousarray(offset, dtype=np.float64)
    for label, arr in (("response", y), ("weights", weights), ("offset", offset)):
        if arr.shape != (n,):
            raise DataError(f"{label} has shape {arr.shape}, expected ({n},) to match X")
        bad = ~np.isfinite(arr)
        if bad.any():
            raise DataError(f"{label} has a non-finite value at row {int(np.flatnonzero(bad)[0])}")
    bad = ~np.isfinite(X)
    if bad.any():
        i, j = map(int, np.argwhere(bad)[0])
        raise DataError(f"column {column_names[j]!r} has a non-finite value at row {i}")
    if np.any(weights < 0):
        raise DataError(f"weights must be non-negative; row {int(np.flatnonzero(weights < 0)[0])} "
                        "is negative")
    return X, y, weights, offset


def _check_rank(X: np.ndarray, W: np.ndarray, rtol: float, column_names) -> None:
    """ModelError naming the aliased columns of sqrt(W) X (rows with W > 0), if any."""
    check_full_rank(X, W, rtol, column_names)


def family_pass(family: Family):
    """The row pass ``(y, w, eta, offset, mu, W, z) -> (deviance, all_valid)`` for the family:
    the numba kernel :func:`impactglm.kernels.glm.irls_pass` for coded families, else the
    same formulas (see kernels/glm.py) with the family's NumPy methods."""
    if family.code >= 0:
        lc, fc = family.link.code, family.code
        return lambda y, w, eta, offset, mu, W, z: irls_pass(y, w, eta, offset, lc, fc, mu, W, z)
    link = family.link

    def numpy_pass(y, w, eta, offset, mu, W, z):
        with np.errstate(all="ignore"):
            mu[:] = link.inverse(eta)
            ok = family.valid_mu(mu) and link.valid_eta(eta)
            d = link.mu_eta(eta)
            good = (w > 0.0) & (d != 0.0)
            W[:] = np.where(good, w * d * d / family.variance(mu), 0.0)
            z[:] = np.where(good, (eta - offset) + (y - mu) / np.where(good, d, 1.0), eta - offset)
            pos = w > 0.0
            dev = float(np.sum(w[pos] * family.unit_deviance(y[pos], mu[pos])))
        return dev, bool(ok)
    return numpy_pass


def fit_irls(X: np.ndarray, y: np.ndarray, weights: np.ndarray | None, offset: np.ndarray | None,
             family: str | Family, *, maxiter: int = 25, tol: float = 1e-8,
             column_names: Sequence[str] | None = None, verbose: bool = False,
             eta_start: np.ndarray | None = None) -> FitOutput:
    """Fit a GLM by IRLS exactly as R's ``glm.fit`` (see the module docstring).

    ``eta_start``: starting linear predictor (offset included; R's ``etastart``), else
    the family's starting means.  ``column_names`` only serve error messages (aliased columns).  Raises
    ModelError for a rank-deficient X or when no valid start exists; warns
    ConvergenceWarning (maxiter reached, or stopped at a boundary) and
    SeparationWarning (binomial fitted probabilities numerically 0 or 1, poisson
    rates numerically 0).
    """
    family = get_family(family)
    n, p = np.shape(X)
    column_names = list(column_names) if column_names is not None else [f"x{j}" for j in range(p)]
    X, y, weights, offset = _check_inputs(X, y, weights, offset, column_names)
    n_good = int(np.sum(weights > 0))
    if n_good < p:
        raise ModelError(f"{n_good} rows with positive weight cannot identify {p} coefficients")
    step = family_pass(family)

    mu = np.empty(n)
    W, z = np.empty(n), np.empty(n)
    if eta_start is not None:
        eta = np.array(eta_start, dtype=np.float64)
    else:
        with np.errstate(all="ignore"):
            eta = family.link.link(family.initial_mu(y, weights))
    devold, ok = step(y, weights, eta, offset, mu, W, z)
    if not (ok and np.isfinite(devold)):
        raise ModelError(f"cannot find valid starting values for the {family.name} family with "
                         f"the {family.link.name} link (check the response range)")

    rank_tol = min(1e-7, tol / 1000)          # R's glm.fit: min(1e-7, epsilon / 1000)
    worse_tol = max(tol, 1e-10)               # deviance increases below this are rounding
    force_qr = False
    beta = coefold = None
    cov_unscaled = None
    converged = boundary = False
    crit = np.inf
    rows = []
    t0 = time.perf_counter()
    it = 0
    for it in range(1, maxiter + 1):
        beta, cov_unscaled, used_qr = weighted_least_squares(X, W, z, force_qr=force_qr)
        if used_qr and not force_qr:
            if it == 1:           # R checks the rank of the weighted X; aliased -> ModelError
                _check_rank(X, W, rank_tol, column_names)
            force_qr = True       # ill-conditioned: stay on the QR path
        if not np.all(np.isfinite(beta)):
            if coefold is None:
                raise ModelError("IRLS: non-finite coefficients at the first iteration "
                                 "(is the design degenerate?)")
            warnings.warn(f"IRLS: non-finite coefficients at iteration {it}; returning the "
                          "previous iterate", ConvergenceWarning,
                          stacklevel=user_stacklevel())
            beta = coefold
            eta = X @ beta + offset
            dev, _ = step(y, weights, eta, offset, mu, W, z)
            break
        eta = X @ beta + offset
        dev, ok = step(y, weights, eta, offset, mu, W, z)
        halvings = 0
        boundary = False
        bad = not (ok and np.isfinite(dev))
        worse = coefold is not None and (dev - devold) / (abs(dev) + 0.1) > worse_tol
        if (bad or worse) and coefold is None:
            raise ModelError("IRLS found no valid set of coefficients at the first iteration: "
                             f"the {family.name} family with the {family.link.name} link gives "
                             "fitted means outside the valid range (as R's glm, which asks for "
                             "starting values); a log link often avoids this")
        while bad or worse:
            if halvings >= maxiter:
                if bad:      # R: "inner loop 1; cannot correct step size"
                    raise ModelError("IRLS step halving found no valid step at iteration "
                                     f"{it} ({family.name} family, {family.link.name} link)")
                beta = coefold                    # no decrease along this step: stop here
                eta = X @ beta + offset
                dev, ok = step(y, weights, eta, offset, mu, W, z)
                break
            halvings += 1
            beta = (beta + coefold) / 2
            eta = X @ beta + offset
            dev, ok = step(y, weights, eta, offset, mu, W, z)
            boundary = boundary or bad
            bad = not (ok and np.isfinite(dev))
            worse = (dev - devold) / (abs(dev) + 0.1) > worse_tol
        crit = abs(dev - devold) / (abs(dev) + 0.1)
        rows.append((it, dev, crit, halvings, time.perf_counter() - t0))
        if verbose:
            print(f"IRLS iteration {it}: deviance = {dev:.10g}, change = {crit:.3g}"
                  + (f", {halvings} step halvings" if halvings else ""))
        if crit < tol:
            converged = True
            break
        devold, coefold = dev, beta

    if not converged:
        warnings.warn(f"IRLS did not converge in {it} iterations (relative deviance change "
                      f"{crit:.3g} >= tol {tol:g}); increase maxiter", ConvergenceWarning,
                      stacklevel=user_stacklevel())
    if boundary:
        warnings.warn("IRLS stopped at a boundary value of the parameter space",
                      ConvergenceWarning, stacklevel=user_stacklevel())
    warn_separation(family, mu, weights)

    df_resid = n_good - p
    # the covariance and dispersion at the final coefficients: W, z are this eta's
    cov_unscaled = weighted_least_squares(X, W, z, force_qr=force_qr)[1]
    scale = 1.0 if family.fixed_scale else _dispersion(family, y, mu, eta, W, df_resid)
    log = pd.DataFrame(rows, columns=["iteration", "deviance", "rel_change", "step_halvings",
                                      "seconds"])
    return FitOutput(beta=beta, cov_beta=scale * cov_unscaled, eta=eta, mu=mu.copy(),
                     scale=float(scale), n_iter=it, converged=converged, log=log,
                     extra={"deviance": float(dev), "criterion": float(crit),
                            "boundary": boundary, "df_resid": df_resid,
                            "working_weights": W.copy()})


def _dispersion(family: Family, y, mu, eta, W, df_resid: int) -> float:
    """R's summary.glm dispersion: sum W r^2 / df_resid with working residuals r."""
    if df_resid <= 0:
        return float("nan")
    good = W > 0
    r = (y[good] - mu[good]) / family.link.mu_eta(eta[good])
    return float(np.sum(W[good] * r * r) / df_resid)


def warn_separation(family: Family, mu: np.ndarray, weights: np.ndarray) -> None:
    """R's glm.fit warnings: binomial fitted probabilities within 10 eps of 0 or 1, poisson
    fitted rates below 10 eps, over rows with positive weight (also used after ^ fits)."""
    pos = weights > 0
    if family.name == "binomial":
        k = int(np.sum(((mu > 1 - _SEP_EPS) | (mu < _SEP_EPS)) & pos))
        if k:
            warnings.warn(f"fitted probabilities numerically 0 or 1 occurred in {k} row(s): "
                          "(quasi-)complete separation; estimates and standard errors of the "
                          "separating terms are not meaningful", SeparationWarning,
                          stacklevel=user_stacklevel())
    elif family.name == "poisson":
        k = int(np.sum((mu < _SEP_EPS) & pos))
        if k:
            warnings.warn(f"fitted rates numerically 0 occurred in {k} row(s)",
                          SeparationWarning, stacklevel=user_stacklevel())


def null_deviance(y: np.ndarray, weights: np.ndarray, offset: np.ndarray, family: str | Family,
                  intercept: bool = True) -> float:
    """Deviance of the null model, as R's glm: intercept only (refitted when there is an
    offset), or mu = g^-1(offset) without an intercept."""
    family = get_family(family)
    y = np.asarray(y, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    offset = np.asarray(offset, dtype=np.float64)
    if not intercept:
        return family.deviance(y, family.link.inverse(offset), weights)
    if np.any(offset != 0):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = fit_irls(np.ones((len(y), 1)), y, weights, offset, family)
        return fit.extra["deviance"]
    total = np.sum(weights)
    if total <= 0:
        return float("nan")
    mu = np.full(len(y), np.sum(weights * y) / total)
    return family.deviance(y, mu, weights)

"""Empirical-Bayes estimation of the prior scales tau_k of the ^ factors (prior_sd="auto").

Gaussian (identity link): the model y = offset + X beta + sum_k a_k[c_k] + e with
a_k ~ N(0, tau_k^2), e ~ N(0, sigma^2 / pw) IS the linear mixed model
y - offset ~ X + (1|c_1) + ... + (1|c_K).  tau_k and sigma are the REML (default) or
ML estimates of the LMM fitter (:func:`impactglm.lmm_core.fit_lmm_arrays`, lme4's
profiled criterion: one implementation in the package), tau_k = theta_k sigma.

Binomial and poisson: the criterion that ``glmer(..., nAGQ = 0)`` minimises, the
Laplace approximation at the joint penalised-IRLS mode (beta, a) for given tau:

    c(tau) = sum_i pw_i d(y_i, mu_i) + sum_k ||a_k||^2 / tau_k^2 + log det(I + Lambda Z'WZ Lambda)

with Lambda = diag(tau_k over the levels of factor k) and W the IRLS weights at the
mode.  Since I + Lambda Z'WZ Lambda = Lambda D Lambda with D = Z'WZ + Lambda^-2 the level
block of the penalised Hessian,

    log det(...) = sum_k q_k log tau_k^2 + log det D.

log det D is exact for one factor (D is diagonal: sum_l log(W_l + 1/tau^2)) and for
several factors when all but the largest are small (the largest factor's diagonal
block is eliminated and the small Schur complement is factored densely); for large
crossed factors it uses the diagonal sum_l log D_ll (an upper bound by Hadamard's
inequality; it neglects the cross-factor terms of Z'WZ: documented approximation).

Search: first the fixed point tau_k^2 = ||a_k||^2 / edf_k, edf_k = q_k - sum_{l in k}
[D^-1]_ll / tau_k^2 (the stationarity condition of c with W held at the mode; [D^-1]_ll
exact where log det D is, else 1/D_ll), interleaved with the mode iterations.  Then c
itself is minimised over log tau, each evaluation a warm-started mode solve: bounded
Brent for one factor; Nelder-Mead for several factors when n <= POLISH_MAX_ROWS.  For
larger crossed designs the fixed point is the estimate (it differs from the minimiser of
c only through the dependence of W on the mode; documented approximation).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import linalg, optimize


from ..errors import ModelError, SingularFitWarning
from ..mixed.core import fit_lmm_arrays
from .linalg import level_schur, schur_inverse_diag
from .scalar import initial_state, newton_loop
from .problem import reprice

__all__ = ["estimate_tau", "TauEstimate", "laplace_criterion", "log_det_levels"]

_LOG_TAU_BOUNDS = (math.log(1e-4), math.log(1e2))


@dataclass
class TauEstimate:
    """Estimated prior scales (one per factor), the gaussian scale sigma^2, the criterion."""

    taus: tuple
    scale: float | None
    criterion: float
    n_evaluations: int
    state: object = None            # solver State at the mode (warm start), GLM families


def estimate_tau(prob, *, method: str = "reml", tol: float = 1e-8, verbose: bool = False,
                 polish: bool = True) -> TauEstimate:
    """Estimate tau_k for the LevelProblem ``prob`` (see the module docstring)."""
    fam = prob.family
    if fam.name == "gaussian":
        if fam.link.name != "identity":
            raise ModelError("prior_sd='auto' for the gaussian family needs the identity link; "
                             "give prior_sd as numbers for other links")
        return _gaussian_lmm(prob, method)
    if method not in ("reml", "ml", "laplace"):
        raise ModelError(f"method must be 'reml', 'ml' or 'laplace', not {method!r}")
    return _glmm_laplace(prob, tol=tol, verbose=verbose, polish=polish)


# ----------------------------------------------------------------------------- gaussian

def _gaussian_lmm(prob, method: str) -> TauEstimate:
    if method not in ("reml", "ml"):
        raise ModelError(f"method must be 'reml' or 'ml' for the gaussian family, not {method!r}")
    X, y, pw, off = prob.original_arrays()
    blocks = [(codes, int(q)) for codes, q in prob.factor_codes()]
    fit = fit_lmm_arrays(X, y - off, blocks, pw, reml=(method == "reml"))
    taus = tuple(float(t) * fit.sigma for t in fit.theta)
    for k, t in enumerate(taus):
        if t <= 1e-8 * fit.sigma:
            warnings.warn(f"factor {prob.names[k]!r}: the estimated prior sd is 0 (singular fit); "
                          f"its effects are all 0", SingularFitWarning, stacklevel=3)
    taus = tuple(max(t, 1e-8 * fit.sigma) for t in taus)
    return TauEstimate(taus, fit.sigma ** 2, float(fit.criterion), int(fit.n_evals))


# ----------------------------------------------------------------------------- GLMM (nAGQ = 0)

def log_det_levels(prob, W: np.ndarray, lam_l: np.ndarray) -> tuple[float, bool]:
    """(log det D, exact?) for D = Z'WZ + diag(lam) at the weights stored in ``prob``."""
    Dd = W + lam_l
    if prob.K == 1:
        return float(np.sum(np.log(Dd))), True
    parts = level_schur(prob, Dd, include_beta=False)
    if parts is None:
        return float(np.sum(np.log(Dd))), False
    S, D1 = parts[0], parts[1]
    c = linalg.cho_factor(S, lower=True)
    return float(np.sum(np.log(D1)) + 2.0 * np.sum(np.log(np.diag(c[0])))), True


def laplace_criterion(prob, st, lam_l: np.ndarray) -> float:
    """c(tau) at the mode ``st`` (st.dev, st.a, st.W from the last pass at the mode)."""
    ld, _ = log_det_levels(prob, st.W, lam_l)
    log_tau2 = float(np.sum(-np.log(lam_l)))
    return float(st.dev + np.dot(lam_l * st.a, st.a) + log_tau2 + ld)


def level_variances(prob, W: np.ndarray, lam_l: np.ndarray) -> np.ndarray:
    """diag(D^-1) for the level block D = Z'WZ + diag(lam): exact for one factor and for
    small crossed designs (:func:`impactglm.solver.level_schur`), else 1/D_ll."""
    Dd = W + lam_l
    if prob.K > 1:
        parts = level_schur(prob, Dd, include_beta=False)
        if parts is not None:
            return schur_inverse_diag(prob, *parts)[1]
    return 1.0 / Dd


def _fixed_point_update(prob, st, lam_l: np.ndarray) -> np.ndarray:
    """tau_k^2 = ||a_k||^2 / edf_k with edf_k = q_k - lam_k sum_{l in k} [D^-1]_ll.

    This is the stationarity condition dc/dtau_k^2 = 0 with W held at the mode
    (d log det D / d lam_k = sum_{l in k} [D^-1]_ll); for one factor edf_k =
    sum_l W_l / (W_l + lam_k).
    """
    v = level_variances(prob, st.W, lam_l)
    new = np.empty(prob.K)
    for k in range(prob.K):
        sl = slice(prob.starts[k], prob.starts[k + 1])
        lam = lam_l[sl][0] if sl.stop > sl.start else 1.0
        edf = float(prob.q[k]) - lam * float(np.sum(v[sl]))
        ss = float(np.dot(st.a[sl], st.a[sl]))
        new[k] = math.sqrt(ss / edf) if edf > 1e-12 and ss > 0 else math.exp(_LOG_TAU_BOUNDS[0])
    return np.clip(new, math.exp(_LOG_TAU_BOUNDS[0]), math.exp(_LOG_TAU_BOUNDS[1]))


POLISH_MAX_ROWS = 50_000       # crossed factors: minimise c exactly only up to this many rows


def _glmm_laplace(prob, *, tol: float, verbose: bool, polish: bool) -> TauEstimate:
    K = prob.K
    taus = np.full(K, 0.5)
    lam_l = prob.expand(1.0 / taus ** 2)
    st = initial_state(prob, list(taus), 1.0)
    n_eval = 0
    will_polish = polish and (K == 1 or prob.n <= POLISH_MAX_ROWS)
    fp_tol = 1e-4 if will_polish else 1e-5
    # 1. fixed point interleaved with mode iterations (two Newton iterations per update)
    for it in range(500):
        if st.G is not None:            # no new pass: only the prior term of f changed
            reprice(st, lam_l, 1.0)
        st = newton_loop(prob, st, lam_l, 1.0, tol=tol, maxiter=2)
        n_eval += 1
        new = _fixed_point_update(prob, st, lam_l)
        change = float(np.max(np.abs(np.log(new / taus))))
        taus = new
        lam_l = prob.expand(1.0 / taus ** 2)
        if verbose:
            print(f"tau fixed point {it}: {np.array2string(taus, precision=6)} (change {change:.2e})")
        if change < fp_tol and st.converged:
            break

    def crit(log_taus: np.ndarray) -> float:
        nonlocal st, n_eval
        t = np.exp(np.asarray(log_taus, dtype=float))
        lam = prob.expand(1.0 / t ** 2)
        reprice(st, lam, 1.0)
        st = newton_loop(prob, st, lam, 1.0, tol=tol, maxiter=200)
        n_eval += 1
        val = laplace_criterion(prob, st, lam)
        if verbose:
            print(f"laplace criterion {val:.10f} at tau = {np.array2string(t, precision=6)}")
        return val

    x = np.log(taus)
    if will_polish:
        if K == 1:
            lo, hi = max(x[0] - 0.2, _LOG_TAU_BOUNDS[0]), min(x[0] + 0.2, _LOG_TAU_BOUNDS[1])
            res = optimize.minimize_scalar(lambda v: crit(np.array([v])), bounds=(lo, hi),
                                           method="bounded", options={"xatol": 1e-6})
            x = np.array([res.x])
        else:
            res = optimize.minimize(crit, x, method="Nelder-Mead",
                                    options={"xatol": 1e-3, "fatol": 1e-6, "maxfev": 40,
                                             "initial_simplex": np.vstack([x, x + 0.01 * np.eye(K)])})
            x = res.x
    value = crit(x)
    taus = np.exp(x)
    for k in range(K):
        if taus[k] <= math.exp(_LOG_TAU_BOUNDS[0]) * 1.0001:
            warnings.warn(f"factor {prob.names[k]!r}: the estimated prior sd is at its lower bound "
                          f"(singular fit)", SingularFitWarning, stacklevel=3)
    return TauEstimate(tuple(float(t) for t in taus), None, value, n_eval, st)

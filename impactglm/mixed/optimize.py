"""Minimising the profiled REML/ML criterion over theta, and proving the minimum.

theta holds the lower triangles of the relative covariance factors T_k column by
column (lme4's order).  The criterion depends on theta only through
Sigma_k = T_k T_k', so negating a whole column j of T_k (T_k -> T_k D_j) changes
nothing:

    f(D x) = f(x),     grad f(D x) = D grad f(x),     hess f(D x) = D hess f(x) D.

lme4 removes this symmetry by bounding the diagonal, T_k[j, j] >= 0, and only it.
On that bound the sign of the column below the diagonal is arbitrary, and a
projected-gradient method can stop at a false Karush-Kuhn-Tucker point: with
T_k[j, j] = 0 and a non-zero column below it, the derivative in T_k[j, j] can be
positive (the bound holds it) while at the mirror image (column negated) it is
minus that, pointing into the feasible set.  Two safeguards:

* inside the quasi-Newton iteration, a diagonal element on its bound with a
  positive derivative and a non-zero column below is *mirrored* (x, g and the
  BFGS matrix transformed by D), which frees it (:func:`quasi_newton`);
* after the iteration, :func:`certify` proves the answer.  It first maps theta to
  the canonical factor of each Sigma_k (the Cholesky factor whose column is zero
  below a zero pivot; same criterion).  There the criterion is stationary to
  first order in every column with a zero diagonal (Sigma_k changes only to second
  order in it), so optimality needs (a) the projected gradient ~0 in the other
  coordinates and (b) no descent along the moves off the boundary: with
  v = (T[j, j], T[j+1:, j]), f(x + h v) = f(x) + h^2 v'Q v + O(h^4), Q estimated by
  differences, and a negative eigenvalue of Q is followed to a lower point.  When
  the certificate finds a lower point the optimiser restarts from it.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
from scipy import optimize

CURVATURE_STEP = 1e-3        # h of the off-boundary difference quotients (x the scale of T)
MAX_RESTARTS = 6


# --------------------------------------------------------------------------- theta layout


def theta_pairs(r: int) -> list[tuple[int, int]]:
    """(row, col) of the lower triangle of an r x r matrix, column by column (lme4's order)."""
    return [(i, j) for j in range(r) for i in range(j, r)]


def theta_to_T(theta_k: np.ndarray, r: int) -> np.ndarray:
    """The lower-triangular relative covariance factor T_k of one block."""
    T = np.zeros((r, r))
    for value, (i, j) in zip(theta_k, theta_pairs(r)):
        T[i, j] = value
    return T


def T_to_theta(T: np.ndarray) -> np.ndarray:
    """The inverse of :func:`theta_to_T`."""
    return np.array([T[i, j] for i, j in theta_pairs(T.shape[0])])


def theta_lower_bounds(blocks: Sequence[Any]) -> np.ndarray:
    """0 for the diagonal elements of each T_k, -inf for the off-diagonal ones."""
    return np.array([0.0 if i == j else -np.inf for b in blocks for (i, j) in theta_pairs(b.r)])


def theta_start(blocks: Sequence[Any]) -> np.ndarray:
    """lme4's default start: T_k = I."""
    return np.array([1.0 if i == j else 0.0 for b in blocks for (i, j) in theta_pairs(b.r)])


def theta_columns(blocks: Sequence[Any]) -> list[np.ndarray]:
    """Per column j of each T_k: the theta indices of T_k[j:, j] (the diagonal first)."""
    out, pos = [], 0
    for b in blocks:
        for j in range(b.r):
            out.append(np.arange(pos, pos + b.r - j))
            pos += b.r - j
    return out


def canonical_factor(T: np.ndarray) -> np.ndarray:
    """The Cholesky factor of Sigma = T T' with a zero column below each zero pivot.

    Equal to T when its diagonal is positive; otherwise the representative of the
    set {T Q : T Q lower triangular, Q orthogonal} on which the certificate works.
    """
    S = T @ T.T
    r = T.shape[0]
    L = np.zeros_like(T)
    tiny = 1e-14 * max(float(np.max(np.diag(S))), 1e-300)
    for j in range(r):
        d = S[j, j] - L[j, :j] @ L[j, :j]
        if d <= tiny:
            continue
        L[j, j] = math.sqrt(d)
        L[j + 1:, j] = (S[j + 1:, j] - L[j + 1:, :j] @ L[j, :j]) / L[j, j]
    return L


def canonical_theta(theta: np.ndarray, blocks: Sequence[Any]) -> np.ndarray:
    """theta with each block that has a zero diagonal element replaced by its canonical factor."""
    out, pos = np.array(theta, dtype=float), 0
    for b in blocks:
        k = b.r * (b.r + 1) // 2
        T = theta_to_T(out[pos:pos + k], b.r)
        if b.r > 1 and np.any(np.diag(T) <= 0):
            out[pos:pos + k] = T_to_theta(canonical_factor(T))
        pos += k
    return out


# --------------------------------------------------------------------------- certificate


@dataclass(frozen=True)
class Certificate:
    """What :func:`certify` proved at theta.

    ``ok``: the projected gradient is below ``gtol`` and no move off the boundary
    lowers the criterion.  ``better``: a point with a lower criterion when one was
    found (a restart point), else None.
    """

    ok: bool
    theta: np.ndarray
    value: float
    projected_gradient: float
    gtol: float
    min_curvature: float
    better: np.ndarray | None
    better_value: float


def certify(problem: Any, theta: np.ndarray, reml: bool) -> Certificate:
    """Check first- and second-order optimality of theta (module docstring)."""
    blocks = problem.blocks
    lower = theta_lower_bounds(blocks)
    x = canonical_theta(np.maximum(theta, lower), blocks)
    f0, g = problem.criterion_and_gradient(x, reml)
    f_in = problem.criterion(np.maximum(theta, lower), reml)
    if not f0 <= f_in + 1e-12 * max(1.0, abs(f_in)):     # canonical form is no worse (rounding)
        x, (f0, g) = np.maximum(theta, lower), problem.criterion_and_gradient(np.maximum(theta, lower), reml)
    scale = max(1.0, abs(f0))
    gtol = 1e-6 * scale
    at_bound = (x <= lower) & np.isfinite(lower)
    pg = np.where(at_bound, np.minimum(g, 0.0), g)
    pg_max = float(np.max(np.abs(pg))) if pg.size else 0.0
    best, best_value, min_curv = None, f0, math.inf
    decrease = 1e-10 * scale
    for col in theta_columns(blocks):
        if x[col[0]] > 0:
            continue
        # the sign of T[j, j] is the one fixed by the bound; the column below is free
        h = CURVATURE_STEP * max(1.0, float(np.max(np.abs(x))))
        d = col.size
        fd = np.empty(d)
        for a in range(d):
            e = x.copy()
            e[col[a]] += h
            fd[a] = problem.criterion(e, reml)
        Q = np.empty((d, d))
        for a in range(d):
            Q[a, a] = (fd[a] - f0) / h ** 2
            for b in range(a):
                e = x.copy()
                e[col[a]] += h
                e[col[b]] += h
                Q[a, b] = Q[b, a] = ((problem.criterion(e, reml) - f0) / h ** 2
                                     - Q[a, a] - Q[b, b]) / 2.0
        w, V = np.linalg.eigh(Q)
        min_curv = min(min_curv, float(w[0]))
        if w[0] >= 0:
            continue
        v = V[:, 0] * (1.0 if V[0, 0] >= 0 else -1.0)
        for s in 0.5 ** np.arange(0, 20):
            cand = x.copy()
            cand[col] += s * max(1.0, float(np.max(np.abs(x)))) * v
            val = problem.criterion(cand, reml)
            if val < best_value - decrease:
                best, best_value = cand, val
                break
    ok = pg_max <= gtol and best is None
    return Certificate(ok, x, f0, pg_max, gtol, min_curv, best, best_value)


# --------------------------------------------------------------------------- the optimiser


def optimize_theta(problem: Any, reml: bool = True, start: np.ndarray | str | None = None,
                   method: str = "auto", tol: float = 1e-13, maxiter: int = 2000,
                   verbose: bool = False):
    """Minimise the profiled criterion over theta subject to diag(T_k) >= 0.

    ``method="auto"``: :func:`quasi_newton` on the analytic gradient (L-BFGS-B from
    where it stopped if it fails), then :func:`certify`; while the certificate finds
    a lower point, restart from it (at most MAX_RESTARTS times; then COBYQA from the
    best point).  Other methods run once, uncertified.  Returns (theta, value,
    n_evals, log DataFrame, converged, message, certificate or None).
    """
    lower = theta_lower_bounds(problem.blocks)
    if start is None:
        x0 = problem.moment_start() if method in ("auto", "gradient") else theta_start(problem.blocks)
    elif isinstance(start, str) and start == "lme4":
        x0 = theta_start(problem.blocks)
    else:
        x0 = np.asarray(start, dtype=float).copy()
    x0 = np.maximum(x0, lower)
    rows: list = []
    t0 = time.perf_counter()

    def record(x, val):
        rows.append((len(rows) + 1, time.perf_counter() - t0, val, *x))
        if verbose:
            print(f"{len(rows):4d} {val: .10f} {np.array2string(x, precision=6)}")

    def f(x):
        x = np.maximum(x, lower)
        val = problem.criterion(x, reml)
        record(x, val)
        return val if np.isfinite(val) else 1e300

    def fg(x):
        x = np.maximum(x, lower)
        val, grad = problem.criterion_and_gradient(x, reml)
        record(x, val)
        if not np.isfinite(val):
            return 1e300, np.zeros_like(x)
        return val, grad

    bounds = [(lo if np.isfinite(lo) else None, None) for lo in lower]
    columns = theta_columns(problem.blocks)
    cert = None
    if method in ("auto", "newton"):
        x, value, ok, msg = _newton_or_lbfgsb(fg, x0, lower, bounds, columns, tol, maxiter,
                                              fallback=(method == "auto"))
        if method == "auto":
            restarts = 0
            while True:
                cert = certify(problem, x, reml)
                if cert.ok or restarts >= MAX_RESTARTS:
                    break
                restarts += 1
                x_new = cert.better if cert.better is not None else cert.theta
                x, value, ok, msg = _newton_or_lbfgsb(fg, x_new, lower, bounds, columns, tol,
                                                      maxiter, fallback=True)
                if cert.better is None and value >= cert.value - 1e-12 * max(1.0, abs(cert.value)):
                    # the gradient test failed but no lower point exists nearby: polish
                    res = optimize.minimize(f, cert.theta, method="cobyqa",
                                            bounds=optimize.Bounds(lower, np.inf),
                                            options={"maxfev": maxiter, "initial_tr_radius": 1e-2,
                                                     "final_tr_radius": 1e-9})
                    if res.fun < value:
                        x, value = np.maximum(res.x, lower), float(res.fun)
            x, value = cert.theta, cert.value
            ok = cert.ok
            msg = (f"{msg}; certified: projected gradient {cert.projected_gradient:.2g} <= "
                   f"{cert.gtol:.2g}, no descent off the boundary" if cert.ok else
                   f"{msg}; NOT certified after {restarts} restarts: projected gradient "
                   f"{cert.projected_gradient:.2g} (tolerance {cert.gtol:.2g})"
                   + (", a lower point exists off the boundary" if cert.better is not None else ""))
            if restarts:
                msg += f" ({restarts} restart(s) from points the certificate found)"
    elif method == "gradient":
        x, value, ok, msg = _lbfgsb(fg, x0, lower, bounds, tol, maxiter)
    elif method == "cobyqa":
        res = optimize.minimize(f, x0, method="cobyqa", bounds=optimize.Bounds(lower, np.inf),
                                options={"maxfev": maxiter, "initial_tr_radius": 0.5,
                                         "final_tr_radius": 1e-7})
        x, value, ok, msg = np.maximum(res.x, lower), float(res.fun), bool(res.success), str(res.message)
    elif method == "L-BFGS-B":
        res = _lbfgsb_fd(f, x0, lower, bounds, tol, maxiter)
        x, value, ok, msg = np.maximum(res.x, lower), float(res.fun), bool(res.success), str(res.message)
    else:
        res = optimize.minimize(f, x0, method=method, bounds=bounds,
                                options={"maxiter": maxiter, "xatol": 1e-9, "fatol": 1e-12}
                                if method == "Nelder-Mead" else {"maxiter": maxiter})
        x, value, ok, msg = np.maximum(res.x, lower), float(res.fun), bool(res.success), str(res.message)
    names = ["eval", "seconds", "criterion"] + [f"theta[{j}]" for j in range(x.size)]
    log = pd.DataFrame(rows, columns=names)
    return x, value, len(rows), log, bool(ok), msg, cert


def _newton_or_lbfgsb(fg, x0, lower, bounds, columns, tol, maxiter, fallback):
    """Quasi-Newton; on failure (fallback=True) L-BFGS-B from where it stopped."""
    try:
        x, value, ok, msg, _ = quasi_newton(fg, x0, lower, maxiter=min(maxiter, 200), rtol=tol,
                                            columns=columns)
    except np.linalg.LinAlgError as e:
        x, value, ok, msg = x0, math.nan, False, str(e)
    if not ok and fallback:
        x, value, ok, msg = _lbfgsb(fg, x, lower, bounds, tol, maxiter)
    return x, value, ok, msg


def _lbfgsb(fg, x0, lower, bounds, tol, maxiter):
    """L-BFGS-B on the analytic gradient; a line-search failure at the rounding level of
    the criterion is accepted when the projected gradient is small on its own scale."""
    last: dict = {}

    def fg_kept(x):
        val, grad = fg(x)
        if val < last.get("val", np.inf):
            last.update(val=val, grad=grad, x=np.maximum(x, lower))
        return val, grad

    res = optimize.minimize(fg_kept, x0, jac=True, method="L-BFGS-B", bounds=bounds,
                            options={"maxiter": maxiter, "ftol": tol, "gtol": 1e-5, "maxcor": 20})
    ok, msg = bool(res.success), str(res.message)
    if not ok and "grad" in last:
        pg = np.where((last["x"] <= lower) & (last["grad"] > 0), 0.0, last["grad"])
        if np.max(np.abs(pg)) <= 1e-6 * max(1.0, abs(last["val"])):
            ok, msg = True, f"{msg} (accepted: projected gradient {np.max(np.abs(pg)):.2g})"
    x = np.maximum(res.x, lower)
    return x, float(res.fun), ok, msg


def mirror(x: np.ndarray, g: np.ndarray, lower: np.ndarray,
           columns: Sequence[np.ndarray]) -> np.ndarray:
    """The sign vector D (+-1) that frees diagonal elements held on their bound falsely.

    A column whose diagonal element is on its bound (0) with a positive derivative
    and a non-zero part below is negated: the criterion is unchanged and the
    derivative in the diagonal element changes sign (module docstring).
    """
    D = np.ones_like(x)
    for col in columns:
        j = col[0]
        if col.size > 1 and x[j] <= lower[j] and g[j] > 0 and np.any(x[col[1:]] != 0):
            D[col] = -1.0
    return D


def quasi_newton(fg: Callable, x0: np.ndarray, lower: np.ndarray, maxiter: int = 200,
                 rtol: float = 1e-13, columns: Sequence[np.ndarray] = ()):
    """Bound-constrained quasi-Newton minimisation with an analytic gradient.

    The initial Hessian comes from forward differences of the gradient (one extra
    gradient per parameter, symmetrised and made positive definite), then BFGS
    updates.  Each step is a Newton step on the free variables (a variable on its
    lower bound with a positive gradient is held there, after :func:`mirror` has
    freed those whose column has the other sign), projected onto the bounds,
    with backtracking (Armijo).  Stops when the Newton decrement g'H^-1 g / 2 is
    below ``rtol * max(1, |f|)``.  Returns (x, f, converged, message, n_iter).
    """
    x = np.maximum(np.asarray(x0, dtype=float), lower)
    k = x.size
    f, g = fg(x)
    if not np.isfinite(f):
        return x, f, False, "non-finite criterion at the start", 0
    H = np.empty((k, k))
    for j in range(k):
        h = 1e-4 * max(abs(x[j]), 0.1)
        e = np.zeros(k)
        e[j] = h
        fj, gj = fg(x + e)
        H[:, j] = (gj - g) / h if np.isfinite(fj) else np.nan
    H = 0.5 * (H + H.T)
    H = _make_pd(H)
    scale = max(1.0, abs(f))
    radius = max(1.0, float(np.max(np.abs(x))))
    for it in range(1, maxiter + 1):
        D = mirror(x, g, lower, columns)
        if np.any(D < 0):
            x, g, H = D * x, D * g, H * np.outer(D, D)
        free = ~((x <= lower) & (g > 0))
        step = np.zeros(k)
        if free.any():
            Hf = H[np.ix_(free, free)]
            step[free] = -np.linalg.solve(Hf, g[free])
        decrement = -0.5 * g @ step
        if decrement <= rtol * scale:
            return x, f, True, f"Newton decrement {decrement:.2g} <= {rtol:g} x max(1, |f|)", it
        longest = np.max(np.abs(step))
        if longest > radius:                      # trust radius on the largest change
            step *= radius / longest
        alpha, accepted = 1.0, False
        for _ in range(40):
            x_new = np.maximum(x + alpha * step, lower)
            f_new, g_new = fg(x_new)
            if np.isfinite(f_new) and f_new <= f + 1e-4 * (g @ (x_new - x)) + 1e-14 * scale:
                accepted = True
                break
            alpha *= 0.5
        if not accepted:
            return x, f, False, "line search failed", it
        s_, y_ = x_new - x, g_new - g
        moved = np.max(np.abs(s_))
        radius = max(radius, 2.0 * moved) if alpha == 1.0 else max(moved, 1e-8)
        x, f, g = x_new, f_new, g_new
        sy = s_ @ y_
        if sy > 1e-12 * np.linalg.norm(s_) * np.linalg.norm(y_):
            Hs = H @ s_
            H = H - np.outer(Hs, Hs) / (s_ @ Hs) + np.outer(y_, y_) / sy
        if np.max(np.abs(s_)) < 1e-12:
            return x, f, True, "step below 1e-12", it
    return x, f, False, "iteration limit reached", maxiter


def _make_pd(H: np.ndarray) -> np.ndarray:
    """H, or H + c I, positive definite (c from its smallest eigenvalue)."""
    if not np.all(np.isfinite(H)):
        return np.eye(H.shape[0])
    w = np.linalg.eigvalsh(H)
    if w[0] > 1e-8 * max(1.0, w[-1]):
        return H
    return H + (abs(w[0]) + 1e-6 * max(1.0, abs(w[-1]))) * np.eye(H.shape[0])


def _lbfgsb_fd(f, x0, lower, bounds, tol, maxiter):
    """L-BFGS-B with a finite-difference gradient that respects the lower bounds."""
    h = 1e-6

    def fg(x):
        fx = f(x)
        g = np.empty_like(x)
        for j in range(x.size):
            e = np.zeros_like(x)
            step = h * max(1.0, abs(x[j]))
            e[j] = step
            if x[j] - step >= lower[j]:
                g[j] = (f(x + e) - f(x - e)) / (2 * step)
            else:                                     # one-sided at the boundary
                g[j] = (-3 * fx + 4 * f(x + e) - f(x + 2 * e)) / (2 * step)
        return fx, g

    return optimize.minimize(fg, x0, jac=True, method="L-BFGS-B", bounds=bounds,
                             options={"maxiter": maxiter, "ftol": tol, "gtol": 1e-6})

"""Empirical-Bayes estimation of the prior scales tau_k of the ^ factors (prior_sd="auto").

Gaussian (identity link): the model y = offset + X beta + sum_k a_k[c_k] + e with
a_k ~ N(0, tau_k^2), e ~ N(0, sigma^2 / pw) IS the linear mixed model
y - offset ~ X + (1|c_1) + ... + (1|c_K).  tau_k and sigma are the REML (default) or
ML estimates of the LMM fitter (:func:`impactglm.mixed.core.fit_lmm_arrays`, lme4's
profiled criterion: one implementation in the package), tau_k = theta_k sigma.

Binomial and poisson (``method``):

* ``"nagq0"`` (the default; ``"reml"``, the default of ``fit()``, means it too): the criterion
  ``glmer(..., nAGQ = 0)`` minimises, the Laplace approximation at the JOINT penalised mode
  (beta, a) for given tau,
      c0(tau) = sum_i pw_i d(y_i, mu_i) + sum_k ||a_k||^2 / tau_k^2 + log det(I + Lambda Z'WZ Lambda)
  (W the IRLS weights at the mode);
* ``"laplace"``: glmer's default nAGQ = 1, the same expression with beta moved to the outer
  optimisation (a at its mode given beta and tau), minimised over (tau, beta): the fixed
  effects are then glmer's nAGQ = 1 fixef() and the level effects its conditional modes.

Both are minimised over log tau (and beta) by a bounded quasi-Newton method (:func:`minimise`:
finite-difference Hessian of the gradient at the start, then BFGS) with the exact gradient of
:mod:`impactglm.solvers.laplace` (the dependence of the mode, and of W through it, on tau
included); each evaluation is a warm-started mode solve to ``MODE_TOL``.  log det and the
gradient's traces are exact while the levels outside the largest factor number at most
``laplace.EXACT_LEVEL_LIMIT`` (dense Schur complement), else stochastic Lanczos quadrature
(:mod:`impactglm.solvers.slq`, stated accuracy ``slq.SLQ_PRIOR_SD_RTOL``).  A short
fixed-point phase (tau_k^2 = ||a_k||^2 / edf_k, interleaved with mode iterations) gives the
start.  Non-canonical links (probit, cloglog, ...) use central differences of c in log tau.

Boundary: tau_k is bounded below by TAU_MIN.  When a factor ends there the one-sided gradient
dc/dlog tau_k is reported (``TauEstimate.boundary``); positive means c increases away from 0
(lme4's singular fit, tau = 0), and a SingularFitWarning is issued.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..errors import ModelError, SingularFitWarning
from ..mixed.core import fit_lmm_arrays
from . import laplace, slq
from .scalar import initial_state, solve_mode
from .problem import LevelProblem, State

__all__ = ["estimate_tau", "TauEstimate", "laplace_criterion", "log_det_levels", "GLMM_METHODS"]

TAU_MIN, TAU_MAX = 1e-4, 1e2
_LOG_TAU_BOUNDS = (math.log(TAU_MIN), math.log(TAU_MAX))
MODE_TOL = 1e-10             # mode certificate inside the criterion (the gradient needs the mode)
GLMM_METHODS = ("nagq0", "laplace")


@dataclass
class TauEstimate:
    """Estimated prior scales (one per factor), the gaussian scale sigma^2, the criterion."""

    taus: tuple
    scale: float | None
    criterion: float
    n_evaluations: int
    state: object = None            # solver State at the mode (warm start), GLM families
    final: bool = False             # state IS the fit (nAGQ = 1: beta from the outer optimisation)
    gradient: tuple = ()            # dc / dlog tau_k at the estimate
    boundary: dict = field(default_factory=dict)   # factor -> dc/dlog tau at TAU_MIN
    exact: bool = True              # log det exact (False: stochastic Lanczos quadrature)
    method: str = ""


def estimate_tau(prob, *, method: str | None = "reml", tol: float = 1e-8, verbose: bool = False,
                 polish: bool = True) -> TauEstimate:
    """Estimate tau_k for the LevelProblem ``prob`` (see the module docstring)."""
    fam = prob.family
    if fam.name == "gaussian":
        if fam.link.name != "identity":
            raise ModelError("prior_sd='auto' for the gaussian family needs the identity link; "
                             "give prior_sd as numbers for other links")
        return _gaussian_lmm(prob, method or "reml")
    if method in (None, "reml"):
        method = "nagq0"
    if method not in GLMM_METHODS:
        raise ModelError(f"method must be one of {', '.join(map(repr, GLMM_METHODS))} for the "
                         f"{fam.name} family (glmer nAGQ = 0 / nAGQ = 1), not {method!r}")
    est = _Nagq0(prob, tol, verbose).run()
    if method == "laplace":
        est = _Nagq1(prob, est, tol, verbose).run()
    for k, g in est.boundary.items():
        warnings.warn(f"factor {k!r}: the estimated prior sd is at its lower bound {TAU_MIN:g} "
                      f"(singular fit; dc/dlog tau = {g:.3g} there)", SingularFitWarning, stacklevel=3)
    return est


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
    return TauEstimate(taus, fit.sigma ** 2, float(fit.criterion), int(fit.n_evals), method=method)


# ----------------------------------------------------------------------------- small helpers

def laplace_criterion(prob, st, lam_l: np.ndarray) -> float:
    """c0(tau) at the mode ``st`` (st.dev, st.a, st.W from the last pass at the mode)."""
    lam = lam_l[prob.starts[:-1]]
    probes = None if laplace.ExactLevelBlock.fits(prob) else slq.Probes(prob)
    return laplace.nagq0_value_grad(prob, st, lam, probes, gradient=False)[0]


def log_det_levels(prob, W: np.ndarray, lam_l: np.ndarray) -> tuple[float, bool]:
    """(log det D, exact?) for D = Z'WZ + diag(lam) at the weights stored in ``prob``."""
    probes = None if laplace.ExactLevelBlock.fits(prob) else slq.Probes(prob)
    blk = laplace.level_block(prob, lam_l, W, probes)
    return blk.logdet(), blk.exact


def _fixed_point_taus(prob, st, lam_l: np.ndarray, blk) -> np.ndarray:
    """tau_k^2 = ||a_k||^2 / edf_k, edf_k = q_k - lam_k tr_k(D^-1): dc/dtau_k^2 = 0 with W fixed."""
    dinv, _ = blk.diag_and_rows()
    new = np.empty(prob.K)
    for k in range(prob.K):
        sl = slice(prob.starts[k], prob.starts[k + 1])
        edf = float(prob.q[k]) - float(lam_l[sl][0]) * float(np.sum(dinv[sl]))
        ss = float(np.dot(st.a[sl], st.a[sl]))
        new[k] = math.sqrt(ss / edf) if edf > 1e-12 and ss > 0 else TAU_MIN
    return np.clip(new, TAU_MIN, TAU_MAX)


def minimise(fg, x0: np.ndarray, bounds, *, xtol: float = 1e-8, maxiter: int = 100,
             fd_step: float = 1e-4, max_move: float = 1.0):
    """Bound-constrained quasi-Newton minimisation of a smooth c(x) with its gradient.

    The Hessian starts as forward differences of the gradient (len(x) evaluations) and is
    then updated by BFGS; each step -H^-1 g over the coordinates not held at a bound (a
    coordinate at its bound with the gradient pointing outwards is held) is capped at
    ``max_move`` in every coordinate (log tau: a factor e) and halved until c decreases.
    Stops when the step is below ``xtol`` in every coordinate.  The state of ``fg`` is left at
    the returned x (its last evaluation).  Returns (x, c, gradient).
    """
    lo = np.array([-np.inf if b[0] is None else b[0] for b in bounds])
    hi = np.array([np.inf if b[1] is None else b[1] for b in bounds])
    x = np.clip(np.asarray(x0, dtype=np.float64), lo, hi)
    f, g = fg(x)
    n = x.size
    H = np.empty((n, n))
    for j in range(n):
        e = np.zeros(n)
        e[j] = fd_step if x[j] + fd_step <= hi[j] else -fd_step
        H[:, j] = (fg(x + e)[1] - g) / e[j]
    H = 0.5 * (H + H.T)
    vals, vecs = np.linalg.eigh(H)
    H = (vecs * np.maximum(np.abs(vals), 1e-8 * max(1.0, np.max(np.abs(vals))))) @ vecs.T
    at = None
    for _ in range(maxiter):
        held = ((x <= lo) & (g > 0)) | ((x >= hi) & (g < 0))
        free = ~held
        step = np.zeros(n)
        if free.any():
            step[free] = -np.linalg.solve(H[np.ix_(free, free)], g[free])
        big = float(np.max(np.abs(step), initial=0.0))
        if big > max_move:
            step *= max_move / big
        if float(np.max(np.abs(step), initial=0.0)) <= xtol:
            break
        t = 1.0
        while True:
            xn = np.clip(x + t * step, lo, hi)
            fn, gn = fg(xn)
            if fn <= f + 1e-4 * float(g @ (xn - x)) or t < 1e-6:
                break
            t *= 0.5
        s_, y_ = xn - x, gn - g
        x, f, g = xn, fn, gn
        at = x
        sy = float(s_ @ y_)
        if sy > 1e-12 * float(s_ @ s_):
            Hs = H @ s_
            H = H + np.outer(y_, y_) / sy - np.outer(Hs, Hs) / float(s_ @ Hs)
        if float(np.max(np.abs(s_))) <= xtol:
            break
    if at is None or not np.array_equal(at, x):
        f, g = fg(x)                      # leave fg's state at x
    return x, f, g


class _Outer:
    """Shared bookkeeping of the outer optimisations: warm-started modes, evaluation count."""

    def __init__(self, prob: LevelProblem, tol: float, verbose: bool):
        self.prob, self.verbose = prob, verbose
        self.mode_tol = min(tol, MODE_TOL)
        self.exact = laplace.ExactLevelBlock.fits(prob)
        self.probes = None if self.exact else slq.Probes(prob)
        self.n_eval = 0
        self.canonical = laplace.canonical(prob)

    def _mode(self, problem: LevelProblem, st: State, taus: np.ndarray):
        """(mode, level block there) at prior sds ``taus``, warm-started from ``st``: Newton
        polish on the factored level block (:func:`laplace.newton_polish`), the engine's loop
        first when a polish step fails."""
        lam = 1.0 / taus ** 2
        lam_l = problem.expand(lam)
        self.n_eval += 1

        def evaluate(beta, a):
            return solve_mode(problem, list(taus), lam_l, 1.0, tol=self.mode_tol, maxiter=0,
                              start=State(beta=beta, a=a, n_passes=st.n_passes, log=st.log, t0=st.t0))

        if st.G is None:
            st = evaluate(st.beta, st.a)
        out = laplace.newton_polish(problem, st, lam, evaluate, self.probes)
        if out is None:
            st = solve_mode(problem, list(taus), lam_l, 1.0, tol=self.mode_tol, maxiter=500, start=st)
            out = laplace.newton_polish(problem, st, lam, evaluate, self.probes)
            if out is None:
                return evaluate(st.beta, st.a), None       # prob.w back at st
        return out

    def _boundary(self, theta: np.ndarray, grad: np.ndarray) -> dict:
        return {self.prob.names[k]: float(grad[k]) for k in range(self.prob.K)
                if theta[k] <= _LOG_TAU_BOUNDS[0] + 1e-9}


class _Nagq0(_Outer):
    """min over log tau of c0 (module docstring)."""

    def __init__(self, prob, tol, verbose):
        super().__init__(prob, tol, verbose)
        self.st = None

    def value_grad(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        taus = np.exp(theta)
        self.st, blk = self._mode(self.prob, self.st, taus)
        value, grad, _ = laplace.nagq0_value_grad(self.prob, self.st, 1.0 / taus ** 2, self.probes,
                                                  gradient=self.canonical, blk=blk)
        if not self.canonical:
            grad = self._fd_grad(theta)
            self.st, _ = self._mode(self.prob, self.st, taus)
        if self.verbose:
            print(f"nAGQ=0 criterion {value:.10f} at tau = {np.array2string(taus, precision=7)} "
                  f"gradient {np.array2string(grad, precision=3)}", flush=True)
        return value, grad

    def _fd_grad(self, theta: np.ndarray, h: float = 1e-4) -> np.ndarray:
        g = np.empty(theta.size)
        for k in range(theta.size):
            vals = []
            for s in (h, -h):
                t = theta.copy()
                t[k] += s
                self.st, blk = self._mode(self.prob, self.st, np.exp(t))
                vals.append(laplace.nagq0_value_grad(self.prob, self.st, np.exp(-2 * t), self.probes,
                                                     gradient=False, blk=blk)[0])
            g[k] = (vals[0] - vals[1]) / (2 * h)
        return g

    def _start(self) -> np.ndarray:
        """A few fixed-point updates interleaved with two mode iterations each."""
        prob = self.prob
        taus = np.full(prob.K, 0.5)
        st = initial_state(prob, list(taus), 1.0)
        for _ in range(6):
            lam_l = prob.expand(1.0 / taus ** 2)
            st = solve_mode(prob, list(taus), lam_l, 1.0, tol=1e-6, maxiter=3, start=st)
            blk = laplace.level_block(prob, lam_l, st.W, self.probes)
            new = _fixed_point_taus(prob, st, lam_l, blk)
            change = float(np.max(np.abs(np.log(new / taus))))
            taus = new
            if change < 1e-2:
                break
        self.st = st
        return np.log(np.clip(taus, TAU_MIN * 10, TAU_MAX / 10))

    def run(self) -> TauEstimate:
        theta0 = self._start()
        theta, value, grad = minimise(self.value_grad, theta0, [_LOG_TAU_BOUNDS] * self.prob.K)
        return TauEstimate(tuple(float(t) for t in np.exp(theta)), None, value, self.n_eval, self.st,
                           gradient=tuple(float(g) for g in grad),
                           boundary=self._boundary(theta, grad), exact=self.exact, method="nagq0")


class _Nagq1(_Outer):
    """min over (log tau, beta) of c1, the mode over the levels alone (module docstring)."""

    def __init__(self, prob: LevelProblem, start: TauEstimate, tol, verbose):
        super().__init__(prob, tol, verbose)
        self.start = start
        n = prob.n
        # the level-only problem on the stored rows (already sorted: its row order is the same)
        pw = None if prob.pw.shape[0] == 1 else prob.pw
        self.off0 = np.array(np.broadcast_to(prob.offset, (n,)), dtype=np.float64)
        self.sub = LevelProblem(np.zeros((n, 0)), prob.factor_codes(), prob.y, pw, self.off0.copy(),
                                prob.family, names=prob.names)
        # a full-length offset (the engine stores a constant one as a single row)
        self.sub.offset = np.array(np.broadcast_to(self.sub.offset, (n,)), dtype=np.float64)
        if len(self.sub.perm) and not np.array_equal(self.sub.perm, np.arange(n)):
            raise ModelError("internal: the level-only problem reordered the rows")
        self.st = State(beta=np.zeros(0), a=start.state.a.copy())

    def _set_beta(self, beta: np.ndarray) -> None:
        prob = self.prob
        xb = prob.X @ beta if prob.X.shape[0] > 1 else float(prob.X[0] @ beta)
        self.sub.offset[:] = self.off0 + xb          # offset + X beta (stored row order)

    def value_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        K = self.prob.K
        theta, beta = x[:K], x[K:]
        taus = np.exp(theta)
        self._set_beta(beta)
        self.st.G = None                     # the offset moved: a new pass
        self.st, blk = self._mode(self.sub, self.st, taus)
        value, gt, gb = laplace.nagq1_value_grad(self.sub, self.st, 1.0 / taus ** 2, self.prob.X,
                                                 self.probes, blk=blk)
        grad = np.concatenate([gt, gb])
        if not self.canonical:
            grad = self._fd_grad(x)
        if self.verbose:
            print(f"nAGQ=1 criterion {value:.10f} at tau = {np.array2string(taus, precision=7)}",
                  flush=True)
        return value, grad

    def _value(self, x: np.ndarray) -> float:
        K = self.prob.K
        self._set_beta(x[K:])
        self.st.G = None
        self.st, blk = self._mode(self.sub, self.st, np.exp(x[:K]))
        lam_l = self.sub.expand(np.exp(-2 * x[:K]))
        if blk is None:
            blk = laplace.level_block(self.sub, lam_l, self.st.W, self.probes)
        return float(self.st.dev + np.dot(lam_l * self.st.a, self.st.a) + blk.logdet()
                     - np.sum(np.log(lam_l)))

    def _fd_grad(self, x: np.ndarray, h: float = 1e-5) -> np.ndarray:
        g = np.empty(x.size)
        for j in range(x.size):
            e = np.zeros(x.size)
            e[j] = h * max(1.0, abs(x[j]))
            g[j] = (self._value(x + e) - self._value(x - e)) / (2 * e[j])
        self._value(x)
        return g

    def run(self) -> TauEstimate:
        prob = self.prob
        x0 = np.concatenate([np.log(self.start.taus), self.start.state.beta])
        bounds = [_LOG_TAU_BOUNDS] * prob.K + [(None, None)] * prob.p
        x, value, grad = minimise(self.value_grad, x0, bounds)
        theta, beta = x[:prob.K], x[prob.K:]
        st = State(beta=beta.copy(), a=self.st.a.copy())      # the fit on the full problem
        lam_l = prob.expand(np.exp(-2 * theta))
        prob.evaluate(st, lam_l, 1.0)
        st.converged = True
        return TauEstimate(tuple(float(t) for t in np.exp(theta)), None, value,
                           self.start.n_evaluations + self.n_eval, st, final=True,
                           gradient=tuple(float(g) for g in grad),
                           boundary=self._boundary(theta, grad), exact=self.exact, method="laplace")

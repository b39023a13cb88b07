"""The scalar families' hooks of the Newton template (gaussian, binomial, poisson, gamma).

Model (DESIGN.md section 2): eta_i = o_i + x_i'beta + sum_k a_k[c_k(i)], a_k[l] ~ N(0, tau_k^2);
the fit minimises f(beta, a) = sum_i pw_i d(y_i, mu_i) / (2 phi) + sum_l lam_l a_l^2 / 2
(lam_l = 1/tau_k^2 over the levels of factor k; phi = 1 for binomial and poisson).

Each level is a 1 x 1 block: with G_l = sum_{i in l} r_i and W_l = sum_{i in l} w_i from the
fused row pass (:meth:`~impactglm.solvers.problem.LevelProblem.evaluate`),

* penalised score (balance deficit) b_l = G_l - lam_l a_l = -df/da_l, curvature W_l + lam_l;
* certificate: max |g| / H_jj over b_l / (W_l + lam_l) and X'r / diag(X'WX);
* directions per factor (:mod:`impactglm.solvers.newton`'s policy): the Bayesian impact
  step b_l / (W_l + lam_l), the previous change of the effects, the current effect at the
  first iteration; when X has a column varying within levels, the level part of the exact
  Newton step of (beta, this factor) (:func:`coupled_direction`); when the model has no
  intercept to centre the factor means into, the constant 1 over the factor's levels;
* the reduced Hessian D'WD over [X | directions]: with constant X rows from the level
  sums W plus the cross-factor pass (:meth:`LevelProblem.reduced_hessian`), else one light
  pass; the prior adds sum_l lam_l d_l d_l' to each factor's block exactly.

Cost of a fit: (iterations + 1) fused row passes + iterations light passes (+ the coupled
direction's level_xw pass per iteration when X varies within levels); the posterior and the
final eta pass are left to first use (:class:`~impactglm.solvers.posterior.LazyFit`).

Entry points used by empirical Bayes (:mod:`impactglm.solvers.prior_scale`):
:func:`initial_state`, :func:`solve_mode` (the mode at given prior precisions, warm
started) and :func:`newton_loop`; they return a :class:`~impactglm.solvers.problem.State`
with beta, a, f, dev, G (level score sums), W (level weight sums), Xr, Xd at the mode,
and ``prob.w`` holds the row weights of that pass.
"""
from __future__ import annotations

import dataclasses
import math
import time

import numpy as np

from . import impact
from ..kernels import levels as KL
from .linalg import solve_psd
from .newton import certificate, DEFAULT_TOL, run_newton
from .priors import NO_PRIOR_RIDGE
from .problem import LevelProblem, reprice, State

__all__ = ["ScalarEngine", "initial_state", "newton_loop", "solve_mode", "separated_levels",
           "coupled_direction", "DEFAULT_TOL"]


def constant_column(X: np.ndarray) -> int | None:
    """Index of the first nonzero constant column of X (the intercept), or None."""
    if X.shape[1] == 0:
        return None
    const = np.flatnonzero(np.all(X == X[:1], axis=0) & (X[0] != 0))
    return int(const[0]) if len(const) else None


class ScalarEngine:
    """Hooks of :func:`~impactglm.solvers.newton.run_newton` for a :class:`LevelProblem`."""

    def __init__(self, prob: LevelProblem, lam_l: np.ndarray, inv_phi: float, *, log: list,
                 verbose: bool = False, t0: float | None = None, n_passes: int = 0,
                 centre: bool = True):
        self.prob, self.lam_l, self.inv_phi = prob, lam_l, float(inv_phi)
        self.rows, self.verbose = log, verbose
        self.t0 = time.perf_counter() if t0 is None else t0
        self.n_passes = n_passes
        self.const = constant_column(prob.X) if (prob.K and centre) else None
        self.seen = prob.level_sums()[1] > 0 if self.const is not None else None

    # -- passes --------------------------------------------------------------------------
    def evaluate(self, theta) -> State:
        st = State(beta=theta[0], a=theta[1])
        self.prob.evaluate(st, self.lam_l, self.inv_phi)
        self.n_passes += 1
        return st

    def finite(self, st: State) -> bool:
        return bool(math.isfinite(st.f) and np.all(np.isfinite(st.G)) and np.all(np.isfinite(st.W))
                    and np.all(np.isfinite(st.Xr)))

    # -- moves without a pass ----------------------------------------------------------
    def prepare(self, st: State):
        """Each factor's mean effect over its levels with rows into the intercept (eta of
        every weighted row unchanged, so the row-pass sums stay valid; f is re-priced; levels
        without rows keep their effect, 0 at the mode).  No in-loop prior update for the
        scalar families."""
        if self.const is not None:
            prob, x0 = self.prob, float(self.prob.X[0, self.const])
            for k in range(prob.K):
                sl = slice(prob.starts[k], prob.starts[k + 1])
                seen = self.seen[sl]
                ak = st.a[sl]
                m = float(ak[seen].mean()) if seen.any() else 0.0
                ak[seen] -= m
                st.beta[self.const] += m / x0
            reprice(st, self.lam_l, self.inv_phi)
        return st, False

    def certificate(self, st: State) -> tuple[float, float]:
        b = st.G - self.lam_l * st.a
        return certificate([b, st.Xr], [st.W + self.lam_l, st.Xd])

    # -- the reduced Newton step -------------------------------------------------------
    def directions(self, st: State, prev, rescale: bool) -> np.ndarray:
        prob, lam_l = self.prob, self.lam_l
        b = st.G - lam_l * st.a
        cols = [b / (st.W + lam_l)]
        if prev is not None:
            cols.append(prev[1])
        if rescale:
            cols.append(st.a)
        if self.const is None:
            cols.append((st.W > 0).astype(np.float64))       # empty levels stay at 0
        if prob.coupled:
            cols.append(np.empty(prob.Q))
            coupled_direction(prob, st, lam_l, b, cols[-1])
        return np.ascontiguousarray(np.column_stack(cols))

    def reduced_system(self, st: State, L: np.ndarray):
        prob, lam_l, p, J = self.prob, self.lam_l, self.prob.p, L.shape[1]
        H = prob.reduced_hessian(L, st.W)
        if prob.coupled:
            prob.Hbb = H[:p, :p].copy()
        b = st.G - lam_l * st.a
        g = np.empty(p + prob.K * J)
        g[:p] = -st.Xr
        for k in range(prob.K):
            sl = slice(prob.starts[k], prob.starts[k + 1])
            blk = slice(p + k * J, p + (k + 1) * J)
            Lk = L[sl]
            H[blk, blk] += Lk.T @ (lam_l[sl, None] * Lk)
            g[blk] = -(Lk.T @ b[sl])
        return H, g

    def step(self, gamma: np.ndarray, L: np.ndarray):
        prob, p, J = self.prob, self.prob.p, L.shape[1]
        step_a = np.empty(prob.Q)
        for k in range(prob.K):
            sl = slice(prob.starts[k], prob.starts[k + 1])
            step_a[sl] = L[sl] @ gamma[p + k * J:p + (k + 1) * J]
        return gamma[:p].copy(), step_a

    def log(self, it: int, st: State, cert, t: float) -> None:
        row = {"iteration": it, "objective": st.f, "max_grad": cert[0], "max_step": cert[1],
               "step": t, "passes": self.n_passes, "seconds": time.perf_counter() - self.t0}
        self.rows.append(row)
        if self.verbose:
            print(f"iter {it:3d}  objective {st.f:.10e}  max_grad {cert[0]:.3e}  "
                  f"max_step {cert[1]:.3e}  step {t:.3g}  passes {self.n_passes:3d}  "
                  f"{row['seconds']:.2f}s", flush=True)


def coupled_direction(prob: LevelProblem, st: State, lam_l: np.ndarray, b: np.ndarray,
                      out: np.ndarray) -> None:
    """Per factor, the level part of the exact Newton step of (beta, this factor's levels).

    With B_l = sum_{i in l} w_i x_i, D_l = W_l + 1/tau^2, A = X'WX (from the last reduced
    Hessian) and s_l = b_l / D_l the impact step, eliminating the (diagonal) level block
    gives the Schur system (A - sum_l B_l B_l'/D_l) delta_b = X'r - sum_l B_l s_l and the
    level move d_l = s_l - B_l' delta_b / D_l: a covariate constant within the levels is
    compensated by its shrunken weighted level mean, so beta and the effects no longer
    alternate (the reduced Newton step over [X | directions] then finds the joint move).
    """
    KL.level_xw_pass(prob.X, prob.gidx, prob.w, prob.B)
    if prob.Hbb is None:
        prob.Hbb = prob.reduced_hessian(np.zeros((prob.Q, 0)))
    for k in range(prob.K):
        sl = slice(prob.starts[k], prob.starts[k + 1])
        D = st.W[sl] + lam_l[sl]
        Bk = prob.B[sl]
        s = b[sl] / D
        BD = Bk / D[:, None]
        S = prob.Hbb - Bk.T @ BD
        rhs = st.Xr - Bk.T @ s
        db = solve_psd(S, rhs)
        out[sl] = s - BD @ db


def initial_state(prob: LevelProblem, taus, inv_phi: float) -> State:
    """Start: beta at the grand value (through a constant column of X if any), a = the
    smoothed Bayesian impact codes of every factor."""
    fam = prob.family
    swy, swl = prob.level_sums()
    k0 = slice(prob.starts[0], prob.starts[1])
    sw = float(swl[k0].sum())
    grand = float(swy[k0].sum() / sw) if sw > 0 else float(np.mean(prob.y))
    grand = float(np.clip(fam.initial_mu(np.array([grand]), np.array([max(sw, 1.0)]))[0], 1e-6, np.inf))
    if fam.name == "binomial":
        grand = min(max(grand, 1e-6), 1 - 1e-6)
    if fam.name == "gaussian" and fam.link.name == "identity":
        grand = float(swy[k0].sum() / sw) if sw > 0 else 0.0
    eta_bar = float(fam.link.link(np.array([grand]))[0])
    beta = np.zeros(prob.p)
    j = constant_column(prob.X)
    a = np.zeros(prob.Q)
    if j is not None:
        beta[j] = (eta_bar - float(np.mean(prob.offset))) / prob.X[0, j]
        for k in range(prob.K):
            sl = slice(prob.starts[k], prob.starts[k + 1])
            kappa = impact.prior_pseudo_weight(grand, taus[k], fam, NO_PRIOR_RIDGE, 1.0 / inv_phi)
            a[sl] = impact.smoothed_impact_code(swy[sl], swl[sl], grand, kappa, fam)
    return State(beta=beta, a=a)


def newton_loop(prob: LevelProblem, st: State, lam_l: np.ndarray, inv_phi: float, *,
                tol: float = DEFAULT_TOL, maxiter: int = 200, verbose: bool = False,
                t0: float | None = None) -> State:
    """Run the Newton template from ``st`` (evaluated or not) until the certificate <= tol.

    Returns the State at the end (a new object); its ``log``, ``n_iter`` and ``n_passes``
    continue those of ``st``.  With maxiter=0 it evaluates ``st`` exactly as given (no
    centring), the row pass and certificate only.
    """
    t0 = st.t0 if t0 is None else t0
    eng = ScalarEngine(prob, lam_l, inv_phi, log=st.log, verbose=verbose, t0=t0,
                       n_passes=st.n_passes, centre=maxiter > 0)   # maxiter=0: evaluate as given
    start = (dataclasses.replace(st, beta=st.beta.copy(), a=st.a.copy()) if st.G is not None
             else eng.evaluate((st.beta, st.a)))          # the caller's State is not modified
    end, converged, its, cert = run_newton(eng, start, tol=tol, maxiter=maxiter, it0=st.n_iter)
    end.n_iter = st.n_iter + its
    end.n_passes = eng.n_passes
    end.converged = converged
    end.max_grad, end.max_step = cert
    end.log, end.t0 = st.log, st.t0
    return end


def separated_levels(prob: LevelProblem) -> np.ndarray:
    """Per factor: number of levels whose rows all sit on the boundary (y all 0 / all 1)."""
    fam = prob.family.name
    swy, sw = prob.level_sums()
    if fam == "binomial":
        sep = (swy <= 1e-12 * np.maximum(sw, 1)) | (swy >= sw * (1 - 1e-12))
    elif fam == "poisson":
        sep = swy <= 0
    else:
        return np.zeros(prob.K, dtype=np.int64)
    sep &= sw > 0
    return np.array([int(sep[prob.starts[k]:prob.starts[k + 1]].sum()) for k in range(prob.K)])


def solve_mode(prob: LevelProblem, taus, lam_l: np.ndarray, inv_phi: float, *,
               tol: float = DEFAULT_TOL, maxiter: int = 200, verbose: bool = False,
               start: State | None = None, t0: float | None = None) -> State:
    """The posterior mode at fixed prior precisions ``lam_l`` (one per level; ``taus`` only
    shape the start), warm started from ``start`` (its beta and a)."""
    if start is None:
        st = initial_state(prob, taus, inv_phi)
    else:
        st = State(beta=start.beta.copy(), a=start.a.copy(), n_passes=start.n_passes,
                   n_iter=start.n_iter, log=start.log, t0=start.t0)
    return newton_loop(prob, st, lam_l, inv_phi, tol=tol, maxiter=maxiter, verbose=verbose, t0=t0)

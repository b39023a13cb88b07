"""The re-encoding Newton solver for GLMs with high-cardinality factors.

Model (DESIGN.md section 2): eta_i = o_i + x_i'beta + sum_k a_k[c_k(i)],
a_k[l] ~ N(0, tau_k^2).  The fit is the posterior mode, the minimiser of

    f(beta, a) = sum_i pw_i d(y_i, mu_i) / (2 phi) + sum_k ||a_k||^2 / (2 tau_k^2)

(phi = 1 for binomial and poisson; for gaussian phi = sigma^2).

Each iteration (DESIGN.md section 3):

1. one fused pass over the rows (:func:`impactglm.kernels.levels.row_pass`) gives
   f, X'r, diag(X'WX) and, for every level of every factor, G_l = sum r_i and
   W_l = sum w_i; it also stores w_i;
2. each factor is re-encoded into J = 3 level directions: the Bayesian impact
   step (balance deficit / (W_l + 1/tau^2)), the previous change of the effects
   (at the first iteration the summed impact a_k itself, i.e. the smoothed impact
   codes), and the constant 1 (the level-mean mode that is nearly confounded with
   the intercept and the other factors); when X has a non-constant column, a fourth:
   the level part of the exact Newton step of (beta, this factor) with the level block
   eliminated (:func:`_coupled_direction`; a covariate constant within the levels moves
   together with its compensating shrunken level mean instead of alternating with it);
3. a light pass (:func:`~impactglm.kernels.levels.hess_pass`) forms the reduced
   Hessian D'WD of [X | encoded directions] (p + 3K columns; with constant X rows only
   the cross-factor blocks need the rows, :func:`~impactglm.kernels.levels.cross_pass`,
   the rest comes from the level weight sums W); the prior adds
   sum_l d_l d'_l / tau^2 exactly; the reduced gradient comes from the level sums
   without touching the rows; the small Newton system gives gamma;
4. beta += gamma_X, a_k += sum_j gamma_kj d_kj; the next pass evaluates f there
   and the step is halved until f decreases (Armijo), so every step is guarded and
   the line search costs no extra pass when the full step is accepted.

Convergence certificate: with g the penalised gradient over beta AND every level
and H_jj the diagonal of the penalised Hessian, the loop stops when
max_j |g_j| / H_jj <= tol (the largest single-coordinate Newton step: the effect
of any one level or coefficient would move by less than tol if re-optimised alone);
``max_grad`` = max_j |g_j| is reported as well.  Tests check effects against an
independent exact solver (tests/exact.py) at 1e-6 relative.

Posterior standard errors (FactorEffects.se) and cov_beta: the penalised Hessian is
H = [[A, B'], [B, D]] with A = X'WX, B the per-level sums of w_i x_i and D the level
block.  cov_beta = (A - B'D^-1 B)^-1 (levels integrated out, the beta block of H^-1).
* one factor: D is diagonal, everything is exact;
* several factors with p + (levels outside the largest factor) <= EXACT_DENSE_LIMIT: the
  largest factor (diagonal block) is eliminated and the small dense Schur complement is
  inverted (:func:`level_schur`): cov_beta and every se are exact;
* larger crossed designs: D^-1 B by conjugate gradients with the full D (one light pass
  per iteration, two-level preconditioner), so cov_beta is exact to the solve tolerance;
  se(a_l)^2 = 1/D_ll + (B_l/D_ll)' cov_beta (B_l/D_ll), which neglects the cross-factor
  coupling of the level blocks (documented approximation; extra["se_exact"] is False).

Storage and cost: rows are stored sorted by the factor with the most levels (its sums and
gathers then stream through memory), constant X / unit weights / zero offset as single
broadcast rows; per-thread accumulators are allocated once per fit.  A fit costs
(n_iter + 1) full passes (exp and log1p per row for the logit) plus n_iter light passes
(reduced Hessian; prior_sd="auto" re-prices f after a tau update without a pass,
:func:`reprice`), then the posterior (one light pass, plus the CG passes for large
crossed designs) and one pass for eta/mu.  extra["n_passes"] counts the full passes.
"""
from __future__ import annotations

import math
import time
import numpy as np
from scipy import linalg


from . import impact
from ..errors import ModelError
from ..kernels import levels as KL
from .priors import NO_PRIOR_RIDGE
from .problem import LevelProblem, State




# ----------------------------------------------------------------------------- the loop



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
    const = [j for j in range(prob.p) if prob.X[0, j] != 0 and np.all(prob.X[:, j] == prob.X[0, j])]
    a = np.zeros(prob.Q)
    if const:
        j = const[0]
        beta[j] = (eta_bar - float(np.mean(prob.offset))) / prob.X[0, j]
        for k in range(prob.K):
            sl = slice(prob.starts[k], prob.starts[k + 1])
            kappa = impact.prior_pseudo_weight(grand, taus[k], fam, NO_PRIOR_RIDGE, 1.0 / inv_phi)
            a[sl] = impact.smoothed_impact_code(swy[sl], swl[sl], grand, kappa, fam)
    return State(beta=beta, a=a)


def _solve_small(H: np.ndarray, g: np.ndarray) -> np.ndarray:
    """gamma = -H^+ g with small-eigenvalue cutoff (directions may be redundant)."""
    d = np.sqrt(np.maximum(np.diag(H), 0.0))
    keep = d > 0
    gamma = np.zeros_like(g)
    if not keep.any():
        return gamma
    Hs = H[np.ix_(keep, keep)] / np.outer(d[keep], d[keep])
    gs = g[keep] / d[keep]
    vals, vecs = linalg.eigh(Hs)
    cut = vals.max() * 1e-12
    inv = np.where(vals > cut, 1.0 / np.where(vals > cut, vals, 1.0), 0.0)
    gamma[keep] = -(vecs @ (inv * (vecs.T @ gs))) / d[keep]
    return gamma


def _coupled_direction(prob: LevelProblem, st: State, lam_l: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
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
        db = _solve_small(S, -rhs)          # S^+ rhs
        out[sl] = s - BD @ db


def _certificate(prob: LevelProblem, st: State, lam_l: np.ndarray) -> tuple[float, float]:
    """(max |gradient|, max |gradient| / H_jj) over beta and every level."""
    b = st.G - lam_l * st.a
    Hb = np.where(st.Xd > 0, st.Xd, 1.0)
    ga = np.abs(b)
    gb = np.abs(st.Xr)
    max_grad = max(float(ga.max(initial=0.0)), float(gb.max(initial=0.0)))
    max_step = max(float((ga / (st.W + lam_l)).max(initial=0.0)), float((gb / Hb).max(initial=0.0)))
    return max_grad, max_step


def newton_loop(prob: LevelProblem, st: State, lam_l: np.ndarray, inv_phi: float, *, tol: float,
                maxiter: int, verbose: bool = False, t0: float | None = None) -> State:
    """Run re-encoding Newton iterations from ``st`` until the certificate <= tol."""
    t0 = st.t0 if t0 is None else t0
    p, K, starts = prob.p, prob.K, prob.starts
    L = prob.L
    _J = prob.J
    prev = None                        # previous change of a
    first = True
    if st.G is None:
        prob.evaluate(st, lam_l, inv_phi)
    _check_finite_state(st)
    st.max_grad, st.max_step = _certificate(prob, st, lam_l)
    _log(st, st.n_iter, 1.0, t0, verbose)
    for it in range(1, maxiter + 1):
        if st.max_step <= tol:
            st.converged = True
            break
        b = st.G - lam_l * st.a
        L[:, 0] = b / (st.W + lam_l)
        L[:, 1] = st.a if (prev is None) else prev
        L[:, 2] = st.W > 0            # empty levels stay at the prior mean 0
        if prev is None and not first:
            L[:, 1] = 0.0
        first = False
        if prob.coupled:
            _coupled_direction(prob, st, lam_l, b, L[:, 3])
        H = prob.reduced_hessian(L, st.W)
        if prob.coupled:
            prob.Hbb = H[:p, :p].copy()
        g = np.empty(prob.m)
        g[:p] = -st.Xr
        for k in range(K):
            sl = slice(starts[k], starts[k + 1])
            Lk = L[sl]
            H[p + k * _J:p + (k + 1) * _J, p + k * _J:p + (k + 1) * _J] += Lk.T @ (lam_l[sl, None] * Lk)
            g[p + k * _J:p + (k + 1) * _J] = -(Lk.T @ b[sl])
        if not (np.all(np.isfinite(H)) and np.all(np.isfinite(g))):
            raise ModelError("the reduced Newton system is not finite (the linear predictor overflows); "
                             "check the offset and the scale of the predictors")
        gamma = _solve_small(H, g)
        slope = float(g @ gamma)
        if not slope < 0:
            # no descent possible in the subspace: only the certificate can say why
            break
        step_a = np.empty(prob.Q)
        for k in range(K):
            sl = slice(starts[k], starts[k + 1])
            step_a[sl] = L[sl] @ gamma[p + k * _J:p + (k + 1) * _J]
        step_b = gamma[:p].copy()
        beta0, a0, f0 = st.beta.copy(), st.a.copy(), st.f
        t = 1.0
        while True:
            st.beta = beta0 + t * step_b
            st.a = a0 + t * step_a
            prob.evaluate(st, lam_l, inv_phi)
            ok = math.isfinite(st.f) and np.all(np.isfinite(st.G)) and np.all(np.isfinite(st.Xr))
            if ok and (st.f <= f0 + 1e-4 * t * slope or abs(st.f - f0) <= 1e-13 * abs(f0)):
                break
            t *= 0.5
            if t < 1e-10:
                st.beta, st.a = beta0, a0
                prob.evaluate(st, lam_l, inv_phi)
                break
        prev = t * step_a
        st.n_iter += 1
        st.max_grad, st.max_step = _certificate(prob, st, lam_l)
        _log(st, st.n_iter, t, t0, verbose)
        if t < 1e-10:
            break
    else:
        st.converged = st.max_step <= tol
    if st.max_step <= tol:
        st.converged = True
    return st


def _check_finite_state(st: State) -> None:
    """Raise ModelError if the row pass produced non-finite quantities."""
    if not (math.isfinite(st.f) and np.all(np.isfinite(st.G)) and np.all(np.isfinite(st.W))
            and np.all(np.isfinite(st.Xr))):
        raise ModelError("the objective or its gradient is not finite at the starting values "
                         "(the linear predictor overflows); check the offset and the scale of "
                         "the predictors")


def _log(st: State, it: int, step: float, t0: float, verbose: bool) -> None:
    row = (it, st.f, st.max_grad, st.max_step, step, st.n_passes, time.perf_counter() - t0)
    st.log.append(row)
    if verbose:
        print(f"iter {it:3d}  objective {st.f:.10e}  max_grad {st.max_grad:.3e}  "
              f"max_step {st.max_step:.3e}  step {step:.3g}  passes {st.n_passes:3d}  "
              f"{row[-1]:.2f}s", flush=True)


# ----------------------------------------------------------------------------- public entry

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


def solve_mode(prob: LevelProblem, taus, lam_l: np.ndarray, inv_phi: float, *, tol: float,
               maxiter: int, verbose: bool = False, start: State | None = None,
               t0: float | None = None) -> State:
    """The posterior mode at fixed prior precisions (warm start from ``start``)."""
    if start is None:
        st = initial_state(prob, taus, inv_phi)
    else:
        st = State(beta=start.beta.copy(), a=start.a.copy(), n_passes=start.n_passes,
                   n_iter=start.n_iter, log=start.log, t0=start.t0)
    return newton_loop(prob, st, lam_l, inv_phi, tol=tol, maxiter=maxiter, verbose=verbose, t0=t0)

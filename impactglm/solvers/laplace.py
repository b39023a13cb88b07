"""glmer's Laplace criteria for binomial/poisson ``^`` fits, with exact gradients in log tau.

Model: eta = offset + X beta + sum_k a_k[c_k], a_k ~ N(0, tau_k^2); lam_k = 1 / tau_k^2 and
lam_l the precision of level l.  With D = Z'WZ + diag(lam_l) the level block of the penalised
Hessian (W the IRLS weights at the mode) lme4 writes the criterion with L L' = Lambda Z'WZ
Lambda + I, and log det(L L') = log det D - sum_l log lam_l, so

    nAGQ = 0:  c0(tau) = dev(beta^, a^) + sum_l lam_l a^_l^2 + log det D - sum_l log lam_l

at the JOINT penalised mode (beta^, a^)(tau) (glmer's ``drsum + ussq + ldL2`` of devcomp; its
own ``dev`` uses -2 log L instead of the deviance, a constant apart), and

    nAGQ = 1:  c1(tau, beta) = the same expression at a^(beta, tau), the mode over a alone.

Gradients (derived here, checked by finite differences in tests/test_prior_scale.py).  Let
H = J'WJ + diag(0, lam) be the penalised Hessian over x = (beta, a), J = [X Z], and
v_i = z_i' D^-1 z_i, w'_i = dw_i / deta_i at the mode, u = w' * v (per row).  Then

    d log det D / d lam_k = tr_k(D^-1) + u' J dx^/dlam_k          (W moves with the mode)
    dx^/dlam_k = -H^-1 (0, E_k a^)                                  (implicit function theorem)

where tr_k sums [D^-1]_ll over factor k's levels and E_k selects them.  With h = J'u and
z = H^-1 h (one adjoint solve for all k), by the envelope theorem for dev + sum lam a^2:

    dc0/dlam_k = ||a_k||^2 + tr_k(D^-1) - q_k / lam_k - sum_{l in k} z_l a_l,
    dc0/dlog tau_k = -2 lam_k dc0/dlam_k.

For nAGQ = 1 the inner Hessian is D alone (beta fixed): z_a = D^-1 Z'u in the lam derivative,
and dc1/dbeta = -2 X'r + X'u - B' D^-1 Z'u with B = Z'WX (r the score residuals).  The
canonical links (logit, log) make the observed Hessian equal J'WJ, so these are the exact
derivatives of the criteria (w' = w (1 - 2 mu) for the logit, w for the log); other links use
central differences of c in the outer optimiser (:mod:`impactglm.solvers.prior_scale`).

Level-block linear algebra: :class:`ExactLevelBlock` (one factor: D diagonal; several factors
while the levels outside the largest factor number at most ``EXACT_LEVEL_LIMIT``: the largest
factor's diagonal block is eliminated and the dense Schur complement S is factored, the
per-row v_i = 1/D1_l + (u_l - 1_R(i))' S^-1 (u_l - 1_R(i)) with u_l = C_l / D1_l), beyond that
:class:`impactglm.solvers.slq.StochasticLevelBlock` (stochastic Lanczos quadrature).
"""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from scipy import linalg

from ..kernels import levels as KL
from .linalg import level_schur
from .problem import LevelProblem, State
from . import slq

__all__ = ["ExactLevelBlock", "level_block", "mode_rows", "ModeRows", "nagq0_value_grad",
           "nagq1_value_grad", "newton_polish", "full_solve", "EXACT_LEVEL_LIMIT", "canonical", "row_quad", "row_quad_numpy"]

EXACT_LEVEL_LIMIT = 5000     # dense Schur complement while levels outside the largest factor <= this


# ----------------------------------------------------------------------------- rows at the mode

@dataclass
class ModeRows:
    """Per stored row at the mode: IRLS weight w, dw/deta and score residual r (pw included)."""

    w: np.ndarray
    dw: np.ndarray
    r: np.ndarray


def canonical(prob: LevelProblem) -> bool:
    """Binomial-logit or poisson-log: J'WJ is the observed Hessian, the gradients are exact."""
    return (prob.family.name, prob.family.link.name) in (("binomial", "logit"), ("poisson", "log"))


def _full(v: np.ndarray, n: int) -> np.ndarray:
    return np.broadcast_to(v, (n,)) if v.shape[0] == 1 and n != 1 else v


def linear_predictor(prob: LevelProblem, beta: np.ndarray, a: np.ndarray) -> np.ndarray:
    """eta in stored row order."""
    eta = a[prob.gidx].sum(axis=1) if prob.K > 1 else a[prob.gidx[:, 0]]
    eta = eta + _full(prob.offset, prob.n)
    if prob.p:
        eta = eta + (prob.X @ beta if prob.X.shape[0] > 1 else float(prob.X[0] @ beta))
    return eta


def mode_rows(prob: LevelProblem, st: State) -> ModeRows:
    """w, dw/deta and r per stored row at (st.beta, st.a)."""
    eta = linear_predictor(prob, st.beta, st.a)
    mu, w, r, _ = KL.row_quantities_numpy(eta, prob.y, prob.fam, prob.link)
    if prob.family.name == "binomial" and prob.family.link.name == "logit":
        dw = w * (1.0 - 2.0 * mu)
    elif prob.family.name == "poisson" and prob.family.link.name == "log":
        dw = w
    else:                      # other links: dw/deta by central differences (outer FD gradient)
        h = 1e-6 * np.maximum(1.0, np.abs(eta))
        dw = (KL.row_quantities_numpy(eta + h, prob.y, prob.fam, prob.link)[1]
              - KL.row_quantities_numpy(eta - h, prob.y, prob.fam, prob.link)[1]) / (2 * h)
    pw = _full(prob.pw, prob.n)
    return ModeRows(w * pw, dw * pw, r * pw)


def level_totals(prob: LevelProblem, u: np.ndarray) -> np.ndarray:
    """Z'u: per level of every factor, the sum of u over its rows."""
    out = np.zeros(prob.Q)
    for k in range(prob.K):
        out += np.bincount(prob.gidx[:, k], weights=u, minlength=prob.Q)
    return out


def x_totals(prob: LevelProblem, u: np.ndarray) -> np.ndarray:
    """X'u."""
    if prob.p == 0:
        return np.zeros(0)
    return prob.X.T @ u if prob.X.shape[0] > 1 else prob.X[0] * float(u.sum())


def _xwx(prob: LevelProblem, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(A = X'WX, B = Z'WX) at row weights w."""
    B = np.empty((prob.Q, prob.p))
    KL.level_xw_pass(prob.X, prob.gidx, np.ascontiguousarray(w), B)
    if prob.X.shape[0] > 1:
        A = prob.X.T @ (prob.X * w[:, None])
    else:
        A = np.outer(prob.X[0], prob.X[0]) * float(w.sum())
    return A, B


# ----------------------------------------------------------------------------- exact level block

@numba.njit(cache=True, parallel=True)
def row_quad(l1, posR, indptr, indices, data, M, base, out):
    """out[i] = base[l] - 2 sum_a (U M)[l, posR[i, a]] + sum_{a, b} M[posR[i, a], posR[i, b]]
    for l = l1[i] and U in CSR (indptr, indices, data): z_i' D^-1 z_i by the Schur blocks."""
    n = l1.shape[0]
    Km = posR.shape[1]
    for i in numba.prange(n):
        l = l1[i]
        v = base[l]
        for a in range(Km):
            ja = posR[i, a]
            s = 0.0
            for t in range(indptr[l], indptr[l + 1]):
                s += data[t] * M[ja, indices[t]]
            v -= 2.0 * s
            for b in range(Km):
                v += M[ja, posR[i, b]]
        out[i] = v


@numba.njit(cache=True, parallel=True)
def level_quad(indptr, indices, data, M, out):
    """out[l] = u_l' M u_l for the rows u_l of a CSR matrix."""
    for l in numba.prange(indptr.shape[0] - 1):
        s = 0.0
        for t in range(indptr[l], indptr[l + 1]):
            jt = indices[t]
            dt = data[t]
            for t2 in range(indptr[l], indptr[l + 1]):
                s += dt * data[t2] * M[jt, indices[t2]]
        out[l] = s


def row_quad_numpy(l1, posR, U, M, base):
    """Twin of :func:`row_quad` (dense U M; small problems only)."""
    UM = np.asarray(U @ M)
    n, Km = posR.shape
    out = base[l1].copy()
    for a in range(Km):
        out -= 2.0 * UM[l1, posR[:, a]]
        for b in range(Km):
            out += M[posR[:, a], posR[:, b]]
    return out


class ExactLevelBlock:
    """D = Z'WZ + diag(lam_l) at the stored row weights ``prob.w``, factored exactly."""

    exact = True

    @staticmethod
    def fits(prob: LevelProblem, limit: int | None = None) -> bool:
        limit = EXACT_LEVEL_LIMIT if limit is None else limit
        return prob.K == 1 or prob.Q - int(np.max(prob.q)) <= limit

    def __init__(self, prob: LevelProblem, lam_l: np.ndarray, W: np.ndarray):
        self.prob = prob
        self.Dd = W + lam_l
        if prob.K == 1:
            return
        S, D1, C, rest = level_schur(prob, self.Dd, include_beta=False, limit=prob.Q)
        self.k1 = int(np.argmax(prob.q))
        self.sl1 = slice(int(prob.starts[self.k1]), int(prob.starts[self.k1 + 1]))
        self.D1, self.C, self.rest = D1, C.tocsr(), rest
        self.cho = linalg.cho_factor(S, lower=True)

    def logdet(self) -> float:
        if self.prob.K == 1:
            return float(np.sum(np.log(self.Dd)))
        return float(np.sum(np.log(self.D1)) + 2.0 * np.sum(np.log(np.diag(self.cho[0]))))

    def solve(self, R: np.ndarray) -> np.ndarray:
        """D^-1 R for R of shape (Q,) or (Q, m)."""
        if self.prob.K == 1:
            return R / (self.Dd if R.ndim == 1 else self.Dd[:, None])
        D1 = self.D1 if R.ndim == 1 else self.D1[:, None]
        r1 = R[self.sl1]
        y = linalg.cho_solve(self.cho, R[self.rest] - self.C.T @ (r1 / D1))
        out = np.empty_like(R, dtype=np.float64)
        out[self.sl1] = (r1 - self.C @ y) / D1
        out[self.rest] = y
        return out

    def diag_and_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """(diag D^-1 over the levels, v_i = z_i' D^-1 z_i per stored row)."""
        prob = self.prob
        if prob.K == 1:
            dinv = 1.0 / self.Dd
            return dinv, dinv[prob.gidx[:, 0]]
        Linv, info = linalg.lapack.dpotri(self.cho[0], lower=1)     # S^-1 from the factor
        if info != 0:
            raise linalg.LinAlgError(f"dpotri failed ({info})")
        M = np.tril(Linv) + np.tril(Linv, -1).T
        U = (self.C.multiply(1.0 / self.D1[:, None])).tocsr()
        U.sort_indices()
        qd = np.empty(U.shape[0])
        level_quad(U.indptr, U.indices, U.data, M, qd)
        dinv = np.empty(prob.Q)
        dinv[self.rest] = np.diag(M)
        base = 1.0 / self.D1 + qd
        dinv[self.sl1] = base
        pos = np.empty(prob.Q, dtype=np.int64)
        pos[self.rest] = np.arange(self.rest.size)
        others = [k for k in range(prob.K) if k != self.k1]
        posR = np.ascontiguousarray(pos[prob.gidx[:, others]])
        l1 = np.ascontiguousarray(prob.gidx[:, self.k1] - prob.starts[self.k1])
        v = np.empty(prob.n)
        row_quad(l1, posR, U.indptr, U.indices, U.data, M, base, v)
        return dinv, v


def level_block(prob: LevelProblem, lam_l: np.ndarray, W: np.ndarray, probes=None):
    """The exact block when it fits, else the stochastic one (``probes``: slq.Probes)."""
    if ExactLevelBlock.fits(prob) and probes is None:
        return ExactLevelBlock(prob, lam_l, W)
    return slq.StochasticLevelBlock(prob, lam_l, W, probes)


# ----------------------------------------------------------------------------- criteria

def full_solve(prob: LevelProblem, blk, h_b: np.ndarray, h_a: np.ndarray):
    """(z_b, z_a) = H^-1 (h_b, h_a) for H = [[X'WX, B'], [B, D]] (at the stored row weights
    ``prob.w``) by eliminating the level block."""
    za = blk.solve(h_a)
    if prob.p == 0:
        return np.zeros(0), za
    A, B = _xwx(prob, prob.w)
    DB = blk.solve(B)
    Sb = A - B.T @ DB
    rhs = h_b - DB.T @ h_a
    try:
        zb = linalg.solve(0.5 * (Sb + Sb.T), rhs, assume_a="pos")
    except (linalg.LinAlgError, ValueError):
        zb = linalg.lstsq(Sb, rhs)[0]
    return zb, za - DB @ zb


def _per_factor(prob: LevelProblem, v: np.ndarray) -> np.ndarray:
    return np.array([float(v[prob.starts[k]:prob.starts[k + 1]].sum()) for k in range(prob.K)])


def newton_polish(prob: LevelProblem, st: State, lam: np.ndarray, evaluate, probes=None,
                  step_tol: float = 1e-10, max_steps: int = 50):
    """Damped full Newton steps x += t H^-1 (-grad f) on the mode, H factored by the level block.

    The criterion needs the mode to near machine precision; from a warm start (the mode at
    a nearby tau) Newton converges quadratically, step halving (Armijo) guards far starts (f is
    convex).  ``evaluate(beta, a)`` returns a State with a fresh row pass there (the engine's
    pass; it also refreshes ``prob.w``).  Returns (state, block at the state) once the Newton
    step is below ``step_tol`` or the Newton decrement below 1e-15 (1 + |f|), or None when no step decreases f (the caller then runs the
    engine's loop first).  With p = 0 (nAGQ = 1's level-only problem) the step is over the
    levels alone.
    """
    lam_l = prob.expand(lam)

    def fval(s: State) -> float:
        return 0.5 * s.dev + 0.5 * float(np.dot(lam_l * s.a, s.a))

    for _ in range(max_steps):
        blk = level_block(prob, lam_l, st.W, probes)
        gb, ga = (st.Xr if prob.p else np.zeros(0)), st.G - lam_l * st.a      # -grad f
        zb, za = full_solve(prob, blk, gb, ga)
        size = max(float(np.max(np.abs(za), initial=0.0)), float(np.max(np.abs(zb), initial=0.0)))
        slope = -(float(zb @ gb) + float(za @ ga))
        f0, t = fval(st), 1.0
        if size <= step_tol or -slope <= 1e-15 * (1.0 + abs(f0)):     # at the rounding floor
            return st, blk
        while t > 1e-8:
            new = evaluate(st.beta + t * zb, st.a + t * za)
            if fval(new) <= f0 + 1e-4 * t * slope or abs(fval(new) - f0) <= 1e-14 * abs(f0):
                break
            t *= 0.5
        else:
            return None
        st = new
    return None


def nagq0_value_grad(prob: LevelProblem, st: State, lam: np.ndarray, probes=None,
                     gradient: bool = True, blk=None):
    """(c0, dc0/dlog tau_k (K,), block) at the joint mode ``st`` for prior precisions ``lam`` (K,).

    ``st`` must carry the last row pass at (st.beta, st.a) (st.dev, st.W and prob.w); ``blk``
    the level block there, if already factored.
    """
    lam = np.asarray(lam, dtype=np.float64)
    lam_l = prob.expand(lam)
    if blk is None:
        blk = level_block(prob, lam_l, st.W, probes)
    value = float(st.dev + np.dot(lam_l * st.a, st.a) + blk.logdet() - np.sum(np.log(lam_l)))
    if not gradient:
        return value, None, blk
    rows = mode_rows(prob, st)
    dinv, v = blk.diag_and_rows()
    u = rows.dw * v
    zb, za = full_solve(prob, blk, x_totals(prob, u), level_totals(prob, u))
    dlam = (_per_factor(prob, st.a * st.a) + _per_factor(prob, dinv) - prob.q / lam
            - _per_factor(prob, za * st.a))
    return value, -2.0 * lam * dlam, blk


def nagq1_value_grad(sub: LevelProblem, st: State, lam: np.ndarray, X: np.ndarray, probes=None,
                     blk=None):
    """(c1, dc1/dlog tau (K,), dc1/dbeta (p,)) at the mode over a alone.

    ``sub`` is the level-only problem (p = 0) whose offset holds offset + X beta; ``X`` the
    fixed-effects rows in the same stored order ((n, p) or one broadcast row).
    """
    lam = np.asarray(lam, dtype=np.float64)
    lam_l = sub.expand(lam)
    if blk is None:
        blk = level_block(sub, lam_l, st.W, probes)
    value = float(st.dev + np.dot(lam_l * st.a, st.a) + blk.logdet() - np.sum(np.log(lam_l)))
    rows = mode_rows(sub, st)
    dinv, v = blk.diag_and_rows()
    u = rows.dw * v
    Ztu = level_totals(sub, u)
    za = blk.solve(Ztu)
    dlam = (_per_factor(sub, st.a * st.a) + _per_factor(sub, dinv) - sub.q / lam
            - _per_factor(sub, za * st.a))
    full = X.shape[0] > 1
    B = np.empty((sub.Q, X.shape[1]))
    KL.level_xw_pass(X, sub.gidx, np.ascontiguousarray(rows.w), B)
    Xt = (lambda z: X.T @ z) if full else (lambda z: X[0] * float(z.sum()))
    gbeta = -2.0 * Xt(rows.r) + Xt(u) - B.T @ za
    return value, -2.0 * lam * dlam, gbeta


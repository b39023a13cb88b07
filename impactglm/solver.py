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
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numba
import numpy as np
import pandas as pd
from scipy import linalg

from . import encoding
from .errors import ConvergenceWarning, DataError, ModelError, SeparationWarning
from .families import Family, get_family
from .fitoutput import FactorEffects, FitOutput
from .kernels import levels as KL

__all__ = ["fit_high_cardinality", "LevelProblem", "NO_PRIOR_RIDGE"]

NO_PRIOR_RIDGE = 1e-5           # prior precision used when prior_sd is None
_SUPPORTED = ("gaussian", "binomial", "poisson")
_J = 3                           # level directions per factor


# ----------------------------------------------------------------------------- input checks

def _as_float_vector(v, n: int, what: str, default: float) -> np.ndarray:
    if v is None:
        return np.full(n, default)
    a = np.asarray(v, dtype=np.float64)
    if a.ndim != 1 or a.shape[0] != n:
        raise DataError(f"{what} must be a vector of length {n} (the number of rows), got shape {a.shape}")
    bad = ~np.isfinite(a)
    if bad.any():
        raise DataError(f"{what} must be finite; row {int(np.flatnonzero(bad)[0])} is {a[bad][0]!r}")
    return a


def _check_factors(factors, n: int, names: Sequence[str]) -> list[tuple[np.ndarray, int]]:
    out = []
    if len(factors) == 0:
        raise ModelError("fit_high_cardinality needs at least one factor")
    for k, f in enumerate(factors):
        try:
            codes, q = f
        except (TypeError, ValueError):
            raise ModelError(f"factor {names[k]!r}: expected a (codes, n_levels) pair") from None
        codes = np.asarray(codes)
        q = int(q)
        if codes.ndim != 1 or codes.shape[0] != n:
            raise DataError(f"factor {names[k]!r}: codes must have length {n}, got shape {codes.shape}")
        if not np.issubdtype(codes.dtype, np.integer):
            raise DataError(f"factor {names[k]!r}: codes must be integers, got {codes.dtype}")
        if q < 1:
            raise DataError(f"factor {names[k]!r}: needs at least one level")
        if n:
            lo, hi = int(codes.min()), int(codes.max())
            if lo < 0 or hi >= q:
                bad = int(np.flatnonzero((codes < 0) | (codes >= q))[0])
                raise DataError(f"factor {names[k]!r}: row {bad} has level code {int(codes[bad])}, "
                                f"outside 0..{q - 1} (missing or unseen level?)")
        out.append((codes, q))
    return out


def _prior_precisions(prior_sd, K: int, names) -> tuple[list[float | None], np.ndarray]:
    if isinstance(prior_sd, (int, float)) or prior_sd is None:
        prior_sd = [prior_sd] * K
    if isinstance(prior_sd, dict):
        prior_sd = [prior_sd.get(nm) for nm in names]
    taus = list(prior_sd)
    if len(taus) != K:
        raise ModelError(f"prior_sd must have one entry per factor ({K}), got {len(taus)}")
    lam = np.empty(K)
    for k, t in enumerate(taus):
        if t is None:
            lam[k] = NO_PRIOR_RIDGE
        else:
            t = float(t)
            if not (t > 0 and math.isfinite(t)):
                raise ModelError(f"prior_sd for factor {names[k]!r} must be a positive number or None, got {t!r}")
            lam[k] = 1.0 / t ** 2
            taus[k] = t
    return taus, lam


# ----------------------------------------------------------------------------- the problem

@dataclass
class State:
    """Parameters and the quantities of the last row pass at them."""

    beta: np.ndarray
    a: np.ndarray
    f: float = math.inf
    dev: float = math.inf
    G: np.ndarray | None = None
    W: np.ndarray | None = None
    Xr: np.ndarray | None = None
    Xd: np.ndarray | None = None
    n_iter: int = 0
    n_passes: int = 0
    converged: bool = False
    max_grad: float = math.inf
    max_step: float = math.inf
    log: list = field(default_factory=list)
    t0: float = field(default_factory=time.perf_counter)     # start of the fit (log seconds)


class LevelProblem:
    """Arrays of one fit plus preallocated workspaces (no temporaries per pass).

    ``gidx[i, k]`` is the global index of row i's level of factor k in the
    concatenated effect vector (factor k occupies ``starts[k]:starts[k+1]``).
    Large problems are stored with the rows sorted by the factor with the most levels
    (``perm``: stored row i is caller row perm[i]) so that its gathers and sums stream
    through memory; constant X, unit weights and zero offset are stored as single rows.
    """

    SORT_MIN_ROWS = 50_000

    def __init__(self, X, factors, y, weights, offset, family: Family, *, names=None,
                 n_threads: int | None = None):
        self.family = family
        self.fam = int(family.code)
        self.link = int(family.link.code)
        y_in = np.asarray(y)
        n = y_in.shape[0] if y_in.ndim else 0
        self.n = n
        self.names = list(names) if names is not None else [f"factor{k}" for k in range(len(factors))]
        if X is None:
            X = np.ones((1, 1))
        else:
            X = np.asarray(X, dtype=np.float64)
            if X.ndim != 2 or X.shape[0] != n:
                raise DataError(f"X must be an (n, p) matrix with n = {n} rows, got shape {X.shape}")
            if not np.all(np.isfinite(X)):
                r, c = np.argwhere(~np.isfinite(X))[0]
                raise DataError(f"X has a non-finite value in row {int(r)}, column {int(c)}")
        y = _as_float_vector(y_in, n, "y", 0.0)
        family.check_response(y, "y")
        pw = np.ones(1) if weights is None else _as_float_vector(weights, n, "weights", 1.0)
        if np.any(pw < 0):
            raise DataError(f"weights must be non-negative; row {int(np.flatnonzero(pw < 0)[0])} is negative")
        off = np.zeros(1) if offset is None else _as_float_vector(offset, n, "offset", 0.0)
        facs = _check_factors(factors, n, self.names)
        self.K = len(facs)
        self.q = np.array([q for _, q in facs], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.q)]).astype(np.int64)
        self.Q = int(self.starts[-1])
        self.p = X.shape[1]
        # sort the rows by the largest factor
        k_sort = int(np.argmax(self.q))
        if n >= self.SORT_MIN_ROWS:
            c0 = np.ascontiguousarray(facs[k_sort][0], dtype=np.int32 if self.q[k_sort] < 2 ** 31 else np.int64)
            self.perm = KL.counting_sort(c0, int(self.q[k_sort]))
        else:
            self.perm = np.empty(0, dtype=np.int64)
        # the caller's arrays (references, never modified) for the final pass in caller order
        self._caller = (X, y, off, [np.asarray(c) for c, _ in facs]) if len(self.perm) else None
        self.X = self._take(X)
        self.y = self._take(y)
        self.pw = self._take(pw)
        self.offset = self._take(off)
        gidx = np.empty((n, self.K), dtype=np.int32 if self.Q < 2 ** 31 else np.int64)
        for k, (codes, _) in enumerate(facs):
            if len(self.perm) and k == k_sort:     # sorted codes: each level repeated its count times
                q_s = int(self.q[k])
                col = np.repeat(np.arange(q_s, dtype=gidx.dtype), np.bincount(c0, minlength=q_s))
            else:                                    # gathered and offset in place (no temporary)
                KL.gather_level_index(np.ascontiguousarray(codes), self.perm, int(self.starts[k]), gidx[:, k])
                continue
            gidx[:, k] = col
            gidx[:, k] += self.starts[k]
        self.gidx = gidx
        self.T = int(n_threads or numba.get_num_threads())
        if n < 100_000:
            self.T = 1                   # thread start-up costs more than it saves
        T, Q, p = self.T, self.Q, self.p
        self.accGW = np.empty((T, Q, 2))
        self.accA = np.empty((T, Q))
        self.accXr = np.empty((T, p))
        self.accXd = np.empty((T, p))
        self.accDev = np.empty(T)
        self.w = np.empty(n)
        # a fourth, coupled direction per factor when X has a non-constant column
        self.coupled = bool(self.X.shape[0] > 1 and np.any(np.ptp(self.X, axis=0) > 0))
        self.J = _J + int(self.coupled)
        self.m = p + self.K * self.J
        self.accH = np.empty((T, self.m, self.m))
        self.L = np.zeros((Q, self.J))
        self.B = np.empty((Q, p)) if self.coupled else None
        self.Hbb = None                  # X'WX of the last reduced Hessian (coupled direction)

    def _take(self, v: np.ndarray) -> np.ndarray:
        """v in stored row order (broadcast rows stay as they are)."""
        if v.shape[0] == 1 and self.n != 1:
            return np.ascontiguousarray(v)
        if len(self.perm) == 0:
            return np.ascontiguousarray(v)
        if v.ndim == 1:
            out = np.empty(self.n, dtype=v.dtype)
            KL.gather_rows(np.ascontiguousarray(v), self.perm, out)
            return out
        return np.ascontiguousarray(v[self.perm])

    # -- views for other modules ---------------------------------------------------------
    def original_arrays(self):
        """(X (n, p), y, pw, offset) as full arrays in stored row order."""
        n = self.n
        X = np.broadcast_to(self.X, (n, self.p)) if self.X.shape[0] == 1 else self.X
        pw = np.broadcast_to(self.pw, (n,)) if self.pw.shape[0] == 1 else self.pw
        off = np.broadcast_to(self.offset, (n,)) if self.offset.shape[0] == 1 else self.offset
        return np.ascontiguousarray(X), self.y, np.ascontiguousarray(pw), np.ascontiguousarray(off)

    def factor_codes(self):
        """[(codes 0..q_k-1 in stored row order, q_k)] per factor."""
        return [(self.gidx[:, k] - self.starts[k], int(self.q[k])) for k in range(self.K)]

    # -- passes ------------------------------------------------------------------------
    def evaluate(self, st: State, lam_l: np.ndarray, inv_phi: float) -> None:
        """One row pass at (st.beta, st.a): fills f, dev, G, W, Xr, Xd; stores w."""
        if st.G is None:
            st.G, st.W = np.empty(self.Q), np.empty(self.Q)
            st.Xr, st.Xd = np.empty(self.p), np.empty(self.p)
        dev = KL.row_pass(self.X, st.beta, self.offset, self.gidx, st.a, self.y, self.pw,
                          self.fam, self.link, inv_phi, self.accGW, self.accXr,
                          self.accXd, self.accDev, self.w, True, st.G, st.W, st.Xr, st.Xd)
        st.dev = float(dev)
        reprice(st, lam_l, inv_phi)
        st.n_passes += 1

    def reduced_hessian(self, L: np.ndarray, W: np.ndarray | None = None) -> np.ndarray:
        """D'WD for D = [X | L[gidx[:,0]] | ... ] at the stored weights (light pass).

        With constant X rows (x_i = x0) and W the level sums of the stored weights, only
        the cross-factor blocks need the rows (:func:`~impactglm.kernels.levels.cross_pass`,
        J^2 products per row and factor pair); the others are level sums:
        X'WX = x0 x0' sum_l W_l (any one factor's levels), X'W L_k = x0 (W_k' L_k),
        L_k'W L_k = L_k' diag(W_k) L_k.
        """
        J = L.shape[1]
        m = self.p + self.K * J
        H = np.empty((m, m))
        if W is None or self.X.shape[0] != 1 or J == 0:
            acc = self.accH if m == self.m else np.empty((self.T, m, m))
            KL.hess_pass(self.X, self.gidx, self.w, L, acc, H)
            return H
        p, K, starts = self.p, self.K, self.starts
        x0 = self.X[0]
        H[:p, :p] = np.outer(x0, x0) * float(W[starts[0]:starts[1]].sum())
        for k in range(K):
            sl = slice(starts[k], starts[k + 1])
            bk = slice(p + k * J, p + (k + 1) * J)
            WL = W[sl, None] * L[sl]
            H[bk, bk] = L[sl].T @ WL
            H[:p, bk] = np.outer(x0, WL.sum(axis=0))
            H[bk, :p] = H[:p, bk].T
        if K > 1:
            npairs = K * (K - 1) // 2
            C = np.empty((npairs, J, J))
            KL.cross_pass(self.gidx, self.w, np.ascontiguousarray(L), np.empty((self.T, npairs, J, J)), C)
            q = 0
            for k in range(K):
                for k2 in range(k + 1, K):
                    bk = slice(p + k * J, p + (k + 1) * J)
                    b2 = slice(p + k2 * J, p + (k2 + 1) * J)
                    H[bk, b2] = C[q]
                    H[b2, bk] = C[q].T
                    q += 1
        return H

    def hv(self, vb: np.ndarray, va: np.ndarray, lam_l: np.ndarray):
        """Penalised Hessian-vector product at the stored weights: (H v)_beta, (H v)_a."""
        outA = np.empty(self.Q)
        outX = np.empty(self.p)
        KL.hv_pass(self.X, self.gidx, self.w, vb, va, self.accA, self.accXr, outA, outX)
        return outX, outA + lam_l * va

    def level_sums(self) -> tuple[np.ndarray, np.ndarray]:
        """(sum pw y, sum pw) per global level."""
        wy, w = np.empty(self.Q), np.empty(self.Q)
        KL.level_sums(self.gidx, self.y, self.pw, wy, w)
        return wy, w

    def eta_mu(self, st: State) -> tuple[np.ndarray, np.ndarray]:
        """eta and mu in the caller's row order (a sequential pass over the caller's arrays
        when the rows were sorted: no scattered writes)."""
        eta, mu = np.empty(self.n), np.empty(self.n)
        none = np.empty(0, dtype=np.int64)
        if self._caller is None:
            KL.eta_pass(self.X, st.beta, self.offset, self.gidx, st.a, self.y, self.pw, self.fam,
                        self.link, none, eta, mu)
            return eta, mu
        X, y, off, codes = self._caller
        g = np.empty((self.n, self.K), dtype=self.gidx.dtype)
        for k, c in enumerate(codes):
            g[:, k] = c
            g[:, k] += self.starts[k]
        KL.eta_pass(np.ascontiguousarray(X), st.beta, off, g, st.a, y, self.pw, self.fam, self.link,
                    none, eta, mu)
        return eta, mu

    # -- helpers -------------------------------------------------------------------------
    def expand(self, per_factor: np.ndarray) -> np.ndarray:
        """Per-factor values -> one value per global level."""
        return np.repeat(np.asarray(per_factor, dtype=np.float64), self.q)


# ----------------------------------------------------------------------------- the loop

def reprice(st: State, lam_l: np.ndarray, inv_phi: float) -> None:
    """The objective f = dev / (2 phi) + sum_l lam_l a_l^2 / 2 at new prior precisions lam_l.

    The data parts of a row pass (dev, G, W, X'r, diag X'WX and the stored w_i) do not depend
    on lam, so a state evaluated under other prior precisions (same phi) needs no new pass.
    """
    st.f = 0.5 * st.dev * inv_phi + 0.5 * float(np.dot(lam_l * st.a, st.a))


def _start(prob: LevelProblem, taus, inv_phi: float) -> State:
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
            kappa = encoding.prior_pseudo_weight(grand, taus[k], fam, NO_PRIOR_RIDGE, 1.0 / inv_phi)
            a[sl] = encoding.smoothed_impact_code(swy[sl], swl[sl], grand, kappa, fam)
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


# ----------------------------------------------------------------------------- inference

EXACT_DENSE_LIMIT = 3000        # exact posterior variances when p + (levels outside the largest factor) <= this


def _posterior(prob: LevelProblem, st: State, lam_l: np.ndarray):
    """(cov_beta, se of every level, exact?) at the mode; see the module docstring."""
    p, Q = prob.p, prob.Q
    Dd = st.W + lam_l
    if prob.K > 1:
        parts = level_schur(prob, Dd, include_beta=True)
        if parts is not None:
            return _posterior_exact(prob, Dd, *parts)
    if prob.X.shape[0] == 1:                                # constant rows: no pass needed
        x0 = prob.X[0]
        B = st.W[:, None] * x0[None, :]
        A = np.outer(x0, x0) * float(st.W[prob.starts[0]:prob.starts[1]].sum())
    else:
        B = np.empty((Q, p))
        KL.level_xw_pass(prob.X, prob.gidx, prob.w, B)
        A = prob.reduced_hessian(np.zeros((Q, 0)))         # X'WX
    if prob.K == 1:
        DinvB = B / Dd[:, None]
    else:
        DinvB = np.column_stack([_solve_levels(prob, B[:, j], lam_l, Dd, rtol=1e-8) for j in range(p)])
    S = A - B.T @ DinvB
    S = 0.5 * (S + S.T)
    try:
        cov = linalg.inv(S)
    except linalg.LinAlgError:
        cov = linalg.pinv(S)
    Db = B / Dd[:, None]
    var = 1.0 / Dd + np.einsum("lj,jk,lk->l", Db, cov, Db)
    return cov, np.sqrt(np.maximum(var, 0.0)), prob.K == 1


def level_schur(prob: LevelProblem, Dd: np.ndarray, include_beta: bool = True):
    """Eliminate the largest factor (diagonal block D1) from the penalised Hessian.

    Parameters are ordered (largest factor 1, rest R = [beta (if include_beta), other
    factors]).  With C = Z1'W Z_R (sparse, from the stored weights) the Schur complement
    is S = H_RR - C' D1^-1 C (dense, small).  Returns (S, D1, C, rest_idx), or None when R
    has more than EXACT_DENSE_LIMIT columns.
    """
    import scipy.sparse as sp
    n = prob.n
    p = prob.p if include_beta else 0
    k1 = int(np.argmax(prob.q))
    others = [k for k in range(prob.K) if k != k1]
    rest_idx = (np.concatenate([np.arange(prob.starts[k], prob.starts[k + 1]) for k in others])
                if others else np.zeros(0, dtype=np.int64))
    s = p + rest_idx.size
    if s > EXACT_DENSE_LIMIT or s == 0:
        return None
    pos = np.empty(prob.Q, dtype=np.int64)
    pos[rest_idx] = p + np.arange(rest_idx.size)
    ncol = p + len(others)
    rows = np.repeat(np.arange(n), ncol)
    parts_c, parts_v = [], []
    if p:
        parts_c.append(np.tile(np.arange(p), (n, 1)))
        parts_v.append(np.broadcast_to(prob.X, (n, p)) if prob.X.shape[0] == 1 else prob.X)
    for k in others:
        parts_c.append(pos[prob.gidx[:, k]][:, None])
        parts_v.append(np.ones((n, 1)))
    cols = np.concatenate(parts_c, axis=1).ravel()
    vals = np.concatenate(parts_v, axis=1).ravel()
    ZR = sp.csr_matrix((vals, (rows, cols)), shape=(n, s))
    WZR = sp.diags(prob.w) @ ZR
    H_RR = (ZR.T @ WZR).toarray()
    q1 = int(prob.q[k1])
    Z1 = sp.csr_matrix((np.ones(n), (np.arange(n), prob.gidx[:, k1] - prob.starts[k1])), shape=(n, q1))
    C = (Z1.T @ WZR).tocsr()
    D1 = Dd[prob.starts[k1]:prob.starts[k1 + 1]]
    H_RR[np.arange(p, s), np.arange(p, s)] = Dd[rest_idx]
    S = H_RR - (C.T @ sp.diags(1.0 / D1) @ C).toarray()
    S = 0.5 * (S + S.T)
    return S, D1, C, rest_idx


def _posterior_exact(prob: LevelProblem, Dd: np.ndarray, S, D1, C, rest_idx):
    """Exact beta block and level variances from :func:`level_schur`."""
    Sinv, var = schur_inverse_diag(prob, S, D1, C, rest_idx)
    p = S.shape[0] - rest_idx.size
    return Sinv[:p, :p].copy(), np.sqrt(np.maximum(var, 0.0)), True


def schur_inverse_diag(prob: LevelProblem, S, D1, C, rest_idx):
    """(S^-1, diag of H^-1 over every level) from :func:`level_schur`.

    H^-1 restricted to R is S^-1 and, for a level l of the largest factor,
    [H^-1]_ll = 1/D1_l + c_l' S^-1 c_l / D1_l^2 with c_l the l-th row of C.
    """
    k1 = int(np.argmax(prob.q))
    p = S.shape[0] - rest_idx.size
    Sinv = linalg.inv(S)
    Sinv = 0.5 * (Sinv + Sinv.T)
    var = np.empty(prob.Q)
    var[rest_idx] = np.diag(Sinv)[p:]
    corr = np.empty(D1.size)
    s = S.shape[0]
    step = max(1, int(2e7 // max(s, 1)))
    for lo in range(0, corr.size, step):
        Cb = C[lo:lo + step]
        corr[lo:lo + step] = np.asarray(Cb.multiply(Cb @ Sinv).sum(axis=1)).ravel()
    var[prob.starts[k1]:prob.starts[k1 + 1]] = 1.0 / D1 + corr / D1 ** 2
    return Sinv, var


def _solve_levels(prob: LevelProblem, rhs: np.ndarray, lam_l: np.ndarray, Dd: np.ndarray,
                  rtol: float = 1e-10, maxiter: int = 500) -> np.ndarray:
    """Solve D x = rhs (D = level block of the penalised Hessian, cross-factor terms included)
    by preconditioned conjugate gradients, one hv pass per iteration.

    Two-level additive preconditioner: M^-1 r = r / diag(D) + V E^-1 V'r with V the K
    indicator vectors "constant over the levels of factor k" and E = V'DV.  E needs no
    pass: Z'WZ 1_k = W (every level's weight sum), so E_kk' = sum_{l in k} W_l +
    [k = k'] lam_k q_k.  The coarse part removes the nearly flat "shift one factor up,
    another down" mode that otherwise dominates the iteration count.
    """
    K, starts = prob.K, prob.starts
    W = Dd - lam_l
    E = np.empty((K, K))
    for k in range(K):
        Wk = float(W[starts[k]:starts[k + 1]].sum())
        E[k, :] = Wk
    for k in range(K):
        E[k, k] += float(lam_l[starts[k]:starts[k + 1]].sum())
    E = 0.5 * (E + E.T)
    Einv = linalg.pinv(E)

    def precond(r):
        vr = np.array([r[starts[k]:starts[k + 1]].sum() for k in range(K)])
        c = Einv @ vr
        return r / Dd + np.repeat(c, prob.q)

    zb = np.zeros(prob.p)
    x = np.zeros(prob.Q)
    r = rhs.copy()
    z = precond(r)
    d = z.copy()
    rz = float(r @ z)
    norm0 = math.sqrt(max(float(rhs @ rhs), 1e-300))
    for _ in range(maxiter):
        if math.sqrt(float(r @ r)) <= rtol * norm0:
            break
        _, Hd = prob.hv(zb, d, lam_l)
        alpha = rz / float(d @ Hd)
        x += alpha * d
        r -= alpha * Hd
        z = precond(r)
        rz_new = float(r @ z)
        d = z + (rz_new / rz) * d
        rz = rz_new
    return x


# ----------------------------------------------------------------------------- public entry

def _separated_levels(prob: LevelProblem) -> np.ndarray:
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
        st = _start(prob, taus, inv_phi)
    else:
        st = State(beta=start.beta.copy(), a=start.a.copy(), n_passes=start.n_passes,
                   n_iter=start.n_iter, log=start.log, t0=start.t0)
    return newton_loop(prob, st, lam_l, inv_phi, tol=tol, maxiter=maxiter, verbose=verbose, t0=t0)


def _gaussian_scale(prob: LevelProblem, st: State, lam_l: np.ndarray, inv_phi: float) -> float:
    """sigma^2 = RSS / (n_eff - p - sum_k edf_k) at the mode (fixed-tau gaussian fits)."""
    edf = float(np.sum(st.W / (st.W + lam_l)))
    rss = st.dev
    n_eff = float(prob.n if prob.pw.shape[0] == 1 else np.sum(prob.pw > 0))
    return rss / max(n_eff - prob.p - edf, 1.0)


def fit_high_cardinality(X, factors, y, weights, offset, family, prior_sd="auto", *,
                         method: str = "reml", tol: float = 1e-8, maxiter: int = 200,
                         verbose: bool = False, levels=None, counts=None, names=None,
                         scale: float | None = None) -> FitOutput:
    """Posterior-mode fit of eta = offset + X beta + sum_k a_k[codes_k], a_k ~ N(0, tau_k^2).

    Parameters
    ----------
    X : (n, p) float array (None: intercept only); factors : list of (codes int32 (n,), n_levels);
    y, weights, offset : (n,) arrays (weights/offset may be None); family : name or Family
    (gaussian, binomial, poisson; any of their links).
    prior_sd : "auto" (tau_k by empirical Bayes, :mod:`impactglm.variance`; gaussian by REML
        or ML per ``method``, binomial/poisson by the glmer(nAGQ=0) Laplace criterion),
        a number, a list (one per factor; None = no prior), or a dict name -> value.
        With no prior a ridge of precision 1e-5 keeps separated levels finite
        (SeparationWarning with their count).
    tol : convergence certificate, max_j |g_j| / H_jj (see the module docstring).
    scale : gaussian only: the residual variance sigma^2 to use with a fixed tau (default:
        estimated as RSS / (n - p - edf) by fixed-point iteration).

    Returns a FitOutput with ``effects`` (one FactorEffects per factor) and ``extra``:
    max_grad, max_step, objective, n_passes, log (DataFrame), prior_sd, scale.
    """
    t0 = time.perf_counter()
    fam = get_family(family)
    if fam.name not in _SUPPORTED:
        raise ModelError(f"^ terms support the families {', '.join(_SUPPORTED)}, not {fam.name!r}")
    K = len(factors)
    names = list(names) if names is not None else [f"factor{k}" for k in range(K)]
    prob = LevelProblem(X, factors, y, weights, offset, fam, names=names)
    tau_estimated = isinstance(prior_sd, str)
    extra: dict = {}
    warm = None
    if tau_estimated:
        if prior_sd != "auto":
            raise ModelError(f"prior_sd must be 'auto', a number, a list or a dict, not {prior_sd!r}")
        from . import variance
        est = variance.estimate_tau(prob, method=method, tol=tol, verbose=verbose)
        taus = list(est.taus)
        if fam.name == "gaussian":
            scale = est.scale
        extra["tau_criterion"] = est.criterion
        extra["tau_evaluations"] = est.n_evaluations
        warm = est.state
    else:
        taus, _ = _prior_precisions(prior_sd, K, names)
    taus_checked, lam = _prior_precisions(taus, K, names)
    lam_l = prob.expand(lam)
    if any(t is None for t in taus_checked):
        sep = _separated_levels(prob)
        for k, t in enumerate(taus_checked):
            if t is None and sep[k] > 0:
                warnings.warn(f"factor {names[k]!r}: {sep[k]} level(s) are perfectly separated "
                              f"(all responses on the boundary); with prior_sd=None their effects are "
                              f"held finite only by a {NO_PRIOR_RIDGE:g} ridge", SeparationWarning,
                              stacklevel=2)
    if fam.name == "gaussian":
        fixed_scale = scale is not None
        phi = float(scale) if fixed_scale else float(np.var(prob.y) or 1.0)
        st = None
        for _ in range(100):
            st = solve_mode(prob, taus_checked, lam_l, 1.0 / phi, tol=tol, maxiter=maxiter,
                            verbose=verbose, start=st, t0=t0)
            if fixed_scale:
                break
            new = _gaussian_scale(prob, st, lam_l, 1.0 / phi)
            if not (math.isfinite(new) and new > 1e-14 * max(float(np.var(prob.y)), 1e-300)):
                raise ModelError("the gaussian ^ fit is (nearly) saturated: the residual variance "
                                 "is ~0, so sigma^2 cannot be estimated; give scale= (the residual "
                                 "variance) or smaller prior_sd")
            change = abs(new - phi) / phi
            phi = new
            st.G = None
            if change <= 1e-10:
                break
        if not fixed_scale:      # the mode at the final sigma^2, so estimates and scale agree
            st = solve_mode(prob, taus_checked, lam_l, 1.0 / phi, tol=tol, maxiter=maxiter,
                            verbose=verbose, start=st, t0=t0)
            if change > 1e-10:
                warnings.warn(f"the residual variance sigma^2 = RSS / (n - p - edf) did not settle in "
                              f"100 updates (last relative change {change:.2g}); the effects are the "
                              f"mode at the last sigma^2 = {phi:.6g}", ConvergenceWarning,
                              stacklevel=2)
    else:
        phi = 1.0
        if warm is not None and warm.G is not None:     # the state of the last pass (phi = 1)
            reprice(warm, lam_l, 1.0)
            st = newton_loop(prob, warm, lam_l, 1.0, tol=tol, maxiter=maxiter, verbose=verbose, t0=t0)
        else:
            st = solve_mode(prob, taus_checked, lam_l, 1.0, tol=tol, maxiter=maxiter, verbose=verbose,
                            t0=t0, start=warm)
    if not st.converged:
        warnings.warn(f"high-cardinality fit did not converge in {maxiter} iterations "
                      f"(certificate {st.max_step:.3g} > tol {tol:g}, max gradient {st.max_grad:.3g})",
                      ConvergenceWarning, stacklevel=2)
    try:
        cov, se, se_exact = _posterior(prob, st, lam_l)
    except (linalg.LinAlgError, np.linalg.LinAlgError, ValueError) as exc:
        raise ModelError(f"the penalised Hessian at the mode is singular or not finite ({exc}); "
                         f"the fit is (nearly) saturated or the predictors are collinear") from exc
    eta, mu = prob.eta_mu(st)
    effects = []
    for k in range(K):
        sl = slice(prob.starts[k], prob.starts[k + 1])
        q = int(prob.q[k])
        lv = np.asarray(levels[k]) if levels is not None else np.arange(q)
        ct = np.asarray(counts[k]) if counts is not None else np.bincount(
            prob.gidx[:, k], minlength=int(prob.starts[k + 1]))[prob.starts[k]:].astype(np.int64)
        W = st.W[sl]
        edf = float(np.sum(W / (W + lam_l[sl])))
        effects.append(FactorEffects(names[k], lv, ct, st.a[sl].copy(), se[sl].copy(), taus_checked[k],
                                     edf, tau_estimated))
    log = pd.DataFrame(st.log, columns=["iteration", "objective", "max_grad", "max_step", "step",
                                        "passes", "seconds"])
    extra.update(max_grad=st.max_grad, max_step=st.max_step, objective=st.f, n_passes=st.n_passes,
                 log=log, prior_sd={names[k]: taus_checked[k] for k in range(K)}, scale=phi,
                 deviance=st.dev, se_exact=se_exact, fit_seconds=time.perf_counter() - t0)
    return FitOutput(beta=st.beta.copy(), cov_beta=cov, eta=eta, mu=mu, scale=phi, n_iter=st.n_iter,
                     converged=st.converged, log=log, effects=tuple(effects), extra=extra)

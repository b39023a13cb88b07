"""Array-level core of the linear mixed model fitter (lme4's method, MixedModels.jl's structure).

Model (Bates, Maechler, Bolker & Walker 2015, "Fitting Linear Mixed-Effects
Models Using lme4", J. Stat. Softw. 67(1)):

    y = X beta + Z b + e,    e ~ N(0, sigma^2 W^-1),    b = Lambda(theta) u,  u ~ N(0, sigma^2 I)

with K random-effects blocks.  Block k has a grouping factor with q_k levels
and r_k terms (columns of ``Z_k``); its random effects are ordered level by
level, ``b_k = (I_qk (x) T_k) u_k`` with ``T_k`` the r_k x r_k lower-triangular
relative covariance factor (Var(b_k,level) = sigma^2 T_k T_k').  theta holds
the lower triangles of the T_k column by column (lme4's order), block by block.

Penalised least squares.  The Cholesky factor of the augmented cross-product
matrix (Z~ = Z Lambda)

    [ Z~'WZ~ + I   Z~'WX   Z~'Wy ]   [ L_ZZ          ] [ L_ZZ          ]'
    [ X'WZ~        X'WX    X'Wy  ] = [ L_XZ  L_XX    ] [ L_XZ  L_XX    ]
    [ y'WZ~        y'WX    y'Wy  ]   [ l_yZ  l_yX  r ] [ l_yZ  l_yX  r ]

gives everything: log|L|^2 = 2 sum log diag L_ZZ, log|R_X|^2 = 2 sum log diag
L_XX, the penalised weighted residual sum of squares r^2, beta from
L_XX' beta = l_yX', u from L_ZZ' u = l_yZ' - L_XZ' beta.  The profiled criteria
(lme4's ``lmerResp::Laplace``, ldW = sum log w_i) are

    ML    d(theta)     = log|L|^2 - ldW + n (1 + log(2 pi r^2 / n))
    REML  d_R(theta)   = log|L|^2 + log|R_X|^2 - ldW + (n-p) (1 + log(2 pi r^2 / (n-p)))

Structure.  The block with the most random effects ("block 1") is eliminated
first: its part of Z~'WZ~ + I is block diagonal (an r1 x r1 block
M_l = T_1' G_l T_1 + I per level), so its Cholesky factor is L_l = chol(M_l)
and the Schur complement onto the remaining columns R = [Z_2..Z_K, X, y] is

    S = Lambda_R' (A_RR - B'B) Lambda_R + [I_m 0; 0 0],     B = blockdiag(L_l^-1 T_1') A_1R.

A_RR, A_1R (sparse, stored level by level) and the G_l come from one pass over
the rows (:class:`LMMProblem`); each evaluation of the criterion then costs
O(nnz(A_1R) x mean row length) for B'B plus one dense Cholesky of S, of order
m + p + 1 with m = sum_{k>=2} q_k r_k: O(levels), never O(rows).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import linalg, sparse
from scipy.linalg import blas, lapack


from ..errors import DataError, ModelError
from ..kernels.lmm import level_dot, level_quadratic, schur_downdate
from .optimize import Certificate, optimize_theta, theta_pairs, theta_start, theta_to_T

LOG_2PI = math.log(2.0 * math.pi)
MAX_DENSE_SCHUR = 20_000        # order of the dense Schur complement we are willing to factor


# --------------------------------------------------------------------------- blocks


@dataclass(frozen=True)
class REBlock:
    """One random-effects block: grouping codes 0..n_levels-1 and its (n, r) model columns."""

    codes: np.ndarray
    n_levels: int
    Z: np.ndarray
    name: str = "g"
    term_names: tuple[str, ...] = ("(Intercept)",)

    @property
    def r(self) -> int:
        return self.Z.shape[1]

    @property
    def n_theta(self) -> int:
        return self.r * (self.r + 1) // 2

    @property
    def n_effects(self) -> int:
        return self.n_levels * self.r


def as_blocks(blocks: Sequence[Any], n: int) -> list[REBlock]:
    """Normalise random-effects blocks given as REBlock, design RandomBlock, or tuples.

    Accepted forms: ``(codes, n_levels)`` (a random intercept), ``(codes, n_levels, Z)``,
    or any object with ``codes``, ``Z`` and ``levels`` (or ``n_levels``) attributes and
    optionally ``group``/``name`` and ``term_names``.
    """
    out = []
    for i, blk in enumerate(blocks):
        if isinstance(blk, REBlock):
            b = blk
        elif isinstance(blk, tuple):
            codes, q = blk[0], int(blk[1])
            Z = np.ones((n, 1)) if len(blk) == 2 else np.asarray(blk[2], dtype=float).reshape(n, -1)
            names = ("(Intercept)",) if len(blk) == 2 else tuple(f"z{j}" for j in range(Z.shape[1]))
            b = REBlock(np.asarray(codes), q, Z, f"g{i + 1}", names)
        else:
            q = int(getattr(blk, "n_levels", None) or len(blk.levels))
            name = getattr(blk, "group", None) or getattr(blk, "name", f"g{i + 1}")
            b = REBlock(np.asarray(blk.codes), q, np.asarray(blk.Z, dtype=float), str(name),
                        tuple(getattr(blk, "term_names", ())) or ("(Intercept)",))
        Z = b.Z.reshape(n, -1) if b.Z.ndim == 1 else b.Z
        codes = np.asarray(b.codes)
        if codes.shape != (n,) or Z.shape[0] != n:
            raise DataError(f"random-effects block {b.name!r}: codes/Z have {codes.shape[0]}/"
                            f"{Z.shape[0]} rows, the response has {n}")
        if n and (codes.min() < 0 or codes.max() >= b.n_levels):
            raise DataError(f"random-effects block {b.name!r}: level codes must lie in "
                            f"0..{b.n_levels - 1}")
        if not np.all(np.isfinite(Z)):
            row = int(np.flatnonzero(~np.all(np.isfinite(Z), axis=1))[0])
            raise DataError(f"random-effects block {b.name!r}: non-finite value in row {row}")
        names = b.term_names if len(b.term_names) == Z.shape[1] else tuple(f"z{j}" for j in range(Z.shape[1]))
        out.append(REBlock(codes.astype(np.int64), b.n_levels, np.ascontiguousarray(Z, dtype=float),
                           b.name, names))
    return out


# --------------------------------------------------------------------------- sufficient statistics


def _level_gram(codes: np.ndarray, q: int, Z: np.ndarray, w: np.ndarray) -> np.ndarray:
    """G[l] = sum_{i in level l} w_i z_i z_i'   (q, r, r)."""
    r = Z.shape[1]
    G = np.empty((q, r, r))
    for a in range(r):
        for b in range(a + 1):
            G[:, a, b] = np.bincount(codes, weights=w * Z[:, a] * Z[:, b], minlength=q)
            G[:, b, a] = G[:, a, b]
    return G


def _level_cross(codes: np.ndarray, q: int, Z: np.ndarray, wXY: np.ndarray) -> np.ndarray:
    """C[l, t, j] = sum_{i in level l} Z[i, t] wXY[i, j]   (q, r, p+1)."""
    r, c = Z.shape[1], wXY.shape[1]
    C = np.empty((q, r, c))
    for t in range(r):
        for j in range(c):
            C[:, t, j] = np.bincount(codes, weights=Z[:, t] * wXY[:, j], minlength=q)
    return C


def _pair_cross(a: REBlock, b: REBlock, w: np.ndarray):
    """Sparse Z_a' W Z_b: (levels of a, levels of b, values (r_a, r_b, npairs)) over observed pairs."""
    key = a.codes * np.int64(b.n_levels) + b.codes
    uniq, inv = np.unique(key, return_inverse=True)
    V = np.empty((a.r, b.r, uniq.size))
    for t in range(a.r):
        for s in range(b.r):
            V[t, s] = np.bincount(inv, weights=w * a.Z[:, t] * b.Z[:, s], minlength=uniq.size)
    return uniq // b.n_levels, uniq % b.n_levels, V


# --------------------------------------------------------------------------- the problem


@dataclass
class Factorization:
    """Everything one evaluation at theta produced (kept for the final solve)."""

    theta: np.ndarray
    T: list
    L1: np.ndarray          # (q1, r1, r1) Cholesky factors of M_l (r1 == 1: (q1, 1, 1))
    Bv: np.ndarray          # (r1, nnz) B Lambda_R, level by level
    S: np.ndarray           # (N, N) lower triangle = Cholesky factor of the Schur complement
    ldL2: float
    ldRX2: float
    pwrss: float
    ok: bool


class LMMProblem:
    """Sufficient statistics of a linear mixed model, and its profiled criterion.

    ``LMMProblem(X, y, blocks, weights=None)`` makes one pass over the rows; then
    ``criterion(theta, reml=True)`` costs O(levels) (see the module docstring).
    theta is ordered as the ``blocks`` are given (lower triangle of each T_k,
    column by column).
    """

    def __init__(self, X: np.ndarray, y: np.ndarray, blocks: Sequence[Any],
                 weights: np.ndarray | None = None):
        y = np.asarray(y, dtype=float).ravel()
        n = y.shape[0]
        X = np.asarray(X, dtype=float).reshape(n, -1)
        w = np.ones(n) if weights is None else np.asarray(weights, dtype=float).ravel()
        _check_finite("response", y)
        _check_finite("fixed-effects design", X)
        _check_finite("weights", w)
        if w.shape != (n,):
            raise DataError(f"weights have {w.shape[0]} rows, the response has {n}")
        if np.any(w < 0):
            raise DataError(f"weights must be non-negative; row {int(np.flatnonzero(w < 0)[0])} "
                            f"has {w[w < 0][0]}")
        blocks = as_blocks(blocks, n)
        if np.any(w == 0):          # rows with weight 0 carry no information (as in R's lm)
            keep = w > 0
            y, X, w = y[keep], X[keep], w[keep]
            blocks = [REBlock(b.codes[keep], b.n_levels, b.Z[keep], b.name, b.term_names)
                      for b in blocks]
            n = y.shape[0]
        if not blocks:
            raise ModelError("a linear mixed model needs at least one random-effects term")
        self.n, self.p = n, X.shape[1]
        self.blocks = blocks
        self.ldW = float(np.sum(np.log(w)))
        self.theta_offsets = np.cumsum([0] + [b.n_theta for b in blocks])
        self.first = int(np.argmax([b.n_effects for b in blocks]))
        self.rest = [k for k in range(len(blocks)) if k != self.first]
        self._setup(X, y, w)

    @property
    def n_theta(self) -> int:
        return int(self.theta_offsets[-1])

    # ------------------------------------------------------------------ one pass over rows
    def _setup(self, X: np.ndarray, y: np.ndarray, w: np.ndarray) -> None:
        n, p, blocks = self.n, self.p, self.blocks
        XY = np.column_stack([X, y])
        wXY = XY * w[:, None]
        self.offsets = {}
        m = 0
        for k in self.rest:
            self.offsets[k] = m
            m += blocks[k].n_effects
        self.m, self.N = m, m + p + 1
        if self.N > MAX_DENSE_SCHUR:
            raise ModelError(f"the random-effects blocks other than the largest have {m} effects; "
                             f"the dense Schur complement ({self.N} x {self.N}, "
                             f"{self.N ** 2 * 8 / 2 ** 30:.1f} GiB) is too large for this fitter "
                             f"(limit {MAX_DENSE_SCHUR}); put the factor with the most levels "
                             "first or fit the model with ig.glm(..., '^g') terms")
        b1 = blocks[self.first]
        self.G1 = _level_gram(b1.codes, b1.n_levels, b1.Z, w)
        A = np.zeros((self.N, self.N))
        A[m:, m:] = XY.T @ wXY
        lev_parts, col_parts, val_parts = [], [], []
        for idx, k in enumerate(self.rest):
            bk, off = blocks[k], self.offsets[k]
            Gk = _level_gram(bk.codes, bk.n_levels, bk.Z, w)
            cols = off + np.arange(bk.n_effects).reshape(bk.n_levels, bk.r)
            for s in range(bk.r):
                for t in range(bk.r):
                    A[cols[:, s], cols[:, t]] = Gk[:, s, t]
            C = _level_cross(bk.codes, bk.n_levels, bk.Z, wXY).reshape(bk.n_effects, p + 1)
            A[m:, off:off + bk.n_effects] = C.T
            A[off:off + bk.n_effects, m:] = C
            for k2 in self.rest[idx + 1:]:
                b2, off2 = blocks[k2], self.offsets[k2]
                la, lb, V = _pair_cross(bk, b2, w)
                for s in range(bk.r):
                    for t in range(b2.r):
                        A[off + la * bk.r + s, off2 + lb * b2.r + t] = V[s, t]
                        A[off2 + lb * b2.r + t, off + la * bk.r + s] = V[s, t]
            la, lb, V = _pair_cross(b1, bk, w)          # (r1, r_k, npairs)
            for t in range(bk.r):
                lev_parts.append(la)
                col_parts.append(off + lb * bk.r + t)
                val_parts.append(V[:, t, :])
        C1 = _level_cross(b1.codes, b1.n_levels, b1.Z, wXY)   # (q1, r1, p+1)
        lev_parts.append(np.repeat(np.arange(b1.n_levels), p + 1))
        col_parts.append(np.tile(m + np.arange(p + 1), b1.n_levels))
        val_parts.append(C1.transpose(1, 0, 2).reshape(b1.r, -1))
        lev = np.concatenate(lev_parts)
        col = np.concatenate(col_parts)
        order = np.lexsort((col, lev))
        self.entry_level = lev[order]
        self.cols = np.ascontiguousarray(col[order], dtype=np.int64)
        self.V1 = np.ascontiguousarray(np.concatenate(val_parts, axis=1)[:, order])
        self.ptr = np.concatenate([[0], np.cumsum(np.bincount(self.entry_level, minlength=b1.n_levels))])
        # the same entries column by column (for the row-wise kernels)
        self.col_entries = np.argsort(self.cols, kind="stable").astype(np.int64)
        self.colptr = np.concatenate([[0], np.cumsum(np.bincount(self.cols, minlength=self.N))])
        self.A = A
        self.intercepts_only_rest = all(blocks[k].r == 1 for k in self.rest)
        # entries of slope blocks (r_k > 1) among the rest: (npairs, r_k) index arrays
        self._slope_entries = {}
        for k in self.rest:
            bk = blocks[k]
            if bk.r > 1:
                off = self.offsets[k]
                sel = np.flatnonzero((self.cols >= off) & (self.cols < off + bk.n_effects))
                self._slope_entries[k] = sel.reshape(-1, bk.r)   # sorted: r_k consecutive columns
        self.yty = float(XY[:, -1] @ wXY[:, -1])

    # ------------------------------------------------------------------ per theta
    def T_list(self, theta: np.ndarray) -> list[np.ndarray]:
        """The relative covariance factors T_k of every block at theta."""
        o = self.theta_offsets
        return [theta_to_T(theta[o[k]:o[k + 1]], b.r) for k, b in enumerate(self.blocks)]

    def factor(self, theta: np.ndarray, scratch: bool = False) -> Factorization:
        """Factor the augmented system at theta (block 1 explicitly, the rest densely).

        ``scratch=True`` builds the dense factor in a work array owned by the problem
        (reused by the next scratch evaluation: no N x N allocation per evaluation);
        the default gives the factorization an array of its own.
        """
        theta = np.asarray(theta, dtype=float)
        if theta.shape != (self.n_theta,):
            raise ModelError(f"theta must have {self.n_theta} elements, not {theta.size}")
        Ts = self.T_list(theta)
        b1, T1 = self.blocks[self.first], Ts[self.first]
        if b1.r == 1:
            t = T1[0, 0]
            d = np.sqrt(t * t * self.G1[:, 0, 0] + 1.0)
            ld1 = 2.0 * float(np.sum(np.log(d)))
            L1 = d.reshape(-1, 1, 1)
            Bv = self.V1 * (t / d)[self.entry_level][None, :]
        else:
            M = np.matmul(T1.T, np.matmul(self.G1, T1)) + np.eye(b1.r)
            L1 = np.linalg.cholesky(M)
            ld1 = 2.0 * float(np.sum(np.log(np.diagonal(L1, axis1=1, axis2=2))))
            K = np.linalg.solve(L1, np.broadcast_to(T1.T, L1.shape))
            Bv = np.einsum("ets,se->te", K[self.entry_level], self.V1)
        lam = np.ones(self.N)
        for k in self.rest:
            if self.blocks[k].r == 1:
                off = self.offsets[k]
                lam[off:off + self.blocks[k].n_levels] = Ts[k][0, 0]
        Bv *= lam[self.cols][None, :]
        if scratch:
            if getattr(self, "_work", None) is None:
                self._work = np.empty_like(self.A)
            S = np.multiply(self.A, lam[:, None], out=self._work)
        else:
            S = np.multiply(self.A, lam[:, None])
        S *= lam[None, :]
        for k, sel in self._slope_entries.items():
            Tk = Ts[k]
            Bv[:, sel] = np.einsum("tps,su->tpu", Bv[:, sel], Tk)
            off, bk = self.offsets[k], self.blocks[k]
            sl = slice(off, off + bk.n_effects)
            S[:, sl] = (S[:, sl].reshape(self.N, bk.n_levels, bk.r) @ Tk).reshape(self.N, -1)
            S[sl, :] = (Tk.T @ S[sl, :].reshape(bk.n_levels, bk.r, self.N)).reshape(-1, self.N)
        schur_downdate(self.ptr, self.cols, self.entry_level, self.colptr, self.col_entries, Bv, S)
        idx = np.arange(self.m)
        S[idx, idx] += 1.0
        # factor in place: S.T is a Fortran-ordered view whose upper triangle is S's lower one
        _, info = lapack.dpotrf(S.T, lower=0, overwrite_a=1, clean=0)
        diag = np.diagonal(S)
        ok = info == 0 and bool(np.all(diag > 0))
        if not ok:
            return Factorization(theta, Ts, L1, Bv, S, math.inf, math.inf, math.nan, False)
        m, p = self.m, self.p
        ldL2 = ld1 + 2.0 * float(np.sum(np.log(diag[:m])))
        ldRX2 = 2.0 * float(np.sum(np.log(diag[m:m + p])))
        pwrss = float(diag[m + p]) ** 2
        return Factorization(theta, Ts, L1, Bv, S, ldL2, ldRX2, pwrss, True)

    def criterion_from(self, f: Factorization, reml: bool) -> float:
        """The profiled REML or ML criterion (-2 log-likelihood) from a factorization."""
        if not f.ok or not f.pwrss > 0:
            return math.inf
        n, p = self.n, self.p
        if reml:
            nmp = n - p
            return f.ldL2 + f.ldRX2 - self.ldW + nmp * (1.0 + LOG_2PI + math.log(f.pwrss / nmp))
        return f.ldL2 - self.ldW + n * (1.0 + LOG_2PI + math.log(f.pwrss / n))

    def criterion(self, theta: np.ndarray, reml: bool = True) -> float:
        """The profiled REML (``reml=True``) or ML criterion at theta: -2 x log-likelihood."""
        return self.criterion_from(self.factor(theta, scratch=True), reml)

    # ------------------------------------------------------------------ starting values
    def moment_start(self) -> np.ndarray:
        """A cheap start for theta: ANOVA-type moment estimates for random intercepts.

        From the OLS residuals e (of y on X, from the cross-products), each intercept
        block's level means ebar_l (n_l rows) give tau_k^2 ~ var_l(ebar_l) -
        sigma_tot^2 mean_l(1/n_l), and sigma^2 ~ sigma_tot^2 - sum_k tau_k^2;
        theta_k = tau_k / sigma clipped to [0.05, 20].  Blocks with slopes start at
        lme4's T_k = I.  Only the starting point of the optimiser depends on this.
        """
        theta = theta_start(self.blocks)
        m, p, N = self.m, self.p, self.N
        XtX, Xty = self.A[m:m + p, m:m + p], self.A[m:m + p, N - 1]
        try:
            beta = np.linalg.solve(XtX, Xty) if p else np.zeros(0)
        except np.linalg.LinAlgError:
            return theta
        rss = self.yty - beta @ Xty
        if not (self.n > p + 1 and rss > 0):
            return theta
        s2 = rss / (self.n - p)
        v = np.zeros(N)
        v[m:m + p] = -beta
        v[-1] = 1.0
        tau2 = {}
        for k, blk in enumerate(self.blocks):
            if blk.r != 1:
                continue
            if k == self.first:
                sums, counts = level_dot(self.ptr, self.cols, self.V1, v)[:, 0], self.G1[:, 0, 0]
            else:
                off = self.offsets[k]
                sums = self.A[off:off + blk.n_levels] @ v
                counts = np.diagonal(self.A)[off:off + blk.n_levels]
            ok = counts > 0
            means = sums[ok] / counts[ok]
            tau2[k] = max(float(np.var(means) - s2 * np.mean(1.0 / counts[ok])), 0.0)
        sigma2 = max(s2 - sum(tau2.values()), 0.1 * s2)
        o = self.theta_offsets
        for k, t2 in tau2.items():
            theta[o[k]] = float(np.clip(math.sqrt(t2 / sigma2), 0.05, 20.0))
        return theta

    # ------------------------------------------------------------------ gradient
    def criterion_and_gradient(self, theta: np.ndarray, reml: bool = True,
                               fd_step: float = 1e-7) -> tuple[float, np.ndarray]:
        """The profiled criterion and its gradient in theta (analytic).

        With Omega the augmented matrix, the log-determinant term is log|Omega_ZZ| (ML) or
        log|Omega_ZX| (REML) and, for T_k invertible and theta_j the (s, t) entry of T_k,

            d log|Omega_..| / d theta_j = 2 [(q_k I - C_k) T_k^-1]_{t, s},
            C_k = sum over levels of the diagonal r_k x r_k blocks of Omega_..^-1 (Z part),

        while d log r^2 / d theta_j = -2 sum_l (Z_k'We)_{l, s} u_{l, t} / r^2 (envelope
        theorem; e = y - X beta - Z b).  The criterion is (n or n - p) log r^2 plus the
        log-determinant.  Blocks with a diagonal element of T_k below 1e-6 (near the
        boundary, where T_k^-1 blows up) get finite differences instead.
        """
        theta = np.asarray(theta, dtype=float)
        f = self.factor(theta, scratch=True)
        value = self.criterion_from(f, reml)
        grad = np.full(self.n_theta, np.nan)
        if not np.isfinite(value):
            return value, grad
        beta, u, _ = self.solve(f)
        b = [uk @ Tk.T for uk, Tk in zip(u, f.T)]
        g = self._ztwe(beta, b)
        mlim = self.m + self.p if reml else self.m
        Csum = self._csum(f, mlim)
        coef = (self.n - self.p) if reml else self.n
        o = self.theta_offsets
        for k, blk in enumerate(self.blocks):
            T = f.T[k]
            sl = slice(o[k], o[k + 1])
            if np.min(np.diag(T)) < 1e-6:
                grad[sl] = self._fd_block(theta, sl, reml, fd_step, value)
                continue
            Tinv = linalg.solve_triangular(T, np.eye(blk.r), lower=True)
            G = 2.0 * (blk.n_levels * np.eye(blk.r) - Csum[k]) @ Tinv
            R = g[k].T @ u[k]                          # R[s, t] = sum_l g_ls u_lt
            grad[sl] = [G[t, s] - 2.0 * coef * R[s, t] / f.pwrss for s, t in theta_pairs(blk.r)]
        return value, grad

    def _fd_block(self, theta, sl, reml, h, value):
        """Finite-difference gradient of one block near the boundary: central where the
        step stays feasible, else the one-sided 3-point formula (-3 f0 + 4 f(h) - f(2h)) / 2h
        (exact for the even, quadratic behaviour of the criterion at theta_k = 0)."""
        out = []
        diag = self._diag_positions
        for j in range(sl.start, sl.stop):
            e = np.zeros_like(theta)
            e[j] = 1.0
            if j in diag and theta[j] < 1e-3:
                step = 1e-4
                out.append((-3 * value + 4 * self.criterion(theta + step * e, reml)
                            - self.criterion(theta + 2 * step * e, reml)) / (2 * step))
            else:
                step = 1e-6 * max(1.0, abs(theta[j]))
                out.append((self.criterion(theta + step * e, reml)
                            - self.criterion(theta - step * e, reml)) / (2 * step))
        return out

    @property
    def _diag_positions(self) -> set:
        pos, out = 0, set()
        for blk in self.blocks:
            for i, j in theta_pairs(blk.r):
                if i == j:
                    out.add(pos)
                pos += 1
        return out

    def _ztwe(self, beta: np.ndarray, b: list) -> list:
        """Z_k' W e per block ((q_k, r_k) arrays), e = y - X beta - Z b, from the cross-products."""
        m = self.m
        v = np.empty(self.N)
        for k in self.rest:
            off, bk = self.offsets[k], self.blocks[k]
            v[off:off + bk.n_effects] = -b[k].ravel()
        v[m:m + self.p] = -beta
        v[-1] = 1.0
        b1 = b[self.first]
        out = [None] * len(self.blocks)
        out[self.first] = (level_dot(self.ptr, self.cols, self.V1, v)
                           - np.einsum("lst,lt->ls", self.G1, b1))
        if m:
            zr = self.cols < m
            contrib = np.einsum("te,et->e", self.V1[:, zr], b1[self.entry_level[zr]])
            gR = self.A[:m] @ v - np.bincount(self.cols[zr], weights=contrib, minlength=m)
            for k in self.rest:
                off, bk = self.offsets[k], self.blocks[k]
                out[k] = gR[off:off + bk.n_effects].reshape(bk.n_levels, bk.r)
        return out

    def _csum(self, f: Factorization, mlim: int) -> list:
        """Per block, the sum over levels of the diagonal blocks of the inverse (Z part).

        The inverse is of Omega_ZZ (mlim = m) or Omega_ZX (mlim = m + p).  Its part on
        the remaining columns is P = (L22 L22')^-1 with L22 the leading mlim rows of the
        Schur factor L; computed in place (LAPACK dtrtri then dlauum give the inverse
        of the whole factor, P_full = L^-T L^-1) and corrected by the trailing rows
        W = (L^-1)[mlim:, :mlim]: P = P_full[:mlim, :mlim] - W'W.  On block 1 the sum
        is sum_l M_l^-1 + Y_l' P Y_l with Y_l = L21_l L_l^-1.  **Overwrites f.S.**
        """
        b1 = self.blocks[self.first]
        out = [None] * len(self.blocks)
        L1inv = np.linalg.inv(f.L1)
        C1 = np.einsum("lts,ltu->su", L1inv, L1inv)               # sum_l M_l^-1
        if mlim:
            S = f.S
            _, info = lapack.dtrtri(S.T, lower=0, overwrite_c=1)  # S's lower triangle: L^-1
            W = np.array(S[mlim:, :mlim])
            _, info = lapack.dlauum(S.T, lower=0, overwrite_c=1)  # lower triangle: L^-T L^-1
            f.S = None
            P = S
            if b1.r == 1:
                Y = f.Bv / f.L1[:, 0, 0][self.entry_level][None, :]
            else:
                Y = np.einsum("ets,te->se", L1inv[self.entry_level], f.Bv)
            Y = np.ascontiguousarray(Y)
            C1 = C1 + level_quadratic(self.ptr, self.cols, self.entry_level, self.colptr,
                                      self.col_entries, Y, P, mlim)
            sel = self.cols < mlim
            prod = W[:, self.cols[sel]][:, :, None] * Y[:, sel].T[None, :, :]   # (k, e, r1)
            lev = self.entry_level[sel]
            Zl = np.empty((b1.n_levels, W.shape[0], b1.r))
            for a in range(W.shape[0]):
                for t in range(b1.r):
                    Zl[:, a, t] = np.bincount(lev, weights=prod[a, :, t], minlength=b1.n_levels)
            C1 = C1 - np.einsum("lat,lau->tu", Zl, Zl)
            for k in self.rest:
                off, bk = self.offsets[k], self.blocks[k]
                idx = off + np.arange(bk.n_effects).reshape(bk.n_levels, bk.r)
                C = np.empty((bk.r, bk.r))
                for s_ in range(bk.r):
                    for t in range(s_ + 1):
                        hi, lo = np.maximum(idx[:, s_], idx[:, t]), np.minimum(idx[:, s_], idx[:, t])
                        C[s_, t] = C[t, s_] = (P[hi, lo].sum()
                                               - np.einsum("al,al->", W[:, idx[:, s_]], W[:, idx[:, t]]))
                out[k] = C
        out[self.first] = C1
        return out

    # ------------------------------------------------------------------ solution at theta
    def solve(self, f: Factorization) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        """beta, the spherical u per block ((q_k, r_k) arrays, blocks' order) and L_XX.

        With L the Cholesky factor of the augmented Schur complement (last row l_y, last
        diagonal r), z = (-u_R, -beta, 1) solves L' z = r e_N: one triangular solve
        with the whole factor (BLAS dtrsv on the Fortran view, no copy).
        """
        m, p, N, S = self.m, self.p, self.N, f.S
        LXX = S[m:m + p, m:m + p]
        rhs = np.zeros(N)
        rhs[-1] = S[N - 1, N - 1]
        z = blas.dtrsv(S.T, rhs, lower=0)
        z[-1] = 1.0
        uR, beta = -z[:m], -z[m:m + p]
        b1 = self.blocks[self.first]
        rhs1 = level_dot(self.ptr, self.cols, f.Bv, z)          # (q1, r1)
        if b1.r == 1:
            u1 = rhs1 / f.L1[:, 0, :]
        else:
            u1 = np.linalg.solve(np.swapaxes(f.L1, 1, 2), rhs1[:, :, None])[:, :, 0]
        u = [None] * len(self.blocks)
        u[self.first] = u1
        for k in self.rest:
            off, bk = self.offsets[k], self.blocks[k]
            u[k] = uR[off:off + bk.n_effects].reshape(bk.n_levels, bk.r)
        return beta, u, np.tril(LXX)

    def conditional_cov_u(self, f: Factorization, k: int, chunk: int = 2048) -> np.ndarray:
        """Diagonal blocks (q_k, r_k, r_k) of (L_ZZ L_ZZ')^-1 for block k (Var(u | y) / sigma^2)."""
        m = self.m
        Linv = None
        if m:
            Linv, info = lapack.dtrtri(np.tril(f.S[:m, :m]), lower=1)
        if k != self.first:
            bk, off = self.blocks[k], self.offsets[k]
            cols = Linv[:, off:off + bk.n_effects].reshape(m, bk.n_levels, bk.r)
            return np.einsum("ilr,ils->lrs", cols, cols)
        b1 = self.blocks[self.first]
        q1, r1 = b1.n_levels, b1.r
        L1inv = np.linalg.inv(f.L1)                                # (q1, r1, r1)
        out = np.matmul(np.swapaxes(L1inv, 1, 2), L1inv)           # (L_l L_l')^-1
        if not m:
            return out
        zmask = self.cols < m
        lev = self.entry_level[zmask]
        rows = self.cols[zmask]
        for start in range(0, q1, chunk):
            stop = min(q1, start + chunk)
            sel = (lev >= start) & (lev < stop)
            data = f.Bv[:, zmask][:, sel]                           # (r1, e)
            colidx = ((lev[sel] - start)[None, :] * r1 + np.arange(r1)[:, None])
            Bsp = sparse.csc_matrix((data.ravel(), (np.broadcast_to(rows[sel], data.shape).ravel(),
                                                    colidx.ravel())), shape=(m, (stop - start) * r1))
            Y = np.asarray((Bsp.T @ Linv.T).T).reshape(m, stop - start, r1)   # L22^-1 L21 (chunk)
            W = np.einsum("ilt,lts->ils", Y, L1inv[start:stop])               # ... L11^-1
            out[start:stop] += np.einsum("ilr,ils->lrs", W, W)
        return out


def _check_finite(what: str, a: np.ndarray) -> None:
    if not np.all(np.isfinite(a)):
        bad = np.flatnonzero(~np.isfinite(a.reshape(a.shape[0], -1)).all(axis=1))[0]
        raise DataError(f"the {what} has a missing or non-finite value in row {int(bad)}")


def profiled_criterion(theta: np.ndarray, X: np.ndarray, y: np.ndarray, blocks: Sequence[Any],
                       weights: np.ndarray | None = None, reml: bool = True,
                       offset: np.ndarray | None = None) -> float:
    """The profiled REML/ML criterion (-2 log-likelihood, lme4's REMLcrit / deviance) at theta.

    One-off convenience: builds :class:`LMMProblem` (one pass over the rows) and
    evaluates it.  For many evaluations build the problem once and call
    ``problem.criterion(theta, reml)`` (or ``problem.criterion_and_gradient``).
    ``blocks``: see :func:`as_blocks`; theta is ordered as the blocks are given
    (for random intercepts, theta_k = tau_k / sigma).  ``offset`` is subtracted from y.
    """
    y = np.asarray(y, dtype=float) if offset is None else np.asarray(y, dtype=float) - offset
    return LMMProblem(X, y, blocks, weights).criterion(theta, reml)


# --------------------------------------------------------------------------- optimisation


@dataclass(frozen=True)
class LMMFit:
    """Array-level result of :func:`fit_lmm_arrays` (blocks in the order given)."""

    theta: np.ndarray
    beta: np.ndarray
    cov_beta: np.ndarray
    sigma: float
    criterion: float
    reml: bool
    b: tuple                       # per block: (q_k, r_k) conditional modes (BLUPs)
    u: tuple                       # per block: spherical conditional modes
    T: tuple                       # per block: relative covariance factor T_k
    pwrss: float
    ldL2: float
    ldRX2: float
    n: int
    p: int
    converged: bool
    n_evals: int
    log: pd.DataFrame
    problem: LMMProblem = field(repr=False, compare=False)
    factorization: Factorization = field(repr=False, compare=False)
    message: str = ""
    certificate: Certificate | None = field(default=None, repr=False, compare=False)

    @property
    def re_cov(self) -> tuple:
        """Per block: the r_k x r_k covariance sigma^2 T_k T_k' of one level's random effects."""
        return tuple(self.sigma ** 2 * T @ T.T for T in self.T)

    @property
    def re_sd(self) -> tuple:
        """Per block: the standard deviations of the random effects (sigma x row norms of T_k)."""
        return tuple(np.sqrt(np.diag(c)) for c in self.re_cov)

    def conditional_cov(self, k: int) -> np.ndarray:
        """(q_k, r_k, r_k) conditional covariances Var(b_l | y) of block k's levels (lme4's
        condVar / postVar): sigma^2 T_k [(L_ZZ L_ZZ')^-1]_ll T_k', beta held at beta-hat."""
        cu = self.problem.conditional_cov_u(self.factorization, k)
        T = self.T[k]
        return self.sigma ** 2 * np.matmul(T, np.matmul(cu, T.T))

    def conditional_sd(self, k: int) -> np.ndarray:
        """(q_k, r_k) conditional SDs of the random effects of block k (sqrt of condVar's diagonal)."""
        cb = self.conditional_cov(k)
        return np.sqrt(np.maximum(np.diagonal(cb, axis1=1, axis2=2), 0.0))


SMALL_DENSE = 4096    # dense factorisations up to this order run on one BLAS thread


@contextlib.contextmanager
def blas_threads(order: int):
    """One BLAS thread for small dense factorisations (order <= SMALL_DENSE).

    Multi-threaded OpenBLAS on matrices of order ~1000 gains little and, on a
    machine whose cores are busy, loses 10x or more to threads waiting for each
    other; larger matrices keep the default.  Needs threadpoolctl (else no-op).
    """
    if order > SMALL_DENSE:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def fit_lmm_arrays(X: np.ndarray, y: np.ndarray, blocks: Sequence[Any],
                   weights: np.ndarray | None = None, reml: bool = True, *,
                   offset: np.ndarray | None = None,
                   start: np.ndarray | str | None = None, method: str = "auto",
                   tol: float = 1e-13, maxiter: int = 2000, verbose: bool = False,
                   problem: LMMProblem | None = None) -> LMMFit:
    """Fit a linear mixed model by REML or ML from arrays (what the Gaussian ^ path calls).

    Parameters
    ----------
    X : (n, p) fixed-effects design (full column rank; the front end drops aliased columns).
    y : (n,) response.
    blocks : random-effects blocks, each ``(codes, n_levels)`` for a random intercept,
        ``(codes, n_levels, Z)`` with Z (n, r) for correlated terms, an :class:`REBlock`
        or a design ``RandomBlock``.  Codes are 0..n_levels-1.  Crossed random
        intercepts ``y ~ X + (1|g1) + (1|g2)``: ``[(codes1, q1), (codes2, q2)]``.
    weights : (n,) positive prior weights (Var(e_i) = sigma^2 / w_i), default 1.
    reml : REML (default) or ML.
    offset : (n,) known part of the linear predictor, subtracted from y.
    start : theta to start from; None: moment estimates ("lme4": T_k = I).
    method : "auto" (quasi-Newton on the analytic gradient, L-BFGS-B fallback),
        "gradient" (L-BFGS-B), "cobyqa" (derivative-free), "L-BFGS-B" (finite differences).
    tol : relative tolerance on the criterion (quasi-Newton: Newton decrement <=
        tol x max(1, |criterion|); L-BFGS-B: ftol).

    Returns an :class:`LMMFit`: ``theta`` (ordered as ``blocks``; for a random
    intercept theta_k = tau_k / sigma), ``beta``, ``cov_beta`` = sigma^2 (R_X'R_X)^-1,
    ``sigma``, ``criterion`` (REML criterion or ML deviance), ``b`` (conditional modes,
    (q_k, r_k) per block), ``re_sd`` (tau_k per block), ``conditional_sd(k)``,
    ``converged``, ``n_evals`` and the optimiser ``log``.
    """
    if offset is not None and problem is None:
        y = np.asarray(y, dtype=float) - np.asarray(offset, dtype=float)
    prob = problem if problem is not None else LMMProblem(X, y, blocks, weights)
    with blas_threads(prob.N):
        theta, value, n_evals, log, converged, message, cert = optimize_theta(
            prob, reml, start, method, tol, maxiter, verbose)
        prob._work = None                      # release the scratch array
        f = prob.factor(theta)
    if not f.ok:
        raise ModelError("the penalised least-squares system is singular at the optimum "
                         "(rank-deficient fixed effects or a perfect fit?)")
    beta, u, LXX = prob.solve(f)
    dof = prob.n - prob.p if reml else prob.n
    sigma = math.sqrt(f.pwrss / dof)
    LXXinv = linalg.solve_triangular(LXX, np.eye(prob.p), lower=True) if prob.p else np.zeros((0, 0))
    cov_beta = sigma ** 2 * LXXinv.T @ LXXinv
    b = tuple(uk @ Tk.T for uk, Tk in zip(u, f.T))
    return LMMFit(theta, beta, cov_beta, sigma, prob.criterion_from(f, reml), reml, b, tuple(u),
                  tuple(f.T), f.pwrss, f.ldL2, f.ldRX2, prob.n, prob.p, converged, n_evals, log,
                  prob, f, message, cert)

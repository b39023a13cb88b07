"""The problem object of the scalar families' ^ fits: the rows in solver layout, the
per-thread workspaces, and the row passes the Newton template calls through it (see
notes/engine-passes.md: the pass interface a backend substitutes)."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Sequence
import numba
import numpy as np


from ..errors import DataError, ModelError
from ..families import Family
from ..kernels import levels as KL


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


def _single_row_if_constant(v: np.ndarray) -> np.ndarray:
    """v[:1] when every row of v equals the first (the kernels broadcast a single row), else v."""
    if v.shape[0] > 1 and bool(np.all(v == v[:1])):
        return np.ascontiguousarray(v[:1])
    return v


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

    @property
    def theta(self) -> tuple[np.ndarray, np.ndarray]:
        """(beta, a): the parameters, as the Newton template moves them."""
        return self.beta, self.a


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
        # constant X columns (an intercept), unit weights, zero offset: one broadcast row
        X, pw, off = _single_row_if_constant(X), _single_row_if_constant(pw), _single_row_if_constant(off)
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
        # a coupled direction per factor when X has a column that varies (scalar.py)
        self.coupled = bool(self.X.shape[0] > 1 and np.any(np.ptp(self.X, axis=0) > 0))
        self._accH: dict[int, np.ndarray] = {}          # light-pass workspaces by size m
        self._level_sums = None
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
            acc = self._accH.get(m)
            if acc is None:
                acc = self._accH[m] = np.empty((self.T, m, m))
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
        """(sum pw y, sum pw) per global level (one serial pass, done once per problem)."""
        if self._level_sums is None:
            wy, w = np.empty(self.Q), np.empty(self.Q)
            KL.level_sums(self.gidx, self.y, self.pw, wy, w)
            wy.flags.writeable = w.flags.writeable = False
            self._level_sums = (wy, w)
        return self._level_sums

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


def reprice(st: State, lam_l: np.ndarray, inv_phi: float) -> None:
    """The objective f = dev / (2 phi) + sum_l lam_l a_l^2 / 2 at new prior precisions lam_l.

    The data parts of a row pass (dev, G, W, X'r, diag X'WX and the stored w_i) do not depend
    on lam, so a state evaluated under other prior precisions (same phi) needs no new pass.
    """
    st.f = 0.5 * st.dev * inv_phi + 0.5 * float(np.dot(lam_l * st.a, st.a))

"""Numba kernels of the linear mixed model fitter, each with a NumPy twin.

The LMM fitter (``impactglm/lmm.py``) eliminates the first random-effects
block (block-diagonal, one small r x r block per level) from the augmented
cross-product matrix and works with the Schur complement onto the remaining
columns ``R = [Z_2 .. Z_K, X, y]``:

    S = A_RR - B' B,      B = blockdiag_l(K_l) A_1R,      K_l = L_l^-1 T_1'

(the relative covariance factor of the remaining blocks is applied by the
caller).  ``B`` is stored level by level: the entries of level ``l`` occupy
``ptr[l]:ptr[l+1]`` of ``cols`` (their column in R, ascending within a level)
and of ``vals`` (shape (r1, nnz), one row per random-effect term of the first
block).  ``schur_downdate`` subtracts B'B from the lower triangle of S in one
pass over the levels: sum_l |cols_l|^2 r1 / 2 multiply-adds, O(levels), never
O(rows).
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def schur_downdate(ptr: np.ndarray, cols: np.ndarray, vals: np.ndarray, S: np.ndarray) -> None:
    """In place: S[j, k] -= sum_l sum_t vals[t, a] vals[t, b] over each level's pairs (a, b).

    Only the lower triangle (j >= k) is touched; ``cols`` must be ascending
    within each level so that ``cols[b] <= cols[a]`` for ``b <= a``.
    """
    n_levels = ptr.shape[0] - 1
    r1 = vals.shape[0]
    for lev in range(n_levels):
        start = ptr[lev]
        stop = ptr[lev + 1]
        for t in range(r1):
            for a in range(start, stop):
                va = vals[t, a]
                if va == 0.0:
                    continue
                ca = cols[a]
                for b in range(start, a + 1):
                    S[ca, cols[b]] -= va * vals[t, b]


def schur_downdate_numpy(ptr: np.ndarray, cols: np.ndarray, vals: np.ndarray, S: np.ndarray) -> None:
    """NumPy twin of :func:`schur_downdate` (same lower-triangle update, level by level)."""
    for lev in range(ptr.shape[0] - 1):
        start, stop = ptr[lev], ptr[lev + 1]
        if stop == start:
            continue
        c = cols[start:stop]
        block = vals[:, start:stop]
        S[np.ix_(c, c)] -= np.tril(block.T @ block)


@njit(cache=True)
def level_dot(ptr: np.ndarray, cols: np.ndarray, vals: np.ndarray, z: np.ndarray) -> np.ndarray:
    """out[l, t] = sum_{a in level l} vals[t, a] z[cols[a]]  (B z, level by level)."""
    n_levels = ptr.shape[0] - 1
    r1 = vals.shape[0]
    out = np.zeros((n_levels, r1))
    for lev in range(n_levels):
        for t in range(r1):
            acc = 0.0
            for a in range(ptr[lev], ptr[lev + 1]):
                acc += vals[t, a] * z[cols[a]]
            out[lev, t] = acc
    return out


def level_dot_numpy(ptr: np.ndarray, cols: np.ndarray, vals: np.ndarray, z: np.ndarray) -> np.ndarray:
    """NumPy twin of :func:`level_dot`."""
    n_levels = ptr.shape[0] - 1
    level = np.repeat(np.arange(n_levels), np.diff(ptr))
    prod = vals * z[cols][None, :]
    out = np.zeros((n_levels, vals.shape[0]))
    for t in range(vals.shape[0]):
        out[:, t] = np.bincount(level, weights=prod[t], minlength=n_levels)
    return out


@njit(cache=True)
def level_quadratic(ptr: np.ndarray, cols: np.ndarray, Y: np.ndarray, P: np.ndarray,
                    mlim: int) -> np.ndarray:
    """Q[t, u] = sum_l sum_{a, b in level l, cols < mlim} Y[t, a] P[cols[a], cols[b]] Y[u, b].

    P is symmetric with only its lower triangle valid (``cols`` ascending per level).
    For each entry a: acc[u] = sum_{b < a} P[cols[a], cols[b]] Y[u, b], then
    Q[t, u] += Y[t, a] acc[u] + acc[t] Y[u, a] + Y[t, a] P[cols[a], cols[a]] Y[u, a].
    """
    n_levels = ptr.shape[0] - 1
    r1 = Y.shape[0]
    Q = np.zeros((r1, r1))
    acc = np.zeros(r1)
    for lev in range(n_levels):
        start = ptr[lev]
        for a in range(start, ptr[lev + 1]):
            ca = cols[a]
            if ca >= mlim:
                break
            for u in range(r1):
                acc[u] = 0.0
            for b in range(start, a):
                w = P[ca, cols[b]]
                for u in range(r1):
                    acc[u] += w * Y[u, b]
            d = P[ca, ca]
            for t in range(r1):
                for u in range(r1):
                    Q[t, u] += Y[t, a] * acc[u] + acc[t] * Y[u, a] + Y[t, a] * d * Y[u, a]
    return Q


def level_quadratic_numpy(ptr: np.ndarray, cols: np.ndarray, Y: np.ndarray, P: np.ndarray,
                          mlim: int) -> np.ndarray:
    """NumPy twin of :func:`level_quadratic` (symmetrises the lower triangle of P)."""
    Pl = np.tril(P)
    Ps = Pl + np.tril(P, -1).T
    r1 = Y.shape[0]
    Q = np.zeros((r1, r1))
    for lev in range(ptr.shape[0] - 1):
        sel = np.arange(ptr[lev], ptr[lev + 1])
        sel = sel[cols[sel] < mlim]
        if sel.size == 0:
            continue
        Yl = Y[:, sel]
        Q += Yl @ Ps[np.ix_(cols[sel], cols[sel])] @ Yl.T
    return Q

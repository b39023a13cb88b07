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
block).  ``schur_downdate`` subtracts B'B from the lower triangle of S:
sum_l |cols_l|^2 r1 / 2 multiply-adds, O(levels), never O(rows).  The numba
kernels run row by row of S (``colptr``/``col_entries``: the entries of each
column, ``level``: each entry's level) so that their working set stays in cache;
the NumPy twins run level by level.
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def schur_downdate(ptr: np.ndarray, cols: np.ndarray, level: np.ndarray, colptr: np.ndarray,
                   col_entries: np.ndarray, vals: np.ndarray, S: np.ndarray) -> None:
    """In place: S[j, k] -= sum_l sum_t vals[t, a] vals[t, b] over each level's pairs (a, b).

    Only the lower triangle (j >= k) is touched; ``cols`` must be ascending within
    each level.  Row by row (Gustavson): for output row j, the entries a in column j
    (``col_entries[colptr[j]:colptr[j+1]]``, their level ``level[a]``) add
    vals[:, a] . vals[:, b] for the entries b <= a of the same level into a dense
    accumulator, which is then subtracted from row j: the accumulator stays in
    cache and S is written row by row.
    """
    n = S.shape[0]
    r1 = vals.shape[0]
    acc = np.zeros(n)
    for j in range(colptr.shape[0] - 1):
        if colptr[j] == colptr[j + 1]:
            continue
        for idx in range(colptr[j], colptr[j + 1]):
            a = col_entries[idx]
            start = ptr[level[a]]
            for t in range(r1):
                va = vals[t, a]
                if va == 0.0:
                    continue
                for b in range(start, a + 1):
                    acc[cols[b]] += va * vals[t, b]
        for k in range(j + 1):
            S[j, k] -= acc[k]
            acc[k] = 0.0


def schur_downdate_numpy(ptr: np.ndarray, cols: np.ndarray, level: np.ndarray,
                         colptr: np.ndarray, col_entries: np.ndarray, vals: np.ndarray,
                         S: np.ndarray) -> None:
    """NumPy twin of :func:`schur_downdate` (same lower-triangle update, level by level;
    ``level``, ``colptr`` and ``col_entries`` are not needed here)."""
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
def level_quadratic(ptr: np.ndarray, cols: np.ndarray, level: np.ndarray, colptr: np.ndarray,
                    col_entries: np.ndarray, Y: np.ndarray, P: np.ndarray,
                    mlim: int) -> np.ndarray:
    """Q[t, u] = sum_l sum_{a, b in level l, cols < mlim} Y[t, a] P[cols[a], cols[b]] Y[u, b].

    P is symmetric with only its lower triangle valid (``cols`` ascending per level).
    Row by row: for row j < mlim of P and each entry a in column j,
    acc[u] = sum_{b < a in a's level} P[j, cols[b]] Y[u, b] (reads stay in row j), then
    Q[t, u] += Y[t, a] acc[u] + acc[t] Y[u, a] + Y[t, a] P[j, j] Y[u, a].
    """
    r1 = Y.shape[0]
    Q = np.zeros((r1, r1))
    acc = np.zeros(r1)
    for j in range(min(mlim, colptr.shape[0] - 1)):
        d = P[j, j]
        for idx in range(colptr[j], colptr[j + 1]):
            a = col_entries[idx]
            for u in range(r1):
                acc[u] = 0.0
            for b in range(ptr[level[a]], a):
                w = P[j, cols[b]]
                for u in range(r1):
                    acc[u] += w * Y[u, b]
            for t in range(r1):
                for u in range(r1):
                    Q[t, u] += Y[t, a] * acc[u] + acc[t] * Y[u, a] + Y[t, a] * d * Y[u, a]
    return Q


def level_quadratic_numpy(ptr: np.ndarray, cols: np.ndarray, level: np.ndarray,
                          colptr: np.ndarray, col_entries: np.ndarray, Y: np.ndarray,
                          P: np.ndarray, mlim: int) -> np.ndarray:
    """NumPy twin of :func:`level_quadratic` (level by level; symmetrises P's lower triangle)."""
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

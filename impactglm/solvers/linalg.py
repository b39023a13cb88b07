"""Linear algebra of the level block: the small pseudo-inverse solve of the reduced Newton
step, the Schur complement over the largest factor, CG with the full level block, and
R's aliasing test."""
from __future__ import annotations

import math
import numpy as np
from scipy import linalg


from ..errors import ModelError
from .problem import LevelProblem


def solve_psd(H: np.ndarray, g: np.ndarray, rcond: float = 1e-12) -> np.ndarray:
    """x = H^+ g for a symmetric positive semi-definite H (the reduced Newton system).

    H is scaled to unit diagonal (coordinates with H_jj = 0 get x_j = 0), and eigenvalues
    below ``rcond`` times the largest are dropped: the directions of the re-encoded design
    can be redundant (e.g. the previous step equal to the impact step).
    """
    d = np.sqrt(np.maximum(np.diag(H), 0.0))
    keep = d > 0
    x = np.zeros_like(g)
    if not keep.any():
        return x
    Hs = H[np.ix_(keep, keep)] / np.outer(d[keep], d[keep])
    vals, vecs = linalg.eigh(Hs)
    cut = vals.max() * rcond
    inv = np.where(vals > cut, 1.0 / np.where(vals > cut, vals, 1.0), 0.0)
    x[keep] = (vecs @ (inv * (vecs.T @ (g[keep] / d[keep])))) / d[keep]
    return x


def level_schur(prob: LevelProblem, Dd: np.ndarray, include_beta: bool = True,
                limit: int | None = None):
    """Eliminate the largest factor (diagonal block D1) from the penalised Hessian.

    Parameters are ordered (largest factor 1, rest R = [beta (if include_beta), other
    factors]).  With C = Z1'W Z_R (sparse, from the stored weights) the Schur complement
    is S = H_RR - C' D1^-1 C (dense, small).  Returns (S, D1, C, rest_idx), or None when R
    has more than ``limit`` (default EXACT_DENSE_LIMIT) columns.
    """
    import scipy.sparse as sp
    n = prob.n
    p = prob.p if include_beta else 0
    k1 = int(np.argmax(prob.q))
    others = [k for k in range(prob.K) if k != k1]
    rest_idx = (np.concatenate([np.arange(prob.starts[k], prob.starts[k + 1]) for k in others])
                if others else np.zeros(0, dtype=np.int64))
    s = p + rest_idx.size
    if s > (EXACT_DENSE_LIMIT if limit is None else limit) or s == 0:
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


def solve_levels(prob: LevelProblem, rhs: np.ndarray, lam_l: np.ndarray, Dd: np.ndarray,
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

def aliased_columns(X: np.ndarray, W: np.ndarray, rtol: float) -> list[int]:
    """Indices of columns of sqrt(W) X that are (numerically) linear combinations of earlier ones.

    Householder QR without pivoting: |R_jj| is the norm of column j's residual on
    all earlier columns; column j is aliased when |R_jj| < rtol * ||column j||
    (R's dqrdc2 rule, which keeps the earlier of two collinear columns).
    """
    Xw = X * np.sqrt(W)[:, None]
    # the rule is invariant to column scaling: scale each column by its largest |value|
    # first, so that columns of 1e300 (whose squares overflow) or 1e-300 are judged right
    peak = np.abs(Xw).max(axis=0) if Xw.shape[0] else np.zeros(Xw.shape[1])
    Xw = Xw / np.where(peak > 0, peak, 1.0)
    norms = np.sqrt(np.einsum("ij,ij->j", Xw, Xw))
    if Xw.shape[0] < Xw.shape[1]:
        Xw = np.vstack([Xw, np.zeros((Xw.shape[1] - Xw.shape[0], Xw.shape[1]))])
    R = np.linalg.qr(Xw, mode="r")
    diag = np.abs(np.diag(R))
    return [j for j in range(X.shape[1]) if norms[j] == 0 or diag[j] < rtol * norms[j]]


def clearly_full_rank(X: np.ndarray, W: np.ndarray, margin: float = 1e-5) -> bool:
    """True when every column of sqrt(W) X keeps a residual above ``margin`` x its norm
    on the earlier columns, judged from the Gram matrix G = X'WX (one O(n p^2) product, no
    n x p copy when W is all ones), normalised to unit diagonal: its rounding is ~1e-16, so
    squared ratios above margin^2 = 1e-10 are certain.  False means "look closer" (QR);
    so is an overflowing G (columns of 1e300) or a zero column."""
    n, p = X.shape
    if n < p:
        return False
    with np.errstate(over="ignore", invalid="ignore"):
        G = X.T @ X if np.all(W == 1.0) else X.T @ (X * W[:, None])
    d = np.diag(G).copy()
    if not (np.all(np.isfinite(G)) and np.all(d > 0)):
        return False                      # overflow (1e300 columns) or a zero column
    scale = 1.0 / np.sqrt(d)
    G = G * scale[:, None] * scale[None, :]   # the Gram of unit-norm columns
    d = np.ones(p)
    if not np.all(d > 0):
        return False
    L = np.zeros((p, p))
    for j in range(p):                     # Cholesky, column by column (p is small)
        r = G[j, j] - L[j, :j] @ L[j, :j]
        if not r > margin ** 2 * d[j]:
            return False
        L[j, j] = np.sqrt(r)
        L[j + 1:, j] = (G[j + 1:, j] - L[j + 1:, :j] @ L[j, :j]) / L[j, j]
    return True


def check_full_rank(X: np.ndarray, W: np.ndarray, rtol: float, column_names) -> None:
    """ModelError naming the aliased columns of sqrt(W) X (rows with W > 0), if any
    (IRLS's rank test, R's dqrdc2 rule; the ^ fits run it on their fixed part before
    fitting, after the cheap :func:`clearly_full_rank` screen)."""
    good = W > 0
    if clearly_full_rank(X, np.where(good, W, 0.0)):
        return
    aliased = aliased_columns(X[good], W[good], rtol)
    if aliased:
        names = ", ".join(repr(column_names[j]) for j in aliased)
        raise ModelError(f"the design matrix is rank deficient: column(s) {names} are linear "
                         "combinations of earlier columns (aliased); remove them from the formula")


EXACT_DENSE_LIMIT = 3000        # exact posterior variances when p + (levels outside the largest factor) <= this

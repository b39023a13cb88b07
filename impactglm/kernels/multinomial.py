"""Fused row passes for the multinomial (softmax) model, with NumPy twins.

The model for row i and class c = 0..C-1 is

    eta_ic = offset_ic + sum_b X_ib beta_bc + sum_k A[g_k(i), c]
    p_ic   = exp(eta_ic) / sum_c' exp(eta_ic')

where ``g_k(i)`` is the *global* level index of row i in factor k (the level
code plus the factor's offset into the stacked effect table ``A`` of shape
(Q, C); negative codes mean "unseen level" and contribute 0).  With prior
weights w_i and the outcome class y_i, the working quantities are

    loglik_i = w_i log p_{i,y_i}
    r_ic     = w_i (1[y_i = c] - p_ic)                       (score residual)
    W_i      = w_i (diag(p_i) - p_i p_i')                    (C x C information)

Kernels (numba, ``cache=True``, ``prange`` over row chunks with per-chunk
accumulators, no fastmath), each with a NumPy twin ``<name>_numpy``:

* :func:`level_pass`      log-likelihood, beta score X' r, per-level sums of r and
                          (optionally) of W_i in packed upper-triangular form;
* :func:`subspace_cross`  the row-sum part of the information matrix of the reduced
                          parameters (beta[:, 1:], one step length per direction);
* :func:`beta_level_cross` per-level sums X_ib W_i (the beta/level coupling);
* :func:`predict_proba`   class probabilities (n, C);
* :func:`score_pass`      log-likelihood, confusion matrix and the most likely
                          class, without storing probabilities.

Packed triangle: entry (c, d) with c <= d of a C x C symmetric matrix is stored
at ``tri_index(c, d, C) = c*C - c*(c-1)//2 + d - c``.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

__all__ = [
    "n_packed", "tri_index", "unpack_blocks", "level_pass", "level_pass_numpy",
    "subspace_cross", "subspace_cross_numpy", "subspace_hessian_numpy", "beta_level_cross", "beta_level_cross_numpy",
    "predict_proba", "predict_proba_numpy", "score_pass", "score_pass_numpy", "n_chunks",
]


def n_packed(C: int) -> int:
    """Number of entries of a packed C x C upper triangle."""
    return C * (C + 1) // 2


@njit(cache=True, inline="always")
def tri_index(c, d, C):
    """Position of entry (c, d), c <= d, in a packed upper triangle of a C x C matrix."""
    return c * C - (c * (c - 1)) // 2 + d - c


def unpack_blocks(Hp: np.ndarray, C: int) -> np.ndarray:
    """(Q, C(C+1)/2) packed upper triangles -> (Q, C, C) symmetric blocks."""
    iu, ju = np.triu_indices(C)
    out = np.zeros((Hp.shape[0], C, C))
    out[:, iu, ju] = Hp
    out[:, ju, iu] = Hp
    return out


def n_chunks(n: int) -> int:
    """Row chunks for the parallel passes: a few per thread, at most one per 4096 rows."""
    return int(max(1, min(4 * numba.get_num_threads(), n // 4096)))


# ---------------------------------------------------------------- row helpers

@njit(cache=True, inline="always")
def _eta_row(i, X, beta, gcodes, A, offset, has_offset, eta):
    n_p = X.shape[1]
    C = beta.shape[1]
    K = gcodes.shape[0]
    for c in range(C):
        s = offset[i, c] if has_offset else 0.0
        for b in range(n_p):
            s += X[i, b] * beta[b, c]
        eta[c] = s
    for k in range(K):
        g = gcodes[k, i]
        if g >= 0:
            for c in range(C):
                eta[c] += A[g, c]


@njit(cache=True, inline="always")
def _softmax(eta, prob):
    """prob = softmax(eta); returns log(sum exp(eta)) (the log normaliser)."""
    C = eta.shape[0]
    m = eta[0]
    for c in range(1, C):
        if eta[c] > m:
            m = eta[c]
    s = 0.0
    for c in range(C):
        e = np.exp(eta[c] - m)
        prob[c] = e
        s += e
    for c in range(C):
        prob[c] /= s
    return m + np.log(s)


def _eta_numpy(X, beta, gcodes, A, offset):
    eta = X @ beta
    if offset is not None:
        eta = eta + offset
    for k in range(gcodes.shape[0]):
        g = gcodes[k]
        seen = g >= 0
        eta[seen] += A[g[seen]]
    return eta


def _softmax_numpy(eta):
    m = eta.max(axis=1, keepdims=True)
    e = np.exp(eta - m)
    s = e.sum(axis=1, keepdims=True)
    return e / s, (m + np.log(s))[:, 0]


def _offset_arg(offset, C):
    if offset is None:
        return np.zeros((1, C)), False
    return offset, True


# ---------------------------------------------------------------- level pass

@njit(cache=True, inline="always")
def _add_hess(H, g, prob, wi, C):
    """H[g] += packed upper triangle of wi (diag(prob) - prob prob')."""
    base = 0
    for c in range(C):
        wpc = wi * prob[c]
        row = H[g, base:base + C - c]
        for d in range(C - c):
            row[d] -= wpc * prob[c + d]
        row[0] += wpc
        base += C - c


@njit(parallel=True, cache=True)
def _level_pass(X, beta, gcodes, A, y, w, offset, has_offset, want_hess, ksort, T,
                G_t, H_t, gb_t, ll_t, G, Hp, gb, P, store_p):
    n, n_p = X.shape
    C = beta.shape[1]
    K = gcodes.shape[0]
    Q = A.shape[0]
    NT = Hp.shape[1]
    for t in prange(T):
        Gl = G_t[t]
        Hl = H_t[t]
        gbl = gb_t[t]
        Gl[:, :] = 0.0
        if want_hess:
            Hl[:, :] = 0.0
        gbl[:, :] = 0.0
        eta = np.empty(C)
        prob = np.empty(C)
        r = np.empty(C)
        Gloc = np.zeros((1, C))          # running sums of the current level of the sorted factor
        Hloc = np.zeros((1, NT))
        cur = -1
        ll = 0.0
        comp = 0.0                       # Kahan compensation: the objective must resolve
        lo = t * n // T                  # differences far below ulp(loglik) x rows
        hi = (t + 1) * n // T
        for i in range(lo, hi):
            _eta_row(i, X, beta, gcodes, A, offset, has_offset, eta)
            lse = _softmax(eta, prob)
            wi = w[i]
            yi = y[i]
            term = wi * (eta[yi] - lse) - comp
            tot = ll + term
            comp = (tot - ll) - term
            ll = tot
            for c in range(C):
                r[c] = -wi * prob[c]
            r[yi] += wi
            if store_p:
                for c in range(C):
                    P[i, c] = prob[c]
            for b in range(n_p):
                xb = X[i, b]
                for c in range(C):
                    gbl[b, c] += xb * r[c]
            for k in range(K):
                g = gcodes[k, i]
                if k == ksort:
                    if g != cur:
                        if cur >= 0:
                            for c in range(C):
                                Gl[cur, c] += Gloc[0, c]
                                Gloc[0, c] = 0.0
                            if want_hess:
                                for j in range(NT):
                                    Hl[cur, j] += Hloc[0, j]
                                    Hloc[0, j] = 0.0
                        cur = g
                    for c in range(C):
                        Gloc[0, c] += r[c]
                    if want_hess:
                        _add_hess(Hloc, 0, prob, wi, C)
                else:
                    for c in range(C):
                        Gl[g, c] += r[c]
                    if want_hess:
                        _add_hess(Hl, g, prob, wi, C)
        if cur >= 0:
            for c in range(C):
                Gl[cur, c] += Gloc[0, c]
            if want_hess:
                for j in range(NT):
                    Hl[cur, j] += Hloc[0, j]
        ll_t[t] = ll
    # reduce the chunk accumulators
    for q in prange(Q):
        for c in range(C):
            s = 0.0
            for t in range(T):
                s += G_t[t, q, c]
            G[q, c] = s
        if want_hess:
            for j in range(NT):
                s = 0.0
                for t in range(T):
                    s += H_t[t, q, j]
                Hp[q, j] = s
    for b in range(n_p):
        for c in range(C):
            s = 0.0
            for t in range(T):
                s += gb_t[t, b, c]
            gb[b, c] = s
    total = 0.0
    for t in range(T):
        total += ll_t[t]
    return total


class LevelPassBuffers:
    """Accumulators for :func:`level_pass` (one set per thread), allocated once per fit."""

    def __init__(self, n: int, p: int, Q: int, C: int, want_hess: bool = True):
        self.T = int(max(1, min(numba.get_num_threads(), n // 4096)))
        NT = n_packed(C)
        self.G_t = np.zeros((self.T, Q, C))
        self.H_t = np.zeros((self.T, Q, NT) if want_hess else (self.T, 1, 1))
        self.gb_t = np.zeros((self.T, p, C))
        self.ll_t = np.zeros(self.T)
        self.G = np.zeros((Q, C))
        self.Hp = np.zeros((Q, NT) if want_hess else (1, 1))
        self.gb = np.zeros((p, C))


def level_pass(X, beta, gcodes, A, y, w, offset=None, want_hess=True, buffers=None, ksort=-1,
               P=None):
    """One fused pass over the rows.

    Returns ``(loglik, gb, G, Hp)``: the weighted log-likelihood sum_i w_i log p_{i,y_i};
    ``gb = X' r`` (p, C); ``G[q, c] = sum_{i in level q} r_ic`` (Q, C) over the levels
    of every factor; ``Hp[q]`` the packed upper triangle of sum_{i in level q} W_i
    (when ``want_hess``).  Every code must be a valid level (>= 0).  The returned
    arrays are views of ``buffers`` (reused by the next call).  ``ksort``: a factor whose
    rows are sorted by level (its sums are then accumulated locally and flushed when
    the level changes; any value gives the same sums up to rounding).  ``P``: an (n, C)
    array (float32 or float64) that receives the class probabilities of every row.
    """
    n, p = X.shape
    C = beta.shape[1]
    Q = A.shape[0]
    if buffers is None:
        buffers = LevelPassBuffers(n, p, Q, C, want_hess)
    off, has_off = _offset_arg(offset, C)
    store = P is not None
    ll = _level_pass(X, beta, gcodes, A, y, w, off, has_off, want_hess, int(ksort), buffers.T,
                     buffers.G_t, buffers.H_t, buffers.gb_t, buffers.ll_t,
                     buffers.G, buffers.Hp, buffers.gb, P if store else np.zeros((1, C)), store)
    return ll, buffers.gb, buffers.G, (buffers.Hp if want_hess else None)


def level_pass_numpy(X, beta, gcodes, A, y, w, offset=None, want_hess=True):
    """NumPy twin of :func:`level_pass` (same return values, fresh arrays)."""
    n, C = X.shape[0], beta.shape[1]
    Q = A.shape[0]
    eta = _eta_numpy(X, beta, gcodes, A, offset)
    prob, lse = _softmax_numpy(eta)
    rows = np.arange(n)
    ll = float(np.sum(w * (eta[rows, y] - lse)))
    r = -w[:, None] * prob
    r[rows, y] += w
    gb = X.T @ r
    G = np.zeros((Q, C))
    for k in range(gcodes.shape[0]):
        np.add.at(G, gcodes[k], r)
    Hp = None
    if want_hess:
        iu, ju = np.triu_indices(C)
        Wp = w[:, None] * (prob[:, iu] * ((iu == ju)[None, :] - prob[:, ju]))
        Hp = np.zeros((Q, len(iu)))
        for k in range(gcodes.shape[0]):
            np.add.at(Hp, gcodes[k], Wp)
    return ll, gb, G, Hp


# ---------------------------------------------------------------- subspace Hessian

@njit(parallel=True, cache=True)
def _subspace_cross(P, X, gcodes, w, D, with_beta, T, H_t):
    n, n_p = X.shape
    C = P.shape[1]
    K = gcodes.shape[0]
    J = D.shape[1]
    Cf = C - 1
    pb = n_p * Cf if with_beta else 0
    for t in prange(T):
        H = H_t[t]
        H[:, :] = 0.0
        prob = np.empty(C)
        v = np.empty((K, J, C))
        u = np.empty((K, J, C))
        Wr = np.empty((C, C))
        lo = t * n // T
        hi = (t + 1) * n // T
        for i in range(lo, hi):
            for c in range(C):
                prob[c] = P[i, c]
            wi = w[i]
            for k in range(K):
                g = gcodes[k, i]
                for j in range(J):
                    for c in range(C):
                        v[k, j, c] = D[g, j, c]
                    if with_beta or k < K - 1:      # u = W_i v is needed on the left only
                        s = 0.0
                        for c in range(C):
                            s += prob[c] * v[k, j, c]
                        for c in range(C):
                            u[k, j, c] = wi * prob[c] * (v[k, j, c] - s)
            # directions of different factors
            for k in range(K - 1):
                for j in range(J):
                    a = pb + k * J + j
                    for k2 in range(k + 1, K):
                        for j2 in range(J):
                            s = 0.0
                            for c in range(C):
                                s += u[k, j, c] * v[k2, j2, c]
                            H[a, pb + k2 * J + j2] += s
            if with_beta:
                for c in range(1, C):
                    wpc = wi * prob[c]
                    for d in range(1, C):
                        Wr[c, d] = -wpc * prob[d]
                    Wr[c, c] += wpc
                for b in range(n_p):
                    xb = X[i, b]
                    if xb == 0.0:        # dummy columns: most rows add nothing
                        continue
                    for c in range(1, C):
                        col = b * Cf + c - 1
                        for k in range(K):
                            for j in range(J):
                                H[col, pb + k * J + j] += xb * u[k, j, c]
                    for b2 in range(b, n_p):
                        xx = xb * X[i, b2]
                        if xx == 0.0:
                            continue
                        for c in range(1, C):
                            col = b * Cf + c - 1
                            d0 = c if b2 == b else 1
                            for d in range(d0, C):
                                H[col, b2 * Cf + d - 1] += xx * Wr[c, d]
    R = H_t.shape[1]
    out = np.zeros((R, R))
    for t in range(T):
        out += H_t[t]
    return out


def subspace_cross(P, X, gcodes, w, D, with_beta=True):
    """Row sums of the reduced information that per-level sums cannot give.

    ``P`` (n, C) holds the class probabilities of every row at the current point
    (float32 or float64; :func:`level_pass` fills it).  The reduced parameters are
    theta = (vec beta[:, 1:] (row-major, when ``with_beta``), gamma[k, j]) moving
    beta[:, 1:] and the effects along directions D[:, j, :] (Q, J, C) restricted to the
    levels of factor k.  Row i contributes V_i' W_i V_i (V_i the (C, R) Jacobian of
    eta_i).  This kernel returns the upper triangle of that sum for the entries that
    involve two *different* factors, and (``with_beta``) every entry that involves beta;
    the within-factor entries sum_l d_j[l]' H_l d_j'[l] and, for an intercept, the beta
    entries follow from the level blocks H_l (see :mod:`impactglm.multinomial`).  Other
    entries are 0.
    """
    n, p = X.shape
    C = P.shape[1]
    K = gcodes.shape[0]
    R = (p * (C - 1) if with_beta else 0) + K * D.shape[1]
    T = n_chunks(n)
    return _subspace_cross(P, X, gcodes, w, np.ascontiguousarray(D), bool(with_beta), T,
                           np.zeros((T, R, R)))


def _reduced_information_numpy(prob, X, gcodes, w, D, with_beta=True):
    """V'WV over (vec beta[:, 1:] if with_beta, gamma): V the (n, C, R) Jacobian of eta in
    the subspace, W_i = w_i (diag p_i - p_i p_i') the softmax information of row i."""
    n, p = X.shape
    C = prob.shape[1]
    K, J = gcodes.shape[0], D.shape[1]
    pb = p * (C - 1) if with_beta else 0
    V = np.zeros((n, C, pb + K * J))
    if with_beta:
        for b in range(p):
            for c in range(1, C):
                V[:, c, b * (C - 1) + c - 1] = X[:, b]
    for k in range(K):
        for j in range(J):
            V[:, :, pb + k * J + j] = D[gcodes[k], j, :]
    W = w[:, None, None] * (np.einsum("ic,cd->icd", prob, np.eye(C)) - prob[:, :, None] * prob[:, None, :])
    return np.einsum("icr,icd,ids->rs", V, W, V), pb


def subspace_cross_numpy(P, X, gcodes, w, D, with_beta=True):
    """NumPy twin of :func:`subspace_cross` (builds the (n, C, R) Jacobian)."""
    K, J = gcodes.shape[0], D.shape[1]
    full, pb = _reduced_information_numpy(np.asarray(P, dtype=np.float64), X, gcodes, w, D, with_beta)
    keep = np.zeros_like(full, dtype=bool)
    owner = np.concatenate([np.full(pb, -1), np.repeat(np.arange(K), J)])
    for r in range(len(owner)):
        for s in range(r, len(owner)):
            keep[r, s] = owner[r] < 0 or owner[s] < 0 or owner[r] != owner[s]
    return np.where(keep, full, 0.0)


def subspace_hessian_numpy(X, beta, gcodes, A, w, D, offset=None):
    """The full reduced information V'WV over (vec beta[:, 1:], gamma) (test reference)."""
    prob, _ = _softmax_numpy(_eta_numpy(X, beta, gcodes, A, offset))
    return _reduced_information_numpy(prob, X, gcodes, w, D)[0]


# ---------------------------------------------------------------- beta/level coupling

@njit(parallel=True, cache=True)
def _beta_level_cross(X, beta, gcodes, A, w, offset, has_offset, T, out_t):
    n, n_p = X.shape
    C = beta.shape[1]
    Q = A.shape[0]
    K = gcodes.shape[0]
    for t in prange(T):
        out = out_t[t]
        out[:] = 0.0
        eta = np.empty(C)
        prob = np.empty(C)
        lo = t * n // T
        hi = (t + 1) * n // T
        for i in range(lo, hi):
            _eta_row(i, X, beta, gcodes, A, offset, has_offset, eta)
            _softmax(eta, prob)
            wi = w[i]
            for k in range(K):
                g = gcodes[k, i]
                for b in range(n_p):
                    xb = X[i, b] * wi
                    if xb == 0.0:
                        continue
                    for c in range(C):
                        xpc = xb * prob[c]
                        for d in range(C):
                            out[g, b, c, d] -= xpc * prob[d]
                        out[g, b, c, c] += xpc
    res = np.zeros((Q, n_p, C, C))
    for t in range(T):
        res += out_t[t]
    return res


def beta_level_cross(X, beta, gcodes, A, w, offset=None):
    """Per-level sums ``B[q, b] = sum_{i in level q} X_ib W_i`` (Q, p, C, C)."""
    n, p = X.shape
    C = beta.shape[1]
    T = max(1, min(numba.get_num_threads(), n // 4096))
    out_t = np.zeros((T, A.shape[0], p, C, C))
    off, has_off = _offset_arg(offset, C)
    return _beta_level_cross(X, beta, gcodes, A, w, off, has_off, T, out_t)


def beta_level_cross_numpy(X, beta, gcodes, A, w, offset=None):
    """NumPy twin of :func:`beta_level_cross`."""
    C = beta.shape[1]
    eta = _eta_numpy(X, beta, gcodes, A, offset)
    prob, _ = _softmax_numpy(eta)
    W = w[:, None, None] * (np.einsum("ic,cd->icd", prob, np.eye(C)) - prob[:, :, None] * prob[:, None, :])
    XW = X[:, :, None, None] * W[:, None, :, :]
    out = np.zeros((A.shape[0],) + XW.shape[1:])
    for k in range(gcodes.shape[0]):
        np.add.at(out, gcodes[k], XW)
    return out


# ---------------------------------------------------------------- prediction and scoring

@njit(parallel=True, cache=True)
def _predict_proba(X, beta, gcodes, A, offset, has_offset, out):
    n = X.shape[0]
    C = beta.shape[1]
    for i in prange(n):
        eta = np.empty(C)
        _eta_row(i, X, beta, gcodes, A, offset, has_offset, eta)
        _softmax(eta, out[i])


def predict_proba(X, beta, gcodes, A, offset=None):
    """Class probabilities (n, C); negative codes (unseen levels) get effect 0."""
    C = beta.shape[1]
    out = np.empty((X.shape[0], C))
    off, has_off = _offset_arg(offset, C)
    _predict_proba(X, beta, gcodes, A, off, has_off, out)
    return out


def predict_proba_numpy(X, beta, gcodes, A, offset=None):
    """NumPy twin of :func:`predict_proba`."""
    return _softmax_numpy(_eta_numpy(X, beta, gcodes, A, offset))[0]


@njit(parallel=True, cache=True)
def _score_pass(X, beta, gcodes, A, y, w, offset, has_offset, T, conf_t, ll_t, pred):
    n = X.shape[0]
    C = beta.shape[1]
    for t in prange(T):
        conf = conf_t[t]
        conf[:, :] = 0.0
        eta = np.empty(C)
        prob = np.empty(C)
        ll = 0.0
        comp = 0.0                       # Kahan compensation
        lo = t * n // T
        hi = (t + 1) * n // T
        for i in range(lo, hi):
            _eta_row(i, X, beta, gcodes, A, offset, has_offset, eta)
            lse = _softmax(eta, prob)
            best = 0
            for c in range(1, C):
                if eta[c] > eta[best]:
                    best = c
            pred[i] = best
            term = w[i] * (eta[y[i]] - lse) - comp
            tot = ll + term
            comp = (tot - ll) - term
            ll = tot
            conf[y[i], best] += w[i]
        ll_t[t] = ll
    total = 0.0
    for t in range(T):
        total += ll_t[t]
    out = np.zeros((C, C))
    for t in range(T):
        out += conf_t[t]
    return total, out


def score_pass(X, beta, gcodes, A, y, w, offset=None):
    """Log-likelihood, confusion matrix and predicted class without storing probabilities.

    Returns ``(loglik, confusion, pred)``: ``confusion[a, b]`` is the weight of rows of
    true class a predicted as b (the most likely class, ties to the lower index);
    ``pred`` (n,) int32.  Negative codes (unseen levels) get effect 0.
    """
    n = X.shape[0]
    C = beta.shape[1]
    T = max(1, min(4 * numba.get_num_threads(), n // 4096))
    off, has_off = _offset_arg(offset, C)
    pred = np.empty(n, dtype=np.int32)
    ll, conf = _score_pass(X, beta, gcodes, A, y, w, off, has_off, T,
                           np.zeros((T, C, C)), np.zeros(T), pred)
    return ll, conf, pred


def score_pass_numpy(X, beta, gcodes, A, y, w, offset=None):
    """NumPy twin of :func:`score_pass`."""
    C = beta.shape[1]
    eta = _eta_numpy(X, beta, gcodes, A, offset)
    _, lse = _softmax_numpy(eta)
    rows = np.arange(len(y))
    ll = float(np.sum(w * (eta[rows, y] - lse)))
    pred = np.argmax(eta, axis=1).astype(np.int32)
    conf = np.zeros((C, C))
    np.add.at(conf, (y, pred), w)
    return ll, conf, pred


# ---------------------------------------------------------------- per-level C x C blocks

@njit(cache=True, inline="always")
def _cholesky_lower(M, C):
    """Lower Cholesky factor of the symmetric positive definite M (lower triangle read and
    overwritten in place); False if M is not positive definite."""
    for j in range(C):
        s = M[j, j]
        for k in range(j):
            s -= M[j, k] * M[j, k]
        if s <= 0.0:
            return False
        d = np.sqrt(s)
        M[j, j] = d
        for i in range(j + 1, C):
            s = M[i, j]
            for k in range(j):
                s -= M[i, k] * M[j, k]
            M[i, j] = s / d
    return True


@njit(cache=True)
def _block_solve_range(Hp, add, rhs, x, trinv, lo, hi):
    """Rows lo..hi-1 of :func:`block_solve` (serial)."""
    C = rhs.shape[1]
    M = np.empty((C, C))
    v = np.empty(C)
    e = np.empty(C)
    for q in range(lo, hi):
        j = 0
        for c in range(C):
            for d in range(c, C):
                M[d, c] = Hp[q, j]
                j += 1
            M[c, c] += add[q]
        if not _cholesky_lower(M, C):
            for c in range(C):
                x[q, c] = np.nan
            trinv[q] = np.nan
            continue
        for c in range(C):                     # L v = rhs
            s = rhs[q, c]
            for k in range(c):
                s -= M[c, k] * v[k]
            v[c] = s / M[c, c]
        for c in range(C - 1, -1, -1):         # L' x = v
            s = v[c]
            for k in range(c + 1, C):
                s -= M[k, c] * x[q, k]
            x[q, c] = s / M[c, c]
        tr = 0.0                               # tr(H^-1) = ||L^-1||_F^2, column by column
        for col in range(C):
            for c in range(col, C):
                s = 1.0 if c == col else 0.0
                for k in range(col, c):
                    s -= M[c, k] * e[k]
                e[c] = s / M[c, c]
                tr += e[c] * e[c]
        trinv[q] = tr


@njit(parallel=True, cache=True)
def _block_solve_par(Hp, add, rhs, x, trinv, T):
    Q = rhs.shape[0]
    for t in prange(T):
        _block_solve_range(Hp, add, rhs, x, trinv, t * Q // T, (t + 1) * Q // T)


@njit(cache=True)
def _block_matvec_range(Hp, v, out, lo, hi):
    """out[q, j] = H_q v[q, j] for q in lo..hi-1 (v, out: (Q, J, C))."""
    J, C = v.shape[1], v.shape[2]
    for q in range(lo, hi):
        for jj in range(J):
            for c in range(C):
                out[q, jj, c] = 0.0
            j = 0
            for c in range(C):
                for d in range(c, C):
                    h = Hp[q, j]
                    out[q, jj, c] += h * v[q, jj, d]
                    if d != c:
                        out[q, jj, d] += h * v[q, jj, c]
                    j += 1


@njit(parallel=True, cache=True)
def _block_matvec_par(Hp, v, out, T):
    Q = v.shape[0]
    for t in prange(T):
        _block_matvec_range(Hp, v, out, t * Q // T, (t + 1) * Q // T)


PARALLEL_MIN_LEVELS = 20_000    # per-level kernels run serially below this many levels


def _level_threads(Q: int) -> int:
    return 1 if Q < PARALLEL_MIN_LEVELS else int(numba.get_num_threads())


def block_solve(Hp: np.ndarray, add: np.ndarray, rhs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per level q: x_q = (H_q + add_q I)^{-1} rhs_q and tr((H_q + add_q I)^{-1}).

    ``Hp`` holds the packed upper triangles of the symmetric blocks H_q (Q, C(C+1)/2).
    Cholesky per level; a block that is not positive definite gives NaN.
    """
    Q, C = rhs.shape
    x = np.empty((Q, C))
    trinv = np.empty(Q)
    add = np.ascontiguousarray(add, dtype=np.float64)
    rhs = np.ascontiguousarray(rhs, dtype=np.float64)
    T = _level_threads(Q)
    if T == 1:
        _block_solve_range(Hp, add, rhs, x, trinv, 0, Q)
    else:
        _block_solve_par(Hp, add, rhs, x, trinv, T)
    return x, trinv


def block_solve_numpy(Hp, add, rhs):
    """NumPy twin of :func:`block_solve`."""
    C = rhs.shape[1]
    H = unpack_blocks(Hp, C) + add[:, None, None] * np.eye(C)[None]
    Hinv = np.linalg.inv(H)
    return np.einsum("qcd,qd->qc", Hinv, rhs), np.trace(Hinv, axis1=1, axis2=2)


def block_matvec(Hp: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Per level q: H_q v_q (v (Q, C)) or H_q v_qj for every j (v (Q, J, C)); H_q packed."""
    v = np.ascontiguousarray(v, dtype=np.float64)
    v3 = v[:, None, :] if v.ndim == 2 else v
    out = np.empty(v3.shape)
    T = _level_threads(v3.shape[0])
    if T == 1:
        _block_matvec_range(Hp, v3, out, 0, v3.shape[0])
    else:
        _block_matvec_par(Hp, v3, out, T)
    return out[:, 0, :] if v.ndim == 2 else out


def block_matvec_numpy(Hp, v):
    """NumPy twin of :func:`block_matvec`."""
    H = unpack_blocks(Hp, v.shape[-1])
    return np.einsum("qcd,qd->qc", H, v) if v.ndim == 2 else np.einsum("qcd,qjd->qjc", H, v)


@njit(cache=True)
def _block_newton_range(Hp, add, G, steps, M, trinv, S, r, lo, hi):
    """Levels lo..hi-1 of :func:`block_newton` (serial); S, r accumulate."""
    C = G.shape[1]
    L = np.empty((C, C))
    D = np.empty((C, C))
    v = np.empty(C)
    x = np.empty(C)
    e = np.empty(C)
    for q in range(lo, hi):
        j = 0
        for c in range(C):
            for d in range(c, C):
                D[c, d] = Hp[q, j]
                D[d, c] = Hp[q, j]
                L[d, c] = Hp[q, j]
                j += 1
            L[c, c] += add[q]
        if not _cholesky_lower(L, C):
            for c in range(C):
                steps[q, c] = np.nan
                trinv[q, c] = np.nan
            continue
        for col in range(C):                   # col 0: the step H^-1 G; col c: H^-1 D[:, c]
            for c in range(C):
                s = G[q, c] if col == 0 else D[c, col]
                for k in range(c):
                    s -= L[c, k] * v[k]
                v[c] = s / L[c, c]
            for c in range(C - 1, -1, -1):
                s = v[c]
                for k in range(c + 1, C):
                    s -= L[k, c] * x[k]
                x[c] = s / L[c, c]
            if col == 0:
                for c in range(C):
                    steps[q, c] = x[c]
                for a in range(1, C):
                    s = 0.0
                    for c in range(C):
                        s += D[a, c] * x[c]
                    r[a - 1] += s
            else:
                for c in range(C):
                    M[q, c, col - 1] = x[c]
                for a in range(1, C):
                    s = 0.0
                    for c in range(C):
                        s += D[a, c] * x[c]
                    S[a - 1, col - 1] += s
        for col in range(C):                   # diag(H^-1)_col = |column col of L^-1|^2
            tr = 0.0
            for c in range(col, C):
                s = 1.0 if c == col else 0.0
                for k in range(col, c):
                    s -= L[c, k] * e[k]
                e[c] = s / L[c, c]
                tr += e[c] * e[c]
            trinv[q, col] = tr


@njit(parallel=True, cache=True)
def _block_newton_par(Hp, add, G, steps, M, trinv, S_t, r_t, T):
    Q = G.shape[0]
    for t in prange(T):
        S_t[t] = 0.0
        r_t[t] = 0.0
        _block_newton_range(Hp, add, G, steps, M, trinv, S_t[t], r_t[t], t * Q // T, (t + 1) * Q // T)


def block_newton(Hp: np.ndarray, add: np.ndarray, G: np.ndarray):
    """Per-level Newton pieces with the coupling to the class intercepts.

    With D_q the data block (packed ``Hp``), H_q = D_q + add_q I and E_q = D_q[:, 1:]
    (the block's coupling to an intercept of classes 1..C-1), returns

        steps[q] = H_q^{-1} G_q,  M[q] = H_q^{-1} E_q  (C x (C-1)),  diag(H_q^{-1}),
        S = sum_q E_q' H_q^{-1} E_q,   r = sum_q E_q' H_q^{-1} G_q,

    from which the Newton step of (intercept, this factor's effects) follows by a
    Schur complement (see :mod:`impactglm.multinomial`).
    """
    Q, C = G.shape
    steps = np.empty((Q, C))
    M = np.empty((Q, C, C - 1))
    trinv = np.empty((Q, C))
    add = np.ascontiguousarray(add, dtype=np.float64)
    G = np.ascontiguousarray(G, dtype=np.float64)
    T = _level_threads(Q)
    S_t = np.zeros((T, C - 1, C - 1))
    r_t = np.zeros((T, C - 1))
    if T == 1:
        _block_newton_range(Hp, add, G, steps, M, trinv, S_t[0], r_t[0], 0, Q)
    else:
        _block_newton_par(Hp, add, G, steps, M, trinv, S_t, r_t, T)
    return steps, M, trinv, S_t.sum(axis=0), r_t.sum(axis=0)


def block_newton_numpy(Hp, add, G):
    """NumPy twin of :func:`block_newton`."""
    C = G.shape[1]
    D = unpack_blocks(Hp, C)
    Hinv = np.linalg.inv(D + add[:, None, None] * np.eye(C)[None])
    E = D[:, :, 1:]
    steps = np.einsum("qcd,qd->qc", Hinv, G)
    M = np.einsum("qcd,qde->qce", Hinv, E)
    S = np.einsum("qca,qcb->ab", E, M)
    r = np.einsum("qca,qc->a", E, steps)
    return steps, M, np.diagonal(Hinv, axis1=1, axis2=2).copy(), S, r

"""Fused row passes for models with high-cardinality factors (numba + NumPy twins).

Notation (DESIGN.md section 2).  Row i has fixed-effect row x_i (p values), prior
weight pw_i, offset o_i and, for each of the K factors, a *global* level index
``gidx[i, k]`` into one concatenated effect vector ``a`` of length Q = sum_k q_k
(factor k occupies a contiguous block).  Then

    eta_i = o_i + x_i' beta + sum_k a[gidx[i, k]]
    mu_i  = g^-1(eta_i)
    w_i   = pw_i / phi * (dmu/deta)^2 / V(mu_i)           (IRLS / Fisher weight)
    r_i   = pw_i / phi * (y_i - mu_i) (dmu/deta) / V(mu_i) (d loglik_i / d eta_i)
    dev   = sum_i pw_i d(y_i, mu_i)                         (deviance, unit-phi)

:func:`row_pass` computes, in ONE pass over the rows and without any per-row
temporary: the deviance, the per-level sums G[l] = sum_{i in l} r_i and
W[l] = sum_{i in l} w_i for every factor at once, X'r, diag(X'WX), and (optionally)
stores w_i for a following :func:`hess_pass`.

:func:`hess_pass` computes the small dense reduced Hessian D'WD for the directions
D(i) = [x_i, L[gidx[i,0], :], ..., L[gidx[i,K-1], :]] (p + K J columns), where L is a
(Q, J) table of level directions (J per level; each factor's rows hold that
factor's directions).  :func:`hv_pass` is a Hessian-vector product of the data
part, :func:`level_xw_pass` the per-level sums of w_i x_i.

Broadcasting: X, pw and offset may have a single row (shape (1, p) / (1,)), meaning
"the same for every row" (intercept-only designs, no weights, no offset), so that
no n-length constant arrays are allocated.

Canonical pairs use closed forms with a single exp (and one log1p for the
deviance): binomial-logit (mu = 1/(1+e^-eta), w = mu(1-mu), r = y-mu,
d = 2[y log(y/mu) + (1-y) log((1-y)/(1-mu))] evaluated via softplus), poisson-log
and gaussian-identity.  Other pairs use the device functions of
:mod:`impactglm.kernels.links` (R's definitions, with R's clipping).

Per-thread accumulators: the rows are cut into T contiguous chunks (T = the
first dimension of the workspace arrays), each thread sums into its own slice,
then the slices are added.  Results are deterministic for a given T.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from . import links as LK

__all__ = ["row_quantities", "row_pass", "row_pass_numpy", "hess_pass", "hess_pass_numpy",
           "hv_pass", "hv_pass_numpy", "cross_pass", "cross_pass_numpy", "level_xw_pass", "level_xw_pass_numpy",
           "row_quantities_numpy", "eta_pass", "eta_pass_numpy", "level_sums", "level_sums_numpy",
           "counting_sort", "counting_sort_numpy", "gather_rows", "gather_rows_numpy",
           "gather_level_index", "gather_level_index_numpy"]


@njit(cache=True)
def _ylogy(y: float, m: float) -> float:
    if y == 0.0:
        return 0.0
    return y * math.log(y / m)


@njit(cache=True)
def row_quantities(eta: float, y: float, fam: int, link: int):
    """(mu, w, r, d) per unit prior weight for one row (see the module docstring)."""
    if fam == LK.FAMILY_BINOMIAL and link == LK.LINK_LOGIT:
        t = math.exp(-abs(eta))
        opt = 1.0 + t
        mu = 1.0 / opt if eta >= 0.0 else t / opt
        w = t / (opt * opt)
        # -log(mu) = softplus(-eta); -log(1-mu) = softplus(-eta) + eta
        sp = math.log1p(t) + max(-eta, 0.0)
        d = sp + (1.0 - y) * eta
        if y > 0.0 and y < 1.0:
            d += y * math.log(y) + (1.0 - y) * math.log(1.0 - y)
        return mu, w, y - mu, 2.0 * d
    if fam == LK.FAMILY_POISSON and link == LK.LINK_LOG:
        mu = math.exp(eta)
        d = mu - y * eta - y
        if y > 0.0:
            d += y * math.log(y)
        return mu, mu, y - mu, 2.0 * d
    if fam == LK.FAMILY_GAUSSIAN and link == LK.LINK_IDENTITY:
        r = y - eta
        return eta, 1.0, r, r * r
    mu = LK.linkinv(eta, link)
    me = LK.mu_eta(eta, link)
    v = LK.variance(mu, fam)
    return mu, me * me / v, (y - mu) * me / v, LK.unit_deviance(y, mu, fam)


def row_quantities_numpy(eta: np.ndarray, y: np.ndarray, fam: int, link: int):
    """Vectorised twin of :func:`row_quantities`."""
    eta = np.asarray(eta, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if fam == LK.FAMILY_BINOMIAL and link == LK.LINK_LOGIT:
        t = np.exp(-np.abs(eta))
        opt = 1.0 + t
        mu = np.where(eta >= 0.0, 1.0 / opt, t / opt)
        w = t / (opt * opt)
        sp = np.log1p(t) + np.maximum(-eta, 0.0)
        inner = (y > 0.0) & (y < 1.0)
        ys = np.where(inner, y, 0.5)
        d = sp + (1.0 - y) * eta + np.where(inner, ys * np.log(ys) + (1.0 - ys) * np.log(1.0 - ys), 0.0)
        return mu, w, y - mu, 2.0 * d
    if fam == LK.FAMILY_POISSON and link == LK.LINK_LOG:
        mu = np.exp(eta)
        pos = y > 0.0
        d = mu - y * eta - y + np.where(pos, y * np.log(np.where(pos, y, 1.0)), 0.0)
        return mu, mu, y - mu, 2.0 * d
    if fam == LK.FAMILY_GAUSSIAN and link == LK.LINK_IDENTITY:
        r = y - eta
        return eta.copy(), np.ones_like(eta), r, r * r
    mu = LK.linkinv_numpy(eta, link)
    me = LK.mu_eta_numpy(eta, link)
    v = LK.variance_numpy(mu, fam)
    return mu, me * me / v, (y - mu) * me / v, LK.unit_deviance_numpy(y, mu, fam)


@njit(cache=True, inline="always")
def _eta(i, X, beta, offset, gidx, a):
    if offset.shape[0] > 1:
        e = offset[i]
    else:
        e = offset[0]
    if X.shape[0] > 1:
        for j in range(X.shape[1]):
            e += X[i, j] * beta[j]
    else:
        for j in range(X.shape[1]):
            e += X[0, j] * beta[j]
    for k in range(gidx.shape[1]):
        e += a[gidx[i, k]]
    return e


def _eta_numpy(X, beta, offset, gidx, a):
    return offset + X @ beta + a[gidx].sum(axis=1)


def _full(v, n):
    """Expand a broadcast (length-1) row array to n rows."""
    return np.broadcast_to(v, (n,) + v.shape[1:]) if v.shape[0] == 1 and n != 1 else v


@njit(cache=True, inline="always")
def _accumulate_row(i, e, y, pw, pwfull, fam, link, inv_phi, gidx, gw, w_out, store_w):
    """Row i at linear predictor e: scatter r_i, w_i (prior weight and 1/phi applied) into
    the per-level sums gw[c] = (G, W); store w_i when asked; return (r_i, w_i, pw_i d_i)."""
    mu, w, r, d = row_quantities(e, y[i], fam, link)
    wi = pw[i] if pwfull else pw[0]
    w = w * wi * inv_phi
    r = r * wi * inv_phi
    if store_w:
        w_out[i] = w
    for k in range(gidx.shape[1]):
        c = gidx[i, k]
        gw[c, 0] += r
        gw[c, 1] += w
    return r, w, wi * d


@njit(cache=True, parallel=True)
def row_pass(X, beta, offset, gidx, a, y, pw, fam, link, inv_phi,
             accGW, accXr, accXd, accDev, w_out, store_w,
             G, Wl, Xr, Xd):
    """One fused pass: fills G, Wl (per level), Xr, Xd (diag X'WX); returns the deviance.

    accGW (T, Q, 2) (G and W interleaved: one cache line per level), accXr/accXd (T, p),
    accDev (T,) are per-thread workspaces; w_out (n,) receives w_i when ``store_w``.
    """
    n = y.shape[0]
    T = accGW.shape[0]
    Q = accGW.shape[1]
    p = X.shape[1]
    K = gidx.shape[1]
    xfull = X.shape[0] > 1
    pwfull = pw.shape[0] > 1
    chunk = (n + T - 1) // T
    for t in prange(T):
        gw = accGW[t]
        xr = accXr[t]
        xd = accXd[t]
        for q in range(Q):
            gw[q, 0] = 0.0
            gw[q, 1] = 0.0
        for j in range(p):
            xr[j] = 0.0
            xd[j] = 0.0
        dev = 0.0
        lo = t * chunk
        hi = min(n, lo + chunk)
        if not xfull and offset.shape[0] == 1:
            # constant rows and offset: offset + x0'beta once; X'r = x0 sum r, diag X'WX = x0^2 sum w
            base = offset[0]
            for j in range(p):
                base += X[0, j] * beta[j]
            sr = 0.0
            sw = 0.0
            for i in range(lo, hi):
                e = base
                for k in range(K):
                    e += a[gidx[i, k]]
                r, w, d = _accumulate_row(i, e, y, pw, pwfull, fam, link, inv_phi, gidx, gw,
                                          w_out, store_w)
                dev += d
                sr += r
                sw += w
            for j in range(p):
                xr[j] = X[0, j] * sr
                xd[j] = X[0, j] * X[0, j] * sw
            accDev[t] = dev
            continue
        for i in range(lo, hi):
            e = _eta(i, X, beta, offset, gidx, a)
            r, w, d = _accumulate_row(i, e, y, pw, pwfull, fam, link, inv_phi, gidx, gw,
                                      w_out, store_w)
            dev += d
            ix = i if xfull else 0
            for j in range(p):
                x = X[ix, j]
                xr[j] += x * r
                xd[j] += x * x * w
        accDev[t] = dev
    for q in prange(Q):
        s1 = 0.0
        s2 = 0.0
        for t in range(T):
            s1 += accGW[t, q, 0]
            s2 += accGW[t, q, 1]
        G[q] = s1
        Wl[q] = s2
    dev = 0.0
    for t in range(T):
        dev += accDev[t]
    for j in range(p):
        s1 = 0.0
        s2 = 0.0
        for t in range(T):
            s1 += accXr[t, j]
            s2 += accXd[t, j]
        Xr[j] = s1
        Xd[j] = s2
    return dev


def row_pass_numpy(X, beta, offset, gidx, a, y, pw, fam, link, inv_phi, Q):
    """Twin of :func:`row_pass`: returns (dev, G, Wl, Xr, Xd, w)."""
    eta = _eta_numpy(X, beta, offset, gidx, a)
    mu, w, r, d = row_quantities_numpy(eta, y, fam, link)
    n = len(y)
    pw = _full(pw, n)
    X = _full(X, n)
    dev = float(np.sum(pw * d))
    w = w * pw * inv_phi
    r = r * pw * inv_phi
    G = np.zeros(Q)
    Wl = np.zeros(Q)
    for k in range(gidx.shape[1]):
        G += np.bincount(gidx[:, k], weights=r, minlength=Q)
        Wl += np.bincount(gidx[:, k], weights=w, minlength=Q)
    return dev, G, Wl, X.T @ r, (X * X).T @ w, w


@njit(cache=True, inline="always")
def _mean(eta: float, y: float, fam: int, link: int) -> float:
    """mu = g^-1(eta) alone (the same arithmetic as :func:`row_quantities` for the logit,
    without its weight and deviance)."""
    if fam == LK.FAMILY_BINOMIAL and link == LK.LINK_LOGIT:
        t = math.exp(-abs(eta))
        opt = 1.0 + t
        return 1.0 / opt if eta >= 0.0 else t / opt
    return row_quantities(eta, y, fam, link)[0]


@njit(cache=True, parallel=True)
def eta_pass(X, beta, offset, gidx, a, y, pw, fam, link, perm, eta_out, mu_out):
    """eta_i and mu_i for every row, written to position perm[i] (perm of length 0: i)."""
    n = y.shape[0]
    if perm.shape[0] > 0:
        for i in prange(n):
            e = _eta(i, X, beta, offset, gidx, a)
            mu = _mean(e, y[i], fam, link)
            eta_out[perm[i]] = e
            mu_out[perm[i]] = mu
    else:
        for i in prange(n):
            e = _eta(i, X, beta, offset, gidx, a)
            mu = _mean(e, y[i], fam, link)
            eta_out[i] = e
            mu_out[i] = mu


def eta_pass_numpy(X, beta, offset, gidx, a, y, pw, fam, link, perm):
    """Twin of :func:`eta_pass`: returns (eta, mu)."""
    eta = _eta_numpy(X, beta, offset, gidx, a)
    mu = row_quantities_numpy(eta, y, fam, link)[0]
    if len(perm):
        e2, m2 = np.empty_like(eta), np.empty_like(mu)
        e2[perm] = eta
        m2[perm] = mu
        return e2, m2
    return eta, mu


@njit(cache=True, parallel=True)
def hess_pass(X, gidx, w, L, accH, H):
    """H = sum_i w_i D(i) D(i)' with D(i) = [x_i, L[gidx[i,0]], ..., L[gidx[i,K-1]]].

    accH (T, m, m) workspace, H (m, m) output, m = p + K J.
    """
    n = w.shape[0]
    T = accH.shape[0]
    m = accH.shape[1]
    p = X.shape[1]
    K = gidx.shape[1]
    J = L.shape[1]
    xfull = X.shape[0] > 1
    chunk = (n + T - 1) // T
    for t in prange(T):
        h = accH[t]
        for u in range(m):
            for v in range(m):
                h[u, v] = 0.0
        d = np.empty(m)
        lo = t * chunk
        hi = min(n, lo + chunk)
        for i in range(lo, hi):
            ix = i if xfull else 0
            for j in range(p):
                d[j] = X[ix, j]
            for k in range(K):
                c = gidx[i, k]
                for j in range(J):
                    d[p + k * J + j] = L[c, j]
            wi = w[i]
            for u in range(m):
                du = wi * d[u]
                for v in range(u, m):
                    h[u, v] += du * d[v]
    for u in range(m):
        for v in range(u, m):
            s = 0.0
            for t in range(T):
                s += accH[t, u, v]
            H[u, v] = s
            H[v, u] = s


@njit(cache=True, parallel=True)
def cross_pass(gidx, w, L, accC, C):
    """Cross-factor blocks of the reduced Hessian: for every pair of factors k < k'
    (pair index in row-major order over the strict upper triangle),

        C[pair, u, v] = sum_i w_i L[gidx[i, k], u] L[gidx[i, k'], v].

    With constant X rows these are the only blocks of D'WD that need the rows: the
    others follow from the level weight sums W (see ``reduced_hessian`` in the solver).
    accC (T, npairs, J, J) workspace, C (npairs, J, J) output.
    """
    n = w.shape[0]
    T = accC.shape[0]
    P = accC.shape[1]
    J = L.shape[1]
    K = gidx.shape[1]
    chunk = (n + T - 1) // T
    for t in prange(T):
        c = accC[t]
        for q in range(P):
            for u in range(J):
                for v in range(J):
                    c[q, u, v] = 0.0
        lo = t * chunk
        hi = min(n, lo + chunk)
        for i in range(lo, hi):
            wi = w[i]
            q = 0
            for k in range(K):
                ck = gidx[i, k]
                for k2 in range(k + 1, K):
                    c2 = gidx[i, k2]
                    for u in range(J):
                        du = wi * L[ck, u]
                        for v in range(J):
                            c[q, u, v] += du * L[c2, v]
                    q += 1
    for q in range(P):
        for u in range(J):
            for v in range(J):
                s = 0.0
                for t in range(T):
                    s += accC[t, q, u, v]
                C[q, u, v] = s


def cross_pass_numpy(gidx, w, L):
    """Twin of :func:`cross_pass`: returns C (npairs, J, J)."""
    K = gidx.shape[1]
    out = [L[gidx[:, k]].T @ (w[:, None] * L[gidx[:, k2]]) for k in range(K) for k2 in range(k + 1, K)]
    return np.array(out).reshape(len(out), L.shape[1], L.shape[1])


def _directions_numpy(X, gidx, L):
    cols = [_full(X, gidx.shape[0])] + [L[gidx[:, k]] for k in range(gidx.shape[1])]
    return np.hstack(cols)


def hess_pass_numpy(X, gidx, w, L):
    """Twin of :func:`hess_pass`: returns H (m, m)."""
    D = _directions_numpy(X, gidx, L)
    return D.T @ (D * w[:, None])


@njit(cache=True, parallel=True)
def hv_pass(X, gidx, w, vb, va, accA, accX, outA, outX):
    """Data part of a Hessian-vector product: u_i = x_i'vb + sum_k va[gidx[i,k]];
    outX = X'(w u), outA[l] = sum_{i in l} w_i u_i (every factor)."""
    n = w.shape[0]
    T = accA.shape[0]
    Q = accA.shape[1]
    p = X.shape[1]
    K = gidx.shape[1]
    xfull = X.shape[0] > 1
    chunk = (n + T - 1) // T
    for t in prange(T):
        aa = accA[t]
        ax = accX[t]
        for q in range(Q):
            aa[q] = 0.0
        for j in range(p):
            ax[j] = 0.0
        lo = t * chunk
        hi = min(n, lo + chunk)
        if xfull:
            for i in range(lo, hi):
                u = 0.0
                for j in range(p):
                    u += X[i, j] * vb[j]
                for k in range(K):
                    u += va[gidx[i, k]]
                u *= w[i]
                for k in range(K):
                    aa[gidx[i, k]] += u
                for j in range(p):
                    ax[j] += X[i, j] * u
        else:
            # constant rows: x0'vb once, and X'(w u) = x0 sum_i w_i u_i
            xb = 0.0
            for j in range(p):
                xb += X[0, j] * vb[j]
            su = 0.0
            for i in range(lo, hi):
                u = xb
                for k in range(K):
                    u += va[gidx[i, k]]
                u *= w[i]
                for k in range(K):
                    aa[gidx[i, k]] += u
                su += u
            for j in range(p):
                ax[j] = X[0, j] * su
    for q in prange(Q):
        s = 0.0
        for t in range(T):
            s += accA[t, q]
        outA[q] = s
    for j in range(p):
        s = 0.0
        for t in range(T):
            s += accX[t, j]
        outX[j] = s


def hv_pass_numpy(X, gidx, w, vb, va, Q):
    """Twin of :func:`hv_pass`: returns (outA, outX)."""
    u = w * (X @ vb + va[gidx].sum(axis=1))
    X = _full(X, len(w))
    outA = np.zeros(Q)
    for k in range(gidx.shape[1]):
        outA += np.bincount(gidx[:, k], weights=u, minlength=Q)
    return outA, X.T @ u


@njit(cache=True)
def level_xw_pass(X, gidx, w, out):
    """out[l, j] = sum_{i in l} w_i X[i, j] for every level of every factor (serial)."""
    n = w.shape[0]
    p = X.shape[1]
    K = gidx.shape[1]
    for q in range(out.shape[0]):
        for j in range(p):
            out[q, j] = 0.0
    xfull = X.shape[0] > 1
    for i in range(n):
        ix = i if xfull else 0
        for k in range(K):
            c = gidx[i, k]
            for j in range(p):
                out[c, j] += w[i] * X[ix, j]


def level_xw_pass_numpy(X, gidx, w, Q):
    """Twin of :func:`level_xw_pass`: returns (Q, p)."""
    p = X.shape[1]
    X = _full(X, len(w))
    out = np.zeros((Q, p))
    for k in range(gidx.shape[1]):
        for j in range(p):
            out[:, j] += np.bincount(gidx[:, k], weights=w * X[:, j], minlength=Q)
    return out


@njit(cache=True)
def level_sums(gidx, y, pw, out_wy, out_w):
    """out_wy[l] = sum_{i in l} pw_i y_i, out_w[l] = sum_{i in l} pw_i (every factor; serial)."""
    n = y.shape[0]
    K = gidx.shape[1]
    pwfull = pw.shape[0] > 1
    for q in range(out_w.shape[0]):
        out_wy[q] = 0.0
        out_w[q] = 0.0
    for i in range(n):
        wi = pw[i] if pwfull else pw[0]
        for k in range(K):
            c = gidx[i, k]
            out_wy[c] += wi * y[i]
            out_w[c] += wi


def level_sums_numpy(gidx, y, pw, Q):
    """Twin of :func:`level_sums`: returns (sum pw y, sum pw) per level."""
    pw = _full(pw, len(y))
    wy, w = np.zeros(Q), np.zeros(Q)
    for k in range(gidx.shape[1]):
        wy += np.bincount(gidx[:, k], weights=pw * y, minlength=Q)
        w += np.bincount(gidx[:, k], weights=pw, minlength=Q)
    return wy, w


@njit(cache=True)
def counting_sort(codes, q):
    """Stable permutation that sorts the rows by ``codes`` (0..q-1): O(n + q)."""
    n = codes.shape[0]
    pos = np.zeros(q + 1, dtype=np.int64)
    for i in range(n):
        pos[codes[i] + 1] += 1
    for l in range(q):
        pos[l + 1] += pos[l]
    perm = np.empty(n, dtype=np.int64)
    for i in range(n):
        c = codes[i]
        perm[pos[c]] = i
        pos[c] += 1
    return perm


def counting_sort_numpy(codes, q):
    """Twin of :func:`counting_sort`."""
    return np.argsort(codes, kind="stable").astype(np.int64)


@njit(cache=True, parallel=True)
def gather_rows(src, perm, dst):
    """dst[i] = src[perm[i]] for 1-d arrays (parallel fancy indexing)."""
    for i in prange(perm.shape[0]):
        dst[i] = src[perm[i]]


def gather_rows_numpy(src, perm):
    """Twin of :func:`gather_rows`."""
    return src[perm]


@njit(cache=True, parallel=True)
def gather_level_index(codes, perm, start, out):
    """out[i] = codes[perm[i]] + start (perm of length 0: codes[i] + start); ``out`` may be a
    strided column of the (n, K) global level index, so no temporary column is needed."""
    n = out.shape[0]
    if perm.shape[0] > 0:
        for i in prange(n):
            out[i] = codes[perm[i]] + start
    else:
        for i in prange(n):
            out[i] = codes[i] + start


def gather_level_index_numpy(codes, perm, start):
    """Twin of :func:`gather_level_index`."""
    return (codes[perm] if len(perm) else codes) + start

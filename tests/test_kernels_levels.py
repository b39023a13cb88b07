"""numba kernels of impactglm.kernels.levels vs their NumPy twins (KERNEL_RTOL)."""
from __future__ import annotations

import numpy as np
import pytest

from impactglm.kernels import levels as KL
from impactglm.kernels import links as LK

from conftest import KERNEL_RTOL

PAIRS = [(LK.FAMILY_BINOMIAL, LK.LINK_LOGIT), (LK.FAMILY_BINOMIAL, LK.LINK_PROBIT),
         (LK.FAMILY_BINOMIAL, LK.LINK_CLOGLOG), (LK.FAMILY_POISSON, LK.LINK_LOG),
         (LK.FAMILY_POISSON, LK.LINK_IDENTITY), (LK.FAMILY_GAUSSIAN, LK.LINK_IDENTITY),
         (LK.FAMILY_GAUSSIAN, LK.LINK_LOG)]


def _problem(fam, link, n=5003, seed=0, T=3):
    rng = np.random.default_rng(seed)
    q = np.array([37, 11, 5])
    starts = np.concatenate([[0], np.cumsum(q)])
    gidx = np.column_stack([rng.integers(0, qk, n) + s for qk, s in zip(q, starts[:-1])]).astype(np.int32)
    X = np.column_stack([np.ones(n), rng.normal(size=n)])
    beta = np.array([0.2, -0.3])
    a = rng.normal(0, 0.4, starts[-1])
    offset = rng.normal(0, 0.1, n)
    eta = offset + X @ beta + a[gidx].sum(1)
    if fam == LK.FAMILY_BINOMIAL:
        y = rng.integers(0, 3, n) / 2.0          # 0, 1/2, 1: proportions too
    elif fam == LK.FAMILY_POISSON:
        y = rng.poisson(2.0, n).astype(float)
        if link == LK.LINK_IDENTITY:
            beta = np.array([3.0, 0.1])
    else:
        y = np.exp(eta) + rng.normal(size=n) if link == LK.LINK_LOG else eta + rng.normal(size=n)
    pw = rng.uniform(0.5, 2.0, n)
    return X, beta, offset, gidx, a, y, pw, int(starts[-1]), T


def _row_pass(X, beta, offset, gidx, a, y, pw, fam, link, inv_phi, Q, T):
    p = X.shape[1]
    n = len(y)
    G, Wl, Xr, Xd, w = np.empty(Q), np.empty(Q), np.empty(p), np.empty(p), np.empty(n)
    dev = KL.row_pass(X, beta, offset, gidx, a, y, pw, fam, link, inv_phi,
                      np.empty((T, Q, 2)), np.empty((T, p)), np.empty((T, p)),
                      np.empty(T), w, True, G, Wl, Xr, Xd)
    return dev, G, Wl, Xr, Xd, w


@pytest.mark.parametrize("fam,link", PAIRS)
def test_row_pass_matches_numpy(fam, link):
    X, beta, offset, gidx, a, y, pw, Q, T = _problem(fam, link)
    dev, G, Wl, Xr, Xd, w = _row_pass(X, beta, offset, gidx, a, y, pw, fam, link, 0.7, Q, T)
    dev2, G2, W2, Xr2, Xd2, w2 = KL.row_pass_numpy(X, beta, offset, gidx, a, y, pw, fam, link, 0.7, Q)
    np.testing.assert_allclose(dev, dev2, rtol=KERNEL_RTOL)
    for u, v in [(G, G2), (Wl, W2), (Xr, Xr2), (Xd, Xd2), (w, w2)]:
        np.testing.assert_allclose(u, v, rtol=KERNEL_RTOL, atol=1e-300)
    # the deviance equals the family's R definition
    from impactglm.families import FAMILY_CODES, LINK_CODES, get_family
    fname = {v: k for k, v in FAMILY_CODES.items()}[fam]
    lname = {v: k for k, v in LINK_CODES.items()}[link]
    F = get_family(fname, lname)
    eta = offset + X @ beta + a[gidx].sum(1)
    np.testing.assert_allclose(dev, F.deviance(y, F.link.inverse(eta), pw), rtol=1e-10)


def test_row_quantities_extreme_eta():
    eta = np.array([-800.0, -40.0, -1e-3, 0.0, 1e-3, 40.0, 800.0])
    y = np.array([0.0, 1.0, 0.5, 1.0, 0.0, 0.0, 1.0])
    mu2, w2, r2, d2 = KL.row_quantities_numpy(eta, y, LK.FAMILY_BINOMIAL, LK.LINK_LOGIT)
    for i in range(len(eta)):
        mu, w, r, d = KL.row_quantities(eta[i], y[i], LK.FAMILY_BINOMIAL, LK.LINK_LOGIT)
        np.testing.assert_allclose([mu, w, r, d], [mu2[i], w2[i], r2[i], d2[i]], rtol=KERNEL_RTOL, atol=0)
    assert np.all(np.isfinite(d2)) and d2[-2] == pytest.approx(80.0)


def test_hess_pass_matches_numpy():
    X, beta, offset, gidx, a, y, pw, Q, T = _problem(LK.FAMILY_BINOMIAL, LK.LINK_LOGIT)
    rng = np.random.default_rng(1)
    L = rng.normal(size=(Q, 3))
    m = X.shape[1] + gidx.shape[1] * 3
    H = np.empty((m, m))
    KL.hess_pass(X, gidx, pw, L, np.empty((T, m, m)), H)
    np.testing.assert_allclose(H, KL.hess_pass_numpy(X, gidx, pw, L), rtol=KERNEL_RTOL)


def test_hv_and_level_xw_match_numpy():
    X, beta, offset, gidx, a, y, pw, Q, T = _problem(LK.FAMILY_POISSON, LK.LINK_LOG)
    p = X.shape[1]
    outA, outX = np.empty(Q), np.empty(p)
    KL.hv_pass(X, gidx, pw, beta, a, np.empty((T, Q)), np.empty((T, p)), outA, outX)
    A2, X2 = KL.hv_pass_numpy(X, gidx, pw, beta, a, Q)
    np.testing.assert_allclose(outA, A2, rtol=KERNEL_RTOL)
    np.testing.assert_allclose(outX, X2, rtol=KERNEL_RTOL)
    B = np.empty((Q, p))
    KL.level_xw_pass(X, gidx, pw, B)
    np.testing.assert_allclose(B, KL.level_xw_pass_numpy(X, gidx, pw, Q), rtol=KERNEL_RTOL)
    for perm in (np.empty(0, dtype=np.int64), np.random.default_rng(4).permutation(len(y))):
        eta, mu = np.empty(len(y)), np.empty(len(y))
        KL.eta_pass(X, beta, offset, gidx, a, y, pw, LK.FAMILY_POISSON, LK.LINK_LOG, perm, eta, mu)
        e2, m2 = KL.eta_pass_numpy(X, beta, offset, gidx, a, y, pw, LK.FAMILY_POISSON, LK.LINK_LOG, perm)
        np.testing.assert_allclose(eta, e2, rtol=KERNEL_RTOL)
        np.testing.assert_allclose(mu, m2, rtol=KERNEL_RTOL)


def test_broadcast_rows_equal_full_arrays():
    """A single-row X / pw / offset means "the same for every row"."""
    X, beta, offset, gidx, a, y, pw, Q, T = _problem(LK.FAMILY_BINOMIAL, LK.LINK_LOGIT)
    n = len(y)
    X1, pw1, off1 = np.array([[1.0, 0.5]]), np.array([1.5]), np.array([0.25])
    full = _row_pass(np.repeat(X1, n, 0), beta, np.full(n, 0.25), gidx, a, y, np.full(n, 1.5),
                     LK.FAMILY_BINOMIAL, LK.LINK_LOGIT, 1.0, Q, T)
    bc = _row_pass(X1, beta, off1, gidx, a, y, pw1, LK.FAMILY_BINOMIAL, LK.LINK_LOGIT, 1.0, Q, T)
    tw = KL.row_pass_numpy(X1, beta, off1, gidx, a, y, pw1, LK.FAMILY_BINOMIAL, LK.LINK_LOGIT, 1.0, Q)
    for u, v, z in zip(full, bc, tw):
        np.testing.assert_allclose(v, u, rtol=KERNEL_RTOL)
        np.testing.assert_allclose(z, u, rtol=KERNEL_RTOL)
    L = np.random.default_rng(0).normal(size=(Q, 2))
    m = 2 + 3 * 2
    H = np.empty((m, m))
    KL.hess_pass(X1, gidx, pw, L, np.empty((T, m, m)), H)
    np.testing.assert_allclose(H, KL.hess_pass_numpy(X1, gidx, pw, L), rtol=KERNEL_RTOL)
    B = np.empty((Q, 2))
    KL.level_xw_pass(X1, gidx, pw, B)
    np.testing.assert_allclose(B, KL.level_xw_pass_numpy(X1, gidx, pw, Q), rtol=KERNEL_RTOL)


def test_level_sums_sort_gather_match_numpy():
    X, beta, offset, gidx, a, y, pw, Q, T = _problem(LK.FAMILY_POISSON, LK.LINK_LOG)
    wy, w = np.empty(Q), np.empty(Q)
    KL.level_sums(gidx, y, pw, wy, w)
    wy2, w2 = KL.level_sums_numpy(gidx, y, pw, Q)
    np.testing.assert_allclose(wy, wy2, rtol=KERNEL_RTOL)
    np.testing.assert_allclose(w, w2, rtol=KERNEL_RTOL)
    codes = gidx[:, 0].copy()
    perm = KL.counting_sort(codes, Q)
    np.testing.assert_array_equal(perm, KL.counting_sort_numpy(codes, Q))
    out = np.empty(len(y))
    KL.gather_rows(y, perm, out)
    np.testing.assert_array_equal(out, KL.gather_rows_numpy(y, perm))


def test_cross_pass_matches_numpy():
    """Cross-factor blocks sum_i w_i L[g_ik] L[g_ik']' for every factor pair."""
    X, beta, offset, gidx, a, y, pw, Q, T = _problem(LK.FAMILY_BINOMIAL, LK.LINK_LOGIT)
    rng = np.random.default_rng(2)
    L = rng.normal(size=(Q, 3))
    K = gidx.shape[1]
    P = K * (K - 1) // 2
    C = np.empty((P, 3, 3))
    KL.cross_pass(gidx, pw, L, np.empty((T, P, 3, 3)), C)
    np.testing.assert_allclose(C, KL.cross_pass_numpy(gidx, pw, L), rtol=KERNEL_RTOL)
    # the blocks are the off-diagonal factor blocks of the full reduced Hessian
    H = KL.hess_pass_numpy(X, gidx, pw, L)
    p = X.shape[1]
    np.testing.assert_allclose(C[0], H[p:p + 3, p + 3:p + 6], rtol=1e-10)


def test_gather_level_index_matches_numpy():
    """Gather + offset into a strided column of the level index, with and without a permutation."""
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 50, 1001)
    perm = rng.permutation(1001).astype(np.int64)
    for pm in (perm, np.empty(0, dtype=np.int64)):
        g = np.zeros((1001, 2), dtype=np.int32)
        KL.gather_level_index(codes, pm, 7, g[:, 1])
        np.testing.assert_array_equal(g[:, 1], KL.gather_level_index_numpy(codes, pm, 7))
        assert not g[:, 0].any()

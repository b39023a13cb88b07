"""Multinomial family: kernels, solver exactness, statsmodels agreement, results, metrics.

References: statsmodels MNLogit (no ^ terms); an independent dense Newton solver over
the full parameter vector written here (^ terms, same prior and identifiability);
finite differences (gradient); NumPy twins (kernels).
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import impactglm as ig
from impactglm.errors import DataError, ImpactGLMError, ModelError, UnseenLevelWarning
from impactglm.kernels import multinomial as km
from impactglm.model import fit_multinomial_design
from impactglm.solvers.api import fit_multinomial

from conftest import COEF_RTOL_R, EXACT_RTOL, KERNEL_RTOL, SE_RTOL_R


# --------------------------------------------------------------------------- data

def _draw_classes(rng, eta):
    P = np.exp(eta - eta.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    return (P.cumsum(axis=1) > rng.random((len(eta), 1))).argmax(axis=1).astype(np.int32)


def _problem(seed=0, n=600, C=3, q=(12, 7), p=2, tau=(0.8, 0.5)):
    rng = np.random.default_rng(seed)
    X = np.column_stack([np.ones(n)] + [rng.normal(size=n) for _ in range(p - 1)])
    B = rng.normal(size=(p, C)) * 0.5
    B[:, 0] = 0
    codes = [rng.integers(0, qk, n).astype(np.int32) for qk in q]
    eta = X @ B
    for c, qk, t in zip(codes, q, tau):
        eta += (rng.normal(size=(qk, C)) * t)[c]
    y = _draw_classes(rng, eta)
    w = rng.uniform(0.5, 2.0, n)
    return X, codes, y, w


def _stack(codes, q):
    start = np.concatenate([[0], np.cumsum(q)])
    return np.vstack([c + s for c, s in zip(codes, start)]).astype(np.int32)


# --------------------------------------------------------------------------- oracle

class Oracle:
    """Dense Newton on theta = (vec beta[:, 1:] row-major, vec A_1, ..., vec A_K).

    f(theta) = -sum_i w_i log softmax(eta_i)[y_i] + sum_k |A_k|^2 / (2 tau_k^2), with
    beta[:, 0] = 0 and symmetric (all-class) level effects; gradient and Hessian from
    the explicit Jacobian of eta_i (C x D) per row.
    """

    def __init__(self, X, codes, q, y, w, C, prec):
        self.X, self.codes, self.q, self.y, self.w, self.C = X, codes, q, y, w, C
        n, p = X.shape
        self.pb = p * (C - 1)
        self.D = self.pb + sum(q) * C
        J = np.zeros((n, C, self.D))
        for b in range(p):
            for c in range(1, C):
                J[:, c, b * (C - 1) + c - 1] = X[:, b]
        start = self.pb
        for cd, qk in zip(codes, q):
            for c in range(C):
                J[np.arange(n), c, start + cd * C + c] = 1.0
            start += qk * C
        self.J = J
        self.prior = np.concatenate([np.zeros(self.pb)] + [np.full(qk * C, a) for qk, a in zip(q, prec)])

    def parts(self, th):
        eta = np.einsum("icd,d->ic", self.J, th)
        m = eta.max(axis=1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(eta - m).sum(axis=1))
        P = np.exp(eta - lse[:, None])
        n = len(self.y)
        f = -np.sum(self.w * (eta[np.arange(n), self.y] - lse)) + 0.5 * np.sum(self.prior * th ** 2)
        R = self.w[:, None] * P
        R[np.arange(n), self.y] -= self.w
        g = np.einsum("ic,icd->d", R, self.J) + self.prior * th
        W = self.w[:, None, None] * (np.einsum("ic,cd->icd", P, np.eye(self.C))
                                     - P[:, :, None] * P[:, None, :])
        H = np.einsum("icd,ice,ieD->dD", self.J, W, self.J) + np.diag(self.prior)
        return f, g, H

    def solve(self):
        th = np.zeros(self.D)
        for _ in range(100):
            f, g, H = self.parts(th)
            step = np.linalg.lstsq(H, g, rcond=None)[0]
            t = 1.0
            while self.parts(th - t * step)[0] > f + 1e-12 * abs(f) and t > 1e-8:
                t /= 2
            th = th - t * step
            if np.max(np.abs(g)) < 1e-11:
                break
        f, g, H = self.parts(th)
        assert np.max(np.abs(g)) < 1e-9
        return th, H

    def unpack(self, th):
        p = self.X.shape[1]
        beta = np.zeros((p, self.C))
        beta[:, 1:] = th[:self.pb].reshape(p, self.C - 1)
        out, start = [], self.pb
        for qk in self.q:
            out.append(th[start:start + qk * self.C].reshape(qk, self.C))
            start += qk * self.C
        return beta, out


def _close(a, b, rtol):
    """Relative agreement on the scale of the reference array."""
    a, b = np.asarray(a), np.asarray(b)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * max(1.0, float(np.max(np.abs(b)))))


# --------------------------------------------------------------------------- kernels

@pytest.fixture(scope="module")
def kernel_inputs():
    rng = np.random.default_rng(11)
    n, p, C, q = 9000, 3, 4, (50, 30)
    X = np.column_stack([np.ones(n), rng.normal(size=(n, p - 1))])
    beta = rng.normal(size=(p, C)) * 0.3
    beta[:, 0] = 0
    gc = _stack([rng.integers(0, q[0], n), rng.integers(0, q[1], n)], q)
    A = rng.normal(size=(sum(q), C)) * 0.5
    y = rng.integers(0, C, n).astype(np.int32)
    w = rng.uniform(0.5, 2, n)
    off = rng.normal(size=(n, C))
    return X, beta, gc, A, y, w, off


@pytest.mark.parametrize("with_offset", [False, True])
def test_level_pass_matches_numpy(kernel_inputs, with_offset):
    X, beta, gc, A, y, w, off = kernel_inputs
    off = off if with_offset else None
    got = km.level_pass(X, beta, gc, A, y, w, off)
    ref = km.level_pass_numpy(X, beta, gc, A, y, w, off)
    for a, b in zip(got, ref):
        _close(a, b, KERNEL_RTOL)


@pytest.mark.parametrize("with_beta", [True, False])
def test_subspace_cross_matches_numpy(kernel_inputs, with_beta):
    X, beta, gc, A, y, w, off = kernel_inputs
    D = np.random.default_rng(1).normal(size=(A.shape[0], 3, A.shape[1]))
    P = km.predict_proba_numpy(X, beta, gc, A, off)
    _close(np.triu(km.subspace_cross(P, X, gc, w, D, with_beta)),
           km.subspace_cross_numpy(P, X, gc, w, D, with_beta), KERNEL_RTOL)


def test_level_pass_stores_probabilities(kernel_inputs):
    X, beta, gc, A, y, w, off = kernel_inputs
    P = np.empty((len(y), A.shape[1]))
    km.level_pass(X, beta, gc, A, y, w, off, P=P)
    _close(P, km.predict_proba_numpy(X, beta, gc, A, off), KERNEL_RTOL)


@pytest.mark.parametrize("intercept_only", [True, False])
def test_assembled_subspace_information_equals_full_jacobian_sum(kernel_inputs, intercept_only):
    """Level-block shortcuts + the row pass give exactly sum_i V_i' W_i V_i."""
    from impactglm.solvers.softmax import N_DIRS, SoftmaxLoop, SoftmaxProblem, as_factors

    X, beta, gc, A, y, w, _ = kernel_inputs
    if intercept_only:
        X, beta = X[:, :1].copy(), beta[:1].copy()
    q = (50, 30)
    codes = [gc[0], gc[1] - q[0]]
    prob = SoftmaxProblem(X, as_factors([(c, qk) for c, qk in zip(codes, q)], len(y)), y, 4, w, None)
    loop = SoftmaxLoop(prob, np.ones(2), np.zeros(2, bool), 1e-6, 10, False, None)
    D = np.random.default_rng(2).normal(size=(sum(q), N_DIRS, 4))
    P = np.empty((len(y), 4))
    _, _, _, Hp = km.level_pass(X, beta, prob.gcodes, A, y, w, P=P)
    loop.P = P
    got = loop.subspace_information(beta, A, D, Hp)
    _close(got, km.subspace_hessian_numpy(X, beta, prob.gcodes, A, w, D), KERNEL_RTOL)


@pytest.mark.parametrize("C", [2, 5])
def test_block_kernels_match_numpy(C):
    rng = np.random.default_rng(C)
    Q = 300
    B = rng.normal(size=(Q, C, C))
    iu, ju = np.triu_indices(C)
    Hp = np.ascontiguousarray((B @ B.transpose(0, 2, 1))[:, iu, ju])
    add = rng.uniform(0.1, 2.0, Q)
    rhs = rng.normal(size=(Q, C))
    for a, b in zip(km.block_solve(Hp, add, rhs), km.block_solve_numpy(Hp, add, rhs)):
        _close(a, b, KERNEL_RTOL)
    _close(km.block_matvec(Hp, rhs), km.block_matvec_numpy(Hp, rhs), KERNEL_RTOL)
    V = rng.normal(size=(Q, 3, C))
    _close(km.block_matvec(Hp, V), km.block_matvec_numpy(Hp, V), KERNEL_RTOL)


@pytest.mark.parametrize("Q", [300, 25000])
def test_block_newton_matches_numpy(Q):
    rng = np.random.default_rng(Q)
    C = 4
    B = rng.normal(size=(Q, C, C))
    iu, ju = np.triu_indices(C)
    Hp = np.ascontiguousarray((B @ B.transpose(0, 2, 1))[:, iu, ju])
    add, G = rng.uniform(0.1, 2.0, Q), rng.normal(size=(Q, C))
    for a, b in zip(km.block_newton(Hp, add, G), km.block_newton_numpy(Hp, add, G)):
        _close(a, b, KERNEL_RTOL)


def test_one_factor_fit_converges_like_newton():
    """With one factor the per-level steps with the intercept coupling are Newton's step."""
    rng = np.random.default_rng(12)
    n, q, C = 20000, 400, 5
    codes = rng.integers(0, q, n).astype(np.int32)
    y = _draw_classes(rng, np.array([0.0, 0.5, 1.0, -0.5, 0.2]) + rng.normal(size=(q, C))[codes] * 0.6)
    out = fit_multinomial(np.ones((n, 1)), [(codes, q)], y, C, None, None, 0.6, tol=1e-8)
    g = out.log["max_grad"].to_numpy()
    assert out.converged and out.n_iter <= 7
    assert g[-1] < 1e-3 * g[-2] ** 1.5   # superlinear tail


def test_coupled_block_step_is_newton_step_with_level_constant_covariate():
    """With one factor, the level step with all of beta eliminated (Schur complement over
    the level blocks) equals the exact Newton step over (beta[:, 1:], effects)."""
    from impactglm.solvers.posterior import dense_hessian
    from impactglm.solvers.softmax import SoftmaxLoop, SoftmaxProblem, as_factors, beta_information

    rng = np.random.default_rng(5)
    n, q, C = 3000, 40, 4
    codes = rng.integers(0, q, n).astype(np.int32)
    z = rng.normal(size=q)[codes]                    # constant within the levels
    X = np.column_stack([np.ones(n), z, rng.normal(size=n)])
    y = _draw_classes(rng, np.outer(z, [0, 0.5, -0.3, 0.2]) + rng.normal(size=(q, C))[codes])
    prob = SoftmaxProblem(X, as_factors([(codes, q)], n), y, C, np.ones(n), None)
    loop = SoftmaxLoop(prob, np.array([2.0]), np.zeros(1, bool), 1e-6, 10, False, None)
    assert loop.coupled
    beta = rng.normal(size=(3, C)) * 0.2
    beta[:, 0] = 0
    A = rng.normal(size=(q, C)) * 0.3
    alpha_l = np.full(q, 2.0)
    ll, gb, G, Hp = loop.pass_a(beta, A)
    Gpen = G - alpha_l[:, None] * A
    loop.Hbb = beta_information(prob, beta, A)
    steps, trinv = loop.coupled_block_steps(beta, A, Hp, alpha_l, Gpen, gb)
    H = dense_hessian(prob, beta, A, alpha_l)
    newton = np.linalg.solve(H, np.concatenate([gb[:, 1:].ravel(), Gpen.ravel()]))
    _close(steps, newton[3 * (C - 1):].reshape(q, C), EXACT_RTOL)
    Hinv = np.linalg.inv(H[3 * (C - 1):, 3 * (C - 1):].reshape(q, C, q, C)[np.arange(q), :, np.arange(q)])
    _close(trinv, np.trace(Hinv, axis1=1, axis2=2), EXACT_RTOL)
    out = fit_multinomial(X, [(codes, q)], y, C, None, None, 0.7, tol=1e-8)
    assert out.converged and out.n_iter <= 8


def test_block_kernels_parallel_equal_serial(monkeypatch):
    rng = np.random.default_rng(3)
    Q, C = 500, 4
    B = rng.normal(size=(Q, C, C))
    iu, ju = np.triu_indices(C)
    Hp = np.ascontiguousarray((B @ B.transpose(0, 2, 1))[:, iu, ju])
    rhs = rng.normal(size=(Q, 2, C))
    serial = km.block_solve(Hp, np.ones(Q), rhs[:, 0]), km.block_matvec(Hp, rhs)
    monkeypatch.setattr(km, "PARALLEL_MIN_LEVELS", 0)
    par = km.block_solve(Hp, np.ones(Q), rhs[:, 0]), km.block_matvec(Hp, rhs)
    np.testing.assert_array_equal(par[0][0], serial[0][0])
    np.testing.assert_array_equal(par[0][1], serial[0][1])
    np.testing.assert_array_equal(par[1], serial[1])


def test_beta_level_cross_and_scoring_match_numpy(kernel_inputs):
    X, beta, gc, A, y, w, off = kernel_inputs
    _close(km.beta_level_cross(X, beta, gc, A, w, off),
           km.beta_level_cross_numpy(X, beta, gc, A, w, off), KERNEL_RTOL)
    gu = gc.copy()
    gu[0, ::7] = -1                               # unseen levels
    _close(km.predict_proba(X, beta, gu, A, off), km.predict_proba_numpy(X, beta, gu, A, off),
           KERNEL_RTOL)
    ll, conf, pred = km.score_pass(X, beta, gu, A, y, w, off)
    ll2, conf2, pred2 = km.score_pass_numpy(X, beta, gu, A, y, w, off)
    _close(ll, ll2, KERNEL_RTOL)
    _close(conf, conf2, KERNEL_RTOL)
    np.testing.assert_array_equal(pred, pred2)


def test_penalised_gradient_matches_finite_differences():
    X, codes, y, w = _problem(seed=4, n=300)
    C, q, prec = 3, (12, 7), (1.3, 2.0)
    rng = np.random.default_rng(5)
    beta = rng.normal(size=(2, C)) * 0.3
    beta[:, 0] = 0
    A = rng.normal(size=(sum(q), C)) * 0.4
    gc = _stack(codes, q)
    alpha_l = np.repeat(prec, q)

    def logpost(beta, A):   # independent of the kernels
        eta = X @ beta + A[gc[0]] + A[gc[1]]
        lse = np.log(np.exp(eta).sum(axis=1))
        return np.sum(w * (eta[np.arange(len(y)), y] - lse)) - 0.5 * np.sum(alpha_l[:, None] * A ** 2)

    ll, gb, G, _ = km.level_pass(X, beta, gc, A, y, w, None, False)
    grad_A = G - alpha_l[:, None] * A
    h = 1e-6
    for (l, c) in [(0, 0), (3, 2), (15, 1), (18, 0)]:
        Ap, Am = A.copy(), A.copy()
        Ap[l, c] += h
        Am[l, c] -= h
        fd = (logpost(beta, Ap) - logpost(beta, Am)) / (2 * h)
        assert fd == pytest.approx(grad_A[l, c], rel=1e-6, abs=1e-6)
    for (b, c) in [(0, 1), (1, 2)]:
        bp, bm = beta.copy(), beta.copy()
        bp[b, c] += h
        bm[b, c] -= h
        fd = (logpost(bp, A) - logpost(bm, A)) / (2 * h)
        assert fd == pytest.approx(gb[b, c], rel=1e-6, abs=1e-6)
    assert ll - 0.5 * np.sum(alpha_l[:, None] * A ** 2) == pytest.approx(logpost(beta, A), rel=1e-12)


# --------------------------------------------------------------------------- exactness

@pytest.mark.parametrize("tau", [(0.8, 0.5), (2.0, 0.3)])
def test_effects_equal_exact_solver(tau):
    X, codes, y, w = _problem(seed=1, tau=tau)
    C, q = 3, (12, 7)
    out = fit_multinomial(X, [(c, qk) for c, qk in zip(codes, q)], y, C, w, None, list(tau),
                          tol=1e-10)
    assert out.converged
    oracle = Oracle(X, codes, q, y, w, C, [1 / t ** 2 for t in tau])
    th, H = oracle.solve()
    beta, effects = oracle.unpack(th)
    _close(out.beta, beta, EXACT_RTOL)
    for e, ref in zip(out.effects, effects):
        _close(e.effect, ref, EXACT_RTOL)
        np.testing.assert_allclose(e.effect.sum(axis=1), 0, atol=1e-8)   # symmetric effects
    cov = np.linalg.inv(H)
    _close(out.cov_beta, cov[:oracle.pb, :oracle.pb], SE_RTOL_R)
    se = np.sqrt(np.diag(cov)[oracle.pb:])
    _close(np.concatenate([e.se.ravel() for e in out.effects]), se, SE_RTOL_R)
    # the objective at the mode
    f_oracle = oracle.parts(th)[0]
    assert out.log["objective"].iloc[-1] == pytest.approx(f_oracle, rel=1e-10)


@pytest.mark.parametrize("intercept_only", [False, True])
def test_one_factor_schur_covariance_is_exact_at_scale_path(intercept_only):
    """With one factor the block (non-dense) covariance paths are exact too."""
    X, codes, y, w = _problem(seed=2, q=(15,), tau=(0.7,))
    if intercept_only:
        X = 2.0 * X[:, :1]          # a constant column other than 1
    C, q = 3, (15,)
    out = fit_multinomial(X, [(codes[0], 15)], y, C, w, None, 0.7, tol=1e-10, exact_cov_limit=0)
    oracle = Oracle(X, codes, q, y, w, C, [1 / 0.7 ** 2])
    th, H = oracle.solve()
    cov = np.linalg.inv(H)
    assert out.extra["cov_method"].startswith("exact (Schur")
    _close(out.cov_beta, cov[:oracle.pb, :oracle.pb], SE_RTOL_R)
    _close(out.effects[0].se.ravel(), np.sqrt(np.diag(cov)[oracle.pb:]), SE_RTOL_R)


def test_no_prior_warns_about_levels_missing_a_class():
    from impactglm.errors import SeparationWarning

    codes = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2], dtype=np.int32)
    y = np.array([0, 1, 2, 0, 1, 2, 0, 0, 1], dtype=np.int32)
    with pytest.warns(SeparationWarning, match="1 of 3 levels"):
        fit_multinomial(np.ones((9, 1)), [(codes, 3)], y, 3, None, None, None, maxiter=3)


def test_no_prior_uses_ridge_and_matches_oracle():
    X, codes, y, w = _problem(seed=3, n=900, q=(6,), tau=(0.6,))
    out = fit_multinomial(X, [(codes[0], 6)], y, 3, w, None, None, tol=1e-9)
    oracle = Oracle(X, codes, (6,), y, w, 3, [1e-5])
    th, _ = oracle.solve()
    beta, (a,) = oracle.unpack(th)
    _close(out.beta, beta, EXACT_RTOL)
    _close(out.effects[0].effect, a, EXACT_RTOL)
    assert out.effects[0].tau is None


def test_auto_prior_recovers_true_sd():
    """Data from the model itself (symmetric class effects, sd 0.7): tau-hat near 0.7."""
    rng = np.random.default_rng(7)
    q, per, C, tau = 300, 60, 3, 0.7
    codes = np.repeat(np.arange(q), per).astype(np.int32)
    a = rng.normal(size=(q, C)) * tau
    eta = np.array([0.0, 0.4, -0.3])[None, :] + a[codes]
    y = _draw_classes(rng, eta)
    out = fit_multinomial(np.ones((len(y), 1)), [(codes, q)], y, C, None, None, "auto")
    est = out.effects[0].tau
    assert out.effects[0].tau_estimated and out.converged
    assert abs(est / tau - 1) < 0.12, est


# --------------------------------------------------------------------------- statsmodels

def test_no_factors_equals_statsmodels_mnlogit():
    sm = pytest.importorskip("statsmodels.api")
    rng = np.random.default_rng(3)
    n = 800
    df = pd.DataFrame({"x1": rng.normal(size=n), "x2": rng.normal(size=n),
                       "k": rng.choice(["a", "b", "c"], n)})
    eta = np.column_stack([np.zeros(n), 0.5 + df.x1, -0.3 + 0.8 * df.x2, 0.2 - df.x1 * 0.5])
    df["y"] = np.array(["lo", "mid", "up", "zz"])[_draw_classes(rng, eta)]
    res = ig.glm("y ~ x1 + x2 + C(k)", df, family="multinomial").fit(tol=1e-10)
    X = res.spec.transform(df).X
    yc = pd.Categorical(df.y, categories=["lo", "mid", "up", "zz"]).codes
    ref = sm.MNLogit(yc, X).fit(method="newton", disp=0, tol=1e-12, maxiter=100)
    assert list(res.params.columns) == ["lo", "mid", "up", "zz"]
    np.testing.assert_array_equal(res.params["lo"].to_numpy(), 0)
    _close(res.params.to_numpy()[:, 1:], np.asarray(ref.params), COEF_RTOL_R)
    _close(res.bse.to_numpy()[:, 1:], np.asarray(ref.bse), SE_RTOL_R)
    assert res.llf == pytest.approx(ref.llf, rel=1e-10)
    assert res.null_deviance == pytest.approx(-2 * ref.llnull, rel=1e-8)   # its llnull is iterative
    assert res.converged


# --------------------------------------------------------------------------- labels, errors

def test_numeric_class_labels_sort_naturally():
    rng = np.random.default_rng(8)
    n = 600
    df = pd.DataFrame({"g": rng.integers(0, 20, n), "y": rng.integers(1, 12, n)})
    res = ig.glm("y ~ ^g", df, family="multinomial").fit()
    assert list(res.classes) == list(range(1, 12))          # 10 after 9
    assert list(res.predict(df.head()).columns) == list(range(1, 12))
    assert set(res.predict(df, which="class")) <= set(range(1, 12))


def test_string_class_labels_and_predicted_class():
    rng = np.random.default_rng(9)
    n = 500
    df = pd.DataFrame({"x": rng.normal(size=n)})
    df["y"] = np.where(df.x > 0.5, "high", np.where(df.x < -0.5, "amber", "cold"))
    flip = rng.random(n) < 0.2
    df.loc[flip, "y"] = rng.choice(["high", "amber", "cold"], flip.sum())
    res = ig.glm("y ~ x", df, family="multinomial").fit()
    assert list(res.classes) == ["amber", "cold", "high"]
    proba = res.predict(df)
    assert np.allclose(proba.sum(axis=1), 1)
    cls = res.predict(df, which="class")
    np.testing.assert_array_equal(cls.to_numpy(), proba.columns.to_numpy()[proba.to_numpy().argmax(1)])
    assert "reference class 'amber'" in str(res.summary())


def test_single_class_outcome_is_a_clear_error():
    df = pd.DataFrame({"g": [1, 2, 3, 1, 2], "y": ["a"] * 5})
    with pytest.raises(ImpactGLMError, match="single class"):
        ig.glm("y ~ ^g", df, family="multinomial").fit()
    with pytest.raises(ModelError, match="single class"):
        fit_multinomial(np.ones((4, 1)), [], np.zeros(4, dtype=np.int32), 3)


def test_bad_arrays_are_clear_errors():
    X = np.ones((5, 1))
    y = np.array([0, 1, 2, 1, 0], dtype=np.int32)
    with pytest.raises(DataError, match="row 2"):
        fit_multinomial(X, [(np.array([0, 1, 5, 1, 0], dtype=np.int32), 3)], y, 3)
    with pytest.raises(DataError, match="outside 0..2"):
        fit_multinomial(X, [], np.array([0, 1, 3, 1, 0]), 3)
    with pytest.raises(ModelError, match="prior_sd"):
        fit_multinomial(X, [(np.array([0, 1, 2, 1, 0], dtype=np.int32), 3)], y, 3, prior_sd=-1.0)


# --------------------------------------------------------------------------- results, metrics

@pytest.fixture(scope="module")
def ratings():
    sim = ig.make_ratings(6000, 150, 80, kind="multinomial", seed=5, covariates=False)
    return sim


def test_fit_is_invariant_to_row_order_and_duplication(ratings):
    d = ratings.data
    res = ig.glm("Rating ~ ^UserID + ^MovieID", d, family="multinomial", prior_sd=0.5).fit(tol=1e-9)
    perm = d.sample(frac=1.0, random_state=1)
    res_p = ig.glm("Rating ~ ^UserID + ^MovieID", perm, family="multinomial",
                   prior_sd=0.5).fit(tol=1e-9)
    _close(res_p.level_effects("UserID").to_numpy(), res.level_effects("UserID").to_numpy(), 1e-7)
    dd = d.copy()
    dd["w"] = 2.0
    res_w = ig.glm("Rating ~ ^UserID + ^MovieID", dd, family="multinomial", weights="w",
                   prior_sd=0.5).fit(tol=1e-9)
    res_dup = ig.glm("Rating ~ ^UserID + ^MovieID", pd.concat([d, d]), family="multinomial",
                     prior_sd=0.5).fit(tol=1e-9)
    _close(res_w.level_effects("MovieID").filter(like="effect").to_numpy(),
           res_dup.level_effects("MovieID").filter(like="effect").to_numpy(), 1e-7)


def test_metrics_match_independent_computation(ratings):
    d = ratings.data
    res = ig.glm("Rating ~ ^UserID + ^MovieID", d, family="multinomial").fit()
    P = res.predict(d).to_numpy()
    k = np.searchsorted(np.asarray(res.classes, dtype=float), d.Rating.to_numpy())
    ll = np.sum(np.log(P[np.arange(len(d)), k]))
    assert res.llf == pytest.approx(ll, rel=1e-10)
    assert res.deviance == pytest.approx(-2 * ll, rel=1e-10)
    assert res.accuracy == pytest.approx(np.mean(P.argmax(1) == k), abs=1e-12)
    conf = pd.crosstab(k, P.argmax(1)).reindex(index=range(10), columns=range(10), fill_value=0)
    np.testing.assert_array_equal(res.confusion_matrix.to_numpy(), conf.to_numpy())
    m = ig.evaluate(res, d.iloc[:1000])
    assert m.logloss == pytest.approx(-np.mean(np.log(P[np.arange(1000), k[:1000]])), rel=1e-10)
    assert m.accuracy == pytest.approx(np.mean(P[:1000].argmax(1) == k[:1000]), abs=1e-12)
    assert m.confusion.to_numpy().sum() == 1000


def test_holdout_metrics_equal_evaluate_on_the_held_out_rows(ratings):
    d = ratings.data
    model = ig.glm("Rating ~ ^UserID + ^MovieID", d, family="multinomial")
    res = fit_multinomial_design(model.design, holdout=0.2, seed=3)
    test = np.random.default_rng(3).random(len(d)) < 0.2
    assert res.nobs == int((~test).sum())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnseenLevelWarning)
        m = ig.evaluate(res, d[test])
    hm = res.holdout_metrics
    assert hm.nobs == int(test.sum())
    assert hm.logloss == pytest.approx(m.logloss, rel=1e-10)
    assert hm.accuracy == pytest.approx(m.accuracy, abs=1e-12)
    assert "Holdout log-loss" in str(res.summary())
    # the ids help: holdout log-loss beats the intercept-only model's
    res0 = fit_multinomial_design(ig.glm("Rating ~ 1", d, family="multinomial").design, holdout=0.2, seed=3)
    assert hm.logloss < res0.holdout_metrics.logloss


def test_unseen_levels_get_zero_effect_and_are_counted(ratings):
    d = ratings.data
    res = ig.glm("Rating ~ ^UserID + ^MovieID", d, family="multinomial", prior_sd=0.5).fit()
    new = d.head(3).copy()
    new["UserID"] = [10 ** 6, d.UserID.iloc[1], 10 ** 6 + 1]
    with pytest.warns(UnseenLevelWarning):
        P = res.predict(new)
    assert res.last_unseen == {"UserID": 2, "MovieID": 0}
    beta = res.params.to_numpy()[0]
    m_eff = res.level_effects("MovieID").filter(like="effect[").to_numpy()
    movie_pos = res.level_effects("MovieID").index.get_indexer([new.MovieID.iloc[0]])[0]
    eta = beta + m_eff[movie_pos]
    expect = np.exp(eta - eta.max()) / np.exp(eta - eta.max()).sum()
    np.testing.assert_allclose(P.iloc[0].to_numpy(), expect, rtol=1e-12)


def test_results_are_immutable_and_report_identifiability(ratings):
    res = ig.glm("Rating ~ ^UserID", ratings.data, family="multinomial").fit()
    with pytest.raises(AttributeError):
        res.llf = 0
    text = str(res.summary())
    assert "reference class 0.5" in text and "symmetric" in text
    le = res.level_effects("^UserID")
    assert list(le.columns[:3]) == ["n", "effect[0.5]", "effect[1.0]"]
    np.testing.assert_allclose(le.filter(like="effect[").sum(axis=1), 0, atol=1e-7)
    assert res.iteration_log["max_grad"].iloc[-1] < 1e-6
    assert set(res.prior_sd) == {"UserID"}


def test_sorted_row_storage_gives_the_same_fit(ratings, monkeypatch):
    """Rows stored sorted by the largest factor (large data) change nothing."""
    from impactglm.solvers import softmax

    d = ratings.data
    design = ig.glm("Rating ~ ^UserID + ^MovieID", d, family="multinomial").design
    args = (design.X, design.factors, design.y, 10, design.weights, None, 0.5)
    ref = fit_multinomial(*args, tol=1e-9)
    monkeypatch.setattr(softmax.SoftmaxProblem, "SORT_MIN_ROWS", 0)
    got = fit_multinomial(*args, tol=1e-9)
    _close(got.beta, ref.beta, 1e-8)
    for e, r in zip(got.effects, ref.effects):
        _close(e.effect, r.effect, 1e-8)
        _close(e.se, r.se, 1e-8)
    assert got.extra["loglik"] == pytest.approx(ref.extra["loglik"], rel=1e-12)
    np.testing.assert_allclose(got.extra["confusion"], ref.extra["confusion"])


def test_save_and_load_round_trip(ratings, tmp_path):
    d = ratings.data
    res = ig.glm("Rating ~ ^UserID + ^MovieID", d, family="multinomial").fit(holdout=0.1, seed=2)
    res.save(tmp_path / "m.json")
    back = ig.load(tmp_path / "m.json")
    assert type(back).__name__ == "MultinomialResults"
    np.testing.assert_array_equal(back.predict(d.head(40)).to_numpy(), res.predict(d.head(40)).to_numpy())
    assert back.prior_sd == res.prior_sd
    assert back.holdout_metrics.logloss == res.holdout_metrics.logloss
    assert str(back.summary()) == str(res.summary())
    pd.testing.assert_frame_equal(back.confusion_matrix, res.confusion_matrix)


def test_two_class_multinomial_equals_binomial_fit():
    """C = 2: the softmax with symmetric effects a[l] = (-b/2, b/2) is the logistic model
    with level effect b = a[l, 1] - a[l, 0]; a prior sd tau on each class effect is a prior
    sd sqrt(2) tau on b, and beta[:, 1] are the logistic coefficients.  Same mode, same
    objective, same cov_beta (the two engines through one template)."""
    from impactglm.solvers.api import fit_high_cardinality

    rng = np.random.default_rng(21)
    n, q = 4000, (120, 35)
    codes = [rng.integers(0, k, n).astype(np.int32) for k in q]
    x = rng.normal(size=n)
    X = np.column_stack([np.ones(n), x])
    eta = -0.3 + 0.5 * x + rng.normal(0, 0.7, q[0])[codes[0]] + rng.normal(0, 0.4, q[1])[codes[1]]
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(np.int32)
    taus = [0.6, 0.35]
    mn = fit_multinomial(X, [(c, k) for c, k in zip(codes, q)], y, 2, None, None, taus, tol=1e-10)
    bi = fit_high_cardinality(X, [(c, k) for c, k in zip(codes, q)], y.astype(float), None, None,
                              "binomial", [np.sqrt(2) * t for t in taus], tol=1e-10)
    assert mn.converged and bi.converged
    _close(mn.beta[:, 1], bi.beta, 1e-7)
    for em, eb in zip(mn.effects, bi.effects):
        _close(em.effect[:, 1] - em.effect[:, 0], eb.effect, 1e-7)
        np.testing.assert_allclose(em.effect.sum(axis=1), 0, atol=1e-9)
    assert -mn.extra["loglik"] + mn.extra["penalty"] == pytest.approx(bi.extra["objective"], rel=1e-12)
    _close(mn.cov_beta, bi.cov_beta, 1e-6)

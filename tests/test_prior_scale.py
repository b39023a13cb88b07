"""prior_sd="auto": empirical-Bayes tau vs lme4 (frozen references) and the LMM fitter."""
from __future__ import annotations

import json

import numpy as np
import pytest

from impactglm.solvers.api import fit_high_cardinality

from conftest import (DATA, LMM_BLUP_ATOL, LMM_FIXEF_RTOL, LMM_SE_RTOL, LMM_THETA_ATOL, read_csv)


def _codes(col):
    levels = sorted(col.unique(), key=lambda v: (len(str(v)), str(v)))
    return col.map({l: i for i, l in enumerate(levels)}).to_numpy().astype(np.int32), levels


@pytest.mark.parametrize("method,case", [("reml", "sleepstudy_ri_reml"), ("ml", "sleepstudy_ri_ml")])
def test_gaussian_auto_equals_lme4_sleepstudy(method, case, lme4_reference):
    ref = lme4_reference[case]
    d = read_csv("sleepstudy.csv")
    codes, levels = _codes(d["Subject"])
    X = np.column_stack([np.ones(len(d)), d["Days"].to_numpy(float)])
    out = fit_high_cardinality(X, [(codes, len(levels))], d["Reaction"].to_numpy(), None, None,
                               "gaussian", "auto", method=method, tol=1e-12)
    sigma = np.sqrt(out.scale)
    e = out.effects[0]
    assert e.tau_estimated
    assert e.tau / sigma == pytest.approx(ref["theta"]["Subject.(Intercept)"], abs=LMM_THETA_ATOL)
    assert sigma == pytest.approx(ref["sigma"], rel=1e-5)
    fe = ref["fixed_effects"]
    np.testing.assert_allclose(out.beta, [fe["(Intercept)"]["estimate"], fe["Days"]["estimate"]],
                               rtol=LMM_FIXEF_RTOL)
    np.testing.assert_allclose(np.sqrt(np.diag(out.cov_beta)), [fe["(Intercept)"]["se"], fe["Days"]["se"]],
                               rtol=LMM_SE_RTOL)
    blups = ref["ranef_first5"]["Subject"]["(Intercept)"]
    for lev, val in blups.items():
        assert e.effect[levels.index(int(lev))] == pytest.approx(val, abs=LMM_BLUP_ATOL)


def test_gaussian_auto_equals_lme4_penicillin(lme4_reference):
    ref = lme4_reference["penicillin_reml"]
    d = read_csv("Penicillin.csv")
    (cp, lp), (cs, ls) = _codes(d["plate"]), _codes(d["sample"])
    out = fit_high_cardinality(None, [(cp, len(lp)), (cs, len(ls))], d["diameter"].to_numpy(), None, None,
                               "gaussian", "auto", tol=1e-12, names=["plate", "sample"])
    sigma = np.sqrt(out.scale)
    assert sigma == pytest.approx(ref["sigma"], rel=1e-5)
    # lme4's default stopping rule leaves Penicillin's theta 1.1e-4 short of the optimum; the
    # tier is checked against lme4's tight refit (tests/data/lme4_lmm_extra.json, LMM owner's data)
    tight = json.loads((DATA / "lme4_lmm_extra.json").read_text())["tight"]["penicillin_reml"]["theta"]
    assert out.effects[0].tau / sigma == pytest.approx(tight["plate.(Intercept)"], abs=LMM_THETA_ATOL)
    assert out.effects[1].tau / sigma == pytest.approx(tight["sample.(Intercept)"], abs=LMM_THETA_ATOL)
    assert out.effects[1].tau / sigma == pytest.approx(ref["theta"]["sample.(Intercept)"], abs=2e-4)
    fe = ref["fixed_effects"]["(Intercept)"]
    assert out.beta[0] == pytest.approx(fe["estimate"], rel=LMM_FIXEF_RTOL)
    assert np.sqrt(out.cov_beta[0, 0]) == pytest.approx(fe["se"], rel=LMM_SE_RTOL)


def test_gaussian_fixed_tau_equals_lmm_blups():
    """tau and sigma fixed: the mode equals the LMM fitter's BLUPs and beta at those components."""
    from impactglm.mixed.core import LMMProblem
    rng = np.random.default_rng(0)
    n, q1, q2 = 800, 60, 12
    c1, c2 = rng.integers(0, q1, n).astype(np.int32), rng.integers(0, q2, n).astype(np.int32)
    X = np.column_stack([np.ones(n), rng.normal(size=n)])
    y = 1 + X[:, 1] + rng.normal(0, 0.7, q1)[c1] + rng.normal(0, 0.4, q2)[c2] + rng.normal(size=n)
    sigma, taus = 1.1, [0.7, 0.4]
    out = fit_high_cardinality(X, [(c1, q1), (c2, q2)], y, None, None, "gaussian", taus,
                               scale=sigma ** 2, tol=1e-13)
    prob = LMMProblem(X, y, [(c1, q1), (c2, q2)])
    f = prob.factor(np.array(taus) / sigma)
    beta, u, _ = prob.solve(f)
    np.testing.assert_allclose(out.beta, beta, rtol=1e-8)
    for e, uk, Tk in zip(out.effects, u, f.T):
        np.testing.assert_allclose(e.effect, (uk @ Tk.T).ravel(), rtol=1e-8, atol=1e-10)


def test_binomial_auto_matches_glmer_nagq0_cbpp(lme4_reference):
    ref = lme4_reference["cbpp_nagq0"]
    d = read_csv("cbpp.csv")
    codes, levels = _codes(d["herd"])
    per = d["period"].astype(str).to_numpy()
    X = np.column_stack([np.ones(len(d))] + [(per == p).astype(float) for p in ("2", "3", "4")])
    y = (d["incidence"] / d["size"]).to_numpy()
    out = fit_high_cardinality(X, [(codes, len(levels))], y, d["size"].to_numpy(float), None, "binomial",
                               "auto", tol=1e-10)
    assert out.effects[0].tau == pytest.approx(ref["theta"], rel=0.01)
    assert out.effects[0].tau == pytest.approx(ref["theta"], rel=1e-3)     # in fact much closer
    fe = [v["estimate"] for v in ref["fixed_effects"].values()]
    np.testing.assert_allclose(out.beta, fe, rtol=1e-4)
    blups = [ref["blups"][str(l)] for l in levels]
    np.testing.assert_allclose(out.effects[0].effect, blups, atol=1e-4)


def test_laplace_criterion_by_hand_single_factor():
    """c(tau) = deviance + ||a||^2/tau^2 + sum_l log(1 + tau^2 W_l) at the mode."""
    from impactglm.solvers import prior_scale
    from impactglm.families import get_family
    from impactglm.solvers.scalar import solve_mode
    from impactglm.solvers.problem import LevelProblem
    rng = np.random.default_rng(1)
    n, q = 500, 30
    c = rng.integers(0, q, n).astype(np.int32)
    y = rng.poisson(np.exp(0.3 + rng.normal(0, 0.5, q)[c])).astype(float)
    fam = get_family("poisson")
    prob = LevelProblem(None, [(c, q)], y, None, None, fam)
    tau = 0.45
    lam_l = prob.expand([1 / tau ** 2])
    st = solve_mode(prob, [tau], lam_l, 1.0, tol=1e-12, maxiter=100)
    mu = np.exp(st.beta[0] + st.a[c])
    W = np.bincount(c, mu, q)
    dev = fam.deviance(y, mu)
    want = dev + np.sum(st.a ** 2) / tau ** 2 + np.sum(np.log1p(tau ** 2 * W))
    assert prior_scale.laplace_criterion(prob, st, lam_l) == pytest.approx(want, rel=1e-10)


def test_crossed_log_det_exact_vs_dense():
    """log det D for two crossed factors (Schur elimination) equals a dense log-determinant."""
    from impactglm.solvers import prior_scale
    from impactglm.families import get_family
    from impactglm.solvers.problem import LevelProblem, State
    rng = np.random.default_rng(2)
    n, q1, q2 = 700, 50, 9
    c1, c2 = rng.integers(0, q1, n).astype(np.int32), rng.integers(0, q2, n).astype(np.int32)
    y = (rng.random(n) < 0.4).astype(float)
    prob = LevelProblem(None, [(c1, q1), (c2, q2)], y, None, None, get_family("binomial"))
    st = State(beta=np.array([-0.3]), a=rng.normal(0, 0.3, q1 + q2))
    lam_l = prob.expand([1 / 0.5 ** 2, 1 / 0.8 ** 2])
    prob.evaluate(st, lam_l, 1.0)
    ld, exact = prior_scale.log_det_levels(prob, st.W, lam_l)
    Z = np.zeros((n, q1 + q2))
    Z[np.arange(n), c1] = 1
    Z[np.arange(n), q1 + c2] = 1
    D = Z.T @ (Z * prob.w[:, None]) + np.diag(lam_l)
    assert exact and ld == pytest.approx(np.linalg.slogdet(D)[1], rel=1e-12)


# ----------------------------------------------------------------------------- issue 11 part 3:
# the exact gradient of glmer's Laplace criteria, the optimum, the SLQ path, nAGQ = 1

def _crossed_problem(family="poisson", n=600, q=(40, 9), seed=3, with_x=True, signal=(0.5, 0.4)):
    from impactglm.families import get_family
    from impactglm.solvers.problem import LevelProblem
    rng = np.random.default_rng(seed)
    codes = [rng.integers(0, qk, n).astype(np.int32) for qk in q]
    x = rng.normal(size=n)
    eta = -0.3 + (0.4 * x if with_x else 0.0)
    for c, qk, s in zip(codes, q, signal):
        eta = eta + rng.normal(0, s, qk)[c]
    if family == "poisson":
        y = rng.poisson(np.exp(eta)).astype(float)
    else:
        y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    X = np.column_stack([np.ones(n), x]) if with_x else None
    return LevelProblem(X, [(c, qk) for c, qk in zip(codes, q)], y, None, None, get_family(family),
                        names=[f"g{k}" for k in range(len(q))])


def _tight_mode(prob, taus, start=None):
    from impactglm.solvers.scalar import solve_mode
    from impactglm.solvers import laplace
    lam = 1.0 / np.asarray(taus) ** 2
    lam_l = prob.expand(lam)
    st = solve_mode(prob, list(taus), lam_l, 1.0, tol=1e-10, maxiter=1000, start=start)

    def evaluate(beta, a):
        from impactglm.solvers.problem import State
        return solve_mode(prob, list(taus), lam_l, 1.0, tol=1e-10, maxiter=0, start=State(beta=beta, a=a))
    out = laplace.newton_polish(prob, st, lam, evaluate)
    return out[0] if out is not None else st


def _c0(prob, taus):
    from impactglm.solvers import laplace
    st = _tight_mode(prob, taus)
    return laplace.nagq0_value_grad(prob, st, 1.0 / np.asarray(taus) ** 2, gradient=False)[0]


@pytest.mark.parametrize("family,q,with_x", [("poisson", (40, 9), True), ("binomial", (50, 12, 6), True),
                                             ("binomial", (30,), False), ("poisson", (25,), True)])
def test_nagq0_gradient_equals_finite_differences(family, q, with_x):
    """dc0/dlog tau (implicit mode, W through the mode, third-derivative term) vs central
    differences of c0 with the mode re-solved to machine precision at every point."""
    from impactglm.solvers import laplace
    prob = _crossed_problem(family, q=q, with_x=with_x, signal=(0.6, 0.4, 0.3)[:len(q)])
    taus = np.array([0.7, 0.35, 0.5])[:len(q)]
    st = _tight_mode(prob, taus)
    _, grad, blk = laplace.nagq0_value_grad(prob, st, 1.0 / taus ** 2)
    assert blk.exact
    h = 1e-4
    fd = []
    for k in range(len(q)):
        e = np.zeros(len(q))
        e[k] = h
        fd.append((_c0(prob, taus * np.exp(e)) - _c0(prob, taus * np.exp(-e))) / (2 * h))
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-6)


def test_nagq0_gradient_needs_the_third_derivative_term():
    """Without the w' term (W held at the mode) the gradient is measurably wrong: the test above
    can fail."""
    from impactglm.solvers import laplace
    prob = _crossed_problem("poisson")
    taus = np.array([0.7, 0.35])
    st = _tight_mode(prob, taus)
    _, grad, blk = laplace.nagq0_value_grad(prob, st, 1.0 / taus ** 2)
    lam = 1.0 / taus ** 2
    dinv, _ = blk.diag_and_rows()
    frozen = np.array([-2 * lam[k] * (np.sum(st.a[s] ** 2) + np.sum(dinv[s]) - prob.q[k] / lam[k])
                       for k, s in enumerate(slice(prob.starts[k], prob.starts[k + 1]) for k in range(2))])
    assert np.max(np.abs(frozen - grad)) > 1e-3 * np.max(np.abs(grad))


def test_row_quad_kernel_equals_numpy_twin():
    from conftest import KERNEL_RTOL
    from impactglm.solvers import laplace
    import scipy.sparse as sp
    rng = np.random.default_rng(5)
    q1, s, n, Km = 30, 12, 200, 2
    U = sp.random(q1, s, density=0.3, random_state=5, format="csr")
    U.sort_indices()
    A = rng.normal(size=(s, s))
    M = np.ascontiguousarray(A @ A.T)
    base = rng.random(q1)
    l1 = rng.integers(0, q1, n)
    posR = np.ascontiguousarray(rng.integers(0, s, (n, Km)))
    out = np.empty(n)
    laplace.row_quad(l1, posR, U.indptr, U.indices, U.data, M, base, out)
    np.testing.assert_allclose(out, laplace.row_quad_numpy(l1, posR, U, M, base), rtol=KERNEL_RTOL)
    lq = np.empty(q1)
    laplace.level_quad(U.indptr, U.indices, U.data, M, lq)
    np.testing.assert_allclose(lq, np.einsum("ij,jk,ik->i", U.toarray(), M, U.toarray()), rtol=KERNEL_RTOL)


def test_exact_level_block_equals_dense_inverse():
    """log det D, diag D^-1, z_i' D^-1 z_i and D^-1 r of the Schur path vs dense numpy (3 factors)."""
    from impactglm.solvers import laplace
    prob = _crossed_problem("binomial", q=(50, 12, 6), signal=(0.6, 0.4, 0.3))
    taus = np.array([0.7, 0.35, 0.5])
    st = _tight_mode(prob, taus)
    lam_l = prob.expand(1 / taus ** 2)
    blk = laplace.ExactLevelBlock(prob, lam_l, st.W)
    Z = np.zeros((prob.n, prob.Q))
    for k in range(prob.K):
        Z[np.arange(prob.n), prob.gidx[:, k]] = 1
    D = Z.T @ (Z * prob.w[:, None]) + np.diag(lam_l)
    Dinv = np.linalg.inv(D)
    assert blk.logdet() == pytest.approx(np.linalg.slogdet(D)[1], rel=1e-12)
    dinv, v = blk.diag_and_rows()
    np.testing.assert_allclose(dinv, np.diag(Dinv), rtol=1e-10)
    np.testing.assert_allclose(v, np.einsum("ij,jk,ik->i", Z, Dinv, Z), rtol=1e-10)
    r = np.random.default_rng(0).normal(size=prob.Q)
    np.testing.assert_allclose(blk.solve(r), Dinv @ r, rtol=1e-9, atol=1e-12)


def test_slq_agrees_with_exact_path(monkeypatch):
    """Stochastic Lanczos quadrature vs the exact Schur path on a problem where both run:
    log det within 0.1%, the gradient's traces and the estimated prior sds within the stated
    slq.SLQ_PRIOR_SD_RTOL."""
    from impactglm.solvers import laplace, slq
    from impactglm.solvers.prior_scale import estimate_tau
    prob = _crossed_problem("binomial", n=6000, q=(300, 120), signal=(0.8, 0.5), seed=11)
    taus = np.array([0.8, 0.5])
    st = _tight_mode(prob, taus)
    lam_l = prob.expand(1 / taus ** 2)
    ex = laplace.ExactLevelBlock(prob, lam_l, st.W)
    sq = slq.StochasticLevelBlock(prob, lam_l, st.W, slq.Probes(prob))
    assert sq.logdet() == pytest.approx(ex.logdet(), rel=1e-3)
    assert abs(sq.logdet() - ex.logdet()) <= 4 * sq.trlog_se + 1e-8
    exact = estimate_tau(prob)
    monkeypatch.setattr(laplace, "EXACT_LEVEL_LIMIT", 0)
    stoch = estimate_tau(prob)
    assert exact.exact and not stoch.exact
    np.testing.assert_allclose(stoch.taus, exact.taus, rtol=slq.SLQ_PRIOR_SD_RTOL)


def test_reported_tau_is_the_optimum_by_finite_differences():
    """At the reported prior sds the finite-difference gradient of c0 (mode re-solved) is ~0:
    the Newton step it implies is below 1e-5 in log tau."""
    import glmer_cases
    r = glmer_cases.fit("grouseticks")
    from impactglm.solvers.prior_scale import estimate_tau
    d = glmer_cases.load("grouseticks")
    prob = _grouseticks_problem(d)
    est = estimate_tau(prob)
    np.testing.assert_allclose(est.taus, [r.prior_sd[g] for g in prob.names], rtol=1e-10)
    taus = np.array(est.taus)
    h = 1e-3
    K = len(taus)
    c = lambda t: _c0(prob, t)
    g = np.empty(K)
    H = np.empty((K, K))
    for j in range(K):
        ej = np.zeros(K); ej[j] = h
        g[j] = (c(taus * np.exp(ej)) - c(taus * np.exp(-ej))) / (2 * h)
        for k in range(K):
            ek = np.zeros(K); ek[k] = h
            H[j, k] = (c(taus * np.exp(ej + ek)) - c(taus * np.exp(ej - ek)) - c(taus * np.exp(ek - ej))
                       + c(taus * np.exp(-ej - ek))) / (4 * h * h)
    assert np.all(np.linalg.eigvalsh(H) > 0)
    assert np.max(np.abs(np.linalg.solve(H, g))) < 1e-5
    np.testing.assert_allclose(est.gradient, g, atol=1e-4)


def _grouseticks_problem(d):
    from impactglm.families import get_family
    from impactglm.solvers.problem import LevelProblem
    yr = d["YEAR"].to_numpy()
    X = np.column_stack([np.ones(len(d)), yr == 96, yr == 97, d["cHEIGHT"].to_numpy(float)]).astype(float)
    facs = []
    for g in ("BROOD", "INDEX", "LOCATION"):
        codes, levels = _codes(d[g])
        facs.append((codes, len(levels)))
    return LevelProblem(X, facs, d["TICKS"].to_numpy(float), None, None, get_family("poisson"),
                        names=["BROOD", "INDEX", "LOCATION"])


def test_nagq1_gradient_equals_finite_differences():
    """dc1/d(log tau, beta) at the mode over the levels alone (beta fixed) vs central differences."""
    from impactglm.families import get_family
    from impactglm.solvers import laplace
    from impactglm.solvers.problem import LevelProblem
    full = _crossed_problem("binomial", q=(40, 9), signal=(0.6, 0.4))
    X = full.X
    codes = full.factor_codes()

    def c1(taus, beta, gradient=False):
        sub = LevelProblem(np.zeros((full.n, 0)), codes, full.y, None, X @ beta, get_family("binomial"))
        st = _tight_mode(sub, taus)
        out = laplace.nagq1_value_grad(sub, st, 1.0 / np.asarray(taus) ** 2, X)
        return out if gradient else out[0]

    taus, beta = np.array([0.7, 0.4]), np.array([-0.2, 0.3])
    _, gt, gb = c1(taus, beta, gradient=True)
    h = 1e-5
    fd_t = [(c1(taus * np.exp(h * e), beta) - c1(taus * np.exp(-h * e), beta)) / (2 * h) for e in np.eye(2)]
    fd_b = [(c1(taus, beta + h * e) - c1(taus, beta - h * e)) / (2 * h) for e in np.eye(2)]
    np.testing.assert_allclose(gt, fd_t, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gb, fd_b, rtol=1e-5, atol=1e-6)


def test_singular_fit_reports_the_boundary_gradient():
    """A factor without signal: its prior sd ends at the lower bound with a positive one-sided
    gradient (c increases away from tau = 0) and a SingularFitWarning, as glmer's singular fit."""
    from impactglm.errors import SingularFitWarning
    from impactglm.solvers import prior_scale
    prob = _crossed_problem("binomial", n=3000, q=(60, 15), signal=(0.8, 0.0), seed=2)
    with pytest.warns(SingularFitWarning, match="g1"):
        est = prior_scale.estimate_tau(prob)
    assert est.taus[1] == pytest.approx(prior_scale.TAU_MIN)
    assert est.boundary["g1"] > 0
    assert est.taus[0] > 0.3

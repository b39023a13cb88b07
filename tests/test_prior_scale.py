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

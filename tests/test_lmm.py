"""Tests of the linear mixed model fitter (impactglm.mixed: model, core, results; kernels/lmm).

References: lme4 1.1-31 (tests/data/lme4.json from make_lme4.R; tests/data/lme4_lmm_extra.json
from make_lme4_lmm_extra.R: tight-tolerance refits, conditional SDs, weighted fits),
statsmodels MixedLM, and direct dense computations (log det V, GLS) on small problems.
"""
from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import linalg

import impactglm as ig
from impactglm.errors import (DataError, ImpactGLMError, ImpactGLMWarning, ModelError,
                              SingularFitWarning, UnseenLevelWarning)
from impactglm.kernels.lmm import (level_dot, level_dot_numpy, level_quadratic,
                                   level_quadratic_numpy, schur_downdate, schur_downdate_numpy)
from impactglm.mixed.core import LMMProblem, fit_lmm_arrays, profiled_criterion, theta_to_T

from conftest import (DATA, KERNEL_RTOL, LMM_BLUP_ATOL, LMM_DEVIANCE_ATOL, LMM_FIXEF_RTOL,
                      LMM_SE_RTOL, LMM_THETA_ATOL, OBJECTIVE_RTOL, read_csv)

CASES = {
    "sleepstudy_ri_reml": ("sleepstudy.csv", "Reaction ~ Days + (1 | Subject)", True),
    "sleepstudy_ri_ml": ("sleepstudy.csv", "Reaction ~ Days + (1 | Subject)", False),
    "sleepstudy_rs_reml": ("sleepstudy.csv", "Reaction ~ Days + (Days | Subject)", True),
    "dyestuff_reml": ("Dyestuff.csv", "Yield ~ 1 + (1 | Batch)", True),
    "penicillin_reml": ("Penicillin.csv", "diameter ~ 1 + (1 | plate) + (1 | sample)", True),
}


def _name(term: str) -> str:
    """lme4's '(Intercept)' is Patsy's 'Intercept' among the fixed effects."""
    return "Intercept" if term == "(Intercept)" else term


@pytest.fixture(scope="module")
def extra() -> dict:
    return json.loads((DATA / "lme4_lmm_extra.json").read_text())


@pytest.fixture(scope="module")
def fits() -> dict:
    out = {}
    for case, (csv, formula, reml) in CASES.items():
        out[case] = ig.lmm(formula, read_csv(csv)).fit(reml=reml)
    return out


# --------------------------------------------------------------------------- lme4


@pytest.mark.parametrize("case", list(CASES))
def test_estimates_match_lme4(case, fits, lme4_reference, extra):
    ref, res = lme4_reference[case], fits[case]
    # theta against lme4's tight refit (lme4's default stopping rule leaves Penicillin's
    # theta 1.1e-4 short of the optimum; our criterion there is 8.5e-9 above ours)
    tight = extra["tight"][case]["theta"]
    assert list(res.theta.index) == list(ref["theta"])
    np.testing.assert_allclose(res.theta.to_numpy(), list(tight.values()), rtol=0,
                               atol=LMM_THETA_ATOL)
    for term, fe in ref["fixed_effects"].items():
        assert res.params[_name(term)] == pytest.approx(fe["estimate"], rel=LMM_FIXEF_RTOL)
        assert res.bse[_name(term)] == pytest.approx(fe["se"], rel=LMM_SE_RTOL)
        assert res.tvalues[_name(term)] == pytest.approx(fe["t"], rel=LMM_SE_RTOL)
    if ref["method"] == "REML":
        assert res.reml_criterion == pytest.approx(ref["REMLcrit"], abs=LMM_DEVIANCE_ATOL)
        assert res.deviance == pytest.approx(ref["deviance_ML_at_REML_estimates"],
                                             abs=LMM_DEVIANCE_ATOL)
    else:
        assert res.reml_criterion is None
        assert res.deviance == pytest.approx(ref["deviance"], abs=LMM_DEVIANCE_ATOL)
    assert res.llf == pytest.approx(ref["logLik"], abs=LMM_DEVIANCE_ATOL)
    assert res.aic == pytest.approx(ref["AIC"], abs=LMM_DEVIANCE_ATOL)
    assert res.bic == pytest.approx(ref["BIC"], abs=LMM_DEVIANCE_ATOL)
    assert res.sigma == pytest.approx(ref["sigma"], rel=LMM_SE_RTOL)
    assert res.nobs == ref["nobs"]


@pytest.mark.parametrize("case", list(CASES))
def test_variance_components_match_lme4(case, fits, lme4_reference):
    ref, res = lme4_reference[case], fits[case]
    vc = res.vcomp
    for comp in ref["variance_components"]:
        row = vc[(vc.group == comp["group"]) & (vc.term == comp["term"])].iloc[0]
        assert row.sd == pytest.approx(comp["sd"], rel=LMM_SE_RTOL)
        assert row.variance == pytest.approx(comp["variance"], rel=2 * LMM_SE_RTOL)
    resid = vc[vc.group == "Residual"].iloc[0]
    assert resid.variance == pytest.approx(ref["residual"]["variance"], rel=2 * LMM_SE_RTOL)
    corr = res.correlations
    assert len(corr) == len(ref["correlations"])
    for c in ref["correlations"]:
        row = corr[(corr.term1 == c["term1"]) & (corr.term2 == c["term2"])].iloc[0]
        assert row.correlation == pytest.approx(c["correlation"], abs=LMM_THETA_ATOL * 10)


@pytest.mark.parametrize("case", list(CASES))
def test_blups_match_lme4(case, fits, lme4_reference, extra):
    """Conditional modes against lme4's tight refit (its default fit of the random-slopes
    model stops 1e-5 short in theta, which moves the BLUPs by 1.5e-4); the levels are
    lme4.json's ranef_first5."""
    ref, res = lme4_reference[case], fits[case]
    tight = extra["tight"][case]["condvar"]
    for group, terms in ref["ranef_first5"].items():
        re = res.ranef(group, condsd=False)
        for term, by_level in terms.items():
            assert list(by_level) == tight[group][term]["level"]
            for level, value in zip(by_level, tight[group][term]["blup"]):
                key = type(re.index[0])(level) if not isinstance(re.index[0], str) else level
                assert re.loc[key, term] == pytest.approx(value, abs=LMM_BLUP_ATOL)
                assert re.loc[key, term] == pytest.approx(by_level[level], abs=1e-3)


@pytest.mark.parametrize("case", ["sleepstudy_ri_reml", "sleepstudy_rs_reml", "penicillin_reml"])
def test_conditional_sds_match_lme4(case, fits, extra):
    res = fits[case]
    for group, terms in extra["tight"][case]["condvar"].items():
        re = res.ranef(group)
        levels = [type(re.index[0])(lv) if not isinstance(re.index[0], str) else lv
                  for lv in terms[next(iter(terms))]["level"]]
        for term, ref in terms.items():
            np.testing.assert_allclose(re.loc[levels, f"condsd({term})"], ref["condsd"],
                                       rtol=LMM_SE_RTOL)


def test_dyestuff_ml_refit_deviance(extra):
    """ML fits against lme4's refitML deviance."""
    for case, (csv, formula, _) in CASES.items():
        res = ig.lmm(formula, read_csv(csv)).fit(reml=False)
        assert res.deviance == pytest.approx(extra["tight"][case]["deviance_ML"],
                                             abs=LMM_DEVIANCE_ATOL)


@pytest.mark.parametrize("case,formula,reml", [
    ("sleepstudy_w_reml", "Reaction ~ Days + (Days | Subject)", True),
    ("sleepstudy_w_ml", "Reaction ~ Days + (1 | Subject)", False)])
def test_weighted_fit_matches_lme4(case, formula, reml, extra):
    ss = read_csv("sleepstudy.csv")
    ref = extra["weighted"][case]
    res = ig.lmm(formula, ss, weights=1.0 + ss.Days.to_numpy() % 3).fit(reml=reml)
    np.testing.assert_allclose(res.theta.to_numpy(), list(ref["theta"].values()), atol=LMM_THETA_ATOL)
    for term, value in ref["fixed_effects"].items():
        assert res.params[_name(term)] == pytest.approx(value, rel=LMM_FIXEF_RTOL)
        assert res.bse[_name(term)] == pytest.approx(ref["se"][term], rel=LMM_SE_RTOL)
    assert res.criterion == pytest.approx(ref["criterion"], abs=LMM_DEVIANCE_ATOL)
    assert res.sigma == pytest.approx(ref["sigma"], rel=LMM_SE_RTOL)


TOY = {"crossed_slopes": ("y ~ x + (1 | b) + (x | a)", True),
       "three_slopes": ("y ~ x + (x + x2 | a)", True),
       "uncorrelated": ("y ~ x + (x || a)", True),
       "nested": ("y ~ x + (1 | a/b)", True),
       "nested_ml": ("y ~ x + (1 | a/b)", False)}


@pytest.mark.parametrize("case", list(TOY))
def test_formula_forms_match_lme4(case, extra):
    """Crossed + correlated slopes, three correlated terms (singular), (x || a), nested
    a/b (REML and ML) against lme4 on tests/data/lmm_toy.csv."""
    formula, reml = TOY[case]
    ref = extra["toy"][case]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularFitWarning)
        res = ig.lmm(formula, read_csv("lmm_toy.csv")).fit(reml=reml)
    # lme4 names the nested factor b:a (levels "b:a" too), and so do we
    np.testing.assert_allclose(res.theta.to_numpy(), list(ref["theta"].values()),
                               atol=LMM_THETA_ATOL)
    assert res.criterion == pytest.approx(ref["criterion"], abs=LMM_DEVIANCE_ATOL)
    for term, value in ref["fixed_effects"].items():
        assert res.params[_name(term)] == pytest.approx(value, rel=1e-5)
        assert res.bse[_name(term)] == pytest.approx(ref["se"][term], rel=LMM_SE_RTOL)
    assert res.sigma == pytest.approx(ref["sigma"], rel=LMM_SE_RTOL)
    for group, terms in (ref["condvar"] or {}).items():
        if not terms:
            continue
        re = res.ranef(group)
        for term, r in terms.items():
            levels = r["level"]
            by_str = {str(v): v for v in re.index}
            levels = [by_str[v] for v in levels]
            np.testing.assert_allclose(re.loc[levels, term], r["blup"], atol=LMM_BLUP_ATOL)
            np.testing.assert_allclose(re.loc[levels, f"condsd({term})"], r["condsd"],
                                       rtol=LMM_SE_RTOL)


# --------------------------------------------------------------------------- statsmodels


@pytest.mark.parametrize("re_formula,reml", [("1", True), ("1", False), ("~Days", True),
                                             ("~Days", False)])
def test_single_factor_matches_statsmodels(re_formula, reml):
    sm = pytest.importorskip("statsmodels.formula.api")
    ss = read_csv("sleepstudy.csv")
    rhs = "Days" if re_formula == "~Days" else "1"
    res = ig.lmm(f"Reaction ~ Days + ({rhs} | Subject)", ss).fit(reml=reml)
    kw = {"re_formula": re_formula} if re_formula != "1" else {}
    model = sm.mixedlm("Reaction ~ Days", ss, groups=ss["Subject"], **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        smr = model.fit(reml=reml, method=["lbfgs"], gtol=1e-10)
    # statsmodels' log-likelihood at our estimates equals ours, and is no better at its own
    from statsmodels.regression.mixed_linear_model import MixedLMParams
    cov_re = res.fit.re_cov[0] / res.scale
    p = MixedLMParams.from_components(fe_params=res.params.to_numpy(), cov_re=cov_re)
    sm_llf_at_ours = model.loglike(p, profile_fe=False)
    assert sm_llf_at_ours == pytest.approx(res.llf, rel=OBJECTIVE_RTOL)
    assert smr.llf <= res.llf + 1e-7
    np.testing.assert_allclose(smr.fe_params.to_numpy(), res.params.to_numpy(), rtol=1e-5)
    np.testing.assert_allclose(smr.bse_fe.to_numpy(), res.bse.to_numpy(), rtol=1e-3)
    assert math.sqrt(smr.scale) == pytest.approx(res.sigma, rel=1e-4)


# --------------------------------------------------------------------------- dense oracle


def _dense_criterion(theta, X, y, blocks, w, reml):
    """-2 log-likelihood from V0 = Z Lambda Lambda' Z' + W^-1 directly (GLS, log det V)."""
    n = y.size
    Zs, Ls = [], []
    pos = 0
    for codes, q, Z in blocks:
        r = Z.shape[1]
        k = r * (r + 1) // 2
        T = theta_to_T(theta[pos:pos + k], r)
        pos += k
        Zfull = np.zeros((n, q * r))
        for j in range(r):
            Zfull[np.arange(n), codes * r + j] = Z[:, j]
        Zs.append(Zfull)
        Ls.append(np.kron(np.eye(q), T))
    Z = np.hstack(Zs)
    Lam = linalg.block_diag(*Ls)
    V0 = Z @ Lam @ Lam.T @ Z.T + np.diag(1.0 / w)
    Vinv = np.linalg.inv(V0)
    XtVX = X.T @ Vinv @ X
    beta = np.linalg.solve(XtVX, X.T @ Vinv @ y)
    r = y - X @ beta
    rss = r @ Vinv @ r
    ldV = np.linalg.slogdet(V0)[1]
    p = X.shape[1]
    if reml:
        return ldV + np.linalg.slogdet(XtVX)[1] + (n - p) * (1 + math.log(2 * math.pi * rss / (n - p)))
    return ldV + n * (1 + math.log(2 * math.pi * rss / n))


def _random_problem(seed, structure):
    rng = np.random.default_rng(seed)
    n = 120
    X = np.column_stack([np.ones(n), rng.normal(size=n), rng.uniform(size=n)])
    x = rng.normal(size=n)
    w = rng.uniform(0.5, 2.0, size=n)
    y = X @ [1.0, 0.5, -0.3] + rng.normal(size=n)
    g1, g2, g3 = rng.integers(0, 15, n), rng.integers(0, 7, n), rng.integers(0, 4, n)
    one = np.ones((n, 1))
    slope = np.column_stack([np.ones(n), x])
    if structure == "crossed":
        blocks = [(g1, 15, one), (g2, 7, one)]
        theta = np.array([0.7, 1.3])
    elif structure == "three_crossed":
        blocks = [(g1, 15, one), (g2, 7, one), (g3, 4, one)]
        theta = np.array([0.7, 1.3, 0.4])
    elif structure == "slopes":
        blocks = [(g1, 15, slope)]
        theta = np.array([0.9, -0.4, 0.6])
    elif structure == "slopes_crossed":
        blocks = [(g1, 15, slope), (g2, 7, one)]
        theta = np.array([0.9, -0.4, 0.6, 1.1])
    elif structure == "crossed_slopes_second":   # slopes in a block that is not eliminated first
        blocks = [(g1, 15, one), (g2, 7, slope)]
        theta = np.array([0.8, 0.9, 0.3, 0.5])
    else:
        raise ValueError(structure)
    y = y + sum(Z @ np.ones(Z.shape[1]) * rng.normal(size=q)[c] for c, q, Z in blocks)
    return X, y, blocks, w, theta


@pytest.mark.parametrize("structure", ["crossed", "three_crossed", "slopes", "slopes_crossed",
                                       "crossed_slopes_second"])
@pytest.mark.parametrize("reml", [True, False])
def test_criterion_matches_dense_computation(structure, reml):
    for seed in range(3):
        X, y, blocks, w, theta = _random_problem(seed, structure)
        ours = profiled_criterion(theta, X, y, blocks, w, reml)
        dense = _dense_criterion(theta, X, y, blocks, w, reml)
        assert ours == pytest.approx(dense, rel=OBJECTIVE_RTOL)


def test_criterion_at_boundary_theta_matches_dense():
    X, y, blocks, w, theta = _random_problem(5, "slopes_crossed")
    theta = np.array([0.9, 0.2, 0.0, 0.0])
    assert profiled_criterion(theta, X, y, blocks, w) == pytest.approx(
        _dense_criterion(theta, X, y, blocks, w, True), rel=OBJECTIVE_RTOL)


@pytest.mark.parametrize("structure", ["crossed", "slopes_crossed", "crossed_slopes_second"])
def test_solution_matches_dense_gls_and_blups(structure):
    """beta (GLS), BLUPs Lambda Lambda' Z' V0^-1 r, and conditional SDs at the optimum."""
    X, y, blocks, w, _ = _random_problem(11, structure)
    fit = fit_lmm_arrays(X, y, blocks, w)
    n = y.size
    Zs, Ls = [], []
    for (codes, q, Z), T in zip(blocks, fit.T):
        r = Z.shape[1]
        Zfull = np.zeros((n, q * r))
        for j in range(r):
            Zfull[np.arange(n), codes * r + j] = Z[:, j]
        Zs.append(Zfull)
        Ls.append(np.kron(np.eye(q), T))
    Z, Lam = np.hstack(Zs), linalg.block_diag(*Ls)
    V0 = Z @ Lam @ Lam.T @ Z.T + np.diag(1 / w)
    Vinv = np.linalg.inv(V0)
    beta = np.linalg.solve(X.T @ Vinv @ X, X.T @ Vinv @ y)
    np.testing.assert_allclose(fit.beta, beta, rtol=1e-9)
    b = Lam @ Lam.T @ Z.T @ Vinv @ (y - X @ beta)
    np.testing.assert_allclose(np.concatenate([bk.ravel() for bk in fit.b]), b, atol=1e-9)
    cov_beta = fit.sigma ** 2 * np.linalg.inv(X.T @ Vinv @ X)
    np.testing.assert_allclose(fit.cov_beta, cov_beta, rtol=1e-9)
    Ztil = Z @ Lam
    Omega = Ztil.T @ np.diag(w) @ Ztil + np.eye(Ztil.shape[1])
    condvar = fit.sigma ** 2 * np.diag(Lam @ np.linalg.inv(Omega) @ Lam.T)
    ours = np.concatenate([fit.conditional_sd(k).ravel() for k in range(len(blocks))])
    np.testing.assert_allclose(ours, np.sqrt(condvar), rtol=1e-9)


@pytest.mark.parametrize("structure", ["crossed", "three_crossed", "slopes", "slopes_crossed",
                                       "crossed_slopes_second"])
@pytest.mark.parametrize("reml", [True, False])
def test_analytic_gradient_matches_finite_differences(structure, reml):
    X, y, blocks, w, theta = _random_problem(2, structure)
    prob = LMMProblem(X, y, blocks, w)
    value, grad = prob.criterion_and_gradient(theta, reml)
    assert value == pytest.approx(prob.criterion(theta, reml), rel=1e-14)
    h = 1e-5
    fd = [(prob.criterion(theta + h * e, reml) - prob.criterion(theta - h * e, reml)) / (2 * h)
          for e in np.eye(theta.size)]
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-6)


def test_gradient_near_boundary_uses_finite_differences():
    X, y, blocks, w, _ = _random_problem(4, "crossed")
    prob = LMMProblem(X, y, blocks, w)
    theta = np.array([0.0, 0.8])
    value, grad = prob.criterion_and_gradient(theta, True)
    # the criterion is even in a random-intercept theta_k, so its derivative at 0 is 0
    assert abs(grad[0]) < 1e-6 * value
    h = 1e-6
    central = (prob.criterion(theta + [0, h], True) - prob.criterion(theta - [0, h], True)) / (2 * h)
    assert grad[1] == pytest.approx(central, rel=1e-5)
    # off the boundary but close: f(t) = f(0) + a t^2 + O(t^4), so df/dt = 2 a t
    a = (prob.criterion(np.array([1e-3, 0.8]), True) - value) / 1e-6
    theta = np.array([5e-7, 0.8])
    _, grad = prob.criterion_and_gradient(theta, True)
    assert grad[0] == pytest.approx(2 * a * 5e-7, rel=1e-3)


def test_optimisers_agree():
    """The quasi-Newton default, L-BFGS-B and derivative-free COBYQA reach the same optimum."""
    X, y, blocks, w, _ = _random_problem(8, "slopes_crossed")
    fits = [fit_lmm_arrays(X, y, blocks, w, method=m) for m in ("auto", "gradient", "cobyqa")]
    for f in fits[1:]:
        assert f.criterion >= fits[0].criterion - 1e-8
        np.testing.assert_allclose(f.theta, fits[0].theta, atol=1e-3)
    assert fits[0].converged


# --------------------------------------------------------------------------- kernels


def _level_structure(seed):
    rng = np.random.default_rng(seed)
    q, ncol, r1 = 40, 25, 2
    ptr, cols = [0], []
    for _ in range(q):
        c = np.sort(rng.choice(ncol, size=rng.integers(0, 8), replace=False))
        cols.extend(c)
        ptr.append(len(cols))
    ptr, cols = np.array(ptr, dtype=np.int64), np.array(cols, dtype=np.int64)
    vals = rng.normal(size=(r1, cols.size))
    level = np.repeat(np.arange(q), np.diff(ptr)).astype(np.int64)
    col_entries = np.argsort(cols, kind="stable").astype(np.int64)
    colptr = np.concatenate([[0], np.cumsum(np.bincount(cols, minlength=ncol))])
    return ptr, cols, (level, colptr, col_entries), vals, ncol


def test_schur_downdate_kernel_matches_numpy_twin():
    ptr, cols, tr, vals, ncol = _level_structure(0)
    S0 = np.random.default_rng(1).normal(size=(ncol, ncol))
    S1, S2 = S0.copy(), S0.copy()
    schur_downdate(ptr, cols, *tr, vals, S1)
    schur_downdate_numpy(ptr, cols, *tr, vals, S2)
    np.testing.assert_allclose(S1, S2, rtol=KERNEL_RTOL, atol=0)
    # and it is B'B on the lower triangle
    B = np.zeros((ptr.size - 1, vals.shape[0], ncol))
    lev = np.repeat(np.arange(ptr.size - 1), np.diff(ptr))
    for t in range(vals.shape[0]):
        B[lev, t, cols] = vals[t]
    BtB = np.einsum("ltj,ltk->jk", B, B)
    np.testing.assert_allclose(np.tril(S0 - S1), np.tril(BtB), rtol=1e-12, atol=1e-12)


def test_level_dot_kernel_matches_numpy_twin():
    ptr, cols, _, vals, ncol = _level_structure(2)
    z = np.random.default_rng(3).normal(size=ncol)
    np.testing.assert_allclose(level_dot(ptr, cols, vals, z), level_dot_numpy(ptr, cols, vals, z),
                               rtol=KERNEL_RTOL, atol=1e-14)


def test_level_quadratic_kernel_matches_numpy_twin():
    ptr, cols, tr, vals, ncol = _level_structure(4)
    A = np.random.default_rng(5).normal(size=(ncol, ncol))
    P = A @ A.T
    for mlim in (ncol, ncol - 5):
        np.testing.assert_allclose(level_quadratic(ptr, cols, *tr, vals, np.tril(P), mlim),
                                   level_quadratic_numpy(ptr, cols, *tr, vals, np.tril(P), mlim),
                                   rtol=KERNEL_RTOL, atol=1e-12)
    # and it is sum_l Y_l P Y_l' with the full symmetric P
    Q = level_quadratic_numpy(ptr, cols, *tr, vals, P, ncol)
    ref = sum(vals[:, a:b] @ P[np.ix_(cols[a:b], cols[a:b])] @ vals[:, a:b].T
              for a, b in zip(ptr[:-1], ptr[1:]))
    np.testing.assert_allclose(Q, ref, rtol=1e-12)


# --------------------------------------------------------------------------- formula forms


def _toy(seed=0, n=300):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 8, n)
    b = rng.integers(0, 5, n)
    x = rng.normal(size=n)
    y = 2 + 0.5 * x + rng.normal(size=8)[a] + (0.3 * rng.normal(size=8))[a] * x \
        + rng.normal(size=(8, 5))[a, b] * 0.7 + rng.normal(size=n)
    return pd.DataFrame({"y": y, "x": x, "a": [f"a{v}" for v in a], "b": b})


def test_hat_is_random_intercept():
    d = _toy()
    r1 = ig.lmm("y ~ x + ^a", d).fit()
    r2 = ig.lmm("y ~ x + (1|a)", d).fit()
    np.testing.assert_allclose(r1.theta, r2.theta, rtol=1e-12)
    np.testing.assert_allclose(r1.params, r2.params, rtol=1e-12)


def test_uncorrelated_slopes_equivalent_forms():
    d = _toy()
    r1 = ig.lmm("y ~ x + (x || a)", d).fit()
    r2 = ig.lmm("y ~ x + (1 | a) + (0 + x | a)", d).fit()
    assert r1.criterion == pytest.approx(r2.criterion, rel=1e-12)
    np.testing.assert_allclose(r1.theta, r2.theta, atol=1e-6)
    assert len(r1.correlations) == 0
    re = r1.ranef("a")
    assert list(re.columns) == ["(Intercept)", "x", "condsd((Intercept))", "condsd(x)"]
    # uncorrelated: the criterion is that of the correlated model with T21 = 0
    rc = ig.lmm("y ~ x + (x | a)", d)
    t = r1.theta.to_numpy()
    assert rc.criterion([t[0], 0.0, t[1]]) == pytest.approx(r1.criterion, rel=1e-12)


def test_nested_equals_explicit_interaction():
    d = _toy()
    r1 = ig.lmm("y ~ x + (1 | a/b)", d).fit()
    r2 = ig.lmm("y ~ x + (1 | a) + (1 | a:b)", d).fit()
    assert r1.criterion == pytest.approx(r2.criterion, rel=1e-12)
    assert list(r1.theta.index) == ["b:a.(Intercept)", "a.(Intercept)"]   # lme4: more levels first, b:a


# --------------------------------------------------------------------------- results API


def test_results_api(fits):
    res = fits["sleepstudy_rs_reml"]
    ss = read_csv("sleepstudy.csv")
    assert res.fittedvalues.to_numpy() + res.resid.to_numpy() == pytest.approx(ss.Reaction.to_numpy())
    np.testing.assert_allclose(res.predict(ss), res.fittedvalues, rtol=1e-12)
    fixed_only = res.predict(ss, include_random=False)
    np.testing.assert_allclose(fixed_only, res.params["Intercept"] + res.params["Days"] * ss.Days)
    assert res.cov_params().shape == (2, 2)
    np.testing.assert_allclose(np.sqrt(np.diag(res.cov_params())), res.bse)
    with pytest.raises(AttributeError):
        res.sigma = 1.0
    params = res.params
    params.iloc[0] = 0.0
    assert res.params.iloc[0] != 0.0
    log = res.optimizer_log
    assert len(log) == res.n_evals and log.criterion.min() == pytest.approx(res.criterion)
    text = res.summary()
    for part in ("REML criterion at convergence: 1743.6", "Scaled residuals", "Random effects:",
                 "Residual", "Fixed effects:", "Number of obs: 180, groups:  Subject, 18"):
        assert part in text
    with pytest.raises(ImpactGLMError, match="Subjct"):
        res.ranef("Subjct")


def test_predict_unseen_levels_get_zero(fits):
    res = fits["sleepstudy_ri_reml"]
    new = pd.DataFrame({"Days": [1.0, 2.0], "Subject": [308, 999], "Reaction": [0.0, 0.0]})
    with pytest.warns(UnseenLevelWarning, match="Subject: 1 rows"):
        pred = res.predict(new)
    fixed = res.params["Intercept"] + res.params["Days"] * new.Days
    assert pred.iloc[1] == pytest.approx(fixed.iloc[1])
    assert pred.iloc[0] == pytest.approx(fixed.iloc[0] + res.ranef("Subject").loc[308, "(Intercept)"])


def test_data_not_modified():
    d = _toy()
    before = d.copy(deep=True)
    ig.lmm("y ~ x + (x | a)", d).fit()
    pd.testing.assert_frame_equal(d, before)


def test_singular_fit_warns():
    rng = np.random.default_rng(3)
    n = 200
    d = pd.DataFrame({"g": rng.integers(0, 10, n), "y": rng.normal(size=n)})  # no group effect
    d.loc[:, "y"] = d.y - d.groupby("g").y.transform("mean") + d.y.mean()    # exactly none
    with pytest.warns(SingularFitWarning, match="g.\\(Intercept\\)"):
        res = ig.lmm("y ~ 1 + (1|g)", d).fit()
    assert res.is_singular and res.theta.iloc[0] < 1e-4


# --------------------------------------------------------------------------- bad input


def test_single_level_grouping_factor():
    d = _toy().assign(c="only")
    with pytest.raises(ImpactGLMError, match="'c'"):
        ig.lmm("y ~ x + (1|c)", d)


def test_more_random_effects_than_observations():
    d = _toy(n=40).assign(id=np.arange(40))
    with pytest.raises(ModelError, match="'id'"):
        ig.lmm("y ~ x + (1|id)", d)
    d2 = _toy(n=30)
    d2["g"] = np.arange(30) // 2
    with pytest.raises(ModelError, match="random effects for 30 observations"):
        ig.lmm("y ~ x + (x|g)", d2)


def test_rank_deficient_fixed_effects_dropped_with_warning():
    d = _toy().assign(x2=lambda f: 2 * f.x)
    with pytest.warns(ImpactGLMWarning, match="'x2'"):
        res = ig.lmm("y ~ x + x2 + (1|a)", d).fit()
    ref = ig.lmm("y ~ x + (1|a)", d).fit()
    assert list(res.params.index) == ["Intercept", "x"]
    np.testing.assert_allclose(res.params, ref.params, rtol=1e-10)
    assert res.criterion == pytest.approx(ref.criterion, rel=1e-12)


def test_missing_values():
    d = _toy()
    d.loc[[3, 10], "y"] = np.nan
    d.loc[20, "x"] = np.nan
    res = ig.lmm("y ~ x + (1|a)", d).fit()
    ref = ig.lmm("y ~ x + (1|a)", d.dropna().reset_index(drop=True)).fit()
    assert res.nobs == len(d) - 3
    assert res.criterion == pytest.approx(ref.criterion, rel=1e-12)
    assert 3 not in res.fittedvalues.index and 4 in res.fittedvalues.index
    with pytest.raises(DataError):
        ig.lmm("y ~ x + (1|a)", d, na_action="raise")


def test_array_entry_for_crossed_intercepts_with_offset():
    """fit_lmm_arrays with (codes, n_levels) blocks and an offset = the fit of y - offset,
    and the same model through the formula front end."""
    X, y, blocks, w, _ = _random_problem(9, "crossed")
    offset = np.linspace(-1, 1, y.size)
    intercepts = [(c, q) for c, q, _ in blocks]
    a = fit_lmm_arrays(X, y, intercepts, offset=offset)
    b = fit_lmm_arrays(X, y - offset, intercepts)
    np.testing.assert_allclose(a.theta, b.theta, rtol=1e-12)
    assert a.criterion == pytest.approx(b.criterion, rel=1e-14)
    np.testing.assert_allclose(a.re_sd[0], a.sigma * a.theta[0], rtol=1e-12)
    frame = pd.DataFrame({"y": y - offset, "x1": X[:, 1], "x2": X[:, 2],
                          "g1": blocks[0][0], "g2": blocks[1][0]})
    res = ig.lmm("y ~ x1 + x2 + (1|g1) + (1|g2)", frame).fit()
    np.testing.assert_allclose(res.theta.to_numpy(), b.theta, atol=1e-6)
    assert res.criterion == pytest.approx(b.criterion, rel=1e-12)


def test_zero_weights_mean_rows_left_out():
    X, y, blocks, w, _ = _random_problem(12, "slopes_crossed")
    w0 = w.copy()
    w0[::7] = 0.0
    keep = w0 > 0
    a = fit_lmm_arrays(X, y, blocks, w0)
    b = fit_lmm_arrays(X[keep], y[keep], [(c[keep], q, Z[keep]) for c, q, Z in blocks], w0[keep])
    assert a.criterion == pytest.approx(b.criterion, rel=1e-12)
    np.testing.assert_allclose(a.beta, b.beta, rtol=1e-8)
    assert a.n == keep.sum()
    with pytest.raises(DataError, match="non-negative"):
        fit_lmm_arrays(X, y, blocks, -w)


def test_iteration_limit_gives_convergence_warning():
    from impactglm.errors import ConvergenceWarning
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        res = ig.lmm("y ~ x + (x | a)", _toy()).fit(method="cobyqa", maxiter=5)
    assert not res.converged and res.n_evals <= 6


def test_no_random_term_and_bad_arrays():
    with pytest.raises(ModelError, match="random-effects"):
        ig.lmm("y ~ x", _toy())
    X, y = np.ones((10, 1)), np.arange(10.0)
    y[4] = np.nan
    with pytest.raises(DataError, match="row 4"):
        fit_lmm_arrays(X, y, [(np.arange(10) % 2, 2)])
    with pytest.raises(DataError, match="codes"):
        LMMProblem(X, np.arange(10.0), [(np.arange(10) % 3, 2)])

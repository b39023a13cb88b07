"""Numerical safety: hard data either fit with finite estimates and the right warning, or
raise a clear impactglm error.  No NaN ever reaches ``params`` silently.

Every fit here runs with RuntimeWarning turned into an error: a raw numpy overflow or
0/0 warning is a bug (it means a NaN/inf was computed somewhere on the way).
"""
from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd
import pytest

import impactglm as ig
from certificate import max_newton_step
from conftest import EXACT_RTOL
from impactglm.errors import (ConvergenceWarning, DataError, ImpactGLMError, ModelError,
                              SeparationWarning)

CERTIFICATE = 1e-6     # max |gradient| / Hessian diagonal at a converged fit (solver tol 1e-8)


def fit(formula, data, **kw):
    """(model, results, warnings) with RuntimeWarnings raised as errors."""
    fit_kw = kw.pop("fit_kw", {})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("error", RuntimeWarning)
        model = ig.glm(formula, data, **kw)
        res = model.fit(**fit_kw)
    return model, res, [w for w in caught]


def assert_finite(res):
    assert np.all(np.isfinite(np.asarray(res.params))), res.params
    assert np.all(np.isfinite(np.asarray(res.bse))), res.bse
    for e in res.factor_effects:
        assert np.all(np.isfinite(e.effect)) and np.all(np.isfinite(e.se)), e.name
    assert np.isfinite(res.deviance) and np.isfinite(res.llf)


def kinds(caught):
    return {type(w.message) for w in caught}


@pytest.fixture
def rng():
    return np.random.default_rng(20261121)


def _separated(rng, n=200):
    x = rng.normal(size=n)
    return pd.DataFrame({"x": x, "y": (x > 0).astype(float), "g": rng.integers(0, 20, n)})


# --------------------------------------------------------------------------- separation


def test_complete_separation_irls_warns_and_stays_finite(rng):
    _, res, caught = fit("y ~ x", _separated(rng), family="binomial")
    assert_finite(res)
    assert SeparationWarning in kinds(caught)
    assert not res.converged and ConvergenceWarning in kinds(caught)   # as R's glm


def test_quasi_separation_irls_warns_and_stays_finite(rng):
    d = _separated(rng)
    d.loc[:5, "x"] = 0.0
    d.loc[:5, "y"] = [0.0, 1.0, 0.0, 1.0, 1.0, 0.0]
    _, res, caught = fit("y ~ x", d, family="binomial")
    assert_finite(res)
    assert SeparationWarning in kinds(caught)


def test_complete_separation_with_a_factor_warns(rng):
    _, res, caught = fit("y ~ x + ^g", _separated(rng), family="binomial", prior_sd=1.0)
    assert_finite(res)
    assert SeparationWarning in kinds(caught)


def test_separated_levels_without_prior_warn_with_a_count(rng):
    n = 400
    g = rng.integers(0, 20, n)
    y = (rng.random(n) < 0.4).astype(float)
    y[g == 3] = 1.0
    y[g == 7] = 0.0
    d = pd.DataFrame({"y": y, "g": g, "x": rng.normal(size=n)})
    model, res, caught = fit("y ~ x + ^g", d, family="binomial", prior_sd=None)
    assert_finite(res)
    sep = [w for w in caught if issubclass(w.category, SeparationWarning)]
    assert sep and "2 level(s)" in str(sep[0].message)
    assert max_newton_step(model, res) < CERTIFICATE
    # with the prior (estimated tau) the same levels are finite without any warning
    model, res, caught = fit("y ~ x + ^g", d, family="binomial")
    assert_finite(res)
    assert not kinds(caught) & {SeparationWarning, ConvergenceWarning}
    eff = res.level_effects("g")["effect"]
    assert eff[3] > 0 > eff[7] and abs(eff[3]) < 5 and abs(eff[7]) < 5
    assert max_newton_step(model, res) < CERTIFICATE


# --------------------------------------------------------------------------- level sizes


def test_level_with_a_single_row_is_shrunk(rng):
    n = 300
    d = pd.DataFrame({"g": rng.integers(0, 10, n), "y": (rng.random(n) < 0.4).astype(float)})
    d.loc[0, ["g", "y"]] = [999, 1.0]
    model, res, caught = fit("y ~ ^g", d, family="binomial", prior_sd=0.5)
    assert_finite(res)
    eff = res.level_effects("g")
    assert eff.loc[999, "n"] == 1
    assert 0 < eff.loc[999, "effect"] < 0.5          # one success: shrunk, not +inf
    assert eff.loc[999, "se"] < 0.5                   # posterior sd below the prior sd
    assert max_newton_step(model, res) < CERTIFICATE


def test_level_holding_99_percent_of_rows_matches_the_exact_solver(rng):
    from exact import exact_fit
    n = 5000
    g = np.where(rng.random(n) < 0.99, 0, rng.integers(1, 50, n))
    d = pd.DataFrame({"g": g, "y": (rng.random(n) < 0.3).astype(float),
                      "x": rng.normal(size=n)})
    model, res, caught = fit("y ~ x + ^g", d, family="binomial", prior_sd=0.7)
    assert_finite(res)
    assert res.converged
    dz = model.design
    ref = exact_fit(dz.X, [(f.codes, f.n_levels) for f in dz.factors], dz.y, dz.weights,
                    dz.offset, "binomial", [0.7])
    np.testing.assert_allclose(res.params.to_numpy(), ref["beta"], rtol=EXACT_RTOL)
    np.testing.assert_allclose(res.factor_effects[0].effect, ref["effects"][0],
                               rtol=EXACT_RTOL, atol=1e-9)


@pytest.mark.slow
def test_two_million_levels():
    """2,000,000 levels (most with 1-2 rows) of one factor: fits, finite, certificate."""
    rng = np.random.default_rng(7)
    n, q = 3_000_000, 2_000_000
    codes = np.concatenate([np.arange(q), rng.integers(0, q, n - q)])
    a = rng.normal(0.0, 0.5, q)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-(-0.5 + a[codes])))).astype(np.int8)
    d = pd.DataFrame({"y": y, "id": codes})
    t0 = time.perf_counter()
    model, res, caught = fit("y ~ ^id", d, family="binomial", prior_sd=0.5)
    seconds = time.perf_counter() - t0
    assert_finite(res)
    assert res.converged
    assert res.factor_effects[0].n_levels == q
    assert max_newton_step(model, res) < CERTIFICATE
    # shrinkage recovers the truth on average: the effects correlate with the true ones
    assert np.corrcoef(res.factor_effects[0].effect, a)[0, 1] > 0.2   # 1.5 rows per level
    print(f"2M levels, 3M rows: {seconds:.1f} s")


# --------------------------------------------------------------------------- one class


def test_all_one_class_irls_is_finite_and_warns_like_r(rng):
    d = pd.DataFrame({"x": rng.normal(size=200), "y": 0.0})
    _, res, caught = fit("y ~ x", d, family="binomial")
    assert_finite(res)
    assert res.params["Intercept"] < -20                        # R: -26.57, not converged
    assert ConvergenceWarning in kinds(caught)


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_all_one_class_with_a_factor_warns(rng, value):
    d = pd.DataFrame({"x": rng.normal(size=200), "y": value, "g": rng.integers(0, 20, 200)})
    _, res, caught = fit("y ~ x + ^g", d, family="binomial", prior_sd=1.0)
    assert_finite(res)
    assert kinds(caught) & {SeparationWarning, ConvergenceWarning}


def test_one_class_multinomial_and_classifier_raise_clear_errors(rng):
    d = pd.DataFrame({"x": rng.normal(size=50), "y": 2, "g": rng.integers(0, 5, 50)})
    with pytest.raises(DataError, match="single class"):
        ig.glm("y ~ x + ^g", d, family="multinomial").fit()
    from impactglm.sklearn import ImpactGLMClassifier
    with pytest.raises(DataError, match="one class"):
        ImpactGLMClassifier(high_cardinality=["g"]).fit(d[["x", "g"]], d["y"])


# --------------------------------------------------------------------------- weights


@pytest.mark.parametrize("formula,prior", [("y ~ x", "auto"), ("y ~ x + ^g", 0.8),
                                           ("y ~ x + ^g", "auto")])
def test_zero_weights_equal_dropping_the_rows(rng, formula, prior):
    n = 400
    d = pd.DataFrame({"x": rng.normal(size=n), "g": rng.integers(0, 30, n)})
    d["y"] = (rng.random(n) < 1 / (1 + np.exp(-d["x"]))).astype(float)
    w = np.ones(n)
    w[rng.random(n) < 0.3] = 0.0
    w[d["g"] == 5] = 0.0                      # a level whose rows all have weight 0
    kw = {} if prior == "auto" and "^" not in formula else {"prior_sd": prior}
    _, res_w, _ = fit(formula, d, family="binomial", weights=w, **kw)
    _, res_d, _ = fit(formula, d[w > 0], family="binomial", **kw)
    assert_finite(res_w)
    np.testing.assert_allclose(res_w.params, res_d.params, rtol=1e-6)
    if "^" in formula:
        eff = res_w.level_effects("g")
        assert eff.loc[5, "effect"] == 0.0    # no information: the prior mean
        kept = res_d.level_effects("g")
        # tau "auto" is estimated to ~1e-8 relative: effects agree to that scale
        np.testing.assert_allclose(eff.loc[kept.index, "effect"], kept["effect"],
                                   rtol=1e-6, atol=1e-6 * np.abs(kept["effect"]).max())


def test_all_zero_weights_raise_without_factors(rng):
    d = pd.DataFrame({"x": rng.normal(size=50), "y": (rng.random(50) < 0.5) * 1.0})
    with pytest.raises(ImpactGLMError, match="positive weight"):
        ig.glm("y ~ x", d, family="binomial", weights=np.zeros(50)).fit()


def test_all_zero_weights_raise_with_a_factor(rng):
    d = pd.DataFrame({"x": rng.normal(size=50), "y": (rng.random(50) < 0.5) * 1.0,
                      "g": rng.integers(0, 5, 50)})
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(ImpactGLMError, match="weight"):
            ig.glm("y ~ x + ^g", d, family="binomial", weights=np.zeros(50)).fit()


# --------------------------------------------------------------------------- offsets


@pytest.mark.parametrize("family", ["binomial", "poisson"])
@pytest.mark.parametrize("offset", [50.0, -1e3, 1e3, 1e6])
@pytest.mark.parametrize("formula", ["y ~ x", "y ~ x + ^g"])
def test_constant_extreme_offset_moves_only_the_intercept(rng, family, offset, formula):
    n = 300
    d = pd.DataFrame({"x": rng.normal(size=n), "g": rng.integers(0, 20, n)})
    eta = 0.2 + 0.5 * d["x"]
    d["y"] = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float) if family == "binomial" \
        else rng.poisson(np.exp(eta)).astype(float)
    kw = {"prior_sd": 0.5} if "^" in formula else {}
    _, base, _ = fit(formula, d, family=family, **kw)
    model, res, caught = fit(formula, d, family=family, offset=np.full(n, offset), **kw)
    assert_finite(res)
    assert res.converged
    np.testing.assert_allclose(res.params["x"], base.params["x"], rtol=1e-6)
    np.testing.assert_allclose(res.params["Intercept"] + offset, base.params["Intercept"],
                               rtol=1e-6, atol=1e-9 * abs(offset))


@pytest.mark.parametrize("spread", [
    30.0,
    300.0,   # exp(eta) overflows: a clear ModelError (was a raw scipy ValueError)
])
def test_wild_row_offsets_poisson_are_finite_or_a_clear_error(rng, spread):
    n = 300
    d = pd.DataFrame({"x": rng.normal(size=n), "g": rng.integers(0, 20, n),
                      "y": rng.poisson(3.0, n).astype(float)})
    offset = rng.normal(0.0, spread, n)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ig.errors.ImpactGLMWarning)
            res = ig.glm("y ~ x + ^g", d, family="poisson", prior_sd=0.5, offset=offset).fit()
    except ImpactGLMError as exc:
        assert str(exc)
    else:
        assert_finite(res)


# (nearly) saturated gaussian fits: residual variance ~0 (was a raw LinAlgError)
@pytest.mark.parametrize("data,formula,prior", [
    ({"g": [0, 0, 1, 1, 2, 2], "h": ["a", "b", "a", "b", "a", "c"],
      "y": [1.0, 2.0, 3.0, 4.0, 5.0, 7.0]}, "y ~ ^g + ^h", None),
    ({"x": [0.345584, 0.821618, 0.330437], "g": [1, 1, 0], "h": [0, 1, 0],
      "y": [0.364572, 0.294132, 0.028422]}, "y ~ x + ^g + ^h", 1.0),
])
def test_perfect_gaussian_fit_is_a_fit_or_a_clear_error(data, formula, prior):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ig.errors.ImpactGLMWarning)
            res = ig.glm(formula, pd.DataFrame(data), prior_sd=prior).fit()
    except ImpactGLMError as exc:
        assert str(exc)
    else:
        assert_finite(res)


# --------------------------------------------------------------------------- multinomial


def test_multinomial_complete_separation_warns(rng):
    x = np.r_[rng.normal(-5, 0.3, 30), rng.normal(0, 0.3, 30), rng.normal(5, 0.3, 30)]
    d = pd.DataFrame({"x": x, "y": np.repeat([0, 1, 2], 30)})
    _, res, caught = fit("y ~ x", d, family="multinomial")
    assert np.all(np.isfinite(np.asarray(res.params)))
    assert kinds(caught) & {SeparationWarning, ConvergenceWarning}


def test_multinomial_more_coefficients_than_rows_is_an_error():
    rng = np.random.RandomState(42)
    d = pd.DataFrame(rng.rand(15, 30), columns=[f"x{j}" for j in range(30)])
    d["y"] = rng.randint(0, 3, 15)
    formula = "y ~ " + " + ".join(f"x{j}" for j in range(30))
    with pytest.raises(ModelError):
        ig.glm(formula, d, family="multinomial").fit()

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


# --------------------------------------------------------------------------- issue 10, s3-s5


def _frame(rng, n=300):
    d = pd.DataFrame({"x": rng.normal(size=n), "g": rng.integers(0, 20, n)})
    d["y"] = d["x"] + rng.normal(size=n)
    return d


@pytest.mark.parametrize("term", ["(1|g)", "(x||g)", "(1 + x | g)"])
def test_random_effect_term_in_glm_is_an_error_pointing_to_lmm(rng, term):
    with pytest.raises(ig.errors.FormulaError, match=r"\^g.*ig\.lmm") as e:
        ig.glm(f"y ~ x + {term}", _frame(rng))
    assert e.value.formula[e.value.position] == "("


@pytest.mark.parametrize("family", ["gaussian", "binomial", "multinomial"])
@pytest.mark.parametrize("extra,culprit", [({"c": 1.0}, "c"), ({"x2": "2x"}, "x2")])
def test_aliased_columns_with_factors_name_the_column_like_irls(rng, family, extra, culprit):
    d = _frame(rng)
    d["x2"] = 2 * d["x"]
    d["c"] = 1.0
    d["yb"] = (d["y"] > 0).astype(float)
    d["k"] = d["g"] % 3
    resp = {"gaussian": "y", "binomial": "yb", "multinomial": "k"}[family]
    formula = f"{resp} ~ x + {culprit} + ^g"
    kw = {} if family == "multinomial" else {"prior_sd": 1.0}
    with pytest.raises(ModelError, match=rf"rank deficient.*'{culprit}'") as with_factor:
        ig.glm(formula, d, family=family, **kw).fit()
    with pytest.raises(ModelError, match=rf"rank deficient.*'{culprit}'") as plain:
        ig.glm(f"{resp} ~ x + {culprit}", d, family=family).fit()
    if family != "multinomial":          # the same message as the plain IRLS path
        assert str(with_factor.value) == str(plain.value)


@pytest.mark.parametrize("scale", [1e300, 1e-300])
def test_huge_and_tiny_columns_are_not_called_aliased(rng, scale):
    d = _frame(rng)
    base = ig.glm("y ~ x", d).fit()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)     # IRLS's gram (engine's room)
        res = ig.glm("y ~ x", d.assign(x=d["x"] * scale)).fit()
    np.testing.assert_allclose(res.params["x"] * scale, base.params["x"], rtol=1e-10)
    np.testing.assert_allclose(res.params["Intercept"], base.params["Intercept"], rtol=1e-10)


def test_aliased_columns_scale_invariant():
    from impactglm.solvers.linalg import aliased_columns
    rng = np.random.default_rng(3)
    X = np.column_stack([np.ones(50), rng.normal(size=50) * 1e300, rng.normal(size=50) * 1e-300])
    assert aliased_columns(X, np.ones(50), 1e-7) == []
    X2 = np.column_stack([X, X[:, 2] * 3.0])
    assert aliased_columns(X2, np.ones(50), 1e-7) == [3]


def test_poisson_all_zero_counts_with_a_factor_warns_like_r(rng):
    d = _frame(rng).assign(y=0.0)
    _, res, caught = fit("y ~ x + ^g", d, family="poisson", prior_sd=1.0)
    sep = [w for w in caught if issubclass(w.category, SeparationWarning)]
    assert sep and "fitted rates numerically 0" in str(sep[0].message)


def test_binomial_all_ones_with_a_factor_says_numerically_0_or_1(rng):
    d = _frame(rng).assign(y=1.0)
    _, res, caught = fit("y ~ x + ^g", d, family="binomial", prior_sd=1.0)
    assert any("fitted probabilities numerically 0 or 1" in str(w.message) for w in caught)


def test_uint64_ids_near_2_63_stay_distinct():
    ids = np.array([2 ** 63 + 1, 2 ** 63 + 3, 2 ** 63 + 5, 2 ** 64 - 1], dtype=np.uint64)
    rng = np.random.default_rng(1)
    d = pd.DataFrame({"u": np.repeat(ids, 40), "y": rng.normal(size=160)})
    d["y"] += np.repeat([0.0, 1.0, 2.0, 3.0], 40)
    res = ig.glm("y ~ ^u", d, prior_sd=1.0).fit()
    eff = res.level_effects("u")
    assert list(eff.index) == [int(v) for v in ids]
    assert np.all(np.diff(eff["effect"].to_numpy()) > 0)
    pred = res.predict(d.iloc[[0, 40, 80, 120]])
    assert len(np.unique(np.round(np.asarray(pred), 8))) == 4


def test_uint64_factorize_small_and_large_ranges():
    from impactglm.design.levels import factorize
    for vals in ([2 ** 63 + 1, 2 ** 63 + 3], [1, 2 ** 63 + 1, 2 ** 64 - 1]):
        a = np.array(vals * 3, dtype=np.uint64)
        codes, levels, counts = factorize(pd.Series(a))
        assert levels.dtype == np.uint64 and list(levels) == sorted(vals)
        assert list(counts) == [3] * len(vals)
        np.testing.assert_array_equal(levels[codes], a)


def test_float_column_as_a_factor_warns(rng):
    d = _frame(rng)
    with pytest.warns(ig.errors.DataWarning, match="float column used as a factor"):
        ig.glm("y ~ ^x", d, prior_sd=1.0)


def test_float_column_of_whole_numbers_or_few_values_as_a_factor_does_not_warn(rng):
    d = _frame(rng)
    d["gf"] = d["g"].astype(float)
    d["r"] = np.round(rng.uniform(0, 5, len(d)) * 2) / 2       # ratings 0, 0.5, ... 5
    with warnings.catch_warnings():
        warnings.simplefilter("error", ig.errors.DataWarning)
        ig.glm("y ~ ^gf + ^r", d, prior_sd=1.0)


@pytest.mark.parametrize("stray", [["?"], ["n/a", "-", "?"]])
def test_numeric_text_column_with_stray_values_warns_naming_them(rng, stray):
    d = _frame(rng)
    s = d["x"].round(4).astype(str)
    s.iloc[: len(stray)] = stray
    with pytest.warns(ig.errors.DataWarning, match=rf"numeric except for {len(stray)} value") as w:
        ig.glm("y ~ s", d.assign(s=s))
    for v in stray:
        assert repr(v) in str(w[0].message)
    with pytest.warns(ig.errors.DataWarning, match="numeric except"):
        ig.glm("y ~ ^s", d.assign(s=s), prior_sd=1.0)


def test_numeric_text_read_from_csv_warns(rng, tmp_path):
    d = _frame(rng)
    s = d["x"].round(4).astype(str)
    s.iloc[7] = "?"
    p = tmp_path / "d.csv"
    d.assign(x=s).to_csv(p, index=False)
    table = ig.read_table(p)
    with pytest.warns(ig.errors.DataWarning, match=r"'\?'"):
        ig.glm("y ~ x", table)


def test_ordinary_text_column_does_not_warn(rng):
    d = _frame(rng).assign(k=np.array(list("abcdefgh"))[np.arange(300) % 8])
    with warnings.catch_warnings():
        warnings.simplefilter("error", ig.errors.DataWarning)
        ig.glm("y ~ k", d).fit()


@pytest.mark.parametrize("kind", ["str", "category", "C(num)"])
def test_one_level_categorical_term_is_an_error_naming_it(rng, kind):
    d = _frame(rng)
    if kind == "str":
        d["k"], term = "a", "k"
    elif kind == "category":
        d["k"], term = pd.Categorical(["a"] * len(d), categories=["a", "b"]), "k"
    else:
        d["k"], term = 3, "C(k)"
    with pytest.raises(DataError, match=r"contrasts can be applied only to factors with 2 or more"):
        ig.glm(f"y ~ x + {term}", d)


def test_one_level_after_dropping_na_rows_is_an_error(rng):
    d = _frame(rng)
    d["k"] = np.where(np.arange(len(d)) < 5, "b", "a")
    d.loc[:4, "x"] = np.nan
    with pytest.raises(DataError, match="single level 'a'"):
        ig.glm("y ~ x + k", d)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.uint8, np.uint16, "Int8"])
def test_small_integer_columns_do_not_overflow_in_formulas(rng, dtype):
    d = _frame(rng)
    d["x8"] = pd.Series(100 + np.arange(len(d)) % 27).astype(dtype)
    copy = d.copy(deep=True)
    res = ig.glm("y ~ I(x8 * x8 * x8)", d).fit()
    ref = ig.glm("y ~ I(x8 * x8 * x8)", d.assign(x8=d["x8"].astype(float))).fit()
    np.testing.assert_allclose(res.params, ref.params, rtol=1e-9)
    pd.testing.assert_frame_equal(d, copy)
    np.testing.assert_allclose(res.predict(d), ref.predict(d), rtol=1e-9)
    # C(x8) levels keep their integer labels
    res = ig.glm("y ~ C(x8)", d).fit()
    assert "C(x8)[T.101]" in res.params.index


def test_mixed_object_column_is_an_error_naming_column_and_types(rng):
    d = _frame(rng)
    d["m"] = pd.Series([1, "1", 2.0, "a", True, None] * 50, dtype=object)
    for formula in ("y ~ C(m)", "y ~ m", "y ~ ^m"):
        with pytest.raises(DataError, match=r"'m' mixes values of different types \(bool, float, "
                                            r"int, str\)"):
            ig.glm(formula, d, prior_sd=1.0)


def test_object_column_of_ints_and_floats_is_fine(rng):
    d = _frame(rng)
    d["m"] = pd.Series([1, 2.0, 3] * 100, dtype=object)
    ig.glm("y ~ C(m)", d).fit()


@pytest.mark.parametrize("kw,match", [
    ({"maxiter": 0}, "maxiter"), ({"maxiter": 2.5}, "maxiter"), ({"maxiter": "10"}, "maxiter"),
    ({"maxiter": True}, "maxiter"), ({"tol": "1e-8"}, "tol"), ({"tol": -1.0}, "tol"),
    ({"tol": float("nan")}, "tol"), ({"tol": 0}, "tol"), ({"method": "bogus"}, "method"),
    ({"seed": 1.5}, "seed"), ({"callback": 3}, "callback")])
@pytest.mark.parametrize("formula", ["y ~ x", "y ~ x + ^g"])
def test_fit_arguments_are_checked(rng, kw, match, formula):
    m = ig.glm(formula, _frame(rng), prior_sd=1.0 if "^" in formula else "auto")
    with pytest.raises(ModelError, match=match):
        m.fit(**kw)


@pytest.mark.parametrize("holdout", [2, -0.1, 1.0, "0.1", True, float("nan")])
def test_holdout_is_checked(rng, holdout):
    d = _frame(rng).assign(k=lambda f: f["g"] % 3)
    with pytest.raises(ModelError, match="holdout"):
        ig.glm("k ~ x + ^g", d, family="multinomial").fit(holdout=holdout)


@pytest.mark.parametrize("prior", [-1, 0, float("inf"), "bogus", True, [1.0]])
def test_prior_sd_is_checked_without_factors(rng, prior):
    with pytest.raises(ModelError, match="prior_sd"):
        ig.glm("y ~ x", _frame(rng), prior_sd=prior)


@pytest.mark.parametrize("prior", [-1, 0, float("nan"), True, {"g": -2.0}, [1.0, 2.0]])
def test_prior_sd_is_checked_with_a_factor(rng, prior):
    with pytest.raises(ModelError, match="prior_sd"):
        ig.glm("y ~ x + ^g", _frame(rng), prior_sd=prior)


def test_huge_gaussian_response_gets_rescaling_advice(rng):
    d = _frame(rng)
    with pytest.raises(DataError, match="rescale") as e:
        ig.glm("y ~ x", d.assign(y=d["y"] * 1e300))
    assert "log link" not in str(e.value)
    with pytest.raises(DataError, match="rescale"):
        ig.glm("y ~ x", d.assign(y=d["y"] * 1e-300))


def test_unused_first_category_is_dropped_like_r(rng):
    d = _frame(rng)
    d["c"] = pd.Categorical(np.where(d["x"] > 0, "a", "b"), categories=["r", "a", "b"])
    res = ig.glm("y ~ C(c)", d).fit()
    ref = ig.glm("y ~ C(c)", d.assign(c=d["c"].astype(str))).fit()
    assert list(res.params.index) == ["Intercept", "C(c)[T.b]"]
    np.testing.assert_allclose(res.params.to_numpy(), ref.params.to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(res.predict(d), ref.predict(d), rtol=1e-12)
    assert list(d["c"].cat.categories) == ["r", "a", "b"]          # the user's column untouched


def test_predict_on_an_empty_frame_says_so(rng):
    d = _frame(rng)
    res = ig.glm("y ~ x", d).fit()
    with pytest.raises(DataError, match="the data have no rows"):
        res.predict(d.iloc[:0])


def test_one_row_intercept_only_fit_gives_one_warning_not_numpy_ones():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("error", RuntimeWarning)
        res = ig.glm("y ~ 1", pd.DataFrame({"y": [1.5]})).fit()
    assert res.params["Intercept"] == 1.5
    assert [w.category for w in caught] == [ig.errors.ImpactGLMWarning]
    assert "no residual degrees of freedom" in str(caught[0].message)

"""GLM fits through the front door vs R's glm (frozen values) and statsmodels (live).

tests/data/glm_data.csv is made by make_glm_data.py; glm_reference.json by
make_glm_reference.R (R 4.2, jsonlite).  Each case lists the Patsy formula used here
and in statsmodels and the equivalent R formula.
"""
from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf

import impactglm as ig
from impactglm.errors import (ColumnNotFoundError, ConvergenceWarning, DataError, FormulaError,
                              ModelError, SeparationWarning)
from conftest import (COEF_RTOL_R, COEF_RTOL_STATSMODELS, DATA, OBJECTIVE_RTOL, SE_RTOL_R,
                      read_csv)

REF = json.loads((DATA / "glm_reference.json").read_text())
CASES = {c["name"]: c for c in REF["cases"]}
FRAMES = {name: read_csv(name) for name in {c["data"] for c in CASES.values()}}
DATA_FRAME = FRAMES["glm_data.csv"]
BOUNDARY = [n for n, c in CASES.items() if c["boundary"]]

SM_FAMILIES = {"gaussian": sm.families.Gaussian, "binomial": sm.families.Binomial,
               "poisson": sm.families.Poisson, "gamma": sm.families.Gamma}
SM_LINKS = {"identity": sm.families.links.Identity, "log": sm.families.links.Log,
            "logit": sm.families.links.Logit, "probit": sm.families.links.Probit,
            "cloglog": sm.families.links.CLogLog, "inverse": sm.families.links.InversePower}


def r_name(patsy_name: str) -> str:
    """Patsy column name -> R coefficient name (C(k)[T.b] -> kb, np.log -> log, ** -> ^)."""
    name = re.sub(r"C\((\w+)\)\[(?:T\.)?([^\]]+)\]", r"\1\2", patsy_name)
    name = name.replace("np.log(", "log(").replace(" ** ", "^")
    return "(Intercept)" if name == "Intercept" else name


TIGHT = {"tol": 1e-15, "maxiter": 100}     # as the R reference: glm.control(epsilon = 1e-15)


def fit_case(case, **fit_kw):
    kw = {k: case[k] for k in ("weights", "offset") if case[k] is not None}
    model = ig.glm(case["py"], FRAMES[case["data"]], family=case["family"], link=case["link"], **kw)
    with warnings.catch_warnings():
        if case["boundary"]:     # R warns "algorithm stopped at boundary value" too
            warnings.filterwarnings("ignore", "IRLS stopped at a boundary", ConvergenceWarning)
        return model.fit(**fit_kw)


@pytest.fixture(scope="module")
def fits():
    return {name: fit_case(c, **TIGHT) for name, c in CASES.items()}


def r_series(case, key):
    return pd.Series(case[key], index=case["coef_names"])


def test_boundary_optimum_is_reached_by_step_halving():
    """As R's glm.fit: invalid steps are halved, the fit ends on the boundary with a warning."""
    assert len(BOUNDARY) == 2
    for name in BOUNDARY:
        case = CASES[name]
        with pytest.warns(ConvergenceWarning, match="boundary"):
            res = ig.glm(case["py"], FRAMES[case["data"]], family=case["family"],
                         link=case["link"]).fit()
        assert res.iteration_log["step_halvings"].sum() > 0
        assert res.n_iter == case["default"]["iter"]


def test_reference_covers_the_issue():
    """>= 8 combinations; every family/link the issue lists; the formula features."""
    assert len(CASES) >= 8
    pairs = {(c["family"], c["link"]) for c in CASES.values()}
    assert pairs >= {("gaussian", "identity"), ("gaussian", "log"), ("binomial", "logit"),
                     ("binomial", "probit"), ("binomial", "cloglog"), ("poisson", "log"),
                     ("gamma", "inverse"), ("gamma", "log")}
    text = " ".join(c["py"] for c in CASES.values())
    for feature in ("*", "np.log(", "I(", "C(", "0 +", "- 1"):
        assert feature in text
    assert any(c["offset"] for c in CASES.values()) and any(c["weights"] for c in CASES.values())


@pytest.mark.parametrize("name", list(CASES))
def test_coefficients_and_se_match_r(fits, name):
    case, res = CASES[name], fits[name]
    assert sorted(r_name(n) for n in res.params.index) == sorted(case["coef_names"])
    ours = res.params.rename(r_name)
    np.testing.assert_allclose(ours[case["coef_names"]], case["coef"], rtol=COEF_RTOL_R)
    np.testing.assert_allclose(res.bse.rename(r_name)[case["coef_names"]], case["se"],
                               rtol=SE_RTOL_R)


@pytest.mark.parametrize("name", list(CASES))
def test_pvalues_match_r(fits, name):
    """t tests (df_resid) for estimated dispersion, z tests otherwise, as summary.glm."""
    case, res = CASES[name], fits[name]
    np.testing.assert_allclose(res.pvalues.rename(r_name)[case["coef_names"]], case["pvalues"],
                               rtol=SE_RTOL_R, atol=1e-300)


@pytest.mark.parametrize("name", list(CASES))
def test_default_settings_reproduce_r_default_glm(name):
    """tol=1e-8, maxiter=25: the same iterations as R's glm.fit, hence the same estimates;
    the standard errors are computed at the final coefficients (R's formula evaluated at
    R's final coefficients, ``se_final`` in make_glm_reference.R), not at the previous
    iterate's weights as summary.glm does."""
    case = CASES[name]
    res = fit_case(case)
    ref = case["default"]
    assert res.n_iter == ref["iter"]
    ours = res.params.rename(r_name)[case["coef_names"]]
    np.testing.assert_allclose(ours, ref["coef"], rtol=COEF_RTOL_R)
    np.testing.assert_allclose(res.bse.rename(r_name)[case["coef_names"]], ref["se_final"],
                               rtol=SE_RTOL_R)
    assert res.deviance == pytest.approx(ref["deviance"], rel=OBJECTIVE_RTOL)
    assert res.aic == pytest.approx(ref["aic"], rel=OBJECTIVE_RTOL)


@pytest.mark.parametrize("name", list(CASES))
def test_fit_statistics_match_r(fits, name):
    case, res = CASES[name], fits[name]
    for ours, key in ((res.deviance, "deviance"), (res.null_deviance, "null_deviance"),
                      (res.aic, "aic"), (res.bic, "bic"), (res.llf, "loglik"),
                      (res.scale, "dispersion"), (res.pearson_chi2, "pearson_chi2")):
        assert ours == pytest.approx(case[key], rel=COEF_RTOL_R), key
    assert res.df_resid == case["df_residual"]
    # at epsilon = 1e-15 the last iteration can be decided by rounding: allow one more or less
    assert res.converged and abs(res.n_iter - case["iter"]) <= 1


@pytest.mark.parametrize("name", list(CASES))
def test_fitted_values_and_residuals_match_r(fits, name):
    case, res = CASES[name], fits[name]
    for attr, key in (("fittedvalues", "fitted"), ("resid_deviance", "resid_deviance"),
                      ("resid_pearson", "resid_pearson"), ("resid_working", "resid_working"),
                      ("resid_response", "resid_response")):
        np.testing.assert_allclose(getattr(res, attr).to_numpy()[:10], case[key],
                                   rtol=COEF_RTOL_R, atol=1e-9, err_msg=attr)


@pytest.mark.filterwarnings("ignore::statsmodels.tools.sm_exceptions.DomainWarning")
# statsmodels has no step halving, so the boundary cases are R-only
@pytest.mark.parametrize("name", [n for n in CASES if n not in BOUNDARY])
def test_coefficients_match_statsmodels(fits, name):
    case, res = CASES[name], fits[name]
    data = DATA_FRAME.assign(outcome=(DATA_FRAME["outcome"] == "yes").astype(float))
    fam = SM_FAMILIES[case["family"]](link=SM_LINKS[case["link"]]())
    kw = {}
    if case["weights"]:
        kw["var_weights"] = data[case["weights"]].to_numpy()
    if case["offset"]:
        kw["offset"] = data[case["offset"]].to_numpy()
    ref = smf.glm(case["py"], data, family=fam, **kw).fit(tol=1e-15, maxiter=200)
    assert list(res.params.index) == list(ref.params.index)
    b = ref.params.to_numpy()
    # relative to the coefficient vector's size, so that a coefficient near 0 is not held
    # to an absolute 1e-8 * |b_j| that no convergence criterion on the deviance gives
    np.testing.assert_allclose(res.params.to_numpy(), b, rtol=COEF_RTOL_STATSMODELS,
                               atol=COEF_RTOL_STATSMODELS * np.max(np.abs(b)))
    assert res.deviance == pytest.approx(ref.deviance, rel=1e-9)
    if case["family"] in ("binomial", "poisson") and not case["weights"]:
        # no scale to choose: statsmodels' llf is R's (its var_weights are not binomial trials)
        assert res.llf == pytest.approx(ref.llf, rel=1e-9)


def test_inference_tables_are_consistent(fits):
    """t/z, p-values and Wald intervals from params and bse (t for estimated scale, as R)."""
    from scipy import stats
    g, b = fits["gaussian_interactions"], fits["binomial_logit"]
    assert g.use_t and not b.use_t
    np.testing.assert_allclose(g.tvalues, g.params / g.bse, rtol=1e-14)
    np.testing.assert_allclose(g.pvalues, 2 * stats.t.sf(np.abs(g.tvalues), g.df_resid), rtol=1e-12)
    np.testing.assert_allclose(b.pvalues, 2 * stats.norm.sf(np.abs(b.tvalues)), rtol=1e-12)
    ci = b.conf_int(0.1)
    np.testing.assert_allclose(ci[1] - b.params, stats.norm.ppf(0.95) * b.bse, rtol=1e-12)
    np.testing.assert_allclose(np.sqrt(np.diag(b.cov_params())), b.bse, rtol=1e-15)


def test_predict_new_data_matches_fitted(fits):
    case = CASES["poisson_offset"]
    res = fits["poisson_offset"]
    new = DATA_FRAME.iloc[[5, 0, 17]]
    np.testing.assert_allclose(res.predict(new), res.fittedvalues.iloc[[5, 0, 17]], rtol=1e-13)
    eta = res.predict(new, which="linear")
    np.testing.assert_allclose(np.exp(eta), res.predict(new), rtol=1e-14)
    assert list(eta.index) == [5, 0, 17]
    assert case["offset"] == "logexp"


def test_caller_dataframe_is_unchanged():
    data = DATA_FRAME.copy()
    data.loc[3, "x1"] = np.nan
    before = data.copy()
    res = ig.glm("outcome ~ x1 + np.log(x3) + C(k)", data, family="binomial", weights="w").fit()
    res.predict(data)
    pd.testing.assert_frame_equal(data, before)
    assert res.n_dropped == 1 and res.nobs == len(data) - 1
    assert "Rows dropped (NA):" in str(res.summary()) and "'yes'" in str(res.summary())


def test_summary_layout(fits):
    text = str(fits["binomial_levels"].summary())
    lines = text.splitlines()
    assert "Generalized Linear Model Regression Results" in lines[0]
    for key in ("Dep. Variable:", "Model Family:", "Link Function:", "No. Observations:",
                "Df Residuals:", "Deviance:", "Pearson chi2:", "Log-Likelihood:", "AIC:",
                "Success level:"):
        assert key in text
    assert re.search(r"^x1\s+-?\d", text, re.M)
    assert "P>|z|" in text


def test_results_are_immutable(fits):
    res = fits["gaussian_log"]
    with pytest.raises(AttributeError):
        res.params = None
    with pytest.raises(AttributeError):
        res.deviance = 1.0
    p = res.params
    p.iloc[0] = 99.0
    assert res.params.iloc[0] != 99.0


# ---------------------------------------------------------------- bad input (one test each)

def test_binomial_response_of_two_is_rejected():
    data = DATA_FRAME.assign(y2=DATA_FRAME["y_logit"] * 2)
    with pytest.raises(DataError, match=r"'y2'.*\[0, 1\]"):
        ig.glm("y2 ~ x1", data, family="binomial")


def test_negative_count_is_rejected():
    data = DATA_FRAME.assign(c=DATA_FRAME["count"] - 1)
    with pytest.raises(DataError, match=r"'c'.*non-negative"):
        ig.glm("c ~ x1", data, family="poisson")


def test_non_positive_gamma_response_is_rejected():
    data = DATA_FRAME.assign(g=DATA_FRAME["y_gamma_log"] - 1)
    with pytest.raises(DataError, match=r"'g'.*positive"):
        ig.glm("g ~ x1", data, family="gamma")


def test_unknown_family_and_link():
    with pytest.raises(ModelError, match="poisson"):
        ig.glm("count ~ x1", DATA_FRAME, family="poison")
    with pytest.raises(ModelError, match="not available for the poisson"):
        ig.glm("count ~ x1", DATA_FRAME, family="poisson", link="probit")


def test_aliased_column_is_named():
    data = DATA_FRAME.assign(x1copy=2 * DATA_FRAME["x1"] + 1)
    with pytest.raises(ModelError, match=r"'x1copy'.*aliased"):
        ig.glm("y_gauss ~ x1 + x1copy", data).fit()


def test_unknown_column_and_formula_error_reach_the_user():
    with pytest.raises(ColumnNotFoundError, match="did you mean 'x1'"):
        ig.glm("y_gauss ~ x11", DATA_FRAME)
    with pytest.raises(FormulaError):
        ig.glm("y_gauss ~ x1 +", DATA_FRAME)


def test_prior_sd_without_hat_factor_is_rejected():
    with pytest.raises(ModelError, match="not \\^ factors"):
        ig.glm("y_gauss ~ x1", DATA_FRAME, prior_sd={"user": 1.0})


# ---------------------------------------------------------------- warnings

def test_separation_warning():
    x = np.arange(20.0)
    data = pd.DataFrame({"x": x, "y": (x > 9.5).astype(float)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)   # R also reports non-convergence
        with pytest.warns(SeparationWarning, match="numerically 0 or 1"):
            ig.glm("y ~ x", data, family="binomial").fit()


def test_convergence_warning_when_maxiter_is_too_small():
    case = CASES["binomial_cloglog"]
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        res = ig.glm(case["py"], DATA_FRAME, family="binomial", link="cloglog").fit(maxiter=2)
    assert not res.converged and res.n_iter == 2
    assert len(res.iteration_log) == 2


def test_no_warning_on_a_regular_fit():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit_case(CASES["gamma_inverse"])


def test_ill_conditioned_design_uses_qr_and_matches_lstsq():
    """Columns x, x^2 on x in [1000, 1001]: the Gram matrix is too ill-conditioned for
    Cholesky (pivot < 1e-4), the QR path gives the least-squares solution."""
    rng = np.random.default_rng(5)
    x = rng.uniform(1000, 1001, 200)
    y = 3 + 0.5 * (x - 1000) + rng.normal(0, 0.1, 200)
    data = pd.DataFrame({"x": x, "y": y})
    res = ig.glm("y ~ x + I(x**2)", data).fit()
    X = np.column_stack([np.ones_like(x), x, x**2])
    want, *_ = np.linalg.lstsq(X, y, rcond=None)
    np.testing.assert_allclose(res.params.to_numpy(), want, rtol=1e-6)
    rss = np.sum((y - X @ want) ** 2)
    assert res.deviance == pytest.approx(rss, rel=1e-8)
    from impactglm.solvers.irls import weighted_least_squares
    assert weighted_least_squares(X, np.ones_like(x), y)[2]       # the QR path was taken


# ---------------------------------------------------------------- the array-level IRLS entry

def test_fit_irls_input_errors_name_the_problem():
    from impactglm.solvers.irls import fit_irls
    X = np.column_stack([np.ones(5), np.arange(5.0)])
    y = np.array([0.0, 1.0, 0.0, 1.0, 1.0])
    bad = X.copy()
    bad[3, 1] = np.inf
    with pytest.raises(DataError, match=r"'age'.*row 3"):
        fit_irls(bad, y, None, None, "binomial", column_names=["Intercept", "age"])
    with pytest.raises(DataError, match="weights must be non-negative; row 2"):
        fit_irls(X, y, np.array([1, 1, -1, 1, 1.0]), None, "binomial")
    with pytest.raises(DataError, match="expected \\(5,\\)"):
        fit_irls(X, y[:4], None, None, "binomial")
    with pytest.raises(ModelError, match="cannot identify"):
        fit_irls(X, y, np.array([1, 0, 0, 0, 0.0]), None, "binomial")


def test_zero_weight_rows_do_not_count(fits):
    """Rows with weight 0 change nothing but the row count (R: df.residual excludes them)."""
    case = CASES["poisson_zero_weights"]
    res = fits["poisson_zero_weights"]
    kept = DATA_FRAME[DATA_FRAME["w0"] > 0]
    sub = ig.glm(case["py"], kept, family="poisson", weights="w0").fit(**TIGHT)
    np.testing.assert_allclose(res.params, sub.params, rtol=1e-12)
    assert res.deviance == pytest.approx(sub.deviance, rel=1e-12)
    assert res.nobs == sub.nobs == len(kept) and res.df_resid == sub.df_resid


def test_verbose_prints_the_iterations(capsys):
    fit_case(CASES["binomial_probit"], verbose=True)
    out = capsys.readouterr().out
    assert out.count("IRLS iteration") == CASES["binomial_probit"]["default"]["iter"]


def test_family_object_equals_family_name(fits):
    case = CASES["binomial_probit"]
    res = ig.glm(case["py"], DATA_FRAME, family=ig.families.Binomial(link="probit")).fit(**TIGHT)
    pd.testing.assert_series_equal(res.params, fits["binomial_probit"].params)
    assert res.family == ig.families.get_family("binomial", "probit")


def test_gaussian_log_link_with_non_positive_responses_matches_statsmodels():
    """R's glm asks for starting values here; we start at a positive floor and reach the MLE."""
    rng = np.random.default_rng(9)
    x = rng.normal(size=300)
    y = np.exp(0.5 + 0.4 * x) + rng.normal(0, 0.8, 300)
    assert (y <= 0).any()
    data = pd.DataFrame({"x": x, "y": y})
    res = ig.glm("y ~ x", data, link="log").fit(**TIGHT)
    ref = smf.glm("y ~ x", data, family=sm.families.Gaussian(link=sm.families.links.Log())
                  ).fit(tol=1e-15, maxiter=200)
    np.testing.assert_allclose(res.params, ref.params, rtol=COEF_RTOL_STATSMODELS)


def test_binomial_response_encodings_agree(fits):
    """0/1, boolean, strings and a two-level categorical give the same fit; the summary
    names the level counted as success."""
    ref = fits["binomial_levels"]
    yes = DATA_FRAME["outcome"] == "yes"
    variants = {
        "01": (yes.astype(int), "1"),
        "bool": (yes, "True"),
        "cat": (pd.Categorical(DATA_FRAME["outcome"], categories=["no", "yes"]), "'yes'"),
    }
    for label, (column, success) in variants.items():
        data = DATA_FRAME.assign(resp=column)
        res = ig.glm("resp ~ x1 + x2", data, family="binomial").fit(**TIGHT)
        np.testing.assert_allclose(res.params, ref.params, rtol=1e-12, err_msg=label)
        assert re.search(rf"Success level:\s+{re.escape(success)}\s", str(res.summary())), label
    flipped = DATA_FRAME.assign(
        resp=pd.Categorical(DATA_FRAME["outcome"], categories=["yes", "no"]))
    res = ig.glm("resp ~ x1 + x2", flipped, family="binomial").fit(**TIGHT)
    np.testing.assert_allclose(res.params, -ref.params, rtol=1e-10)


def test_warnings_point_at_the_callers_line():
    x = np.arange(20.0)
    data = pd.DataFrame({"x": x, "y": (x > 9.5).astype(float)})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ig.glm("y ~ x", data, family="binomial").fit()
    assert {type(w.message) for w in caught} >= {SeparationWarning, ConvergenceWarning}
    assert all(w.filename == __file__ for w in caught)


def test_all_zero_weights_are_rejected_before_fitting():
    with pytest.raises(DataError, match="positive weight"):
        ig.glm("y_gauss ~ x1", DATA_FRAME, weights=np.zeros(len(DATA_FRAME)))


def test_non_integer_successes_warn_as_r():
    data = DATA_FRAME.assign(p=DATA_FRAME["prop"])
    with pytest.warns(ig.errors.ImpactGLMWarning, match="non-integer numbers of successes"):
        ig.glm("p ~ x1", data, family="binomial")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ig.glm("p ~ x1", data, family="binomial", weights="trials")

"""Issue 15 features vs frozen R values (tests/data/glm_parity.json, made by
make_glm_parity.R: R 4.2 with MASS, sandwich, statmod): inverse gaussian, Tweedie,
quasi families, gaussian inverse link, negative binomial (fixed theta and MASS::glm.nb),
sandwich::vcovHC / vcovCL, anova.glm, predict.glm(se.fit = TRUE)."""
from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pandas as pd
import pytest

import impactglm as ig
from impactglm import families
from conftest import COEF_RTOL_R, DATA, OBJECTIVE_RTOL, SE_RTOL_R

REF = json.loads((DATA / "glm_parity.json").read_text())
FRAME = pd.read_csv(DATA / "glm_parity.csv")
FRAME["logexpo"] = np.log(FRAME["expo"])
TIGHT = {"tol": 1e-14, "maxiter": 100}


def r_name(name: str) -> str:
    """Patsy column name -> R coefficient name."""
    name = re.sub(r"C\((\w+)\)\[(?:T\.)?([^\]]+)\]", r"\1\2", name)
    return "(Intercept)" if name == "Intercept" else name


def make_family(case) -> families.Family:
    name, link = case["family"], case["link"]
    if name == "tweedie":
        return families.Tweedie(link=link, var_power=case["var_power"])
    if name == "negative_binomial" and case.get("theta") is not None:
        return families.NegativeBinomial(link=link, theta=case["theta"])
    return families.get_family(name, link)


def fit(case, formula=None, **fit_kw):
    kw = {k: case[k] for k in ("weights", "offset") if case.get(k) is not None}
    model = ig.glm(formula or case["py"], FRAME, family=make_family(case), **kw)
    return model.fit(**fit_kw)


def ours(res, case, values=None):
    s = res.params if values is None else values
    return s.rename(r_name)[case["coef_names"]].to_numpy()


FAMILY_CASES = {c["name"]: c for c in REF["families"]}


@pytest.fixture(scope="module")
def family_fits():
    return {name: fit(c, **TIGHT) for name, c in FAMILY_CASES.items()}


@pytest.mark.parametrize("name", list(FAMILY_CASES))
def test_family_coefficients_se_and_deviance_match_r(family_fits, name):
    case, res = FAMILY_CASES[name], family_fits[name]
    np.testing.assert_allclose(ours(res, case), case["coef"], rtol=COEF_RTOL_R)
    np.testing.assert_allclose(ours(res, case, res.bse), case["se"], rtol=SE_RTOL_R)
    assert res.deviance == pytest.approx(case["deviance"], rel=OBJECTIVE_RTOL)
    assert res.null_deviance == pytest.approx(case["null_deviance"], rel=1e-8)
    assert res.df_resid == case["df_residual"]
    assert res.scale == pytest.approx(case["dispersion"], rel=SE_RTOL_R)
    np.testing.assert_allclose(res.resid_deviance.to_numpy()[:8], case["resid_deviance"],
                               rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(res.resid_pearson.to_numpy()[:8], case["resid_pearson"],
                               rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(res.fittedvalues.to_numpy()[:8], case["fitted"], rtol=1e-8)


@pytest.mark.parametrize("name", list(FAMILY_CASES))
def test_family_aic_and_loglik_as_r(family_fits, name):
    """R's AIC where R has one; quasi families have none (NaN); Tweedie: R's statmod has
    none, ours is the exact density (checked in test_parity_statsmodels.py)."""
    case, res = FAMILY_CASES[name], family_fits[name]
    if case["family"].startswith("quasi"):
        assert case["aic"] is None and np.isnan(res.aic) and np.isnan(res.llf)
    elif case["family"] == "tweedie":
        assert case["aic"] is None and np.isfinite(res.aic)
    else:
        assert res.aic == pytest.approx(case["aic"], rel=OBJECTIVE_RTOL)
        assert res.llf == pytest.approx(case["loglik"], rel=OBJECTIVE_RTOL)


@pytest.mark.parametrize("name", list(FAMILY_CASES))
def test_family_default_settings_reproduce_r_iterations(name):
    case = FAMILY_CASES[name]
    res = fit(case)
    assert res.n_iter == case["default"]["iter"]
    np.testing.assert_allclose(ours(res, case), case["default"]["coef"], rtol=COEF_RTOL_R)
    assert res.deviance == pytest.approx(case["default"]["deviance"], rel=OBJECTIVE_RTOL)


# ------------------------------------------------------------------ MASS::glm.nb

NB_CASES = {c["name"]: c for c in REF["glmnb"]}


def fit_glmnb(case):
    kw = {"weights": case["weights"]} if case.get("weights") else {}
    return ig.glm(case["py"], FRAME, family="negative_binomial", **kw).fit()


@pytest.mark.parametrize("name", list(NB_CASES))
def test_glmnb_theta_coefficients_and_aic_match_mass(name):
    """MASS's defaults (alternating IRLS and theta.ml) reproduced step for step."""
    case = NB_CASES[name]
    res = fit_glmnb(case)
    assert res.family.theta == pytest.approx(case["theta"], rel=COEF_RTOL_R)
    assert res.family.theta_estimated
    np.testing.assert_allclose(ours(res, case), case["coef"], rtol=COEF_RTOL_R)
    np.testing.assert_allclose(ours(res, case, res.bse), case["se"], rtol=SE_RTOL_R)
    assert res.aic == pytest.approx(case["aic_nb"], rel=1e-9)
    assert 2 * res.llf == pytest.approx(case["twologlik"], rel=1e-9)
    assert res.deviance == pytest.approx(case["deviance"], rel=1e-7)
    assert res.null_deviance == pytest.approx(case["null_deviance"], rel=1e-7)
    assert f"Theta (estimated):" in res.summary().text


def test_glmnb_theta_standard_error_matches_mass():
    for case in NB_CASES.values():
        res = fit_glmnb(case)
        assert res._extra["theta_se"] == pytest.approx(case["theta_se"], rel=SE_RTOL_R)


# ------------------------------------------------------------------ sandwich

SW_CASES = {c["name"]: c for c in REF["sandwich"]}


@pytest.mark.parametrize("name", list(SW_CASES))
@pytest.mark.parametrize("cov_type", ["HC0", "HC1", "HC2", "HC3", "cluster"])
def test_robust_standard_errors_match_sandwich(name, cov_type):
    case = SW_CASES[name]
    kw = {"groups": "g"} if cov_type == "cluster" else {}
    res = fit(case, cov_type=cov_type, **TIGHT, **kw)
    assert res.cov_type == cov_type
    np.testing.assert_allclose(ours(res, case, res.bse), case[cov_type], rtol=SE_RTOL_R)


@pytest.mark.parametrize("name", list(SW_CASES))
def test_robust_covariance_matrices_match_sandwich(name):
    case = SW_CASES[name]
    order = None
    for cov_type, key in (("HC0", "HC0_cov"), ("cluster", "cluster_cov")):
        res = fit(case, cov_type=cov_type, groups="g" if cov_type == "cluster" else None, **TIGHT)
        cov = res.cov_params().rename(index=r_name, columns=r_name)
        order = case["coef_names"]
        np.testing.assert_allclose(cov.loc[order, order].to_numpy(), case[key],
                                   rtol=1e-5, atol=1e-12)


def test_model_based_se_unchanged_by_default(family_fits):
    case = SW_CASES["poisson_log"]
    res = fit(case, **TIGHT)
    assert res.cov_type == "nonrobust"
    np.testing.assert_allclose(ours(res, case, res.bse), case["se"], rtol=SE_RTOL_R)


# ------------------------------------------------------------------ anova

AN_CASES = {c["name"]: c for c in REF["anova"]}


@pytest.mark.parametrize("name", list(AN_CASES))
def test_anova_matches_r(name):
    case = AN_CASES[name]
    fam = families.get_family(case["family"], case["link"])
    fits = [ig.glm(f, FRAME, family=fam).fit(**TIGHT) for f in case["py"]]
    table = ig.anova(*fits, test=case["test"])
    np.testing.assert_allclose(table["Resid. Df"], case["resid_df"])
    np.testing.assert_allclose(table["Resid. Dev"], case["resid_dev"], rtol=1e-9)
    np.testing.assert_allclose(table["Df"].iloc[1:], case["df"])
    np.testing.assert_allclose(table["Deviance"].iloc[1:], case["deviance"], rtol=1e-7)
    pcol = "Pr(>F)" if case["test"] == "F" else "Pr(>Chi)"
    np.testing.assert_allclose(table[pcol].iloc[1:], case["pvalue"], rtol=SE_RTOL_R)
    if case["test"] == "F":
        np.testing.assert_allclose(table["F"].iloc[1:], case["F"], rtol=SE_RTOL_R)


def test_anova_rejects_fits_on_different_rows_or_families():
    a = ig.glm("cnt ~ x1", FRAME, family="poisson").fit()
    b = ig.glm("cnt ~ x1", FRAME.iloc[:300], family="poisson").fit()
    c = ig.glm("cnt ~ x1", FRAME, family="quasipoisson").fit()
    with pytest.raises(ig.errors.ModelError, match="rows"):
        ig.anova(a, b)
    with pytest.raises(ig.errors.ModelError, match="family"):
        ig.anova(a, c)
    with pytest.raises(ig.errors.ModelError, match="two"):
        ig.anova(a)
    with pytest.warns(ig.errors.ImpactGLMWarning, match="F test"):
        ig.anova(a, ig.glm("cnt ~ x1 + x2", FRAME, family="poisson").fit(), test="F")


# ------------------------------------------------------------------ predict.glm se.fit

PR_CASES = {c["name"]: c for c in REF["predict"]}


@pytest.mark.parametrize("name", list(PR_CASES))
def test_prediction_standard_errors_match_predict_glm(name):
    case = PR_CASES[name]
    res = fit(case, **TIGHT)
    new = FRAME.iloc[case["rows"]]
    pred = res.get_prediction(new)
    np.testing.assert_allclose(pred.linpred, case["fit_link"], rtol=1e-8)
    np.testing.assert_allclose(pred.se_linpred, case["se_link"], rtol=SE_RTOL_R)
    np.testing.assert_allclose(pred.predicted_mean, case["fit_mean"], rtol=1e-8)
    np.testing.assert_allclose(pred.se_mean, case["se_mean"], rtol=SE_RTOL_R)
    frame = pred.summary_frame()
    assert list(frame.columns) == ["mean", "mean_se", "mean_ci_lower", "mean_ci_upper"]
    assert np.all(frame.mean_ci_lower < frame["mean"]) and np.all(frame["mean"] < frame.mean_ci_upper)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(res.predict(new), case["fit_mean"], rtol=1e-8)

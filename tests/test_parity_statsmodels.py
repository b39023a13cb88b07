"""Issue 15 features vs statsmodels (live) on the same formulas and data
(tests/data/glm_parity.csv), at the tiers of conftest.py: families and their
log-likelihoods, robust covariances, Wald tests, prediction intervals, Anscombe residuals."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf

import impactglm as ig
from impactglm import families
from conftest import COEF_RTOL_STATSMODELS, DATA, OBJECTIVE_RTOL

FRAME = pd.read_csv(DATA / "glm_parity.csv")
FRAME["logexpo"] = np.log(FRAME["expo"])
TIGHT = {"tol": 1e-14, "maxiter": 100}
L = sm.families.links
SE_RTOL = 1e-7      # standard errors of two converged fits (coefficients agree to 1e-9)

# name: (formula, impactglm family, statsmodels family)
CASES = {
    "invgauss_inverse_squared": ("ypos ~ x2 + C(k)", families.InverseGaussian(),
                                 sm.families.InverseGaussian()),
    "invgauss_log": ("ypos ~ x2 + C(k)", families.InverseGaussian("log"),
                     sm.families.InverseGaussian(L.Log())),
    "invgauss_identity": ("ypos ~ x2", families.InverseGaussian("identity"),
                          sm.families.InverseGaussian(L.Identity())),
    "tweedie_15": ("ytw ~ x1 + C(k)", families.Tweedie(var_power=1.5),
                   sm.families.Tweedie(var_power=1.5, link=L.Log())),
    "tweedie_12": ("ytw ~ x1 + x2", families.Tweedie(var_power=1.2),
                   sm.families.Tweedie(var_power=1.2, link=L.Log())),
    "negbin_alpha": ("cnt ~ x1 + C(k)", families.NegativeBinomial(alpha=0.6),
                     sm.families.NegativeBinomial(alpha=0.6)),
    "gaussian_inverse": ("ygauss_inv ~ x2 + C(k)", families.Gaussian("inverse"),
                         sm.families.Gaussian(L.InversePower())),
    "binomial_probit": ("ybin ~ x1 + x2", families.Binomial("probit"),
                        sm.families.Binomial(L.Probit())),
    "poisson": ("cnt ~ x1 + C(k)", families.Poisson(), sm.families.Poisson()),
}


def fits(name, **kw):
    formula, fam, smfam = CASES[name]
    sm_kw = {}
    if "cov_type" in kw:
        sm_kw["cov_type"] = kw["cov_type"]
        if kw["cov_type"] == "cluster":
            sm_kw["cov_kwds"] = {"groups": pd.factorize(FRAME["g"])[0]}
    ours = ig.glm(formula, FRAME, family=fam).fit(**TIGHT, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = smf.glm(formula, FRAME, family=smfam).fit(tol=1e-14, maxiter=100, **sm_kw)
    return ours, theirs


@pytest.mark.parametrize("name", list(CASES))
def test_coefficients_deviance_and_pearson_match_statsmodels(name):
    """Coefficients at the statsmodels tier relative to the largest coefficient: with a
    non-canonical link Fisher scoring converges linearly and R's deviance rule stops once
    the deviance change is rounding (~1e-8 from the optimum in the coefficients)."""
    ours, theirs = fits(name)
    b = theirs.params.to_numpy()
    np.testing.assert_allclose(ours.params, b, rtol=COEF_RTOL_STATSMODELS,
                               atol=10 * COEF_RTOL_STATSMODELS * np.max(np.abs(b)))
    np.testing.assert_allclose(ours.bse, theirs.bse, rtol=SE_RTOL)
    assert ours.deviance == pytest.approx(theirs.deviance, rel=OBJECTIVE_RTOL)
    assert ours.pearson_chi2 == pytest.approx(theirs.pearson_chi2, rel=1e-9)
    assert ours.scale == pytest.approx(theirs.scale, rel=1e-9)
    assert ours.df_resid == theirs.df_resid


@pytest.mark.parametrize("name", list(CASES))
def test_loglik_matches_statsmodels(name):
    """ours.llf equals statsmodels' where both take the same scale (Pearson for Tweedie,
    1 for the counts and binomial); R's choices differ from statsmodels' for the inverse
    gaussian (D/sum(w)) and a non-identity gaussian link (D/n; statsmodels: Pearson), so
    there the log-likelihood function is compared at statsmodels' scale."""
    ours, theirs = fits(name)
    fam = ours.family
    y, mu = FRAME[CASES[name][0].split(" ~")[0]].to_numpy(float), ours.fittedvalues.to_numpy()
    if isinstance(fam, (families.InverseGaussian, families.Gaussian)):
        want = theirs.model.family.loglike(theirs.model.endog, theirs.mu, scale=theirs.scale)
        assert fam.loglik(y, mu, None, scale=theirs.scale) == pytest.approx(want, rel=1e-9)
    else:
        assert ours.llf == pytest.approx(theirs.llf, rel=1e-9)


def test_negative_binomial_fixed_alpha_aic_counts_no_extra_parameter():
    ours, theirs = fits("negbin_alpha")
    assert ours.aic == pytest.approx(theirs.aic, rel=1e-9)       # -2 llf + 2 p


@pytest.mark.parametrize("name", ["poisson", "binomial_probit", "negbin_alpha", "tweedie_15",
                                  "invgauss_log"])
@pytest.mark.parametrize("cov_type", ["HC0", "cluster"])
def test_robust_covariances_match_statsmodels(name, cov_type):
    """statsmodels' sandwich uses the observed-information bread: information="observed"
    (for canonical links both breads are equal)."""
    kw = {"cov_type": cov_type, "information": "observed"}
    if cov_type == "cluster":
        kw["groups"] = "g"
    ours, theirs = fits(name, **kw)
    np.testing.assert_allclose(ours.cov_params(), theirs.cov_params(), rtol=1e-6, atol=1e-14)


def test_observed_information_matches_statsmodels_newton_hessian():
    ours, theirs = fits("binomial_probit", information="observed")
    H = theirs.model.hessian(theirs.params.to_numpy(), observed=True)
    np.testing.assert_allclose(ours.cov_params(), np.linalg.inv(-H), rtol=1e-7)
    eim, _ = fits("binomial_probit")
    assert not np.allclose(eim.bse, ours.bse, rtol=1e-4)   # non-canonical: they differ


def test_groups_as_array_with_dropped_rows():
    data = FRAME.copy()
    data.loc[[3, 10], "x1"] = np.nan
    by_name = ig.glm("cnt ~ x1", data, family="poisson").fit(cov_type="cluster", groups="g")
    by_array = ig.glm("cnt ~ x1", data, family="poisson").fit(cov_type="cluster",
                                                               groups=data["g"].to_numpy())
    np.testing.assert_allclose(by_name.bse, by_array.bse, rtol=1e-14)
    kept = data.dropna(subset=["x1"])
    theirs = smf.glm("cnt ~ x1", kept, family=sm.families.Poisson()).fit(
        cov_type="cluster", cov_kwds={"groups": pd.factorize(kept["g"])[0]})
    np.testing.assert_allclose(by_name.bse, theirs.bse, rtol=1e-6)
    with pytest.raises(ig.errors.DataError, match="groups"):
        ig.glm("cnt ~ x1", data, family="poisson").fit(cov_type="cluster", groups=[1, 2, 3])
    with pytest.raises(ig.errors.ModelError, match="groups"):
        ig.glm("cnt ~ x1", data, family="poisson").fit(cov_type="HC0", groups="g")
    with pytest.raises(ig.errors.ModelError, match="cov_type"):
        ig.glm("cnt ~ x1", data, family="poisson").fit(cov_type="HC9")


@pytest.mark.parametrize("use_f", [False, True])
def test_wald_test_matches_statsmodels(use_f):
    ours, theirs = fits("poisson")
    names = list(ours.params.index)
    R = np.zeros((2, len(names)))
    R[0, names.index("x1")] = 1
    R[1, names.index("C(k)[T.b]")], R[1, names.index("C(k)[T.c]")] = 1, -1
    got = ours.wald_test(R, q=[0.4, 0.0], use_f=use_f)
    want = theirs.wald_test((R, np.array([0.4, 0.0])), use_f=use_f, scalar=True)
    assert got.statistic == pytest.approx(float(want.statistic), rel=1e-7)
    assert got.pvalue == pytest.approx(float(want.pvalue), rel=1e-6)
    eq = ours.wald_test("x1 = 0.4, C(k)[T.b] = C(k)[T.c]", use_f=use_f)
    assert eq.statistic == pytest.approx(got.statistic, rel=1e-12)
    want_eq = theirs.wald_test("x1 = 0.4, C(k)[T.b] = C(k)[T.c]", use_f=use_f, scalar=True)
    assert eq.pvalue == pytest.approx(float(want_eq.pvalue), rel=1e-6)
    with pytest.raises(ig.errors.ModelError, match="cannot read"):
        ours.wald_test("__import__('os') = 1")
    with pytest.raises(ig.errors.ModelError, match="q="):
        ours.wald_test("x1 = 0", q=[1.0])
    by_name = ours.wald_test(["C(k)[T.b]", "C(k)[T.c]", "C(k)[T.d]"])
    assert by_name.df_num == 3 and by_name.distribution == "chi2"
    with pytest.raises(ig.errors.ModelError, match="not a coefficient"):
        ours.wald_test("nope")


@pytest.mark.parametrize("name", ["poisson", "binomial_probit", "invgauss_log"])
def test_prediction_summary_frame_matches_statsmodels(name):
    ours, theirs = fits(name)
    new = FRAME.iloc[[0, 5, 17, 250]]
    got = ours.get_prediction(new).summary_frame(alpha=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = theirs.get_prediction(new).summary_frame(alpha=0.1)
    np.testing.assert_allclose(got["mean"], want["mean"], rtol=1e-8)
    np.testing.assert_allclose(got["mean_se"], want["mean_se"], rtol=1e-6)
    if not ours.use_t:       # statsmodels' GLM intervals use the normal quantile
        np.testing.assert_allclose(got[["mean_ci_lower", "mean_ci_upper"]],
                                   want[["mean_ci_lower", "mean_ci_upper"]], rtol=1e-6)
    train = ours.get_prediction().summary_frame()
    np.testing.assert_allclose(train["mean"], ours.fittedvalues, rtol=1e-12)


@pytest.mark.parametrize("name", list(CASES))
def test_anscombe_residuals_match_statsmodels(name):
    ours, theirs = fits(name)
    np.testing.assert_allclose(ours.resid_anscombe, theirs.resid_anscombe_scaled,
                               rtol=1e-6, atol=1e-8)


def test_quasipoisson_is_poisson_with_pearson_scale():
    formula = "cnt ~ x1 + C(k)"
    ours = ig.glm(formula, FRAME, family="quasipoisson").fit(**TIGHT)
    theirs = smf.glm(formula, FRAME, family=sm.families.Poisson()).fit(scale="X2", tol=1e-14)
    np.testing.assert_allclose(ours.params, theirs.params, rtol=COEF_RTOL_STATSMODELS)
    np.testing.assert_allclose(ours.bse, theirs.bse, rtol=SE_RTOL)
    assert ours.use_t and np.isnan(ours.aic)


def test_saved_models_keep_family_parameters(tmp_path):
    res = ig.glm("ytw ~ x1", FRAME, family=families.Tweedie(var_power=1.3)).fit()
    res.save(tmp_path / "m.json")
    back = ig.load(tmp_path / "m.json")
    assert back.family == families.Tweedie(var_power=1.3)
    np.testing.assert_allclose(back.predict(FRAME.iloc[:5]), res.predict(FRAME.iloc[:5]),
                               rtol=1e-15)
    nb = ig.glm("cnt ~ x1", FRAME, family="negative_binomial").fit(cov_type="HC1")
    nb.save(tmp_path / "nb.json")
    back = ig.load(tmp_path / "nb.json")
    assert back.family.theta == nb.family.theta and back.family.theta_estimated
    assert back.cov_type == "HC1"
    np.testing.assert_allclose(back.bse, nb.bse, rtol=1e-15)


def test_family_parameter_errors():
    with pytest.raises(ig.errors.ModelError, match="between 1 and 2"):
        families.Tweedie(var_power=2.5)
    with pytest.raises(ig.errors.ModelError, match="not both"):
        families.NegativeBinomial(alpha=1, theta=1)
    with pytest.raises(ig.errors.ModelError, match="positive"):
        families.NegativeBinomial(alpha=-1)
    with pytest.raises(ig.errors.DataError, match="non-negative"):
        ig.glm("x1 ~ x2", FRAME, family="negative_binomial")
    with pytest.raises(ig.errors.ModelError, match="without \\^ terms"):
        ig.glm("cnt ~ x1 + ^g", FRAME, family="poisson").fit(cov_type="HC0")


# ------------------------------------------------------------------ weights, exposure, offset()

WEIGHT_CASES = {
    "poisson": ("cnt ~ x1 + C(k)", families.Poisson(), sm.families.Poisson()),
    "gamma_log": ("ypos ~ x1 + x2", families.Gamma("log"), sm.families.Gamma(L.Log())),
    "gaussian": ("ypos ~ x1 + x2", families.Gaussian(), sm.families.Gaussian()),
    "negbin_alpha": ("cnt ~ x1", families.NegativeBinomial(alpha=0.6),
                     sm.families.NegativeBinomial(alpha=0.6)),
}


@pytest.mark.parametrize("kind", ["freq_weights", "var_weights"])
@pytest.mark.parametrize("name", list(WEIGHT_CASES))
def test_freq_and_var_weights_match_statsmodels(name, kind):
    formula, fam, smfam = WEIGHT_CASES[name]
    ours = ig.glm(formula, FRAME, family=fam, **{kind: "w"}).fit(**TIGHT)
    theirs = smf.glm(formula, FRAME, family=smfam, **{kind: FRAME["w"]}).fit(tol=1e-14,
                                                                            maxiter=100)
    b = theirs.params.to_numpy()
    np.testing.assert_allclose(ours.params, b, rtol=COEF_RTOL_STATSMODELS,
                               atol=10 * COEF_RTOL_STATSMODELS * np.max(np.abs(b)))
    np.testing.assert_allclose(ours.bse, theirs.bse, rtol=SE_RTOL)
    assert ours.df_resid == theirs.df_resid
    assert ours.scale == pytest.approx(theirs.scale, rel=1e-8)
    assert ours.deviance == pytest.approx(theirs.deviance, rel=OBJECTIVE_RTOL)
    if not isinstance(fam, families.Gamma):     # R's gamma llf profiles D/sum(w)
        assert ours.llf == pytest.approx(theirs.llf, rel=1e-10)
    hc_ours = ig.glm(formula, FRAME, family=fam, **{kind: "w"}).fit(
        cov_type="HC0", information="observed", **TIGHT)
    hc_theirs = smf.glm(formula, FRAME, family=smfam, **{kind: FRAME["w"]}).fit(
        cov_type="HC0", tol=1e-14, maxiter=100)
    np.testing.assert_allclose(hc_ours.bse, hc_theirs.bse, rtol=1e-6)


@pytest.mark.parametrize("family", ["gamma", "poisson", "gaussian"])
def test_freq_weights_equal_replicated_rows(family):
    """freq_weights=w is the fit on the data with row i repeated w_i times."""
    formula = "cnt ~ x1 + C(k)" if family == "poisson" else "ypos ~ x1 + x2"
    rep = FRAME.loc[FRAME.index.repeat(FRAME["w"])].reset_index(drop=True)
    a = ig.glm(formula, FRAME, family=family, freq_weights="w").fit(**TIGHT)
    b = ig.glm(formula, rep, family=family).fit(**TIGHT)
    np.testing.assert_allclose(a.params, b.params, rtol=1e-10)
    np.testing.assert_allclose(a.bse, b.bse, rtol=1e-10)
    for key in ("df_resid", "scale", "llf", "aic", "bic", "deviance", "pearson_chi2"):
        assert getattr(a, key) == pytest.approx(getattr(b, key), rel=1e-10), key
    for cov_type in ("HC0", "HC1"):
        a = ig.glm(formula, FRAME, family=family, freq_weights="w").fit(cov_type=cov_type, **TIGHT)
        b = ig.glm(formula, rep, family=family).fit(cov_type=cov_type, **TIGHT)
        np.testing.assert_allclose(a.bse, b.bse, rtol=1e-9)


def test_exposure_and_offset_term_match_statsmodels(tmp_path):
    theirs = smf.glm("cnt ~ x1 + C(k)", FRAME, family=sm.families.Poisson(),
                     exposure=FRAME["expo"]).fit(tol=1e-14)
    by_column = ig.glm("cnt ~ x1 + C(k)", FRAME, family="poisson", exposure="expo").fit(**TIGHT)
    by_array = ig.glm("cnt ~ x1 + C(k)", FRAME, family="poisson",
                      exposure=FRAME["expo"].to_numpy()).fit(**TIGHT)
    by_term = ig.glm("cnt ~ x1 + C(k) + offset(np.log(expo))", FRAME,
                     family="poisson").fit(**TIGHT)
    for res in (by_column, by_array, by_term):
        np.testing.assert_allclose(res.params, theirs.params, rtol=COEF_RTOL_STATSMODELS)
        np.testing.assert_allclose(res.bse, theirs.bse, rtol=SE_RTOL)
        assert res.null_deviance == pytest.approx(theirs.null_deviance, rel=1e-9)
        assert res.llf == pytest.approx(theirs.llf, rel=1e-12)
    assert list(by_term.params.index) == ["Intercept", "C(k)[T.b]", "C(k)[T.c]", "C(k)[T.d]", "x1"]
    new = FRAME.iloc[[2, 30, 77]]
    want = theirs.predict(new, exposure=new["expo"])
    by_term.save(tmp_path / "m.json")
    loaded = ig.load(tmp_path / "m.json")          # reads expo from the new rows itself
    for res in (by_column, by_term, loaded):
        np.testing.assert_allclose(res.predict(new), want, rtol=1e-10)
    with pytest.raises(ig.errors.ColumnNotFoundError):
        loaded.predict(new.drop(columns="expo"))
    with pytest.raises(ig.errors.DataError, match="exposure must be positive"):
        ig.glm("cnt ~ x1", FRAME, family="poisson", exposure=np.zeros(len(FRAME)))
    with pytest.raises(ig.errors.DataError, match="freq_weights"):
        ig.glm("cnt ~ x1", FRAME, family="poisson", freq_weights=[1, 2])

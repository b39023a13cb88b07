"""lme4 users' features of ig.lmm against lme4 1.1-31 (tests/data/lme4_features.json, made by
tests/data/make_lme4_features.R): condVar, anova with the ML refit, predict(re.form), nested names."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

import impactglm as ig
from impactglm.errors import ImpactGLMError, ModelError, UnseenLevelWarning

from conftest import DATA, LMM_BLUP_ATOL, LMM_DEVIANCE_ATOL, read_csv

R = json.loads((DATA / "lme4_features.json").read_text())


@pytest.fixture(scope="module")
def ss() -> pd.DataFrame:
    return read_csv("sleepstudy.csv").assign(Subject=lambda d: d["Subject"].astype(str))


def _fit(formula, data, reml=True):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ig.lmm(formula, data).fit(reml=reml)


def test_condvar_matches_lme4(ss):
    res = _fit("Reaction ~ Days + (Days | Subject)", ss)
    ref = R["condvar"]
    frame = res.ranef("Subject", condvar=True)
    assert [str(x) for x in frame.index] == ref["levels"]
    np.testing.assert_allclose(frame["(Intercept)"], ref["intercept"], atol=1e-3)
    np.testing.assert_allclose(frame["Days"], ref["days"], atol=1e-4)
    # lme4's own optimum is ~1e-6 relative short of the exact one: conditional variances to 1e-4
    np.testing.assert_allclose(frame["condvar((Intercept))"], ref["var_intercept"], rtol=1e-4)
    np.testing.assert_allclose(frame["condvar(Days)"], ref["var_days"], rtol=1e-4)
    np.testing.assert_allclose(frame["condcov((Intercept),Days)"], ref["cov"], rtol=1e-4)
    post = res.ranef_condvar("Subject")[("(Intercept)", "Days")]
    assert post.shape == (18, 2, 2)
    np.testing.assert_allclose(post[:, 1, 0], post[:, 0, 1])
    np.testing.assert_allclose(np.sqrt(post[:, 1, 1]), frame["condsd(Days)"], rtol=1e-12)


@pytest.mark.parametrize("case,formulas,reml", [
    ("fm0_fm1", ("Reaction ~ Days + (1 | Subject)", "Reaction ~ Days + (Days | Subject)"), True),
    ("fm2_fm1", ("Reaction ~ 1 + (Days | Subject)", "Reaction ~ Days + (Days | Subject)"), True),
    ("ml0_ml1", ("Reaction ~ Days + (1 | Subject)", "Reaction ~ Days + (Days | Subject)"), False),
])
def test_anova_matches_lme4(ss, case, formulas, reml):
    ref = R["anova"][case]
    fits = [_fit(f, ss, reml) for f in formulas]
    # given in the reverse order: anova sorts by npar, as lme4
    tab = ig.anova(fits[1], fits[0], names=["m1", "m0"])
    assert list(tab.index) == ["m0", "m1"]
    assert list(tab["npar"]) == ref["npar"]
    for col in ("AIC", "BIC", "logLik", "deviance"):
        np.testing.assert_allclose(tab[col], ref[col], atol=LMM_DEVIANCE_ATOL)
    assert np.isnan(tab["Chisq"].iloc[0]) and np.isnan(tab["Pr(>Chisq)"].iloc[0])
    assert tab["Chisq"].iloc[1] == pytest.approx(ref["Chisq"][1], abs=LMM_DEVIANCE_ATOL)
    assert tab["Df"].iloc[1] == ref["Df"][1]
    assert tab["Pr(>Chisq)"].iloc[1] == pytest.approx(ref["p"][1], rel=1e-3)
    assert fits[0].reml == reml                  # the fits themselves are not changed


def test_anova_refit_false_and_errors(ss):
    ref = R["anova"]["refit_false"]
    fits = [_fit(f, ss) for f in ("Reaction ~ Days + (1 | Subject)",
                                   "Reaction ~ Days + (Days | Subject)")]
    tab = ig.anova(*fits, refit=False)
    np.testing.assert_allclose(tab["logLik"], ref["logLik"], atol=LMM_DEVIANCE_ATOL)
    assert tab["Chisq"].iloc[1] == pytest.approx(ref["Chisq"][1], abs=LMM_DEVIANCE_ATOL)
    with pytest.raises(ImpactGLMError, match="two or more"):
        ig.anova(fits[0])
    with pytest.raises(ImpactGLMError, match="same rows"):
        ig.anova(fits[0], _fit("Reaction ~ Days + (1 | Subject)", ss.iloc[:100]))
    with pytest.raises(ImpactGLMError, match="not"):
        ig.anova(fits[0], "m1")


@pytest.fixture(scope="module")
def fu(ss):
    return _fit("Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)", ss)


@pytest.mark.parametrize("re_form,key", [(None, "all"), ("NA", "none"), ("~0", "none"),
                                         (float("nan"), "none"),
                                         ("~ (1 | Subject)", "intercept"),
                                         ("~(0 + Days|Subject)", "slope")])
def test_predict_re_form_matches_lme4(fu, re_form, key):
    ref = R["predict"]
    nd = pd.DataFrame(ref["newdata"])
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        pred = fu.predict(nd, re_form=re_form)
    np.testing.assert_allclose(pred.to_numpy(), ref[key], atol=1e-3)
    if key == "none":
        assert fu.last_unseen == {} and not w
    else:                                         # Subject 999 was never seen: b = 0, counted
        assert fu.last_unseen == {"Subject": 1}
        assert any(issubclass(x.category, UnseenLevelWarning) for x in w)


def test_predict_re_form_on_training_rows(fu, ss):
    np.testing.assert_allclose(fu.predict(re_form="NA").to_numpy()[:5], R["predict"]["fitted_none"],
                               atol=1e-3)
    np.testing.assert_allclose(fu.predict().to_numpy(), fu.fittedvalues.to_numpy())
    np.testing.assert_allclose(fu.predict(include_random=False), fu.predict(re_form="NA"))
    pen = read_csv("Penicillin.csv")
    fp = _fit("diameter ~ 1 + (1 | plate) + (1 | sample)", pen)
    for g in ("plate", "sample"):
        np.testing.assert_allclose(fp.predict(re_form=f"~(1|{g})").to_numpy()[:10],
                                   R["predict_penicillin"][g], atol=1e-4)
        np.testing.assert_allclose(fp.predict(pen, re_form=f"~(1|{g})").to_numpy()[:10],
                                   R["predict_penicillin"][g], atol=1e-4)


def test_predict_re_form_errors(fu):
    with pytest.raises(ModelError, match="not a random-effects term"):
        fu.predict(re_form="~ (1 | Days)")
    with pytest.raises(ModelError, match="re_form must be"):
        fu.predict(re_form=3)


def test_nested_factor_named_as_lme4():
    toy = read_csv("lmm_toy.csv")
    ref = R["nested"]
    res = _fit("y ~ x + (1 | a/b)", toy)
    assert list(res.groups) == ref["groups"]
    assert list(res.theta.index) == ref["theta_names"]
    assert res.criterion == pytest.approx(ref["criterion"], abs=LMM_DEVIANCE_ATOL)
    frame = res.ranef("b:a")
    assert [str(x) for x in frame.index] == ref["levels"]
    np.testing.assert_allclose(frame["(Intercept)"], ref["modes"], atol=LMM_BLUP_ATOL)
    # prediction on new data maps the levels to lme4's order too
    np.testing.assert_allclose(res.predict(toy).to_numpy(), res.fittedvalues.to_numpy(),
                               rtol=1e-12)
    np.testing.assert_allclose(res.predict(toy, re_form="~(1|b:a)").to_numpy(),
                               res.predict(toy, re_form="~(1|a/b)").to_numpy()
                               - res.predict(toy, re_form="~(1|a)").to_numpy()
                               + res.predict(toy, re_form="NA").to_numpy(), rtol=1e-12)
    # an explicit interaction keeps its written name (as lme4)
    explicit = _fit("y ~ x + (1 | a) + (1 | a:b)", toy)
    assert "a:b" in explicit.groups

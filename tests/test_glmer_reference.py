"""prior_sd="auto" for binomial/poisson ^ fits vs glmer(nAGQ = 0)'s variance components (issue 11).

References: tests/data/glmer.json, made by tests/data/make_glmer.R (lme4 1.1-31) from the CSVs
beside it; the impactglm call of each case is in tests/glmer_cases.py (and, as text, in the
JSON's python_call).  impactglm's prior_sd[g] is glmer's random-intercept sd of (1 | g); it
must equal the tight nAGQ = 0 optimum to GLMM_PRIOR_SD_RTOL.  At glmer's own prior sds, the
fixed effects and level effects are the joint penalised mode of nAGQ = 0 and must equal fixef()
and ranef() (cbpp and grouseticks store every conditional mode).
"""
from __future__ import annotations

import numpy as np
import pytest

import glmer_cases
from conftest import EXACT_RTOL, GLMM_PRIOR_SD_RTOL

REF = glmer_cases.reference()["cases"]

# Cases prior_sd="auto" does not meet (strict: an unexpected pass fails).  Since issue 11 part 3
# (exact gradient of the Laplace criterion, quasi-Newton in log tau) every case passes: measured
# cbpp 1.6e-8, verbagg 9.5e-7, verbagg_fixed 1.9e-7, grouseticks 4.3e-7, movielens 2.5e-7
# (nAGQ = 1, method="laplace": at most 3.5e-6).
FAILS_TODAY: dict[str, str] = {}
SLOW = {"movielens"}


def _param(name: str):
    marks = []
    if name in FAILS_TODAY:
        marks.append(pytest.mark.xfail(strict=True, reason=FAILS_TODAY[name]))
    if name in SLOW:
        marks.append(pytest.mark.slow)
    return pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("name", list(glmer_cases.CASES))
def test_python_call_is_the_reference_call(name):
    assert glmer_cases.call_text(name) == REF[name]["python_call"]


@pytest.mark.parametrize("name", list(glmer_cases.CASES))
@pytest.mark.parametrize("nagq", ["nagq0", "nagq1"])
def test_reference_tight_fit_is_the_optimum(name, nagq):
    """The frozen tight refit is at least as good as glmer's default fit and is a strict local
    minimum: no parameter on its bound 0, positive-definite finite-difference Hessian, and a
    Newton step -H^-1 g at most 2% of the tolerance the engine must meet."""
    r = REF[name][nagq]
    assert r["tight"]["criterion_glmer"] <= r["default"]["criterion_glmer"] + 1e-8
    chk = r["tight_check"]
    assert not any(np.atleast_1d(chk["at_lower_bound"]))
    assert np.min(chk["hessian_eigenvalues"]) > 0
    par = np.array(list(chk["parameters"].values()))
    assert np.all(np.abs(chk["newton_step"]) <= 2e-2 * GLMM_PRIOR_SD_RTOL * np.maximum(np.abs(par), 1))


@pytest.mark.parametrize("name", [_param(n) for n in glmer_cases.CASES])
def test_prior_sd_auto_equals_glmer_nagq0(name):
    want = REF[name]["nagq0"]["tight"]["prior_sd"]
    res = glmer_cases.fit(name)
    got = {g: res.prior_sd[g] for g in want}
    np.testing.assert_allclose(list(got.values()), list(want.values()), rtol=GLMM_PRIOR_SD_RTOL,
                               err_msg=f"prior_sd {got} vs glmer nAGQ=0 {want}")


@pytest.mark.parametrize("name", [_param(n) for n in glmer_cases.CASES])
def test_method_laplace_equals_glmer_nagq1(name):
    """fit(method="laplace") is glmer's default nAGQ = 1 (beta in the outer optimisation): prior
    sds and fixed effects equal the tight nAGQ = 1 optimum; the level effects are the conditional
    modes at those values (cbpp and grouseticks store them)."""
    r = REF[name]["nagq1"]["tight"]
    res = glmer_cases.fit(name, method="laplace")
    want = r["prior_sd"]
    np.testing.assert_allclose([res.prior_sd[g] for g in want], list(want.values()),
                               rtol=GLMM_PRIOR_SD_RTOL)
    got = {glmer_cases.r_name(k): v for k, v in res.params.items()}
    fe = r["fixed_effects"]
    np.testing.assert_allclose([got[k] for k in fe], list(fe.values()), rtol=GLMM_PRIOR_SD_RTOL, atol=1e-4)
    for g, modes in r.get("ranef", {}).items():
        le = res.level_effects(g)
        have = dict(zip((str(v) for v in le.index), le["effect"].to_numpy()))
        np.testing.assert_allclose([have[k] for k in modes], list(modes.values()), rtol=1e-3, atol=1e-4)


def test_method_names_for_glmms():
    """method="nagq0" is the default (and what "reml", fit()'s default, means) for binomial and
    poisson; "laplace" is nAGQ = 1; anything else is a clear error."""
    from impactglm.errors import ModelError
    a = glmer_cases.fit("cbpp")
    b = glmer_cases.fit("cbpp", method="nagq0")
    assert a.prior_sd["herd"] == b.prior_sd["herd"]
    with pytest.raises(ModelError, match="nagq0"):
        glmer_cases.fit("cbpp", method="ml")


@pytest.mark.parametrize("name", ["cbpp", "grouseticks"])
def test_mode_at_glmer_prior_sd_equals_fixef_and_ranef(name):
    """prior_sd fixed at glmer's tight nAGQ = 0 values: the fit is nAGQ = 0's joint mode."""
    r = REF[name]["nagq0"]["tight"]
    c = glmer_cases.CASES[name]
    import impactglm as ig
    res = ig.glm(c.formula, glmer_cases.load(name), family=c.family, prior_sd=r["prior_sd"],
                 **c.kwargs).fit(tol=1e-10)
    got = {glmer_cases.r_name(k): v for k, v in res.params.items()}
    assert set(got) == set(r["fixed_effects"])
    np.testing.assert_allclose([got[k] for k in r["fixed_effects"]], list(r["fixed_effects"].values()),
                               rtol=EXACT_RTOL, atol=1e-8)
    for g, modes in r["ranef"].items():
        le = res.level_effects(g)
        got = dict(zip((str(v) for v in le.index), le["effect"].to_numpy()))
        assert set(got) == set(modes)
        np.testing.assert_allclose([got[k] for k in modes], list(modes.values()), rtol=EXACT_RTOL,
                                   atol=1e-7, err_msg=g)

"""Families and links vs statsmodels' independent implementations, and bad responses."""
from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm

from impactglm import families
from impactglm.errors import DataError, ModelError
from conftest import OBJECTIVE_RTOL

rng = np.random.default_rng(11)
N = 200
W = rng.integers(1, 5, N).astype(float)

CASES = {
    "gaussian": (families.Gaussian(), sm.families.Gaussian(), rng.normal(1, 2, N), rng.normal(1, 1, N)),
    "binomial": (families.Binomial(), sm.families.Binomial(), rng.integers(0, 2, N).astype(float),
                 rng.uniform(0.05, 0.95, N)),
    "poisson": (families.Poisson(), sm.families.Poisson(), rng.poisson(3, N).astype(float),
                rng.gamma(3, 1, N)),
    "gamma": (families.Gamma(), sm.families.Gamma(), rng.gamma(2, 1.5, N), rng.gamma(3, 1, N)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_variance_and_deviance_match_statsmodels(name):
    fam, smfam, y, mu = CASES[name]
    np.testing.assert_allclose(fam.variance(mu), smfam.variance(mu), rtol=OBJECTIVE_RTOL)
    np.testing.assert_allclose(fam.deviance(y, mu, W), smfam.deviance(y, mu, var_weights=W),
                               rtol=OBJECTIVE_RTOL)


@pytest.mark.parametrize("name", list(CASES))
def test_loglik_matches_statsmodels_at_fixed_scale(name):
    fam, smfam, y, mu = CASES[name]
    if name == "binomial":
        # weights are trials: y proportions of W trials (statsmodels: n_trials via var_weights)
        k = rng.binomial(W.astype(int), 0.4)
        y = k / W
        from scipy.stats import binom
        want = np.sum(binom.logpmf(k, W, mu))
        assert fam.loglik(y, mu, W) == pytest.approx(want, rel=OBJECTIVE_RTOL)
        return
    w = W if name in ("gaussian", "poisson") else np.ones(N)
    scale = 1.0 if fam.fixed_scale else 1.7
    want = smfam.loglike(y, mu, var_weights=w, scale=scale)
    assert fam.loglik(y, mu, w, scale=scale) == pytest.approx(want, rel=OBJECTIVE_RTOL)


def test_gaussian_profiled_loglik_is_maximum_over_scale():
    fam, _, y, mu = CASES["gaussian"]
    best = fam.loglik(y, mu, W)
    phi = fam.default_scale(y, mu, W)
    assert phi == pytest.approx(np.sum(W * (y - mu) ** 2) / N, rel=1e-14)
    for s in (0.9 * phi, 1.1 * phi):
        assert fam.loglik(y, mu, W, scale=s) < best


def test_aic_counts_the_dispersion_parameter():
    fam, _, y, mu = CASES["gamma"]
    assert fam.aic(y, mu, None, k=3) == pytest.approx(-2 * fam.loglik(y, mu) + 2 * 4, rel=1e-14)
    fam, _, y, mu = CASES["poisson"]
    assert fam.aic(y, mu, None, k=3) == pytest.approx(-2 * fam.loglik(y, mu) + 2 * 3, rel=1e-14)


@pytest.mark.parametrize("link", ["logit", "probit", "cloglog"])
def test_link_roundtrip(link):
    fam = families.get_family("binomial", link)
    mu = np.linspace(0.01, 0.99, 99)
    np.testing.assert_allclose(fam.link.inverse(fam.link.link(mu)), mu, rtol=1e-12)


def test_get_family_names_links_and_objects():
    assert families.get_family("Gamma", "log") == families.Gamma(link="log")
    assert families.get_family(families.Binomial(link="probit")).link.name == "probit"
    assert families.get_family(families.Binomial(), "cloglog").link.name == "cloglog"
    assert families.get_family("poisson").link.code == families.LINK_CODES["log"]
    assert families.get_family("gamma").link.name == "inverse"


def test_unknown_family_and_bad_link_raise_model_error():
    with pytest.raises(ModelError, match="binomial"):
        families.get_family("binomal")
    with pytest.raises(ModelError, match="probit"):
        families.get_family("poisson", "probit")


def test_binomial_response_outside_range_names_column_and_row():
    y = np.array([0.0, 1.0, 2.0, 1.0])
    with pytest.raises(DataError, match=r"'admit'.*row 2 has 2\.0"):
        families.Binomial().check_response(y, "admit")


def test_negative_count_names_row_label():
    with pytest.raises(DataError, match=r"'count'.*non-negative.*row 'r1'"):
        families.Poisson().check_response(np.array([1.0, -1.0]), "count",
                                   row_labels=np.array(["r0", "r1"]))


def test_gamma_needs_positive_response():
    with pytest.raises(DataError, match="positive"):
        families.Gamma().check_response(np.array([1.0, 0.0]), "cost")
    families.Gamma().check_response(np.array([1.0, 0.5]), "cost")


def test_nan_response_is_rejected():
    with pytest.raises(DataError, match="finite"):
        families.Gaussian().check_response(np.array([1.0, np.nan]), "y")

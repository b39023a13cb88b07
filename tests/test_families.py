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


# ------------------------------------------------------------------ issue 15 families and links

NEW = {
    "inverse_gaussian": (families.InverseGaussian(), sm.families.InverseGaussian(),
                         rng.gamma(2, 1.0, N), rng.gamma(3, 0.5, N)),
    "negative_binomial": (families.NegativeBinomial(alpha=0.7), sm.families.NegativeBinomial(alpha=0.7),
                          rng.poisson(3, N).astype(float), rng.gamma(3, 1, N)),
    "tweedie": (families.Tweedie(var_power=1.4), sm.families.Tweedie(var_power=1.4),
                np.where(rng.uniform(size=N) < 0.3, 0.0, rng.gamma(2, 1.0, N)), rng.gamma(3, 1, N)),
}


@pytest.mark.parametrize("name", list(NEW))
def test_new_families_variance_deviance_loglik_match_statsmodels(name):
    fam, smfam, y, mu = NEW[name]
    np.testing.assert_allclose(fam.variance(mu), smfam.variance(mu), rtol=OBJECTIVE_RTOL)
    np.testing.assert_allclose(fam.deviance(y, mu, W), smfam.deviance(y, mu, var_weights=W),
                               rtol=OBJECTIVE_RTOL)
    scale = 1.0 if fam.fixed_scale else 1.3
    w = W if name != "inverse_gaussian" else np.ones(N)   # R's IG llf weights d_i, not y
    want = smfam.loglike(y, mu, var_weights=w, scale=scale)
    assert fam.loglik(y, mu, w, scale=scale) == pytest.approx(want, rel=OBJECTIVE_RTOL)


def test_tweedie_density_integrates_to_one():
    """The series density (plus the point mass at 0) integrates to 1 (scipy quad)."""
    from scipy import integrate
    fam = families.Tweedie(var_power=1.6)
    mu, phi = 1.7, 0.8
    mass0 = np.exp(fam.loglik(np.array([0.0]), np.array([mu]), scale=phi))

    def dens(t):
        return np.exp(fam.loglik(np.array([t]), np.array([mu]), scale=phi))
    total = mass0 + integrate.quad(dens, 0, 60, limit=200)[0]
    assert total == pytest.approx(1.0, abs=1e-8)


@pytest.mark.parametrize("link", ["identity", "log", "logit", "probit", "cloglog", "inverse",
                                  "inverse_squared"])
def test_mu_eta2_matches_finite_differences(link):
    lk = families.Link(link)
    eta = {"inverse": np.linspace(0.3, 3, 50), "inverse_squared": np.linspace(0.3, 3, 50)}.get(
        link, np.linspace(-3, 3, 50))
    h = 1e-5
    fd = (lk.mu_eta(eta + h) - lk.mu_eta(eta - h)) / (2 * h)
    np.testing.assert_allclose(lk.mu_eta2(eta), fd, rtol=1e-6, atol=1e-9)
    fd1 = (lk.inverse(eta + h) - lk.inverse(eta - h)) / (2 * h)
    np.testing.assert_allclose(lk.mu_eta(eta), fd1, rtol=1e-6, atol=1e-9)
    mu = lk.inverse(eta)
    np.testing.assert_allclose(lk.link(mu), eta, rtol=1e-8)     # cloglog near mu = 1


@pytest.mark.parametrize("fam", [families.Gaussian(), families.Binomial(), families.Poisson(),
                                 families.Gamma(), families.InverseGaussian(),
                                 families.NegativeBinomial(theta=2.0), families.Tweedie(var_power=1.3)],
                         ids=lambda f: f.name)
def test_variance_derivative_matches_finite_differences(fam):
    mu = np.linspace(0.1, 0.9, 30)
    h = 1e-6
    fd = (fam.variance(mu + h) - fam.variance(mu - h)) / (2 * h)
    np.testing.assert_allclose(fam.variance_deriv(mu), fd, rtol=1e-6, atol=1e-9)


def test_new_kernel_codes_match_numpy_twins():
    from numba import njit
    from impactglm.kernels import links as K

    @njit(cache=False)
    def run(eta, y, mu):
        out = np.empty((5, eta.size))
        for i in range(eta.size):
            out[0, i] = K.linkinv(eta[i], K.LINK_INVERSE_SQUARED)
            out[1, i] = K.mu_eta(eta[i], K.LINK_INVERSE_SQUARED)
            out[2, i] = K.variance(mu[i], K.FAMILY_INVERSE_GAUSSIAN)
            out[3, i] = K.unit_deviance(y[i], mu[i], K.FAMILY_INVERSE_GAUSSIAN)
            out[4, i] = K.valid_eta(eta[i], K.LINK_INVERSE_SQUARED)
        return out
    eta = np.linspace(0.05, 5, 200)
    y, mu = rng.gamma(2, 1, 200), rng.gamma(3, 1, 200)
    got = run(eta, y, mu)
    want = [K.linkinv_numpy(eta, K.LINK_INVERSE_SQUARED), K.mu_eta_numpy(eta, K.LINK_INVERSE_SQUARED),
            K.variance_numpy(mu, K.FAMILY_INVERSE_GAUSSIAN),
            K.unit_deviance_numpy(y, mu, K.FAMILY_INVERSE_GAUSSIAN),
            K.valid_eta_numpy(eta, K.LINK_INVERSE_SQUARED)]
    np.testing.assert_allclose(got, np.array(want, dtype=float), rtol=1e-12)
    assert not K.valid_eta_numpy(np.array([-1.0, 0.0]), K.LINK_INVERSE_SQUARED).any()


def test_new_family_names_and_aliases():
    assert families.get_family("inverse.gaussian", "1/mu^2") == families.InverseGaussian()
    assert families.get_family("Negative Binomial").theta_estimated
    assert families.get_family("quasipoisson").fixed_scale is False
    assert families.get_family(families.Tweedie(var_power=1.2), "identity").var_power == 1.2
    assert families.get_family(families.NegativeBinomial(alpha=0.5), "identity").alpha == 0.5
    with pytest.raises(ModelError, match="tweedie"):
        families.get_family("tweedy")

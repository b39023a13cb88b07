"""Numba device functions and kernels vs their NumPy twins (KERNEL_RTOL) and vs R's definitions."""
from __future__ import annotations

import numpy as np
import pytest
from numba import njit
from scipy import stats

from impactglm.kernels import links as link_kernels
from conftest import KERNEL_RTOL

LINKS = [link_kernels.LINK_IDENTITY, link_kernels.LINK_LOG, link_kernels.LINK_LOGIT, link_kernels.LINK_PROBIT, link_kernels.LINK_CLOGLOG, link_kernels.LINK_INVERSE]
FAMILIES = [link_kernels.FAMILY_GAUSSIAN, link_kernels.FAMILY_BINOMIAL, link_kernels.FAMILY_POISSON, link_kernels.FAMILY_GAMMA]


@njit(cache=True)
def _map_link(eta, code, which):
    out = np.empty_like(eta)
    for i in range(eta.size):
        out[i] = link_kernels.linkinv(eta[i], code) if which == 0 else link_kernels.mu_eta(eta[i], code)
    return out


@njit(cache=True)
def _map_family(y, mu, code, which):
    out = np.empty_like(mu)
    for i in range(mu.size):
        out[i] = link_kernels.variance(mu[i], code) if which == 0 else link_kernels.unit_deviance(y[i], mu[i], code)
    return out


def _eta_grid():
    rng = np.random.default_rng(1)
    grid = np.concatenate([np.linspace(-40, 40, 401), rng.normal(0, 3, 500),
                           [-800.0, -30.0, -29.999, 30.0, 30.001, 8.2, -8.2, 700.5, 0.0]])
    return grid


@pytest.mark.parametrize("code", LINKS)
def test_link_kernels_match_numpy_twins(code):
    eta = _eta_grid()
    if code == link_kernels.LINK_INVERSE:
        eta = eta[eta != 0]
    with np.errstate(over="ignore"):
        for which, twin in ((0, link_kernels.linkinv_numpy), (1, link_kernels.mu_eta_numpy)):
            got = _map_link(eta, code, which)
            want = twin(eta, code)
            np.testing.assert_allclose(got, want, rtol=KERNEL_RTOL, atol=0)


@pytest.mark.parametrize("code", FAMILIES)
def test_family_kernels_match_numpy_twins(code):
    rng = np.random.default_rng(2)
    if code == link_kernels.FAMILY_BINOMIAL:
        mu = rng.uniform(1e-9, 1 - 1e-9, 600)
        y = np.concatenate([rng.integers(0, 2, 300), rng.uniform(0, 1, 300)]).astype(float)
    elif code == link_kernels.FAMILY_GAUSSIAN:
        mu = rng.normal(0, 5, 600)
        y = rng.normal(0, 5, 600)
    else:
        mu = rng.gamma(2.0, 2.0, 600) + 1e-6
        y = (rng.poisson(3.0, 600).astype(float) if code == link_kernels.FAMILY_POISSON
             else rng.gamma(2.0, 1.0, 600))
    for which in (0, 1):
        got = _map_family(y, mu, code, which)
        want = link_kernels.variance_numpy(mu, code) if which == 0 else link_kernels.unit_deviance_numpy(y, mu, code)
        np.testing.assert_allclose(got, want, rtol=KERNEL_RTOL, atol=0)


def test_links_agree_with_independent_formulas():
    """Away from the clipping region the links are the textbook functions (scipy)."""
    eta = np.linspace(-6, 6, 121)
    np.testing.assert_allclose(link_kernels.linkinv_numpy(eta, link_kernels.LINK_LOGIT), 1 / (1 + np.exp(-eta)),
                               rtol=1e-14)
    np.testing.assert_allclose(link_kernels.linkinv_numpy(eta, link_kernels.LINK_PROBIT), stats.norm.cdf(eta), rtol=1e-13)
    np.testing.assert_allclose(link_kernels.mu_eta_numpy(eta, link_kernels.LINK_PROBIT), stats.norm.pdf(eta), rtol=1e-13)
    np.testing.assert_allclose(link_kernels.linkinv_numpy(eta[eta < 3], link_kernels.LINK_CLOGLOG),
                               1 - np.exp(-np.exp(eta[eta < 3])), rtol=1e-12)
    # derivatives by central differences
    h = 1e-6
    for code in LINKS:
        e = eta[np.abs(eta) > 0.5] if code == link_kernels.LINK_INVERSE else eta
        fd = (link_kernels.linkinv_numpy(e + h, code) - link_kernels.linkinv_numpy(e - h, code)) / (2 * h)
        np.testing.assert_allclose(link_kernels.mu_eta_numpy(e, code), fd, rtol=1e-6, atol=1e-10)


def test_link_clipping_as_r():
    """R's safeguards: logit/probit/cloglog stay strictly inside (0, 1); log stays >= eps."""
    eta = np.array([-1000.0, -50.0, 50.0, 1000.0])
    for code in (link_kernels.LINK_LOGIT, link_kernels.LINK_PROBIT, link_kernels.LINK_CLOGLOG):
        mu = _map_link(eta, code, 0)
        assert np.all(mu > 0) and np.all(mu < 1)
        assert np.all(_map_link(eta, code, 1) >= link_kernels.EPS)
    assert link_kernels.linkinv_numpy(np.array([-1000.0]), link_kernels.LINK_LOG)[0] == link_kernels.EPS
    # R: binomial()$linkinv(-31) == .Machine$double.eps / (1 + .Machine$double.eps)
    assert link_kernels.linkinv_numpy(np.array([-31.0]), link_kernels.LINK_LOGIT)[0] == link_kernels.EPS / (1 + link_kernels.EPS)


def test_unit_deviance_zero_responses():
    """y = 0 terms are the limits 0 log 0 = 0 (poisson 2 mu, binomial -2 log(1-mu))."""
    mu = np.array([0.5, 2.0])
    np.testing.assert_allclose(link_kernels.unit_deviance_numpy(np.zeros(2), mu, link_kernels.FAMILY_POISSON), 2 * mu,
                               rtol=1e-15)
    p = np.array([0.2, 0.7])
    np.testing.assert_allclose(link_kernels.unit_deviance_numpy(np.zeros(2), p, link_kernels.FAMILY_BINOMIAL),
                               -2 * np.log(1 - p), rtol=1e-15)
    np.testing.assert_allclose(link_kernels.unit_deviance_numpy(np.ones(2), p, link_kernels.FAMILY_BINOMIAL),
                               -2 * np.log(p), rtol=1e-15)
    got = _map_family(np.zeros(2), mu, link_kernels.FAMILY_POISSON, 1)
    assert np.all(np.isfinite(got))


# ---------------------------------------------------------------- fused IRLS pass

from impactglm.kernels.glm import irls_pass, irls_pass_numpy  # noqa: E402

PAIRS = [(link_kernels.FAMILY_GAUSSIAN, link_kernels.LINK_IDENTITY), (link_kernels.FAMILY_GAUSSIAN, link_kernels.LINK_LOG),
         (link_kernels.FAMILY_BINOMIAL, link_kernels.LINK_LOGIT), (link_kernels.FAMILY_BINOMIAL, link_kernels.LINK_PROBIT),
         (link_kernels.FAMILY_BINOMIAL, link_kernels.LINK_CLOGLOG), (link_kernels.FAMILY_POISSON, link_kernels.LINK_LOG),
         (link_kernels.FAMILY_GAMMA, link_kernels.LINK_INVERSE), (link_kernels.FAMILY_GAMMA, link_kernels.LINK_LOG)]


@pytest.mark.parametrize("fam,link", PAIRS)
def test_irls_pass_matches_numpy_twin(fam, link):
    rng = np.random.default_rng(fam * 10 + link)
    n = 1000
    eta = rng.normal(0.5, 1.5, n)
    if link == link_kernels.LINK_INVERSE:
        eta = np.abs(eta) + 0.05
    if fam == link_kernels.FAMILY_BINOMIAL:
        y = rng.integers(0, 2, n).astype(float)
        eta[:5] = [-40, 40, 31, -31, 9]          # clipped regions
    elif fam == link_kernels.FAMILY_POISSON:
        y = rng.poisson(2.0, n).astype(float)
    elif fam == link_kernels.FAMILY_GAMMA:
        y = rng.gamma(2.0, 1.0, n)
    else:
        y = rng.normal(1.0, 1.0, n)
    w = rng.integers(0, 4, n).astype(float)      # includes zero weights
    offset = rng.normal(0, 0.1, n)
    out_nb = [np.empty(n) for _ in range(3)]
    out_np = [np.empty(n) for _ in range(3)]
    dev_nb, ok_nb = irls_pass(y, w, eta, offset, link, fam, *out_nb)
    dev_np, ok_np = irls_pass_numpy(y, w, eta, offset, link, fam, *out_np)
    assert ok_nb == ok_np
    assert dev_nb == pytest.approx(dev_np, rel=KERNEL_RTOL)
    for a, b in zip(out_nb, out_np):
        np.testing.assert_allclose(a, b, rtol=KERNEL_RTOL, atol=0)


def test_irls_pass_flags_invalid_mu():
    n = 3
    eta = np.array([0.5, -0.2, 1.0])        # gamma/inverse: negative eta -> negative mu
    bufs = [np.empty(n) for _ in range(3)]
    _, ok = irls_pass(np.ones(n), np.ones(n), eta, np.zeros(n), link_kernels.LINK_INVERSE, link_kernels.FAMILY_GAMMA,
                      *bufs)
    assert not ok
    _, ok = irls_pass(np.ones(n), np.ones(n), np.abs(eta), np.zeros(n), link_kernels.LINK_INVERSE,
                      link_kernels.FAMILY_GAMMA, *bufs)
    assert ok


@pytest.mark.parametrize("fam", FAMILIES)
@pytest.mark.parametrize("which", ["mu", "eta"])
def test_validity_kernels_match_numpy_twins(fam, which):
    vals = np.array([-1.0, 0.0, 0.5, 1.0, 2.0, np.inf, np.nan])

    @njit
    def run(v, code, kind):
        out = np.empty(v.size, dtype=np.bool_)
        for i in range(v.size):
            out[i] = link_kernels.valid_mu(v[i], code) if kind == 0 else link_kernels.valid_eta(v[i], code)
        return out

    if which == "mu":
        np.testing.assert_array_equal(run(vals, fam, 0), link_kernels.valid_mu_numpy(vals, fam))
    else:
        for link in LINKS:
            np.testing.assert_array_equal(run(vals, link, 1), link_kernels.valid_eta_numpy(vals, link))


def test_weighted_gram_matches_numpy_twin():
    from impactglm.kernels.glm import weighted_gram, weighted_gram_numpy

    rng = np.random.default_rng(7)
    X = rng.uniform(0.1, 2.0, (500, 6))        # positive entries: no cancellation in the sums
    W = rng.uniform(0, 3, 500)
    W[::10] = 0.0
    z = rng.uniform(0.5, 1.5, 500)
    G, b = weighted_gram(X, W, z)
    G2, b2 = weighted_gram_numpy(X, W, z)
    np.testing.assert_allclose(G, G2, rtol=KERNEL_RTOL, atol=0)
    np.testing.assert_allclose(b, b2, rtol=KERNEL_RTOL, atol=0)
    np.testing.assert_array_equal(G, G.T)

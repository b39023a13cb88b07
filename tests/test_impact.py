"""Impact codes of impactglm.solvers.impact against hand computations."""
from __future__ import annotations

import math

import numpy as np
import pytest

from impactglm.solvers import impact
from impactglm.families import get_family


def test_balance_deficit_and_impact_step_by_hand():
    G = np.array([3.0, -1.0, 0.0])
    W = np.array([2.0, 0.5, 0.0])
    a = np.array([0.5, -0.2, 1.0])
    lam = 4.0                                    # tau = 0.5
    # b = G - lam a = [3 - 2, -1 + 0.8, 0 - 4]
    np.testing.assert_allclose(impact.balance_deficit(G, a, lam), [1.0, -0.2, -4.0])
    # s = b / (W + lam) = [1/6, -0.2/4.5, -4/4]
    np.testing.assert_allclose(impact.impact_step(G, W, a, lam), [1 / 6, -0.2 / 4.5, -1.0])


def test_summed_impact_by_hand():
    a = np.array([1.0, 2.0])
    D = np.array([[1.0, 0.0], [2.0, 1.0]])
    np.testing.assert_allclose(impact.summed_impact(a, D, np.array([0.5, -1.0])), [1.5, 2.0])


def test_smoothed_impact_code_logit_by_hand():
    fam = get_family("binomial")
    # level with 3 successes out of 4 rows, grand mean 0.5, kappa 2 pseudo-rows:
    # mu_l = (3 + 2 * 0.5) / (4 + 2) = 2/3 -> logit = log 2; grand logit 0
    code = impact.smoothed_impact_code(np.array([3.0, 0.0]), np.array([4.0, 0.0]), 0.5, 2.0, fam)
    assert code[0] == pytest.approx(math.log(2.0), rel=1e-14)
    assert code[1] == 0.0                      # empty level


def test_smoothed_impact_code_log_and_identity():
    pois = get_family("poisson")
    # counts 10 over 2 rows, grand mean 2, kappa 3: mu_l = (10 + 6) / 5 = 3.2
    code = impact.smoothed_impact_code(np.array([10.0]), np.array([2.0]), 2.0, 3.0, pois)
    assert code[0] == pytest.approx(math.log(3.2 / 2.0), rel=1e-14)
    gau = get_family("gaussian")
    code = impact.smoothed_impact_code(np.array([10.0]), np.array([2.0]), 2.0, 3.0, gau)
    assert code[0] == pytest.approx(3.2 - 2.0, rel=1e-14)


def test_prior_pseudo_weight_by_hand():
    # logit at mu = 0.2: w = mu (1 - mu) = 0.16; tau = 0.5 -> lam = 4 -> kappa = 25
    k = impact.prior_pseudo_weight(0.2, 0.5, get_family("binomial"))
    assert k == pytest.approx(25.0, rel=1e-12)
    # gaussian with sigma^2 = 2: w = 1/2; tau = 1 -> kappa = 2
    assert impact.prior_pseudo_weight(3.0, 1.0, get_family("gaussian"), scale=2.0) == pytest.approx(2.0)


def test_impact_code_is_first_newton_step_for_small_differences():
    """For a small deviation the code equals the Bayesian impact step from a = 0."""
    fam = get_family("binomial")
    mu_bar, tau, n_l = 0.3, 0.7, 50.0
    ybar = 0.3 + 1e-4
    kappa = impact.prior_pseudo_weight(mu_bar, tau, fam)
    code = impact.smoothed_impact_code(np.array([n_l * ybar]), np.array([n_l]), mu_bar, kappa, fam)[0]
    w = mu_bar * (1 - mu_bar)
    step = impact.impact_step(np.array([n_l * (ybar - mu_bar)]), np.array([n_l * w]),
                                np.array([0.0]), 1 / tau ** 2)[0]
    assert code == pytest.approx(step, rel=1e-3)

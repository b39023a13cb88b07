"""Per-level encodings of a high-cardinality factor (DESIGN.md section 3, step 2).

Every function here is small and pure: arrays of per-level sums in, one value
per level out.  Notation for one factor with levels l = 1..q:

    W_l   = sum_{i in l} w_i           (IRLS / Fisher weights, 1/phi included)
    G_l   = sum_{i in l} r_i           (score residuals d loglik_i / d eta_i)
    a_l   = current effect             (the summed impact)
    lam   = 1 / tau^2                  (prior precision; scalar or per level)

The penalised objective is f = -loglik/phi + sum_l lam a_l^2 / 2, so

    balance deficit     b_l = G_l - lam a_l            (= -df/da_l)
    Bayesian impact step  s_l = b_l / (W_l + lam)      (exact Newton step for a_l alone)
    summed impact       a_l + sum_j gamma_j d_{j,l}    (the effect carried between passes)
"""
from __future__ import annotations

import numpy as np


from ..families import Family

__all__ = ["smoothed_impact_code", "balance_deficit", "impact_step", "summed_impact",
           "prior_pseudo_weight"]


def prior_pseudo_weight(grand_mu: float, tau: float | None, family: Family,
                        ridge: float = 1e-5, scale: float = 1.0) -> float:
    """kappa = lam / w(mu_bar): the prior precision expressed in prior-weight units.

    w(mu_bar) = (dmu/deta)^2 / (V(mu_bar) phi) is the IRLS weight of one unit of prior
    weight at the grand mean, so a prior of precision lam = 1/tau^2 on the link
    scale is worth kappa "pseudo-rows" at the grand mean.  tau=None uses lam = ridge.
    """
    lam = ridge if tau is None else 1.0 / tau ** 2
    eta_bar = float(family.link.link(np.array([grand_mu]))[0])
    me = float(family.link.mu_eta(np.array([eta_bar]))[0])
    v = float(family.variance(np.array([grand_mu]))[0])
    return lam / (me * me / (v * scale))


def smoothed_impact_code(sum_wy: np.ndarray, sum_w: np.ndarray, grand_mu: float,
                         kappa: float, family: Family) -> np.ndarray:
    """Smoothed Bayesian impact code of every level (the starting effects).

        mu_l  = (sum_{i in l} pw_i y_i + kappa mu_bar) / (sum_{i in l} pw_i + kappa)
        code_l = g(mu_l) - g(mu_bar)

    i.e. the level mean shrunk towards the grand mean mu_bar by kappa pseudo-rows
    (:func:`prior_pseudo_weight`), on the link scale, relative to the grand value:
    shrunken log-odds for logit, log-rate for log, mean for identity.  For small
    differences it equals the Bayesian impact step from a = 0 at eta = g(mu_bar).
    A level without rows gets 0.
    """
    sum_wy = np.asarray(sum_wy, dtype=np.float64)
    sum_w = np.asarray(sum_w, dtype=np.float64)
    mu_l = (sum_wy + kappa * grand_mu) / (sum_w + kappa)
    with np.errstate(divide="ignore", invalid="ignore"):
        code = family.link.link(mu_l) - family.link.link(np.array([grand_mu]))[0]
    return np.where(np.isfinite(code) & (sum_w > 0), code, 0.0)


def balance_deficit(G: np.ndarray, a: np.ndarray, lam: np.ndarray | float) -> np.ndarray:
    """b_l = G_l - lam a_l: the penalised score (minus the gradient) of each level."""
    return G - lam * a


def impact_step(G: np.ndarray, W: np.ndarray, a: np.ndarray, lam: np.ndarray | float) -> np.ndarray:
    """s_l = (G_l - lam a_l) / (W_l + lam): the Newton step for a_l with all else fixed."""
    return balance_deficit(G, a, lam) / (W + lam)


def summed_impact(a: np.ndarray, directions: np.ndarray, gamma: np.ndarray) -> np.ndarray:
    """a + sum_j gamma_j d_j: the updated effects (directions has shape (q, J))."""
    return a + directions @ gamma

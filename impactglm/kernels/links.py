"""Link and variance functions as numba device functions, with NumPy twins.

Every function dispatches on an integer code (module constants below) so that
one compiled kernel serves every family/link pair.  The definitions, including
the numerical safeguards, are R's (``stats::make.link``, ``binomial()`` etc.):

* logit     mu = e/(1+e) with e = exp(eta) clipped to [eps, 1/eps] for |eta| > 30;
            dmu/deta = exp(eta)/(1+exp(eta))^2, or eps for |eta| > 30
* probit    mu = Phi(eta) with eta clipped to +-(-qnorm(eps)); dmu/deta = max(phi(eta), eps)
* cloglog   mu = 1 - exp(-exp(eta)) clipped to [eps, 1 - eps];
            dmu/deta = max(exp(eta) exp(-exp(eta)), eps) with eta capped at 700
* log       mu = max(exp(eta), eps); dmu/deta = max(exp(eta), eps)
* inverse   mu = 1/eta; dmu/deta = -1/eta^2
* inverse_squared (R's "1/mu^2")  mu = 1/sqrt(eta); dmu/deta = -1/(2 eta^1.5)
* identity  mu = eta; dmu/deta = 1

Variance V(mu): gaussian 1, binomial mu(1-mu), poisson mu, gamma mu^2, inverse
gaussian mu^3.  (Families with a parameter -- negative binomial, Tweedie -- have no
code: :mod:`impactglm.families` computes them with NumPy.)
Unit deviance d(y, mu) (R's ``dev.resids`` with weight 1):

* gaussian  (y - mu)^2
* binomial  2 [y log(y/mu) + (1-y) log((1-y)/(1-mu))]   (0 log 0 = 0)
* poisson   2 [y log(y/mu) - (y - mu)]                    (y = 0: 2 mu)
* gamma     -2 [log(y/mu) - (y - mu)/mu]                  (y = 0: log term 0)
* inverse gaussian  (y - mu)^2 / (y mu^2)

The scalar functions are numba device functions (call them from any
``@njit`` kernel); ``<name>_numpy`` are the vectorised twins used by the
Python layer and by the tests.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit
from scipy import special

LINK_IDENTITY = 0
LINK_LOG = 1
LINK_LOGIT = 2
LINK_PROBIT = 3
LINK_CLOGLOG = 4
LINK_INVERSE = 5
LINK_INVERSE_SQUARED = 6

FAMILY_GAUSSIAN = 0
FAMILY_BINOMIAL = 1
FAMILY_POISSON = 2
FAMILY_GAMMA = 3
FAMILY_INVERSE_GAUSSIAN = 4

EPS = float(np.finfo(np.float64).eps)   # R's .Machine$double.eps
INVEPS = 1.0 / EPS
LOGIT_THRESH = 30.0                     # R's THRESH in family.c
PROBIT_THRESH = 8.125890664701906       # -qnorm(.Machine$double.eps), from R 4.2
CLOGLOG_CAP = 700.0
_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


# ---------------------------------------------------------------- numba device functions

@njit(cache=True)
def linkinv(eta: float, link_code: int) -> float:
    """mu = g^-1(eta) for one value (R's linkinv, with its clipping)."""
    if link_code == LINK_IDENTITY:
        return eta
    if link_code == LINK_LOG:
        return max(math.exp(eta), EPS)
    if link_code == LINK_LOGIT:
        if eta < -LOGIT_THRESH:
            t = EPS
        elif eta > LOGIT_THRESH:
            t = INVEPS
        else:
            t = math.exp(eta)
        return t / (1.0 + t)
    if link_code == LINK_PROBIT:
        e = min(max(eta, -PROBIT_THRESH), PROBIT_THRESH)
        return 0.5 * math.erfc(-e / _SQRT2)
    if link_code == LINK_CLOGLOG:
        return max(min(-math.expm1(-math.exp(eta)), 1.0 - EPS), EPS)
    if link_code == LINK_INVERSE:
        return 1.0 / eta
    if link_code == LINK_INVERSE_SQUARED:
        return 1.0 / math.sqrt(eta) if eta > 0.0 else math.nan
    return math.nan


@njit(cache=True)
def mu_eta(eta: float, link_code: int) -> float:
    """dmu/deta at eta for one value (R's mu.eta, with its floors)."""
    if link_code == LINK_IDENTITY:
        return 1.0
    if link_code == LINK_LOG:
        return max(math.exp(eta), EPS)
    if link_code == LINK_LOGIT:
        if eta > LOGIT_THRESH or eta < -LOGIT_THRESH:
            return EPS
        e = math.exp(eta)
        opexp = 1.0 + e
        return e / (opexp * opexp)
    if link_code == LINK_PROBIT:
        return max(_INV_SQRT_2PI * math.exp(-0.5 * eta * eta), EPS)
    if link_code == LINK_CLOGLOG:
        e = min(eta, CLOGLOG_CAP)
        return max(math.exp(e) * math.exp(-math.exp(e)), EPS)
    if link_code == LINK_INVERSE:
        return -1.0 / (eta * eta)
    if link_code == LINK_INVERSE_SQUARED:
        return -0.5 / (eta * math.sqrt(eta)) if eta > 0.0 else math.nan
    return math.nan


@njit(cache=True)
def variance(mu: float, family_code: int) -> float:
    """Variance function V(mu) of the family."""
    if family_code == FAMILY_GAUSSIAN:
        return 1.0
    if family_code == FAMILY_BINOMIAL:
        return mu * (1.0 - mu)
    if family_code == FAMILY_POISSON:
        return mu
    if family_code == FAMILY_GAMMA:
        return mu * mu
    if family_code == FAMILY_INVERSE_GAUSSIAN:
        return mu * mu * mu
    return math.nan


@njit(cache=True)
def _ylogy(y: float, mu: float) -> float:
    """y log(y/mu) with 0 log(0/mu) = 0 (R's y_log_y)."""
    if y == 0.0:
        return 0.0
    return y * math.log(y / mu)


@njit(cache=True)
def unit_deviance(y: float, mu: float, family_code: int) -> float:
    """Unit deviance d(y, mu) (R's dev.resids with weight 1)."""
    if family_code == FAMILY_GAUSSIAN:
        r = y - mu
        return r * r
    if family_code == FAMILY_BINOMIAL:
        return 2.0 * (_ylogy(y, mu) + _ylogy(1.0 - y, 1.0 - mu))
    if family_code == FAMILY_POISSON:
        if y > 0.0:
            return 2.0 * (y * math.log(y / mu) - (y - mu))
        return 2.0 * mu
    if family_code == FAMILY_GAMMA:
        lg = 0.0 if y == 0.0 else math.log(y / mu)
        return -2.0 * (lg - (y - mu) / mu)
    if family_code == FAMILY_INVERSE_GAUSSIAN:
        r = y - mu
        return r * r / (y * mu * mu)
    return math.nan


@njit(cache=True)
def valid_mu(mu: float, family_code: int) -> bool:
    """R's validmu: binomial 0 < mu < 1, poisson/gamma mu > 0, all finite."""
    if not math.isfinite(mu):
        return False
    if family_code == FAMILY_BINOMIAL:
        return 0.0 < mu < 1.0
    if (family_code == FAMILY_POISSON or family_code == FAMILY_GAMMA
            or family_code == FAMILY_INVERSE_GAUSSIAN):
        return mu > 0.0
    return True


@njit(cache=True)
def valid_eta(eta: float, link_code: int) -> bool:
    """R's valideta: finite, eta != 0 for the inverse link, eta > 0 for 1/mu^2."""
    if not math.isfinite(eta):
        return False
    if link_code == LINK_INVERSE:
        return eta != 0.0
    if link_code == LINK_INVERSE_SQUARED:
        return eta > 0.0
    return True


# ---------------------------------------------------------------- NumPy twins

def _unknown(kind: str, code: int) -> ValueError:
    return ValueError(f"unknown {kind} code {code}")


def linkinv_numpy(eta: np.ndarray, link_code: int) -> np.ndarray:
    """Vectorised twin of :func:`linkinv`."""
    eta = np.asarray(eta, dtype=np.float64)
    if link_code == LINK_IDENTITY:
        return eta.copy()
    if link_code == LINK_LOG:
        return np.maximum(np.exp(eta), EPS)
    if link_code == LINK_LOGIT:
        t = np.where(eta < -LOGIT_THRESH, EPS,
                     np.where(eta > LOGIT_THRESH, INVEPS,
                              np.exp(np.clip(eta, -LOGIT_THRESH, LOGIT_THRESH))))
        return t / (1.0 + t)
    if link_code == LINK_PROBIT:
        e = np.clip(eta, -PROBIT_THRESH, PROBIT_THRESH)
        return 0.5 * special.erfc(-e / _SQRT2)
    if link_code == LINK_CLOGLOG:
        return np.maximum(np.minimum(-np.expm1(-np.exp(eta)), 1.0 - EPS), EPS)
    if link_code == LINK_INVERSE:
        with np.errstate(divide="ignore"):
            return 1.0 / eta
    if link_code == LINK_INVERSE_SQUARED:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(eta > 0.0, 1.0 / np.sqrt(np.where(eta > 0.0, eta, 1.0)), np.nan)
    raise _unknown("link", link_code)


def mu_eta_numpy(eta: np.ndarray, link_code: int) -> np.ndarray:
    """Vectorised twin of :func:`mu_eta`."""
    eta = np.asarray(eta, dtype=np.float64)
    if link_code == LINK_IDENTITY:
        return np.ones_like(eta)
    if link_code == LINK_LOG:
        return np.maximum(np.exp(eta), EPS)
    if link_code == LINK_LOGIT:
        e = np.exp(np.clip(eta, -LOGIT_THRESH, LOGIT_THRESH))
        opexp = 1.0 + e
        return np.where(np.abs(eta) > LOGIT_THRESH, EPS, e / (opexp * opexp))
    if link_code == LINK_PROBIT:
        return np.maximum(_INV_SQRT_2PI * np.exp(-0.5 * eta * eta), EPS)
    if link_code == LINK_CLOGLOG:
        e = np.minimum(eta, CLOGLOG_CAP)
        return np.maximum(np.exp(e) * np.exp(-np.exp(e)), EPS)
    if link_code == LINK_INVERSE:
        with np.errstate(divide="ignore"):
            return -1.0 / (eta * eta)
    if link_code == LINK_INVERSE_SQUARED:
        with np.errstate(divide="ignore", invalid="ignore"):
            e = np.where(eta > 0.0, eta, 1.0)
            return np.where(eta > 0.0, -0.5 / (e * np.sqrt(e)), np.nan)
    raise _unknown("link", link_code)


def variance_numpy(mu: np.ndarray, family_code: int) -> np.ndarray:
    """Vectorised twin of :func:`variance`."""
    mu = np.asarray(mu, dtype=np.float64)
    if family_code == FAMILY_GAUSSIAN:
        return np.ones_like(mu)
    if family_code == FAMILY_BINOMIAL:
        return mu * (1.0 - mu)
    if family_code == FAMILY_POISSON:
        return mu.copy()
    if family_code == FAMILY_GAMMA:
        return mu * mu
    if family_code == FAMILY_INVERSE_GAUSSIAN:
        return mu * mu * mu
    raise _unknown("family", family_code)


def _ylogy_numpy(y: np.ndarray, mu: np.ndarray) -> np.ndarray:
    # over: 1 / (subnormal mu) in rows with y == 0, whose value np.where discards
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return np.where(y == 0.0, 0.0, y * np.log(np.where(y == 0.0, 1.0, y) / mu))


def unit_deviance_numpy(y: np.ndarray, mu: np.ndarray, family_code: int) -> np.ndarray:
    """Vectorised twin of :func:`unit_deviance`."""
    y = np.asarray(y, dtype=np.float64)
    mu = np.asarray(mu, dtype=np.float64)
    if family_code == FAMILY_GAUSSIAN:
        r = y - mu
        return r * r
    if family_code == FAMILY_BINOMIAL:
        return 2.0 * (_ylogy_numpy(y, mu) + _ylogy_numpy(1.0 - y, 1.0 - mu))
    if family_code == FAMILY_POISSON:
        return np.where(y > 0.0, 2.0 * (_ylogy_numpy(y, mu) - (y - mu)), 2.0 * mu)
    if family_code == FAMILY_GAMMA:
        with np.errstate(divide="ignore", invalid="ignore"):
            lg = np.where(y == 0.0, 0.0, np.log(np.where(y == 0.0, 1.0, y) / mu))
        return -2.0 * (lg - (y - mu) / mu)
    if family_code == FAMILY_INVERSE_GAUSSIAN:
        with np.errstate(divide="ignore", invalid="ignore"):
            return (y - mu) ** 2 / (y * mu * mu)
    raise _unknown("family", family_code)


def valid_mu_numpy(mu: np.ndarray, family_code: int) -> np.ndarray:
    """Vectorised twin of :func:`valid_mu` (elementwise)."""
    mu = np.asarray(mu, dtype=np.float64)
    ok = np.isfinite(mu)
    if family_code == FAMILY_BINOMIAL:
        return ok & (mu > 0.0) & (mu < 1.0)
    if family_code in (FAMILY_POISSON, FAMILY_GAMMA, FAMILY_INVERSE_GAUSSIAN):
        return ok & (mu > 0.0)
    return ok


def valid_eta_numpy(eta: np.ndarray, link_code: int) -> np.ndarray:
    """Vectorised twin of :func:`valid_eta` (elementwise)."""
    eta = np.asarray(eta, dtype=np.float64)
    ok = np.isfinite(eta)
    if link_code == LINK_INVERSE:
        return ok & (eta != 0.0)
    if link_code == LINK_INVERSE_SQUARED:
        return ok & (eta > 0.0)
    return ok

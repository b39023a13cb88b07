"""GLM families and links, defined as R's ``stats`` package defines them.

A :class:`Family` bundles the variance function, the deviance, the
log-likelihood and AIC (R's ``family()$aic`` conventions), the valid response
range and the IRLS starting values.  Its ``code`` and ``link.code`` are the
integer codes the numba kernels in :mod:`impactglm.kernels.links` dispatch on.

    >>> fam = get_family("binomial", link="probit")
    >>> fam.link.name, fam.fixed_scale
    ('probit', True)

Log-likelihoods (w = prior weights, d_i unit deviances, D = sum w_i d_i):

* gaussian  sum_i [-(w_i (y_i-mu_i)^2/phi + log(2 pi phi) - log w_i)/2]; R's AIC uses the
            profiled phi = D/n (n = rows with w > 0)
* binomial  sum_i log dbinom(round(w_i y_i), round(w_i), mu_i)  (weights are the trials)
* poisson   sum_i w_i log dpois(y_i, mu_i)
* gamma     sum_i w_i log dgamma(y_i, shape=1/phi, scale=mu_i phi); R's AIC uses phi = D/sum(w)

AIC = -2 loglik + 2 (k + 1 if the dispersion is estimated), k = rank of X (R's glm).
"""
from __future__ import annotations

import numpy as np
from scipy import special, stats

from .errors import DataError, ModelError, closest
from .kernels import links as K

__all__ = ["Link", "Family", "Gaussian", "Binomial", "Poisson", "Gamma", "get_family",
           "LINK_CODES", "FAMILY_CODES"]

LINK_CODES = {
    "identity": K.LINK_IDENTITY, "log": K.LINK_LOG, "logit": K.LINK_LOGIT,
    "probit": K.LINK_PROBIT, "cloglog": K.LINK_CLOGLOG, "inverse": K.LINK_INVERSE,
}
FAMILY_CODES = {
    "gaussian": K.FAMILY_GAUSSIAN, "binomial": K.FAMILY_BINOMIAL,
    "poisson": K.FAMILY_POISSON, "gamma": K.FAMILY_GAMMA,
}


class Link:
    """A link function g: mu -> eta, its inverse and dmu/deta (R's make.link)."""

    def __init__(self, name: str):
        if name not in LINK_CODES:
            hint = closest(name, LINK_CODES)
            hint = f"; did you mean {hint!r}?" if hint else ""
            raise ModelError(f"unknown link {name!r}{hint}")
        self.name = name
        self.code = LINK_CODES[name]

    def link(self, mu: np.ndarray) -> np.ndarray:
        """eta = g(mu)."""
        mu = np.asarray(mu, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.name == "identity":
                return mu.copy()
            if self.name == "log":
                return np.log(mu)
            if self.name == "logit":
                return np.log(mu / (1.0 - mu))
            if self.name == "probit":
                return special.ndtri(mu)
            if self.name == "cloglog":
                return np.log(-np.log1p(-mu))
            return 1.0 / mu                                  # inverse

    def inverse(self, eta: np.ndarray) -> np.ndarray:
        """mu = g^-1(eta), with R's clipping."""
        return K.linkinv_numpy(eta, self.code)

    def mu_eta(self, eta: np.ndarray) -> np.ndarray:
        """dmu/deta, with R's floors."""
        return K.mu_eta_numpy(eta, self.code)

    def valid_eta(self, eta: np.ndarray) -> bool:
        """R's valideta (finite; the inverse link needs eta != 0)."""
        return bool(np.all(K.valid_eta_numpy(eta, self.code)))

    def __repr__(self) -> str:
        return f"Link({self.name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Link) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)


class Family:
    """An exponential-family distribution with a link (base class).

    Subclasses set ``name``, ``links`` (allowed link names, the first is the
    canonical default), ``fixed_scale`` and implement ``_loglik_terms``,
    ``_check`` and ``initial_mu``.
    """

    name: str = ""
    links: tuple[str, ...] = ()
    fixed_scale: bool = False

    def __init__(self, link: str | Link | None = None):
        link_name = link.name if isinstance(link, Link) else (link or self.links[0])
        if link_name not in self.links:
            raise ModelError(f"link {link_name!r} is not available for the {self.name} family; "
                             f"choose one of {', '.join(self.links)}")
        self.link = Link(link_name)
        self.code = FAMILY_CODES[self.name]

    # -- variance and deviance ------------------------------------------------
    def variance(self, mu: np.ndarray) -> np.ndarray:
        """V(mu)."""
        return K.variance_numpy(mu, self.code)

    def unit_deviance(self, y: np.ndarray, mu: np.ndarray) -> np.ndarray:
        """d(y, mu), R's dev.resids with unit weight."""
        return K.unit_deviance_numpy(y, mu, self.code)

    def deviance(self, y: np.ndarray, mu: np.ndarray, w: np.ndarray | None = None) -> float:
        """D = sum_i w_i d(y_i, mu_i)."""
        d = self.unit_deviance(y, mu)
        return float(np.sum(d if w is None else np.asarray(w) * d))

    def valid_mu(self, mu: np.ndarray) -> bool:
        """R's validmu (finite; binomial in (0, 1); poisson and gamma positive)."""
        return bool(np.all(K.valid_mu_numpy(mu, self.code)))

    # -- likelihood -------------------------------------------------------------
    def default_scale(self, y: np.ndarray, mu: np.ndarray, w: np.ndarray) -> float:
        """The dispersion R's ``family()$aic`` plugs in (1 for fixed-scale families)."""
        return 1.0

    def loglik(self, y: np.ndarray, mu: np.ndarray, w: np.ndarray | None = None,
               scale: float | None = None) -> float:
        """Log-likelihood at mu; ``scale=None`` uses R's choice (:meth:`default_scale`)."""
        y = np.asarray(y, dtype=np.float64)
        mu = np.asarray(mu, dtype=np.float64)
        w = np.ones_like(y) if w is None else np.asarray(w, dtype=np.float64)
        if scale is None:
            scale = self.default_scale(y, mu, w)
        return float(self._loglik(y, mu, w, float(scale)))

    def _loglik(self, y, mu, w, scale):  # pragma: no cover - abstract
        raise NotImplementedError

    def aic(self, y: np.ndarray, mu: np.ndarray, w: np.ndarray | None = None,
            scale: float | None = None, k: int = 0) -> float:
        """AIC = -2 loglik + 2 (k + [dispersion estimated]), k = number of coefficients."""
        extra = 0 if self.fixed_scale else 1
        return -2.0 * self.loglik(y, mu, w, scale) + 2.0 * (k + extra)

    # -- data checks and starting values ------------------------------------------
    def check_response(self, y: np.ndarray, name: str = "y", row_labels=None) -> None:
        """Raise DataError naming the column and the first bad row if y is outside the range."""
        y = np.asarray(y, dtype=np.float64)
        bad = ~np.isfinite(y)
        what = "finite"
        if not bad.any():
            bad, what = self._out_of_range(y)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            row = row_labels[i] if row_labels is not None else i
            row = row.item() if isinstance(row, np.generic) else row
            n_bad = int(bad.sum())
            raise DataError(
                f"response {name!r} must be {what} for the {self.name} family; "
                f"row {row!r} has {float(y[i])!r} ({n_bad} such row{'s' if n_bad > 1 else ''})")

    def _out_of_range(self, y: np.ndarray) -> tuple[np.ndarray, str]:
        return np.zeros(y.shape, bool), "finite"

    def initial_mu(self, y: np.ndarray, w: np.ndarray) -> np.ndarray:
        """R's ``family()$initialize`` mustart."""
        return np.asarray(y, dtype=np.float64).copy()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(link={self.link.name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Family) and other.name == self.name and other.link == self.link

    def __hash__(self) -> int:
        return hash((self.name, self.link.name))


class Gaussian(Family):
    """Normal errors, V(mu) = 1; links identity (default) and log."""

    name = "gaussian"
    links = ("identity", "log")
    fixed_scale = False

    def default_scale(self, y, mu, w):
        """Profiled ML variance D/n over rows with positive weight (R's gaussian()$aic)."""
        pos = w > 0
        return self.deviance(y[pos], mu[pos], w[pos]) / max(int(pos.sum()), 1)

    def _loglik(self, y, mu, w, scale):
        pos = w > 0
        y, mu, w = y[pos], mu[pos], w[pos]
        n = len(y)
        return -0.5 * (np.sum(w * (y - mu) ** 2) / scale + n * np.log(2 * np.pi * scale)
                       - np.sum(np.log(w)))

    def initial_mu(self, y, w):
        y = np.asarray(y, dtype=np.float64)
        if self.link.name == "log" and np.any(y <= 0):
            # R stops here ("cannot find valid starting values"); start at a positive floor.
            floor = max(float(np.mean(np.abs(y))), 1e-8) * 0.1
            return np.maximum(y, floor)
        return y.copy()


class Binomial(Family):
    """Bernoulli/binomial proportions y in [0, 1] with weights = trials; V(mu) = mu(1-mu)."""

    name = "binomial"
    links = ("logit", "probit", "cloglog", "log")
    fixed_scale = True

    def _loglik(self, y, mu, w, scale):
        m = w
        pos = m > 0
        k = np.round(m[pos] * y[pos])
        n = np.round(m[pos])
        return np.sum(stats.binom.logpmf(k, n, mu[pos]))

    def _out_of_range(self, y):
        return (y < 0) | (y > 1), "in [0, 1] (0/1, or proportions with weights = trials)"

    def initial_mu(self, y, w):
        """(w y + 1/2) / (w + 1)."""
        return (np.asarray(w) * y + 0.5) / (np.asarray(w) + 1.0)


class Poisson(Family):
    """Counts, V(mu) = mu; log link."""

    name = "poisson"
    links = ("log", "identity")
    fixed_scale = True

    def _loglik(self, y, mu, w, scale):
        return np.sum(w * stats.poisson.logpmf(y, mu))

    def _out_of_range(self, y):
        return y < 0, "non-negative"

    def initial_mu(self, y, w):
        """y + 0.1."""
        return np.asarray(y, dtype=np.float64) + 0.1


class Gamma(Family):
    """Positive continuous responses, V(mu) = mu^2; links inverse (default) and log."""

    name = "gamma"
    links = ("inverse", "log", "identity")
    fixed_scale = False

    def default_scale(self, y, mu, w):
        """D / sum(w), the dispersion R's Gamma()$aic uses."""
        return self.deviance(y, mu, w) / float(np.sum(w))

    def _loglik(self, y, mu, w, scale):
        pos = w > 0
        return np.sum(w[pos] * stats.gamma.logpdf(y[pos], 1.0 / scale, scale=mu[pos] * scale))

    def _out_of_range(self, y):
        return y <= 0, "positive"


_FAMILIES = {"gaussian": Gaussian, "normal": Gaussian, "binomial": Binomial,
             "poisson": Poisson, "gamma": Gamma}


def get_family(family: str | Family, link: str | None = None) -> Family:
    """A Family from a name ("gaussian", "binomial", "poisson", "gamma") or object.

    ``link`` overrides the family's link; unknown names raise ModelError with the
    closest spelling.
    """
    if isinstance(family, Family):
        if link is None or link == family.link.name:
            return family
        return type(family)(link=link)
    if isinstance(family, type) and issubclass(family, Family):
        return family(link=link)
    if not isinstance(family, str):
        raise ModelError(f"family must be a name or a Family object, not {type(family).__name__}")
    key = family.strip().lower()
    if key not in _FAMILIES:
        hint = closest(key, list(_FAMILIES) + ["multinomial"])
        hint = f"; did you mean {hint!r}?" if hint else ""
        raise ModelError(f"unknown family {family!r}{hint} "
                         "(families: gaussian, binomial, poisson, gamma, multinomial)")
    return _FAMILIES[key](link=link)

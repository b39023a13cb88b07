"""GLM families and links, defined as R's ``stats`` package (and MASS, statmod) define them.

A :class:`Family` bundles the variance function, the deviance, the
log-likelihood and AIC (R's ``family()$aic`` conventions), the valid response
range and the IRLS starting values.  Its ``code`` and ``link.code`` are the
integer codes the numba kernels in :mod:`impactglm.kernels.links` dispatch on
(families with a parameter, negative binomial and Tweedie, have ``code = -1`` and are
evaluated with NumPy).

    >>> fam = get_family("binomial", link="probit")
    >>> fam.link.name, fam.fixed_scale
    ('probit', True)

Log-likelihoods (w = prior weights, d_i unit deviances, D = sum w_i d_i):

* gaussian  sum_i [-(w_i (y_i-mu_i)^2/phi + log(2 pi phi) - log w_i)/2]; R's AIC uses the
            profiled phi = D/n (n = rows with w > 0)
* binomial  sum_i log dbinom(round(w_i y_i), round(w_i), mu_i)  (weights are the trials)
* poisson   sum_i w_i log dpois(y_i, mu_i)
* gamma     sum_i w_i log dgamma(y_i, shape=1/phi, scale=mu_i phi); R's AIC uses phi = D/sum(w)
* inverse gaussian  -1/2 sum_i w_i [log(2 pi phi y_i^3) + d_i/phi], phi = D/sum(w)
            (R's inverse.gaussian()$aic)
* negative binomial (NB2, V = mu + mu^2/theta, alpha = 1/theta)
            sum_i w_i [lgamma(theta+y) - lgamma(theta) - lgamma(y+1) + theta log theta
            + y log mu - (theta+y) log(theta+mu)]  (MASS's glm.nb; statsmodels' NegativeBinomial)
* tweedie   (V = mu^p, 1 < p < 2) the compound Poisson-gamma density, exactly, by Wright's
            Bessel function (Dunn and Smyth's series, as statsmodels' Tweedie with eql=False):
            log f = (y theta - kappa) w/phi + [y > 0] log(W(y, phi/w) / y), theta =
            mu^(1-p)/(1-p), kappa = mu^(2-p)/(2-p), at the fitted phi = Pearson X^2/df_resid
            (statsmodels' choice; R's statmod::tweedie has no AIC)
* quasibinomial, quasipoisson: no likelihood (llf, AIC, BIC are NaN, as R's NA)

AIC = -2 loglik + 2 (k + number of extra parameters), k = rank of X (R's glm): the extra
parameter is the dispersion when it is estimated, or theta when glm.nb estimates it.
"""
from __future__ import annotations

import numpy as np
from scipy import special, stats

from .errors import DataError, ModelError, closest
from .kernels import links as K

__all__ = ["Link", "Family", "Gaussian", "Binomial", "Poisson", "Gamma", "InverseGaussian",
           "NegativeBinomial", "Tweedie", "QuasiBinomial", "QuasiPoisson", "get_family",
           "LINK_CODES", "FAMILY_CODES"]

LINK_CODES = {
    "identity": K.LINK_IDENTITY, "log": K.LINK_LOG, "logit": K.LINK_LOGIT,
    "probit": K.LINK_PROBIT, "cloglog": K.LINK_CLOGLOG, "inverse": K.LINK_INVERSE,
    "inverse_squared": K.LINK_INVERSE_SQUARED,
}
_LINK_ALIASES = {"1/mu^2": "inverse_squared", "inverse_power": "inverse"}
FAMILY_CODES = {
    "gaussian": K.FAMILY_GAUSSIAN, "binomial": K.FAMILY_BINOMIAL,
    "poisson": K.FAMILY_POISSON, "gamma": K.FAMILY_GAMMA,
    "inverse_gaussian": K.FAMILY_INVERSE_GAUSSIAN,
    "quasibinomial": K.FAMILY_BINOMIAL, "quasipoisson": K.FAMILY_POISSON,
    "negative_binomial": -1, "tweedie": -1,
}


class Link:
    """A link function g: mu -> eta, its inverse and dmu/deta (R's make.link)."""

    def __init__(self, name: str):
        name = _LINK_ALIASES.get(name, name)
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
            if self.name == "inverse_squared":
                return 1.0 / (mu * mu)
            return 1.0 / mu                                  # inverse

    def inverse(self, eta: np.ndarray) -> np.ndarray:
        """mu = g^-1(eta), with R's clipping."""
        return K.linkinv_numpy(eta, self.code)

    def mu_eta(self, eta: np.ndarray) -> np.ndarray:
        """dmu/deta, with R's floors."""
        return K.mu_eta_numpy(eta, self.code)

    def mu_eta2(self, eta: np.ndarray) -> np.ndarray:
        """d^2 mu / d eta^2 (the observed information of non-canonical links)."""
        eta = np.asarray(eta, dtype=np.float64)
        m1 = self.mu_eta(eta)
        with np.errstate(all="ignore"):
            if self.name == "identity":
                return np.zeros_like(eta)
            if self.name == "log":
                return m1
            if self.name == "logit":
                return m1 * (1.0 - 2.0 * self.inverse(eta))
            if self.name == "probit":
                return -eta * m1
            if self.name == "cloglog":
                return m1 * (1.0 - np.exp(np.minimum(eta, K.CLOGLOG_CAP)))
            if self.name == "inverse":
                return 2.0 / eta ** 3
            return 0.75 * eta ** -2.5                        # inverse_squared

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
    has_loglik: bool = True     # False for quasi families (R: no AIC)
    llf_at_fit_scale: bool = False   # True: llf at the fitted dispersion (Tweedie)

    def __init__(self, link: str | Link | None = None):
        link_name = link.name if isinstance(link, Link) else (link or self.links[0])
        link_name = _LINK_ALIASES.get(link_name, link_name)
        if link_name not in self.links:
            raise ModelError(f"link {link_name!r} is not available for the {self.name} family; "
                             f"choose one of {', '.join(self.links)}")
        self.link = Link(link_name)
        self.code = FAMILY_CODES[self.name]

    @property
    def args(self) -> dict:
        """The family's parameters besides the link (``type(f)(link=..., **f.args)``)."""
        return {}

    @property
    def n_extra_params(self) -> int:
        """Parameters besides beta that AIC counts (the dispersion when it is estimated)."""
        return 0 if self.fixed_scale else 1

    def with_link(self, link: str | None) -> "Family":
        """The same family (same parameters) with another link."""
        return type(self)(link=link, **self.args)

    # -- variance and deviance ------------------------------------------------
    def variance(self, mu: np.ndarray) -> np.ndarray:
        """V(mu)."""
        return K.variance_numpy(mu, self.code)

    def variance_deriv(self, mu: np.ndarray) -> np.ndarray:
        """dV/dmu (the observed information of non-canonical links)."""
        mu = np.asarray(mu, dtype=np.float64)
        return {"gaussian": 0.0 * mu, "binomial": 1.0 - 2.0 * mu, "quasibinomial": 1.0 - 2.0 * mu,
                "poisson": np.ones_like(mu), "quasipoisson": np.ones_like(mu),
                "gamma": 2.0 * mu, "inverse_gaussian": 3.0 * mu * mu}[self.name]

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
    def default_scale(self, y: np.ndarray, mu: np.ndarray, w: np.ndarray,
                      freq: np.ndarray | None = None) -> float:
        """The dispersion R's ``family()$aic`` plugs in (1 for fixed-scale families)."""
        return 1.0

    def loglik(self, y: np.ndarray, mu: np.ndarray, w: np.ndarray | None = None,
               scale: float | None = None, freq: np.ndarray | None = None) -> float:
        """Log-likelihood sum_i f_i l_i(y_i, mu_i; w_i, scale) at mu: ``w`` prior (variance)
        weights, ``freq`` frequency weights f (replicated rows; default 1); ``scale=None``
        uses R's choice (:meth:`default_scale`)."""
        y = np.asarray(y, dtype=np.float64)
        mu = np.asarray(mu, dtype=np.float64)
        w = np.ones_like(y) if w is None else np.asarray(w, dtype=np.float64)
        f = np.ones_like(y) if freq is None else np.asarray(freq, dtype=np.float64)
        if not self.has_loglik:
            return float("nan")
        if scale is None:
            scale = self.default_scale(y, mu, w, f)
        pos = (w > 0) & (f > 0)
        terms = self._loglik_obs(y[pos], mu[pos], w[pos], float(scale))
        return float(np.sum(f[pos] * terms))

    def _loglik_obs(self, y, mu, w, scale):  # pragma: no cover - abstract
        """Per-row log-likelihood terms (rows with w > 0 only)."""
        raise NotImplementedError

    def _profiled(self, y, mu, w, freq, per: str) -> float:
        """D / sum(f) (per="rows") or D / sum(f w) (per="weights"), D = sum f w d."""
        f = np.ones_like(y) if freq is None else np.asarray(freq, dtype=np.float64)
        pos = (w > 0) & (f > 0)
        dev = float(np.sum((f * w)[pos] * self.unit_deviance(y[pos], mu[pos])))
        return dev / max(float(np.sum(f[pos] if per == "rows" else (f * w)[pos])), 1e-300)

    def aic(self, y: np.ndarray, mu: np.ndarray, w: np.ndarray | None = None,
            scale: float | None = None, k: int = 0) -> float:
        """AIC = -2 loglik + 2 (k + [dispersion estimated]), k = number of coefficients."""
        return -2.0 * self.loglik(y, mu, w, scale) + 2.0 * (k + self.n_extra_params)

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
        extra = "".join(f", {k}={v!r}" for k, v in self.args.items())
        return f"{type(self).__name__}(link={self.link.name!r}{extra})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Family) and other.name == self.name and other.link == self.link
                and other.args == self.args)

    def __hash__(self) -> int:
        return hash((self.name, self.link.name, tuple(sorted(self.args.items()))))


class Gaussian(Family):
    """Normal errors, V(mu) = 1; links identity (default), log and inverse."""

    name = "gaussian"
    links = ("identity", "log", "inverse")
    fixed_scale = False

    def default_scale(self, y, mu, w, freq=None):
        """Profiled ML variance D/n over rows with positive weight (R's gaussian()$aic;
        n = sum of the frequency weights)."""
        return self._profiled(y, mu, w, freq, "rows")

    def _loglik_obs(self, y, mu, w, scale):
        return -0.5 * (w * (y - mu) ** 2 / scale + np.log(2 * np.pi * scale) - np.log(w))

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

    def _loglik_obs(self, y, mu, w, scale):
        return stats.binom.logpmf(np.round(w * y), np.round(w), mu)

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

    def _loglik_obs(self, y, mu, w, scale):
        return w * stats.poisson.logpmf(y, mu)

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

    def default_scale(self, y, mu, w, freq=None):
        """D / sum(w), the dispersion R's Gamma()$aic uses."""
        return self._profiled(y, mu, w, freq, "weights")

    def _loglik_obs(self, y, mu, w, scale):
        return w * stats.gamma.logpdf(y, 1.0 / scale, scale=mu * scale)

    def _out_of_range(self, y):
        return y <= 0, "positive"


class InverseGaussian(Family):
    """Positive continuous responses, V(mu) = mu^3; links 1/mu^2 (default), log, identity,
    inverse (R's inverse.gaussian, statsmodels' InverseGaussian)."""

    name = "inverse_gaussian"
    links = ("inverse_squared", "log", "identity", "inverse")
    fixed_scale = False

    def default_scale(self, y, mu, w, freq=None):
        """D / sum(w), the dispersion R's inverse.gaussian()$aic uses."""
        return self._profiled(y, mu, w, freq, "weights")

    def _loglik_obs(self, y, mu, w, scale):
        return -0.5 * w * (np.log(2 * np.pi * scale * y ** 3) + self.unit_deviance(y, mu) / scale)

    def _out_of_range(self, y):
        return y <= 0, "positive"


class _CountFamily(Family):
    """Counts y >= 0 (negative binomial, Tweedie): parameterised, evaluated with NumPy."""

    def __init__(self, link=None):
        super().__init__(link)
        self.code = -1

    def _out_of_range(self, y):
        return y < 0, "non-negative"

    def valid_mu(self, mu: np.ndarray) -> bool:
        mu = np.asarray(mu, dtype=np.float64)
        return bool(np.all(np.isfinite(mu) & (mu > 0)))


class NegativeBinomial(_CountFamily):
    """NB2 counts, V(mu) = mu + alpha mu^2 with alpha = 1/theta; links log (default), identity.

    ``NegativeBinomial(alpha=0.5)`` (statsmodels) or ``NegativeBinomial(theta=2)`` (R's
    ``negative.binomial(2)``) fixes the parameter; ``NegativeBinomial()`` (or
    ``family="negative_binomial"``) estimates theta by maximum likelihood, alternating
    with IRLS as MASS's ``glm.nb`` (:mod:`impactglm.solvers.negbin`).  Unit deviance
    2 [y log(max(y, 1)/mu) - (y + theta) log((y + theta)/(mu + theta))] (MASS).
    """

    name = "negative_binomial"
    links = ("log", "identity")
    fixed_scale = True

    def __init__(self, link=None, alpha: float | None = None, theta: float | None = None,
                 theta_estimated: bool = False):
        super().__init__(link)
        if alpha is not None and theta is not None:
            raise ModelError("give the negative binomial alpha or theta (= 1/alpha), not both")
        value = theta if theta is not None else (None if alpha is None else 1.0 / _positive(
            alpha, "alpha"))
        self.theta = None if value is None else _positive(value, "theta")
        self.theta_estimated = bool(theta_estimated or self.theta is None)

    @property
    def alpha(self) -> float | None:
        return None if self.theta is None else 1.0 / self.theta

    @property
    def args(self) -> dict:
        return {"theta": self.theta, "theta_estimated": self.theta_estimated}

    @property
    def n_extra_params(self) -> int:
        return 1 if self.theta_estimated else 0

    def _theta(self) -> float:
        if self.theta is None:
            raise ModelError("this negative binomial family has no theta yet (it is estimated "
                             "by the fit); give alpha= or theta= to evaluate it")
        return self.theta

    def variance(self, mu):
        mu = np.asarray(mu, dtype=np.float64)
        return mu + mu * mu / self._theta()

    def variance_deriv(self, mu):
        return 1.0 + 2.0 * np.asarray(mu, dtype=np.float64) / self._theta()

    def unit_deviance(self, y, mu):
        y = np.asarray(y, dtype=np.float64)
        mu = np.asarray(mu, dtype=np.float64)
        th = self._theta()
        with np.errstate(divide="ignore", invalid="ignore"):
            return 2.0 * (y * np.log(np.maximum(y, 1.0) / mu)
                          - (y + th) * np.log((y + th) / (mu + th)))

    def _loglik_obs(self, y, mu, w, scale):
        th = self._theta()
        return w * (special.gammaln(th + y) - special.gammaln(th) - special.gammaln(y + 1)
                    + th * np.log(th) + y * np.log(mu + (y == 0)) - (th + y) * np.log(th + mu))

    def initial_mu(self, y, w):
        """y + (y == 0)/6 (MASS's negative.binomial()$initialize)."""
        y = np.asarray(y, dtype=np.float64)
        return y + (y == 0) / 6.0


class Tweedie(_CountFamily):
    """Compound Poisson-gamma, V(mu) = mu^p with 1 < p < 2 (``var_power``); links log
    (default), identity.  Unit deviance 2 [y^(2-p)/((1-p)(2-p)) - y mu^(1-p)/(1-p)
    + mu^(2-p)/(2-p)] (statmod's tweedie, statsmodels' Tweedie, glum)."""

    name = "tweedie"
    links = ("log", "identity")
    fixed_scale = False
    llf_at_fit_scale = True

    def __init__(self, link=None, var_power: float = 1.5):
        super().__init__(link)
        p = float(var_power)
        if not 1.0 < p < 2.0:
            raise ModelError(f"Tweedie var_power must be strictly between 1 and 2, not {var_power!r}"
                             " (1 is poisson, 2 is gamma)")
        self.var_power = p

    @property
    def args(self) -> dict:
        return {"var_power": self.var_power}

    def variance(self, mu):
        return np.asarray(mu, dtype=np.float64) ** self.var_power

    def variance_deriv(self, mu):
        p = self.var_power
        return p * np.asarray(mu, dtype=np.float64) ** (p - 1.0)

    def unit_deviance(self, y, mu):
        y = np.asarray(y, dtype=np.float64)
        mu = np.asarray(mu, dtype=np.float64)
        p = self.var_power
        return 2.0 * (y ** (2 - p) / ((1 - p) * (2 - p)) - y * mu ** (1 - p) / (1 - p)
                      + mu ** (2 - p) / (2 - p))

    def _loglik_obs(self, y, mu, w, scale):
        p = self.var_power
        phi = scale / w
        ll = (y * mu ** (1 - p) / (1 - p) - mu ** (2 - p) / (2 - p)) / phi
        pos = y > 0
        a = (2 - p) / (p - 1)
        x = ((p - 1) * phi[pos] / y[pos]) ** (-a) / ((2 - p) * phi[pos])
        ll[pos] += np.log(special.wright_bessel(a, 0.0, x) / y[pos])
        return ll

    def initial_mu(self, y, w):
        """y + 0.1 (y == 0) (statmod's tweedie()$initialize)."""
        y = np.asarray(y, dtype=np.float64)
        return y + 0.1 * (y == 0)


class QuasiBinomial(Binomial):
    """Binomial variance mu(1 - mu) with an estimated dispersion; no likelihood (R)."""

    name = "quasibinomial"
    fixed_scale = False
    has_loglik = False


class QuasiPoisson(Poisson):
    """Poisson variance mu with an estimated dispersion; no likelihood (R)."""

    name = "quasipoisson"
    fixed_scale = False
    has_loglik = False


def _positive(value, what: str) -> float:
    v = float(value)
    if not (np.isfinite(v) and v > 0):
        raise ModelError(f"the negative binomial {what} must be a positive number, not {value!r}")
    return v


_FAMILIES = {"gaussian": Gaussian, "normal": Gaussian, "binomial": Binomial,
             "poisson": Poisson, "gamma": Gamma, "inverse_gaussian": InverseGaussian,
             "inverse.gaussian": InverseGaussian, "inversegaussian": InverseGaussian,
             "negative_binomial": NegativeBinomial, "negativebinomial": NegativeBinomial,
             "negbin": NegativeBinomial, "nb": NegativeBinomial, "tweedie": Tweedie,
             "quasibinomial": QuasiBinomial, "quasipoisson": QuasiPoisson}


def get_family(family: str | Family, link: str | None = None) -> Family:
    """A Family from a name ("gaussian", "binomial", "poisson", "gamma", "inverse_gaussian",
    "negative_binomial", "tweedie", "quasibinomial", "quasipoisson") or object.

    ``link`` overrides the family's link (keeping its parameters); unknown names raise
    ModelError with the closest spelling.
    """
    if isinstance(family, Family):
        if link is None or _LINK_ALIASES.get(link, link) == family.link.name:
            return family
        return family.with_link(link)
    if isinstance(family, type) and issubclass(family, Family):
        return family(link=link)
    if not isinstance(family, str):
        raise ModelError(f"family must be a name or a Family object, not {type(family).__name__}")
    key = family.strip().lower().replace("-", "_").replace(" ", "_")
    if key not in _FAMILIES:
        hint = closest(key, list(_FAMILIES) + ["multinomial"])
        hint = f"; did you mean {hint!r}?" if hint else ""
        raise ModelError(f"unknown family {family!r}{hint} (families: gaussian, binomial, "
                         "poisson, gamma, inverse_gaussian, negative_binomial, tweedie, "
                         "quasibinomial, quasipoisson, multinomial)")
    return _FAMILIES[key](link=link)

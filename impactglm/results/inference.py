"""Tests and intervals on fitted GLMs: deviance (likelihood-ratio) tests between nested fits,
Wald tests of linear restrictions, delta-method intervals for predicted means, Anscombe
residuals.

* ``anova(m0, m1, ..., test="Chisq")`` (R's anova.glm for a sequence of fits): for each
  model after the first, Df = df_resid(previous) - df_resid(this), Deviance = D(previous)
  - D(this); with phi the dispersion of the model with the fewest residual df,
  "Chisq": P(chi2_Df > Deviance / phi); "F": F = Deviance / Df / phi,
  P(F_{Df, df_resid(biggest)} > F) (for estimated dispersions); ``test=None``: no test.
* ``wald_test(R, q)`` (R a matrix, names, or equations such as "x1 = 2 x2"): W = (R b - q)' (R V R')^-1 (R b - q) with V = cov_params();
  chi2 with r = rank(R) df, or F = W / r on (r, df_resid) when ``use_f`` (default: when the
  dispersion is estimated, as t tests are).
* ``get_prediction(newdata)``: eta = offset + x'b, se(eta) = sqrt(x' V x); mu = g^-1(eta),
  se(mu) = |dmu/deta| se(eta) (delta method; R's predict.glm(se.fit = TRUE, type =
  "response")); intervals are g^-1 of eta +- q se(eta) (statsmodels' GLM intervals), q the
  normal or t quantile as in conf_int().
* Anscombe residuals A(y) - A(mu) over the scaled spread, A(t) = int V(s)^(-1/3) ds, times
  sqrt(w)/sqrt(phi) (statsmodels' resid_anscombe, i.e. its resid_anscombe_scaled):
  gaussian y - mu; poisson 3/2 (y^(2/3) - mu^(2/3)) / mu^(1/6); gamma
  3 (y^(1/3) - mu^(1/3)) / mu^(1/3); inverse gaussian log(y/mu) / sqrt(mu); Tweedie
  (y^c - mu^c) / (c mu^(p/6)), c = (3 - p)/3; binomial with n = w trials
  n^(2/3) (B(y) - B(mu)) / (n mu (1 - mu) phi^3)^(1/6), B(x) = I_x(2/3, 2/3) Beta(2/3, 2/3)
  (unit weight then, the trials are in n); negative binomial
  3/2 (y^(2/3) F(-alpha y) - mu^(2/3) F(-alpha mu)) / (mu (1 + alpha mu) phi^3)^(1/6),
  F = 2F1(2/3, 1/3; 5/3; .).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import special, stats

from .._util import user_stacklevel
from ..errors import ImpactGLMWarning, ModelError
from ..families import Family

__all__ = ["anova", "WaldTestResult", "wald_test", "PredictionResults", "anscombe_residuals"]


# --------------------------------------------------------------------------- anova

def anova(*fits, test: str | None = "Chisq") -> pd.DataFrame:
    """R's ``anova(m0, m1, ..., test=)`` for nested GLM fits (module docstring).

    Columns "Resid. Df", "Resid. Dev", "Df", "Deviance" and, per ``test``, "Pr(>Chi)" or
    "F" and "Pr(>F)"; one row per model, in the order given.  ``test``: "Chisq" (alias
    "LRT"), "F" or None.
    """
    if len(fits) < 2:
        raise ModelError("anova needs at least two fitted models (nested, on the same rows)")
    if test not in ("Chisq", "LRT", "F", None):
        raise ModelError(f"test must be 'Chisq', 'LRT', 'F' or None, not {test!r}")
    fam = fits[0].family
    for f in fits[1:]:
        if (f.family.name, f.family.link.name) != (fam.name, fam.link.name):
            raise ModelError("anova compares fits of one family and link; got "
                             f"{fam.name}/{fam.link.name} and {f.family.name}/{f.family.link.name}")
        if f.nobs != fits[0].nobs:
            raise ModelError(f"anova: the fits use different numbers of rows ({fits[0].nobs} "
                             f"and {f.nobs}); compare models fitted on the same rows")
    df = np.array([float(f.df_resid) for f in fits])
    dev = np.array([float(f.deviance) for f in fits])
    big = fits[int(np.argmin(df))]
    phi = float(big.scale)
    table = pd.DataFrame({"Resid. Df": df, "Resid. Dev": dev})
    ddf = np.r_[np.nan, df[:-1] - df[1:]]
    ddev = np.r_[np.nan, dev[:-1] - dev[1:]]
    table["Df"], table["Deviance"] = ddf, ddev
    with np.errstate(invalid="ignore", divide="ignore"):
        if test in ("Chisq", "LRT"):       # R's stat.anova: NA for Df = 0 or a wrong sign
            vals = ddev / phi * np.sign(ddf)
            vals[(ddf == 0) | (vals < 0)] = np.nan
            table["Pr(>Chi)"] = stats.chi2.sf(vals, np.abs(ddf))
        elif test == "F":
            if big.family.fixed_scale:
                warnings.warn("using F test with a fixed dispersion is inappropriate (R's "
                              "warning); use test='Chisq'", ImpactGLMWarning,
                              stacklevel=user_stacklevel())
            F = ddev / ddf / phi
            F[(ddf == 0) | (F < 0)] = np.nan
            table["F"] = F
            table["Pr(>F)"] = stats.f.sf(F, np.abs(ddf), float(big.df_resid))
    table.index = pd.RangeIndex(1, len(fits) + 1)
    return table


# --------------------------------------------------------------------------- Wald tests

@dataclass(frozen=True)
class WaldTestResult:
    """A Wald test: ``statistic`` (chi2, or F = chi2 / df_num), ``pvalue``, ``df_num``,
    ``df_denom`` (None for chi2) and ``distribution`` ("chi2" or "F")."""

    statistic: float
    pvalue: float
    df_num: int
    df_denom: float | None
    distribution: str

    def __repr__(self) -> str:
        df = f"df={self.df_num}" if self.df_denom is None else \
            f"df=({self.df_num}, {self.df_denom:g})"
        return (f"<Wald test: {self.distribution} = {self.statistic:.6g}, p = {self.pvalue:.4g}, "
                f"{df}>")


def restriction_matrix(R, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
    """(R as an (r, p) array, q or None) from an array, one coefficient name or a list of
    names (each tested = 0), or linear equations in the coefficient names such as
    ``"x1 = 0.4, C(k)[T.b] = C(k)[T.c]"`` (parsed by Patsy's constraint parser, which
    evaluates nothing; they give q too)."""
    p = len(names)
    if isinstance(R, str):
        R = [R]
    if isinstance(R, (list, tuple)) and R and all(isinstance(r, str) for r in R) and any(
            "=" in r for r in R):
        from patsy import PatsyError
        from patsy.constraint import linear_constraint
        try:
            lc = linear_constraint(", ".join(R), list(names))
        except PatsyError as exc:
            raise ModelError(f"wald_test: cannot read the restriction {', '.join(R)!r}: "
                             f"{exc.message} (coefficients: {', '.join(names)})") from None
        return np.asarray(lc.coefs, dtype=np.float64), np.asarray(lc.constants,
                                                                  dtype=np.float64).ravel()
    if isinstance(R, (list, tuple)) and R and all(isinstance(r, str) for r in R):
        out = np.zeros((len(R), p))
        for i, r in enumerate(R):
            if r not in names:
                raise ModelError(f"wald_test: {r!r} is not a coefficient (coefficients: "
                                 f"{', '.join(names)})")
            out[i, list(names).index(r)] = 1.0
        return out, None
    out = np.atleast_2d(np.asarray(R, dtype=np.float64))
    if out.shape[1] != p:
        raise ModelError(f"wald_test: the restriction matrix has {out.shape[1]} columns for "
                         f"{p} coefficients")
    return out, None


def wald_test(params: np.ndarray, cov: np.ndarray, R: np.ndarray, q=None, *,
              use_f: bool = False, df_resid: float | None = None) -> WaldTestResult:
    """H0: R b = q (module docstring)."""
    R = np.asarray(R, dtype=np.float64)
    q = np.zeros(R.shape[0]) if q is None else np.atleast_1d(np.asarray(q, dtype=np.float64))
    if q.shape != (R.shape[0],):
        raise ModelError(f"wald_test: q has {q.size} values for {R.shape[0]} restrictions")
    r = int(np.linalg.matrix_rank(R))
    if r < R.shape[0]:
        raise ModelError("wald_test: the restrictions are linearly dependent")
    d = R @ params - q
    stat = float(d @ np.linalg.solve(R @ cov @ R.T, d))
    if use_f:
        F = stat / r
        return WaldTestResult(F, float(stats.f.sf(F, r, df_resid)), r, float(df_resid), "F")
    return WaldTestResult(stat, float(stats.chi2.sf(stat, r)), r, None, "chi2")


# --------------------------------------------------------------------------- predictions

class PredictionResults:
    """Predicted means with delta-method standard errors and intervals (module docstring)."""

    def __init__(self, eta: np.ndarray, se_eta: np.ndarray, family: Family, dist, index):
        self.linpred = np.asarray(eta, dtype=np.float64)
        self.se_linpred = np.asarray(se_eta, dtype=np.float64)
        self._family = family
        self._dist = dist
        self._index = index

    @property
    def predicted_mean(self) -> np.ndarray:
        return self._family.link.inverse(self.linpred)

    @property
    def se_mean(self) -> np.ndarray:
        return np.abs(self._family.link.mu_eta(self.linpred)) * self.se_linpred

    def conf_int(self, alpha: float = 0.05, which: str = "mean") -> np.ndarray:
        """(n, 2) interval for the mean (g^-1 of the linear-scale interval) or ``"linear"``."""
        q = self._dist.ppf(1 - alpha / 2)
        lo, hi = self.linpred - q * self.se_linpred, self.linpred + q * self.se_linpred
        if which == "linear":
            return np.column_stack([lo, hi])
        if which != "mean":
            raise ModelError(f"which must be 'mean' or 'linear', not {which!r}")
        a, b = self._family.link.inverse(lo), self._family.link.inverse(hi)
        return np.column_stack([np.minimum(a, b), np.maximum(a, b)])

    def summary_frame(self, alpha: float = 0.05) -> pd.DataFrame:
        """Columns mean, mean_se, mean_ci_lower, mean_ci_upper (statsmodels' names)."""
        ci = self.conf_int(alpha)
        return pd.DataFrame({"mean": self.predicted_mean, "mean_se": self.se_mean,
                             "mean_ci_lower": ci[:, 0], "mean_ci_upper": ci[:, 1]},
                            index=self._index)


def linear_predictor_se(X: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """sqrt(x_i' V x_i) for every row."""
    return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", X, cov, X), 0.0))


# --------------------------------------------------------------------------- residuals

def anscombe_residuals(family: Family, y, mu, w, scale: float = 1.0) -> np.ndarray:
    """Anscombe residuals (module docstring), statsmodels' scaled definition."""
    y, mu, w = (np.asarray(a, dtype=np.float64) for a in (y, mu, w))
    name = family.name
    with np.errstate(divide="ignore", invalid="ignore"):
        if name == "gaussian":
            r = y - mu
        elif name in ("poisson", "quasipoisson"):
            r = 1.5 * (y ** (2 / 3) - mu ** (2 / 3)) / mu ** (1 / 6)
        elif name == "gamma":
            r = 3 * (y ** (1 / 3) - mu ** (1 / 3)) / mu ** (1 / 3)
        elif name == "inverse_gaussian":
            r = np.log(y / mu) / np.sqrt(mu)
        elif name == "tweedie":
            p = family.var_power
            c = (3 - p) / 3
            r = (y ** c - mu ** c) / (c * mu ** (p / 6))
        elif name == "negative_binomial":
            a = family.alpha

            def f(x):
                return special.hyp2f1(2 / 3, 1 / 3, 5 / 3, x)
            r = 1.5 * (y ** (2 / 3) * f(-a * y) - mu ** (2 / 3) * f(-a * mu)) / (
                mu * (1 + a * mu) * scale ** 3) ** (1 / 6)
            return r * np.sqrt(w)
        elif name in ("binomial", "quasibinomial"):
            b = special.beta(2 / 3, 2 / 3)
            r = w ** (2 / 3) * (special.betainc(2 / 3, 2 / 3, y) - special.betainc(
                2 / 3, 2 / 3, mu)) * b / (w * mu * (1 - mu) * scale ** 3) ** (1 / 6)
            return r
        else:  # pragma: no cover - every family is listed above
            raise ModelError(f"no Anscombe residuals for the {name} family")
    return r * np.sqrt(w) / np.sqrt(scale)

"""Likelihood-ratio tests between nested linear mixed models (lme4's ``anova(m0, m1, ...)``).

As lme4's ``anova.merMod``: models fitted by REML are first refitted by ML
(``refit=True``; REML likelihoods of models with different fixed effects are not
comparable), the models are sorted by their number of parameters
npar = p + n_theta + 1, and for consecutive models

    Chisq = 2 max(0, logLik_i - logLik_{i-1}),    Df = npar_i - npar_{i-1},
    Pr(>Chisq) = P(chi^2_Df > Chisq)    (NA when Df = 0),

with AIC = -2 logLik + 2 npar, BIC = -2 logLik + log(n) npar, deviance = -2 logLik.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import ImpactGLMError
from ..results import inference
from .results import LMMResults


def anova(*fits: Any, refit: bool = True, names: list[str] | None = None,
          **glm_options: Any) -> pd.DataFrame:
    """``ig.anova``: lme4's ``anova(m0, m1, ...)`` for LMM fits, R's for GLM fits.

    GLM results (none of them an LMM fit) go to :func:`impactglm.results.inference.anova`
    (``test=`` "Chisq", "F" or None).  For :class:`LMMResults`: a DataFrame with one row
    per model.

    Columns npar, AIC, BIC, logLik, deviance, Chisq, Df, Pr(>Chisq); rows named
    ``names`` (default model1, model2, ... in the order given) and sorted by npar.
    ``refit=True`` refits REML fits by ML first (as lme4; the fitted results are not
    changed); ``refit=False`` compares the criteria as fitted (warns when REML and
    ML fits are mixed, as lme4).
    """
    if fits and not any(isinstance(f, LMMResults) for f in fits):
        return inference.anova(*fits, **glm_options)
    if glm_options:
        raise ImpactGLMError(f"anova() of LMM fits takes refit= and names=, not "
                             f"{', '.join(glm_options)}")
    if len(fits) < 2:
        raise ImpactGLMError("anova() compares two or more fitted models (lme4's "
                             "anova(m0, m1)); for one model use its summary()")
    for f in fits:
        if not isinstance(f, LMMResults):
            raise ImpactGLMError(f"anova() compares ig.lmm(...).fit() results, not "
                                 f"{type(f).__name__}")
    nobs = {f.nobs for f in fits}
    if len(nobs) > 1:
        raise ImpactGLMError(f"the models were not all fitted to the same rows (nobs "
                             f"{sorted(nobs)}); drop the rows with missing values first")
    names = list(names) if names is not None else [f"model{i + 1}" for i in range(len(fits))]
    if len(names) != len(fits):
        raise ImpactGLMError(f"{len(names)} names for {len(fits)} models")
    if refit:
        fits = tuple(_ml(f) for f in fits)
    elif len({f.reml for f in fits}) > 1:
        warnings.warn("some models fit with REML = TRUE, some not", stacklevel=2)
    llf = np.array([f.llf for f in fits])
    npar = np.array([f.df_modelwc for f in fits])
    order = np.argsort(npar, kind="stable")
    llf, npar = llf[order], npar[order]
    n = fits[0].nobs
    chisq = np.r_[np.nan, 2.0 * np.maximum(0.0, np.diff(llf))]
    df = np.r_[np.nan, np.diff(npar)].astype(float)
    with np.errstate(invalid="ignore"):
        p = np.where(df == 0, np.nan, stats.chi2.sf(chisq, np.where(df > 0, df, np.nan)))
    p[0] = np.nan
    return pd.DataFrame({"npar": npar, "AIC": -2 * llf + 2 * npar, "BIC": -2 * llf + np.log(n) * npar,
                         "logLik": llf, "deviance": -2 * llf, "Chisq": chisq, "Df": df,
                         "Pr(>Chisq)": p}, index=pd.Index([names[i] for i in order]))


def _ml(fit: LMMResults) -> Any:
    """The ML refit of a REML fit (lme4's refitML), started from its theta."""
    if not fit.reml:
        return fit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit.model.fit(reml=False, start=fit.fit.theta)

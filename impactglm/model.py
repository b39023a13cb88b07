"""The front door: ``glm(formula, data, ...)`` builds the design, ``.fit()`` dispatches.

    >>> import impactglm as ig
    >>> res = ig.glm("y ~ x1 + C(k)", data, family="binomial").fit()   # doctest: +SKIP

Call order (docs/internals.md): :func:`impactglm.design.build.build_design` turns the
formula and the table into arrays; ``.fit()`` hands them to a solver in
:mod:`impactglm.solvers.api` -- a formula without ``^`` terms to IRLS
(:func:`impactglm.solvers.irls.fit_irls`, R's glm.fit), ``^`` terms to the re-encoding
Newton solver (:func:`~impactglm.solvers.api.fit_high_cardinality`),
``family="multinomial"`` to :func:`~impactglm.solvers.api.fit_multinomial` -- and wraps
the solver's FitOutput in a results object (:mod:`impactglm.results.glm`,
:mod:`impactglm.results.multinomial`).  A multinomial holdout is split here
(``Design.subset``), fitted on the training rows and scored on the rest.
"""
from __future__ import annotations

import dataclasses
import numbers
import warnings
from typing import Any, Mapping, Sequence

import numpy as np

from ._util import user_stacklevel
from .containers import Design
from .design.build import build_design
from .errors import DataError, ImpactGLMWarning, ModelError
from .families import Family, get_family
from .formula import parse_formula
from .results.glm import GLMResults
from .results.multinomial import MultinomialResults, score_holdout
from .solvers.api import fit_high_cardinality, fit_multinomial
from .solvers.plain import align_groups, combine_weights, fit_plain

__all__ = ["glm", "GLM"]


def _is_multinomial(family) -> bool:
    return isinstance(family, str) and family.strip().lower() == "multinomial"


def _check_prior(prior_sd, names: Sequence[str]):
    """Check prior_sd against the ^ factors: "auto" (estimate), a positive number, None (no
    prior), or one such entry per factor as a list or a dict by factor name.  The
    solvers interpret it; this only catches names and lengths early, before any work."""
    if isinstance(prior_sd, str):
        if prior_sd != "auto":
            raise ModelError("prior_sd must be 'auto', a number, a list or a dict, "
                             f"not {prior_sd!r}")
        return prior_sd
    if isinstance(prior_sd, Mapping):
        keys = {str(k).lstrip("^"): v for k, v in prior_sd.items()}
        unknown = sorted(set(keys) - set(names))
        if unknown:
            raise ModelError(f"prior_sd names {unknown} that are not ^ factors of the formula "
                             f"(factors: {', '.join('^' + n for n in names) or 'none'})")
        values = [keys.get(n) for n in names]
    elif prior_sd is None or isinstance(prior_sd, numbers.Real):
        values = [prior_sd] * len(names)
    else:
        values = list(prior_sd)
        if len(values) != len(names):
            raise ModelError(f"prior_sd has {len(values)} entries for {len(names)} ^ factors")
    for n, v in zip(names, values):
        if v is not None and not (isinstance(v, numbers.Real) and np.isfinite(v) and v > 0):
            raise ModelError(f"prior_sd for ^{n} must be a positive number (or None for no "
                             f"prior), got {v!r}")
    return {n: v for n, v in zip(names, values)} if isinstance(prior_sd, Mapping) else (
        values if not (prior_sd is None or isinstance(prior_sd, numbers.Real)) else prior_sd)


class GLM:
    """A GLM specification bound to data; ``fit()`` returns the results.

    Attributes: ``formula`` (text), ``family`` (a Family, or "multinomial"),
    ``design`` (the :class:`~impactglm.design.Design`, arrays only).
    """

    def __init__(self, formula: str, data, family: str | Family = "gaussian",
                 link: str | None = None, weights=None, offset=None,
                 prior_sd: Any = "auto", na_action: str = "drop", freq_weights=None,
                 var_weights=None, exposure=None):
        formula, weights, offset, self._freq = combine_weights(
            formula, data, weights, freq_weights, var_weights, exposure, offset)
        parsed = parse_formula(formula)
        self.formula = parsed.text
        self._data = data          # only read: groups= of fit(cov_type="cluster") by column name
        if _is_multinomial(family):
            if link not in (None, "logit"):
                raise ModelError("the multinomial family uses the logit (softmax) link, "
                                 f"not {link!r}")
            self.family: Family | str = "multinomial"
        else:
            self.family = get_family(family, link)
        self.design: Design = build_design(parsed, data, family=self.family, weights=weights,
                                           offset=offset, na_action=na_action)
        if not np.any(self.design.weights > 0):
            raise DataError("no row has a positive weight: every prior weight is 0, so "
                            "there is nothing to fit")
        names = [f.name for f in self.design.factors]
        self.prior_sd = _check_prior(prior_sd, names)
        if isinstance(self.family, Family):
            self.family.check_response(self.design.y, self.design.spec.response,
                                       row_labels=self.design.row_labels)
            if self.family.name == "binomial":
                _warn_non_integer_successes(self.design)

    def __repr__(self) -> str:
        fam = self.family if isinstance(self.family, str) else repr(self.family)
        return f"GLM({self.formula!r}, family={fam}, nobs={self.design.nobs})"

    def fit(self, maxiter: int | None = None, tol: float | None = None, verbose: bool = False,
            method: str = "reml", holdout: float | None = None, seed: int | None = None,
            callback=None, cov_type: str = "nonrobust", groups=None,
            information: str = "expected"):
        """Fit the model; ``maxiter``/``tol`` default to each solver's own defaults
        (IRLS: 25 and 1e-8 on the relative deviance change, as R).  ``cov_type``:
        "nonrobust" (model-based), "HC0".."HC3", "cluster" (with ``groups``: a column name
        or one label per row); ``information``: "expected" (R) or "observed" (Stata) --
        plain GLMs only, see :mod:`impactglm.solvers.covariance`.  ``holdout``/``seed``:
        keep a random share of rows out and score them (multinomial models).
        ``callback``: multinomial models only, called with each iteration's log row
        (a dict; the command line's progress bar).  ``method``, for prior_sd="auto": gaussian
        "reml" (default) or "ml"; binomial/poisson "nagq0" (default; "reml" means it too:
        glmer nAGQ = 0) or "laplace" (glmer nAGQ = 1, beta in the outer optimisation)."""
        d = self.design
        options = {k: v for k, v in (("maxiter", maxiter), ("tol", tol)) if v is not None}
        if callback is not None and _is_multinomial(self.family):
            options["callback"] = callback
        if _is_multinomial(self.family):
            return fit_multinomial_design(d, self.prior_sd, holdout=holdout, seed=seed, verbose=verbose,
                              **options)
        if holdout is not None:
            raise ModelError("holdout= is available for family='multinomial' only; for other "
                             "families fit on a split and use impactglm.evaluate()")
        if not d.factors:
            groups = None if groups is None else align_groups(groups, self._data, d.row_labels)
            freq = None if self._freq is None else align_groups(self._freq, self._data,
                                                                d.row_labels).astype(float)
            out, family = fit_plain(d.X, d.y, d.weights, d.offset, self.family,
                                    cov_type=cov_type, groups=groups, information=information,
                                    freq=freq,
                                    column_names=d.column_names, verbose=verbose, **options)
            return GLMResults.from_fit(out, d, family, method="IRLS")
        if (cov_type, groups, information) != ("nonrobust", None, "expected") or (
                self._freq is not None):
            raise ModelError("cov_type=, groups=, information= and freq_weights= are available "
                             "for models without ^ terms")
        out = fit_high_cardinality(d.X, [(f.codes, f.n_levels) for f in d.factors], d.y,
                                   d.weights, d.offset, self.family, self.prior_sd,
                                   method=method, verbose=verbose,
                                   names=[f.name for f in d.factors],
                                   levels=[f.levels for f in d.factors],
                                   counts=[f.counts for f in d.factors], **options)
        out = dataclasses.replace(out, effects=_label_effects(out.effects, d))
        return GLMResults.from_fit(out, d, self.family, method="re-encoding Newton",
                                   prior_method=self._prior_method(method))

    def _prior_method(self, method: str) -> str:
        """How tau was chosen, for the summary: given, or the empirical-Bayes criterion."""
        if not isinstance(self.prior_sd, str):
            return "given"
        if self.family.name == "gaussian":
            return f"{method.upper()} estimate"
        return ("Laplace estimate (glmer nAGQ = 1)" if method == "laplace"
                else "Laplace estimate (glmer nAGQ = 0)")


def _warn_non_integer_successes(design: Design) -> None:
    """R's binomial()$initialize warns when weights x proportion is not a whole number."""
    m = design.weights * design.y
    bad = np.abs(m - np.round(m)) > 1e-3
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        row = design.row_labels[i]
        row = row.item() if isinstance(row, np.generic) else row
        warnings.warn(f"non-integer numbers of successes (weight x response) in a binomial "
                      f"model, e.g. row {row!r}: {m[i]:.4g}; the likelihood, "
                      "AIC and BIC assume whole counts (give the numbers of trials as weights)",
                      ImpactGLMWarning, stacklevel=user_stacklevel())


def _label_effects(effects, design: Design):
    """Fill each FactorEffects' levels and counts from the Design's level tables."""
    out = []
    for e, f in zip(effects, design.factors):
        levels = e.levels if e.levels is not None and len(e.levels) == f.n_levels else f.levels
        counts = e.counts if e.counts is not None and len(e.counts) == f.n_levels else f.counts
        out.append(dataclasses.replace(e, name=f.name, levels=levels, counts=counts))
    return tuple(out)


def glm(formula: str, data, family: str | Family = "gaussian", link: str | None = None,
        weights=None, offset=None, prior_sd: Any = "auto", na_action: str = "drop",
        freq_weights=None, var_weights=None, exposure=None) -> GLM:
    """A GLM: ``glm("y ~ x + C(k) + ^user", df, family="binomial").fit()``.

    ``family``: "gaussian", "binomial", "poisson", "gamma", "multinomial" or a Family
    object; ``link`` overrides its link.  ``weights``/``offset``: column names or arrays
    (binomial weights are the numbers of trials for proportion responses).
    ``prior_sd``: prior sd tau of the ^ factors' level effects: "auto" (estimated by
    empirical Bayes), one number, None (no prior), or a list (one per ^ factor) or a
    dict by factor name of those.  ``na_action``: "drop" (R's na.omit) or "raise".
    ``freq_weights``/``var_weights``/``exposure``: statsmodels' arguments (replicated
    rows; variance weights, which multiply with ``weights``; log(exposure) joins the
    offset), see :func:`impactglm.solvers.plain.combine_weights`.  ``data`` is never
    modified.
    """
    return GLM(formula, data, family=family, link=link, weights=weights, offset=offset,
               prior_sd=prior_sd, na_action=na_action, freq_weights=freq_weights,
               var_weights=var_weights, exposure=exposure)


def fit_multinomial_design(design, prior_sd: Any = "auto", *, holdout: float | None = None,
               seed: int | None = None, **options) -> MultinomialResults:
    """Fit a multinomial Design, optionally keeping a random ``holdout`` share of rows out.

    The held-out rows (each row independently with probability ``holdout``, from
    ``numpy.random.default_rng(seed)``) are scored after the fit; their metrics are
    :attr:`MultinomialResults.holdout_metrics`.  Levels seen only in the holdout get
    effect 0 (they have no training rows).  ``options`` go to
    :func:`impactglm.solvers.api.fit_multinomial` (tol, maxiter, verbose, ...).
    """
    C = len(design.spec.classes)
    if holdout is None or holdout == 0:
        out = fit_multinomial(design.X, design.factors, design.y, C, design.weights, None,
                              prior_sd, **options)
        return MultinomialResults.from_fit(out, design)
    if not 0 < float(holdout) < 1:
        raise ModelError(f"holdout must be a fraction in (0, 1), not {holdout!r}")
    n = len(design.y)
    test = np.random.default_rng(seed).random(n) < float(holdout)
    train = ~test
    if not test.any() or not train.any():
        raise ModelError(f"holdout={holdout} leaves {int(train.sum())} training and "
                         f"{int(test.sum())} holdout rows out of {n}")
    training = design.subset(train)
    out = fit_multinomial(training.X, training.factors, training.y, C, training.weights, None,
                          prior_sd, **options)
    holdout_metrics = score_holdout(out, design.subset(test), training)
    return MultinomialResults.from_fit(out, training, holdout_metrics=holdout_metrics)

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

import contextlib
import dataclasses
import numbers
import warnings
from typing import Any, Mapping, Sequence

import numpy as np

from ._util import user_stacklevel
from .containers import Design
from .design.build import build_design
from .errors import DataError, FormulaError, ImpactGLMWarning, ModelError, SeparationWarning
from .families import Family, get_family
from .formula import parse_formula
from .results.base import linalg_warnings_as_ours
from .results.glm import GLMResults
from .results.multinomial import MultinomialResults, score_holdout
from .solvers.api import fit_high_cardinality, fit_multinomial
from .solvers.prior_scale import GLMM_METHODS
from .solvers.irls import warn_separation
from .solvers.linalg import check_full_rank
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
        values = [prior_sd] * max(len(names), 1)     # checked even without ^ factors
    else:
        values = list(prior_sd)
        if len(values) != len(names):
            raise ModelError(f"prior_sd has {len(values)} entries for {len(names)} ^ factors")
    for n, v in zip(list(names) or ["(none)"], values):
        if v is not None and (isinstance(v, (bool, np.bool_)) or not (
                isinstance(v, numbers.Real) and np.isfinite(v) and v > 0)):
            what = f"for ^{n} " if names else ""
            raise ModelError(f"prior_sd {what}must be a positive number (or None for no "
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
        if parsed.random:
            term = parsed.random[0]
            bar = parsed.text.find("|")
            raise FormulaError(f"the random-effects term {term} needs a mixed model, which "
                               f"ig.glm does not fit: write ^{term.group} for a high-cardinality "
                               "factor (level effects with a N(0, tau^2) prior), or use ig.lmm "
                               "for lme4-style random effects", parsed.text,
                               parsed.text.rfind("(", 0, bar) if bar >= 0 else None)
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
        if self.design.X.shape[1] == 0 and not self.design.factors:
            raise ModelError(f"the model {self.formula!r} has no coefficients (no intercept, "
                             "no terms, no ^ factors): add a term or the intercept")
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
        options = _fit_options(maxiter, tol, method, holdout, seed, callback)
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
            with _no_residual_df_warning(d, len(out.beta), family):
                return GLMResults.from_fit(out, d, family, method="IRLS")
        if (cov_type, groups, information) != ("nonrobust", None, "expected") or (
                self._freq is not None):
            raise ModelError("cov_type=, groups=, information= and freq_weights= are available "
                             "for models without ^ terms")
        check_fixed_part(d)
        with linalg_warnings_as_ours():
            out = fit_high_cardinality(d.X, [(f.codes, f.n_levels) for f in d.factors], d.y,
                                       d.weights, d.offset, self.family, self.prior_sd,
                                       method=method, verbose=verbose,
                                       names=[f.name for f in d.factors],
                                       levels=[f.levels for f in d.factors],
                                       counts=[f.counts for f in d.factors], lazy=True,
                                       **options)
        out = dataclasses.replace(out, effects=_label_effects(out.effects, d))
        if _boundary_rows_possible(out, d, self.family):
            mu = out.mu if out.mu is not None else out.extra["lazy"].fitted()[1]
            warn_separation(self.family, np.asarray(mu), d.weights)
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


# |eta| below this cannot give R's "numerically 0 or 1" fitted values (logit: 10 eps at
# |eta| ~ 36; log: exp(eta) < 10 eps at eta ~ -33.7)
_SAFE_ETA = 30.0


def _boundary_rows_possible(out, design: Design, family: Family) -> bool:
    """Whether any training row may have a fitted value on the boundary that
    :func:`warn_separation` looks for: a bound on max |eta| from the column maxima of X,
    |beta|, the largest |effect| per factor and the offset, so that the usual fit needs no
    pass over the rows for the warning."""
    if family.name not in ("binomial", "poisson"):
        return False
    X, off = design.X, design.offset
    bound = max(float(off.max()), -float(off.min())) if off is not None and len(off) else 0.0
    if X.shape[1] and X.shape[0]:
        col_max = np.maximum(X.max(axis=0), -X.min(axis=0))      # max |x_j| without an |X| copy
        bound += float(col_max @ np.abs(np.asarray(out.beta, dtype=float)))
    bound += sum(float(np.abs(e.effect).max()) for e in out.effects if len(e.effect))
    return not bound < _SAFE_ETA


_METHODS = ("reml", "ml") + GLMM_METHODS      # gaussian REML/ML; glmer nAGQ = 0 / 1


def _fit_options(maxiter, tol, method, holdout, seed, callback) -> dict:
    """Check ``fit()``'s arguments (ModelError naming the bad one, never a raw TypeError
    from inside a solver) and return the solver options that were given."""
    options = {}
    if maxiter is not None:
        if isinstance(maxiter, (bool, np.bool_)) or not isinstance(maxiter, numbers.Integral) \
                or maxiter < 1:
            raise ModelError(f"maxiter must be a whole number >= 1, not {maxiter!r}")
        options["maxiter"] = int(maxiter)
    if tol is not None:
        if isinstance(tol, (bool, np.bool_)) or not isinstance(tol, numbers.Real) \
                or not (np.isfinite(tol) and tol > 0):
            raise ModelError(f"tol must be a positive number, not {tol!r}")
        options["tol"] = float(tol)
    if not isinstance(method, str) or method.lower() not in _METHODS:
        raise ModelError(f"method must be one of {', '.join(map(repr, _METHODS))}, "
                         f"not {method!r}")
    if holdout is not None and (isinstance(holdout, (bool, np.bool_))
                                or not isinstance(holdout, numbers.Real)
                                or not 0 <= holdout < 1):
        raise ModelError(f"holdout must be a fraction in (0, 1), not {holdout!r}")
    if seed is not None and (isinstance(seed, (bool, np.bool_))
                             or not isinstance(seed, numbers.Integral)):
        raise ModelError(f"seed must be a whole number or None, not {seed!r}")
    if callback is not None and not callable(callback):
        raise ModelError(f"callback must be callable, not {callback!r}")
    return options


def check_fixed_part(design: Design) -> None:
    """The fixed part of a ^ or multinomial fit, tested as IRLS tests X: more coefficients
    than rows with positive weight, or aliased columns (a constant column beside the
    intercept, x2 = 2 x), are a ModelError naming the columns.  The ^ factors' priors
    make their level effects identifiable, but nothing makes an aliased X column so."""
    n_good = int(np.sum(design.weights > 0))
    p = design.X.shape[1]
    if n_good < p:
        raise ModelError(f"{n_good} rows with positive weight cannot identify {p} coefficients")
    if p:
        check_full_rank(design.X, design.weights, 1e-7, design.column_names)


class _no_residual_df_warning:
    """Context of building results for a fit with no residual degrees of freedom (as many
    coefficients as rows, e.g. ``y ~ 1`` on one row) in a family with an estimated
    dispersion (gaussian, gamma): one ImpactGLMWarning saying that the dispersion and
    standard errors are not defined (R prints NaN), instead of numpy's 0/0 warnings."""

    def __init__(self, design: Design, p: int, family: Family):
        self.active = int(np.sum(design.weights > 0)) <= p and not family.fixed_scale
        self.nobs = int(np.sum(design.weights > 0))
        self.p = p

    def __enter__(self):
        if self.active:
            warnings.warn(f"{self.nobs} row(s) with positive weight and {self.p} coefficient(s): "
                          "no residual degrees of freedom, so the dispersion, standard errors "
                          "and (gaussian) log-likelihood are not defined (NaN or infinite)",
                          ImpactGLMWarning, stacklevel=user_stacklevel())
            self._err = np.seterr(divide="ignore", invalid="ignore", over="ignore")
        return self

    def __exit__(self, *exc):
        if self.active:
            np.seterr(**self._err)
        return False


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
    check_fixed_part(design)
    if holdout is None or holdout == 0:
        out = fit_multinomial(design.X, design.factors, design.y, C, design.weights, None,
                              prior_sd, **options)
        _warn_multinomial_boundary(out, design)
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
    _warn_multinomial_boundary(out, training)
    holdout_metrics = score_holdout(out, design.subset(test), training)
    return MultinomialResults.from_fit(out, training, holdout_metrics=holdout_metrics)


_BOUNDARY_EPS = 10 * np.finfo(float).eps        # R's glm.fit: "numerically 0 or 1"


def _warn_multinomial_boundary(out, design: Design, chunk: int = 200_000) -> None:
    """SeparationWarning when a fitted class probability of a training row (positive
    weight) is numerically 0 or 1, as R's glm.fit for binomial fits: (quasi-)complete
    separation, the MLE of the separating coefficients is infinite.

    A probability below eps = 10 machine eps needs a spread max_c eta_c - min_c eta_c above
    -log(eps) ~ 33.7 in that row.  The spread is bounded by sum_j |x_ij| (range_c beta_jc)
    + sum_k range_c A_k[l_ik, c] (O(n p) work, no (n, C) array); only rows whose bound
    exceeds the threshold get the exact softmax, in chunks."""
    beta = np.asarray(out.beta, dtype=np.float64)
    effects = [np.asarray(e.effect, dtype=np.float64) for e in out.effects]
    threshold = -np.log(_BOUNDARY_EPS)
    bound = (np.abs(design.X) @ np.ptp(beta, axis=1) if beta.size
             else np.zeros(design.nobs))
    for f, A in zip(design.factors, effects):
        bound += np.ptp(A, axis=1)[f.codes]
    rows = np.flatnonzero((bound > threshold) & (design.weights > 0))
    k = 0
    for lo in range(0, len(rows), chunk):
        idx = rows[lo:lo + chunk]
        eta = design.X[idx] @ beta if beta.size else np.zeros((len(idx), beta.shape[1]))
        for f, A in zip(design.factors, effects):
            eta = eta + A[f.codes[idx]]
        eta -= eta.max(axis=1, keepdims=True)
        with np.errstate(under="ignore"):
            prob = np.exp(eta)
        prob /= prob.sum(axis=1, keepdims=True)
        k += int(np.sum(((prob < _BOUNDARY_EPS) | (prob > 1 - _BOUNDARY_EPS)).any(axis=1)))
    if k:
        warnings.warn(f"fitted probabilities numerically 0 or 1 occurred in {k} row(s): "
                      "(quasi-)complete separation of the classes; estimates and standard "
                      "errors of the separating terms are not meaningful", SeparationWarning,
                      stacklevel=user_stacklevel())

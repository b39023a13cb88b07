"""Linear mixed models fitted by REML or ML the way lme4 does it.

    import impactglm as ig
    res = ig.lmm("Reaction ~ Days + (Days | Subject)", sleepstudy).fit()
    print(res.summary())

Formula syntax is lme4's: ``(1|g)``, crossed ``(1|s) + (1|d)``, correlated
slopes ``(x|g)``, uncorrelated ``(x||g)`` or ``(1|g) + (0 + x|g)``, nested
``(1|a/b)`` = ``(1|a) + (1|a:b)``; ``^g`` is shorthand for ``(1|g)``.

The numerical core (relative covariance factor, penalised least squares,
profiled criterion, the block structure that makes each evaluation O(levels))
is in :mod:`impactglm.lmm_core`; it works on arrays and is what the Gaussian
``^factor`` path calls (:func:`fit_lmm_arrays`, :func:`profiled_criterion`).
As in lme4, random-effects terms are ordered by decreasing number of levels of
their grouping factor (this fixes the order of theta).
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np


from ..containers import Design
from ..design.build import build_design
from ..errors import ConvergenceWarning, ImpactGLMWarning, ModelError, SingularFitWarning
from ..formula import parse_formula, ParsedFormula, special_spans
from ..solvers.linalg import aliased_columns
from .core import blas_threads, fit_lmm_arrays, LMMFit, LMMProblem, profiled_criterion, REBlock, theta_pairs
from .results import LMMResults

__all__ = ["lmm", "LMM", "LMMResults", "fit_lmm_arrays", "profiled_criterion", "LMMProblem"]

RANK_TOL = 1e-7          # lme4: qr(X, tol = 1e-7) to drop aliased fixed-effect columns
SINGULAR_TOL = 1e-4      # lme4's isSingular(tol = 1e-4)


def lmm(formula: str | ParsedFormula, data: Any, weights: Any = None,
        na_action: str = "drop") -> "LMM":
    """A linear mixed model ``y ~ fixed + (expr | group) ...`` on ``data`` (never modified).

    ``weights``: a column name or an array of prior weights (Var(e_i) = sigma^2 / w_i);
    rows with weight 0 are left out.  ``na_action``: "drop" (R's na.omit over the
    columns the model uses) or "raise".
    """
    parsed = formula if isinstance(formula, ParsedFormula) else parse_formula(formula)
    parsed = parsed.random_as_high_cardinality()
    if not parsed.random:
        raise ModelError(f"the formula {parsed.text!r} has no random-effects term such as "
                         "'(1 | g)' or '^g'; use ig.glm() for a fixed-effects model")
    design = build_design(parsed, data, family="gaussian", weights=weights, na_action=na_action)
    return LMM(design, parsed)


class LMM:
    """A linear mixed model ready to fit (see :func:`lmm`)."""

    def __init__(self, design: Design, parsed: ParsedFormula):
        self.design = design
        self.formula = parsed.text
        keep = design.weights > 0
        self.rows = np.flatnonzero(keep) if not keep.all() else None
        rows = slice(None) if self.rows is None else self.rows
        X, y, w = design.X[rows], design.y[rows], design.weights[rows]
        n = y.shape[0]
        aliased = aliased_columns(X, w, RANK_TOL) if X.shape[1] else []
        names = list(design.column_names)
        if aliased:
            dropped = [names[j] for j in aliased]
            warnings.warn(f"the fixed-effects model matrix is rank deficient: dropping "
                          f"{len(dropped)} column(s) aliased with earlier ones: "
                          f"{', '.join(map(repr, dropped))}", ImpactGLMWarning, stacklevel=3)
        self.kept_columns = [j for j in range(X.shape[1]) if j not in aliased]
        self.dropped_columns = tuple(names[j] for j in aliased)
        self.column_names = tuple(names[j] for j in self.kept_columns)
        self.X = np.ascontiguousarray(X[:, self.kept_columns])
        self.y, self.weights = y, w
        # lme4 orders the terms by decreasing number of levels (stable)
        order = sorted(range(len(design.random)), key=lambda k: -design.random[k].n_levels)
        self.block_order = tuple(order)
        self.nested = _nested_groups(parsed)
        self.blocks, self.levels, self._level_maps = [], [], []
        for k in order:
            rb = design.random[k]
            gv = tuple(design.spec.random_terms[k]["group_vars"])
            name, levels, new_code = rb.group, rb.levels, None
            if gv in self.nested:               # lme4 names (1|a/b)'s inner factor b:a
                name, levels, new_code = ":".join(reversed(gv)), *_reverse_labels(rb.levels, len(gv))
            codes = rb.codes[rows].astype(np.int64)
            if new_code is not None:
                codes = new_code[codes]
            self.blocks.append(REBlock(codes, rb.n_levels, rb.Z[rows], name, tuple(rb.term_names)))
            self.levels.append(levels)
            self._level_maps.append(new_code)
        self._check_sizes(n)
        self._problem: LMMProblem | None = None

    def _check_sizes(self, n: int) -> None:
        """lme4's checks: levels < observations and random effects < observations per term."""
        for b in self.blocks:
            seen = np.unique(b.codes).size
            if seen < 2:
                raise ModelError(f"the grouping factor {b.name!r} has a single level in the rows "
                                 "used; a random effect needs at least 2 levels")
            if b.n_levels >= n:
                raise ModelError(f"the grouping factor {b.name!r} has {b.n_levels} levels for {n} "
                                 "observations: each level needs more than one observation on "
                                 "average (the random effects and the residual are not "
                                 "identifiable)")
            if b.n_effects >= n:
                raise ModelError(f"the term ({' + '.join(b.term_names)} | {b.name}) has "
                                 f"{b.n_effects} random effects for {n} observations: the "
                                 "random-effects parameters and the residual variance are not "
                                 "identifiable")

    def level_map(self, pos: int, codes: np.ndarray) -> np.ndarray:
        """Codes of the design's level order -> the model's (lme4's) order; -1 stays -1."""
        m = self._level_maps[pos]
        if m is None:
            return codes
        return np.where(codes >= 0, m[np.maximum(codes, 0)], -1)

    def random_selection(self, re_form: Any) -> frozenset:
        """Positions of the random-effects blocks lme4's ``re.form`` selects (see predict)."""
        everything = frozenset(range(len(self.blocks)))
        if re_form is None or re_form is True:
            return everything
        if re_form is False or (isinstance(re_form, float) and math.isnan(re_form)):
            return frozenset()
        if not isinstance(re_form, str):
            raise ModelError(f"re_form must be None, 'NA' or a formula such as '~ (1 | g)', "
                             f"not {type(re_form).__name__}")
        text = "".join(re_form.split())
        if text.upper() in ("NA", "~0", "0", "~-1", "~1", ""):
            return frozenset()
        parsed = parse_formula("y " + text if text.startswith("~") else "y ~ " + text)
        parsed = parsed.random_as_high_cardinality()
        terms = [(tuple(self.design.spec.random_terms[k]["group_vars"]),
                  _expr_key(self.design.spec.random_terms[k]["expr"])) for k in self.block_order]
        chosen = set()
        for term in parsed.random:
            gvs = {term.group_vars, tuple(reversed(term.group_vars))}
            match = [pos for pos, (gv, key) in enumerate(terms)
                     if key == _expr_key(term.expr)
                     and (gv == term.group_vars or (gv in self.nested and gv in gvs))]
            if not match:
                have = ", ".join(sorted({f"({' + '.join(b.term_names)} | {b.name})"
                                         for b in self.blocks}))
                raise ModelError(f"re_form {re_form!r}: the term {term} is not a random-effects "
                                 f"term of the model (its terms: {have})")
            chosen.update(match)
        return frozenset(chosen)

    @property
    def nobs(self) -> int:
        return int(self.y.shape[0])

    @property
    def problem(self) -> LMMProblem:
        """The sufficient statistics (one pass over the rows, made on first use)."""
        if self._problem is None:
            self._problem = LMMProblem(self.X, self.y, self.blocks, self.weights)
        return self._problem

    def theta_names(self) -> list[str]:
        """lme4's names of theta: ``group.term`` (diagonal), ``group.term_i.term_j`` (off)."""
        names = []
        for b in self.blocks:
            for i, j in theta_pairs(b.r):
                names.append(f"{b.name}.{b.term_names[i]}" if i == j
                             else f"{b.name}.{b.term_names[i]}.{b.term_names[j]}")
        return names

    def criterion(self, theta, reml: bool = True) -> float:
        """The profiled REML criterion / ML deviance at theta (lme4's devfun)."""
        with blas_threads(self.problem.N):
            return self.problem.criterion(np.asarray(theta, dtype=float), reml)

    def fit(self, reml: bool = True, *, start=None, method: str = "auto", tol: float = 1e-13,
            maxiter: int = 2000, verbose: bool = False) -> LMMResults:
        """Fit by REML (default) or ML; returns an immutable :class:`LMMResults`.

        ``start``: theta to start from (default: moment estimates for random intercepts,
        T_k = I otherwise; "lme4": T_k = I everywhere).  ``method``: "auto" (bounded
        quasi-Newton on the analytic gradient of the profiled criterion, L-BFGS-B as
        fallback), "gradient" (L-BFGS-B), "cobyqa" (scipy's derivative-free trust-region
        method, like lme4's BOBYQA), "L-BFGS-B" (finite differences) or any bounded
        scipy method name.  ``tol``: relative tolerance on the criterion.
        """
        fit = fit_lmm_arrays(self.X, self.y, self.blocks, self.weights, reml, start=start,
                             method=method, tol=tol, maxiter=maxiter, verbose=verbose,
                             problem=self.problem)
        if not fit.converged:
            warnings.warn(f"the optimiser over theta did not converge ({fit.message}); "
                          "see results.optimizer_log", ConvergenceWarning, stacklevel=2)
        singular = _singular(self, fit)
        if singular:
            warnings.warn(f"boundary (singular) fit: the variance component(s) of "
                          f"{', '.join(singular)} are estimated as (nearly) zero",
                          SingularFitWarning, stacklevel=2)
        return LMMResults(self, fit, tuple(singular))


def _nested_groups(parsed: ParsedFormula) -> set:
    """group_vars of the inner factors of lme4 nesting ``(x | a/b)`` (lme4 names them b:a)."""
    _, spans = special_spans(parsed.text)
    out = set()
    for start, stop in spans:
        body = parsed.text[start:stop].strip().lstrip("+-").strip()
        if body.startswith("(") and "/" in body.rsplit("|", 1)[-1]:
            sub = parse_formula("y ~ " + body)
            out.update(t.group_vars for t in sub.random if len(t.group_vars) > 1)
    return out


def _reverse_labels(levels: np.ndarray, parts: int):
    """Labels ``a:b`` -> ``b:a`` sorted as R sorts the factor b:a (b's levels, then a's).

    Returns (new labels, map old code -> new code).  Labels whose values contain ':'
    themselves keep their order and name.
    """
    split = [str(v).split(":") for v in levels]
    if any(len(s) != parts for s in split):
        return levels, None
    keys = []
    for c in range(parts):
        vals = [s[c] for s in split]
        try:
            keys.append(np.array([float(v) for v in vals]))
        except ValueError:
            keys.append(np.array(vals, dtype=object))
    ranks = [np.unique(k, return_inverse=True)[1] for k in keys]
    order = np.lexsort(ranks)              # the last component is the primary key
    new_code = np.empty(len(levels), dtype=np.int64)
    new_code[order] = np.arange(len(levels))
    labels = np.array([":".join(reversed(split[i])) for i in order], dtype=object)
    return labels, new_code


def _expr_key(expr: str):
    """A random term's expression up to spacing, order and the implicit intercept."""
    terms = {t for t in "".join(expr.split()).split("+") if t}
    intercept = not ({"0", "-1"} & terms)
    return intercept, frozenset(terms - {"0", "-1", "1"})


def _singular(model: LMM, fit: LMMFit) -> list[str]:
    """Terms whose theta sits on the boundary (diagonal of T_k below SINGULAR_TOL)."""
    out = []
    names = model.theta_names()
    pos = 0
    for b in model.blocks:
        for i, j in theta_pairs(b.r):
            if i == j and fit.theta[pos] < SINGULAR_TOL:
                out.append(names[pos])
            pos += 1
    return out

"""TODO docstring."""
from __future__ import annotations

import dataclasses
import math
import time
import warnings
import numpy as np
import pandas as pd
from typing import Any, Sequence


from ..containers import FactorEffects, FitOutput
from ..errors import ConvergenceWarning, DataError, ModelError, SeparationWarning
from ..families import get_family
from .newton import DEFAULT_TOL
from .scalar import newton_loop, separated_levels, solve_mode
from .posterior import finish_softmax, LazyFit
from .priors import NO_PRIOR_RIDGE, prior_precisions, resolve_prior
from .problem import LevelProblem, reprice, State
from .softmax import as_factors, check_outcome, initial_effects, SoftmaxLoop, SoftmaxProblem
from . import prior_scale


_SUPPORTED = ("gaussian", "binomial", "poisson")


def _gaussian_scale(prob: LevelProblem, st: State, lam_l: np.ndarray, inv_phi: float) -> float:
    """sigma^2 = RSS / (n_eff - p - sum_k edf_k) at the mode (fixed-tau gaussian fits)."""
    edf = float(np.sum(st.W / (st.W + lam_l)))
    rss = st.dev
    n_eff = float(prob.n if prob.pw.shape[0] == 1 else np.sum(prob.pw > 0))
    return rss / max(n_eff - prob.p - edf, 1.0)


def fit_high_cardinality(X, factors, y, weights, offset, family, prior_sd="auto", *,
                         method: str | None = None, tol: float = DEFAULT_TOL, maxiter: int = 200,
                         verbose: bool = False, levels=None, counts=None, names=None,
                         scale: float | None = None, lazy: bool = False) -> FitOutput:
    """Posterior-mode fit of eta = offset + X beta + sum_k a_k[codes_k], a_k ~ N(0, tau_k^2).

    Parameters
    ----------
    X : (n, p) float array (None: intercept only); factors : list of (codes int32 (n,), n_levels);
    y, weights, offset : (n,) arrays (weights/offset may be None); family : name or Family
    (gaussian, binomial, poisson; any of their links).
    prior_sd : "auto" (tau_k by empirical Bayes, :mod:`impactglm.solvers.prior_scale`; gaussian
        by REML or ML per ``method`` ("reml" default, "ml"), binomial/poisson by glmer's Laplace
        criterion: ``method="nagq0"`` (default, glmer nAGQ = 0) or ``"laplace"`` (nAGQ = 1,
        beta in the outer optimisation)),
        a number, a list (one per factor; None = no prior), or a dict name -> value.
        With no prior a ridge of precision 1e-5 keeps separated levels finite
        (SeparationWarning with their count).
    tol : convergence certificate, max_j |g_j| / H_jj (see the module docstring).
    scale : gaussian only: the residual variance sigma^2 to use with a fixed tau (default:
        estimated as RSS / (n - p - edf) by fixed-point iteration).

    lazy : leave the posterior (cov_beta, every level's se) and the fitted eta/mu to
        first use: the FitOutput then has ``cov_beta``, ``eta``, ``mu`` and the effects'
        ``se`` set to None and ``extra["lazy"]`` (:class:`~impactglm.solvers.posterior.LazyFit`)
        computes them, with the same answers (the results layer uses this).

    Returns a FitOutput with ``effects`` (one FactorEffects per factor) and ``extra``:
    max_grad, max_step, objective, n_passes, log (DataFrame), prior_sd, scale, se_exact
    (eager fits).
    """
    t0 = time.perf_counter()
    fam = get_family(family)
    if fam.name not in _SUPPORTED:
        raise ModelError(f"^ terms support the families {', '.join(_SUPPORTED)}, not {fam.name!r}")
    K = len(factors)
    names = list(names) if names is not None else [f"factor{k}" for k in range(K)]
    prob = LevelProblem(X, factors, y, weights, offset, fam, names=names)
    entries = resolve_prior(prior_sd, names)
    n_auto = sum(isinstance(e, str) for e in entries)
    if 0 < n_auto < K:
        raise ModelError(f"prior_sd='auto' for some ^ factors and fixed for others is available "
                         f"for family='multinomial' only; for {fam.name} give all or none as 'auto'")
    tau_estimated = n_auto > 0
    extra: dict = {}
    warm = None
    if tau_estimated:
        est = prior_scale.estimate_tau(prob, method=method, tol=tol, verbose=verbose)
        taus_checked = list(est.taus)
        if fam.name == "gaussian":
            scale = est.scale
        extra["tau_criterion"] = est.criterion
        extra["tau_evaluations"] = est.n_evaluations
        extra["tau_method"] = est.method
        extra["tau_gradient"] = est.gradient
        extra["tau_exact"] = est.exact
        warm = est.state
    else:
        taus_checked = entries
    lam = prior_precisions(taus_checked)
    lam_l = prob.expand(lam)
    if any(t is None for t in taus_checked):
        sep = separated_levels(prob)
        for k, t in enumerate(taus_checked):
            if t is None and sep[k] > 0:
                warnings.warn(f"factor {names[k]!r}: {sep[k]} level(s) are perfectly separated "
                              f"(all responses on the boundary); with prior_sd=None their effects are "
                              f"held finite only by a {NO_PRIOR_RIDGE:g} ridge", SeparationWarning,
                              stacklevel=2)
    if fam.name == "gaussian":
        fixed_scale = scale is not None
        phi = float(scale) if fixed_scale else float(np.var(prob.y) or 1.0)
        st = None
        for _ in range(100):
            st = solve_mode(prob, taus_checked, lam_l, 1.0 / phi, tol=tol, maxiter=maxiter,
                            verbose=verbose, start=st, t0=t0)
            if fixed_scale:
                break
            new = _gaussian_scale(prob, st, lam_l, 1.0 / phi)
            if not (math.isfinite(new) and new > 1e-14 * max(float(np.var(prob.y)), 1e-300)):
                raise ModelError("the gaussian ^ fit is (nearly) saturated: the residual variance "
                                 "is ~0, so sigma^2 cannot be estimated; give scale= (the residual "
                                 "variance) or smaller prior_sd")
            change = abs(new - phi) / phi
            phi = new
            st.G = None
            if change <= 1e-10:
                break
        if not fixed_scale:      # the mode at the final sigma^2, so estimates and scale agree
            st = solve_mode(prob, taus_checked, lam_l, 1.0 / phi, tol=tol, maxiter=maxiter,
                            verbose=verbose, start=st, t0=t0)
            if change > 1e-10:
                warnings.warn(f"the residual variance sigma^2 = RSS / (n - p - edf) did not settle in "
                              f"100 updates (last relative change {change:.2g}); the effects are the "
                              f"mode at the last sigma^2 = {phi:.6g}", ConvergenceWarning,
                              stacklevel=2)
    else:
        phi = 1.0
        if warm is not None and est.final:              # nAGQ = 1: beta from the outer optimisation
            st = warm
        elif warm is not None and warm.G is not None:     # the state of the last pass (phi = 1)
            reprice(warm, lam_l, 1.0)
            st = newton_loop(prob, warm, lam_l, 1.0, tol=tol, maxiter=maxiter, verbose=verbose, t0=t0)
        else:
            st = solve_mode(prob, taus_checked, lam_l, 1.0, tol=tol, maxiter=maxiter, verbose=verbose,
                            t0=t0, start=warm)
    if not st.converged:
        warnings.warn(f"high-cardinality fit did not converge in {maxiter} iterations "
                      f"(certificate {st.max_step:.3g} > tol {tol:g}, max gradient {st.max_grad:.3g})",
                      ConvergenceWarning, stacklevel=2)
    pending = LazyFit(prob, st, lam_l)       # posterior and fitted values on first use
    effects = []
    for k in range(K):
        sl = slice(prob.starts[k], prob.starts[k + 1])
        q = int(prob.q[k])
        lv = np.asarray(levels[k]) if levels is not None else np.arange(q)
        ct = np.asarray(counts[k]) if counts is not None else np.bincount(
            prob.gidx[:, k], minlength=int(prob.starts[k + 1]))[prob.starts[k]:].astype(np.int64)
        W = st.W[sl]
        edf = float(np.sum(W / (W + lam_l[sl])))
        effects.append(FactorEffects(names[k], lv, ct, st.a[sl].copy(), None, taus_checked[k],
                                     edf, tau_estimated))
    log = pd.DataFrame(st.log, columns=["iteration", "objective", "max_grad", "max_step", "step",
                                        "passes", "seconds"])
    extra.update(max_grad=st.max_grad, max_step=st.max_step, objective=st.f, n_passes=st.n_passes,
                 log=log, prior_sd={names[k]: taus_checked[k] for k in range(K)}, scale=phi,
                 deviance=st.dev, lazy=pending, fit_seconds=time.perf_counter() - t0)
    out = FitOutput(beta=st.beta.copy(), cov_beta=None, eta=None, mu=None, scale=phi, n_iter=st.n_iter,
                    converged=st.converged, log=log, effects=tuple(effects), extra=extra)
    return out if lazy else complete(out)


def complete(out: FitOutput) -> FitOutput:
    """The FitOutput with its lazy parts (posterior, fitted values) computed."""
    lazy = out.extra.get("lazy")
    if lazy is None:
        return out
    cov, se, exact = lazy.posterior()
    eta, mu = lazy.fitted()
    effects, start = [], 0
    for e in out.effects:
        q = len(e.effect)
        effects.append(dataclasses.replace(e, se=se[start:start + q].copy()))
        start += q
    extra = {k: v for k, v in out.extra.items() if k != "lazy"}
    extra["se_exact"] = exact
    return dataclasses.replace(out, cov_beta=cov, eta=eta, mu=mu, effects=tuple(effects), extra=extra)

def fit_multinomial(X: np.ndarray, factors: Sequence[Any], y_codes: np.ndarray, n_classes: int,
                    weights: np.ndarray | None = None, offset: np.ndarray | None = None,
                    prior_sd: Any = "auto", *, tol: float = DEFAULT_TOL, maxiter: int = 200,
                    verbose: bool = False, exact_cov_limit: int = 3000,
                    callback=None) -> FitOutput:
    """Fit the multinomial model of the module docstring; arrays in, :class:`FitOutput` out.

    Parameters
    ----------
    X : (n, p) fixed-effects design (may have p = 0 columns).
    factors : one entry per ``^`` factor: a ``FactorCodes``-like object (``name``, ``codes``
        int32, ``levels``, ``counts``) or a ``(codes, n_levels)`` pair.
    y_codes : (n,) class index 0..C-1 of every row.
    n_classes : C.
    weights : (n,) prior (frequency) weights, default ones.
    offset : (n, C) per-class offsets, or None.  (A per-row offset common to all classes
        cancels in the softmax; pass it as (n, C) if you mean it.)
    prior_sd : "auto" (empirical Bayes per factor), a positive number, None (ridge 1e-5
        only), or a list (one per factor) / dict (factor name -> value) of those.
    tol : the convergence certificate max_j |g_j| / H_jj (:mod:`impactglm.solvers.newton`).
    maxiter : iterations (each is about two passes over the rows).
    exact_cov_limit : dense exact covariance when p(C-1) + Q C is at most this.

    Returns
    -------
    FitOutput with ``beta`` (p, C) (column 0 zero), ``cov_beta`` (p(C-1), p(C-1)) over
    ``beta[:, 1:]`` in row-major (variable, class) order, ``effects`` with (q, C) effect and
    se arrays, ``eta``/``mu`` empty (an (n, C) copy is never kept; see ``extra``), and
    ``extra`` holding the training ``loglik``, ``null_loglik``, ``confusion`` (C, C),
    ``max_grad``, ``max_step``, ``n_passes``, ``cov_method``, ``tau_history`` and ``alpha``.
    """
    t0 = time.perf_counter()
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise DataError(f"X must be two-dimensional, got shape {X.shape}")
    n = X.shape[0]
    C = int(n_classes)
    w = np.ones(n) if weights is None else np.ascontiguousarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise DataError(f"weights have shape {w.shape}, expected ({n},)")
    if n and (not np.all(np.isfinite(w)) or w.min() < 0):
        bad = int(np.flatnonzero(~np.isfinite(w) | (w < 0))[0])
        raise DataError(f"weights: row {bad} has weight {w[bad]}; weights must be finite and >= 0")
    if not np.all(np.isfinite(X)):
        bad = int(np.argwhere(~np.isfinite(X))[0, 0])
        raise DataError(f"X: row {bad} has a non-finite value")
    y = check_outcome(y_codes, C, w, n)
    offset = _check_offset(offset, n, C)
    facs = as_factors(factors, n)
    prior = resolve_prior(prior_sd, [f.name for f in facs])
    prob = SoftmaxProblem(X, facs, y, C, w, offset)
    if prob.p == 0 and prob.K == 0:
        raise ModelError("the model has neither fixed terms nor ^ factors")
    auto = np.array([isinstance(e, str) for e in prior], dtype=bool)
    alpha = np.array([NO_PRIOR_RIDGE if e is None else (1.0 if isinstance(e, str) else 1.0 / e ** 2)
                      for e in prior], dtype=np.float64)
    _warn_separated(prob, prior)
    beta, A = initial_effects(prob, alpha)
    state = SoftmaxLoop(prob, alpha, auto, tol, maxiter, verbose, callback)
    beta, A, alpha, converged, n_iter = state.run(beta, A)
    return finish_softmax(prob, beta, A, alpha, auto, prior, converged, n_iter, state, exact_cov_limit, t0)


def _warn_separated(prob: SoftmaxProblem, prior) -> None:
    """SeparationWarning for factors without a prior whose levels miss a class.

    Without a prior the effect of a class that a level never shows tends to -infinity;
    only the 1e-5 ridge keeps it finite (and huge).
    """
    C = prob.C
    for k, f in enumerate(prob.factors):
        if prior[k] is not None:
            continue
        local = prob.gcodes[k].astype(np.int64) - prob.start[k]
        nlc = np.bincount(local * C + prob.y, weights=prob.w, minlength=int(prob.q[k]) * C)
        nlc = nlc.reshape(-1, C)
        bad = int(np.sum((nlc.sum(axis=1) > 0) & (nlc <= 0).any(axis=1)))
        if bad:
            warnings.warn(f"^{f.name}: {bad} of {int(prob.q[k])} levels never show at least one "
                          "class; with prior_sd=None their effects for those classes are held "
                          "finite only by a 1e-5 ridge (give a prior_sd or 'auto')",
                          SeparationWarning, stacklevel=3)


def _check_offset(offset, n, C):
    if offset is None:
        return None
    off = np.asarray(offset, dtype=np.float64)
    if off.shape == (n,):
        return None if not np.any(off) else np.ascontiguousarray(np.repeat(off[:, None], C, axis=1))
    if off.shape != (n, C):
        raise DataError(f"offset has shape {off.shape}, expected ({n}, {C}) or ({n},)")
    if not np.all(np.isfinite(off)):
        raise DataError(f"offset: row {int(np.argwhere(~np.isfinite(off))[0, 0])} is not finite")
    return np.ascontiguousarray(off)

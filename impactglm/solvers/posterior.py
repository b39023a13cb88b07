"""TODO docstring."""
from __future__ import annotations

import time
import warnings
import numpy as np
import pandas as pd
from scipy import linalg


from ..containers import FactorEffects, FitOutput
from ..errors import ConvergenceWarning, ModelError, SingularFitWarning
from ..kernels import levels as KL, multinomial as km
from .linalg import level_schur, schur_inverse_diag, solve_levels
from .problem import LevelProblem, State
from .softmax import beta_information, block_inverse, SoftmaxProblem, TAU_FLOOR


# ----------------------------------------------------------------------------- inference



class LazyFit:
    """The parts of a ``^`` fit that are computed on first use, not by the fit itself.

    ``posterior()``: (cov_beta, se of every level, exact?) of :func:`level_posterior`
    (the penalised Hessian at the mode, factored or solved by CG: the expensive part);
    ``fitted()``: (eta, mu) in the caller's row order (one pass).  Each is computed once,
    with the same arithmetic as an eager fit, so the answers are identical; the problem is
    released when both are done.  (The row weights of the last pass carry 1/phi, so
    cov_beta includes the scale.)
    """

    def __init__(self, prob: LevelProblem, st: State, lam_l: np.ndarray):
        self._prob, self._st, self._lam_l = prob, st, lam_l
        self._post = None
        self._fit = None

    def posterior(self):
        """(cov_beta (p, p), se (Q,), exact: bool); ModelError if the Hessian is singular."""
        if self._post is None:
            try:
                cov, se, exact = level_posterior(self._prob, self._st, self._lam_l)
            except (linalg.LinAlgError, np.linalg.LinAlgError, ValueError) as exc:
                raise ModelError(f"the penalised Hessian at the mode is singular or not finite "
                                 f"({exc}); the fit is (nearly) saturated or the predictors are "
                                 "collinear") from exc
            self._post = (cov, se, exact)
            self._release()
        return self._post

    def fitted(self):
        """(eta, mu) of the training rows in the caller's order."""
        if self._fit is None:
            self._fit = self._prob.eta_mu(self._st)
            self._release()
        return self._fit

    def _release(self):
        if self._post is not None and self._fit is not None:
            self._prob = self._st = None


def level_posterior(prob: LevelProblem, st: State, lam_l: np.ndarray):
    """(cov_beta, se of every level, exact?) at the mode; see the module docstring."""
    p, Q = prob.p, prob.Q
    Dd = st.W + lam_l
    if prob.K > 1:
        parts = level_schur(prob, Dd, include_beta=True)
        if parts is not None:
            return _posterior_exact(prob, Dd, *parts)
    if prob.X.shape[0] == 1:                                # constant rows: no pass needed
        x0 = prob.X[0]
        B = st.W[:, None] * x0[None, :]
        A = np.outer(x0, x0) * float(st.W[prob.starts[0]:prob.starts[1]].sum())
    else:
        B = np.empty((Q, p))
        KL.level_xw_pass(prob.X, prob.gidx, prob.w, B)
        A = prob.reduced_hessian(np.zeros((Q, 0)))         # X'WX
    if prob.K == 1:
        DinvB = B / Dd[:, None]
    else:
        DinvB = np.column_stack([solve_levels(prob, B[:, j], lam_l, Dd, rtol=1e-8) for j in range(p)])
    S = A - B.T @ DinvB
    S = 0.5 * (S + S.T)
    try:
        cov = linalg.inv(S)
    except linalg.LinAlgError:
        cov = linalg.pinv(S)
    Db = B / Dd[:, None]
    var = 1.0 / Dd + np.einsum("lj,jk,lk->l", Db, cov, Db)
    return cov, np.sqrt(np.maximum(var, 0.0)), prob.K == 1


def _posterior_exact(prob: LevelProblem, Dd: np.ndarray, S, D1, C, rest_idx):
    """Exact beta block and level variances from :func:`level_schur`."""
    Sinv, var = schur_inverse_diag(prob, S, D1, C, rest_idx)
    p = S.shape[0] - rest_idx.size
    return Sinv[:p, :p].copy(), np.sqrt(np.maximum(var, 0.0)), True

def dense_hessian(prob: SoftmaxProblem, beta, A, alpha_l) -> np.ndarray:
    """The full penalised information matrix over (vec beta[:, 1:], vec A) (small problems)."""
    import scipy.sparse as sp

    n, p, C, Q = prob.n, prob.p, prob.C, prob.Q
    Ause = A if Q else np.zeros((1, C))
    P = km.predict_proba(prob.X, beta, prob.gcodes, Ause, prob.offset)
    W = prob.w[:, None, None] * (np.einsum("ic,cd->icd", P, np.eye(C)) - P[:, :, None] * P[:, None, :])
    pb = p * (C - 1)
    D = pb + Q * C
    # Jacobian of eta_i (C) in theta as a sparse (n*C, D) matrix
    rows, cols, vals = [], [], []
    ri = np.arange(n)
    for b in range(p):
        for c in range(1, C):
            rows.append(ri * C + c)
            cols.append(np.full(n, b * (C - 1) + c - 1))
            vals.append(prob.X[:, b])
    for k in range(prob.K):
        for c in range(C):
            rows.append(ri * C + c)
            cols.append(pb + prob.gcodes[k].astype(np.int64) * C + c)
            vals.append(np.ones(n))
    J = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(n * C, D))
    ii = (np.arange(n)[:, None, None] * C + np.arange(C)[None, :, None]).repeat(C, axis=2)
    jj = (np.arange(n)[:, None, None] * C + np.arange(C)[None, None, :]).repeat(C, axis=1)
    Wb = sp.csr_matrix((W.ravel(), (ii.ravel(), jj.ravel())), shape=(n * C, n * C))
    H = (J.T @ Wb @ J).toarray()
    H[np.arange(pb, D), np.arange(pb, D)] += np.repeat(alpha_l, C)
    return H


def finish_softmax(prob, beta, A, alpha, auto, prior, converged, n_iter, state, exact_cov_limit, t0):
    C, p, Q, K = prob.C, prob.p, prob.Q, prob.K
    pb = p * (C - 1)
    alpha_l = prob.alpha_levels(alpha)
    if not converged:
        warnings.warn(f"the multinomial fit did not converge in {n_iter} iterations "
                      f"(certificate {state.max_step:.3g} > tol {state.tol:g}, max gradient "
                      f"{state.max_grad:.3g})",
                      ConvergenceWarning, stacklevel=3)
    Hp = state.Hp
    Ause = A if Q else np.zeros((1, C))
    D = pb + Q * C
    se_eff = np.zeros((Q, C))
    intercept_only = K > 0 and p == 1 and state.const == 0
    if D <= exact_cov_limit and prob.n * C * C <= 5e7:
        Hfull = dense_hessian(prob, beta, A, alpha_l)
        cov = _safe_inv(Hfull)
        cov_beta = cov[:pb, :pb]
        se_eff = np.sqrt(np.clip(np.diag(cov)[pb:], 0, None)).reshape(Q, C)
        cov_method = "exact (dense inverse of the penalised Hessian)"
    elif intercept_only:
        cov_beta, cov_method, se_eff = _intercept_only_cov(prob, Hp, alpha_l)
    else:
        Hinv = block_inverse(Hp, alpha_l, C) if K else np.zeros((0, C, C))
        if K:
            cross = km.beta_level_cross(prob.X, beta, prob.gcodes, Ause, prob.w, prob.offset)
            cross = cross[:, :, 1:, :].reshape(Q, pb, C)       # H_{beta, level} blocks
        Hbb = beta_information(prob, beta, Ause)
        cov_beta, cov_method, covs = _schur_cov(prob, Hbb, cross if K else None, Hinv)
        for k in range(K):
            sl = prob.slice(k)
            var = np.diagonal(Hinv[sl], axis1=1, axis2=2).copy()
            if pb:
                M = np.einsum("qcd,qbd->qcb", Hinv[sl], cross[sl])   # H_l^{-1} H_lb
                var += np.einsum("qcb,bB,qcB->qc", M, covs[k], M)
            se_eff[sl] = np.sqrt(np.clip(var, 0, None))
    effects = []
    for k, f in enumerate(prob.factors):
        sl = prob.slice(k)
        edf = float(np.sum(C - alpha[k] * state.trinv[sl]))
        tau = None if prior[k] is None else float(1.0 / np.sqrt(alpha[k]))
        effects.append(FactorEffects(f.name, f.levels, f.counts, A[sl].copy(), se_eff[sl],
                                     tau, edf, bool(auto[k])))
        if auto[k] and tau is not None and tau <= TAU_FLOOR * 1.0001:
            warnings.warn(f"the prior sd of ^{f.name} is estimated at the boundary (0): the factor "
                          "explains nothing beyond the rest of the model", SingularFitWarning, stacklevel=3)
    ll, conf, _ = km.score_pass(prob.X, beta, prob.gcodes, Ause, prob.y, prob.w, prob.offset)
    wc = np.bincount(prob.y, weights=prob.w, minlength=C)
    null_ll = float(np.sum(wc[wc > 0] * np.log(wc[wc > 0] / wc.sum())))
    log = pd.DataFrame(state.rows)
    extra = {"loglik": float(ll), "null_loglik": null_ll, "confusion": conf,
             "max_grad": float(state.max_grad), "max_step": float(state.max_step),
             "n_passes": state.n_passes,
             "cov_method": cov_method, "alpha": alpha.copy(),
             "tau_history": np.array(state.tau_history), "n_classes": C,
             "penalty": 0.5 * float(np.sum(alpha_l * np.sum(A * A, axis=1))),
             "seconds": time.perf_counter() - t0, "nobs": int(np.sum(prob.w > 0)),
             **{f"seconds_{k}": v for k, v in state.timing.items()},
             "sum_weights": float(prob.w.sum())}
    empty = np.empty((0, C))
    return FitOutput(beta=beta, cov_beta=cov_beta, eta=empty, mu=empty, scale=1.0,
                     n_iter=n_iter, converged=converged, log=log, effects=tuple(effects), extra=extra)


def _intercept_only_cov(prob, Hp, alpha_l):
    """cov(intercepts) and effect se of an intercept-only X from the level blocks alone.

    Per factor k (coupling E_l = x0 D_l[:, 1:], see :meth:`SoftmaxLoop.block_steps`), the
    intercepts' information with factor k integrated out is
    S_k = H_bb - x0^2 sum_l D_l[1:, :] H_l^{-1} D_l[:, 1:] (exact with one factor);
    cov_beta is the S_k^{-1} of largest trace, and each level's se is
    sqrt(diag(H_l^{-1} + x0^2 M_l S_k^{-1} M_l')) with M_l = H_l^{-1} D_l[:, 1:].
    """
    C, K = prob.C, prob.K
    x0 = float(prob.X[0, 0])
    se = np.zeros((prob.Q, C))
    Hbb = None
    best, best_k, best_tr = None, -1, -np.inf
    for k in range(K):
        sl = prob.slice(k)
        _, M, dinv, S, _ = km.block_newton(Hp[sl], alpha_l[sl], np.zeros((int(prob.q[k]), C)))
        if Hbb is None:
            Hbb = x0 * x0 * km.unpack_blocks(Hp[sl].sum(axis=0, keepdims=True), C)[0][1:, 1:]
        cov = _safe_inv(Hbb - x0 * x0 * S)
        var = dinv + x0 * x0 * np.einsum("qcb,bB,qcB->qc", M, cov, M)
        se[sl] = np.sqrt(np.clip(var, 0, None))
        tr = float(np.trace(cov))
        if tr > best_tr:
            best, best_k, best_tr = cov, k, tr
    method = ("exact (Schur complement over the level blocks)" if K == 1 else
              f"approximate: Schur complement over ^{prob.factors[best_k].name}, "
              "the other factors held fixed")
    return best, method, se




def _schur_cov(prob, Hbb, cross, Hinv):
    """cov(beta) from Schur complements over each factor's (block-diagonal) level block.

    With one factor the result is exact.  With several, each factor's complement
    Hbb - sum_l H_bl H_l^{-1} H_lb is the information about beta when that factor is
    integrated out and the others held fixed; the one with the largest total variance
    is reported (an approximation, stated in ``cov_method``).
    """
    if prob.p == 0 or Hbb.size == 0:
        return np.zeros((0, 0)), "none", [np.zeros((0, 0))] * prob.K
    if prob.K == 0:
        return _safe_inv(Hbb), "exact (inverse information)", []
    best, best_k, best_tr, covs = None, -1, -np.inf, []
    for k in range(prob.K):
        sl = prob.slice(k)
        M = np.einsum("qcd,qbd->qcb", Hinv[sl], cross[sl])
        S = Hbb - np.einsum("qbc,qcB->bB", cross[sl], M)
        cov = _safe_inv(S)
        covs.append(cov)
        tr = float(np.trace(cov))
        if tr > best_tr:
            best, best_k, best_tr = cov, k, tr
    method = ("exact (Schur complement over the level blocks)" if prob.K == 1 else
              f"approximate: Schur complement over ^{prob.factors[best_k].name}, "
              "the other factors held fixed")
    return best, method, covs


def _safe_inv(H):
    try:
        return np.linalg.inv(H)
    except np.linalg.LinAlgError:
        return np.linalg.pinv(H)

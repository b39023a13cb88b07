"""Stochastic linear algebra of the level block D = Z'WZ + diag(lam) past the dense limit.

Used by the Laplace criterion (:mod:`impactglm.solvers.laplace`) when the levels outside the
largest factor are too many for a dense Schur complement.  With P = diag(D) (Jacobi) and
D~ = P^-1/2 D P^-1/2 (unit diagonal):

* log det D = sum_l log P_l + tr log D~, and tr log D~ ~ (1/m) sum_j xi_j' log(D~) xi_j
  (Hutchinson, Rademacher probes xi_j, drawn ONCE per fit so the estimate is a smooth function
  of tau), each quadratic form by Gauss quadrature on the Lanczos tridiagonal T_j that the
  conjugate-gradient run on D~ x = xi_j produces for free (stochastic Lanczos quadrature):
  xi' log(D~) xi ~ ||xi||^2 e1' log(T_j) e1, with T_jj = 1/alpha_j + beta_{j-1}/alpha_{j-1},
  T_{j,j+1} = sqrt(beta_j)/alpha_j from the CG coefficients;
* the same CG solutions y_j = D~^-1 xi_j give Hutchinson estimates of the gradient's traces:
  [D^-1]_ll ~ (1/P_l) mean_j xi_jl y_jl and, per row, z_i' D^-1 z_i ~ mean_j (Z P^-1/2 xi_j)_i
  (Z P^-1/2 y_j)_i;
* solves D x = r (the gradient's implicit term) by preconditioned CG to 1e-10
  (:func:`impactglm.solvers.linalg.solve_levels`).

Accuracy: the Hutchinson error of tr log D~ falls as 1/sqrt(m) (m = ``SLQ_PROBES``); tested
against the exact path in tests/test_prior_scale.py (prior sds within ``SLQ_PRIOR_SD_RTOL`` on
problems where both run).  Products with D use a CSR copy of Z (n x Q, K ones per row) built
once per fit, m probe columns per sweep over it.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy import linalg

from .linalg import solve_levels
from .problem import LevelProblem

__all__ = ["Probes", "StochasticLevelBlock", "SLQ_PROBES", "SLQ_PRIOR_SD_RTOL"]

SLQ_PROBES = 32            # Rademacher probe vectors
SLQ_PRIOR_SD_RTOL = 2e-2   # stated accuracy of the prior sds vs the exact path (tested)
CG_RTOL = 1e-8             # relative residual of the probe solves
CG_MAXITER = 500
_CHUNK = 8                 # probe columns per sweep over the rows (bounds the (n, chunk) temporaries)


class Probes:
    """Probe vectors (drawn once, seed fixed) and the CSR level design Z of one problem."""

    def __init__(self, prob: LevelProblem, m: int = SLQ_PROBES, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.xi = rng.choice(np.array([-1.0, 1.0]), size=(prob.Q, m))
        n, K = prob.n, prob.K
        rows = np.repeat(np.arange(n), K)
        self.Z = sp.csr_matrix((np.ones(n * K), (rows, prob.gidx.ravel().astype(np.int64))),
                               shape=(n, prob.Q))
        self.Zt = self.Z.T.tocsr()


class StochasticLevelBlock:
    """D = Z'WZ + diag(lam_l) at the stored row weights, by SLQ and Hutchinson (module docstring)."""

    exact = False

    def __init__(self, prob: LevelProblem, lam_l: np.ndarray, W: np.ndarray, probes: Probes | None):
        self.prob = prob
        self.probes = probes if probes is not None else Probes(prob)
        self.lam_l = lam_l
        self.Dd = W + lam_l
        self.sq = np.sqrt(self.Dd)
        self.w = prob.w
        self._run()

    def _dtilde(self, V: np.ndarray) -> np.ndarray:
        pr = self.probes
        U = V / self.sq[:, None]
        DU = self.lam_l[:, None] * U
        for lo in range(0, U.shape[1], _CHUNK):       # (n, _CHUNK) temporaries only
            DU[:, lo:lo + _CHUNK] += pr.Zt @ (self.w[:, None] * (pr.Z @ U[:, lo:lo + _CHUNK]))
        return DU / self.sq[:, None]

    def _run(self) -> None:
        """Block CG on D~ Y = xi with the Lanczos coefficients of every column."""
        B = self.probes.xi
        Q, m = B.shape
        Y = np.zeros((Q, m))
        R = B.copy()
        Pd = R.copy()
        rr = np.einsum("ij,ij->j", R, R)
        rr0 = rr.copy()
        active = np.ones(m, dtype=bool)
        alphas, betas = [[] for _ in range(m)], [[] for _ in range(m)]
        for _ in range(CG_MAXITER):
            idx = np.flatnonzero(active)
            if idx.size == 0:
                break
            AP = self._dtilde(Pd[:, idx])
            pap = np.einsum("ij,ij->j", Pd[:, idx], AP)
            al = rr[idx] / pap
            Y[:, idx] += Pd[:, idx] * al
            R[:, idx] -= AP * al
            rr_new = np.einsum("ij,ij->j", R[:, idx], R[:, idx])
            be = rr_new / rr[idx]
            for c, j in enumerate(idx):
                alphas[j].append(al[c])
                betas[j].append(be[c])
            Pd[:, idx] = R[:, idx] + Pd[:, idx] * be
            rr[idx] = rr_new
            active[idx] = rr_new > (CG_RTOL ** 2) * rr0[idx]
        self.Y = Y
        self.n_cg = max(len(a) for a in alphas)
        quad = np.empty(m)
        for j in range(m):
            quad[j] = rr0[j] * _lanczos_log(np.array(alphas[j]), np.array(betas[j]))
        self.trlog = float(np.mean(quad))
        self.trlog_se = float(np.std(quad, ddof=1) / np.sqrt(m)) if m > 1 else float("nan")

    def logdet(self) -> float:
        return float(np.sum(np.log(self.Dd))) + self.trlog

    def solve(self, R: np.ndarray) -> np.ndarray:
        """D^-1 R (columns one at a time, preconditioned CG to 1e-10)."""
        prob = self.prob
        if R.ndim == 1:
            return solve_levels(prob, R, self.lam_l, self.Dd)
        return np.column_stack([solve_levels(prob, R[:, j], self.lam_l, self.Dd)
                                for j in range(R.shape[1])])

    def diag_and_rows(self) -> tuple[np.ndarray, np.ndarray]:
        xi, Y = self.probes.xi, self.Y
        dinv = np.mean(xi * Y, axis=1) / self.Dd
        Z = self.probes.Z
        v = np.zeros(self.prob.n)
        for lo in range(0, xi.shape[1], _CHUNK):
            c = slice(lo, lo + _CHUNK)
            v += np.sum((Z @ (xi[:, c] / self.sq[:, None])) * (Z @ (Y[:, c] / self.sq[:, None])), axis=1)
        return dinv, v / xi.shape[1]


def _lanczos_log(alpha: np.ndarray, beta: np.ndarray) -> float:
    """e1' log(T) e1 for the Lanczos tridiagonal T of a CG run (coefficients alpha, beta)."""
    k = alpha.size
    d = 1.0 / alpha
    d[1:] += beta[:k - 1] / alpha[:k - 1]
    e = np.sqrt(beta[:k - 1]) / alpha[:k - 1]
    theta, vecs = linalg.eigh_tridiagonal(d, e)
    return float(np.sum(vecs[0] ** 2 * np.log(theta)))

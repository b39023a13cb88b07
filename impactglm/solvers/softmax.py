"""Multinomial (softmax) regression with high-cardinality factors: the re-encoding Newton solver.

Model (C classes, K factors ``^g_k``, class 0 the reference of the fixed part):

    eta_ic = offset_ic + x_i' beta_c + sum_k a_k[g_k(i), c],    p_ic = softmax_c(eta_ic)
    beta_0 = 0                                   (reference class, as MNLogit / nnet::multinom)
    a_k[l, c] ~ N(0, tau_k^2) independently for every class c (symmetric effects)

The estimate maximises the log posterior

    L(beta, a) = sum_i w_i log p_{i,y_i} - sum_k sum_{l,c} a_k[l, c]^2 / (2 tau_k^2).

**Identifiability.** The likelihood is unchanged when a constant is added to all C
effects of one level; the prior picks the symmetric representative, so at the mode
sum_c a_k[l, c] = 0 for every level (the penalised gradient along (1, ..., 1) is
-sum_c a_k[l, c] / tau_k^2).  The fixed coefficients use reference class 0, so
``beta[:, 0] = 0`` and ``beta[:, c]`` are log-odds of class c against class 0, exactly
statsmodels' ``MNLogit`` parameters.  The prior on C symmetric effects is a prior of
variance 2 tau_k^2 on every contrast a[l, c] - a[l, c'].

**Solver** (DESIGN.md section 3, per-class form).  Every iteration:

1. one fused row pass (:func:`impactglm.kernels.multinomial.level_pass`) gives the log
   likelihood, the beta score, and per level l of every factor the C-vector of summed
   score residuals and the C x C block H_l = sum_{i in l} W_i + I / tau^2;
2. per level and class the *balance deficit* b_l = G_l - a_l / tau^2 (the penalised
   gradient) and the *Bayesian impact step* s_l = H_l^{-1} b_l (the exact Newton step
   for level l's C effects with everything else held fixed); when X has columns beyond
   an intercept, the step of each factor is instead the exact Newton step of
   (beta[:, 1:], that factor's effects): the level blocks are eliminated by a Schur
   complement, so a covariate that is constant within levels (a user's age) moves
   together with its level compensation (:meth:`SoftmaxLoop.coupled_block_steps`);
3. a dense Newton step over the reduced parameters (beta[:, 1:], and one step length per
   direction: the impact step, the previous step and the current effect ("summed
   impact") of every factor), whose information matrix comes from one more row pass
   (level blocks plus :func:`~impactglm.kernels.multinomial.subspace_cross`) with the prior added exactly;
4. step halving until the log posterior does not decrease; the pass at the new point
   is also the next iteration's step 1.

Converged when the largest absolute penalised gradient over beta[:, 1:] and every
(level, class) effect is below ``tol`` (and, with ``prior_sd="auto"``, tau has settled).

**Empirical Bayes** (``prior_sd="auto"``): tau_k is updated in the loop by MacKay's fixed
point for the Laplace (PQL) approximation of the marginal likelihood, with the
posterior covariance of each level's effects approximated by its own block H_l^{-1}:

    gamma_k = sum_{l in k} (C - tr(H_l^{-1}) / tau_k^2),   tau_k^2 = sum_{l in k} |a_k[l]|^2 / gamma_k.

Its fixed point is a stationary point of the criterion
-(1/2) |a_k|^2/tau^2 - (q_k C/2) log tau^2 - (1/2) sum_l log det H_l (H_l held fixed,
as in PQL).  The (1, ..., 1) direction of each block carries no data, contributes 0 to
gamma and no mass to |a|^2, so effectively C - 1 contrasts per level are counted.

**Standard errors.**  ``cov_beta`` is the beta block of the inverse penalised Hessian
(level effects integrated out): exact by a dense inverse when the problem is small
(``exact_cov_limit``), exact through the Schur complement with one factor (its level
block is block diagonal), and with several factors at scale the Schur complement over
the factor that gives the largest variance (conditional on the other factors; stated in
``extra["cov_method"]``).  The level effects' ``se`` is sqrt(diag) of the same inverse
(dense case) or the block inverse H_l^{-1} plus the beta uncertainty propagated through
the coupling, H_l^{-1} + H_l^{-1} H_lb cov_beta H_bl H_l^{-1}.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any, Sequence
import numpy as np


from ..errors import ConvergenceWarning, DataError, ModelError
from ..kernels import levels as KL, multinomial as km
from .impact import balance_deficit
from .linalg import solve_psd
from .newton import certificate, run_newton


TAU_FLOOR = 1e-4      # smallest tau the empirical-Bayes update may return
TAU_RTOL = 1e-6       # tau has settled when its relative change is below this
TAU_MAX = 1e3         # largest tau the empirical-Bayes update may return
N_DIRS = 3            # directions per factor: impact step, previous step, current effect


@dataclass(frozen=True)
class FactorInput:
    """One high-cardinality factor as the solver sees it."""

    name: str
    codes: np.ndarray          # (n,) int32 level index 0..q-1
    n_levels: int
    levels: np.ndarray
    counts: np.ndarray


def as_factors(factors: Sequence[Any], n: int) -> list[FactorInput]:
    """Accept FactorCodes-like objects (name, codes, levels, counts) or (codes, n_levels) pairs."""
    out = []
    for k, f in enumerate(factors):
        if hasattr(f, "codes"):
            codes = np.asarray(f.codes)
            levels = np.asarray(f.levels)
            q = len(levels)
            name = str(getattr(f, "name", f"g{k}"))
            counts = np.asarray(getattr(f, "counts", None) if getattr(f, "counts", None) is not None
                                else np.bincount(codes, minlength=q), dtype=np.int64)
        else:
            codes, q = f
            codes = np.asarray(codes)
            q = int(q)
            levels = np.arange(q)
            name = f"g{k}"
            counts = np.bincount(codes.astype(np.int64), minlength=q).astype(np.int64)
        if codes.shape != (n,):
            raise DataError(f"factor {name!r}: codes have shape {codes.shape}, expected ({n},)")
        if n and (codes.min() < 0 or codes.max() >= q):
            bad = int(np.flatnonzero((codes < 0) | (codes >= q))[0])
            raise DataError(f"factor {name!r}: row {bad} has level code {codes[bad]} outside 0..{q - 1}")
        out.append(FactorInput(name, codes.astype(np.int32, copy=False), q, levels, counts))
    return out


def check_outcome(y: np.ndarray, C: int, w: np.ndarray, n: int) -> np.ndarray:
    if C < 2:
        raise ModelError(f"a multinomial model needs at least 2 outcome classes, got {C}")
    y = np.asarray(y)
    if y.shape != (n,):
        raise DataError(f"outcome codes have shape {y.shape}, expected ({n},)")
    if n and (y.min() < 0 or y.max() >= C):
        bad = int(np.flatnonzero((y < 0) | (y >= C))[0])
        raise DataError(f"outcome: row {bad} has class code {y[bad]} outside 0..{C - 1}")
    y = y.astype(np.int32, copy=False)
    wc = np.bincount(y, weights=w, minlength=C)
    present = np.flatnonzero(wc > 0)
    if len(present) < 2:
        raise ModelError("the outcome takes a single class in the data (all rows are class "
                         f"{int(present[0]) if len(present) else '?'}); a multinomial model needs "
                         "at least two observed classes")
    if len(present) < C:
        missing = [int(c) for c in np.flatnonzero(wc <= 0)]
        raise ModelError(f"outcome classes {missing} have no rows with positive weight; "
                         "drop unused classes before fitting")
    return y


class SoftmaxProblem:
    """Arrays of one fit, in solver layout (global level indices, per-level precision)."""

    SORT_MIN_ROWS = 50_000

    def __init__(self, X, factors, y, C, w, offset):
        X = np.asarray(X, dtype=np.float64)
        self.n, self.p = X.shape
        self.C = C
        self.factors = factors
        self.K = len(factors)
        self.q = np.array([f.n_levels for f in factors], dtype=np.int64)
        self.start = np.concatenate([[0], np.cumsum(self.q)]).astype(np.int64)
        self.Q = int(self.start[-1])
        # rows sorted by the largest factor, so that its level sums stream through memory
        perm = None
        self.ksort = -1
        if self.K and self.n >= self.SORT_MIN_ROWS:
            kmax = self.ksort = int(np.argmax(self.q))
            perm = KL.counting_sort(np.ascontiguousarray(factors[kmax].codes), int(self.q[kmax]))
        self.perm = perm
        self.X = X if (perm is None or _is_constant(X)) else np.ascontiguousarray(X[perm])
        self.X = np.ascontiguousarray(self.X)
        self.y = self._take(y)
        self.w = self._take(w)
        self.offset = None if offset is None else np.ascontiguousarray(offset[perm] if perm is not None
                                                                       else offset)
        gc = np.empty((max(self.K, 0), self.n), dtype=np.int32)
        for k, f in enumerate(factors):
            np.add(self._take(f.codes), np.int32(self.start[k]), out=gc[k], dtype=np.int32)
        self.gcodes = gc
        self.factor_of_level = np.repeat(np.arange(self.K), self.q)

    def _take(self, v: np.ndarray) -> np.ndarray:
        """v (n,) in the stored (sorted) row order."""
        v = np.ascontiguousarray(v)
        if self.perm is None:
            return v
        out = np.empty(self.n, dtype=v.dtype)
        KL.gather_rows(v, self.perm, out)
        return out
        self.factor_of_level = np.repeat(np.arange(self.K), self.q)

    def slice(self, k: int) -> slice:
        return slice(int(self.start[k]), int(self.start[k + 1]))

    def alpha_levels(self, alpha: np.ndarray) -> np.ndarray:
        """Per-level prior precision (Q,) from the per-factor precisions (K,)."""
        return alpha[self.factor_of_level] if self.K else np.zeros(0)


def initial_effects(prob: SoftmaxProblem, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starting beta (class log-odds on an intercept column) and smoothed impact codes.

    With class shares pi_c, level l of a factor starts at the shrunken log-ratio
        a[l, c] = log((n_lc + m pi_c) / (n_l + m)) - log(pi_c),   m = max(1, alpha) C,
    centred over classes; the first reduced Newton step rescales each factor's codes
    (the current effect is one of its directions), so double counting between crossed
    factors is undone at once.
    """
    C, X, w, y = prob.C, prob.X, prob.w, prob.y
    wc = np.bincount(y, weights=w, minlength=C)
    pi = wc / wc.sum()
    beta = np.zeros((prob.p, C))
    const = np.flatnonzero(np.all(X == X[:1], axis=0) & (X[0] != 0)) if prob.n else []
    if len(const):
        b = int(const[0])
        beta[b] = (np.log(pi) - np.log(pi[0])) / X[0, b]
    A = np.zeros((prob.Q, C))
    for k in range(prob.K):
        sl = prob.slice(k)
        nlc = np.bincount((prob.gcodes[k].astype(np.int64) - prob.start[k]) * C + y, weights=w,
                          minlength=int(prob.q[k]) * C).reshape(-1, C)
        m = max(1.0, float(alpha[k])) * C
        code = np.log((nlc + m * pi) / (nlc.sum(axis=1, keepdims=True) + m)) - np.log(pi)
        A[sl] = code - code.mean(axis=1, keepdims=True)
    return beta, A


def block_inverse(Hp: np.ndarray, alpha_l: np.ndarray, C: int) -> np.ndarray:
    """(H_l + alpha_l I)^{-1} for every level (Q, C, C) from packed data blocks."""
    H = km.unpack_blocks(Hp, C)
    H[:, np.arange(C), np.arange(C)] += alpha_l[:, None]
    return np.linalg.inv(H)


def laplace_alpha(Hp: np.ndarray, G: np.ndarray, A: np.ndarray, alpha0: float) -> float:
    """Prior precision 1/tau^2 of one factor maximising its Laplace (PQL) criterion.

    Around the current effects A (q, C) the log likelihood is quadratic in each level's
    effects: G_l'(a - a_l) - (a - a_l)' H_l (a - a_l)/2, H_l the data block (packed Hp).
    With z_l = G_l + H_l a_l the criterion of alpha = 1/tau^2 is

        L(alpha) = sum_l [ z_l'(H_l + alpha I)^{-1} z_l + C log alpha - log det(H_l + alpha I) ] / 2,

    and its stationarity condition, in u = log alpha,

        h(u) = q C - alpha sum_l tr (H_l + alpha I)^{-1} - alpha sum_l |(H_l + alpha I)^{-1} z_l|^2 = 0,

    is MacKay's fixed point alpha = gamma / |a(alpha)|^2.  h > 0 for small alpha; if h
    stays positive up to 1/TAU_FLOOR^2 the estimate is on the boundary (tau = TAU_FLOOR).
    Solved by secant steps from the current value, with a bracketing fallback.
    """
    from scipy.optimize import brentq

    q, C = G.shape
    z = G + km.block_matvec(Hp, A)

    def h(u: float) -> float:
        alpha = float(np.exp(u))
        x, tr = km.block_solve(Hp, np.full(q, alpha), z)
        return q * C - alpha * float(np.sum(tr)) - alpha * float(np.sum(x * x))

    lo, hi = np.log(1.0 / TAU_MAX ** 2), np.log(1.0 / TAU_FLOOR ** 2)
    u0 = float(np.clip(np.log(alpha0), lo, hi))
    h0 = h(u0)
    u1 = u0 + (0.05 if h0 > 0 else -0.05)
    h1 = h(u1)
    for _ in range(30):                       # secant
        if h1 == h0:
            break
        u2 = u1 - h1 * (u1 - u0) / (h1 - h0)
        if not (lo <= u2 <= hi) or not np.isfinite(u2):
            break
        u0, h0, u1, h1 = u1, h1, u2, h(u2)
        if abs(u1 - u0) < 1e-8:
            return float(np.exp(u1))
    if h(hi) > 0:
        return float(np.exp(hi))
    if h(lo) < 0:
        return float(np.exp(lo))
    return float(np.exp(brentq(h, lo, hi, xtol=1e-12)))


class SoftmaxLoop:
    """The re-encoding Newton iterations (state kept between iterations)."""

    def __init__(self, prob, alpha, auto, tol, maxiter, verbose, callback):
        self.prob, self.alpha, self.auto = prob, alpha.copy(), auto
        self.tol, self.maxiter, self.verbose, self.callback = tol, maxiter, verbose, callback
        self.buffers = km.LevelPassBuffers(prob.n, prob.p, max(prob.Q, 1), prob.C, True)
        self.n_passes = 0
        # class probabilities of the last level pass (float32: they only shape the
        # reduced Newton step; gradients and the objective are float64)
        self.P = np.empty((prob.n, prob.C), dtype=np.float32)
        self.const = _intercept_column(prob.X)
        self.timing = {"level_pass": 0.0, "subspace_pass": 0.0, "tau": 0.0}
        self.rows: list[dict] = []
        self.tau_history: list[np.ndarray] = []
        self.max_grad = self.max_step = np.inf
        self.t0 = time.perf_counter()
        self.Hp = None
        self.trinv = None
        # beta coupled into the level steps when X has columns beyond an intercept
        self.coupled = prob.K > 0 and prob.p > (0 if self.const is None else 1)
        self.Hbb = None
        self._coupled = None            # cached coupling blocks (coupled_block_steps)
        self._n_coupled = 0

    def pass_a(self, beta, A):
        prob = self.prob
        t = time.perf_counter()
        Ause = A if prob.Q else np.zeros((1, prob.C))
        ll, gb, G, Hp = km.level_pass(prob.X, beta, prob.gcodes, Ause, prob.y, prob.w,
                                      prob.offset, True, self.buffers, prob.ksort, self.P)
        self.n_passes += 1
        self.timing["level_pass"] += time.perf_counter() - t
        return ll, gb.copy(), G[:prob.Q].copy(), Hp[:prob.Q].copy()

    def subspace_information(self, beta, A, D, Hp):
        """The reduced information V'WV over (vec beta[:, 1:], gamma[k, j]) (no prior).

        Entries within one factor are sums over its levels of d_j[l]' H_l d_j'[l]; with an
        intercept-only X its entries are sums of H_l (and H_l d_j[l]) over the levels of a
        factor, since every row is in exactly one level of each factor.  One row pass
        (:func:`~impactglm.kernels.multinomial.subspace_cross`) adds the rest.
        """
        prob, C = self.prob, self.prob.C
        K, J = prob.K, D.shape[1]
        intercept_only = prob.K > 0 and prob.p == 1 and self.const == 0
        pb = prob.p * (C - 1)
        Dk = D if prob.Q else np.zeros((1, J, C))
        H = km.subspace_cross(self.P, prob.X, prob.gcodes, prob.w, Dk,
                              with_beta=not intercept_only)
        self.n_passes += 1
        if intercept_only:
            Hfull = np.zeros((pb + K * J, pb + K * J))
            Hfull[pb:, pb:] = H
            H = Hfull
            x0 = float(prob.X[0, 0])
            sl = prob.slice(0)   # every row is in one level of factor 0
            tot = km.unpack_blocks(Hp[sl].sum(axis=0, keepdims=True), C)[0]
            H[:pb, :pb] = x0 * x0 * tot[1:, 1:]
        for k in range(K):
            sl = prob.slice(k)
            HD = km.block_matvec(Hp[sl], D[sl])
            r = slice(pb + k * J, pb + (k + 1) * J)
            H[r, r] = np.einsum("qjc,qkc->jk", D[sl], HD)
            if intercept_only:
                H[:pb, r] = float(prob.X[0, 0]) * HD.sum(axis=0)[:, 1:].T
        upper = np.triu(H)
        return upper + np.triu(H, 1).T

    def block_steps(self, Hp, alpha_l, Gpen, gb):
        """Per factor, the Newton step of (intercept, this factor's effects), others fixed.

        Levels alone: s_l = H_l^{-1} b_l (the Bayesian impact step).  With an intercept
        column (value x0) the step also accounts for the coupling E_l = x0 D_l[:, 1:]
        between each level and the class intercepts (D_l the data block):

            S = H_bb - sum_l E_l' H_l^{-1} E_l,   delta_b = S^{-1} (g_b - sum_l E_l' s_l),
            d_l = s_l - H_l^{-1} E_l delta_b,

        the exact Newton step of a one-factor model (so that one factor converges
        quadratically), and the direction of factor k otherwise.  Returns the (Q, C)
        directions and tr(H_l^{-1}) per level.
        """
        prob, C = self.prob, self.prob.C
        if self.const is None:
            return km.block_solve(Hp, alpha_l, Gpen)
        x0 = float(prob.X[0, self.const])
        steps = np.empty_like(Gpen)
        trinv = np.empty(prob.Q)
        Hbb = None
        g_b = gb[self.const, 1:]
        for k in range(prob.K):
            sl = prob.slice(k)
            st, M, tr, S, r = km.block_newton(Hp[sl], alpha_l[sl], Gpen[sl])
            if Hbb is None:   # every row is in one level of factor 0
                Hbb = x0 * x0 * km.unpack_blocks(Hp[sl].sum(axis=0, keepdims=True), C)[0][1:, 1:]
            db = solve_psd(Hbb - x0 * x0 * S, g_b - x0 * r)
            steps[sl] = st - x0 * (M @ db)
            trinv[sl] = tr.sum(axis=1)
        return steps, trinv

    def coupled_block_steps(self, beta, A, Hp, alpha_l, Gpen, gb):
        """Per factor, the exact Newton step of (all of beta[:, 1:], this factor's effects).

        The generalisation of :meth:`block_steps` to every fixed column: with
        E_l = sum_{i in l} x_i (x) W_i[1:, :] the (p(C-1) x C) cross block of level l and
        H_bb = X'WX over beta[:, 1:] (no prior), the Schur complement with the level
        blocks eliminated,

            S = H_bb - sum_l E_l H_l^{-1} E_l',  delta_b = S^{-1} (g_b - sum_l E_l s_l),
            d_l = s_l - H_l^{-1} E_l' delta_b,   s_l = H_l^{-1} b_l,

        moves the levels together with beta: a covariate constant within the levels
        (x_j = xbar_j[l]) is compensated by a[l] -= H_l^{-1} E_l' delta_b, the shrunken
        level mean of x_j, so beta and the effects no longer alternate.  H_bb is the
        fixed block of the last reduced information (one iteration old), and E, H^-1 E' and
        S are refreshed at the calls 1, 2, 4, 8, ... only (one pass each); they only shape
        the direction, the reduced Newton step over it is exact.  Returns the (Q, C)
        directions and tr(H_l^{-1}) per level.
        """
        prob, C = self.prob, self.prob.C
        pb = prob.p * (C - 1)
        Ause = A if prob.Q else np.zeros((1, C))
        if self.Hbb is None:
            self.Hbb = beta_information(prob, beta, Ause)
        t = time.perf_counter()
        self._n_coupled += 1
        if self._coupled is None or (self._n_coupled & (self._n_coupled - 1)) == 0:
            # the coupling blocks E_l, M_l = H_l^-1 E_l' and S at calls 1, 2, 4, 8, ...: they
            # only shape the direction (the reduced Newton step is exact), and change little
            cross = km.beta_level_cross(prob.X, beta, prob.gcodes, Ause, prob.w, prob.offset)
            self.n_passes += 1
            E = cross[:, :, 1:, :].reshape(prob.Q, pb, C)
            del cross
            parts = []
            for k in range(prob.K):
                sl = prob.slice(k)
                Hinv = block_inverse(Hp[sl], alpha_l[sl], C)
                Et = E[sl].transpose(1, 0, 2).reshape(pb, -1)             # (pb, q C)
                M = np.matmul(Hinv, E[sl].transpose(0, 2, 1))             # (q, C, pb)
                parts.append((Et, M, self.Hbb - Et @ M.reshape(-1, pb)))
            self._coupled = parts
        g_b = gb[:, 1:].ravel()
        steps = np.empty_like(Gpen)
        trinv = np.empty(prob.Q)
        for k, (Et, M, S) in enumerate(self._coupled):
            sl = prob.slice(k)
            Hinv = block_inverse(Hp[sl], alpha_l[sl], C)
            s = np.einsum("qcd,qd->qc", Hinv, Gpen[sl])
            db = solve_psd(S, g_b - Et @ s.ravel())
            steps[sl] = s - M @ db
            trinv[sl] = np.trace(Hinv, axis1=1, axis2=2)
        self.timing["coupled"] = self.timing.get("coupled", 0.0) + time.perf_counter() - t
        return steps, trinv

    def logpost(self, ll, A, alpha_l):
        return ll - 0.5 * float(np.sum(alpha_l * np.sum(A * A, axis=1)))

    # -- hooks of the Newton template (solvers/newton.py); f = -log posterior ---------------
    def evaluate(self, theta) -> "SoftmaxPoint":
        beta, A = theta
        ll, gb, G, Hp = self.pass_a(beta, A)
        pt = SoftmaxPoint(theta=(beta, A), ll=ll, gb=gb, G=G, Hp=Hp)
        pt.f = -self.logpost(ll, A, self.prob.alpha_levels(self.alpha))
        return pt

    def finite(self, pt) -> bool:
        return bool(np.isfinite(pt.f) and np.all(np.isfinite(pt.gb)) and np.all(np.isfinite(pt.G)))

    def prepare(self, pt):
        """Centre each factor's class means into the intercept (:func:`_center`, no pass);
        then, for prior_sd="auto" factors, the Laplace (MacKay) update of tau_k at the new
        point (:func:`laplace_alpha`, level blocks only).  Returns (point, tau moved)."""
        prob = self.prob
        if self.const is not None:
            pt.theta = _center(prob, *pt.theta, self.const)
        moved = False
        if self.auto.any():
            A = pt.theta[1]
            new_alpha = self.alpha.copy()
            t = time.perf_counter()
            for k in np.flatnonzero(self.auto):
                sl = prob.slice(k)
                new_alpha[k] = laplace_alpha(pt.Hp[sl], pt.G[sl], A[sl], self.alpha[k])
            self.timing["tau"] += time.perf_counter() - t
            if np.any(np.abs(np.sqrt(self.alpha / new_alpha) - 1.0) > TAU_RTOL):
                moved = True
                self.alpha = new_alpha
        self.tau_history.append(1.0 / np.sqrt(self.alpha))
        pt.f = -self.logpost(pt.ll, pt.theta[1], prob.alpha_levels(self.alpha))
        return pt, moved

    def certificate(self, pt) -> tuple[float, float]:
        """max |g| and max |g| / H_jj over beta[:, 1:] and every (level, class) effect; the
        level curvatures are the diagonals of the blocks H_l + I/tau^2, beta's the diagonal
        of X'WX (the last reduced information; from the level blocks with an intercept-only X)."""
        prob, C = self.prob, self.prob.C
        alpha_l = prob.alpha_levels(self.alpha)
        A = pt.theta[1]
        grads, hdiag = [pt.gb[:, 1:].ravel()], [self._beta_diag(pt)]
        if prob.K:
            diag = pt.Hp[:, [c * C - (c * (c - 1)) // 2 for c in range(C)]]   # packed (c, c)
            grads.append((pt.G - alpha_l[:, None] * A).ravel())
            hdiag.append((diag + alpha_l[:, None]).ravel())
        return certificate(grads, hdiag)

    def _beta_diag(self, pt) -> np.ndarray:
        prob, C = self.prob, self.prob.C
        pb = prob.p * (C - 1)
        if pb == 0:
            return np.zeros(0)
        if prob.K > 0 and prob.p == 1 and self.const == 0:       # intercept only
            x0 = float(prob.X[0, 0])
            tot = km.unpack_blocks(pt.Hp[prob.slice(0)].sum(axis=0, keepdims=True), C)[0]
            return x0 * x0 * np.diag(tot)[1:]
        if self.Hbb is None:
            beta, A = pt.theta
            self.Hbb = beta_information(prob, beta, A if prob.Q else np.zeros((1, C)))
            self.n_passes += 1
        return np.diag(self.Hbb).copy()

    def directions(self, pt, prev, rescale: bool) -> np.ndarray:
        """(Q, J, C): per factor the impact step (coupled with beta where X varies), the
        previous change of the effects, and the current effect when ``rescale``."""
        prob, C = self.prob, self.prob.C
        beta, A = pt.theta
        alpha_l = prob.alpha_levels(self.alpha)
        J = 1 + (prev is not None) + bool(rescale)
        D = np.zeros((max(prob.Q, 1), J, C))
        if prob.K:
            Gpen = balance_deficit(pt.G, A, alpha_l[:, None])
            if self.coupled:
                steps, _ = self.coupled_block_steps(beta, A, pt.Hp, alpha_l, Gpen, pt.gb)
            else:
                steps, _ = self.block_steps(pt.Hp, alpha_l, Gpen, pt.gb)
            D[:prob.Q, 0] = steps
            j = 1
            if prev is not None:
                D[:prob.Q, j] = prev[1]
                j += 1
            if rescale:
                D[:prob.Q, j] = A
        return D

    def reduced_system(self, pt, D):
        prob, C = self.prob, self.prob.C
        beta, A = pt.theta
        J = D.shape[1]
        t = time.perf_counter()
        Hs = self.subspace_information(beta, A, D, pt.Hp)
        self.timing["subspace_pass"] += time.perf_counter() - t
        pb = prob.p * (C - 1)
        self.Hbb = Hs[:pb, :pb].copy()
        alpha_l = prob.alpha_levels(self.alpha)
        Gpen = balance_deficit(pt.G, A, alpha_l[:, None]) if prob.K else pt.G
        gs = np.concatenate([pt.gb[:, 1:].ravel(), _dir_gradient(prob, Gpen, D)])
        for k in range(prob.K):
            sl = prob.slice(k)
            r = slice(pb + k * J, pb + (k + 1) * J)
            Hs[r, r] += self.alpha[k] * np.einsum("qjc,qkc->jk", D[sl], D[sl])
        return Hs, -gs

    def step(self, gamma, D):
        prob, C = self.prob, self.prob.C
        pb, J = prob.p * (C - 1), D.shape[1]
        dbeta = np.zeros((prob.p, C))
        dbeta[:, 1:] = gamma[:pb].reshape(prob.p, C - 1)
        dA = np.zeros((prob.Q, C))
        for k in range(prob.K):
            sl = prob.slice(k)
            dA[sl] = np.einsum("j,qjc->qc", gamma[pb + k * J: pb + (k + 1) * J], D[sl])
        return dbeta, dA

    def log(self, it, pt, cert, t) -> None:
        row = {"iteration": it, "objective": pt.f, "max_grad": cert[0], "max_step": cert[1],
               "step": t, "passes": self.n_passes, "seconds": time.perf_counter() - self.t0}
        for k, f in enumerate(self.prob.factors):
            row[f"tau[{f.name}]"] = 1.0 / np.sqrt(self.alpha[k])
        self.rows.append(row)
        self.max_grad, self.max_step = cert
        if self.verbose:
            taus = " ".join(f"tau[{f.name}]={row[f'tau[{f.name}]']:.5g}" for f in self.prob.factors)
            print(f"iter {it:3d}  objective {row['objective']:.10g}  max_grad {cert[0]:.3e}  "
                  f"max_step {cert[1]:.3e}  step {t:.3g}  passes {self.n_passes}  "
                  f"{row['seconds']:.2f}s  {taus}", flush=True)
        if self.callback is not None:
            self.callback(row)

    def run(self, beta, A):
        """The Newton template from (beta, A); returns (beta, A, alpha, converged, n_iter)
        and keeps the final level blocks (``Hp``) and tr (H_l + I/tau^2)^-1 (``trinv``)."""
        self.t0 = time.perf_counter()
        pt, converged, n_iter, _ = run_newton(self, self.evaluate((beta, A)), tol=self.tol,
                                              maxiter=self.maxiter)
        beta, A = pt.theta
        prob = self.prob
        self.Hp = pt.Hp
        self.trinv = (km.block_solve(pt.Hp, prob.alpha_levels(self.alpha), np.zeros((prob.Q, prob.C)))[1]
                      if prob.K else np.zeros(0))
        return beta, A, self.alpha, converged, n_iter


@dataclass
class SoftmaxPoint:
    """(beta, A) and the quantities of the level pass there."""

    theta: tuple
    ll: float
    gb: np.ndarray
    G: np.ndarray
    Hp: np.ndarray
    f: float = float("inf")


def _is_constant(X: np.ndarray) -> bool:
    """Every row of X equals the first (e.g. an intercept-only design)."""
    return X.shape[0] == 0 or bool(np.all(X == X[:1]))


def _intercept_column(X: np.ndarray) -> int | None:
    """Index of a nonzero constant column of X (the intercept), or None."""
    if X.shape[0] == 0 or X.shape[1] == 0:
        return None
    const = np.flatnonzero(np.all(X == X[:1], axis=0) & (X[0] != 0))
    return int(const[0]) if len(const) else None


def _center(prob: SoftmaxProblem, beta, A, b: int):
    """Move each factor's per-class mean effect into the intercept (column b of X).

    eta is unchanged: a_k[l, c] -= m_kc, beta[b, c] += (m_kc - m_k0) / x_b (the common
    shift m_k0 cancels in the softmax), while the prior penalty can only drop, so the
    log posterior does not decrease.  At the mode every factor has sum_l a_k[l, c] = 0
    (sum the level gradients and use the intercept's), so this removes, at no cost, the
    direction in which intercept and factor means are confounded and only the prior
    decides: the ill-conditioned mode of crossed designs.
    """
    if prob.K == 0:
        return beta, A
    A = A.copy()
    beta = beta.copy()
    for k in range(prob.K):
        sl = prob.slice(k)
        m = A[sl].mean(axis=0)
        A[sl] -= m
        beta[b] += (m - m[0]) / prob.X[0, b]
    return beta, A


def _dir_gradient(prob, Gpen, D):
    """Penalised gradient along every direction: sum over the factor's levels of <b_l, d_j[l]>."""
    J = D.shape[1]
    out = np.zeros(prob.K * J)
    for k in range(prob.K):
        sl = prob.slice(k)
        out[k * J:(k + 1) * J] = np.einsum("qc,qjc->j", Gpen[sl], D[sl])
    return out


def beta_information(prob, beta, Ause):
    """X' W X over beta[:, 1:] (the prior-free fixed-effects block), in float64."""
    P = km.predict_proba(prob.X, beta, prob.gcodes, Ause, prob.offset)
    H = km.subspace_cross(P, prob.X, prob.gcodes, prob.w,
                          np.zeros((Ause.shape[0], 0, prob.C)), True)
    return np.triu(H) + np.triu(H, 1).T

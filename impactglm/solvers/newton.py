"""The re-encoding Newton template: one loop for every family (DESIGN.md sections 3 and 5a).

The model is a GLM with level effects; the fit is the posterior mode, the minimiser of

    f(theta) = -loglik(theta) / phi + sum_k ||a_k||^2 / (2 tau_k^2),    theta = (beta, a).

What differs between families is a set of named hooks on an *engine* object
(:class:`~impactglm.solvers.scalar.ScalarEngine`: gaussian, binomial, poisson, gamma with
1 x 1 level blocks; :class:`~impactglm.solvers.softmax.SoftmaxLoop`: multinomial with
C x C level blocks); what differs between machines is the engine's backend of row
passes (:mod:`impactglm.solvers.passes`, notes/engine-passes.md).  Every iteration:

1. ``evaluate(theta)``: one fused pass over the rows at theta gives f, the gradient of
   beta and, per level, the summed score residuals and the data block of the Hessian
   (1 x 1 or C x C);
2. ``prepare(point)``: moves that cost no pass: each factor's mean effect into the
   intercept (the likelihood is unchanged and the penalty can only drop; at the mode
   every factor's effects sum to zero when the model has an intercept, so this removes
   the nearly flat "intercept against factor means" mode of crossed designs), and an
   empirical-Bayes update of the prior precisions where the family does one in the loop;
3. ``certificate(point)``: (max |g_j|, max |g_j| / H_jj) over beta and every level
   effect, H_jj the diagonal of the penalised Hessian.  max |g_j| / H_jj is the largest
   single-coordinate Newton step.  The loop stops when it is <= tol (default
   :data:`DEFAULT_TOL`): measured on the test problems and MovieLens-shaped data
   (notes/engine.md), the effects are then within ~1e-6 of the optimum (their error is
   1-1.6 times the certificate) and the objective within 1e-12 relative;
4. ``directions(point, prev, rescale)``: one direction policy, per factor: the Bayesian
   impact step (the exact Newton step of each level's block with everything else held
   fixed, or, when X has columns that vary within levels, of (beta, this factor) with
   the level blocks eliminated), the previous change of the effects, and, at the first
   iteration and after the prior moved, the current effect (a rescaling of the whole
   factor);
5. ``reduced_system(point, D)``: one light pass gives the small dense Hessian H and
   gradient g of f over (beta, one step length per direction), the prior included
   exactly; gamma = -H^+ g (:func:`~impactglm.solvers.linalg.solve_psd`);
6. step halving from t = 1 until :func:`accept` (Armijo); the pass at the trial point is
   the next iteration's step 1, so an accepted full step costs no extra pass.
"""
from __future__ import annotations

import math
import time
from typing import Any, Protocol

import numpy as np

from ..errors import ModelError
from .linalg import solve_psd

__all__ = ["DEFAULT_TOL", "accept", "certificate", "run_newton", "Engine"]

DEFAULT_TOL = 1e-6          # certificate max_j |g_j| / H_jj at convergence (see the docstring)
ARMIJO_C = 1e-4             # sufficient decrease f(t) <= f0 + c t slope
ROUNDING = 1e-13            # |f(t) - f0| <= ROUNDING |f0|: at the optimum, no measurable change
MIN_STEP = 1e-10            # step halving gives up below this


class Engine(Protocol):
    """The hooks a family provides (see the module docstring).  ``theta`` is a tuple of
    arrays (beta, level effects); a point carries ``theta`` and ``f``."""

    n_passes: int

    def evaluate(self, theta: tuple) -> Any: ...
    def finite(self, point) -> bool: ...
    def prepare(self, point) -> tuple[Any, bool]: ...
    def certificate(self, point) -> tuple[float, float]: ...
    def directions(self, point, prev, rescale: bool) -> Any: ...
    def reduced_system(self, point, D) -> tuple[np.ndarray, np.ndarray]: ...
    def step(self, gamma: np.ndarray, D) -> tuple: ...
    def log(self, it: int, point, cert: tuple[float, float], t: float) -> None: ...


def certificate(grads, hdiag) -> tuple[float, float]:
    """(max |g_j|, max |g_j| / H_jj) over all parts; ``grads``/``hdiag`` are matching lists
    of arrays (H_jj <= 0, a coordinate without curvature, counts with H_jj = 1)."""
    max_grad = max_step = 0.0
    for g, h in zip(grads, hdiag):
        if g.size == 0:
            continue
        ag = np.abs(g)
        max_grad = max(max_grad, float(ag.max()))
        max_step = max(max_step, float((ag / np.where(h > 0, h, 1.0)).max()))
    return max_grad, max_step


def accept(f_new: float, f_old: float, t: float, slope: float) -> bool:
    """Armijo's test for the step length t along a direction with directional derivative
    ``slope`` < 0, or no change beyond rounding (at the optimum)."""
    if not math.isfinite(f_new):
        return False
    return f_new <= f_old + ARMIJO_C * t * slope or abs(f_new - f_old) <= ROUNDING * abs(f_old)


def run_newton(engine: Engine, point, *, tol: float, maxiter: int, it0: int = 0):
    """Iterate from an evaluated ``point`` until the certificate is <= tol (and the prior
    did not move), ``maxiter`` iterations, or no descent is possible.

    Returns (point, converged, iterations done, (max_grad, max_step)).
    """
    if not engine.finite(point):
        raise ModelError("the objective or its gradient is not finite at the starting values "
                         "(the linear predictor overflows); check the offset and the scale of "
                         "the predictors")
    prev = None
    t = math.nan
    it = 0
    while True:
        point, moved = engine.prepare(point)
        cert = engine.certificate(point)
        engine.log(it0 + it, point, cert, t)
        if cert[1] <= tol and not moved:
            return point, True, it, cert
        if it >= maxiter:
            return point, False, it, cert
        it += 1
        D = engine.directions(point, prev, prev is None or moved)
        H, g = engine.reduced_system(point, D)
        if not (np.all(np.isfinite(H)) and np.all(np.isfinite(g))):
            raise ModelError("the reduced Newton system is not finite (the linear predictor "
                             "overflows); check the offset and the scale of the predictors")
        gamma = -solve_psd(H, g)
        slope = float(g @ gamma)
        if not slope < 0:           # no descent in the subspace: the certificate says why
            return point, False, it, cert
        step = engine.step(gamma, D)
        t = 1.0
        while True:
            trial = engine.evaluate(tuple(x + t * s for x, s in zip(point.theta, step)))
            if engine.finite(trial) and accept(trial.f, point.f, t, slope):
                break
            t *= 0.5
            if t < MIN_STEP:        # back to the point (and its row-local pass buffers)
                point, _ = engine.prepare(engine.evaluate(point.theta))
                cert = engine.certificate(point)
                engine.log(it0 + it, point, cert, 0.0)
                return point, cert[1] <= tol, it, cert
        prev = tuple(t * s for s in step)
        point = trial


def elapsed(t0: float) -> float:
    return time.perf_counter() - t0

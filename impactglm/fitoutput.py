"""Plain containers that solvers return and results objects wrap.

A solver (IRLS, the re-encoding Newton loop, the multinomial loop) produces a
:class:`FitOutput`; ``results.py`` turns it into an immutable results object.
Keeping these in one low module lets solvers and results agree without
importing each other.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class FactorEffects:
    """Fitted level effects of one high-cardinality factor ``^name``.

    ``effect[l]`` is the posterior mode a[l] of level ``levels[l]`` (shape (q,)
    or (q, C) for multinomial fits); ``se[l]`` its posterior standard deviation
    sqrt([H^-1]_ll) from the penalised Hessian; ``tau`` the prior sd used
    (None: no prior); ``edf`` the effective degrees of freedom
    sum_l w_l / (w_l + 1/tau^2).
    """

    name: str
    levels: np.ndarray
    counts: np.ndarray
    effect: np.ndarray
    se: np.ndarray
    tau: float | None
    edf: float
    tau_estimated: bool = False

    @property
    def n_levels(self) -> int:
        return len(self.levels)

    @property
    def n_singletons(self) -> int:
        return int(np.sum(self.counts == 1))

    def frame(self) -> pd.DataFrame:
        """DataFrame indexed by level with columns n, effect, se."""
        index = pd.Index(self.levels, name=self.name)
        if self.effect.ndim == 1:
            return pd.DataFrame({"n": self.counts, "effect": self.effect, "se": self.se}, index=index)
        cols = {"n": self.counts}
        for c in range(self.effect.shape[1]):
            cols[f"effect[{c}]"] = self.effect[:, c]
            cols[f"se[{c}]"] = self.se[:, c]
        return pd.DataFrame(cols, index=index)


@dataclass(frozen=True)
class FitOutput:
    """What a solver hands to the results layer.

    ``cov_beta`` is the covariance of ``beta`` including the scale (dispersion)
    factor; for fits with level effects it is the beta block of the inverse of
    the full penalised Hessian (the level effects integrated out, as lme4's
    vcov does).  ``eta`` includes offset and level effects.
    """

    beta: np.ndarray
    cov_beta: np.ndarray
    eta: np.ndarray
    mu: np.ndarray
    scale: float
    n_iter: int
    converged: bool
    log: pd.DataFrame
    effects: tuple[FactorEffects, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

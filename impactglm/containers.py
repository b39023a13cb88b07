"""Plain containers that solvers return and results objects wrap.

The design layer produces a :class:`Design` (arrays: X, y, weights, offset, one
:class:`FactorCodes` per ``^`` term, one :class:`RandomBlock` per ``(expr | g)`` term) and
:class:`NewData` (new rows transformed by a ModelSpec); a solver (IRLS, the re-encoding
Newton loop, the multinomial loop) produces a :class:`FitOutput`; the results layer
turns it into an immutable results object.  Keeping these in one low module lets the
layers agree without importing each other.
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


# --------------------------------------------------------------------------- containers


@dataclass(frozen=True, eq=False)
class FactorCodes:
    """A high-cardinality factor ``^name``: ``codes[i]`` is row i's index into ``levels``."""

    name: str
    codes: np.ndarray      # (n,) int32, 0..q-1
    levels: np.ndarray     # (q,) level values in natural order
    counts: np.ndarray     # (q,) int64 rows per level

    @property
    def n_levels(self) -> int:
        return len(self.levels)


@dataclass(frozen=True, eq=False)
class RandomBlock:
    """One random-effects block ``(expr | group)``: b[codes[i]] @ Z[i] enters row i."""

    group: str             # "g" or "a:b"
    codes: np.ndarray      # (n,) int32
    levels: np.ndarray     # (q,) level values ("a:b" strings for interactions)
    Z: np.ndarray          # (n, r) float64, C-contiguous
    term_names: tuple[str, ...]   # ("(Intercept)", "Days")

    @property
    def n_levels(self) -> int:
        return len(self.levels)


@dataclass(frozen=True, eq=False)
class NewData:
    """New data transformed by :meth:`ModelSpec.transform`.

    ``codes`` holds one int32 array per ``^`` factor (-1 for a level the fit never
    saw) and ``unseen`` the number of rows with an unseen level per factor.
    ``random`` holds ``(codes, Z)`` per random block, -1 for unseen levels.
    ``positions`` are the 0-based positions of the kept rows in the new data (use
    ``newdata.iloc[positions]`` to line other per-row results up with these arrays).
    """

    X: np.ndarray
    offset: np.ndarray
    codes: tuple[np.ndarray, ...]
    unseen: dict
    y: np.ndarray | None = None
    row_labels: np.ndarray | None = None
    weights: np.ndarray | None = None
    random: tuple = ()
    n_dropped: int = 0
    positions: np.ndarray | None = None   # positions (0-based) of the kept rows in newdata


@dataclass(frozen=True, eq=False)
class Design:
    """Everything a solver needs, as arrays (see docs/internals.md)."""

    X: np.ndarray
    column_names: tuple[str, ...]
    y: np.ndarray
    weights: np.ndarray
    offset: np.ndarray
    factors: tuple[FactorCodes, ...]
    random: tuple[RandomBlock, ...]
    spec: Any              # the design.spec.ModelSpec that rebuilds these arrays on new data
    n_dropped: int
    row_labels: np.ndarray

    @property
    def nobs(self) -> int:
        return int(self.X.shape[0])

    def subset(self, rows: np.ndarray) -> "Design":
        """The Design of the rows selected by ``rows`` (a boolean mask or positions), as if
        built from them alone except that every factor keeps all its levels (a level
        without rows gets count 0); the spec is shared."""
        factors = tuple(FactorCodes(f.name, f.codes[rows], f.levels,
                                    np.bincount(f.codes[rows], minlength=f.n_levels)
                                    .astype(np.int64)) for f in self.factors)
        random = tuple(RandomBlock(b.group, b.codes[rows], b.levels,
                                   np.ascontiguousarray(b.Z[rows]), b.term_names)
                       for b in self.random)
        return Design(X=np.ascontiguousarray(self.X[rows]), column_names=self.column_names,
                      y=self.y[rows], weights=self.weights[rows], offset=self.offset[rows],
                      factors=factors, random=random, spec=self.spec, n_dropped=self.n_dropped,
                      row_labels=self.row_labels[rows])

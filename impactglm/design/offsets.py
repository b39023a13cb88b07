"""``offset(expr)`` terms in a formula, as in R and statsmodels' formulas.

``cnt ~ x + offset(np.log(expo))``: Patsy evaluates ``offset(...)`` (the identity) as a
numeric column named ``"offset(np.log(expo))"``; the design builder and
:meth:`ModelSpec.transform` then take every such column out of X and add it to the
offset (with coefficient 1, summed with any ``offset=`` argument, as R's model.offset).
The expression is kept in the saved spec, so a loaded model computes the offset of new
data itself.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def offset(x):
    """The identity on numbers: marks a formula term as part of the offset."""
    return np.asarray(x, dtype=np.float64)


def is_offset_column(name: str) -> bool:
    """Whether a Patsy column is an ``offset(...)`` term (not an interaction with one)."""
    return name.startswith("offset(") and name.endswith(")") and ":" not in name


def split_offset_columns(X: np.ndarray, names: Sequence[str]
                         ) -> tuple[np.ndarray, tuple[str, ...], np.ndarray | None]:
    """(X without the offset columns, their names removed, the sum of those columns or
    None when there are none)."""
    off = [j for j, n in enumerate(names) if is_offset_column(n)]
    if not off:
        return X, tuple(names), None
    keep = [j for j in range(len(names)) if j not in off]
    return (np.ascontiguousarray(X[:, keep]), tuple(names[j] for j in keep),
            np.asarray(X[:, off], dtype=np.float64).sum(axis=1))

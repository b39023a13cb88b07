"""TODO docstring."""
from __future__ import annotations

import numpy as np
import pandas as pd


from ..errors import DataError
from ..families import get_family
from .levels import factorize
from .rows import is_numeric


# --------------------------------------------------------------------------- response


def encode_response(values: pd.Series, family: str, name: str, labels: pd.Index,
                     weights: np.ndarray | None):
    """(y, response_info, classes) for the family; see ModelSpec for the encodings."""
    if family == "multinomial":
        codes, levels, _ = factorize(values, name)
        if len(levels) < 2:
            raise DataError(f"the multinomial response {name!r} has a single class "
                            f"({levels[0]!r}); it needs at least 2")
        classes = tuple(v.item() if hasattr(v, "item") else v for v in levels)
        return codes.astype(np.int32), {"kind": "classes"}, classes
    if family == "binomial":
        return _encode_binomial(values, name, labels)
    if not is_numeric(values):
        raise DataError(f"the response {name!r} holds {values.dtype} values; the {family} family "
                        "needs numbers")
    y = values.to_numpy(dtype=np.float64, copy=True)
    check_range(y, family, name, labels)
    return y, {"kind": "numeric"}, None


def _encode_binomial(values: pd.Series, name: str, labels: pd.Index):
    dtype = values.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return values.to_numpy(dtype=np.float64, copy=True), {"kind": "boolean", "failure": False,
                                                   "success": True}, None
    if is_numeric(values):
        y = values.to_numpy(dtype=np.float64, copy=True)
        check_range(y, "binomial", name, labels)
        kind = "binary" if np.all((y == 0) | (y == 1)) else "proportion"
        info = {"kind": kind}
        if kind == "binary":
            info.update(failure=0, success=1)
        return y, info, None
    if isinstance(dtype, pd.CategoricalDtype) and len(dtype.categories) == 2:
        levels = list(dtype.categories)
    else:
        _, levels, _ = factorize(values, name)
        levels = list(levels)
    if len(levels) != 2:
        shown = ", ".join(repr(v) for v in levels[:5]) + (", ..." if len(levels) > 5 else "")
        raise DataError(f"the binomial response {name!r} must have exactly two levels, it has "
                        f"{len(levels)} ({shown}); use family='multinomial' for more")
    failure, success = (v.item() if hasattr(v, "item") else v for v in levels)
    y = (values == success).to_numpy(dtype=np.float64)
    return y, {"kind": "levels", "failure": failure, "success": success}, None


def check_range(y: np.ndarray, family: str, name: str, labels: pd.Index) -> None:
    """The family's range (binomial [0, 1], poisson >= 0, gamma > 0): families.check_response."""
    get_family(family).check_response(y, name, row_labels=np.asarray(labels))



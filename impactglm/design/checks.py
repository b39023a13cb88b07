"""Data checks of the design layer: values that would give silently wrong results.

Each check looks at one column (or the whole response) of the kept rows and either
raises a :class:`~impactglm.errors.DataError` naming the column, or warns with a
:class:`~impactglm.errors.DataWarning` naming the column and the values:

* :func:`check_column_type` -- a column of a type no term can use (timedelta, complex,
  lists in cells) or an object column mixing strings, numbers and booleans
  (``1, '1', 2.0, 'a', True``: ``1 == 1.0 == True`` hash alike, so their levels would
  be merged or mis-sorted); an error naming the column and the types found.
* :func:`warn_numeric_text` -- a text column whose values are numbers except for ``k``
  stray values (a CSV column with one ``?``): used as a factor with one level per
  number; a warning naming the stray values.
* :func:`warn_float_factor` -- a ``^`` factor on a float column with non-integer values,
  most of them occurring once (a continuous variable): one level per distinct number;
  a warning.
* :func:`check_single_level_terms` -- a categorical term with fewer than 2 levels in the
  rows used (R: "contrasts can be applied only to factors with 2 or more levels").
* :func:`check_response_magnitude` -- a gaussian response whose squares overflow.

The checks only read; the caller's data are never modified.
"""
from __future__ import annotations

import numbers
import warnings
from typing import Iterable

import numpy as np
import pandas as pd

from .._util import user_stacklevel
from ..errors import DataError, DataWarning
from .levels import short_list
from .rows import is_numeric

__all__ = ["check_column_type", "warn_numeric_text", "warn_float_factor",
           "check_single_level_terms", "check_response_magnitude"]


_SAMPLE = 2000          # distinct values looked at before deciding a column is numeric text


def _kind(t: type) -> str:
    if issubclass(t, (bool, np.bool_)):
        return "bool"
    if issubclass(t, (str, bytes)):
        return "text"
    if issubclass(t, (numbers.Number, np.number)):
        return "number"
    return t.__name__


_UNHASHABLE = (list, dict, set, np.ndarray)


def check_column_type(s: pd.Series, name: str) -> None:
    """DataError for a column no model term can use, naming it and the fix:

    * time differences (timedelta64) and complex numbers;
    * object cells holding lists, dicts, sets or arrays;
    * an object column mixing strings, numbers, booleans or other objects
      (``1, '1', 2.0, 'a', True``): ``1 == 1.0 == True`` are one level to a factor and
      ``'1'`` another.  Ints and floats together are one kind (numbers); NA is ignored.

    Cost: one ``infer_dtype`` pass, plus a pass over the values only when it says "mixed".
    """
    kind = getattr(s.dtype, "kind", "")
    if kind == "m":
        raise DataError(f"column {name!r} holds time differences ({s.dtype}), which a model "
                        f"cannot use directly: convert it to a number first, e.g. "
                        f"df[{name!r}].dt.total_seconds()")
    if kind == "c":
        raise DataError(f"column {name!r} holds complex numbers ({s.dtype}); models take real "
                        "numbers: use the real part, the modulus or both as columns")
    if s.dtype != object:
        return
    inferred = pd.api.types.infer_dtype(s, skipna=True)
    if inferred in ("string", "bytes", "integer", "floating", "mixed-integer-float", "boolean",
                    "empty", "decimal", "date", "datetime", "time"):
        return
    if inferred == "complex":
        raise DataError(f"column {name!r} holds complex numbers; models take real numbers")
    types = pd.unique(s.dropna().map(type).to_numpy())
    bad = [t for t in types if issubclass(t, _UNHASHABLE)]
    if bad:
        raise DataError(f"column {name!r} holds {bad[0].__name__} values in its cells; a model "
                        "term needs one number, string or boolean per row")
    kinds = {_kind(t) for t in types}
    if len(kinds) > 1:
        found = ", ".join(sorted({t.__name__ for t in types}))
        raise DataError(f"column {name!r} mixes values of different types ({found}); "
                        "1, 1.0 and True are the same level to a factor and '1' is another: "
                        f"convert the column to one type first (e.g. df[{name!r}].astype(str))")


def _text_values(s: pd.Series) -> np.ndarray | None:
    """The distinct non-missing values of a text column (object/string/categorical of
    strings), or None when the column is not text."""
    if is_numeric(s):
        return None
    if isinstance(s.dtype, pd.CategoricalDtype):
        cats = s.cat.categories
        if is_numeric(cats):
            return None
        values = np.asarray(cats[np.unique(s.cat.codes[s.cat.codes >= 0])], dtype=object)
    else:
        values = pd.unique(s.dropna())
    values = np.asarray(values, dtype=object)
    if not len(values) or not all(isinstance(v, str) for v in values[:100]):
        return None
    return values


def warn_numeric_text(s: pd.Series, name: str, *, what: str = "column") -> None:
    """DataWarning for a text column whose distinct values are all numbers except ``k``.

    Fires when at least 90% of the distinct values (and at least 5 of them) parse as
    numbers and 1 to 10 do not: typically a numeric CSV column with a stray ``?``,
    ``n/a`` or ``-`` that made the reader keep it as text.
    """
    values = _text_values(s)
    if values is None or len(values) < 6:
        return
    sample = values[:_SAMPLE]
    parsed = pd.to_numeric(pd.Series(sample, dtype=object), errors="coerce")
    if parsed.notna().mean() < 0.9:
        return
    if len(values) > _SAMPLE:
        parsed = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce")
    bad = values[parsed.isna().to_numpy()]
    if not 1 <= len(bad) <= 10 or len(values) - len(bad) < 5:
        return
    text = s.astype(object) if isinstance(s.dtype, pd.CategoricalDtype) else s
    rows = int(text.isin(list(bad)).sum())
    warnings.warn(f"{what} {name!r} holds text but is numeric except for {len(bad)} value(s) "
                  f"({short_list(bad)}; {rows} row(s)), so it is used as a factor with "
                  f"{len(values)} levels; if it is a number, convert it first "
                  f"(pd.to_numeric(df[{name!r}], errors='coerce') makes those values missing)",
                  DataWarning, stacklevel=user_stacklevel())


def warn_float_factor(s: pd.Series, name: str) -> None:
    """DataWarning for ``^name`` on a float column with non-integer values of which at
    least half occur in one row only (each distinct number becomes a level)."""
    if not pd.api.types.is_float_dtype(s.dtype):
        return
    a = s.to_numpy(dtype=np.float64, na_value=np.nan)
    a = a[np.isfinite(a)]
    frac = a != np.round(a)
    if not frac.any():
        return                       # whole numbers: integer ids read as float (NaN seen)
    _, counts = np.unique(a, return_counts=True)
    q = len(counts)
    if np.mean(counts == 1) < 0.5:
        return                       # a few repeated values (ratings 2.5, 3.0, ...): a factor
    warnings.warn(f"float column used as a factor: ^{name} has non-integer values (e.g. "
                  f"{float(a[frac][0])!r}), so each of its {q} distinct numbers is a level with "
                  f"{len(a) / max(q, 1):.2g} row(s) on average; for a continuous variable use "
                  f"{name} (a slope), for ids convert the column to integers or strings",
                  DataWarning, stacklevel=user_stacklevel())


def check_single_level_terms(factor_infos: Iterable) -> None:
    """DataError for a categorical Patsy factor with fewer than 2 levels in the rows used
    (R's model.matrix: "contrasts can be applied only to factors with 2 or more levels")."""
    for factor, info in factor_infos:
        if info.type == "categorical" and len(info.categories) < 2:
            only = (f"the single level {info.categories[0]!r}" if info.categories
                    else "no level")
            raise DataError(f"the categorical term {factor.name()!r} has {only} in the rows "
                            "used: contrasts can be applied only to factors with 2 or more "
                            "levels (R's words); remove the term or check the data")


def check_response_magnitude(y: np.ndarray, name: str, family: str) -> None:
    """DataError when a gaussian response is so large that its squares (the deviance)
    overflow double precision, or so small that they underflow to 0."""
    if family != "gaussian" or not len(y):
        return
    top = float(np.max(np.abs(y)))
    if top > 1e150:
        raise DataError(f"the response {name!r} has values as large as {top:.3g}: their squares "
                        "overflow double precision, so the deviance cannot be computed; "
                        "rescale it (e.g. divide by a power of 10) and scale the estimates back")
    if 0 < top < 1e-150:
        raise DataError(f"the response {name!r} has values no larger than {top:.3g}: their "
                        "squares underflow to 0 in double precision; rescale it (e.g. multiply "
                        "by a power of 10) and scale the estimates back")

"""Rows of the data a model uses: the table view, R's na.omit, finite checks.

``select_rows`` is shared by fitting (:func:`impactglm.design.build.build_design`) and
by new data (``ModelSpec.transform``), so both see the same kept rows and the same
column types (small integers widened to 64 bits).  The caller's table is never modified.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence
import numpy as np
import pandas as pd


from ..errors import ColumnNotFoundError, DataError


NA_ACTIONS = ("drop", "raise")


# --------------------------------------------------------------------------- data helpers


def as_frame(data, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """A DataFrame view of ``data`` (never modified); pyarrow tables are converted."""
    if isinstance(data, pd.DataFrame):
        frame = data
    else:
        try:
            import pyarrow as pa
            if isinstance(data, pa.Table):
                names = data.column_names
                _check_duplicates(names)
                keep = [c for c in names if columns is None or c in set(columns)]
                return data.select(keep).to_pandas()
        except ImportError:  # pragma: no cover
            pass
        try:
            frame = pd.DataFrame(data)
        except Exception as e:
            raise DataError(f"cannot read the data as a table: {e}") from None
    _check_duplicates(frame.columns)
    return frame


def _check_duplicates(columns: Iterable) -> None:
    seen, dups = set(), []
    for c in columns:
        if c in seen and c not in dups:
            dups.append(c)
        seen.add(c)
    if dups:
        raise DataError(f"the data have duplicated column names: {', '.join(map(repr, dups))}")


def is_numeric(values) -> bool:
    dtype = getattr(values, "dtype", None)
    if dtype is None:
        return False
    if isinstance(dtype, pd.CategoricalDtype):
        return False
    return pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)


def row_label(labels: pd.Index, i: int):
    lab = labels[i]
    return lab.item() if hasattr(lab, "item") else lab


def vector_argument(arg, frame: pd.DataFrame, what: str):
    """(values float-able array or None, column name or None, kind) for weights/offset."""
    if arg is None:
        return None, None, "none"
    if isinstance(arg, str):
        if arg not in frame.columns:
            raise ColumnNotFoundError(arg, frame.columns)
        values = frame[arg]
        if not is_numeric(values):
            raise DataError(f"the {what} column {arg!r} must be numeric, not {values.dtype}")
        return values.to_numpy(dtype=np.float64, na_value=np.nan, copy=True), arg, "column"
    try:
        values = np.array(arg, dtype=np.float64)  # a copy: never share the caller's array
    except (TypeError, ValueError):
        raise DataError(f"the {what} must be a column name or an array of numbers") from None
    if values.ndim != 1 or len(values) != len(frame):
        raise DataError(f"the {what} array has shape {values.shape}; expected ({len(frame)},), "
                        "one value per row of the data")
    return values, None, "array"


def _missing_mask(frame: pd.DataFrame, columns: Sequence[str], extra: Mapping[str, np.ndarray],
                  na_action: str) -> np.ndarray:
    """True for rows with a missing value in any of ``columns`` or ``extra`` arrays."""
    missing = np.zeros(len(frame), dtype=bool)
    for col in columns:
        m = frame[col].isna().to_numpy()
        if m.any():
            if na_action == "raise":
                i = int(np.argmax(m))
                raise DataError(f"column {col!r} has a missing value (NaN) at row "
                                f"{row_label(frame.index, i)!r}; drop it or use na_action='drop'")
            missing |= m
    for what, arr in extra.items():
        if arr is not None:
            m = np.isnan(arr)
            if m.any():
                if na_action == "raise":
                    i = int(np.argmax(m))
                    raise DataError(f"the {what} has a missing value (NaN) at row "
                                    f"{row_label(frame.index, i)!r}")
                missing |= m
    return missing


def _check_finite(frame: pd.DataFrame, columns: Sequence[str]) -> None:
    """An infinite value in a numeric column the model uses is an error (as in R's glm)."""
    for col in columns:
        s = frame[col]
        if pd.api.types.is_float_dtype(s.dtype):            # only floats can be infinite
            a = s.to_numpy(dtype=np.float64, na_value=np.nan)
            bad = np.isinf(a)
            if bad.any():
                i = int(np.argmax(bad))
                raise DataError(f"column {col!r} has an infinite value ({a[i]}) at row "
                                f"{row_label(frame.index, i)!r}")


def finite_rows(M: np.ndarray, names: Sequence[str], labels: pd.Index, what: str) -> np.ndarray:
    """Mask of rows without NaN in M; an infinite value is an error naming column and row."""
    if M.size == 0:
        return np.ones(M.shape[0], dtype=bool)
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(M.sum(axis=1)).all():             # (n,) temporary, not (n, p)
            return np.ones(M.shape[0], dtype=bool)
    finite = np.isfinite(M)
    if finite.all():                                     # the sum overflowed, values are fine
        return np.ones(M.shape[0], dtype=bool)
    inf = np.isinf(M)
    if inf.any():
        i, j = np.argwhere(inf)[0]
        raise DataError(f"the {what} column {names[j]!r} is infinite ({M[i, j]}) at row "
                        f"{row_label(labels, int(i))!r}")
    return finite.all(axis=1)


# --------------------------------------------------------------------------- build_design


@dataclass
class KeptRows:
    """The used columns of the kept rows (RangeIndex), their labels, and per-row arrays."""

    frame: pd.DataFrame
    labels: pd.Index
    arrays: dict
    n_dropped: int = 0
    positions: np.ndarray | None = None

    def subset(self, keep: np.ndarray) -> "KeptRows":
        pos = np.arange(len(keep)) if self.positions is None else self.positions
        return KeptRows(self.frame[keep].reset_index(drop=True), self.labels[keep],
                     {k: None if a is None else a[keep] for k, a in self.arrays.items()},
                     self.n_dropped + int((~keep).sum()), pos[keep])

    def kept_positions(self) -> np.ndarray:
        return np.arange(len(self.frame)) if self.positions is None else self.positions


def select_rows(frame: pd.DataFrame, used: Sequence[str], numeric: Sequence[str],
                 arrays: dict, na_action: str) -> KeptRows:
    """R's na.omit over ``used`` columns and the ``arrays`` (weights, offset).

    Infinite values in the ``numeric`` columns or the arrays are errors naming the row.
    """
    if len(frame) == 0:
        raise DataError("the data have no rows")
    _check_finite(frame, numeric)
    for what, arr in arrays.items():
        if arr is not None and np.isinf(arr).any():
            i = int(np.argmax(np.isinf(arr)))
            raise DataError(f"the {what} is infinite at row {row_label(frame.index, i)!r}")
    missing = _missing_mask(frame, used, arrays, na_action)
    rows = KeptRows(frame[list(used)] if used else pd.DataFrame(index=frame.index), frame.index,
                 dict(arrays))
    if missing.any():
        rows = rows.subset(~missing)
    else:
        rows.frame = rows.frame.reset_index(drop=True)
    if len(rows.frame) == 0:
        raise DataError(f"no rows left after removing all {rows.n_dropped} rows, which have "
                        f"missing values in the columns {', '.join(map(repr, used))}")
    rows.frame = widen_small_integers(rows.frame, numeric)
    return rows


def widen_small_integers(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """``frame`` with its numeric ``columns`` as plain 64-bit numpy columns: integers
    narrower than 64 bits as int64, so that formula arithmetic (``I(x8 * x8)``) cannot
    wrap around as numpy's int8/int16/int32 would (level labels of ``C(x8)`` are
    unchanged), and pandas' nullable or pyarrow-backed numbers and booleans (``Int8``,
    ``Float64``, ``boolean``, ``int64[pyarrow]``; Patsy cannot read those dtypes) as
    int64/float64/bool (float64 with NaN for missing values; the NA rows were dropped
    before); float32 as float64 (transforms are computed in double precision, as R).  A new frame when something changes; ``frame`` itself is not modified."""
    out = None
    for col in columns:
        s = frame[col]
        dtype = s.dtype
        if isinstance(dtype, pd.CategoricalDtype) or not is_numeric(s):
            continue
        extension = isinstance(dtype, pd.api.extensions.ExtensionDtype)
        if pd.api.types.is_bool_dtype(dtype):
            if not extension:
                continue
            values = s.to_numpy(dtype=bool, na_value=False) if not s.isna().any() \
                else s.to_numpy(dtype=np.float64, na_value=np.nan)
        elif pd.api.types.is_integer_dtype(dtype):
            if not extension and dtype.itemsize >= 8:
                continue
            if s.isna().any():
                values = s.to_numpy(dtype=np.float64, na_value=np.nan)
            else:
                values = s.to_numpy(dtype=np.uint64 if str(dtype).lower().startswith("uint64")
                                    else np.int64)
        elif extension or dtype.itemsize < 8:         # nullable floats, float32, float16
            values = s.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            continue
        if out is None:
            out = frame.copy(deep=False)
        out[col] = values
    return frame if out is None else out


def drop_transform_nan(rows: KeptRows, ok: np.ndarray, na_action: str) -> KeptRows:
    """Rows where a transform gave NaN (np.log(-1)) are dropped like missing values."""
    if ok.all():
        return rows
    if na_action == "raise":
        i = int(np.argmin(ok))
        raise DataError(f"a transform in the formula gives NaN at row "
                        f"{row_label(rows.labels, i)!r}; fix the data or use na_action='drop'")
    rows = rows.subset(ok)
    if len(rows.frame) == 0:
        raise DataError("no rows left after removing rows with missing values")
    return rows

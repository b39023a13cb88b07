"""Level tables of factors: codes, level values in natural order, counts.

``factorize`` is the one place a column becomes (codes, levels, counts); ``level_codes``
maps new data onto stored levels; ``group_codes`` builds lme4 grouping factors (``a:b``).
Integer ids keep their own dtype throughout (no float round trip: uint64 ids near 2**63
stay distinct).
"""
from __future__ import annotations

from typing import Sequence
import numpy as np
import pandas as pd


from ..errors import DataError
from .rows import is_numeric


def plain_value(v):
    """A numpy scalar as the plain Python value (for messages)."""
    return v.item() if isinstance(v, np.generic) else v


def _natural_order(uniques: np.ndarray) -> np.ndarray:
    """argsort of level values: numbers numerically, strings alphabetically, mixed by type."""
    try:
        return np.argsort(uniques, kind="stable")
    except TypeError:
        keys = [(type(u).__name__, str(u)) for u in uniques]
        return np.array(sorted(range(len(keys)), key=keys.__getitem__), dtype=np.int64)


def _small_range(s: pd.Series) -> bool:
    """Integer values whose range is small enough for a counting pass (<= 4n + 2^16)."""
    a = s.to_numpy()
    span = int(a.max()) - int(a.min())
    return span <= min(4 * len(a) + (1 << 16), 1 << 26)


def factorize(values, name: str = "") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Level codes, level values and counts of a column, levels in natural order.

    Hash-based (``pandas.factorize``) then a sort of the q unique values only:
    O(n + q log q); integer ids with a small range use a counting pass instead.
    Unused categories of a categorical column are dropped; float values that are all
    whole numbers (integer ids read as float because of NaN) get integer levels.
    Returns ``(codes int32 (n,), levels (q,), counts int64 (q,))``; missing values
    must be removed before (they would get code -1).
    """
    s = values if isinstance(values, pd.Series) else pd.Series(values)
    if isinstance(s.dtype, pd.CategoricalDtype):
        codes = s.cat.codes.to_numpy().astype(np.int64)
        levels = np.asarray(s.cat.categories.to_numpy(dtype=object)
                            if not is_numeric(s.cat.categories) else s.cat.categories.to_numpy())
        counts = np.bincount(codes, minlength=len(levels))
        keep = counts > 0
        if not keep.all():
            remap = np.cumsum(keep) - 1
            codes, levels, counts = remap[codes], levels[keep], counts[keep]
    elif s.dtype.kind in "iu" and len(s) and _small_range(s):
        # integer ids: a counting pass over value - min, no hashing and no sort
        a = s.to_numpy()
        lo = a.min()
        shifted = (a - lo).astype(np.intp)                     # exact for uint64 too

        full = np.bincount(shifted)
        present = full > 0
        remap = (np.cumsum(present, dtype=np.int64) - 1).astype(np.int32)
        codes = remap[shifted]                                 # int32 straight away
        # in a's own dtype: int64 + uint64 would promote to float64 and merge ids near 2**63
        levels = np.flatnonzero(present).astype(a.dtype) + lo
        counts = full[present]
    else:
        raw, uniques = pd.factorize(s, sort=False)
        if isinstance(uniques, pd.Index) and not is_numeric(uniques):
            uniques = uniques.to_numpy(dtype=object)
        else:
            uniques = np.asarray(uniques)
        order = _natural_order(uniques)
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        codes = rank[raw]
        levels = uniques[order]
        counts = np.bincount(codes, minlength=len(levels))
        if levels.dtype.kind == "f" and len(levels) and np.all(levels == np.round(levels)) \
                and np.abs(levels).max() < 2 ** 53:
            levels = levels.astype(np.int64)      # integer ids stored as float (NaN seen)
    return codes.astype(np.int32, copy=False), levels, counts.astype(np.int64, copy=False)


def drop_unused_categories(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """``frame`` with the categories that no kept row uses removed from its categorical
    ``columns`` (R's model.frame drops unused levels: no all-zero dummy column).  A new
    frame when something changes; ``frame`` itself is not modified."""
    changes = {}
    for col in columns:
        s = frame[col]
        if isinstance(s.dtype, pd.CategoricalDtype):
            codes = s.cat.codes.to_numpy()
            used = np.bincount(codes[codes >= 0], minlength=len(s.cat.categories))
            if not used.all():
                changes[col] = s.cat.remove_unused_categories()
    if not changes:
        return frame
    out = frame.copy(deep=False)
    for col, values in changes.items():
        out[col] = values
    return out


def group_codes(frame: pd.DataFrame, group_vars: Sequence[str]):
    """Codes/levels of a grouping factor; ``a:b`` is the factor of observed (a, b) pairs,
    ordered by a's level order, then b's (lme4's order)."""
    codes, levels, counts = factorize(frame[group_vars[0]], group_vars[0])
    for var in group_vars[1:]:
        c2, l2, _ = factorize(frame[var], var)
        combined = codes.astype(np.int64) * len(l2) + c2
        uniq, inv = np.unique(combined, return_inverse=True)
        labels = np.array([f"{levels[u // len(l2)]}:{l2[u % len(l2)]}" for u in uniq], dtype=object)
        codes, levels = inv.astype(np.int32), labels
        counts = np.bincount(codes, minlength=len(levels)).astype(np.int64)
    return codes, levels, counts


def single_level_error(name: str, levels, what: str) -> DataError:
    return DataError(f"the {what}{name!r} has a single level ({plain_value(levels[0])!r}) in the rows "
                     "used; "
                     "it needs at least 2 levels (its effect cannot be told apart from the "
                     "intercept)")


def level_codes(values: pd.Series, levels: np.ndarray) -> np.ndarray:
    """Index of each value in the training levels, -1 when unseen (hash lookup).

    Ids read with another type than at fit time are matched by value: numbers
    written as text ("12") match numeric levels, numbers match text levels.
    """
    levels = np.asarray(levels)
    if isinstance(values.dtype, pd.CategoricalDtype):
        cat_codes = level_codes(pd.Series(values.cat.categories), levels)
        raw = values.cat.codes.to_numpy()
        return np.where(raw >= 0, cat_codes[raw], -1).astype(np.int32)
    numeric_levels = levels.dtype.kind in "iuf"
    if numeric_levels and not is_numeric(values):
        values = pd.to_numeric(values, errors="coerce")
    elif not numeric_levels and is_numeric(values) and len(levels) and all(
            isinstance(v, str) for v in levels[:10]):
        values = values.astype(str)
    raw, uniques = pd.factorize(values, sort=False)
    mapping = pd.Index(levels).get_indexer(uniques)
    return np.where(raw >= 0, mapping[raw], -1).astype(np.int32)


def short_list(values, k: int = 6) -> str:
    values = list(values)
    return ", ".join(repr(plain_value(v)) for v in values[:k]) + (", ..." if len(values) > k else "")

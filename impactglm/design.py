"""The design builder: a formula and a table in, plain arrays out.

``build_design(formula, data, family=..., weights=..., offset=...)`` returns a
:class:`Design` that the solvers consume (they never see pandas or formulas):

* ``X``: the fixed-effects design, built by Patsy from the ordinary terms of the
  formula (``C(x)``, ``np.log(x)``, ``I(x**2)``, ``a*b``, ``center(x)``, ...);
* ``y``, ``weights``, ``offset``: float64 vectors (multinomial ``y``: int32 class index);
* ``factors``: one :class:`FactorCodes` per ``^g`` term (int32 level codes, level
  values in their natural order, level counts);
* ``random``: one :class:`RandomBlock` per lme4 term ``(expr | g)`` (``(x || g)`` is
  split into one block per column of ``expr``);
* ``spec``: a :class:`ModelSpec`, plain data that rebuilds all of the above on new
  data (``spec.transform(newdata)``) and survives ``to_dict`` -> JSON -> ``from_dict``.

Rules (for users: docs/design.md):

* Missing values: like R's ``na.omit`` over exactly the columns the model uses (the
  response, every column of the fixed terms, every ``^`` column, every random-term
  column and grouping column, and the weights and offset).  A NaN in a ``^``
  column is a *missing value*: with ``na_action="drop"`` the row is dropped (and
  counted in ``n_dropped``), with ``na_action="raise"`` it is an error naming the
  column and the row.  NaN produced by a transform (``np.log(-1)``) is dropped the
  same way; an infinite value is always an error (R's ``glm`` refuses it too).
* Level order: numbers numerically (10 after 9), strings alphabetically, booleans
  False < True, pandas categoricals in category order.  Only levels that occur in the
  kept rows are levels of a ``^`` factor or a grouping factor.
* A ``^`` factor or a grouping factor with a single level is an error
  (:class:`~impactglm.errors.DataError`): its effect cannot be told apart from the
  intercept and its variance cannot be estimated (lme4 refuses it as well).
* Formulas are evaluated in a fixed namespace, never the caller's frame, so that a
  saved model rebuilds the same columns anywhere: ``np``/``numpy``, Patsy's builtins
  (``C``, ``I``, ``Q``, ``center``, ``standardize``, ``scale``, ``bs``, ``cr``, ...), and
  the NumPy functions ``log, log2, log10, log1p, exp, expm1, sqrt``.
* Offsets: given as a column name, ``transform`` reads the column from the new data;
  given as an array at fit time, ``transform`` needs an ``offset=`` argument.
"""
from __future__ import annotations

import ast
import builtins
import itertools
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import patsy
from patsy import EvalEnvironment, EvalFactor, ModelDesc, PatsyError, Term
from patsy.contrasts import ContrastMatrix
from patsy.design_info import DesignInfo, FactorInfo, SubtermInfo
from patsy.missing import NAAction

from .errors import ColumnNotFoundError, DataError, FormulaError
from .families import get_family
from .formula import (ParsedFormula, RandomTerm, _has_bar, _matching_paren, _split_terms,
                      _top_level_chars, parse_formula)

__all__ = ["Design", "FactorCodes", "RandomBlock", "ModelSpec", "NewData", "build_design",
           "factorize"]

NA_ACTIONS = ("drop", "raise")

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
    spec: "ModelSpec"
    n_dropped: int
    row_labels: np.ndarray

    @property
    def nobs(self) -> int:
        return int(self.X.shape[0])


# --------------------------------------------------------------------------- namespace


def _patsy_builtins() -> dict:
    ns: dict = {}
    exec("from patsy.builtins import *", {}, ns)
    return ns


class FastStandardize(patsy.state.Standardize):
    """Patsy's ``standardize(x, center=True, rescale=True, ddof=0)`` with a vectorized pass.

    Same state (n, mean, M2 in long double) and the same ``transform``; a chunk of m
    rows is merged with Chan et al.'s update: with chunk mean m_c and M2_c,
    delta = m_c - mean, mean += delta m / (n + m), M2 += M2_c + delta^2 n m / (n + m).
    (Patsy's own version loops over the rows in Python: seconds per million rows.)
    """

    def memorize_chunk(self, x, center=True, rescale=True, ddof=0):
        x = patsy.util.atleast_2d_column_default(x)
        wide = patsy.util.wide_dtype_for(x)
        if self.current_mean is None:
            self.current_mean = np.zeros(x.shape[1], dtype=wide)
            self.current_M2 = np.zeros(x.shape[1], dtype=wide)
        m = x.shape[0]
        if m == 0:
            return
        xf = np.asarray(x, dtype=np.float64)       # two-pass chunk moments in double,
        mean_c = xf.mean(axis=0)                    # merged into the long-double state
        m2_c = ((xf - mean_c) ** 2).sum(axis=0)
        n = self.current_n
        delta = mean_c - self.current_mean
        self.current_n = n + m
        self.current_mean = self.current_mean + delta * (m / (n + m))
        self.current_M2 = self.current_M2 + m2_c + delta ** 2 * (n * m / (n + m))

    def transform(self, x, center=True, rescale=True, ddof=0):
        """(x - mean) / sqrt(M2 / (n - ddof)) in double precision (Patsy subtracts the
        long-double mean, several times slower; results agree to the last bit or two)."""
        x = np.array(x, dtype=np.float64)
        x2 = patsy.util.atleast_2d_column_default(x)
        if center:
            x2 -= np.asarray(self.current_mean, dtype=np.float64)
        if rescale:
            x2 /= np.asarray(np.sqrt(self.current_M2 / (self.current_n - ddof)), dtype=np.float64)
        return x2.reshape(x.shape)


_NAMESPACE: dict = {"np": np, "numpy": np, "log": np.log, "log2": np.log2, "log10": np.log10,
                    "log1p": np.log1p, "exp": np.exp, "expm1": np.expm1, "sqrt": np.sqrt}
_NAMESPACE.update(_patsy_builtins())
_NAMESPACE["standardize"] = _NAMESPACE["scale"] = patsy.state.stateful_transform(FastStandardize)
_EVAL_ENV = EvalEnvironment([_NAMESPACE])


def _is_function_ok(name: str) -> bool:
    return name in _NAMESPACE or hasattr(builtins, name)


# --------------------------------------------------------------------------- formula helpers


def _special_spans(text: str) -> tuple[int, list[tuple[int, int]]]:
    """Position of '~' (-1 if none) and the spans of ``^g`` and ``(x|g)`` terms (with sign)."""
    tildes = [i for i, c in _top_level_chars(text) if c == "~"]
    tilde = tildes[0] if tildes else -1
    rhs_start = tilde + 1
    spans = []
    for term, start in _split_terms(text, text[rhs_start:], rhs_start):
        body = term.lstrip("+-").strip()
        special = body.startswith("^") or (
            body.startswith("(") and _matching_paren(body) == len(body) - 1
            and _has_bar(body[1:-1]))
        if special:
            spans.append((start, start + len(term)))
    return tilde, spans


def _patsy_rhs_text(text: str) -> str:
    """The user's formula with the response and the special terms blanked out.

    Every other character keeps its position, so a Patsy error position is a
    position in the user's formula.
    """
    tilde, spans = _special_spans(text)
    chars = list(text)
    for i in range(tilde):
        chars[i] = " "
    for a, b in spans:
        for i in range(a, b):
            chars[i] = " "
    out = "".join(chars)
    if tilde < 0:
        out = "~" + out   # positions shift by one (the caller passes shift=-1)
    if not out[out.index("~") + 1:].strip():
        out = out.rstrip() + " 1"
    return out


@dataclass
class _Names:
    columns: list            # [(name, position)]
    functions: list          # [(name, position)]


def _expr_names(code: str, formula: str, position: int) -> _Names:
    """Column names and called functions in a Python expression (Q('odd name') resolved)."""
    try:
        tree = ast.parse(code.strip(), mode="eval")
    except SyntaxError as e:
        off = (e.offset or 1) - 1
        raise FormulaError(f"invalid expression {code.strip()!r}", formula,
                           position + off) from None
    names, funcs = [], []
    called = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name):
                called.add(id(node.func))
                funcs.append((node.func.id, position))
                if node.func.id == "Q" and node.args and isinstance(node.args[0], ast.Constant):
                    names.append((str(node.args[0].value), position))
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and id(node) not in called:
            names.append((node.id, position))
    return _Names(names, funcs)


def _patsy_factor_names(rhs: str, formula: str, shift: int = 0) -> tuple[_Names, ModelDesc]:
    """Names used by the factors of a Patsy right-hand side."""
    shift += _lead(rhs)
    try:
        desc = ModelDesc.from_formula(rhs)
    except PatsyError as e:
        raise _formula_error(e, formula, shift) from None
    cols, funcs = [], []
    for term in desc.rhs_termlist:
        for factor in term.factors:
            pos = factor.origin.start + shift if factor.origin is not None else 0
            names = _expr_names(factor.code, formula, pos)
            cols += names.columns
            funcs += names.functions
    return _Names(cols, funcs), desc


def _lead(s: str) -> int:
    """Patsy strips leading blanks before tokenizing: its positions shift by this much."""
    return len(s) - len(s.lstrip())


def _py(v):
    """A numpy scalar as the plain Python value (for messages)."""
    return v.item() if isinstance(v, np.generic) else v


def _formula_error(e: PatsyError, formula: str, shift: int = 0) -> FormulaError:
    origin = getattr(e, "origin", None)
    msg = getattr(e, "message", str(e))
    pos = None if origin is None else max(origin.start + shift, 0)
    return FormulaError(msg, formula, pos)


# --------------------------------------------------------------------------- data helpers


def _as_frame(data, columns: Sequence[str] | None = None) -> pd.DataFrame:
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


def _is_numeric(values) -> bool:
    dtype = getattr(values, "dtype", None)
    if dtype is None:
        return False
    if isinstance(dtype, pd.CategoricalDtype):
        return False
    return pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)


def _row_label(labels: pd.Index, i: int):
    lab = labels[i]
    return lab.item() if hasattr(lab, "item") else lab


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
                            if not _is_numeric(s.cat.categories) else s.cat.categories.to_numpy())
        counts = np.bincount(codes, minlength=len(levels))
        keep = counts > 0
        if not keep.all():
            remap = np.cumsum(keep) - 1
            codes, levels, counts = remap[codes], levels[keep], counts[keep]
    elif s.dtype.kind in "iu" and len(s) and _small_range(s):
        # integer ids: a counting pass over value - min, no hashing and no sort
        a = s.to_numpy()
        lo = a.min()
        shifted = np.subtract(a, lo, dtype=np.intp)          # one pass, bincount-ready
        full = np.bincount(shifted)
        present = full > 0
        remap = (np.cumsum(present, dtype=np.int64) - 1).astype(np.int32)
        codes = remap[shifted]                                 # int32 straight away
        levels = (np.flatnonzero(present) + lo).astype(a.dtype)
        counts = full[present]
    else:
        raw, uniques = pd.factorize(s, sort=False)
        if isinstance(uniques, pd.Index) and not _is_numeric(uniques):
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


# --------------------------------------------------------------------------- plain-data encoding


def _encode_scalar(v):
    if isinstance(v, (bool, np.bool_)):
        return ["b", bool(v)]
    if isinstance(v, (int, np.integer)):
        return ["i", int(v)]
    if isinstance(v, (float, np.floating)):
        return ["f", float(v)]
    if isinstance(v, str):
        return ["s", str(v)]
    raise DataError(f"cannot store the level {v!r} of type {type(v).__name__} in a model file")


def _decode_scalar(t):
    tag, v = t
    return {"b": bool, "i": int, "f": float, "s": str}[tag](v)


def _encode_levels(levels) -> dict:
    """Level values as JSON-able data that decode to the same values and dtype."""
    arr = np.asarray(levels)
    if arr.dtype.kind in "biuf":
        return {"dtype": arr.dtype.str, "values": arr.tolist()}
    vals = list(arr)
    if all(isinstance(v, str) for v in vals):
        return {"dtype": "str", "values": [str(v) for v in vals]}
    return {"dtype": "mixed", "values": [_encode_scalar(v) for v in vals]}


def _decode_levels(d: Mapping) -> np.ndarray:
    if d["dtype"] == "str":
        return np.array(d["values"], dtype=object)
    if d["dtype"] == "mixed":
        out = np.empty(len(d["values"]), dtype=object)
        out[:] = [_decode_scalar(t) for t in d["values"]]
        return out
    return np.array(d["values"], dtype=np.dtype(d["dtype"]))


def _encode_value(v):
    """Transform state (numbers, arrays incl. long double) as exact plain data."""
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, (int, np.integer)) and not isinstance(v, np.bool_):
        return {"int": int(v)}
    if isinstance(v, float):
        return {"float": v}
    if isinstance(v, (np.ndarray, np.generic)):
        a = np.asarray(v)
        if a.dtype == np.longdouble and np.longdouble != np.float64:
            hi = a.astype(np.float64)
            lo = (a - hi.astype(np.longdouble)).astype(np.float64)
            return {"array": "longdouble", "shape": list(a.shape),
                    "scalar": isinstance(v, np.generic),
                    "hi": hi.ravel().tolist(), "lo": lo.ravel().tolist()}
        if a.dtype.kind not in "biuf":
            raise DataError(f"cannot store transform state of dtype {a.dtype}")
        return {"array": a.dtype.str, "shape": list(a.shape), "scalar": isinstance(v, np.generic),
                "data": a.ravel().tolist()}
    if isinstance(v, (list, tuple)):
        return {"list": [_encode_value(x) for x in v], "tuple": isinstance(v, tuple)}
    if isinstance(v, dict):
        return {"dict": [[k, _encode_value(x)] for k, x in v.items()]}
    raise DataError(f"cannot store transform state of type {type(v).__name__}")


def _decode_value(v):
    if v is None or isinstance(v, (bool, str)):
        return v
    if "int" in v:
        return v["int"]
    if "float" in v:
        return v["float"]
    if "array" in v:
        if v["array"] == "longdouble":
            a = (np.array(v["hi"], dtype=np.longdouble) + np.array(v["lo"], dtype=np.longdouble))
        else:
            a = np.array(v["data"], dtype=np.dtype(v["array"]))
        a = a.reshape(v["shape"])
        return a[()] if v["scalar"] else a
    if "list" in v:
        out = [_decode_value(x) for x in v["list"]]
        return tuple(out) if v["tuple"] else out
    if "dict" in v:
        return {k: _decode_value(x) for k, x in v["dict"]}
    raise DataError(f"unreadable transform state {v!r}")


def _transform_classes() -> dict:
    from patsy import mgcv_cubic_splines, splines, state
    out = {"Center": state.Center, "Standardize": state.Standardize, "BS": splines.BS,
           "FastStandardize": FastStandardize}
    for name in ("CR", "CC"):
        if hasattr(mgcv_cubic_splines, name):
            out[name] = getattr(mgcv_cubic_splines, name)
    return out


def _design_info_to_dict(di: DesignInfo) -> dict:
    """Patsy's DesignInfo as plain data (the state of stateful transforms included)."""
    factors = []
    for factor, info in di.factor_infos.items():
        if not isinstance(factor, EvalFactor):  # pragma: no cover - formulas give EvalFactors
            raise DataError(f"cannot store the factor {factor!r}")
        transforms = {}
        classes = _transform_classes()
        for name, obj in info.state["transforms"].items():
            cls = type(obj).__name__
            if classes.get(cls) is not type(obj):
                raise DataError(f"the stateful transform {cls} cannot be stored in a model")
            transforms[name] = {"class": cls,
                                "attrs": {k: _encode_value(x) for k, x in vars(obj).items()}}
        factors.append({
            "code": factor.code, "type": info.type, "num_columns": info.num_columns,
            "categories": None if info.categories is None else _encode_levels_list(info.categories),
            "eval_code": info.state["eval_code"], "transforms": transforms})
    terms = []
    for term, subterms in di.term_codings.items():
        terms.append({"factors": [f.code for f in term.factors], "subterms": [
            {"factors": [f.code for f in st.factors], "num_columns": st.num_columns,
             "contrasts": [{"factor": f.code, "matrix": np.asarray(cm.matrix, float).tolist(),
                            "suffixes": list(cm.column_suffixes)}
                           for f, cm in st.contrast_matrices.items()]}
            for st in subterms]})
    return {"column_names": list(di.column_names), "factors": factors, "terms": terms}


def _encode_levels_list(values) -> list:
    return [_encode_scalar(v) for v in values]


def _design_info_from_dict(d: Mapping) -> DesignInfo:
    """Rebuild a DesignInfo whose build gives bit-identical columns."""
    classes = _transform_classes()
    objs, infos = {}, OrderedDict()
    for f in d["factors"]:
        fac = EvalFactor(f["code"])
        transforms = {}
        for name, t in f["transforms"].items():
            obj = classes[t["class"]].__new__(classes[t["class"]])
            obj.__dict__.update({k: _decode_value(x) for k, x in t["attrs"].items()})
            transforms[name] = obj
        state = {"eval_env": _EVAL_ENV, "eval_code": f["eval_code"], "transforms": transforms}
        cats = (None if f["categories"] is None
                else tuple(_decode_scalar(t) for t in f["categories"]))
        infos[fac] = FactorInfo(fac, f["type"], state, f["num_columns"], cats)
        objs[f["code"]] = fac
    codings = OrderedDict()
    for t in d["terms"]:
        subterms = [SubtermInfo([objs[c] for c in st["factors"]],
                                {objs[c["factor"]]: ContrastMatrix(np.array(c["matrix"], float),
                                                                   c["suffixes"])
                                 for c in st["contrasts"]}, st["num_columns"])
                    for st in t["subterms"]]
        codings[Term([objs[c] for c in t["factors"]])] = subterms
    return DesignInfo(d["column_names"], factor_infos=infos, term_codings=codings)


# --------------------------------------------------------------------------- the model spec


@dataclass(frozen=True, eq=False)
class ModelSpec:
    """Plain data that rebuilds a model's arrays on new data.

    ``to_dict()`` gives a JSON-able dict and ``ModelSpec.from_dict`` reads it back.
    ``response_info`` describes the response encoding: ``{"kind": "numeric"}``, or for
    binomial ``kind`` in ("binary", "proportion", "boolean", "levels") with
    ``failure``/``success`` (the level counted as 1); ``classes`` holds the
    multinomial class labels (class index k is ``classes[k]``).
    """

    formula: str
    family: str
    response: str                       # LHS text
    response_column: str | None         # the column when the LHS is a plain name
    response_design: dict | None        # Patsy design of an LHS expression
    response_info: dict
    classes: tuple | None
    fixed_design: dict                  # Patsy DesignInfo as plain data
    fixed_columns: tuple[str, ...]      # data columns the fixed part reads
    factor_names: tuple[str, ...]
    factor_levels: tuple[np.ndarray, ...]
    random_terms: tuple[dict, ...]      # per block: group_vars, expr, columns, design, levels
    weights: str | None                 # column name, or None (none / array given)
    weights_kind: str                   # "none" | "column" | "array"
    offset: str | None
    offset_kind: str                    # "none" | "column" | "array"
    na_action: str = "drop"

    # -- derived
    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(self.fixed_design["column_names"])

    @property
    def has_intercept(self) -> bool:
        """Whether the fixed design has Patsy's intercept column."""
        return "Intercept" in self.fixed_design["column_names"]

    @property
    def success(self):
        """The binomial level counted as success (None for other families)."""
        return self.response_info.get("success")

    def __getstate__(self) -> dict:
        """Copies (copy.deepcopy) leave out the cached Patsy objects (they refuse copying)."""
        return {k: v for k, v in self.__dict__.items() if k not in ("_fixed_info",
                                                                    "_random_infos")}

    @cached_property
    def _fixed_info(self) -> DesignInfo:
        return _design_info_from_dict(self.fixed_design)

    @cached_property
    def _random_infos(self) -> tuple:
        return tuple(_design_info_from_dict(r["design"]) for r in self.random_terms)

    # -- plain data
    def to_dict(self) -> dict:
        """A JSON-serializable dict (``json.dumps`` works on it)."""
        return {
            "version": 1, "formula": self.formula, "family": self.family,
            "response": self.response, "response_column": self.response_column,
            "response_design": self.response_design,
            "response_info": {k: (_encode_scalar(v) if k in ("success", "failure") else v)
                              for k, v in self.response_info.items()},
            "classes": None if self.classes is None else _encode_levels(np.asarray(
                self.classes, dtype=object) if not all(isinstance(c, (int, float, np.number))
                                                      for c in self.classes) else self.classes),
            "fixed_design": self.fixed_design, "fixed_columns": list(self.fixed_columns),
            "factors": [{"name": n, "levels": _encode_levels(lv)}
                        for n, lv in zip(self.factor_names, self.factor_levels)],
            "random_terms": [{**r, "levels": _encode_levels(r["levels"])}
                             for r in self.random_terms],
            "weights": self.weights, "weights_kind": self.weights_kind,
            "offset": self.offset, "offset_kind": self.offset_kind, "na_action": self.na_action,
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> "ModelSpec":
        """Inverse of :meth:`to_dict` (a DataError for anything else)."""
        if not isinstance(d, Mapping) or d.get("version") != 1:
            raise DataError("not a model spec of this impactglm version (expected version 1)")
        try:
            return cls._from_dict(d)
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"the model spec is damaged: {type(e).__name__}: {e}") from None

    @classmethod
    def _from_dict(cls, d: Mapping) -> "ModelSpec":
        classes = None if d["classes"] is None else tuple(_decode_levels(d["classes"]).tolist())
        return cls(
            formula=d["formula"], family=d["family"], response=d["response"],
            response_column=d["response_column"], response_design=d["response_design"],
            response_info={k: (_decode_scalar(v) if k in ("success", "failure") else v)
                           for k, v in d["response_info"].items()},
            classes=classes, fixed_design=d["fixed_design"],
            fixed_columns=tuple(d["fixed_columns"]),
            factor_names=tuple(f["name"] for f in d["factors"]),
            factor_levels=tuple(_decode_levels(f["levels"]) for f in d["factors"]),
            random_terms=tuple({**r, "levels": _decode_levels(r["levels"])}
                               for r in d["random_terms"]),
            weights=d["weights"], weights_kind=d["weights_kind"], offset=d["offset"],
            offset_kind=d["offset_kind"], na_action=d["na_action"])

    # -- new data
    def transform(self, newdata, response: bool = False, offset=None,
                  na_action: str | None = None) -> NewData:
        """Rebuild the model's arrays on ``newdata`` exactly as at fit time.

        Categorical levels and stateful-transform state (center/standardize) come from
        the training data.  A level of a ``C()``/categorical term that the fit never
        saw is a :class:`DataError`; an unseen level of a ``^`` factor or grouping
        factor gets code -1 and is counted in ``unseen``.  Rows with missing values in
        the columns used are dropped (``row_labels`` says which rows remain) unless
        ``na_action="raise"``.  ``offset``: needed when the model was fitted with an
        offset array; a column-name offset is read from ``newdata``.  With
        ``response=True`` the response is encoded as at fit time when its column is in
        ``newdata`` (rows with a missing response are then dropped too); otherwise
        ``y`` is None.  ``weights`` holds the weights column when it is in ``newdata``.
        """
        return _transform(self, newdata, response, offset, na_action or self.na_action)


# --------------------------------------------------------------------------- building blocks


def _family_name(family) -> str:
    """The family's name ("multinomial" or a name :func:`families.get_family` accepts)."""
    if isinstance(family, str) and family.strip().lower() == "multinomial":
        return "multinomial"
    return get_family(family).name


def _vector_argument(arg, frame: pd.DataFrame, what: str):
    """(values float-able array or None, column name or None, kind) for weights/offset."""
    if arg is None:
        return None, None, "none"
    if isinstance(arg, str):
        if arg not in frame.columns:
            raise ColumnNotFoundError(arg, frame.columns)
        values = frame[arg]
        if not _is_numeric(values):
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
                                f"{_row_label(frame.index, i)!r}; drop it or use na_action='drop'")
            missing |= m
    for what, arr in extra.items():
        if arr is not None:
            m = np.isnan(arr)
            if m.any():
                if na_action == "raise":
                    i = int(np.argmax(m))
                    raise DataError(f"the {what} has a missing value (NaN) at row "
                                    f"{_row_label(frame.index, i)!r}")
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
                                f"{_row_label(frame.index, i)!r}")


def _non_numeric_culprit(frame: pd.DataFrame, code: str) -> str | None:
    try:
        names = _expr_names(code, code, 0).columns
    except FormulaError:
        return None
    for name, _ in names:
        if name in frame.columns and not _is_numeric(frame[name]):
            return name
    return None


def _build_patsy(rhs, frame: pd.DataFrame, formula: str, shift: int = 0
                 ) -> tuple[DesignInfo, np.ndarray]:
    """(DesignInfo, design matrix) of a Patsy right-hand side, or of a stored DesignInfo.

    Patsy decides the columns (term order, contrasts, categories, stateful-transform
    memorization); :func:`_build_matrix` fills them in.  Missing rows were removed
    before, so there is no NA handling here.
    """
    if isinstance(rhs, str):
        shift += _lead(rhs)
    try:
        if isinstance(rhs, DesignInfo):
            info = rhs
        else:
            desc = ModelDesc.from_formula(rhs)
            info = patsy.design_matrix_builders([desc.rhs_termlist], lambda: iter([frame]),
                                                _EVAL_ENV, NAAction(NA_types=[]))[0]
        return info, _build_matrix(info, frame)
    except PatsyError as e:
        origin = getattr(e, "origin", None)
        if origin is not None:
            code = origin.code[origin.start:origin.end]
            culprit = _non_numeric_culprit(frame, code)
            if culprit is not None:
                raise DataError(f"column {culprit!r} holds {frame[culprit].dtype} values but the "
                                f"term {code!r} needs numbers") from None
        if isinstance(rhs, DesignInfo):
            raise DataError(f"cannot rebuild the design on the new data: "
                            f"{getattr(e, 'message', e)}") from None
        raise _formula_error(e, formula, shift) from None


def _column_combinations(columns_per_factor: Sequence[int]):
    """Patsy's column order within a subterm: the left-most factor varies fastest."""
    for combo in itertools.product(*[range(n) for n in reversed(columns_per_factor)]):
        yield combo[::-1]


def _factor_culprit(factor, frame: pd.DataFrame) -> str:
    names = [n for n, _ in _expr_names(factor.code, factor.code, 0).columns if n in frame.columns]
    return names[0] if names else factor.code


def _categorical_codes(value, categories: tuple, factor, frame: pd.DataFrame) -> np.ndarray:
    """Codes of a categorical factor's values in the training ``categories`` (hashing, no
    per-row Python loop); a value outside them is a DataError naming column and level."""
    from patsy.categorical import _CategoricalBox
    if isinstance(value, _CategoricalBox):
        if value.levels is not None and tuple(value.levels) != categories:
            raise PatsyError(f"mismatching levels: expected {categories!r}, got "
                             f"{tuple(value.levels)!r}", factor)
        value = value.data
    index = pd.Index(list(categories), dtype=object)
    if isinstance(getattr(value, "dtype", None), pd.CategoricalDtype):
        cat = value.array if isinstance(value, pd.Series) else value
        cat_codes = index.get_indexer(pd.Index(cat.categories, dtype=object))
        raw = np.asarray(cat.codes)
        codes = np.where(raw >= 0, cat_codes[raw], -1)
        values = None
    else:
        if isinstance(value, pd.Series) and value.dtype != np.bool_:
            series = value
        else:
            arr = np.asarray(value)
            arr = arr.ravel() if arr.ndim != 1 else arr
            if arr.dtype == np.bool_ and categories == (False, True):
                return arr.astype(np.intp)
            series = pd.Series(arr)
        raw, uniques = pd.factorize(series, sort=False)
        mapping = index.get_indexer(pd.Index(np.asarray(uniques, dtype=object), dtype=object))
        codes = np.where(raw >= 0, mapping[raw], -1)
        values = series
    bad = codes < 0
    if bad.any():
        i = int(np.argmax(bad))
        level = (np.asarray(value, dtype=object)[i] if values is None else values.iloc[i])
        raise DataError(f"column {_factor_culprit(factor, frame)!r} has the level "
                        f"{_py(level)!r}, which is not a level of the term {factor.code!r} "
                        f"(levels: {_short(categories)})")
    return codes


def _build_matrix(info: DesignInfo, frame: pd.DataFrame) -> np.ndarray:
    """Fill the columns of ``info`` from ``frame``, exactly as Patsy's
    ``build_design_matrices`` (same products in the same order, so the same bits),
    but with categorical codes from hashing instead of Patsy's per-row loop."""
    n = len(frame)
    values = {}
    for factor, fi in info.factor_infos.items():
        v = factor.eval(fi.state, frame)
        if fi.type == "numerical":
            a = np.asarray(patsy.util.atleast_2d_column_default(v))
            if a.ndim != 2 or a.shape[1] != fi.num_columns or a.shape[0] != n:
                raise PatsyError(f"when evaluating factor {factor.name()}, I got shape "
                                 f"{a.shape} instead of ({n}, {fi.num_columns})", factor)
            if not np.issubdtype(a.dtype, np.number) and a.dtype != np.bool_:
                raise DataError(f"column {_factor_culprit(factor, frame)!r} gives {a.dtype} "
                                f"values but the term {factor.code!r} needs numbers")
            values[factor] = a
        else:
            values[factor] = _categorical_codes(v, fi.categories, factor, frame)
    plan = []       # per output column: [(values, column or None, contrast matrix or None)]
    for subterms in info.term_codings.values():
        for st in subterms:
            widths = [st.contrast_matrices[f].matrix.shape[1] if f in st.contrast_matrices
                      else info.factor_infos[f].num_columns for f in st.factors]
            for idxs in _column_combinations(widths):
                ops = []
                for factor, j in zip(st.factors, idxs):
                    if info.factor_infos[factor].type == "categorical":
                        ops.append((values[factor], j, st.contrast_matrices[factor].matrix))
                    else:
                        ops.append((values[factor], j, None))
                plan.append(ops)
    p = len(plan)
    out = np.empty((n, p), dtype=np.float64)
    chunk = max(1, min(n, (1 << 19) // max(p, 1)))      # ~4 MB column-major buffer
    buf = np.empty((chunk, p), dtype=np.float64, order="F")
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        part = buf[: b - a]
        for k, ops in enumerate(plan):
            col = part[:, k]
            if not ops:
                col[...] = 1.0
            # Patsy's product order 1 * f1 * f2 * ...; 1 * f1 == f1 exactly
            for i, (v, j, matrix) in enumerate(ops):
                term = matrix[v[a:b], j] if matrix is not None else v[a:b, j]
                if i == 0:
                    col[...] = term
                else:
                    col *= term
        out[a:b] = part
    return out


def _finite_rows(M: np.ndarray, names: Sequence[str], labels: pd.Index, what: str) -> np.ndarray:
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
                        f"{_row_label(labels, int(i))!r}")
    return finite.all(axis=1)


def _random_design(term: RandomTerm, frame: pd.DataFrame, formula: str):
    """(design info, Z, term names) of a random term's expression."""
    shift = max(formula.find(term.expr), 0) - 2
    info, Z = _build_patsy("~ " + term.expr, frame, formula, shift)
    names = tuple("(Intercept)" if n == "Intercept" else n for n in info.column_names)
    return info, Z, names


def _group_codes(frame: pd.DataFrame, group_vars: Sequence[str]):
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


def _single_level_error(name: str, levels, what: str) -> DataError:
    return DataError(f"the {what}{name!r} has a single level ({_py(levels[0])!r}) in the rows "
                     "used; "
                     "it needs at least 2 levels (its effect cannot be told apart from the "
                     "intercept)")


# --------------------------------------------------------------------------- response


def _encode_response(values: pd.Series, family: str, name: str, labels: pd.Index,
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
    if not _is_numeric(values):
        raise DataError(f"the response {name!r} holds {values.dtype} values; the {family} family "
                        "needs numbers")
    y = values.to_numpy(dtype=np.float64, copy=True)
    _check_range(y, family, name, labels)
    return y, {"kind": "numeric"}, None


def _encode_binomial(values: pd.Series, name: str, labels: pd.Index):
    dtype = values.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return values.to_numpy(dtype=np.float64, copy=True), {"kind": "boolean", "failure": False,
                                                   "success": True}, None
    if _is_numeric(values):
        y = values.to_numpy(dtype=np.float64, copy=True)
        _check_range(y, "binomial", name, labels)
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


def _check_range(y: np.ndarray, family: str, name: str, labels: pd.Index) -> None:
    """The family's range (binomial [0, 1], poisson >= 0, gamma > 0): families.check_response."""
    get_family(family).check_response(y, name, row_labels=np.asarray(labels))


# --------------------------------------------------------------------------- build_design


@dataclass
class _Rows:
    """The used columns of the kept rows (RangeIndex), their labels, and per-row arrays."""

    frame: pd.DataFrame
    labels: pd.Index
    arrays: dict
    n_dropped: int = 0
    positions: np.ndarray | None = None

    def subset(self, keep: np.ndarray) -> "_Rows":
        pos = np.arange(len(keep)) if self.positions is None else self.positions
        return _Rows(self.frame[keep].reset_index(drop=True), self.labels[keep],
                     {k: None if a is None else a[keep] for k, a in self.arrays.items()},
                     self.n_dropped + int((~keep).sum()), pos[keep])

    def kept_positions(self) -> np.ndarray:
        return np.arange(len(self.frame)) if self.positions is None else self.positions


def _select_rows(frame: pd.DataFrame, used: Sequence[str], numeric: Sequence[str],
                 arrays: dict, na_action: str) -> _Rows:
    """R's na.omit over ``used`` columns and the ``arrays`` (weights, offset).

    Infinite values in the ``numeric`` columns or the arrays are errors naming the row.
    """
    _check_finite(frame, numeric)
    for what, arr in arrays.items():
        if arr is not None and np.isinf(arr).any():
            i = int(np.argmax(np.isinf(arr)))
            raise DataError(f"the {what} is infinite at row {_row_label(frame.index, i)!r}")
    missing = _missing_mask(frame, used, arrays, na_action)
    rows = _Rows(frame[list(used)] if used else pd.DataFrame(index=frame.index), frame.index,
                 dict(arrays))
    if missing.any():
        rows = rows.subset(~missing)
    else:
        rows.frame = rows.frame.reset_index(drop=True)
    if len(rows.frame) == 0:
        raise DataError(f"no rows left after removing {rows.n_dropped} rows with missing values "
                        f"in the columns {', '.join(map(repr, used))}")
    return rows


def _drop_transform_nan(rows: _Rows, ok: np.ndarray, na_action: str) -> _Rows:
    """Rows where a transform gave NaN (np.log(-1)) are dropped like missing values."""
    if ok.all():
        return rows
    if na_action == "raise":
        i = int(np.argmin(ok))
        raise DataError(f"a transform in the formula gives NaN at row "
                        f"{_row_label(rows.labels, i)!r}; fix the data or use na_action='drop'")
    rows = rows.subset(ok)
    if len(rows.frame) == 0:
        raise DataError("no rows left after removing rows with missing values")
    return rows


@dataclass
class _Columns:
    """The data columns each part of the formula reads."""

    fixed: list
    response: list
    random: list
    groups: list
    high_cardinality: list


def _formula_columns(parsed: ParsedFormula, data, rhs_text: str, shift: int,
                     extra: Sequence[str]) -> tuple[pd.DataFrame, _Columns]:
    """The table (only the needed columns of an Arrow table) and the columns the formula
    uses; unknown names raise ColumnNotFoundError (closest name suggested) and unknown
    functions FormulaError with a caret, before any numerical work."""
    text = parsed.text
    fixed_names, _ = _patsy_factor_names(rhs_text, text, shift)
    lhs_pos = len(text) - len(text.lstrip())
    resp_names = _expr_names(parsed.response, text, lhs_pos) if parsed.response else _Names([], [])
    random_names = []
    for term in parsed.random:
        pos = max(text.find(term.expr), 0)
        random_names.append(_patsy_factor_names("~ " + term.expr, text, pos - 2)[0])
    groups = _unique(v for t in parsed.random for v in t.group_vars)
    wanted = {n for names in [fixed_names, resp_names, *random_names] for n, _ in names.columns}
    wanted |= set(parsed.high_cardinality) | set(groups) | set(extra)
    frame = _as_frame(data, sorted(wanted, key=str))
    columns = set(frame.columns)

    def check(names: _Names) -> list[str]:
        for name, pos in names.functions:
            if name not in columns and not _is_function_ok(name):
                raise FormulaError(f"unknown function {name!r}", text, pos)
        for name, _ in names.columns:
            if name not in columns and name not in _NAMESPACE:
                raise ColumnNotFoundError(name, frame.columns)
        return _unique(n for n, _ in names.columns if n in columns)

    for name in list(parsed.high_cardinality) + groups:
        if name not in columns:
            raise ColumnNotFoundError(name, frame.columns)
    return frame, _Columns(fixed=check(fixed_names), response=check(resp_names),
                           random=_unique(c for r in random_names for c in check(r)),
                           groups=groups, high_cardinality=list(parsed.high_cardinality))


def _response_source(parsed: ParsedFormula, rows: _Rows, columns: set):
    """(values, column or None, stored Patsy design of an LHS expression or None)."""
    lhs, text = parsed.response, parsed.text
    if not lhs:
        raise FormulaError("the formula needs a response: 'y ~ terms'", text, 0)
    name = _simple_name(lhs)
    if name in columns:
        return rows.frame[name], name, None
    lhs_pos = len(text) - len(text.lstrip())
    info, M = _build_patsy("~0+" + lhs, rows.frame, text, lhs_pos - 3)
    if M.shape[1] != 1:
        raise DataError(f"the response {lhs!r} must be one numeric column, it gives "
                        f"{M.shape[1]} columns")
    return pd.Series(M[:, 0]), None, _design_info_to_dict(info)


def _high_cardinality_factors(frame: pd.DataFrame, names: Sequence[str]) -> list[FactorCodes]:
    factors = []
    for name in names:
        codes, levels, counts = factorize(frame[name], name)
        if len(levels) < 2:
            raise _single_level_error(name, levels, "high-cardinality factor ")
        factors.append(FactorCodes(name, codes, levels, counts))
    return factors


def _random_blocks(frame: pd.DataFrame, terms: Sequence[RandomTerm], text: str):
    """RandomBlocks (``(x || g)`` split per column) and their plain-data specs."""
    blocks, specs = [], []
    for term in terms:
        codes, levels, _ = _group_codes(frame, term.group_vars)
        if len(levels) < 2:
            raise _single_level_error(term.group, levels, "grouping factor ")
        info, Z, names = _random_design(term, frame, text)
        if not np.isfinite(Z).all():
            raise DataError(f"the random-effects term {str(term)!r} gives non-finite values")
        splits = [list(range(Z.shape[1]))] if term.correlated else [[j] for j in range(Z.shape[1])]
        for cols in splits:
            blocks.append(RandomBlock(term.group, codes, levels, np.ascontiguousarray(Z[:, cols]),
                                      tuple(names[j] for j in cols)))
            specs.append({"group_vars": list(term.group_vars), "expr": term.expr,
                          "correlated": term.correlated, "columns": cols,
                          "design": _design_info_to_dict(info), "levels": levels})
    return blocks, specs


def build_design(formula: str | ParsedFormula, data, *, family: str = "gaussian",
                 weights=None, offset=None, na_action: str = "drop") -> Design:
    """Build the arrays of a model from a formula and a table (see the module docstring).

    ``weights``/``offset``: a column name or an array with one value per row of
    ``data`` (positional).  ``na_action``: "drop" (R's na.omit over the columns the
    model uses) or "raise".  ``data`` is never modified.
    """
    parsed = formula if isinstance(formula, ParsedFormula) else parse_formula(formula)
    text = parsed.text
    fam = _family_name(family)
    if na_action not in NA_ACTIONS:
        raise DataError(f"na_action must be 'drop' or 'raise', not {na_action!r}")

    # 1. every name the formula uses, checked against the data
    rhs_text = _patsy_rhs_text(text)
    shift = -1 if not parsed.response else 0
    extra = [a for a in (weights, offset) if isinstance(a, str)]
    frame, cols = _formula_columns(parsed, data, rhs_text, shift, extra)
    w_values, w_col, w_kind = _vector_argument(weights, frame, "weights")
    o_values, o_col, o_kind = _vector_argument(offset, frame, "offset")

    # 2. missing values: R's na.omit over the columns used
    used = _unique(cols.response + cols.fixed + cols.high_cardinality + cols.random + cols.groups)
    rows = _select_rows(frame, used, _unique(cols.response + cols.fixed + cols.random),
                        {"weights": w_values, "offset": o_values}, na_action)

    # 3. fixed part (Patsy's columns), response; rows a transform made NaN are dropped
    rows.frame = _categorize(rows.frame, _unique(cols.fixed + cols.random))
    fixed_info, X = _build_patsy(rhs_text, rows.frame, text, shift)
    col_names = tuple(fixed_info.column_names)
    y_source, resp_col, resp_design = _response_source(parsed, rows, set(frame.columns))
    ok = _finite_rows(X, col_names, rows.labels, "design")
    if resp_col is None:
        ok &= _finite_rows(y_source.to_numpy()[:, None], [parsed.response], rows.labels,
                           "response")
    if not ok.all():
        rows = _drop_transform_nan(rows, ok, na_action)
        X, y_source = X[ok], y_source[ok].reset_index(drop=True)
    w_values, o_values = rows.arrays["weights"], rows.arrays["offset"]
    if w_values is not None and (w_values < 0).any():
        i = int(np.argmax(w_values < 0))
        raise DataError(f"the weights must be non-negative; row {_row_label(rows.labels, i)!r} "
                        f"has {w_values[i]:g}")
    y, info, classes = _encode_response(y_source, fam, parsed.response, rows.labels, w_values)

    # 4. ^ factors and random-effects blocks
    factors = _high_cardinality_factors(rows.frame, cols.high_cardinality)
    blocks, random_specs = _random_blocks(rows.frame, parsed.random, text)

    n = len(rows.frame)
    spec = ModelSpec(
        formula=text, family=fam, response=parsed.response, response_column=resp_col,
        response_design=resp_design, response_info=info, classes=classes,
        fixed_design=_design_info_to_dict(fixed_info), fixed_columns=tuple(cols.fixed),
        factor_names=tuple(cols.high_cardinality), factor_levels=tuple(f.levels for f in factors),
        random_terms=tuple(random_specs), weights=w_col, weights_kind=w_kind,
        offset=o_col, offset_kind=o_kind, na_action=na_action)
    return Design(
        X=np.ascontiguousarray(X, dtype=np.float64), column_names=col_names, y=y,
        weights=np.ones(n) if w_values is None else np.ascontiguousarray(w_values),
        offset=np.zeros(n) if o_values is None else np.ascontiguousarray(o_values),
        factors=tuple(factors), random=tuple(blocks), spec=spec, n_dropped=rows.n_dropped,
        row_labels=np.asarray(rows.labels))


def _unique(items: Iterable) -> list:
    return list(dict.fromkeys(items))


def _simple_name(code: str) -> str | None:
    """The column a plain LHS names (``y`` or ``Q('odd name')``), else None."""
    code = code.strip()
    if code.isidentifier():
        return code
    try:
        tree = ast.parse(code, mode="eval").body
    except SyntaxError:
        return None
    if (isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name) and tree.func.id == "Q"
            and len(tree.args) == 1 and isinstance(tree.args[0], ast.Constant)):
        return str(tree.args[0].value)
    return None


# --------------------------------------------------------------------------- transform


def _categorize(sub: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """String columns as pandas categoricals with sorted categories, before Patsy sees them.

    Patsy sorts the levels of a string column the same way (Python's string order), so
    the design is unchanged; it only avoids Patsy's per-row Python loop when it sniffs
    the levels.
    """
    changes = {}
    for col in columns:
        s = sub[col]
        if (not isinstance(s.dtype, pd.CategoricalDtype) and not _is_numeric(s)
                and pd.api.types.infer_dtype(s, skipna=False) == "string"):
            codes, levels, _ = factorize(s, col)
            changes[col] = pd.Categorical.from_codes(codes,
                                                     categories=pd.Index(levels, dtype=object))
    return sub.assign(**changes) if changes else sub


def _short(values, k: int = 6) -> str:
    values = list(values)
    return ", ".join(repr(_py(v)) for v in values[:k]) + (", ..." if len(values) > k else "")


def _level_codes(values: pd.Series, levels: np.ndarray) -> np.ndarray:
    """Index of each value in the training levels, -1 when unseen (hash lookup).

    Ids read with another type than at fit time are matched by value: numbers
    written as text ("12") match numeric levels, numbers match text levels.
    """
    levels = np.asarray(levels)
    if isinstance(values.dtype, pd.CategoricalDtype):
        cat_codes = _level_codes(pd.Series(values.cat.categories), levels)
        raw = values.cat.codes.to_numpy()
        return np.where(raw >= 0, cat_codes[raw], -1).astype(np.int32)
    numeric_levels = levels.dtype.kind in "iuf"
    if numeric_levels and not _is_numeric(values):
        values = pd.to_numeric(values, errors="coerce")
    elif not numeric_levels and _is_numeric(values) and len(levels) and all(
            isinstance(v, str) for v in levels[:10]):
        values = values.astype(str)
    raw, uniques = pd.factorize(values, sort=False)
    mapping = pd.Index(levels).get_indexer(uniques)
    return np.where(raw >= 0, mapping[raw], -1).astype(np.int32)


def _spec_columns(spec: ModelSpec) -> tuple[list, list]:
    """(columns of the random-term expressions and groups, columns of the response)."""
    rand = []
    for r in spec.random_terms:
        for f in r["design"]["factors"]:
            rand += [n for n, _ in _expr_names(f["code"], f["code"], 0).columns]
        rand += list(r["group_vars"])
    if spec.response_column is not None:
        resp = [spec.response_column]
    else:
        resp = [n for n, _ in _expr_names(spec.response, spec.response, 0).columns]
    return _unique(rand), _unique(resp)


def _label_strings(values: pd.Series) -> pd.Series:
    """Values as the level labels of an interaction group (whole floats as integers)."""
    if values.dtype.kind == "f":
        a = values.to_numpy()
        if np.all(np.isfinite(a)) and np.all(a == np.round(a)):
            return pd.Series(a.astype(np.int64)).astype(str)
    return values.astype(str).reset_index(drop=True)


def _new_random(spec: ModelSpec, frame: pd.DataFrame) -> list:
    """(codes with -1 for unseen levels, Z) per random block on new data."""
    out = []
    for r, info in zip(spec.random_terms, spec._random_infos):
        g = r["group_vars"]
        if len(g) == 1:
            key = frame[g[0]]
        else:
            key = _label_strings(frame[g[0]])
            for v in g[1:]:
                key = key + ":" + _label_strings(frame[v])
        _, Z = _build_patsy(info, frame, spec.formula)
        out.append((_level_codes(key, r["levels"]), np.ascontiguousarray(Z[:, r["columns"]])))
    return out


def _transform(spec: ModelSpec, newdata, response: bool, offset, na_action: str) -> NewData:
    rand_cols, resp_cols = _spec_columns(spec)
    fixed_cols, hc = list(spec.fixed_columns), list(spec.factor_names)
    frame = _as_frame(newdata, fixed_cols + hc + rand_cols + resp_cols
                      + [c for c in (spec.offset, spec.weights) if c is not None])
    cols = set(frame.columns)
    rand_cols = [c for c in rand_cols if c in cols or c not in _NAMESPACE]
    resp_cols = [c for c in resp_cols if c in cols or c not in _NAMESPACE]
    if not response or not set(resp_cols) <= cols:   # no response in the new data: y is None
        response, resp_cols = False, []
    required = fixed_cols + hc + rand_cols + resp_cols
    if spec.offset_kind == "column" and offset is None:
        required.append(spec.offset)
    for c in _unique(required):
        if c not in cols:
            raise ColumnNotFoundError(c, frame.columns)

    if spec.offset_kind == "array" and offset is None:
        raise DataError("the model was fitted with an offset array: pass offset= with one "
                        "value per row of the new data")
    if spec.offset_kind == "column" and offset is None:
        offset = spec.offset
    o_values = _vector_argument(offset, frame, "offset")[0]
    w_values = None
    if response and spec.weights_kind == "column" and spec.weights in cols:
        w_values = _vector_argument(spec.weights, frame, "weights")[0]
    rows = _select_rows(frame, _unique(fixed_cols + hc + rand_cols + resp_cols),
                        _unique(fixed_cols + resp_cols),
                        {"offset": o_values, "weights": w_values}, na_action)

    _, X = _build_patsy(spec._fixed_info, rows.frame, spec.formula)
    ok = _finite_rows(X, spec.column_names, rows.labels, "design")
    if response and spec.response_design is not None:
        rd = _design_info_from_dict(spec.response_design)
        ysrc = pd.Series(_build_patsy(rd, rows.frame, spec.formula)[1][:, 0])
        ok &= _finite_rows(ysrc.to_numpy()[:, None], [spec.response], rows.labels, "response")
    elif response:
        ysrc = rows.frame[spec.response_column]
    if not ok.all():
        rows = _drop_transform_nan(rows, ok, na_action)
        X = X[ok]
        if response:
            ysrc = ysrc[ok].reset_index(drop=True)
    y = _encode_new_response(ysrc, spec, rows.labels) if response else None

    codes = tuple(_level_codes(rows.frame[name], levels)
                  for name, levels in zip(spec.factor_names, spec.factor_levels))
    n = len(rows.frame)
    o_values, w_values = rows.arrays["offset"], rows.arrays["weights"]
    return NewData(X=np.ascontiguousarray(X),
                   offset=np.zeros(n) if o_values is None else np.ascontiguousarray(o_values),
                   codes=codes, unseen={name: int((c < 0).sum())
                                        for name, c in zip(spec.factor_names, codes)},
                   y=y, row_labels=np.asarray(rows.labels),
                   weights=None if w_values is None else np.ascontiguousarray(w_values),
                   random=tuple(_new_random(spec, rows.frame)), n_dropped=rows.n_dropped,
                   positions=rows.kept_positions())


def _encode_new_response(values: pd.Series, spec: ModelSpec, labels: pd.Index) -> np.ndarray:
    """The response of new data, encoded as at fit time (classes and success level)."""
    name = spec.response
    if spec.family == "multinomial":
        c = _level_codes(values, np.asarray(spec.classes, dtype=object)
                         if not all(isinstance(v, (int, float)) for v in spec.classes)
                         else np.asarray(spec.classes))
        if (c < 0).any():
            i = int(np.argmax(c < 0))
            raise DataError(f"the response {name!r} has the class {_py(values.iloc[i])!r} at row "
                            f"{_row_label(labels, i)!r} that the model was not fitted with")
        return c
    info = spec.response_info
    if info.get("kind") == "levels":
        v = values.astype(object) if isinstance(values.dtype, pd.CategoricalDtype) else values
        is_s = (v == info["success"]).to_numpy()
        bad = ~(is_s | (v == info["failure"]).to_numpy())
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"the response {name!r} has the level {_py(v.iloc[i])!r} at row "
                            f"{_row_label(labels, i)!r}; the model knows {info['failure']!r} and "
                            f"{info['success']!r}")
        return is_s.astype(np.float64)
    if not _is_numeric(values):
        raise DataError(f"the response {name!r} holds {values.dtype} values; numbers needed")
    y = values.to_numpy(dtype=np.float64, copy=True)
    _check_range(y, spec.family, name, labels)
    return y

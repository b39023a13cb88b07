"""The model spec: plain data (JSON-able) that rebuilds a fitted model's arrays on new data.

:class:`ModelSpec` holds the formula, the family's response encoding, Patsy's design
(as plain data, stateful-transform state included), the level tables of ``^`` factors
and random terms, and where weights and offset come from.  ``to_dict``/``from_dict``
round-trip it through JSON; ``from_dict`` checks every stored expression against the
closed formula namespace (:mod:`impactglm.design.namespace`) and requires Patsy's
stored eval code to be exactly the one its factor code gives, so a model file cannot
carry code.  ``transform(newdata)`` rebuilds X, offset, level codes and the response.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from typing import Mapping, Sequence
import numpy as np
import pandas as pd
from patsy import EvalFactor, PatsyError, Term
from patsy.contrasts import ContrastMatrix
from patsy.design_info import DesignInfo, FactorInfo, SubtermInfo


from .._util import unique_in_order
from ..containers import NewData
from ..errors import ColumnNotFoundError, DataError, FormulaError, ImpactGLMError, ModelFileError
from ..families import get_family
from ..formula import parse_formula
from .levels import factorize, level_codes, plain_value
from .namespace import check_expression
from .offsets import is_offset_column, split_offset_columns
from .patsy import build_patsy, EVAL_ENV, expr_names, FastStandardize, formula_names, NAMESPACE, stateful_eval_code
from .response import check_range
from .rows import NA_ACTIONS, as_frame, drop_transform_nan, finite_rows, is_numeric, row_label, select_rows, vector_argument


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
    dtype = np.dtype(d["dtype"])
    if dtype.kind not in "biuf":
        raise DataError(f"a stored level table has the dtype {d['dtype']!r}")
    return np.array(d["values"], dtype=dtype)


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


def design_info_to_dict(di: DesignInfo) -> dict:
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
        fac = EvalFactor(_stored_code(f["code"]))
        expected, wanted = stateful_eval_code(fac.code)
        if f["eval_code"] != expected or set(f["transforms"]) != set(wanted):
            raise DataError(f"the stored Patsy code {f['eval_code']!r} is not the code of the "
                            f"term {fac.code!r}")
        transforms = {}
        for name, t in f["transforms"].items():
            cls = classes.get(t["class"])
            if cls is not wanted[name]:
                raise DataError(f"the stored transform {name!r} of the term {fac.code!r} has "
                                f"the class {t['class']!r}, not {wanted[name].__name__!r}")
            if not t["attrs"] or not set(t["attrs"]) <= set(vars(cls())):
                raise DataError(f"the stored transform {name!r} of the term {fac.code!r} has the "
                                f"attributes {sorted(t['attrs'])}, not {sorted(vars(cls()))}")
            obj = cls.__new__(cls)
            obj.__dict__.update({_attr_name(k): _decode_value(x) for k, x in t["attrs"].items()})
            transforms[name] = obj
        state = {"eval_env": EVAL_ENV, "eval_code": f["eval_code"], "transforms": transforms}
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


_SOURCE_KINDS = ("none", "column", "array")
_RESPONSE_KINDS = ("numeric", "binary", "proportion", "boolean", "levels", "classes")


def _one_of(name: str, value, choices) -> None:
    if value not in choices:
        raise ModelFileError(f"the model spec's {name} is {value!r}, not one of "
                             f"{', '.join(choices)}")


def _stored_code(code) -> str:
    """A stored factor's code, checked against the closed namespace (FormulaError -> DataError)."""
    if not isinstance(code, str):
        raise DataError(f"a stored term is {type(code).__name__}, not text")
    try:
        check_expression(code, position=None)
    except FormulaError as e:
        raise DataError(f"the stored term {code!r} is not allowed: {e.reason}") from None
    return code


def _attr_name(name) -> str:
    if not isinstance(name, str) or not name.isidentifier() or name.startswith("__"):
        raise DataError(f"bad attribute name {name!r} of a stored transform")
    return name


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
        """The columns of X (``offset(...)`` terms go to the offset: design/offsets.py)."""
        return tuple(c for c in self.fixed_design["column_names"] if not is_offset_column(c))

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
        """Inverse of :meth:`to_dict`; a :class:`ModelFileError` for anything else.

        Validated whole before it returns: the formula and every stored expression pass
        the closed-namespace check, Patsy's designs are rebuilt (their stored eval code
        must be the code of their terms), and a damaged entry names itself.
        """
        if not isinstance(d, Mapping) or d.get("version") != 1:
            raise ModelFileError("not a model spec of this impactglm version (expected "
                                 "version 1)")
        try:
            spec = cls._from_dict(d)
            spec._validate()
            return spec
        except ImpactGLMError as e:
            if isinstance(e, ModelFileError):
                raise
            raise ModelFileError(f"the model spec is damaged: {e}") from None
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, PatsyError) as e:
            what = f"missing entry {e}" if isinstance(e, KeyError) else f"{type(e).__name__}: {e}"
            raise ModelFileError(f"the model spec is damaged: {what}") from None

    def _validate(self) -> None:
        """Check the formula and stored expressions (nothing is evaluated); build the
        Patsy designs; check the shapes that tie the parts together."""
        for name in ("formula", "family", "response", "na_action"):
            if not isinstance(getattr(self, name), str):
                raise ModelFileError(f"the model spec's {name!r} is not text")
        _one_of("na_action", self.na_action, NA_ACTIONS)
        _one_of("weights_kind", self.weights_kind, _SOURCE_KINDS)
        _one_of("offset_kind", self.offset_kind, _SOURCE_KINDS)
        for kind, col in ((self.weights_kind, self.weights), (self.offset_kind, self.offset)):
            if (kind == "column") != isinstance(col, str):
                raise ModelFileError("the model spec's weights/offset column does not match "
                                     "its kind")
        if self.family != "multinomial":
            get_family(self.family)
        info = self.response_info
        _one_of("response_info kind", info.get("kind"), _RESPONSE_KINDS)
        if info["kind"] in ("levels", "boolean", "binary") and not {"success", "failure"} <= set(info):
            raise ModelFileError("the model spec's binomial response records no success level")
        if (self.family == "multinomial") != (self.classes is not None):
            raise ModelFileError("the model spec's classes do not match its family")
        for levels in (*self.factor_levels, *(r["levels"] for r in self.random_terms)):
            if len(levels) < 2 or levels.ndim != 1:
                raise ModelFileError("a level table of the model spec is damaged")
        formula_names(parse_formula(self.formula))
        if self.response:
            expr_names(self.response, self.response, 0)
        if self.response_column is not None and not isinstance(self.response_column, str):
            raise ModelFileError("the model spec's 'response_column' is not text")
        for r in self.random_terms:
            expr_names(r["expr"], r["expr"], 0)
            if not all(isinstance(g, str) for g in r["group_vars"]):
                raise ModelFileError("a random term's grouping columns are not text")
        for name in (*self.fixed_columns, *self.factor_names, self.weights, self.offset):
            if name is not None and not isinstance(name, str):
                raise ModelFileError(f"the model spec names the column {name!r}, not text")
        if len(self._fixed_info.column_names) != len(self.fixed_design["column_names"]):
            raise ModelFileError("the model spec's fixed design is damaged")
        if len(self._random_infos) != len(self.random_terms):
            raise ModelFileError("the model spec's random terms are damaged")
        if self.response_design is not None:
            _design_info_from_dict(self.response_design)

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


# --------------------------------------------------------------------------- transform


def categorize(sub: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """String columns as pandas categoricals with sorted categories, before Patsy sees them.

    Patsy sorts the levels of a string column the same way (Python's string order), so
    the design is unchanged; it only avoids Patsy's per-row Python loop when it sniffs
    the levels.
    """
    check_no_dates(sub, columns)
    changes = {}
    for col in columns:
        s = sub[col]
        if (not isinstance(s.dtype, pd.CategoricalDtype) and not is_numeric(s)
                and pd.api.types.infer_dtype(s, skipna=False) == "string"):
            codes, levels, _ = factorize(s, col)
            changes[col] = pd.Categorical.from_codes(codes,
                                                     categories=pd.Index(levels, dtype=object))
    return sub.assign(**changes) if changes else sub




def check_no_dates(frame: pd.DataFrame, columns: Sequence[str], role: str = "") -> None:
    """A DataError naming the first date column among ``columns`` and the fix: a model
    takes numbers, strings or booleans (a saved model stores levels and transform state
    as plain numbers and text)."""
    for col in columns:
        dtype = frame[col].dtype
        kind = getattr(dtype, "kind", "")
        if kind == "M" or isinstance(dtype, (pd.DatetimeTZDtype, pd.PeriodDtype)):
            raise DataError(
                f"column {col!r}{role} holds dates ({dtype}), which a model cannot use "
                f"directly: convert it first, to a number (e.g. df[{col!r}].dt.year, or "
                f"(df[{col!r}] - df[{col!r}].min()).dt.days) or to text levels "
                f"(df[{col!r}].astype(str))")


def _spec_columns(spec: ModelSpec) -> tuple[list, list]:
    """(columns of the random-term expressions and groups, columns of the response)."""
    rand = []
    for r in spec.random_terms:
        for f in r["design"]["factors"]:
            rand += [n for n, _ in expr_names(f["code"], f["code"], 0).columns]
        rand += list(r["group_vars"])
    if spec.response_column is not None:
        resp = [spec.response_column]
    else:
        resp = [n for n, _ in expr_names(spec.response, spec.response, 0).columns]
    return unique_in_order(rand), unique_in_order(resp)


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
        _, Z = build_patsy(info, frame, spec.formula)
        out.append((level_codes(key, r["levels"]), np.ascontiguousarray(Z[:, r["columns"]])))
    return out


def _transform(spec: ModelSpec, newdata, response: bool, offset, na_action: str) -> NewData:
    rand_cols, resp_cols = _spec_columns(spec)
    fixed_cols, hc = list(spec.fixed_columns), list(spec.factor_names)
    frame = as_frame(newdata, fixed_cols + hc + rand_cols + resp_cols
                      + [c for c in (spec.offset, spec.weights) if c is not None])
    cols = set(frame.columns)
    rand_cols = [c for c in rand_cols if c in cols or c not in NAMESPACE]
    resp_cols = [c for c in resp_cols if c in cols or c not in NAMESPACE]
    if not response or not set(resp_cols) <= cols:   # no response in the new data: y is None
        response, resp_cols = False, []
    required = fixed_cols + hc + rand_cols + resp_cols
    if spec.offset_kind == "column" and offset is None:
        required.append(spec.offset)
    for c in unique_in_order(required):
        if c not in cols:
            raise ColumnNotFoundError(c, frame.columns)

    if spec.offset_kind == "array" and offset is None:
        raise DataError("the model was fitted with an offset array: pass offset= with one "
                        "value per row of the new data")
    if spec.offset_kind == "column" and offset is None:
        offset = spec.offset
    o_values = vector_argument(offset, frame, "offset")[0]
    w_values = None
    if response and spec.weights_kind == "column" and spec.weights in cols:
        w_values = vector_argument(spec.weights, frame, "weights")[0]
    rows = select_rows(frame, unique_in_order(fixed_cols + hc + rand_cols + resp_cols),
                        unique_in_order(fixed_cols + resp_cols),
                        {"offset": o_values, "weights": w_values}, na_action)

    _, X = build_patsy(spec._fixed_info, rows.frame, spec.formula)
    ok = finite_rows(X, spec.fixed_design["column_names"], rows.labels, "design")
    if response and spec.response_design is not None:
        rd = _design_info_from_dict(spec.response_design)
        ysrc = pd.Series(build_patsy(rd, rows.frame, spec.formula)[1][:, 0])
        ok &= finite_rows(ysrc.to_numpy()[:, None], [spec.response], rows.labels, "response")
    elif response:
        ysrc = rows.frame[spec.response_column]
    if not ok.all():
        rows = drop_transform_nan(rows, ok, na_action)
        X = X[ok]
        if response:
            ysrc = ysrc[ok].reset_index(drop=True)
    y = encode_new_response(ysrc, spec, rows.labels) if response else None

    codes = tuple(level_codes(rows.frame[name], levels)
                  for name, levels in zip(spec.factor_names, spec.factor_levels))
    n = len(rows.frame)
    o_values, w_values = rows.arrays["offset"], rows.arrays["weights"]
    X, _, term_offset = split_offset_columns(X, spec.fixed_design["column_names"])
    if term_offset is not None:
        o_values = term_offset if o_values is None else o_values + term_offset
    return NewData(X=np.ascontiguousarray(X),
                   offset=np.zeros(n) if o_values is None else np.ascontiguousarray(o_values),
                   codes=codes, unseen={name: int((c < 0).sum())
                                        for name, c in zip(spec.factor_names, codes)},
                   y=y, row_labels=np.asarray(rows.labels),
                   weights=None if w_values is None else np.ascontiguousarray(w_values),
                   random=tuple(_new_random(spec, rows.frame)), n_dropped=rows.n_dropped,
                   positions=rows.kept_positions())


def encode_new_response(values: pd.Series, spec: ModelSpec, labels: pd.Index) -> np.ndarray:
    """The response of new data, encoded as at fit time (classes and success level)."""
    name = spec.response
    if spec.family == "multinomial":
        c = level_codes(values, np.asarray(spec.classes, dtype=object)
                         if not all(isinstance(v, (int, float)) for v in spec.classes)
                         else np.asarray(spec.classes))
        if (c < 0).any():
            i = int(np.argmax(c < 0))
            raise DataError(f"the response {name!r} has the class {plain_value(values.iloc[i])!r} at row "
                            f"{row_label(labels, i)!r} that the model was not fitted with")
        return c
    info = spec.response_info
    if info.get("kind") == "levels":
        v = values.astype(object) if isinstance(values.dtype, pd.CategoricalDtype) else values
        is_s = (v == info["success"]).to_numpy()
        bad = ~(is_s | (v == info["failure"]).to_numpy())
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"the response {name!r} has the level {plain_value(v.iloc[i])!r} at row "
                            f"{row_label(labels, i)!r}; the model knows {info['failure']!r} and "
                            f"{info['success']!r}")
        return is_s.astype(np.float64)
    if not is_numeric(values):
        raise DataError(f"the response {name!r} holds {values.dtype} values; numbers needed")
    y = values.to_numpy(dtype=np.float64, copy=True)
    check_range(y, spec.family, name, labels)
    return y

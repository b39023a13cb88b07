"""Patsy, used safely and fast: the closed namespace formulas are evaluated in, the names
a formula uses, and the design matrix of a Patsy right-hand side.

Every expression is checked by :func:`impactglm.design.namespace.check_expression`
(on its AST, before anything is evaluated) and Patsy evaluates in a
:class:`~impactglm.design.namespace.ClosedEnvironment` holding :data:`NAMESPACE` only
(no Python builtins).  :func:`build_patsy` fills the columns Patsy decides with
vectorized code (:func:`_build_matrix`), bit-identical to Patsy's own build.
"""
from __future__ import annotations

import ast
import itertools
from dataclasses import dataclass
from typing import Sequence
import numpy as np
import pandas as pd
import patsy
from patsy import ModelDesc, PatsyError
from patsy.design_info import DesignInfo
from patsy.missing import NAAction


from ..errors import DataError, FormulaError
from ..formula import ParsedFormula, patsy_rhs_text, RandomTerm
from .levels import plain_value, short_list
from .namespace import check_expression, ClosedEnvironment, CONTRASTS, FUNCTIONS
from .offsets import offset
from .rows import is_numeric


# --------------------------------------------------------------------------- namespace


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


NAMESPACE: dict = {"np": np, "numpy": np, "log": np.log, "log2": np.log2, "log10": np.log10,
                    "log1p": np.log1p, "exp": np.exp, "expm1": np.expm1, "sqrt": np.sqrt,
                    "offset": offset}            # offset(expr) terms: design/offsets.py
NAMESPACE.update({name: getattr(patsy.builtins, name) for name in sorted(FUNCTIONS | CONTRASTS)
                  if name not in NAMESPACE and hasattr(patsy.builtins, name)})
NAMESPACE["standardize"] = NAMESPACE["scale"] = patsy.state.stateful_transform(FastStandardize)
EVAL_ENV = ClosedEnvironment([NAMESPACE])
assert set(NAMESPACE) == FUNCTIONS | CONTRASTS | {"np", "numpy"}


def is_function_ok(name: str) -> bool:
    """Whether a formula may call ``name`` (a bare name; ``np.<ufunc>`` is an attribute)."""
    return name in FUNCTIONS or name in CONTRASTS


def stateful_eval_code(code: str) -> tuple[str, dict[str, type]]:
    """Patsy's eval code of a factor's ``code`` and the classes of its stateful transforms
    (``center(x)`` -> ``_patsy_stobj0__center__.transform(x)``, {name: Center}): what a
    stored factor must hold, so a model file cannot smuggle in other code."""
    from patsy.eval import replace_bare_funcalls
    classes: dict[str, type] = {}

    def new_name(token):
        cls = getattr(NAMESPACE.get(token), "__patsy_stateful_transform__", None)
        if cls is None:
            return token
        name = f"_patsy_stobj{len(classes)}__{token}__"
        classes[name] = cls
        return name + ".transform"

    return replace_bare_funcalls(code, new_name), classes


@dataclass
class NamesUsed:
    columns: list            # [(name, position)]
    functions: list          # [(name, position)]


def expr_names(code: str, formula: str, position: int) -> NamesUsed:
    """Column names and called functions in a Python expression (Q('odd name') resolved),
    after :func:`check_expression` (a FormulaError for anything outside the namespace)."""
    tree = check_expression(code, formula, position)
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
    return NamesUsed(names, funcs)


def patsy_factor_names(rhs: str, formula: str, shift: int = 0) -> tuple[NamesUsed, ModelDesc]:
    """Names used by the factors of a Patsy right-hand side."""
    shift += _lead(rhs)
    try:
        desc = ModelDesc.from_formula(rhs)
    except PatsyError as e:
        raise _formula_error(e, formula, shift) from None
    cols, funcs = [], []
    for factor, code, pos in _factor_sources(desc, shift):
        names = expr_names(code, formula, pos)
        cols += names.columns
        funcs += names.functions
    return NamesUsed(cols, funcs), desc


def _factor_sources(desc: ModelDesc, shift: int):
    """(factor, its text as written, its position in the formula) per factor."""
    for term in desc.rhs_termlist:
        for factor in term.factors:
            origin = factor.origin
            if origin is None:
                yield factor, factor.code, None
            else:
                yield factor, origin.code[origin.start:origin.end], origin.start + shift


def formula_names(parsed: ParsedFormula) -> tuple[NamesUsed, NamesUsed, list[NamesUsed]]:
    """Names used by the fixed terms, the response and each random term of a formula,
    every expression checked against the closed namespace (nothing is evaluated)."""
    text = parsed.text
    shift = -1 if not parsed.response else 0
    fixed, _ = patsy_factor_names(patsy_rhs_text(text), text, shift)
    lhs_pos = len(text) - len(text.lstrip())
    resp = expr_names(parsed.response, text, lhs_pos) if parsed.response else NamesUsed([], [])
    random = [patsy_factor_names("~ " + t.expr, text, max(text.find(t.expr), 0) - 2)[0]
              for t in parsed.random]
    return fixed, resp, random


def _lead(s: str) -> int:
    """Patsy strips leading blanks before tokenizing: its positions shift by this much."""
    return len(s) - len(s.lstrip())


def _formula_error(e: PatsyError, formula: str, shift: int = 0) -> FormulaError:
    origin = getattr(e, "origin", None)
    msg = getattr(e, "message", str(e))
    pos = None if origin is None else max(origin.start + shift, 0)
    return FormulaError(msg, formula, pos)


def _non_numeric_culprit(frame: pd.DataFrame, code: str) -> str | None:
    try:
        names = expr_names(code, code, 0).columns
    except FormulaError:
        return None
    for name, _ in names:
        if name in frame.columns and not is_numeric(frame[name]):
            return name
    return None


def build_patsy(rhs, frame: pd.DataFrame, formula: str, shift: int = 0
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
            for _, code, pos in _factor_sources(desc, shift):
                check_expression(code, formula, pos, columns=frame.columns)
            info = patsy.design_matrix_builders([desc.rhs_termlist], lambda: iter([frame]),
                                                EVAL_ENV, NAAction(NA_types=[]))[0]
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
    names = [n for n, _ in expr_names(factor.code, factor.code, 0).columns if n in frame.columns]
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
                        f"{plain_value(level)!r}, which is not a level of the term {factor.code!r} "
                        f"(levels: {short_list(categories)})")
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


def random_design(term: RandomTerm, frame: pd.DataFrame, formula: str):
    """(design info, Z, term names) of a random term's expression."""
    shift = max(formula.find(term.expr), 0) - 2
    info, Z = build_patsy("~ " + term.expr, frame, formula, shift)
    names = tuple("(Intercept)" if n == "Intercept" else n for n in info.column_names)
    return info, Z, names

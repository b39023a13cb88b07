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
* Column checks (:mod:`impactglm.design.checks`, on the kept rows): a column no term can
  use (timedelta, complex, lists in cells, an object column mixing strings, numbers and
  booleans) is a DataError naming it; a categorical term with one level is a DataError
  (R: "contrasts can be applied only to factors with 2 or more levels"); a text column
  that is numeric except for a few values, and a ``^`` factor on a continuous float
  column, get a :class:`~impactglm.errors.DataWarning`.  Unused categories of pandas
  categoricals are dropped (R's ``drop.unused.levels``); small and nullable integer
  columns are widened to int64 before Patsy (``I(x8 * x8)`` does not wrap around).
* Formulas are evaluated in a fixed namespace, never the caller's frame, so that a
  saved model rebuilds the same columns anywhere: ``np``/``numpy``, Patsy's builtins
  (``C``, ``I``, ``Q``, ``center``, ``standardize``, ``scale``, ``bs``, ``cr``, ...), and
  the NumPy functions ``log, log2, log10, log1p, exp, expm1, sqrt``.
* Offsets: given as a column name, ``transform`` reads the column from the new data;
  given as an array at fit time, ``transform`` needs an ``offset=`` argument.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Sequence
import numpy as np
import pandas as pd


from .._util import unique_in_order
from ..containers import Design, FactorCodes, RandomBlock
from ..errors import ColumnNotFoundError, DataError, FormulaError
from ..families import get_family
from ..formula import parse_formula, ParsedFormula, patsy_rhs_text, RandomTerm
from .checks import (check_response_magnitude, check_single_level_terms,
                     warn_float_factor, warn_numeric_text)
from .levels import drop_unused_categories, factorize, group_codes, single_level_error
from .offsets import split_offset_columns
from .patsy import build_patsy, formula_names, is_function_ok, NAMESPACE, NamesUsed, random_design
from .response import encode_response
from .rows import as_frame, drop_transform_nan, finite_rows, KeptRows, NA_ACTIONS, row_label, select_rows, vector_argument
from .spec import categorize, design_info_to_dict, ModelSpec




# --------------------------------------------------------------------------- building blocks


def _family_name(family) -> str:
    """The family's name ("multinomial" or a name :func:`families.get_family` accepts)."""
    if isinstance(family, str) and family.strip().lower() == "multinomial":
        return "multinomial"
    return get_family(family).name


@dataclass
class _Columns:
    """The data columns each part of the formula reads."""

    fixed: list
    response: list
    random: list
    groups: list
    high_cardinality: list


def _formula_columns(parsed: ParsedFormula, data,
                     extra: Sequence[str]) -> tuple[pd.DataFrame, _Columns]:
    """The table (only the needed columns of an Arrow table) and the columns the formula
    uses; unknown names raise ColumnNotFoundError (closest name suggested) and unknown
    functions FormulaError with a caret, before any numerical work."""
    text = parsed.text
    fixed_names, resp_names, random_names = formula_names(parsed)
    groups = unique_in_order(v for t in parsed.random for v in t.group_vars)
    wanted = {n for names in [fixed_names, resp_names, *random_names] for n, _ in names.columns}
    wanted |= set(parsed.high_cardinality) | set(groups) | set(extra)
    frame = as_frame(data, sorted(wanted, key=str))
    columns = set(frame.columns)

    def check(names: NamesUsed) -> list[str]:
        for name, pos in names.functions:
            if name not in columns and not is_function_ok(name):
                raise FormulaError(f"unknown function {name!r}", text, pos)
        for name, _ in names.columns:
            if name not in columns and name not in NAMESPACE:
                raise ColumnNotFoundError(name, frame.columns)
        return unique_in_order(n for n, _ in names.columns if n in columns)

    for name in list(parsed.high_cardinality) + groups:
        if name not in columns:
            raise ColumnNotFoundError(name, frame.columns)
    return frame, _Columns(fixed=check(fixed_names), response=check(resp_names),
                           random=unique_in_order(c for r in random_names for c in check(r)),
                           groups=groups, high_cardinality=list(parsed.high_cardinality))


def _response_source(parsed: ParsedFormula, rows: KeptRows, columns: set):
    """(values, column or None, stored Patsy design of an LHS expression or None)."""
    lhs, text = parsed.response, parsed.text
    if not lhs:
        raise FormulaError("the formula needs a response: 'y ~ terms'", text, 0)
    name = _simple_name(lhs)
    if name in columns:
        return rows.frame[name], name, None
    lhs_pos = len(text) - len(text.lstrip())
    info, M = build_patsy("~0+" + lhs, rows.frame, text, lhs_pos - 3)
    if M.shape[1] != 1:
        raise DataError(f"the response {lhs!r} must be one numeric column, it gives "
                        f"{M.shape[1]} columns")
    return pd.Series(M[:, 0]), None, design_info_to_dict(info)


def _check_columns(frame: pd.DataFrame, used: Sequence[str], term_cols: Sequence[str],
                   factor_cols: Sequence[str]) -> None:
    """The warnings of :mod:`impactglm.design.checks` on the kept rows: numeric text with
    stray values and float ^ columns (unusable or mixed-type columns were refused by
    ``select_rows``, for new data too)."""
    for name in unique_in_order(list(term_cols) + list(factor_cols)):
        warn_numeric_text(frame[name], name)
    for name in factor_cols:
        warn_float_factor(frame[name], name)


def _high_cardinality_factors(frame: pd.DataFrame, names: Sequence[str]) -> list[FactorCodes]:
    factors = []
    for name in names:
        codes, levels, counts = factorize(frame[name], name)
        if len(levels) < 2:
            raise single_level_error(name, levels, "high-cardinality factor ")
        factors.append(FactorCodes(name, codes, levels, counts))
    return factors


def _random_blocks(frame: pd.DataFrame, terms: Sequence[RandomTerm], text: str):
    """RandomBlocks (``(x || g)`` split per column) and their plain-data specs."""
    blocks, specs = [], []
    for term in terms:
        codes, levels, _ = group_codes(frame, term.group_vars)
        if len(levels) < 2:
            raise single_level_error(term.group, levels, "grouping factor ")
        info, Z, names = random_design(term, frame, text)
        if not np.isfinite(Z).all():
            raise DataError(f"the random-effects term {str(term)!r} gives non-finite values")
        splits = [list(range(Z.shape[1]))] if term.correlated else [[j] for j in range(Z.shape[1])]
        for cols in splits:
            blocks.append(RandomBlock(term.group, codes, levels, np.ascontiguousarray(Z[:, cols]),
                                      tuple(names[j] for j in cols)))
            specs.append({"group_vars": list(term.group_vars), "expr": term.expr,
                          "correlated": term.correlated, "columns": cols,
                          "design": design_info_to_dict(info), "levels": levels})
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
    rhs_text = patsy_rhs_text(text)
    shift = -1 if not parsed.response else 0
    extra = [a for a in (weights, offset) if isinstance(a, str)]
    frame, cols = _formula_columns(parsed, data, extra)
    w_values, w_col, w_kind = vector_argument(weights, frame, "weights")
    o_values, o_col, o_kind = vector_argument(offset, frame, "offset")

    # 2. missing values: R's na.omit over the columns used
    used = unique_in_order(cols.response + cols.fixed + cols.high_cardinality + cols.random + cols.groups)
    rows = select_rows(frame, used, unique_in_order(cols.response + cols.fixed + cols.random),
                        {"weights": w_values, "offset": o_values}, na_action)

    # 3. fixed part (Patsy's columns), response; rows a transform made NaN are dropped
    terms_cols = unique_in_order(cols.fixed + cols.random)
    _check_columns(rows.frame, used, terms_cols, cols.high_cardinality)
    rows.frame = categorize(drop_unused_categories(rows.frame, terms_cols), terms_cols)
    fixed_info, X = build_patsy(rhs_text, rows.frame, text, shift)
    check_single_level_terms(fixed_info.factor_infos.items())
    col_names = tuple(fixed_info.column_names)
    y_source, resp_col, resp_design = _response_source(parsed, rows, set(frame.columns))
    ok = finite_rows(X, col_names, rows.labels, "design")
    if resp_col is None:
        ok &= finite_rows(y_source.to_numpy()[:, None], [parsed.response], rows.labels,
                           "response")
    if not ok.all():
        rows = drop_transform_nan(rows, ok, na_action)
        X, y_source = X[ok], y_source[ok].reset_index(drop=True)
    w_values, o_values = rows.arrays["weights"], rows.arrays["offset"]
    X, col_names, term_offset = split_offset_columns(X, col_names)      # offset(expr) terms
    if term_offset is not None:
        o_values = term_offset if o_values is None else o_values + term_offset
    if w_values is not None and (w_values < 0).any():
        i = int(np.argmax(w_values < 0))
        raise DataError(f"the weights must be non-negative; row {row_label(rows.labels, i)!r} "
                        f"has {w_values[i]:g}")
    y, info, classes = encode_response(y_source, fam, parsed.response, rows.labels, w_values)
    check_response_magnitude(y, parsed.response, fam)

    # 4. ^ factors and random-effects blocks
    factors = _high_cardinality_factors(rows.frame, cols.high_cardinality)
    blocks, random_specs = _random_blocks(rows.frame, parsed.random, text)

    n = len(rows.frame)
    spec = ModelSpec(
        formula=text, family=fam, response=parsed.response, response_column=resp_col,
        response_design=resp_design, response_info=info, classes=classes,
        fixed_design=design_info_to_dict(fixed_info), fixed_columns=tuple(cols.fixed),
        factor_names=tuple(cols.high_cardinality), factor_levels=tuple(f.levels for f in factors),
        random_terms=tuple(random_specs), weights=w_col, weights_kind=w_kind,
        offset=o_col, offset_kind=o_kind, na_action=na_action)
    return Design(
        X=np.ascontiguousarray(X, dtype=np.float64), column_names=col_names, y=y,
        weights=np.ones(n) if w_values is None else np.ascontiguousarray(w_values),
        offset=np.zeros(n) if o_values is None else np.ascontiguousarray(o_values),
        factors=tuple(factors), random=tuple(blocks), spec=spec, n_dropped=rows.n_dropped,
        row_labels=np.asarray(rows.labels))




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

"""The closed namespace of formulas: what an expression in a formula may name.

A formula is text that a user (or a model file from anywhere) supplies, and Patsy
evaluates its terms with Python's ``eval``.  So every expression is checked on its
parsed AST (:func:`check_expression`) before anything is evaluated, and Patsy
evaluates in :class:`ClosedEnvironment` (no Python builtins at all), which checks
once more every string it is asked to evaluate.  What may appear:

* **names**: the data's columns; the functions of :data:`FUNCTIONS` (``I``, ``Q``,
  ``C``, ``center``, ``standardize``, ``scale``, ``bs``, ``cr``, ``cc``, ``te``,
  ``log``, ``log2``, ``log10``, ``log1p``, ``exp``, ``expm1``, ``sqrt``, ``offset``); the
  contrasts of :data:`CONTRASTS` (``Treatment``, ``Sum``, ``Helmert``, ``Poly``,
  ``Diff``); ``True``, ``False``, ``None``.  No Python internal (``__import__``,
  ``__builtins__``, ``__class__``, ...; a column may still be called ``__y__``).
* **NumPy**: ``np.<name>`` / ``numpy.<name>`` for the names in :data:`NUMPY_NAMES`
  (every NumPy ufunc, e.g. ``np.log``, ``np.abs``, ``np.maximum``, ``np.isfinite``;
  plus ``np.clip``, ``np.where``, ``np.round``, ``np.around`` and the constants
  ``np.pi``, ``np.e``, ``np.nan``, ``np.inf``).  No other attribute access at all.
* **literals**: numbers, ``True``/``False``/``None``, lists and tuples of allowed
  expressions; **string literals only as arguments of** ``Q``, ``C`` (after the
  data argument), the contrasts and the spline functions (``C(k, Treatment('b'))``,
  ``C(k, levels=['b', 'a'])``, ``Q('odd name')``, ``cr(x, df=4, constraints='center')``).
  A bare string term such as ``y ~ x + 'g'`` is an error (Patsy would silently drop it).
* **operators**: arithmetic, comparison, boolean, bitwise; function calls with
  positional and keyword arguments (no ``*args``/``**kwargs``).  Lists and tuples only as
  call arguments (``[0] * 10**9`` would exhaust memory), and a power of plain numbers only
  with an exponent up to 1024 (``10**10**10`` would never finish).

Everything else (lambda, comprehensions, subscripts, f-strings, ``:=``, conditional
expressions, dict/set displays, attribute chains) is a :class:`FormulaError` naming
the offending piece, with a caret when the position in the formula is known.
"""
from __future__ import annotations

import ast
import builtins
import difflib
import re
from typing import Collection

import numpy as np
from patsy import EvalEnvironment
from patsy.eval import VarLookupDict

from ..errors import FormulaError

FUNCTIONS = frozenset({"I", "Q", "C", "center", "standardize", "scale", "bs", "cr", "cc", "te",
                       "log", "log2", "log10", "log1p", "exp", "expm1", "sqrt", "offset"})
CONTRASTS = frozenset({"Treatment", "Sum", "Helmert", "Poly", "Diff"})
NUMPY_MODULES = frozenset({"np", "numpy"})
NUMPY_EXTRAS = ("clip", "where", "round", "around")
NUMPY_CONSTANTS = ("pi", "e", "nan", "inf")
NUMPY_NAMES = frozenset(
    [n for n in dir(np) if not n.startswith("_") and isinstance(getattr(np, n), np.ufunc)]
    + list(NUMPY_EXTRAS) + list(NUMPY_CONSTANTS))
# calls whose (non-data) arguments may be string literals
STRING_ARG_CALLS = frozenset({"Q", "C", "bs", "cr", "cc", "te"}) | CONTRASTS
# Patsy's stateful-transform objects in its generated eval code: _patsy_stobj0__center__
_STOBJ = re.compile(r"_patsy_stobj\d+__[A-Za-z_][A-Za-z0-9_]*__")
# Python's own double-underscore names (a column may start with "__", e.g. "__y__", but a
# formula may never name these); attributes are refused anyway
_PYTHON_DUNDERS = frozenset(n for n in dir(builtins) if n.startswith("__")) | frozenset(
    {"__builtins__", "__class__", "__dict__", "__globals__", "__code__", "__subclasses__",
     "__mro__", "__base__", "__bases__", "__getattribute__", "__reduce__", "__loader__",
     "__spec__", "__file__", "__name__", "__self__", "__closure__", "__func__", "__init__",
     "__call__", "__module__", "__qualname__", "__annotations__", "__kwdefaults__",
     "__defaults__", "__getattr__", "__setattr__", "__delattr__", "__new__", "__doc__"})
_STOBJ_METHODS = frozenset({"transform", "memorize_chunk"})

_FORBIDDEN = {
    ast.Lambda: "a lambda", ast.ListComp: "a comprehension", ast.SetComp: "a comprehension",
    ast.DictComp: "a comprehension", ast.GeneratorExp: "a generator expression",
    ast.Subscript: "indexing ('x[...]')", ast.JoinedStr: "an f-string",
    ast.NamedExpr: "an assignment (':=')", ast.Starred: "'*' unpacking",
    ast.IfExp: "a conditional expression", ast.Dict: "a dict", ast.Set: "a set",
    ast.Await: "await", ast.Yield: "yield", ast.YieldFrom: "yield", ast.Slice: "a slice",
}
_OPERATORS = (ast.operator, ast.unaryop, ast.cmpop, ast.boolop, ast.expr_context)
_PLAIN = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Compare, ast.BoolOp, ast.List, ast.Tuple)


def allowed_names() -> list[str]:
    """Every bare name a formula may use besides the data's columns (for the docs)."""
    return sorted(FUNCTIONS | CONTRASTS)


class _Checker:
    """One walk over an expression's AST; raises FormulaError at the first violation."""

    def __init__(self, code: str, formula: str, position: int, columns: Collection | None,
                 internal: bool):
        self.code, self.formula, self.position = code, formula, position
        self.columns = None if columns is None else {str(c) for c in columns}
        self.internal = internal

    def fail(self, message: str, node: ast.AST | None = None):
        off = getattr(node, "col_offset", 0) if node is not None else 0
        pos = self.position + off if self.position is not None else None
        raise FormulaError(message, self.formula, pos)

    def is_column(self, name: str) -> bool:
        return self.columns is not None and name in self.columns

    def visit(self, node: ast.AST, string_ok: bool = False) -> None:
        kind = _FORBIDDEN.get(type(node))
        if kind is not None:
            self.fail(f"{kind} is not allowed in a formula: {self.segment(node)!r}", node)
        if isinstance(node, ast.Constant):
            self.constant(node, string_ok)
        elif isinstance(node, ast.Name):
            self.name(node)
        elif isinstance(node, ast.Attribute):
            self.attribute(node, called=False)
        elif isinstance(node, ast.Call):
            self.call(node)
        elif isinstance(node, (ast.List, ast.Tuple)):
            for elt in node.elts:
                self.visit(elt, string_ok)
        elif isinstance(node, _PLAIN):
            if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Pow, ast.LShift)):
                self.power(node)
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.List, ast.Tuple)):
                    self.fail(f"a list or tuple in arithmetic is not allowed in a formula: "
                              f"{self.segment(node)!r}", node)
                if not isinstance(child, _OPERATORS):
                    self.visit(child)
        else:
            self.fail(f"{type(node).__name__} is not allowed in a formula: "
                      f"{self.segment(node)!r}", node)

    def power(self, node: ast.BinOp) -> None:
        """Python evaluates powers (and left shifts) of integer literals exactly
        (``10**10**10`` would run for ever): without a column both sides must be plain
        numbers, the exponent (shift) at most 1024."""
        if _has_name(node):
            return
        base, exp = node.left, node.right
        if isinstance(exp, ast.UnaryOp) and isinstance(exp.op, (ast.USub, ast.UAdd)):
            exp = exp.operand
        if not (isinstance(base, ast.Constant) and isinstance(exp, ast.Constant)
                and isinstance(exp.value, (int, float)) and abs(exp.value) <= 1024):
            self.fail(f"the power {self.segment(node)!r} of numbers is too large or nested; "
                      "write the number", node)

    def segment(self, node: ast.AST) -> str:
        return ast.get_source_segment(self.code, node) or type(node).__name__

    def constant(self, node: ast.Constant, string_ok: bool) -> None:
        v = node.value
        if isinstance(v, (str, bytes)):
            if not string_ok:
                text = v if isinstance(v, str) else repr(v)
                self.fail(f"the string {v!r} is not a term or a value of a formula; for the "
                          f"column write {text} or Q({text!r})", node)
        elif v is Ellipsis or isinstance(v, complex):
            self.fail(f"the constant {self.segment(node)!r} is not allowed in a formula", node)

    def name(self, node: ast.Name) -> None:
        name = node.id
        self.no_dunder(name, node)
        if self.is_column(name) or name in CONTRASTS or name in ("True", "False", "None"):
            return
        if name in FUNCTIONS or name in NUMPY_MODULES:
            if self.columns is not None:
                what = "NumPy's module" if name in NUMPY_MODULES else "a function"
                self.fail(f"{name!r} is {what}, not a column of the data (call it on a "
                          f"column, e.g. {name if name not in NUMPY_MODULES else 'np.log'}(x))",
                          node)
            return
        # any other name must be a column (checked against the data when it is known)

    def no_dunder(self, name: str, node: ast.AST) -> None:
        if name in _PYTHON_DUNDERS or (_STOBJ.fullmatch(name) and not self.internal):
            self.fail(f"the name {name!r} is not allowed in a formula (it is one of Python's "
                      "internals)", node)

    def attribute(self, node: ast.Attribute, called: bool) -> None:
        base = node.value
        dotted = self.segment(node)
        if isinstance(base, ast.Name) and base.id in NUMPY_MODULES and not self.is_column(base.id):
            self.no_dunder(node.attr, node)
            if node.attr in NUMPY_NAMES and (called or node.attr in NUMPY_CONSTANTS):
                return
            self.fail(f"{dotted!r} is not allowed in a formula: of NumPy only the elementwise "
                      "functions (np.log, np.exp, np.abs, np.maximum, ..., every ufunc, "
                      "np.clip, np.where, np.round) and np.pi/np.e/np.nan/np.inf", node)
        if (self.internal and isinstance(base, ast.Name) and _STOBJ.fullmatch(base.id)
                and node.attr in _STOBJ_METHODS and called):
            return
        hint = ""
        if self.columns is not None and dotted in self.columns:
            hint = f"; for the column {dotted!r} write Q({dotted!r})"
        self.fail(f"{dotted!r}: a formula cannot access attributes (only np.<function> for "
                  f"NumPy's elementwise functions){hint}", node)

    def call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Attribute):
            self.attribute(func, called=True)
            stobj = func.value.id if isinstance(func.value, ast.Name) else ""
            name = stobj.split("__")[1] if _STOBJ.fullmatch(stobj) else None
        elif isinstance(func, ast.Name):
            name = func.id
            self.no_dunder(name, func)
            if name not in FUNCTIONS and name not in CONTRASTS:
                if self.is_column(name):
                    self.fail(f"{name!r} is a column of the data, not a function", func)
                near = difflib.get_close_matches(name, allowed_names(), n=1, cutoff=0.6)
                hint = f"; did you mean {near[0]!r}?" if near else ""
                self.fail(f"unknown function {name!r}{hint} (a formula may call "
                          f"{', '.join(sorted(FUNCTIONS))}, the contrasts and np.<ufunc>)",
                          func)
        else:
            self.fail(f"calling {self.segment(func)!r} is not allowed in a formula", func)
        strings = name in STRING_ARG_CALLS
        for i, arg in enumerate(node.args):
            if name == "Q":
                if not (i == 0 and isinstance(arg, ast.Constant) and isinstance(arg.value, str)
                        and len(node.args) == 1 and not node.keywords):
                    self.fail("Q() takes one quoted column name: Q('odd name')", node)
                self.no_dunder(arg.value, arg)
                continue
            self.visit(arg, string_ok=strings and not (i == 0 and name not in CONTRASTS))
        for kw in node.keywords:
            if kw.arg is None:
                self.fail(f"'**' unpacking is not allowed in a formula: {self.segment(node)!r}",
                          kw.value)
            self.no_dunder(kw.arg, kw.value)
            self.visit(kw.value, string_ok=strings)


def _has_name(node: ast.AST) -> bool:
    return any(isinstance(n, (ast.Name, ast.Attribute, ast.Call)) for n in ast.walk(node))


def check_expression(code: str, formula: str | None = None, position: int | None = 0,
                     columns: Collection | None = None, internal: bool = False) -> ast.Expression:
    """Parse ``code`` (one Python expression of a formula) and check it against the closed
    namespace (module docstring); return the AST.

    ``formula``/``position``: the whole formula and where ``code`` starts in it, for the
    caret.  ``columns``: the data's columns when known (then a bare function name that
    is no column, like ``y ~ x + log``, is an error; unknown columns are left to the
    caller, which suggests the closest one).  ``internal``: also accept Patsy's
    generated ``_patsy_stobjN__name__.transform(...)`` calls (its eval code).
    """
    formula = code if formula is None else formula
    stripped = code.strip()
    lead = len(code) - len(code.lstrip())
    pos = None if position is None else position + lead
    try:
        tree = ast.parse(stripped, mode="eval")
    except SyntaxError as e:
        off = (e.offset or 1) - 1
        raise FormulaError(f"invalid expression {stripped!r}", formula,
                           None if pos is None else pos + off) from None
    _Checker(stripped, formula, pos, columns, internal).visit(tree.body)
    return tree


class ClosedEnvironment(EvalEnvironment):
    """Patsy's EvalEnvironment without Python's builtins: ``eval`` sees only the given
    namespaces (and the data), and every expression passes :func:`check_expression`
    first (Patsy's eval code included).  ``subset`` keeps the class (Patsy's returns a
    plain EvalEnvironment, whose ``eval`` would see the builtins again)."""

    def eval(self, expr, source_name="<string>", inner_namespace={}):  # noqa: B006 - Patsy's API
        check_expression(expr, internal=True)
        code = compile(expr, source_name, "eval", self.flags, False)
        return eval(code, {"__builtins__": {}},                     # noqa: S307 - checked above
                    VarLookupDict([inner_namespace] + self._namespaces))

    def subset(self, names):
        vld = VarLookupDict(self._namespaces)
        return ClosedEnvironment([{name: vld[name] for name in names}], self.flags)

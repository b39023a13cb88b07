"""The formula parser (impactglm/formula.py): what goes to Patsy, what is taken out, carets."""
from __future__ import annotations

import pytest

from impactglm.errors import FormulaError
from impactglm.formula import ParsedFormula, RandomTerm, parse_formula


@pytest.mark.parametrize("text, response, fixed, hc, random", [
    ("y ~ x", "y", "x", (), ()),
    ("y ~ x + C(k) + np.log(z)", "y", "x + C(k) + np.log(z)", (), ()),
    ("y ~ ^g", "y", "1", ("g",), ()),
    ("y ~ x + ^user + ^movie", "y", "x", ("user", "movie"), ()),
    ("y ~ ^user + x - 1", "y", "x - 1", ("user",), ()),
    ("y ~ 0 + ^g", "y", "0", ("g",), ()),
    ("y ~ I(x^2) + ^g", "y", "I(x^2)", ("g",), ()),          # ^ inside parentheses: Patsy's
    ("y ~ x + ^Q('odd name')", "y", "x", ("odd name",), ()),
    ("y ~ x + ^`odd name`", "y", "x", ("odd name",), ()),
    ("np.log(y) ~ x*k", "np.log(y)", "x*k", (), ()),
    ("y ~ x + I(1e-3 * x)", "y", "x + I(1e-3 * x)", (), ()),
    ("Reaction ~ Days + (Days | Subject)", "Reaction", "Days", (),
     (RandomTerm("Days", ("Subject",)),)),
    ("y ~ (1|s) + (1|d)", "y", "1", (), (RandomTerm("1", ("s",)), RandomTerm("1", ("d",)))),
    ("y ~ x + (x || g)", "y", "x", (), (RandomTerm("x", ("g",), correlated=False),)),
    ("y ~ (1 | a:b)", "y", "1", (), (RandomTerm("1", ("a", "b")),)),
    ("y ~ (1 | a/b)", "y", "1", (), (RandomTerm("1", ("a",)), RandomTerm("1", ("a", "b")))),
    ("y ~ (0 + x | g) + (1 | g)", "y", "1", (),
     (RandomTerm("0 + x", ("g",)), RandomTerm("1", ("g",)))),
])
def test_valid_formulas(text, response, fixed, hc, random):
    p = parse_formula(text)
    assert isinstance(p, ParsedFormula) and p.text == text
    assert p.response == response
    assert p.fixed == fixed
    assert p.high_cardinality == hc
    assert p.random == random
    assert p.patsy_formula == f"{response} ~ {fixed}"


@pytest.mark.parametrize("text, expected", [
    ("y ~ x", True), ("y ~ x - 1", False), ("y ~ 0 + x", False), ("y ~ x + 0", False),
    ("y ~ ^g", True), ("y ~ 0 + ^g", False), ("y ~ x - 1 + 1", True),
])
def test_has_intercept(text, expected):
    assert parse_formula(text).has_intercept is expected


def test_random_as_high_cardinality_and_group_names():
    p = parse_formula("y ~ x + ^u + ^m + (1 | a:b)").random_as_high_cardinality()
    assert p.high_cardinality == ()
    assert [t.group for t in p.random] == ["a:b", "u", "m"]
    assert str(p.random[0]) == "(1 | a:b)"
    assert str(RandomTerm("x", ("g",), correlated=False)) == "(x || g)"


def test_formula_without_response_when_allowed():
    p = parse_formula("~ x + ^g", require_response=False)
    assert p.response == "" and p.patsy_formula == "~ x" and p.high_cardinality == ("g",)


# caret positions: (formula, the index the caret must point at, a phrase of the message)
BROKEN = [
    ("y ~ x + (z", 8, "unmatched '('"),
    ("y ~ x + z)", 9, "unmatched ')'"),
    ("y ~ x ~ z", 6, "at most one '~'"),
    ("y + x", 5, "needs a response"),
    (" ~ x", 0, "response"),
    ("y ~ ", 4, "empty"),
    ("y ~ x + + z", 8, "missing between"),
    ("y ~ x +", 6, "ends with an operator"),
    ("y ~ x - ^g", 6, "cannot be removed"),
    ("y ~ x - (1|g)", 6, "cannot be removed"),
    ("y ~ x + ^1g", 8, "column name"),
    ("y ~ x:^g", 6, "must start a term"),
    ("y ~ x + ^g + ^g", 13, "appears twice"),
    ("y ~ (1 | )", 8, "no grouping factor"),
    ("y ~ ( | g)", 5, "nothing left"),
    ("y ~ (1 | g + h)", 8, "bad grouping factor"),
    ("y ~ (1 | g | h)", 11, "one '|'"),
    ("y ~ Q('x", 6, "unclosed quote"),
]


@pytest.mark.parametrize("text, position, phrase", BROKEN)
def test_broken_formulas_point_at_the_problem(text, position, phrase):
    with pytest.raises(FormulaError) as e:
        parse_formula(text)
    err = e.value
    assert phrase in err.reason
    assert err.formula == text
    assert err.position == position
    lines = str(err).splitlines()
    # the caret line puts '^' under formula[position] (both lines indented by 4)
    assert lines[-2] == "    " + text
    assert lines[-1] == "    " + " " * position + "^"


def test_formula_must_be_a_string():
    with pytest.raises(FormulaError, match="must be a string"):
        parse_formula(42)

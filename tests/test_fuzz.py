"""Hypothesis property tests: the formula parser, the design builder and the fit path.

Each property counts the examples it ran in ``EXAMPLES``; the counts are printed in
the pytest terminal summary (``-rA`` not needed: the module fixture writes them) so
that the issue note can report them.

Part 1  formula parser: random valid formulas parse, their parts agree with what
        was generated, and re-assembling the parts gives an equivalent formula;
        random strings either parse or raise FormulaError, never another exception.
Part 2  design builder: random frames (NaN, empty strings, huge and tiny numbers,
        unicode level names, categorical and boolean dtypes) give a Design or an
        ImpactGLMError, never another exception, and never modify the frame.
Part 3  fit path: random small data give a result whose gradient certificate holds,
        or an ImpactGLMError.
"""
from __future__ import annotations

import keyword
import re
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from impactglm.errors import FormulaError, ImpactGLMError
from impactglm.formula import ParsedFormula, RandomTerm, parse_formula

EXAMPLES: Counter = Counter()

FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@pytest.fixture(scope="module", autouse=True)
def _report_counts(request):
    """Print the number of examples each property ran (for the issue note)."""
    yield
    lines = [f"  {name}: {n}" for name, n in sorted(EXAMPLES.items())]
    total = sum(v for k, v in EXAMPLES.items() if "->" not in k)
    text = f"hypothesis examples run ({total} total):\n" + "\n".join(lines)
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if capture is not None:
        with capture.global_and_fixture_disabled():
            print("\n" + text)
    else:  # pragma: no cover
        print(text)


# =========================================================================== part 1

_RESERVED = set(keyword.kwlist) | {"C", "I", "Q", "np", "center", "standardize", "scale"}
names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,5}", fullmatch=True).filter(
    lambda s: s not in _RESERVED)
space = st.sampled_from(["", " ", "  "])


@st.composite
def fixed_terms(draw) -> str:
    """One ordinary (Patsy) term."""
    a, b = draw(names), draw(names)
    return draw(st.sampled_from([
        a, f"C({a})", f"np.log({a})", f"I({a}**2)", f"I({a} - 1e-3)", f"{a}:{b}",
        f"{a}*{b}", f"C({a}):{b}", f"center({a})",
    ]))


@st.composite
def random_terms(draw) -> tuple[str, list[RandomTerm]]:
    """One lme4 term ``(expr | g)`` and the RandomTerms it must expand to."""
    expr = draw(st.sampled_from(["1", draw(names), f"1 + {draw(names)}", f"0 + {draw(names)}"]))
    double = draw(st.booleans())
    a, b, c = draw(names), draw(names), draw(names)
    kind = draw(st.sampled_from(["plain", "inter", "nest", "nest_inter"]))
    if kind == "plain":
        group, groups = a, [(a,)]
    elif kind == "inter":
        group, groups = f"{a}:{b}", [(a, b)]
    elif kind == "nest":
        group, groups = f"{a}/{b}", [(a,), (a, b)]
    else:
        group, groups = f"{a}:{b}/{c}", [(a, b), (a, b, c)]
    s0, s1 = draw(space), draw(space)
    text = f"({expr}{s0}{'||' if double else '|'}{s1}{group})"
    return text, [RandomTerm(expr, g, correlated=not double) for g in groups]


@st.composite
def valid_formulas(draw):
    """A valid formula and the parts it must parse into."""
    response = draw(st.sampled_from([draw(names), f"np.log({draw(names)})"]))
    fixed = draw(st.lists(fixed_terms(), max_size=4))
    hc = draw(st.lists(names, max_size=3, unique=True))
    rand = draw(st.lists(random_terms(), max_size=2))
    intercept = draw(st.sampled_from(["", "-1", "0", "1"]))
    assume(fixed or hc or rand or intercept)
    pieces = [("fixed", t) for t in fixed] + [("hc", f"^{g}") for g in hc] + \
             [("rand", r[0]) for r in rand]
    order = draw(st.permutations(range(len(pieces)))) if pieces else []
    pieces = [pieces[i] for i in order]
    text = ""
    for i, (_, t) in enumerate(pieces):
        text += t if i == 0 else f"{draw(space)}+{draw(space)}{t}"
    if intercept == "-1":
        text = f"{text} - 1" if text else "-1"
    elif intercept:
        text = f"{intercept} + {text}" if text else intercept
    hc_order = [t[1:] for kind, t in pieces if kind == "hc"]
    rand_order = [r for kind, t in pieces if kind == "rand" for r in dict(rand)[t]]
    fixed_order = [t for kind, t in pieces if kind == "fixed"]
    return f"{response}{draw(space)}~{draw(space)}{text}", response, fixed_order, hc_order, \
        rand_order, intercept


def _patsy_rhs_terms(parsed: ParsedFormula):
    """The set of Patsy terms (and intercept flag) of the fixed part."""
    from patsy import ModelDesc
    desc = ModelDesc.from_formula(parsed.patsy_formula)
    return frozenset(desc.rhs_termlist), [t.name() for t in desc.lhs_termlist]


def reassemble(parsed: ParsedFormula) -> str:
    """Formula text from the parsed parts (the inverse of parse_formula)."""
    parts = [parsed.fixed] + [f"^{g}" for g in parsed.high_cardinality] + \
            [str(r) for r in parsed.random]
    return f"{parsed.response} ~ " + " + ".join(parts)


@FUZZ
@given(valid_formulas())
def test_valid_formulas_parse_and_round_trip(case):
    EXAMPLES["formula: valid, round trip"] += 1
    text, response, fixed, hc, rand, intercept = case
    parsed = parse_formula(text)
    assert parsed.response == response
    assert list(parsed.high_cardinality) == hc
    assert list(parsed.random) == rand
    fixed_split = [t.strip().lstrip("+").strip() for t in re.split(r"\s\+\s|\s\+|\+\s", parsed.fixed)]
    for term in fixed:
        assert term in parsed.fixed
    assert parsed.has_intercept == (intercept not in ("-1", "0")), (text, parsed)
    assert fixed_split  # never empty: "1" when only special terms
    # Patsy accepts what is left, and the round trip is the same model.
    terms, lhs = _patsy_rhs_terms(parsed)
    again = parse_formula(reassemble(parsed))
    assert again.response == parsed.response
    assert again.high_cardinality == parsed.high_cardinality
    assert again.random == parsed.random
    assert again.has_intercept == parsed.has_intercept
    assert _patsy_rhs_terms(again) == (terms, lhs)


_ALPHABET = "yxgab01 ^|()~+-*:/.,'\"`CIQ_e\t"


@FUZZ
@given(st.text(alphabet=_ALPHABET, max_size=30))
def test_random_strings_parse_or_raise_formula_error(text):
    EXAMPLES["formula: random strings"] += 1
    try:
        parsed = parse_formula(text)
    except FormulaError as exc:
        assert str(exc)  # a message, with a caret when a position is known
        if exc.position is not None:
            assert 0 <= exc.position <= len(text)
        return
    assert isinstance(parsed, ParsedFormula)
    assert parsed.fixed.strip()


@FUZZ
@given(st.text(max_size=20), st.booleans())
def test_unicode_strings_never_crash(text, require_response):
    EXAMPLES["formula: unicode strings"] += 1
    try:
        parse_formula(text, require_response=require_response)
    except FormulaError:
        pass


@st.composite
def broken_formulas(draw):
    """A valid formula with one mutation that makes it certainly invalid."""
    text = draw(valid_formulas())[0]
    lhs, rhs = text.split("~", 1)
    a = draw(names)
    mutation = draw(st.sampled_from([
        "unclosed", "extra_close", "two_tildes", "no_lhs", "trailing_op", "hc_interaction",
        "minus_hc", "empty_bar", "empty_group", "bad_group", "triple_bar", "double_op",
        "bad_hc_name", "duplicate_hc", "minus_random", "empty_rhs", "bare_bar",
    ]))
    bad = {
        "unclosed": f"{lhs}~ ({rhs}",
        "extra_close": f"{lhs}~ {rhs})",
        "two_tildes": f"{lhs}~ {rhs} ~ {a}",
        "no_lhs": f"~ {rhs}",
        "trailing_op": f"{lhs}~ {rhs} +",
        "hc_interaction": f"{lhs}~ {rhs} + {a}:^{a}",
        "minus_hc": f"{lhs}~ {rhs} - ^{a}",
        "empty_bar": f"{lhs}~ {rhs} + ( | {a})",
        "empty_group": f"{lhs}~ {rhs} + (1 | )",
        "bad_group": f"{lhs}~ {rhs} + (1 | {a}+1)",
        "triple_bar": f"{lhs}~ {rhs} + (1 | {a} | {a})",
        "double_op": f"{lhs}~ {rhs} + + {a}",
        "bad_hc_name": f"{lhs}~ {rhs} + ^({a} + 1)",
        "duplicate_hc": f"{lhs}~ {rhs} + ^{a} + ^{a}",
        "minus_random": f"{lhs}~ {rhs} - (1|{a})",
        "empty_rhs": f"{lhs}~   ",
        "bare_bar": f"{lhs}~ {rhs} + {a} | {a}",
        "random_times": f"{lhs}~ {rhs} + (1 | {a})*{a}",
        "random_in_parens": f"{lhs}~ {rhs} + ((1 | {a}))",
    }[mutation]
    return mutation, bad


@FUZZ
@given(broken_formulas())
def test_broken_formulas_raise_formula_error(case):
    EXAMPLES["formula: mutated invalid"] += 1
    mutation, text = case
    with pytest.raises(FormulaError):
        parse_formula(text)


# =========================================================================== part 2

_WEIRD_FLOATS = [0.0, -0.0, 1.0, -1.5, 1e300, -1e300, 1e-300, 5e-324, np.nan, np.inf, -np.inf,
                 2.0 ** 53, 1e-8]
_WEIRD_STRINGS = ["a", "b", "", " ", "é", "ß", "日本", "😀", "NaN", "None", "a b", "0", "1.5",
                  "x\ny", "'", '"', "\\"]


@st.composite
def numeric_columns(draw, n):
    kind = draw(st.sampled_from(["float", "int", "bool", "weird", "nullable_int", "object_num"]))
    if kind == "float":
        return pd.Series(draw(st.lists(st.floats(allow_nan=True, allow_infinity=False,
                                                 width=64), min_size=n, max_size=n)))
    if kind == "int":
        return pd.Series(draw(st.lists(st.integers(-10**12, 10**12), min_size=n, max_size=n)))
    if kind == "bool":
        return pd.Series(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    if kind == "nullable_int":
        vals = draw(st.lists(st.one_of(st.none(), st.integers(-5, 5)), min_size=n, max_size=n))
        return pd.Series(vals, dtype="Int64")
    if kind == "object_num":
        vals = draw(st.lists(st.one_of(st.none(), st.integers(-5, 5), st.floats(-3, 3)),
                             min_size=n, max_size=n))
        return pd.Series(vals, dtype=object)
    return pd.Series(draw(st.lists(st.sampled_from(_WEIRD_FLOATS), min_size=n, max_size=n)))


@st.composite
def level_columns(draw, n):
    kind = draw(st.sampled_from(["str", "category", "int", "bool", "object_mixed", "float_na",
                                 "text"]))
    if kind in ("str", "category"):
        vals = draw(st.lists(st.sampled_from(_WEIRD_STRINGS + [None]), min_size=n, max_size=n))
        s = pd.Series(vals, dtype="str" if draw(st.booleans()) else object)
        return s.astype("category") if kind == "category" else s
    if kind == "text":
        return pd.Series(draw(st.lists(st.text(max_size=3), min_size=n, max_size=n)))
    if kind == "int":
        return pd.Series(draw(st.lists(st.integers(-3, 3), min_size=n, max_size=n)))
    if kind == "bool":
        return pd.Series(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    if kind == "float_na":
        return pd.Series(draw(st.lists(st.sampled_from([1.0, 2.0, np.nan, 1e300]),
                                       min_size=n, max_size=n)))
    vals = draw(st.lists(st.sampled_from(["a", 1, 2.5, None, True, "é"]), min_size=n, max_size=n))
    return pd.Series(vals, dtype=object)


@st.composite
def random_frames(draw):
    """A small frame of awkward columns and a formula over some of them."""
    n = draw(st.integers(0, 12))
    frame = pd.DataFrame({
        "y": draw(st.one_of(numeric_columns(n), level_columns(n))),
        "x": draw(numeric_columns(n)),
        "k": draw(level_columns(n)),
        "g": draw(level_columns(n)),
        "h": draw(level_columns(n)),
    })
    terms = draw(st.lists(st.sampled_from(["x", "C(k)", "^g", "^h", "np.log(x)", "I(x**2)",
                                           "k", "x:C(k)", "(1|g)", "(x||h)", "-1"]),
                          min_size=1, max_size=4, unique=True))
    family = draw(st.sampled_from(["gaussian", "binomial", "poisson", "gamma", "multinomial"]))
    na_action = draw(st.sampled_from(["drop", "raise"]))
    use_weights = draw(st.sampled_from([None, "x", "array"]))
    weights = None if use_weights is None else (
        "x" if use_weights == "x" else np.asarray(draw(st.lists(
            st.sampled_from([0.0, 1.0, 2.5, np.nan, -1.0]), min_size=n, max_size=n))))
    return frame, "y ~ " + " + ".join(terms), family, na_action, weights


@settings(max_examples=int(__import__("os").environ.get("FUZZ_N", 250)), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.data_too_large])
@given(random_frames())
def test_design_builder_gives_a_design_or_an_impactglm_error(case):
    from impactglm.design.build import build_design
    EXAMPLES["design: random frames"] += 1
    frame, formula, family, na_action, weights = case
    before = frame.copy(deep=True)
    try:
        design = build_design(formula, frame, family=family, weights=weights,
                              na_action=na_action)
    except ImpactGLMError as exc:
        assert str(exc)
        EXAMPLES["design: random frames -> ImpactGLMError"] += 1
    else:
        EXAMPLES["design: random frames -> Design"] += 1
        n = design.X.shape[0]
        assert design.X.dtype == np.float64 and design.X.flags.c_contiguous
        assert np.all(np.isfinite(design.X))
        assert len(design.y) == len(design.weights) == len(design.offset) == n
        assert n + design.n_dropped == len(frame)
        assert np.all(np.isfinite(design.weights)) and np.all(design.weights >= 0)
        for f in design.factors:
            assert f.codes.dtype == np.int32 and len(f.codes) == n
            assert f.codes.min() >= 0 and f.codes.max() < len(f.levels)
            assert int(f.counts.sum()) == n
        # the saved spec rebuilds the design on new data (here: the same rows, shuffled)
        new = frame.sample(frac=1.0, random_state=0)
        try:
            nd = design.spec.transform(new)
        except ImpactGLMError:
            EXAMPLES["design: spec.transform -> ImpactGLMError"] += 1
        else:
            assert nd.X.shape[1] == design.X.shape[1] and np.all(np.isfinite(nd.X))
            for codes in nd.codes:
                assert codes.min(initial=0) >= -1
        pd.testing.assert_frame_equal(new.loc[frame.index], before)
    pd.testing.assert_frame_equal(frame, before)   # never mutates the caller's data


# =========================================================================== part 3


@st.composite
def small_fits(draw):
    """Random small data for a ^ fit: sizes, level counts, weights, outcomes, priors."""
    n = draw(st.integers(2, 60))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    family = draw(st.sampled_from(["binomial", "poisson", "gaussian"]))
    q1 = draw(st.integers(1, n))
    two = draw(st.booleans())
    x_scale = draw(st.sampled_from([1.0, 1e-6, 1e6]))
    frame = pd.DataFrame({"x": rng.normal(size=n) * x_scale,
                          "g": rng.integers(0, q1, n),
                          "h": rng.integers(0, draw(st.integers(1, n)), n).astype(str)})
    eta = rng.normal(size=q1)[frame["g"]] * draw(st.sampled_from([0.0, 1.0, 5.0]))
    if family == "binomial":
        y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    elif family == "poisson":
        y = rng.poisson(np.exp(np.clip(eta, -5, 5))).astype(float)
    else:
        y = eta + rng.normal(size=n) * draw(st.sampled_from([1.0, 1e-8, 1e4]))
    frame["y"] = y
    # "auto" (empirical-Bayes tau) only with one factor: with two factors on tiny data the
    # tau search takes 3-80 s per fit (reported), too slow for a fuzz budget.
    prior = draw(st.sampled_from(([] if two else ["auto"]) + [None, 0.01, 1.0, 100.0]))
    weights = None
    if draw(st.booleans()):
        weights = rng.choice([0.0, 1.0, 2.0], n)
    formula = "y ~ x + ^g" + (" + ^h" if two else "")
    return frame, formula, family, prior, weights


@settings(max_examples=int(__import__("os").environ.get("FUZZ_FIT_N", 60)), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(small_fits())
def test_fit_path_gives_a_certified_result_or_an_impactglm_error(case):
    import warnings

    import impactglm as ig
    from certificate import max_newton_step
    EXAMPLES["fit: random small data"] += 1
    frame, formula, family, prior, weights = case
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = ig.glm(formula, frame, family=family, prior_sd=prior, weights=weights)
            res = model.fit()
        except ImpactGLMError:
            EXAMPLES["fit: random small data -> ImpactGLMError"] += 1
            return
    params = np.asarray(res.params)
    assert np.all(np.isfinite(params)), (formula, family, prior, res.params)
    for e in res.factor_effects:
        assert np.all(np.isfinite(e.effect)), e.name
    if res.converged:
        EXAMPLES["fit: random small data -> converged"] += 1
        step = max_newton_step(model, res)
        if step >= 1e-6 and _separated(model, res):
            # fitted means at the boundary: the gradient vanishes with the curvature, so
            # "converged" must come with a SeparationWarning.  Known solver gap (reported
            # in tests/test_safety.py xfails): counted here, not failed.
            warned = any(issubclass(w.category, ig.errors.SeparationWarning) for w in caught)
            EXAMPLES["fit: random small data -> separated, " +
                     ("warned" if warned else "NOT warned (solver gap)")] += 1
            return
        assert step < 1e-6, (formula, family, prior, step)
    else:
        EXAMPLES["fit: random small data -> not converged (warned)"] += 1
        assert any(issubclass(w.category, ig.errors.ConvergenceWarning) for w in caught)


def _separated(model, res) -> bool:
    """Fitted means numerically on the boundary (binomial 0/1, poisson 0) in some row."""
    fam = model.family.name
    mu = np.asarray(res.fittedvalues, dtype=float)
    if fam == "binomial":
        return bool(np.any((mu < 1e-8) | (mu > 1 - 1e-8)))
    if fam == "poisson":
        return bool(np.any(mu < 1e-8))
    return False

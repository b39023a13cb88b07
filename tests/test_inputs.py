"""Bad input to the design layer: a clear impactglm error naming the culprit, one test each."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from impactglm.design.build import build_design
from impactglm.design.spec import ModelSpec
from impactglm.errors import ColumnNotFoundError, DataError, FormulaError, ImpactGLMError


def data(n: int = 20) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    return pd.DataFrame({
        "y": rng.normal(size=n), "x": rng.normal(size=n), "age": rng.uniform(1, 9, n),
        "k": np.array(["a", "b", "c", "d"])[np.arange(n) % 4],
        "g": np.arange(n) % 5, "yb": np.arange(n) % 2, "w": np.ones(n),
    })


def test_unknown_column_in_fixed_part_suggests_closest():
    with pytest.raises(ColumnNotFoundError, match=r"'agee'.*did you mean 'age'"):
        build_design("y ~ x + np.log(agee)", data())


def test_unknown_column_in_response():
    with pytest.raises(ColumnNotFoundError, match="'Y'"):
        build_design("Y ~ x", data())


def test_unknown_high_cardinality_column():
    with pytest.raises(ColumnNotFoundError, match=r"'gg'.*did you mean 'g'"):
        build_design("y ~ x + ^gg", data())


def test_unknown_grouping_column():
    with pytest.raises(ColumnNotFoundError, match="'grp'"):
        build_design("y ~ x + (1 | grp)", data())


def test_unknown_weights_column():
    with pytest.raises(ColumnNotFoundError, match=r"'ww'.*did you mean 'w'"):
        build_design("y ~ x", data(), weights="ww")


def test_unknown_function_has_a_caret():
    text = "y ~ x + lgo(age)"
    with pytest.raises(FormulaError, match="unknown function 'lgo'") as e:
        build_design(text, data())
    assert e.value.position == text.index("lgo")


def test_patsy_syntax_error_caret_in_the_users_formula():
    # Patsy sees the formula with ^g and (1|k) blanked out, so its error position is
    # a position in the user's text.
    text = "y ~ ^g + (1|k) + x * * age"
    with pytest.raises(FormulaError) as e:
        build_design(text, data())
    assert e.value.formula == text
    assert text[e.value.position] == "*"
    assert e.value.position == text.rindex("*")
    lines = str(e.value).splitlines()
    assert lines[-2] == "    " + text
    assert lines[-1] == "    " + " " * e.value.position + "^"


def test_patsy_error_inside_a_random_term_points_into_it():
    text = "y ~ x + (x * * age | g)"
    with pytest.raises(FormulaError) as e:
        build_design(text, data())
    assert e.value.position == text.rindex("*")


def test_parser_error_from_formula_module():
    with pytest.raises(FormulaError, match=r"unmatched '\('"):
        build_design("y ~ np.log(x", data())


def test_duplicated_column_names():
    df = pd.DataFrame(np.ones((3, 3)), columns=["y", "x", "x"])
    with pytest.raises(DataError, match="duplicated column names: 'x'"):
        build_design("y ~ x", df)


def test_string_column_where_a_number_is_needed():
    with pytest.raises(DataError, match="column 'k'.*needs numbers"):
        build_design("y ~ np.log(k)", data())


def test_string_response_for_gaussian():
    with pytest.raises(DataError, match="response 'k'.*needs numbers"):
        build_design("k ~ x", data())


def test_string_weights_column():
    with pytest.raises(DataError, match="weights column 'k' must be numeric"):
        build_design("y ~ x", data(), weights="k")


def test_nan_in_predictor_with_na_action_raise_names_column_and_row():
    df = data()
    df.index = [f"row{i}" for i in range(len(df))]
    df.loc["row6", "x"] = np.nan
    with pytest.raises(DataError, match=r"column 'x'.*row 'row6'"):
        build_design("y ~ x", df, na_action="raise")


def test_nan_in_high_cardinality_column_with_raise():
    df = data()
    df["g"] = df["g"].astype(float)
    df.loc[4, "g"] = np.nan
    with pytest.raises(DataError, match=r"column 'g'.*row 4"):
        build_design("y ~ x + ^g", df, na_action="raise")


def test_inf_in_predictor_names_column_and_row():
    df = data()
    df.loc[3, "age"] = np.inf
    with pytest.raises(DataError, match=r"column 'age'.*infinite.*row 3"):
        build_design("y ~ x + age", df)


def test_inf_made_by_a_transform():
    df = data()
    df.loc[5, "age"] = 0.0
    with pytest.raises(DataError, match=r"np.log\(age\).*infinite.*row 5"):
        with np.errstate(divide="ignore"):
            build_design("y ~ np.log(age)", df)


def test_no_rows_left_after_na_removal():
    df = data()
    df["x"] = np.nan
    with pytest.raises(DataError, match="no rows left"):
        build_design("y ~ x", df)


def test_negative_weights():
    w = np.ones(20)
    w[7] = -1.0
    with pytest.raises(DataError, match=r"non-negative.*row 7"):
        build_design("y ~ x", data(), weights=w)


def test_weights_array_of_wrong_length():
    with pytest.raises(DataError, match="one value per row"):
        build_design("y ~ x", data(), weights=np.ones(5))


def test_binomial_response_outside_range():
    df = data()
    df.loc[2, "yb"] = 2
    with pytest.raises(DataError, match=r"'yb'.*row 2 has 2"):
        build_design("yb ~ x", df, family="binomial")


def test_negative_poisson_count():
    df = data()
    df["cnt"] = np.arange(20) - 1.0
    with pytest.raises(DataError, match=r"'cnt'.*non-negative.*row 0"):
        build_design("cnt ~ x", df, family="poisson")


def test_binomial_string_response_with_three_levels():
    df = data()
    df["s"] = np.array(["a", "b", "c"])[np.arange(20) % 3]
    with pytest.raises(DataError, match="exactly two levels.*'a', 'b', 'c'"):
        build_design("s ~ x", df, family="binomial")


def test_high_cardinality_factor_with_one_level():
    df = data()
    df["one"] = 5
    with pytest.raises(DataError, match=r"'one'.*single level \(5\)"):
        build_design("y ~ x + ^one", df)


def test_grouping_factor_with_one_level():
    df = data()
    df["one"] = "s"
    with pytest.raises(DataError, match=r"grouping factor 'one'.*single level"):
        build_design("y ~ x + (1 | one)", df)


def test_unseen_level_of_a_categorical_term_in_new_data():
    d = build_design("y ~ x + C(k)", data())
    new = pd.DataFrame({"x": [1.0, 2.0], "k": ["a", "zz"]})
    with pytest.raises(DataError, match=r"column 'k'.*level 'zz'"):
        d.spec.transform(new)


def test_unseen_class_in_new_response():
    d = build_design("g ~ x", data(), family="multinomial")
    new = pd.DataFrame({"x": [1.0, 2.0], "g": [1, 17]})
    with pytest.raises(DataError, match=r"class 17 at row 1"):
        d.spec.transform(new, response=True)


def test_missing_column_in_new_data():
    d = build_design("y ~ x + ^g", data())
    with pytest.raises(ColumnNotFoundError, match="'g'"):
        d.spec.transform(pd.DataFrame({"x": [1.0]}))


def test_damaged_model_spec():
    d = build_design("y ~ x + ^g", data()).spec.to_dict()
    with pytest.raises(DataError, match="version"):
        ModelSpec.from_dict({**d, "version": 99})
    del d["factors"]
    with pytest.raises(DataError, match="damaged"):
        ModelSpec.from_dict(d)


def test_bad_na_action():
    with pytest.raises(DataError, match="na_action"):
        build_design("y ~ x", data(), na_action="omit")


def test_unknown_family():
    with pytest.raises(ImpactGLMError, match="family"):
        build_design("y ~ x", data(), family="gausian")


def test_not_a_table():
    with pytest.raises(DataError, match="table"):
        build_design("y ~ x", 42)


# --------------------------------------------------------------------------- property test

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

TERMS = ["x", "C(k)", "np.log(x)", "I(x**2)", "k", "b", "x:k", "center(x)", "standardize(x)",
         "^g", "^k", "(1|g)", "(x|k)", "(x||g)", "(1|g:k)", "cat", "C(n)", "^cat", "0", "-1"]


@st.composite
def frames(draw):
    """Small frames, mostly valid; sometimes a NaN, an inf, a None or an empty string."""
    n = draw(st.integers(1, 10))

    def spoil(values, bad):
        if draw(st.integers(0, 3)) == 0:
            values[draw(st.integers(0, n - 1))] = draw(st.sampled_from(bad))
        return values

    num = st.lists(st.floats(0.01, 1e3), min_size=n, max_size=n)
    txt = st.lists(st.sampled_from(["a", "b", "é", "a b"]), min_size=n, max_size=n)
    ints = st.lists(st.integers(0, 3), min_size=n, max_size=n)
    return pd.DataFrame({
        "y": spoil(draw(num), [np.nan, np.inf, -1.0]), "x": spoil(draw(num), [np.nan, np.inf]),
        "k": pd.Series(spoil(draw(txt), [None, ""]), dtype=object),
        "b": draw(st.lists(st.booleans(), min_size=n, max_size=n)), "g": draw(ints),
        "n": draw(ints), "cat": pd.Categorical(spoil(draw(txt), [None])),
        "yb": [v % 2 for v in draw(ints)]})


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(df=frames(), lhs=st.sampled_from(["y", "yb", "k", "n", "cat", "np.log(x)"]),
       terms=st.lists(st.sampled_from(TERMS), min_size=1, max_size=3),
       family=st.sampled_from(["gaussian", "binomial", "poisson", "gamma", "multinomial"]),
       na_action=st.sampled_from(["drop", "raise"]))
def test_any_frame_gives_a_design_or_an_impactglm_error(df, lhs, terms, family, na_action):
    before = df.copy(deep=True)
    formula = f"{lhs} ~ " + " + ".join(terms)
    try:
        with np.errstate(all="ignore"):
            d = build_design(formula, df, family=family, na_action=na_action)
            spec = ModelSpec.from_dict(json.loads(json.dumps(d.spec.to_dict())))
            nd = spec.transform(df, response=True)  # same rows as the fit
        assert d.X.shape[0] == len(d.y) == len(d.row_labels) == len(df) - d.n_dropped
        # the training rows rebuild bit-identically from the stored spec
        np.testing.assert_array_equal(nd.X, d.X)
        np.testing.assert_array_equal(nd.row_labels, d.row_labels)
        for c, f in zip(nd.codes, d.factors):
            np.testing.assert_array_equal(c, f.codes)
        for (c, Z), b in zip(nd.random, d.random):
            np.testing.assert_array_equal(c, b.codes)
            np.testing.assert_array_equal(Z, b.Z)
    except ImpactGLMError:
        pass
    pd.testing.assert_frame_equal(df, before)

"""The design builder against Patsy, hand computations and round trips."""
from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import patsy
import pyarrow as pa
import pytest

from conftest import read_csv
from impactglm.containers import Design
from impactglm.design.build import build_design
from impactglm.design.levels import factorize
from impactglm.design.spec import ModelSpec
from impactglm.errors import DataError


def make_data(n: int = 60, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "y": rng.normal(size=n),
        "x": rng.normal(size=n),
        "z": rng.uniform(0.5, 3.0, size=n),
        "k": rng.choice(["b", "a", "c"], size=n),
        "m": rng.integers(0, 4, size=n),
        "flag": rng.integers(0, 2, size=n).astype(bool),
        "g": rng.integers(1, 12, size=n),
        "h": rng.choice(["u", "v", "w", "x"], size=n),
        "cnt": rng.poisson(2.0, size=n).astype(float),
        "w": rng.uniform(0.5, 2.0, size=n),
        "off": rng.normal(size=n) * 0.1,
    })


PATSY_FORMULAS = [
    "y ~ x + C(k)",
    "y ~ np.log(z) + I(x**2)",
    "y ~ x * k",
    "y ~ x:k - 1",
    "y ~ 0 + C(k) + z",
    "y ~ center(x) + standardize(z)",
    "y ~ C(m) + flag + x:z",
    "y ~ C(k, Sum) + C(m, Poly)",
]


@pytest.mark.parametrize("formula", PATSY_FORMULAS)
def test_fixed_part_equals_patsy(formula):
    df = make_data()
    d = build_design(formula, df)
    y_ref, X_ref = patsy.dmatrices(formula, df, return_type="dataframe")
    if "standardize" in formula:  # our vectorized pass vs Patsy's row loop: last-bit differences
        np.testing.assert_allclose(d.X, X_ref.to_numpy(), rtol=1e-13, atol=1e-15)
    else:
        np.testing.assert_array_equal(d.X, X_ref.to_numpy())
    assert d.column_names == tuple(X_ref.columns)
    np.testing.assert_array_equal(d.y, y_ref.to_numpy()[:, 0])
    assert d.X.dtype == np.float64 and d.X.flags.c_contiguous
    assert d.n_dropped == 0 and d.factors == () and d.random == ()
    np.testing.assert_array_equal(d.weights, np.ones(len(df)))
    np.testing.assert_array_equal(d.offset, np.zeros(len(df)))


def test_special_terms_are_taken_out_before_patsy():
    df = make_data()
    d = build_design("y ~ ^g + x + (1 | h) + C(k) + ^h", df)
    X_ref = patsy.dmatrix("x + C(k)", df)
    np.testing.assert_array_equal(d.X, np.asarray(X_ref))
    assert [f.name for f in d.factors] == ["g", "h"]
    assert len(d.random) == 1 and d.random[0].group == "h"
    d0 = build_design("y ~ ^g", df)
    assert d0.column_names == ("Intercept",) and d0.X.shape == (len(df), 1)
    d1 = build_design("y ~ 0 + ^g", df)
    assert d1.X.shape == (len(df), 0)


def test_fast_standardize_matches_patsy_on_chunks():
    from patsy.state import Standardize

    from impactglm.design.patsy import FastStandardize
    rng = np.random.default_rng(5)
    chunks = [rng.normal(3.0, 2.0, size=(m, 2)) for m in (7, 1, 30, 0, 12)]
    fast, ref = FastStandardize(), Standardize()
    for c in chunks:
        fast.memorize_chunk(c, ddof=1)
        ref.memorize_chunk(c, ddof=1)
    assert fast.current_n == ref.current_n == 50
    np.testing.assert_allclose(fast.current_mean, ref.current_mean, rtol=1e-14)
    np.testing.assert_allclose(fast.current_M2, ref.current_M2, rtol=1e-13)
    x = np.vstack(chunks)
    np.testing.assert_allclose(fast.transform(x, ddof=1), (x - x.mean(0)) / x.std(0, ddof=1),
                               rtol=1e-12)


def test_parsed_formula_input_and_quoted_names():
    from impactglm.formula import parse_formula
    df = make_data(30).rename(columns={"x": "odd name", "g": "my g"})
    d = build_design("y ~ Q('odd name') + ^Q('my g')", df)
    np.testing.assert_array_equal(d.X[:, 1], df["odd name"].to_numpy())
    assert d.factors[0].name == "my g" and d.spec.has_intercept
    # the LMM path: ^g read as (1|g)
    p = parse_formula("y ~ Q('odd name') + ^h").random_as_high_cardinality()
    d = build_design(p, df)
    assert d.factors == () and [b.group for b in d.random] == ["h"]
    np.testing.assert_array_equal(d.random[0].Z, np.ones((30, 1)))
    assert not build_design("y ~ 0 + z", df).spec.has_intercept


def test_response_expression():
    df = make_data()
    d = build_design("np.log(z) ~ x", df)
    np.testing.assert_array_equal(d.y, np.log(df["z"].to_numpy()))
    nd = d.spec.transform(df, response=True)
    np.testing.assert_array_equal(nd.y, d.y)


# --------------------------------------------------------------------------- missing values


def test_na_omit_over_exactly_the_columns_used():
    df = make_data(80)
    df.loc[[1, 2], "x"] = np.nan
    df.loc[[2, 5], "k"] = None
    df.loc[7, "g"] = np.nan               # ^ column: missing value, row dropped
    df.loc[9, "w"] = np.nan               # weights column
    df.loc[11, "off"] = np.nan            # offset column
    df.loc[13, "h"] = None                # random-term group
    df.loc[[20, 21], "cnt"] = np.nan      # not used by the model: kept
    df.index = [f"r{i}" for i in range(len(df))]
    d = build_design("y ~ x + C(k) + ^g + (1|h)", df, weights="w", offset="off")
    used = ["y", "x", "k", "g", "w", "off", "h"]
    kept = df.dropna(subset=used)
    assert d.n_dropped == len(df) - len(kept) == 7
    assert list(d.row_labels) == list(kept.index)
    np.testing.assert_array_equal(d.weights, kept["w"].to_numpy())
    np.testing.assert_array_equal(d.offset, kept["off"].to_numpy())
    X_ref = patsy.dmatrix("x + C(k)", kept)
    np.testing.assert_array_equal(d.X, np.asarray(X_ref))


@pytest.mark.parametrize("formula", ["y ~ x + C(k)", "y ~ x * k + np.log(z)", "y ~ C(m) + flag"])
def test_na_dropping_equals_patsy_drop(formula):
    df = make_data(70, seed=4)
    rng = np.random.default_rng(9)
    for col in ("y", "x", "z", "m"):
        df[col] = df[col].astype(float).mask(rng.random(70) < 0.08)
    df["k"] = df["k"].mask(rng.random(70) < 0.08)
    d = build_design(formula, df)
    y_ref, X_ref = patsy.dmatrices(formula, df, return_type="dataframe")   # Patsy's NA drop
    np.testing.assert_array_equal(d.X, X_ref.to_numpy())
    np.testing.assert_array_equal(d.y, y_ref.to_numpy()[:, 0])
    assert list(d.row_labels) == list(X_ref.index)
    assert d.n_dropped == len(df) - len(X_ref) > 0


def test_na_in_weights_and_offset_arrays_drop_rows():
    df = make_data(30)
    w = np.ones(30)
    w[3] = np.nan
    off = np.zeros(30)
    off[[4, 3]] = np.nan
    d = build_design("y ~ x", df, weights=w, offset=off)
    assert d.n_dropped == 2 and 3 not in d.row_labels and 4 not in d.row_labels


def test_transform_made_nan_is_dropped_like_r():
    df = make_data(30)
    df.loc[[0, 4], "z"] = [-1.0, -2.0]    # np.log gives NaN, as R's model.frame + na.omit
    with np.errstate(invalid="ignore"):
        d = build_design("y ~ np.log(z)", df)
    assert d.n_dropped == 2
    assert list(d.row_labels) == [i for i in range(30) if i not in (0, 4)]


# --------------------------------------------------------------------------- responses


def test_binomial_encodings():
    df = make_data(40)
    df["yb"] = df["flag"]
    d = build_design("yb ~ x", df, family="binomial")
    np.testing.assert_array_equal(d.y, df["flag"].to_numpy(dtype=float))
    assert d.spec.response_info["kind"] == "boolean" and d.spec.success is True

    df["s"] = np.where(df["flag"], "yes", "no")
    d = build_design("s ~ x", df, family="binomial")
    assert d.spec.response_info == {"kind": "levels", "failure": "no", "success": "yes"}
    np.testing.assert_array_equal(d.y, df["flag"].to_numpy(dtype=float))

    # categorical: the category order decides (R's factor: second level = success)
    df["c"] = pd.Categorical(df["s"], categories=["yes", "no"])
    d = build_design("c ~ x", df, family="binomial")
    assert d.spec.success == "no"
    np.testing.assert_array_equal(d.y, (~df["flag"]).to_numpy(dtype=float))

    df["b01"] = df["flag"].astype(int)
    d = build_design("b01 ~ x", df, family="binomial")
    assert d.spec.response_info["kind"] == "binary"
    np.testing.assert_array_equal(d.y, df["b01"].to_numpy(dtype=float))

    trials = np.arange(1, 41, dtype=float)
    df["p"] = np.floor(trials * 0.3) / trials
    d = build_design("p ~ x", df, family="binomial", weights=trials)
    assert d.spec.response_info["kind"] == "proportion"
    np.testing.assert_array_equal(d.weights, trials)
    np.testing.assert_array_equal(d.y, df["p"].to_numpy())


def test_multinomial_classes_sort_naturally():
    df = make_data(40)
    labels = np.array([0.5, 1, 2, 9, 10, 4.5, 3])
    df["r"] = labels[np.arange(40) % 7]
    d = build_design("r ~ x", df, family="multinomial")
    assert d.spec.classes == (0.5, 1.0, 2.0, 3.0, 4.5, 9.0, 10.0)
    assert d.y.dtype == np.int32
    np.testing.assert_array_equal(np.asarray(d.spec.classes)[d.y], df["r"].to_numpy())

    df["ri"] = (np.arange(40) % 11) + 1          # 1..11: 10 and 11 after 9
    d = build_design("ri ~ x", df, family="multinomial")
    assert d.spec.classes == tuple(range(1, 12))

    df["rs"] = np.array(["b", "a", "c", "B"])[np.arange(40) % 4]
    d = build_design("rs ~ x", df, family="multinomial")
    assert d.spec.classes == ("B", "a", "b", "c")

    df["rc"] = pd.Categorical(df["rs"], categories=["c", "b", "a", "B", "unused"])
    d = build_design("rc ~ x", df, family="multinomial")
    assert d.spec.classes == ("c", "b", "a", "B")
    np.testing.assert_array_equal(np.asarray(d.spec.classes, dtype=object)[d.y],
                                  df["rs"].to_numpy(dtype=object))


def test_numeric_response_families():
    df = make_data(30)
    d = build_design("cnt ~ x", df, family="poisson")
    np.testing.assert_array_equal(d.y, df["cnt"].to_numpy())
    d = build_design("z ~ x", df, family="gamma")
    assert d.spec.family == "gamma" and d.y.dtype == np.float64


# --------------------------------------------------------------------------- ^ factors


def hand_codes(values):
    """Independent: sorted set of values, then a Python dict lookup."""
    levels = sorted(set(values))
    index = {v: i for i, v in enumerate(levels)}
    codes = np.array([index[v] for v in values])
    counts = np.array([list(values).count(v) for v in levels])
    return codes, levels, counts


@pytest.mark.parametrize("kind", ["int", "str", "float"])
def test_factor_codes_levels_counts(kind):
    rng = np.random.default_rng(3)
    raw = rng.integers(0, 25, size=200)
    values = {"int": raw, "str": np.array([f"L{v:02d}" for v in raw], dtype=object),
              "float": raw / 2.0}[kind]
    df = make_data(200)
    df["f"] = values
    d = build_design("y ~ x + ^f", df)
    codes, levels, counts = hand_codes(list(values))
    fc = d.factors[0]
    assert fc.codes.dtype == np.int32 and fc.counts.dtype == np.int64
    np.testing.assert_array_equal(fc.codes, codes)
    assert list(fc.levels) == levels
    np.testing.assert_array_equal(fc.counts, counts)


def test_factor_levels_numeric_order_and_categorical_order():
    c, lv, n = factorize(pd.Series([10, 9, 2, 10, 1]))
    assert list(lv) == [1, 2, 9, 10] and list(c) == [3, 2, 1, 3, 0] and list(n) == [1, 1, 1, 2]
    s = pd.Series(pd.Categorical(["x", "y", "x"], categories=["y", "zz", "x"]))
    c, lv, n = factorize(s)
    assert list(lv) == ["y", "x"] and list(c) == [1, 0, 1] and list(n) == [1, 2]
    c, lv, n = factorize(pd.Series([True, False, True]))
    assert list(lv) == [False, True] and list(c) == [1, 0, 1]


def test_factor_codes_after_na_drop():
    df = make_data(50)
    df["f"] = np.where(np.arange(50) % 5 == 0, np.nan, np.arange(50) % 7)
    d = build_design("y ~ ^f", df)
    kept = df["f"].dropna().to_numpy()
    codes, levels, counts = hand_codes(list(kept))
    np.testing.assert_array_equal(d.factors[0].codes, codes)
    np.testing.assert_array_equal(d.factors[0].levels, levels)
    assert d.factors[0].levels.dtype == np.int64        # whole-number floats: integer ids
    assert d.n_dropped == 10
    nd = d.spec.transform(pd.DataFrame({"f": [3.0, 6.0, 7.0, 3.5]}))
    assert list(nd.codes[0]) == [3, 6, -1, -1]


# --------------------------------------------------------------------------- random blocks


def test_random_blocks_sleepstudy():
    ss = read_csv("sleepstudy.csv")
    d = build_design("Reaction ~ Days + (Days | Subject)", ss)
    (b,) = d.random
    assert b.group == "Subject" and b.term_names == ("(Intercept)", "Days")
    np.testing.assert_array_equal(b.Z, np.column_stack([np.ones(len(ss)), ss["Days"]]))
    codes, levels, _ = hand_codes(list(ss["Subject"]))
    np.testing.assert_array_equal(b.codes, codes)
    assert list(b.levels) == levels

    d2 = build_design("Reaction ~ Days + (Days || Subject)", ss)
    assert [blk.term_names for blk in d2.random] == [("(Intercept)",), ("Days",)]
    np.testing.assert_array_equal(d2.random[1].Z[:, 0], ss["Days"].to_numpy())
    d3 = build_design("Reaction ~ Days + (0 + Days | Subject)", ss)
    assert d3.random[0].term_names == ("Days",)


def test_random_interaction_group_levels():
    df = make_data(60)
    d = build_design("y ~ x + (1 | k/h)", df)
    assert [b.group for b in d.random] == ["k", "k:h"]
    pairs = list(zip(df["k"], df["h"]))
    levels = sorted(set(pairs))
    assert list(d.random[1].levels) == [f"{a}:{b}" for a, b in levels]
    index = {p: i for i, p in enumerate(levels)}
    np.testing.assert_array_equal(d.random[1].codes, [index[p] for p in pairs])
    np.testing.assert_array_equal(d.random[1].Z, np.ones((60, 1)))
    # floats holding whole numbers (ids read with NaN elsewhere) give the same labels
    df2 = df.assign(m=df["m"].astype(float))
    d2 = build_design("y ~ x + (1 | k:m)", df2)
    assert d2.random[0].levels[0] == f"{sorted(set(zip(df['k'], df['m'])))[0][0]}:" \
        f"{sorted(set(zip(df['k'], df['m'])))[0][1]}"
    codes, _ = d2.spec.transform(df2).random[0]
    np.testing.assert_array_equal(codes, d2.random[0].codes)


# --------------------------------------------------------------------------- ModelSpec


def roundtrip(spec: ModelSpec) -> ModelSpec:
    return ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict())))


@pytest.mark.parametrize("formula", PATSY_FORMULAS + [
    "y ~ standardize(x) + center(np.log(z)) + ^g + ^h",
    "y ~ bs(x, df=4) + C(h)",
])
def test_spec_roundtrip_transform_is_bit_identical(formula):
    df = make_data(90)
    train, new = df.iloc[:60], df.iloc[60:]
    d = build_design(formula, train)
    spec2 = roundtrip(d.spec)
    for spec in (d.spec, spec2):
        nd_train = spec.transform(train)
        np.testing.assert_array_equal(nd_train.X, d.X)
        for c, f in zip(nd_train.codes, d.factors):
            np.testing.assert_array_equal(c, f.codes)
    a, b = d.spec.transform(new), spec2.transform(new)
    np.testing.assert_array_equal(a.X, b.X)
    # the stateful transforms use the training state, not the new data's
    if "standardize(x)" in formula:
        j = d.column_names.index("standardize(x)")
        mu, sd = train["x"].mean(), train["x"].std(ddof=0)
        np.testing.assert_allclose(a.X[:, j], (new["x"] - mu) / sd, rtol=1e-12)
    assert json.dumps(spec2.to_dict()) == json.dumps(d.spec.to_dict())


def test_spec_can_be_deep_copied_after_use():
    df = make_data(20)
    d = build_design("y ~ center(x) + (x | h)", df)
    d.spec.transform(df)                                  # caches Patsy objects
    spec2 = copy.deepcopy(d.spec)
    np.testing.assert_array_equal(spec2.transform(df).X, d.X)


def test_transform_unseen_high_cardinality_levels():
    df = make_data(40)
    d = build_design("y ~ x + ^g + ^h", df)
    new = pd.DataFrame({"x": [0.0, 1.0, 2.0], "g": [3, 999, 5], "h": ["u", "zz", "zz"]})
    nd = roundtrip(d.spec).transform(new)
    g_levels = list(d.factors[0].levels)
    assert list(nd.codes[0]) == [g_levels.index(3), -1, g_levels.index(5)]
    assert list(nd.codes[1]) == [list(d.factors[1].levels).index("u"), -1, -1]
    assert nd.unseen == {"g": 1, "h": 2}
    assert all(c.dtype == np.int32 for c in nd.codes)
    # ids read as text at prediction time still match integer levels (and vice versa)
    as_text = new.assign(g=new["g"].astype(str), h=pd.Categorical(new["h"]))
    nd2 = d.spec.transform(as_text)
    for a, b in zip(nd.codes, nd2.codes):
        np.testing.assert_array_equal(a, b)
    d_text = build_design("y ~ x + ^gs", df.assign(gs=df["g"].astype(str)))
    nd3 = d_text.spec.transform(new.assign(gs=new["g"]))
    levels = list(d_text.factors[0].levels)
    assert list(nd3.codes[0]) == [levels.index("3"), -1, levels.index("5")]


def test_transform_response_and_offsets():
    df = make_data(40)
    df["s"] = np.where(df["flag"], "yes", "no")
    d = build_design("s ~ x", df, family="binomial", offset="off")
    nd = roundtrip(d.spec).transform(df.iloc[:5], response=True)
    np.testing.assert_array_equal(nd.y, d.y[:5])
    np.testing.assert_array_equal(nd.offset, df["off"].to_numpy()[:5])

    nd = d.spec.transform(df.drop(columns=["s"]), response=True)   # no response column
    assert nd.y is None and nd.X.shape == (40, 2)

    d = build_design("y ~ x", df, offset=df["off"].to_numpy())
    with pytest.raises(DataError, match="offset"):
        d.spec.transform(df)
    nd = d.spec.transform(df, offset=np.ones(len(df)))
    np.testing.assert_array_equal(nd.offset, np.ones(len(df)))

    df["r"] = np.array([1, 2, 10])[np.arange(40) % 3]
    d = build_design("r ~ x", df, family="multinomial")
    nd = roundtrip(d.spec).transform(df, response=True)
    np.testing.assert_array_equal(nd.y, d.y)


def test_transform_random_blocks_and_categorical_columns():
    df = make_data(60)
    df["kc"] = pd.Categorical(df["k"], categories=["c", "b", "a"])
    d = build_design("y ~ C(kc) + (x | h)", df)
    spec = roundtrip(d.spec)
    sub = df.iloc[:10].copy()
    sub["kc"] = pd.Categorical(sub["k"])          # other categories: mapped to training ones
    nd = spec.transform(sub)
    np.testing.assert_array_equal(nd.X, d.X[:10])
    codes, Z = nd.random[0]
    np.testing.assert_array_equal(codes, d.random[0].codes[:10])
    np.testing.assert_array_equal(Z, d.random[0].Z[:10])


def test_transform_with_a_subset_of_string_levels():
    df = make_data(40)
    d = build_design("y ~ x * k + C(h)", df)
    rows = np.flatnonzero(df["k"].to_numpy() == "b")[:3]
    nd = roundtrip(d.spec).transform(df.iloc[rows])
    np.testing.assert_array_equal(nd.X, d.X[rows])
    nd = d.spec.transform(df.iloc[rows].astype({"k": "category"}))
    np.testing.assert_array_equal(nd.X, d.X[rows])


def test_transform_drops_missing_rows():
    df = make_data(20)
    d = build_design("y ~ x + ^g", df)
    new = df.iloc[:6].copy()
    new.loc[2, "x"] = np.nan
    nd = d.spec.transform(new)
    assert list(nd.row_labels) == [0, 1, 3, 4, 5] and nd.X.shape[0] == 5 and nd.n_dropped == 1
    assert list(nd.positions) == [0, 1, 3, 4, 5]
    new.index = [10, 10, 11, 12, 12, 13]                 # duplicate labels: positions still work
    new.loc[13, "y"] = np.nan
    nd = d.spec.transform(new, response=True)
    assert list(nd.positions) == [0, 1, 3, 4] and list(nd.row_labels) == [10, 10, 12, 12]
    assert d.spec.transform(new).positions.tolist() == [0, 1, 3, 4, 5]


# --------------------------------------------------------------------------- inputs


def test_dict_and_arrow_inputs_give_the_same_design():
    df = make_data(40)
    formula = "y ~ x + C(k) + ^g + (1|h)"
    ref = build_design(formula, df, weights="w")
    for data in ({c: df[c].to_numpy() for c in df.columns}, pa.Table.from_pandas(df)):
        d = build_design(formula, data, weights="w")
        np.testing.assert_array_equal(d.X, ref.X)
        np.testing.assert_array_equal(d.factors[0].codes, ref.factors[0].codes)
        np.testing.assert_array_equal(d.random[0].codes, ref.random[0].codes)
        np.testing.assert_array_equal(d.weights, ref.weights)


def test_caller_data_is_never_modified():
    df = make_data(50)
    df["kc"] = pd.Categorical(df["k"])
    df.loc[3, "x"] = np.nan
    df.loc[4, "g"] = np.nan
    before = copy.deepcopy(df)
    w = df["w"].to_numpy().copy()
    w_before = w.copy()
    d = build_design("y ~ center(x) + C(kc) + ^g + (x | h)", df, weights=w, offset="off")
    d.spec.transform(df)
    roundtrip(d.spec).transform(df)
    pd.testing.assert_frame_equal(df, before, check_dtype=True, check_exact=True)
    np.testing.assert_array_equal(w, w_before)


def test_design_arrays_are_owned_and_writable():
    # solvers may work in place: nothing may alias the caller's data or be read-only
    df = make_data(10)
    w = df["w"].to_numpy().copy()
    d = build_design("y ~ x + ^g", df, weights=w, offset="off")
    for arr, src in ((d.y, df["y"].to_numpy()), (d.weights, w), (d.offset, df["off"].to_numpy()),
                     (d.X, df["x"].to_numpy())):
        assert arr.flags.writeable and not np.shares_memory(arr, src)
    nd = d.spec.transform(df)
    assert nd.offset.flags.writeable and not np.shares_memory(nd.offset, df["off"].to_numpy())


def test_design_is_frozen():
    d = build_design("y ~ x", make_data(10))
    assert isinstance(d, Design)
    with pytest.raises(Exception):
        d.n_dropped = 3


def test_huge_finite_values_are_not_mistaken_for_infinity():
    df = make_data(10)
    df["x"] = 1e308
    df["z"] = 1e308        # a row sum overflows; the values themselves are finite
    d = build_design("y ~ x + z", df)
    assert d.n_dropped == 0 and np.all(d.X[:, 1:] == 1e308)

"""ImpactEncoder: the codes against hand computations, cross-fitting, and leakage downstream."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("sklearn")

from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import log_loss  # noqa: E402
from sklearn.model_selection import KFold  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from conftest import EXACT_RTOL  # noqa: E402
from impactglm.encoder import ImpactEncoder  # noqa: E402
from impactglm.errors import ColumnNotFoundError, DataError, ModelError  # noqa: E402


# fit_transform cross-fits, so it differs from fit(X, y).transform(X) by design (as
# scikit-learn's own TargetEncoder); these two checks assume they agree.
_CROSS_FIT = "fit_transform cross-fits by design: it differs from fit(X, y).transform(X)"
EXPECTED_FAILED = {"check_transformer_general": _CROSS_FIT,
                   "check_transformer_data_not_an_array": _CROSS_FIT}


@parametrize_with_checks([ImpactEncoder(cv=3)],
                         expected_failed_checks=lambda est: dict(EXPECTED_FAILED))
def test_sklearn_compatible_transformer(estimator, check):
    check(estimator)


def _expit(x):
    return 1.0 / (1.0 + np.exp(-x))


def _one_step_code_fd(y, w, mu0, link, loglik, tau, h=1e-4):
    """-f'(0)/f''(0) of the penalized log-likelihood of one level's effect a, by central
    finite differences: f(a) = sum_i w_i loglik(y_i, linkinv(link(mu0) + a)) - a^2/(2 tau^2)."""
    def f(a):
        return np.sum(w * loglik(y, link(mu0, a))) - a * a / (2 * tau * tau)
    g = (f(h) - f(-h)) / (2 * h)
    H = (f(h) - 2 * f(0.0) + f(-h)) / (h * h)
    return -g / H


@pytest.fixture
def small():
    rng = np.random.default_rng(3)
    n = 120
    g = rng.choice(["a", "b", "c", "d", "é"], n, p=[0.4, 0.3, 0.15, 0.1, 0.05])
    x = rng.normal(size=n)
    y01 = (rng.random(n) < 0.35).astype(int)
    counts = rng.poisson(2.0, n)
    return pd.DataFrame({"g": g, "x": x}), y01, counts


def _level_stats(X, y, level):
    rows = (X["g"] == level).to_numpy()
    return rows.sum(), y[rows].sum(), rows


def test_binomial_codes_are_shrunken_log_odds(small):
    """code_l = logit(mu_l) - logit(mu0), mu_l = (sum y + kappa mu0)/(n_l + kappa),
    kappa = 1/(tau^2 mu0 (1 - mu0)) pseudo-rows at the grand mean."""
    X, y, _ = small
    tau = 0.7
    enc = ImpactEncoder(family="binomial", prior_sd=tau).fit(X, y)
    mu0 = y.mean()
    kappa = 1.0 / (tau ** 2 * mu0 * (1 - mu0))
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    for level, code in zip(enc.levels_["g"], enc.codes_["g"]):
        n, sy, _ = _level_stats(X, y, level)
        ref = logit((sy + kappa * mu0) / (n + kappa)) - logit(mu0)
        np.testing.assert_allclose(code, ref, rtol=1e-12)
    assert enc.prior_sd_["g"] == tau
    assert enc.get_feature_names_out().tolist() == ["g_impact", "x"]


@pytest.mark.parametrize("family", ["binomial", "poisson"])
def test_strongly_shrunken_codes_match_one_newton_step_by_finite_differences(small, family):
    """For small codes the shrunken code is the exact Newton step for the level effect
    from a = 0 (DESIGN.md: the Bayesian impact step), computed here by finite differences."""
    X, y01, counts = small
    y = y01 if family == "binomial" else counts
    tau = 0.05
    enc = ImpactEncoder(family=family, prior_sd=tau).fit(X, y)
    mu0 = y.mean()
    if family == "binomial":
        link = lambda mu, a: _expit(np.log(mu / (1 - mu)) + a)  # noqa: E731
        loglik = lambda yy, p: yy * np.log(p) + (1 - yy) * np.log1p(-p)  # noqa: E731
    else:
        link = lambda mu, a: mu * np.exp(a)  # noqa: E731
        loglik = lambda yy, m: yy * np.log(m) - m  # noqa: E731
    for level, code in zip(enc.levels_["g"], enc.codes_["g"]):
        n, _, rows = _level_stats(X, y, level)
        ref = _one_step_code_fd(y[rows], np.ones(n), mu0, link, loglik, tau)
        np.testing.assert_allclose(code, ref, rtol=2e-2)


def test_poisson_codes_are_shrunken_log_rates(small):
    X, _, y = small
    tau = 0.4
    enc = ImpactEncoder(family="poisson", prior_sd=tau).fit(X, y)
    mu0 = y.mean()
    kappa = 1.0 / (tau ** 2 * mu0)
    for level, code in zip(enc.levels_["g"], enc.codes_["g"]):
        n, sy, _ = _level_stats(X, y, level)
        np.testing.assert_allclose(code, np.log((sy + kappa * mu0) / (n + kappa) / mu0),
                                   rtol=1e-12)


def test_gaussian_codes_are_blups_given_the_grand_mean():
    """Gaussian: code = n_l (ybar_l - ybar) / (n_l + phi/tau^2), phi the within-level variance."""
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(6), [1, 2, 5, 10, 20, 40])
    y = rng.normal(size=len(g)) + g * 0.3
    tau = 0.5
    enc = ImpactEncoder(columns=[0], family="gaussian", prior_sd=tau).fit(g[:, None], y)
    frame = pd.DataFrame({"g": g, "y": y})
    stats = frame.groupby("g")["y"].agg(["count", "mean"])
    within = ((frame["y"] - frame.groupby("g")["y"].transform("mean")) ** 2).sum()
    phi = within / (len(g) - 6)
    ref = stats["count"] * (stats["mean"] - y.mean()) / (stats["count"] + phi / tau ** 2)
    got = pd.Series(enc.codes_[0], index=enc.levels_[0])
    np.testing.assert_allclose(got.loc[ref.index].to_numpy(), ref.to_numpy(), rtol=EXACT_RTOL)


def test_multinomial_gives_one_binomial_code_per_class(small):
    X, _, counts = small
    y = np.array(["lo", "mid", "hi"])[np.minimum(counts, 2)]
    enc = ImpactEncoder(prior_sd=0.5).fit(X, y)
    assert enc.family_ == "multinomial"
    assert enc.codes_["g"].shape == (5, 3)
    out = enc.transform(X)
    assert list(out.columns) == ["g_impact[hi]", "g_impact[lo]", "g_impact[mid]", "x"]
    for k, label in enumerate(enc.classes_):
        one = ImpactEncoder(family="binomial", prior_sd=0.5).fit(X, (y == label).astype(int))
        np.testing.assert_allclose(enc.codes_["g"][:, k], one.codes_["g"], rtol=1e-12)
        np.testing.assert_allclose(out[f"g_impact[{label}]"], one.transform(X)["g_impact"])


def test_cross_fitted_code_never_uses_its_own_outcome():
    rng = np.random.default_rng(1)
    n = 200
    X = pd.DataFrame({"g": rng.integers(0, 15, n).astype(str)})
    y = rng.normal(size=n)
    folds = KFold(5, shuffle=True, random_state=0)
    enc = ImpactEncoder(family="gaussian", prior_sd=1.0, cv=folds)
    base = enc.fit_transform(X, y)["g_impact"].to_numpy()
    for i in [0, 17, 123]:
        y2 = y.copy()
        y2[i] += 50.0
        moved = enc.fit_transform(X, y2)["g_impact"].to_numpy()
        assert moved[i] == base[i]                     # own outcome: no effect
        same_level = (X["g"] == X["g"][i]).to_numpy()
        assert np.any(moved[same_level] != base[same_level])   # other folds do see it


def test_cross_fitting_matches_manual_folds_and_transform_uses_full_data(small):
    X, y, _ = small
    enc = ImpactEncoder(family="binomial", prior_sd=0.8, cv=4, random_state=5)
    out = enc.fit_transform(X, y)["g_impact"].to_numpy()
    from sklearn.model_selection import StratifiedKFold
    for train, test in StratifiedKFold(4, shuffle=True, random_state=5).split(X, y):
        sub = ImpactEncoder(family="binomial", prior_sd=0.8).fit(X.iloc[train], y[train])
        np.testing.assert_allclose(out[test], sub.transform(X.iloc[test])["g_impact"],
                                   rtol=1e-12)
    full = ImpactEncoder(family="binomial", prior_sd=0.8).fit(X, y)
    np.testing.assert_allclose(enc.transform(X)["g_impact"], full.transform(X)["g_impact"])
    assert not np.allclose(out, enc.transform(X)["g_impact"])


def test_unseen_levels_get_zero_and_missing_is_a_level(small):
    X, y, _ = small
    X = X.copy()
    X.loc[:9, "g"] = None
    enc = ImpactEncoder(family="binomial", prior_sd=1.0).fit(X, y)
    assert enc.levels_["g"].isna().any()
    new = pd.DataFrame({"g": ["zzz", None, "a"], "x": [0.0, 1.0, 2.0]})
    out = enc.transform(new)
    assert out["g_impact"].iloc[0] == 0.0
    nan_pos = np.flatnonzero(enc.levels_["g"].isna())[0]
    a_pos = enc.levels_["g"].get_loc("a")
    assert out["g_impact"].iloc[1] == enc.codes_["g"][nan_pos]
    assert out["g_impact"].iloc[2] == enc.codes_["g"][a_pos]
    assert out["x"].tolist() == [0.0, 1.0, 2.0]


def test_categorical_and_numpy_input_and_no_mutation(small):
    X, y, _ = small
    Xc = X.assign(g=X["g"].astype("category"))
    before = Xc.copy()
    a = ImpactEncoder(prior_sd=1.0).fit(Xc, y).transform(Xc)
    pd.testing.assert_frame_equal(Xc, before)
    b = ImpactEncoder(prior_sd=1.0).fit(X, y).transform(X)
    np.testing.assert_allclose(a["g_impact"], b["g_impact"])
    arr = X.to_numpy(dtype=object)
    c = ImpactEncoder(columns=[0], prior_sd=1.0).fit(arr, y).transform(arr)
    np.testing.assert_allclose(c[:, 0].astype(float), b["g_impact"])


def test_shrinkage_rare_levels_shrink_more():
    """A level seen once gets a code much closer to 0 than its raw log-odds."""
    g = np.array(["one"] + ["ones"] * 20 + ["many"] * 200 + ["other"] * 200)
    y = np.r_[1, np.ones(20), np.ones(100), np.zeros(100), np.zeros(150), np.ones(50)]
    enc = ImpactEncoder(family="binomial", prior_sd=1.0).fit(pd.DataFrame({"g": g}), y)
    code = dict(zip(enc.levels_["g"], enc.codes_["g"]))
    mu0 = y.mean()
    unshrunk = (1 - mu0) / (mu0 * (1 - mu0))   # the same step without the prior
    assert 0 < code["one"] < 0.25 * unshrunk    # raw log-odds would be +inf
    assert code["one"] < code["ones"] < np.inf  # 20 rows of 1s: less shrinkage, finite
    assert code["other"] < -0.5


def test_bad_input_raises_clear_errors(small):
    X, y, _ = small
    with pytest.raises(ColumnNotFoundError, match="did you mean 'g'"):
        ImpactEncoder(columns=["gg"]).fit(X, y)
    with pytest.raises(ModelError):
        ImpactEncoder(family="tweedie").fit(X, y)
    with pytest.raises(ModelError):
        ImpactEncoder(prior_sd=-1).fit(X, y)
    with pytest.raises(DataError, match="missing"):
        ImpactEncoder().fit(X, np.r_[np.nan, y[1:]].astype(float))
    with pytest.raises(DataError, match="one outcome per row"):
        ImpactEncoder().fit(X, y[:-1])
    with pytest.raises(DataError):
        ImpactEncoder(family="binomial").fit(X, np.arange(len(y)) % 3)
    enc = ImpactEncoder().fit(X, y)
    with pytest.raises(ValueError, match="missing:\n- x"):   # scikit-learn's own check
        enc.transform(X[["g"]])
    with pytest.raises(ValueError, match="3 features"):
        ImpactEncoder(columns=[0]).fit(X.to_numpy(), y).transform(X.to_numpy()[:, [0, 1, 1]])


def _naive_target_encoding(train: pd.Series, y: np.ndarray, test: pd.Series):
    """Plain target encoding (level mean of y over all training rows, no shrinkage)."""
    means = pd.Series(y).groupby(train.to_numpy()).mean()
    return (train.map(means).astype(float).to_numpy(),
            test.map(means).astype(float).fillna(float(y.mean())).to_numpy())


def test_pure_noise_column_gets_no_importance_downstream():
    """A high-cardinality column unrelated to y: cross-fitted impact codes give it ~zero
    weight downstream, naive target encoding over-fits to it (worse holdout log-loss)."""
    from sklearn.inspection import permutation_importance
    rng = np.random.default_rng(1)
    n, n_train = 4000, 3000
    x = rng.normal(size=n)
    X = pd.DataFrame({"noise": rng.integers(0, 2000, n).astype(str), "x": x})
    y = (rng.random(n) < _expit(1.5 * x)).astype(int)
    Xtr, Xte, ytr, yte = X.iloc[:n_train], X.iloc[n_train:], y[:n_train], y[n_train:]

    enc = ImpactEncoder(random_state=0)
    A, B = enc.fit_transform(Xtr, ytr), enc.transform(Xte)
    na, nb = _naive_target_encoding(Xtr["noise"], ytr, Xte["noise"])
    An, Bn = Xtr.assign(noise=na), Xte.assign(noise=nb)

    oracle = log_loss(yte, LogisticRegression().fit(Xtr[["x"]], ytr).predict_proba(Xte[["x"]]))
    scores = {}
    for name, (a, b) in {"impact": (A, B), "naive": (An, Bn)}.items():
        model = LogisticRegression().fit(a, ytr)
        imp = permutation_importance(model, a, ytr, n_repeats=5, random_state=0,
                                     scoring="neg_log_loss").importances_mean[0]
        scores[name] = (log_loss(yte, model.predict_proba(b)), imp)
    assert abs(scores["impact"][1]) < 0.01             # the model ignores the noise codes
    assert scores["impact"][0] < oracle + 0.01          # as good as the model without it
    assert scores["naive"][1] > 0.1                     # naive codes: the model leans on them
    assert scores["naive"][0] > scores["impact"][0] + 0.1   # ... and it costs on holdout


def test_pipeline_with_logistic_regression(small):
    X, y, _ = small
    pipe = make_pipeline(ImpactEncoder(prior_sd=1.0, random_state=0), LogisticRegression())
    pipe.fit(X, y)
    proba = pipe.predict_proba(X)
    assert proba.shape == (len(X), 2) and np.all(np.isfinite(proba))


@pytest.mark.slow
def test_example_encoder_leakage_runs():
    """examples/encoder_leakage.py (smoke test): cross-fitted codes ~ dropping the column."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).parents[1] / "examples" / "encoder_leakage.py"
    spec = importlib.util.spec_from_file_location("encoder_leakage", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    table = module.main()["holdout log-loss"]
    dropped = table["column dropped (reference)"]
    crossfit = table["impact codes (tau estimated), cross-fitted"]
    assert crossfit < dropped + 0.05
    assert table["naive target encoding"] > crossfit + 0.3

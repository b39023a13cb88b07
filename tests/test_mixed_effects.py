"""MixedEffectsRegressor / MixedEffectsClassifier: exactness against ig.glm with a linear f,
cross-fitting against f absorbing the level effects, nonlinear f, input errors."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("sklearn")

from sklearn.linear_model import LinearRegression  # noqa: E402
from sklearn.neural_network import MLPRegressor  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.tree import DecisionTreeRegressor  # noqa: E402

import impactglm as ig  # noqa: E402
from impactglm.errors import ColumnNotFoundError, DataError, ModelError  # noqa: E402
from impactglm.mixed_effects import MixedEffectsClassifier, MixedEffectsRegressor  # noqa: E402


def _crossed(n=3000, q=200, seed=1):
    rng = np.random.default_rng(seed)
    z = rng.integers(0, q, n)
    w = rng.integers(0, 30, n)
    x = rng.uniform(-1, 1, (n, 3))
    frame = pd.DataFrame(x, columns=["x1", "x2", "x3"])
    frame["z"], frame["w"] = z, w
    re = rng.normal(0, 1, q)[z] + rng.normal(0, 0.5, 30)[w]
    return frame, x, re, rng


def _assert_equal_fits(ref, m, proba=False):
    f = m.estimator_
    np.testing.assert_allclose(f.intercept_, ref.params["Intercept"], atol=1e-6)
    np.testing.assert_allclose(f.coef_, ref.params[["x1", "x2", "x3"]].to_numpy(), atol=1e-6)
    np.testing.assert_allclose(m.linear_coef_.to_numpy(), 0.0, atol=1e-6)
    for name in ("z", "w"):
        np.testing.assert_allclose(m.prior_sd_[name], ref.prior_sd[name], rtol=1e-6)
        a, b = ref.level_effects(name), m.level_effects(name)
        assert list(a.index) == list(b.index)
        np.testing.assert_allclose(b["effect"].to_numpy(), a["effect"].to_numpy(), atol=1e-6)


def test_linear_f_equals_glm_gaussian():
    frame, x, re, rng = _crossed()
    y = x @ [1.0, 2.0, 3.0] + re + rng.normal(size=len(x))
    ref = ig.glm("y ~ x1 + x2 + x3 + ^z + ^w", frame.assign(y=y), prior_sd="auto").fit()
    m = MixedEffectsRegressor(LinearRegression(), high_cardinality=["z", "w"], cv=None,
                              tol=1e-12).fit(frame, y)
    assert m.converged_ and m.n_iter_ <= 3
    _assert_equal_fits(ref, m)
    np.testing.assert_allclose(m.variance_components_["residual"], ref.scale, rtol=1e-6)
    np.testing.assert_allclose(m.predict(frame), ref.predict(frame).to_numpy(), atol=1e-6)
    assert "variance components" in m.summary()


def test_linear_f_equals_glm_binomial():
    frame, x, re, rng = _crossed(seed=2)
    eta = x @ [1.0, -1.0, 0.5] + re
    y = (rng.uniform(size=len(x)) < 1 / (1 + np.exp(-eta))).astype(int)
    ref = ig.glm("y ~ x1 + x2 + x3 + ^z + ^w", frame.assign(y=y), family="binomial",
                 prior_sd="auto").fit()
    m = MixedEffectsClassifier(LinearRegression(), high_cardinality=["z", "w"], cv=None,
                               tol=1e-12).fit(frame, np.where(y == 1, "yes", "no"))
    assert list(m.classes_) == ["no", "yes"]
    _assert_equal_fits(ref, m)
    np.testing.assert_allclose(m.predict_proba(frame)[:, 1], ref.predict(frame).to_numpy(),
                               atol=1e-6)


def _nonlinear(n=4000, q=100, s2b=1.0, seed=3):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, 3))
    z = rng.integers(0, q, n)
    f = np.sin(3 * x[:, 0]) + x[:, 1] * x[:, 2] * 2
    frame = pd.DataFrame(x, columns=["a", "b", "c"])
    frame["g"] = z
    b = rng.normal(0, np.sqrt(s2b), q)
    return frame, f, b[z], rng


def test_cross_fitting_keeps_f_from_absorbing_the_noise():
    """A deep tree fitted in-sample absorbs part of the noise of its own rows (MERF's flaw):
    the residual variance collapses well below the truth (1).  With out-of-fold predictions
    in the random-effects step the residual variance is honest (the truth plus f's own
    out-of-sample error) and the level variance stays near the truth (1)."""
    frame, f, zb, rng = _nonlinear()
    y = f + zb + rng.normal(0, 1, len(f))
    tree = DecisionTreeRegressor(min_samples_leaf=5, random_state=0)
    insample = MixedEffectsRegressor(tree, high_cardinality=["g"], cv=None).fit(frame, y)
    assert insample.variance_components_["residual"] < 0.7
    crossed = MixedEffectsRegressor(tree, high_cardinality=["g"], cv=5).fit(frame, y)
    assert crossed.variance_components_["residual"] > 1.0
    assert 0.6 < crossed.variance_components_["g"] < 1.4
    with pytest.raises(ModelError, match="perfect fit"):     # an interpolating f, in-sample
        MixedEffectsRegressor(DecisionTreeRegressor(), high_cardinality=["g"],
                              cv=None).fit(frame, y)


def test_mlp_f_beats_linear_and_f_alone():
    frame, f, zb, rng = _nonlinear(n=6000)
    y = f + zb + rng.normal(0, 0.5, len(f))
    train, test = np.arange(5000), np.arange(5000, 6000)
    mlp = make_pipeline(StandardScaler(), MLPRegressor(hidden_layer_sizes=(32, 16), max_iter=300,
                                                       early_stopping=True, random_state=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = MixedEffectsRegressor(mlp, high_cardinality=["g"], cv=2).fit(frame.iloc[train],
                                                                         y[train])
        pred = m.predict(frame.iloc[test])
    mse = np.mean((pred - y[test]) ** 2)
    lin = ig.glm("y ~ a + b + c + ^g", frame.iloc[train].assign(y=y[train])).fit()
    mse_lin = np.mean((lin.predict(frame.iloc[test]).to_numpy() - y[test]) ** 2)
    alone = mlp.fit(frame.iloc[train][["a", "b", "c"]], y[train])
    mse_alone = np.mean((alone.predict(frame.iloc[test][["a", "b", "c"]]) - y[test]) ** 2)
    assert mse < 0.8 * mse_lin and mse < 0.5 * mse_alone
    assert abs(m.variance_components_["g"] - 1.0) < 0.35
    assert len(m.estimators_) == 2 and m.path_.shape[0] == m.n_iter_


def test_classifier_with_pipeline_and_cross_fitting():
    frame, f, zb, rng = _nonlinear(n=3000, s2b=1.0, seed=4)
    y = (rng.uniform(size=len(f)) < 1 / (1 + np.exp(-(2 * f + zb)))).astype(int)
    m = MixedEffectsClassifier(make_pipeline(StandardScaler(), DecisionTreeRegressor(
        min_samples_leaf=50, random_state=0)), high_cardinality=["g"], cv=3).fit(frame, y)
    p = m.predict_proba(frame)
    assert p.shape == (3000, 2) and np.allclose(p.sum(1), 1)
    assert set(m.predict(frame)) <= {0, 1}
    assert 0.5 < m.prior_sd_["g"] < 1.6


def test_numpy_input_positions_and_user_data_untouched():
    frame, x, re, rng = _crossed(n=800, q=40)
    y = x @ [1.0, 2.0, 3.0] + re + rng.normal(size=len(x))
    arr = frame.to_numpy()
    before = arr.copy()
    m = MixedEffectsRegressor(LinearRegression(), high_cardinality=[3, 4], cv=None).fit(arr, y)
    assert np.array_equal(arr, before)
    ref = MixedEffectsRegressor(LinearRegression(), high_cardinality=["z", "w"],
                                cv=None).fit(frame, y)
    np.testing.assert_allclose(m.predict(arr), ref.predict(frame), atol=1e-8)
    assert set(m.level_effects(3).index) == set(frame["z"])


def test_unseen_levels_get_zero():
    frame, x, re, rng = _crossed(n=800, q=40)
    y = x @ [1.0, 2.0, 3.0] + re + rng.normal(size=len(x))
    m = MixedEffectsRegressor(LinearRegression(), high_cardinality=["z", "w"],
                              cv=None).fit(frame, y)
    new = frame.iloc[:3].assign(z=[10_000, 10_001, 10_002], w=[999, 999, 999])
    with pytest.warns(ig.errors.UnseenLevelWarning):
        pred = m.predict(new)
    f = m.estimator_.predict(new[["x1", "x2", "x3"]]) + m.linear_coef_["Intercept"] \
        + new[["x1", "x2", "x3"]].to_numpy() @ m.linear_coef_[["x1", "x2", "x3"]].to_numpy()
    np.testing.assert_allclose(pred, f, atol=1e-10)


def test_input_errors():
    frame, x, re, rng = _crossed(n=300, q=20)
    y = rng.normal(size=300)
    with pytest.raises(ColumnNotFoundError, match="zz"):
        MixedEffectsRegressor(LinearRegression(), high_cardinality=["zz"]).fit(frame, y)
    with pytest.raises(ModelError, match="high_cardinality"):
        MixedEffectsRegressor(LinearRegression()).fit(frame, y)
    with pytest.raises(DataError, match="row 5"):
        MixedEffectsRegressor(LinearRegression(), high_cardinality=["z"]).fit(
            frame, np.where(np.arange(300) == 5, np.nan, y))
    with pytest.raises(DataError, match="besides"):
        MixedEffectsRegressor(LinearRegression(), high_cardinality=["z"]).fit(frame[["z"]], y)
    with pytest.raises(DataError, match="3 classes"):
        MixedEffectsClassifier(LinearRegression(), high_cardinality=["z"]).fit(
            frame, np.arange(300) % 3)
    with pytest.raises(ModelError, match="cv"):
        MixedEffectsRegressor(LinearRegression(), high_cardinality=["z"], cv=0).fit(frame, y)
    with pytest.raises(DataError, match="300 rows but y has 299"):
        MixedEffectsRegressor(LinearRegression(), high_cardinality=["z"]).fit(frame, y[:-1])
    m = MixedEffectsRegressor(LinearRegression(), high_cardinality=["z"], cv=None).fit(frame, y)
    with pytest.raises(ModelError, match="not one of"):
        m.level_effects("x1")


def test_torch_network_as_f():
    """LMMNN's model with a torch module as f (BLUP-adjusted-target scheme, warm-started)."""
    torch = pytest.importorskip("torch")
    from impactglm.torch_lmmnn import TorchRegressor
    torch.set_num_threads(1)
    frame, f, zb, rng = _nonlinear(n=4000)
    y = f + zb + rng.normal(0, 0.5, len(f))
    train, test = np.arange(3500), np.arange(3500, 4000)
    net = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.ReLU(), torch.nn.Linear(32, 16),
                              torch.nn.ReLU(), torch.nn.Linear(16, 1))
    first = [p.detach().clone() for p in net.parameters()]
    m = MixedEffectsRegressor(TorchRegressor(net, epochs=15, lr=3e-3), high_cardinality=["g"],
                              cv=2).fit(frame.iloc[train], y[train])
    assert all(torch.equal(a, b) for a, b in zip(first, net.parameters()))   # caller's net
    mse = np.mean((m.predict(frame.iloc[test]) - y[test]) ** 2)
    lin = ig.glm("y ~ a + b + c + ^g", frame.iloc[train].assign(y=y[train])).fit()
    mse_lin = np.mean((lin.predict(frame.iloc[test]).to_numpy() - y[test]) ** 2)
    assert mse < 0.8 * mse_lin
    assert m.estimators_[0].n_epochs_ == 15 * m.n_iter_

"""ig.evaluate on single-eta GLMs: metrics equal a hand computation on the complete rows."""
import numpy as np
import pandas as pd
import pytest

import impactglm as ig


def _fit():
    rng = np.random.default_rng(0)
    d = pd.DataFrame({"x": rng.normal(size=200), "g": rng.integers(0, 20, 200)})
    d["y"] = (rng.random(200) < 1 / (1 + np.exp(-d.x))).astype(float)
    return d, ig.glm("y ~ x + ^g", d, family="binomial", prior_sd=0.5).fit()


def test_evaluate_is_callable_after_the_module_is_imported():
    import impactglm.metrics  # noqa: F401  (importing must not shadow ig.evaluate)
    d, res = _fit()
    assert callable(ig.evaluate)
    assert ig.evaluate(res, d).nobs == len(d)


def test_rows_with_missing_outcome_or_predictor_are_left_out():
    d, res = _fit()
    d2 = d.copy()
    d2.loc[3, "y"] = np.nan
    d2.loc[5, "x"] = np.nan
    before = d2.copy(deep=True)
    m = ig.evaluate(res, d2)
    pd.testing.assert_frame_equal(d2, before)
    full = d2.dropna()
    mu = res.predict(full).to_numpy()
    y = full["y"].to_numpy()
    assert m.nobs == len(full) == 198
    assert m.logloss == pytest.approx(-np.mean(y * np.log(mu) + (1 - y) * np.log1p(-mu)), rel=1e-12)
    assert m.accuracy == pytest.approx(np.mean((mu >= 0.5) == (y == 1)), rel=1e-12)

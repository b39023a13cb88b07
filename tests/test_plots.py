"""Plots: what is drawn equals the numbers it claims to show."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import impactglm as ig  # noqa: E402
from impactglm import plots  # noqa: E402
from impactglm.errors import ModelError  # noqa: E402


@pytest.fixture(scope="module")
def fit():
    sim = ig.make_ratings(4000, 120, 90, kind="binary", seed=3)
    res = ig.glm("y ~ age + ^UserID + ^MovieID", sim.data, family="binomial",
                 prior_sd={"UserID": 0.8, "MovieID": 0.6}).fit()
    return res, sim.data


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _errorbar_halfwidths(ax):
    segs = ax.collections[0].get_segments()
    return np.array([(s[1][0] - s[0][0]) / 2 for s in segs]), np.array([s[0][1] for s in segs])


def test_plot_effects_shows_top_and_bottom_levels_with_intervals(fit):
    res, _ = fit
    ax = res.plot_effects("MovieID", n=5)
    eff = res.level_effects("MovieID").sort_values("effect")
    chosen = eff.iloc[np.r_[0:5, len(eff) - 5:len(eff)]]
    np.testing.assert_allclose(ax.lines[0].get_xdata(), chosen["effect"], rtol=1e-15)
    half, ypos = _errorbar_halfwidths(ax)
    np.testing.assert_allclose(half, stats.norm.ppf(0.975) * chosen["se"], rtol=1e-12)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == [f"{lv} (n={n})" for lv, n in zip(chosen.index, chosen["n"])]
    assert "top and bottom 5 of 90" in ax.get_title()


def test_plot_effects_given_levels_and_own_axes(fit):
    res, _ = fit
    fig, ax0 = plt.subplots()
    eff = res.level_effects("^UserID")
    pick = list(eff.index[:4])
    ax = plots.plot_effects(res, "^UserID", levels=pick, level=0.5, ax=ax0)
    assert ax is ax0
    sub = eff.loc[pick].sort_values("effect")
    np.testing.assert_allclose(ax.lines[0].get_xdata(), sub["effect"])
    half, _ = _errorbar_halfwidths(ax)
    np.testing.assert_allclose(half, stats.norm.ppf(0.75) * sub["se"], rtol=1e-12)
    with pytest.raises(ModelError, match="genre"):
        res.plot_effects("genre")


def test_plot_convergence_draws_the_iteration_log(fit):
    res, _ = fit
    ax = res.plot_convergence()
    log = res.iteration_log
    g = log["max_grad"].to_numpy()
    np.testing.assert_allclose(ax.lines[0].get_ydata(), np.where(g > 0, g, np.nan))
    f = log["objective"].to_numpy()
    gap = f - f.min()
    np.testing.assert_allclose(ax.right_ax.lines[0].get_ydata(), np.where(gap > 0, gap, np.nan))
    assert ax.get_yscale() == "log"


def test_plot_convergence_splits_the_tau_search_into_solves():
    """With prior_sd="auto" the log holds several solves; the default shows the last one,
    whose objective never rises and ends at the fit's certificate."""
    sim = ig.make_ratings(3000, 80, 60, kind="binary", seed=5)
    res = ig.glm("y ~ ^UserID + ^MovieID", sim.data, family="binomial").fit()
    log = res.iteration_log
    starts = plots.solve_starts(log, "objective")
    assert len(starts) > 1                      # the tau search ran several solves
    last = log.iloc[starts[-1]:]
    assert np.all(np.diff(last["objective"]) <= 1e-9 * abs(last["objective"].iloc[0]))
    ax = res.plot_convergence()
    np.testing.assert_allclose(ax.lines[0].get_ydata(), last["max_grad"].to_numpy())
    ax = res.plot_convergence(solve="all")
    assert len(ax.lines[0].get_ydata()) == len(log)
    with pytest.raises(ModelError):
        res.plot_convergence(solve="first")


def test_plot_convergence_of_an_irls_fit():
    rng = np.random.default_rng(0)
    import pandas as pd
    d = pd.DataFrame({"x": rng.normal(size=200)})
    d["y"] = rng.poisson(np.exp(0.3 + 0.5 * d["x"]))
    res = ig.glm("y ~ x", d, family="poisson").fit()
    ax = res.plot_convergence()
    assert len(ax.lines[0].get_xdata()) == len(res.iteration_log)


def test_plot_calibration_table_is_the_binned_frequency(fit):
    res, data = fit
    ax = res.plot_calibration(data, bins=8)
    tab = ax.calibration_table
    p = res.predict(data).to_numpy()
    y = data["y"].to_numpy()
    edges = np.quantile(p, np.linspace(0, 1, 9))
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, 7)
    for b in range(8):
        sel = which == b
        assert tab["n"][b] == sel.sum()
        np.testing.assert_allclose(tab["predicted"][b], p[sel].mean(), rtol=1e-12)
        np.testing.assert_allclose(tab["observed"][b], y[sel].mean(), rtol=1e-12)
        assert tab["lower"][b] <= tab["observed"][b] <= tab["upper"][b]
    assert tab["n"].sum() == len(data)


def test_plot_calibration_needs_binomial():
    import pandas as pd
    d = pd.DataFrame({"x": np.arange(20.0), "y": np.arange(20.0) ** 1.1})
    res = ig.glm("y ~ x", d).fit()
    with pytest.raises(ModelError, match="binomial"):
        res.plot_calibration(d)

"""GLMResults with ^ factors (hand-made FitOutput until solver.py is wired), predict with
unseen levels, immutability, summary sections, and save/load round trips."""
from __future__ import annotations

import hashlib
import json
import re
import warnings

import numpy as np
import pandas as pd
import pytest

import impactglm as ig
from impactglm.design.build import build_design
from impactglm.errors import DataError, ModelError, UnseenLevelWarning
from impactglm.families import get_family
from impactglm.containers import FactorEffects, FitOutput
from impactglm.results.files import save
from impactglm.results.glm import GLMResults
from impactglm.results.restore import load
from conftest import read_csv


def _data(n=60, seed=3):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"x": rng.normal(size=n),
                         "g": rng.choice(["u1", "u2", "u3", "u4"], n),
                         "h": rng.integers(10, 15, n),
                         "k": rng.choice(["a", "b"], n),
                         "expo": rng.uniform(1, 2, n),
                         "y": rng.integers(0, 2, n)})


def _hand_fit(design, family):
    """A FitOutput with made-up effects: eta recomputed exactly from them."""
    rng = np.random.default_rng(0)
    p = design.X.shape[1]
    beta = rng.normal(size=p)
    effects, eta = [], design.X @ beta + design.offset
    for f in design.factors:
        eff = rng.normal(0, 0.5, f.n_levels)
        eta = eta + eff[f.codes]
        effects.append(FactorEffects(f.name, f.levels, f.counts, eff, np.full(f.n_levels, 0.1),
                                     tau=0.7, edf=0.8 * f.n_levels, tau_estimated=True))
    fam = get_family(family)
    log = pd.DataFrame({"iteration": [1, 2], "objective": [2.0, 1.0]})
    return FitOutput(beta=beta, cov_beta=np.eye(p) * 0.01, eta=eta, mu=fam.link.inverse(eta),
                     scale=1.0, n_iter=2, converged=True, log=log, effects=tuple(effects),
                     extra={"max_grad": 3e-9, "n_passes": 7, "log": log})


@pytest.fixture()
def hat_results():
    d = _data()
    design = build_design("y ~ x + C(k) + ^g + ^h", d, family="binomial", offset="expo")
    return GLMResults.from_fit(_hand_fit(design, "binomial"), design, "binomial",
                               method="re-encoding Newton"), d, design


def test_predict_adds_level_effects_and_counts_unseen(hat_results):
    res, d, design = hat_results
    new = d.head(6).copy()
    new.loc[new.index[0], "g"] = "u99"          # unseen level of ^g
    new.loc[new.index[[1, 2]], "h"] = 99        # unseen level of ^h
    with pytest.warns(UnseenLevelWarning, match=r"1 row\(s\) of \^g.*2 row\(s\) of \^h"):
        eta = res.predict(new, which="linear")
    assert res.last_unseen == {"g": 1, "h": 2}
    fe = {e.name: e for e in res.factor_effects}
    lv_g = {v: i for i, v in enumerate(fe["g"].levels)}
    lv_h = {v: i for i, v in enumerate(fe["h"].levels)}
    b = res.params
    for i, row in new.iterrows():
        want = b["Intercept"] + b["x"] * row.x + b["C(k)[T.b]"] * (row.k == "b") + row.expo
        want += fe["g"].effect[lv_g[row.g]] if row.g in lv_g else 0.0
        want += fe["h"].effect[lv_h[row.h]] if row.h in lv_h else 0.0
        assert eta[i] == pytest.approx(want, rel=1e-12)
    with pytest.warns(UnseenLevelWarning):
        mu = res.predict(new)
    np.testing.assert_allclose(mu, 1 / (1 + np.exp(-eta)), rtol=1e-13)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res.predict(d.head(3))
    assert res.last_unseen == {"g": 0, "h": 0}


def test_in_sample_predict_is_the_fitted_eta(hat_results):
    res, d, design = hat_results
    np.testing.assert_allclose(res.predict(which="linear"), res.predict(d, which="linear"),
                               rtol=1e-12)


def test_level_effects_prior_sd_and_log(hat_results):
    res, _, design = hat_results
    frame = res.level_effects("^g")
    assert list(frame.columns) == ["n", "effect", "se"]
    assert list(frame.index) == list(design.factors[0].levels)
    np.testing.assert_array_equal(frame["n"], design.factors[0].counts)
    assert res.level_effects("h").shape[0] == design.factors[1].n_levels
    with pytest.raises(ModelError, match=r"\^zzz.*\^g, \^h"):
        res.level_effects("^zzz")
    assert res.prior_sd == {"g": 0.7, "h": 0.7}
    assert list(res.iteration_log["objective"]) == [2.0, 1.0]


def test_summary_has_a_section_per_factor(hat_results):
    res, _, design = hat_results
    text = str(res.summary())
    assert "^g: 4 levels" in text and "^h: 5 levels" in text
    assert "prior sd tau = 0.7 (estimated)" in text
    assert "max_grad = 3e-09" in text
    assert "re-encoding Newton" in text
    # edf enters the AIC: k = p + sum edf
    k = 3 + 0.8 * 4 + 0.8 * 5
    assert res.aic == pytest.approx(-2 * res.llf + 2 * k, rel=1e-14)


def test_immutability(hat_results):
    res, _, _ = hat_results
    for name in ("params", "aic", "prior_sd", "anything"):
        with pytest.raises(AttributeError, match="immutable"):
            setattr(res, name, 1)
    with pytest.raises(ValueError):
        res._params[0] = 1.0        # the stored arrays are read-only
    frame = res.level_effects("g")
    frame.loc[frame.index[0], "effect"] = 123.0
    assert res.level_effects("g")["effect"].iloc[0] != 123.0
    with pytest.raises(ValueError):
        res.factor_effects[0].effect[0] = 1.0


def test_save_load_round_trip_with_hat_factors(tmp_path, hat_results):
    res, d, _ = hat_results
    written = save(res, tmp_path / "m.json")
    assert [p.name for p in written] == ["m.json", "m.json.npz"]
    meta = json.loads((tmp_path / "m.json").read_text())
    assert meta["family"] == "binomial" and meta["link"] == "logit"
    loaded = ig.load(tmp_path / "m.json")
    pd.testing.assert_series_equal(loaded.params, res.params)
    pd.testing.assert_frame_equal(loaded.cov_params(), res.cov_params())
    new = d.sample(20, random_state=1)
    new.loc[new.index[0], "g"] = "new-level"
    with pytest.warns(UnseenLevelWarning):
        a = res.predict(new)
    with pytest.warns(UnseenLevelWarning):
        b = loaded.predict(new)
    pd.testing.assert_series_equal(a, b, check_exact=True)
    assert loaded.last_unseen == res.last_unseen
    for name in ("g", "h"):
        pd.testing.assert_frame_equal(loaded.level_effects(name), res.level_effects(name))
    assert loaded.prior_sd == res.prior_sd
    assert str(loaded.summary()) == str(res.summary())
    assert loaded.aic == res.aic and loaded.nobs == res.nobs
    with pytest.raises(ModelError, match="loaded model"):
        loaded.fittedvalues


@pytest.mark.parametrize("formula,kw", [
    ("prop ~ x1 * C(k) + standardize(x2)", {"family": "binomial", "weights": "trials"}),
    ("count ~ np.log(x3) + I(x1**2) + C(k)", {"family": "poisson", "offset": "logexp"}),
    ("y_gamma_log ~ center(x1) + x2", {"family": "gamma", "link": "log"}),
])
def test_save_load_round_trip_plain_glm(tmp_path, formula, kw):
    data = read_csv("glm_data.csv")
    res = ig.glm(formula, data, **kw).fit()
    res.save(tmp_path / "model.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json"]
    loaded = ig.load(str(tmp_path / "model.json"))
    new = data.iloc[::7]
    for which in ("mean", "linear"):
        pd.testing.assert_series_equal(loaded.predict(new, which=which),
                                       res.predict(new, which=which), check_exact=True)
    pd.testing.assert_series_equal(res.predict(new), res.fittedvalues.iloc[::7],
                                   check_names=False, rtol=1e-13)
    assert str(loaded.summary()) == str(res.summary())


def test_load_rejects_other_files(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("[1, 2]")
    with pytest.raises(DataError, match="not a saved impactglm model"):
        load(bad)
    with pytest.raises(DataError, match="no saved model"):
        load(tmp_path / "missing.json")
    bad.write_text("not json")
    with pytest.raises(DataError, match="not JSON"):
        load(bad)


def test_round_trip_with_the_solver(tmp_path):
    """A real ^ fit (fixed prior sd: fast) predicts identically after save/load."""
    sim = ig.make_ratings(400, 30, 15, kind="binary", seed=1)
    res = ig.glm("y ~ age + ^UserID + ^MovieID", sim.data, family="binomial",
                 prior_sd={"UserID": 0.5, "MovieID": 0.3}).fit()
    assert res.prior_sd == {"UserID": 0.5, "MovieID": 0.3}
    frame = res.level_effects("UserID")
    assert frame["n"].sum() == res.nobs
    assert set(frame.index) == set(sim.data["UserID"])
    # in-sample eta = X beta + effects of the rows' levels
    eta = res.predict(which="linear")
    by_hand = (res.params["Intercept"] + res.params["age"] * sim.data["age"]
               + frame["effect"].reindex(sim.data["UserID"]).to_numpy()
               + res.level_effects("MovieID")["effect"].reindex(sim.data["MovieID"]).to_numpy())
    np.testing.assert_allclose(eta, by_hand, rtol=1e-12)
    res.save(tmp_path / "hc.json")
    loaded = ig.load(tmp_path / "hc.json")
    new = sim.data.iloc[::3].copy()
    new.loc[new.index[:2], "UserID"] = 10_000         # unseen
    with pytest.warns(UnseenLevelWarning):
        a = res.predict(new)
    with pytest.warns(UnseenLevelWarning):
        b = loaded.predict(new)
    pd.testing.assert_series_equal(a, b, check_exact=True)
    assert loaded.last_unseen == {"UserID": 2, "MovieID": 0}


def test_summary_states_how_tau_was_chosen():
    sim = ig.make_ratings(300, 20, 10, kind="gaussian", seed=4)
    res = ig.glm("y ~ age + ^UserID", sim.data).fit()
    assert re.search(r"Prior sd:\s+REML estimate", str(res.summary()))
    res = ig.glm("y ~ age + ^UserID", sim.data, prior_sd=0.3).fit()
    assert re.search(r"Prior sd:\s+given", str(res.summary()))
    assert "prior sd tau = 0.3 (given)" in str(res.summary())


def test_load_refuses_pickles_newer_formats_and_missing_arrays(tmp_path, hat_results):
    res, _, _ = hat_results
    save(res, tmp_path / "m.json")
    meta = json.loads((tmp_path / "m.json").read_text())
    # an object array in the .npz would need unpickling: refused (even with a matching hash)
    np.savez(tmp_path / "m.json.npz", counts_0=np.array([object()], dtype=object))
    meta["arrays_sha256"] = hashlib.sha256((tmp_path / "m.json.npz").read_bytes()).hexdigest()
    (tmp_path / "m.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="plain-array"):
        load(tmp_path / "m.json")
    (tmp_path / "m.json.npz").unlink()
    with pytest.raises(DataError, match="missing"):
        load(tmp_path / "m.json")
    meta["format_version"] = 99
    (tmp_path / "m.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="newer impactglm"):
        load(tmp_path / "m.json")

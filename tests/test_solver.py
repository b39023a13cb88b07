"""The re-encoding Newton solver against the independent exact solver (tests/exact.py)."""
from __future__ import annotations

import numpy as np
import pytest

from impactglm.errors import DataError, ModelError, SeparationWarning
from impactglm.solvers.api import fit_high_cardinality

from conftest import EXACT_RTOL
from exact import exact_fit


def _data(family, n=2500, q=(300, 40), p_extra=1, seed=0):
    rng = np.random.default_rng(seed)
    codes = [rng.integers(0, qk, n).astype(np.int32) for qk in q]
    X = np.column_stack([np.ones(n)] + [rng.normal(size=n) for _ in range(p_extra)])
    eta = 0.2 + X[:, 1:].sum(1) * 0.4 if p_extra else np.full(n, 0.2)
    for c, qk, sd in zip(codes, q, (0.8, 0.5, 0.3)):
        eta = eta + rng.normal(0, sd, qk)[c]
    if family == "binomial":
        y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    elif family == "poisson":
        y = rng.poisson(np.exp(eta)).astype(float)
    else:
        y = 3 + eta + rng.normal(size=n)
    return X, [(c, qk) for c, qk in zip(codes, q)], y


def _assert_close(a, b, rtol):
    """max |a - b| <= rtol * max |b| (relative to the scale of the vector; b = 0 -> 1e-6 scale)."""
    a, b = np.asarray(a), np.asarray(b)
    assert np.max(np.abs(a - b)) <= rtol * max(np.max(np.abs(b)), 1e-6), np.max(np.abs(a - b))


CASES = [("binomial", (300,), 1, None), ("binomial", (300, 40), 1, None),
         ("poisson", (500, 60), 2, None), ("gaussian", (300, 40), 1, 1.3),
         ("binomial", (1500, 400), 0, None), ("poisson", (200,), 0, None)]


@pytest.mark.parametrize("family,q,p_extra,scale", CASES)
def test_matches_exact_solver(family, q, p_extra, scale):
    X, factors, y, = _data(family, q=q, p_extra=p_extra)
    taus = [0.8, 0.5][:len(q)]
    rng = np.random.default_rng(5)
    w = rng.uniform(0.5, 2.0, len(y))
    off = rng.normal(0, 0.1, len(y))
    out = fit_high_cardinality(X, factors, y, w, off, family, taus, tol=1e-10, scale=scale)
    ex = exact_fit(X, factors, y, w, off, family, taus, phi=scale or 1.0)
    assert out.converged
    _assert_close(out.beta, ex["beta"], EXACT_RTOL)
    for eff, ref in zip(out.effects, ex["effects"]):
        _assert_close(eff.effect, ref, EXACT_RTOL)
    assert out.extra["objective"] == pytest.approx(ex["objective"], rel=EXACT_RTOL)
    # posterior sd and the beta block of the inverse penalised Hessian
    sd = np.sqrt(np.diag(ex["cov"]))
    p = X.shape[1]
    s = p
    for eff in out.effects:
        np.testing.assert_allclose(eff.se, sd[s:s + eff.n_levels], rtol=EXACT_RTOL)
        s += eff.n_levels
    np.testing.assert_allclose(out.cov_beta, ex["cov"][:p, :p], rtol=EXACT_RTOL)
    # the certificate: the exact gradient at our solution is small
    theta = np.concatenate([out.beta] + [e.effect for e in out.effects])
    assert np.max(np.abs(out.extra["max_grad"])) < 1e-6
    assert out.extra["n_passes"] >= out.n_iter
    log = out.log
    assert list(log.columns[:3]) == ["iteration", "objective", "max_grad"]
    assert np.all(np.diff(log["objective"].to_numpy()) <= 1e-9 * abs(log["objective"].iloc[0]))
    assert theta.shape == ex["theta"].shape


def test_edf_and_tau_reported():
    X, factors, y = _data("binomial", q=(200,))
    out = fit_high_cardinality(X, factors, y, None, None, "binomial", [0.6], tol=1e-9)
    e = out.effects[0]
    assert e.tau == 0.6 and not e.tau_estimated
    # edf = sum W/(W + 1/tau^2) with W the level sums of mu(1-mu)
    mu = out.mu
    W = np.bincount(factors[0][0], mu * (1 - mu), 200)
    assert e.edf == pytest.approx(np.sum(W / (W + 1 / 0.36)), rel=1e-6)
    assert out.extra["prior_sd"] == {"factor0": 0.6}


def test_row_permutation_and_relabeling_invariance():
    X, factors, y = _data("binomial", q=(200, 30))
    ref = fit_high_cardinality(X, factors, y, None, None, "binomial", [0.8, 0.5], tol=1e-10)
    rng = np.random.default_rng(3)
    perm = rng.permutation(len(y))
    relab = [rng.permutation(q) for _, q in factors]
    fac2 = [(r[c[perm]].astype(np.int32), q) for (c, q), r in zip(factors, relab)]
    out = fit_high_cardinality(X[perm], fac2, y[perm], None, None, "binomial", [0.8, 0.5], tol=1e-10)
    np.testing.assert_allclose(out.beta, ref.beta, rtol=1e-8)
    for e, e0, r in zip(out.effects, ref.effects, relab):
        np.testing.assert_allclose(e.effect[r], e0.effect, rtol=1e-7, atol=1e-10)
        np.testing.assert_allclose(e.se[r], e0.se, rtol=1e-8)


def test_duplicated_rows_equal_weight_two():
    X, factors, y = _data("poisson", q=(150, 20))
    w2 = fit_high_cardinality(X, factors, y, np.full(len(y), 2.0), None, "poisson", [0.8, 0.5], tol=1e-10)
    fac = [(np.concatenate([c, c]), q) for c, q in factors]
    dup = fit_high_cardinality(np.vstack([X, X]), fac, np.concatenate([y, y]), None, None, "poisson",
                               [0.8, 0.5], tol=1e-10)
    np.testing.assert_allclose(dup.beta, w2.beta, rtol=1e-8)
    for a, b in zip(dup.effects, w2.effects):
        np.testing.assert_allclose(a.effect, b.effect, rtol=1e-7, atol=1e-10)
        np.testing.assert_allclose(a.se, b.se, rtol=1e-8)


def test_inputs_not_mutated():
    X, factors, y = _data("binomial", q=(50,))
    copies = [X.copy(), factors[0][0].copy(), y.copy()]
    fit_high_cardinality(X, factors, y, None, None, "binomial", [1.0])
    for a, b in zip(copies, [X, factors[0][0], y]):
        np.testing.assert_array_equal(a, b)


def test_one_level_factor_and_all_rows_in_one_level():
    X, factors, y = _data("binomial", q=(1,), p_extra=1)
    out = fit_high_cardinality(X, factors, y, None, None, "binomial", [0.5], tol=1e-10)
    ex = exact_fit(X, factors, y, None, None, "binomial", [0.5])
    assert out.converged
    _assert_close(out.effects[0].effect, ex["effects"][0], EXACT_RTOL)
    # a factor with many levels but all rows in level 7
    c = np.full(len(y), 7, dtype=np.int32)
    out = fit_high_cardinality(X, [(c, 10)], y, None, None, "binomial", [0.5], tol=1e-10)
    assert out.converged and np.all(out.effects[0].effect[np.arange(10) != 7] == 0)
    assert np.all(out.effects[0].se[np.arange(10) != 7] == pytest.approx(0.5))


def test_more_than_a_million_levels():
    rng = np.random.default_rng(0)
    q = 1_200_000
    n = 300_000
    c = rng.integers(0, q, n).astype(np.int32)
    c2 = rng.integers(0, 50, n).astype(np.int32)
    y = (rng.random(n) < 0.3).astype(float)
    out = fit_high_cardinality(None, [(c, q), (c2, 50)], y, None, None, "binomial", [0.5, 0.5], tol=1e-8)
    assert out.converged and out.effects[0].effect.shape == (q,)
    assert out.extra["max_step"] <= 1e-8
    assert np.sum(out.effects[0].counts > 0) < q      # many empty levels: effect 0, se tau
    empty = out.effects[0].counts == 0
    assert np.all(out.effects[0].effect[empty] == 0) and np.allclose(out.effects[0].se[empty], 0.5)


def test_separated_levels_warn_with_count():
    rng = np.random.default_rng(2)
    n = 400
    c = rng.integers(0, 40, n).astype(np.int32)
    y = (rng.random(n) < 0.5).astype(float)
    y[c == 3] = 1.0
    y[c == 5] = 0.0
    with pytest.warns(SeparationWarning, match="2 level"):
        out = fit_high_cardinality(None, [(c, 40)], y, None, None, "binomial", None, tol=1e-8)
    eff = out.effects[0].effect
    assert np.all(np.isfinite(eff)) and eff[3] > 5 and eff[5] < -5
    assert out.effects[0].tau is None


def test_bad_input_errors():
    X, factors, y = _data("binomial", q=(20,))
    c = factors[0][0].copy()
    c[17] = -1
    with pytest.raises(DataError, match="row 17"):
        fit_high_cardinality(X, [(c, 20)], y, None, None, "binomial", [1.0], names=["user"])
    with pytest.raises(DataError, match="'user'"):
        fit_high_cardinality(X, [(factors[0][0], 5)], y, None, None, "binomial", [1.0], names=["user"])
    yb = y.copy()
    yb[3] = np.nan
    with pytest.raises(DataError):
        fit_high_cardinality(X, factors, yb, None, None, "binomial", [1.0])
    with pytest.raises(ModelError, match="positive"):
        fit_high_cardinality(X, factors, y, None, None, "binomial", [-1.0])
    with pytest.raises(ModelError):
        fit_high_cardinality(X, factors, y, None, None, "gamma", [1.0])
    with pytest.raises(DataError, match="weights"):
        fit_high_cardinality(X, factors, y, -np.ones(len(y)), None, "binomial", [1.0])


def test_large_crossed_path_cov_beta_equals_exact(monkeypatch):
    """Above EXACT_DENSE_LIMIT cov_beta comes from conjugate-gradient solves with the full
    level block; it must equal the exact Schur-complement path."""
    from impactglm.solvers import linalg
    X, factors, y = _data("poisson", q=(300, 80), p_extra=2)
    exact = fit_high_cardinality(X, factors, y, None, None, "poisson", [0.8, 0.5], tol=1e-10)
    assert exact.extra["se_exact"]
    monkeypatch.setattr(linalg, "EXACT_DENSE_LIMIT", 0)
    cg = fit_high_cardinality(X, factors, y, None, None, "poisson", [0.8, 0.5], tol=1e-10)
    assert not cg.extra["se_exact"]
    np.testing.assert_allclose(cg.cov_beta, exact.cov_beta, rtol=1e-6)
    # the level se approximation (cross-factor coupling neglected) stays close for these sizes
    for a, b in zip(cg.effects, exact.effects):
        assert np.all(a.se > 0.5 * b.se) and np.all(a.se < 1.5 * b.se)


def test_verbose_prints_the_log(capsys):
    X, factors, y = _data("binomial", q=(50,))
    out = fit_high_cardinality(X, factors, y, None, None, "binomial", [1.0], verbose=True, tol=1e-9)
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == len(out.log) and printed[0].startswith("iter")
    assert list(out.log.columns) == ["iteration", "objective", "max_grad", "max_step", "step", "passes",
                                     "seconds"]


def test_poisson_auto_fixed_point_is_stationary():
    """prior_sd='auto' (one factor): tau minimises the Laplace criterion (Brent): the criterion at
    tau (1 +- 1%) is not lower."""
    from impactglm.solvers import prior_scale
    from impactglm.families import get_family
    from impactglm.solvers.scalar import solve_mode
    from impactglm.solvers.problem import LevelProblem
    X, factors, y = _data("poisson", q=(120,), p_extra=1)
    out = fit_high_cardinality(X, factors, y, None, None, "poisson", "auto", tol=1e-10)
    tau = out.effects[0].tau
    assert out.effects[0].tau_estimated and 0.3 < tau < 1.5
    prob = LevelProblem(X, factors, y, None, None, get_family("poisson"))
    vals = []
    for t in (tau * 0.99, tau, tau * 1.01):
        lam_l = prob.expand([1 / t ** 2])
        st = solve_mode(prob, [t], lam_l, 1.0, tol=1e-12, maxiter=200)
        vals.append(prior_scale.laplace_criterion(prob, st, lam_l))
    assert vals[1] <= vals[0] and vals[1] <= vals[2]


def test_gaussian_fixed_tau_scale_fixed_point():
    """Without ``scale`` the gaussian fit iterates sigma^2 = RSS / (n - p - edf) to its fixed point."""
    X, factors, y = _data("gaussian", q=(80,), p_extra=1)
    out = fit_high_cardinality(X, factors, y, None, None, "gaussian", [0.5], tol=1e-11)
    rss = np.sum((y - out.mu) ** 2)
    edf = out.effects[0].edf
    assert out.scale == pytest.approx(rss / (len(y) - X.shape[1] - edf), rel=1e-7)
    assert 0.7 < out.scale < 1.4                     # the simulated noise variance is 1
    ex = exact_fit(X, factors, y, None, None, "gaussian", [0.5], phi=out.scale)
    _assert_close(out.effects[0].effect, ex["effects"][0], EXACT_RTOL)


def test_overflowing_offset_is_a_clear_error_or_finite():
    rng = np.random.default_rng(0)
    n = 300
    c = rng.integers(0, 20, n).astype(np.int32)
    y = rng.poisson(3.0, n).astype(float)
    off = rng.normal(0.0, 300.0, n)
    try:
        out = fit_high_cardinality(None, [(c, 20)], y, None, off, "poisson", [0.5])
    except ModelError as exc:
        assert "overflow" in str(exc)
    else:
        assert np.all(np.isfinite(out.effects[0].effect)) and np.all(np.isfinite(out.cov_beta))


def test_saturated_gaussian_fit_is_a_clear_error():
    g = np.array([0, 0, 1, 1, 2, 2], dtype=np.int32)
    h = np.array([0, 1, 0, 1, 0, 2], dtype=np.int32)
    y = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 7.0])
    with pytest.raises(ModelError, match="saturated"):
        fit_high_cardinality(None, [(g, 3), (h, 3)], y, None, None, "gaussian", None)


def test_sorted_storage_returns_caller_order(monkeypatch):
    """Large problems are stored sorted by the largest factor; eta, mu and effects come back in
    the caller's order and equal a direct computation."""
    rng = np.random.default_rng(7)
    n = 60_000
    c1 = rng.integers(0, 900, n).astype(np.int32)
    c2 = rng.integers(0, 40, n).astype(np.int32)
    X = np.column_stack([np.ones(n), rng.normal(size=n)])
    off = rng.normal(0, 0.1, n)
    w = rng.uniform(0.5, 1.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(0.3 * X[:, 1] + rng.normal(0, 0.7, 900)[c1])))).astype(float)
    out = fit_high_cardinality(X, [(c1, 900), (c2, 40)], y, w, off, "binomial", [0.7, 0.4], tol=1e-10)
    eta = off + X @ out.beta + out.effects[0].effect[c1] + out.effects[1].effect[c2]
    np.testing.assert_allclose(out.eta, eta, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out.mu, 1 / (1 + np.exp(-eta)), rtol=1e-12)
    np.testing.assert_array_equal(out.effects[0].counts, np.bincount(c1, minlength=900))
    from impactglm.solvers.problem import LevelProblem
    monkeypatch.setattr(LevelProblem, "SORT_MIN_ROWS", 10 ** 9)             # unsorted storage
    ref = fit_high_cardinality(X, [(c1, 900), (c2, 40)], y, w, off, "binomial", [0.7, 0.4], tol=1e-10)
    np.testing.assert_allclose(out.beta, ref.beta, rtol=1e-8)
    for a, b in zip(out.effects, ref.effects):
        np.testing.assert_allclose(a.effect, b.effect, rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(a.se, b.se, rtol=1e-8)
    np.testing.assert_allclose(out.cov_beta, ref.cov_beta, rtol=1e-8)


def test_reduced_hessian_from_level_sums_equals_row_pass():
    """Constant X rows: the reduced Hessian from the level weight sums plus the cross-factor
    pass equals the full light pass D'WD (NumPy twin), for three crossed factors and weights."""
    from impactglm.families import get_family
    from impactglm.kernels import levels as KL
    from impactglm.solvers.problem import LevelProblem
    rng = np.random.default_rng(5)
    n, q = 3000, (40, 17, 6)
    factors = [(rng.integers(0, k, n).astype(np.int32), k) for k in q]
    y = rng.integers(0, 2, n).astype(float)
    X = np.full((n, 1), 2.0)
    prob = LevelProblem(X, factors, y, rng.uniform(0.5, 2, n), None, get_family("binomial"))
    assert prob.X.shape == (1, 1)      # a caller's constant column is stored as one broadcast row
    prob.w[:] = rng.uniform(0.1, 1.0, n)
    W = np.zeros(prob.Q)
    for k in range(prob.K):
        W += np.bincount(prob.gidx[:, k], weights=prob.w, minlength=prob.Q)
    L = rng.normal(size=(prob.Q, 3))
    H = prob.reduced_hessian(L, W)
    ref = KL.hess_pass_numpy(prob.X, prob.gidx, prob.w, L)
    np.testing.assert_allclose(H, ref, rtol=1e-10, atol=1e-10 * np.abs(ref).max())
    np.testing.assert_allclose(prob.reduced_hessian(L), ref, rtol=1e-10, atol=1e-10 * np.abs(ref).max())


def test_reprice_equals_a_new_pass():
    """After a pass under one prior, ``reprice`` gives the objective of a fresh pass under another
    (the data parts of a pass do not depend on the prior precisions)."""
    from impactglm.families import get_family
    from impactglm.solvers.scalar import initial_state
    from impactglm.solvers.problem import LevelProblem, reprice
    X, factors, y = _data("binomial", q=(30, 12), p_extra=1)
    prob = LevelProblem(X, factors, y, None, None, get_family("binomial"))
    st = initial_state(prob, [0.5, 0.5], 1.0)
    prob.evaluate(st, prob.expand([4.0, 4.0]), 1.0)
    lam2 = prob.expand([1.0, 9.0])
    reprice(st, lam2, 1.0)
    f_repriced, G = st.f, st.G.copy()
    prob.evaluate(st, lam2, 1.0)
    assert f_repriced == pytest.approx(st.f, rel=1e-14)
    np.testing.assert_array_equal(G, st.G)


def test_gaussian_scale_fixed_point_that_does_not_settle_warns_and_stays_consistent():
    """Found by fuzzing: a near-saturated gaussian fit whose sigma^2 fixed point does not
    settle in 100 updates.  The fit must warn, and the effects must be the mode at the
    reported scale (independent certificate), not at the previous sigma^2."""
    import sys
    import warnings
    from pathlib import Path

    import pandas as pd

    import impactglm as ig
    from impactglm.errors import ConvergenceWarning
    sys.path.insert(0, str(Path(__file__).parent))
    from certificate import max_newton_step

    frame = pd.read_csv(Path(__file__).parent / "data" / "gaussian_sigma_cycle.csv",
                        dtype={"h": str})
    model = ig.glm("y ~ x + ^g + ^h", frame, family="gaussian", prior_sd=1.0, weights="w")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = model.fit()
    assert any(issubclass(w.category, ConvergenceWarning) and "sigma^2" in str(w.message)
               for w in caught)
    assert max_newton_step(model, res) < 1e-6


@pytest.mark.parametrize("family", ["binomial", "poisson", "gaussian"])
def test_covariate_constant_within_levels_converges_fast(family):
    """x_1 constant within the levels of factor 0 and x_2 within factor 1 are nearly
    confounded with the effects; the coupled (Schur) direction moves them jointly, so
    the fit converges in few iterations and still matches the exact solver."""
    X, factors, y = _data(family, n=6000, q=(400, 50), p_extra=0, seed=3)
    rng = np.random.default_rng(11)
    u = rng.normal(2.0, 1.0, 400)[factors[0][0]]
    v = rng.normal(-1.0, 2.0, 50)[factors[1][0]]
    X = np.column_stack([X, u, v])
    scale = 1.3 if family == "gaussian" else None
    out = fit_high_cardinality(X, factors, y, None, None, family, [0.8, 0.6], tol=1e-10, scale=scale)
    ex = exact_fit(X, factors, y, None, None, family, [0.8, 0.6], phi=scale or 1.0)
    assert out.converged
    assert out.n_iter <= 20, out.n_iter     # 27-61 without the coupled direction
    _assert_close(out.beta, ex["beta"], EXACT_RTOL)
    for eff, ref in zip(out.effects, ex["effects"]):
        _assert_close(eff.effect, ref, EXACT_RTOL)

"""Binary logistic ``y ~ ^user + ^movie`` through the public API, against glum and GPBoost.

    python benchmarks/bench_binary.py                       # 1M and 10M rows, every tool
    python benchmarks/bench_binary.py --rows 1e6 --tools impactglm,glum

Data: ``impactglm.make_ratings(rows, users, movies, kind="binary", covariates=False)``
(6,040 users x 3,706 movies at 1M rows, 69,878 x 10,677 at 10M, as MovieLens; true
effects N(0, 0.8^2) and N(0, 0.6^2)), generated once per size and cached in --workdir;
a random 10% of the rows is held out.  Every tool runs in its own fresh process on the
same rows.

Tools (the configuration of each is in its name; "(labelled)" marks non-default ones):

* ``floor``: the floor kernel written here: one fused numba pass over the training rows
  computing the gradient and the Hessian diagonal of the logistic log-likelihood for
  the intercept and both factors (thread-private accumulators, all cores), the least
  any Newton-type pass must cost.  Its seconds per pass are the median of 5 passes.
* ``impactglm``: ``ig.glm("y ~ ^user + ^movie", train, family="binomial",
  prior_sd=tau).fit()`` with default settings, as the README shows; then
  ``res.bse`` / ``res.level_effects(...)`` (timed, in case they are computed on first
  access) and ``res.predict(holdout)``.
* ``impactglm auto``: the same with ``prior_sd="auto"`` (tau estimated).
* ``glum``: ``GeneralizedLinearRegressor(family="binomial", alpha=1/(n_train tau^2),
  l1_ratio=0, solver="lbfgs", fit_intercept=True)`` on a scipy sparse one-hot of user and
  movie, at its default gradient_tol.  glum minimises mean deviance / 2 + alpha/2 ||w||^2,
  the intercept free: times n_train this is impactglm's objective at prior_sd=tau.
* ``glum matched``: the same at the loosest gradient_tol in 1e-5, 1e-6, ... 1e-10
  (max_iter=1000) whose objective is within 1e-8 relative of impactglm's (found in the
  run; the tolerances tried, their times and gaps are printed).
* ``gpboost``: ``gpboost.GPModel(group_data=[user, movie], likelihood="bernoulli_logit")``
  with an intercept (``X = 1``), default settings: estimates both variances, so it stands
  beside ``impactglm auto``.  Stopped above --rss-limit GB (default 12).

Columns: seconds per stage: ``design`` (``ig.glm(...)``; the one-hot for glum; the
GPModel for GPBoost), ``iterations`` (the solver's iterations: the results' iteration log),
``posterior`` (standard errors after the last iteration: the solver's ``fit_seconds``
minus the log's last time, plus any time of first access to ``bse``/``level_effects``),
``results`` (the rest of ``fit()``), ``predict`` (the holdout); ``fit`` = design + everything
up to the fitted results; passes over the rows (impactglm; glum: L-BFGS iterations),
seconds per pass (impactglm: the log's time between its first and last iteration over the
passes between them) and its ratio to the floor, peak RSS of the process
(``ru_maxrss`` of the child, data included), holdout log-loss, and the penalised objective
sum_i deviance_i / 2 + sum_l a_l^2 / (2 tau^2) **computed here from each tool's returned
intercept and level effects** on the training rows (at tau for the fixed-prior tools, at
the tool's own estimated sds for the others), with its relative gap to the best objective
of the fixed-prior tools.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _runner import emit, load_line, run_child  # noqa: E402

SIZES = {1_000_000: (6040, 3706), 10_000_000: (69878, 10677)}
TOOLS = ["floor", "impactglm", "impactglm auto", "glum", "glum matched", "gpboost"]
MATCH_TOLS = [1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10]
MATCH_GAP = 1e-8


# --------------------------------------------------------------------------- data

def data_path(rows: int, seed: int, workdir: Path) -> Path:
    """Generate the rows once (npz: user, movie ids, y, holdout mask, oracle log-loss)."""
    path = workdir / f"binary_{rows}_s{seed}.npz"
    if path.exists():
        return path
    import impactglm as ig

    nu, nm = SIZES.get(rows, (max(rows // 165, 10), max(rows // 270, 10)))
    sim = ig.make_ratings(rows, nu, nm, kind="binary", covariates=False, seed=seed)
    test = np.random.default_rng(seed + 1).random(rows) < 0.1
    d = sim.data
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, user=d["UserID"].to_numpy(np.int32), movie=d["MovieID"].to_numpy(np.int32),
             y=d["y"].to_numpy(np.int8), test=test, n_users=nu, n_movies=nm,
             oracle=sim.oracle_logloss(np.flatnonzero(test)))
    os.replace(tmp, path)
    return path


def load(path: str):
    z = np.load(path)
    return (z["user"], z["movie"], z["y"], z["test"], int(z["n_users"]), int(z["n_movies"]))


def logloss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(np.asarray(p, float), 1e-15, 1 - 1e-15)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def objective(y, u, m, b0, au, am, tau_u, tau_m) -> float:
    """sum_i deviance_i / 2 + sum a^2 / (2 tau^2): codes ``u``, ``m`` index ``au``, ``am``."""
    eta = b0 + au[u] + am[m]
    nll = float(np.sum(np.logaddexp(0.0, eta) - y * eta))
    return nll + float(au @ au) / (2 * tau_u ** 2) + float(am @ am) / (2 * tau_m ** 2)


# --------------------------------------------------------------------------- floor

def _floor_kernels():
    import numba
    from numba import njit, prange

    @njit(parallel=True)
    def grad_hess_pass(u, m, y, b0, au, am, gu, hu, gm, hm):
        """One fused pass: gradient and Hessian diagonal of the logistic log-likelihood
        in the intercept and every level of both factors (per-thread accumulators)."""
        n = u.shape[0]
        T = gu.shape[0]
        g0 = np.zeros(T)
        h0 = np.zeros(T)
        for t in prange(T):
            gu[t, :] = 0.0
            hu[t, :] = 0.0
            gm[t, :] = 0.0
            hm[t, :] = 0.0
            lo = t * n // T
            hi = (t + 1) * n // T
            for i in range(lo, hi):
                eta = b0 + au[u[i]] + am[m[i]]
                p = 1.0 / (1.0 + np.exp(-eta))
                r = p - y[i]
                w = p * (1.0 - p)
                gu[t, u[i]] += r
                hu[t, u[i]] += w
                gm[t, m[i]] += r
                hm[t, m[i]] += w
                g0[t] += r
                h0[t] += w
        for t in range(1, T):
            gu[0, :] += gu[t, :]
            hu[0, :] += hu[t, :]
            gm[0, :] += gm[t, :]
            hm[0, :] += hm[t, :]
        return g0.sum(), h0.sum()

    return grad_hess_pass, numba.get_num_threads()


def worker_floor(path: str) -> dict:
    user, movie, y, test, nu, nm = load(path)
    tr = ~test
    u = np.ascontiguousarray(user[tr] - 1, dtype=np.int32)
    m = np.ascontiguousarray(movie[tr] - 1, dtype=np.int32)
    yf = y[tr].astype(np.float64)
    kernel, T = _floor_kernels()
    au, am = np.zeros(nu), np.zeros(nm)
    acc = [np.zeros((T, nu)), np.zeros((T, nu)), np.zeros((T, nm)), np.zeros((T, nm))]
    kernel(u[:1000], m[:1000], yf[:1000], 0.0, au, am, *acc)          # compile
    times = []
    for _ in range(5):
        t = time.perf_counter()
        kernel(u, m, yf, 0.1, au, am, *acc)
        times.append(time.perf_counter() - t)
    return {"s_per_pass": float(np.median(times)), "threads": T,
            "note": f"fused grad + Hessian diagonal, {T} threads, median of 5 passes"}


# --------------------------------------------------------------------------- impactglm

def _effects(res, name: str, size: int) -> np.ndarray:
    """Level effects of ^name as a vector indexed by id - 1 (levels absent: 0)."""
    le = res.level_effects(name)
    out = np.zeros(size)
    out[np.asarray(le.index, dtype=np.int64) - 1] = le["effect"].to_numpy()
    return out


def worker_impactglm(path: str, prior) -> dict:
    import pandas as pd

    import impactglm as ig

    user, movie, y, test, nu, nm = load(path)
    df = pd.DataFrame({"user": user, "movie": movie, "y": y})
    train, hold = df[~test], df[test]
    t0 = time.perf_counter()
    model = ig.glm("y ~ ^user + ^movie", train, family="binomial", prior_sd=prior)
    t1 = time.perf_counter()
    res = model.fit()
    t2 = time.perf_counter()
    _ = res.bse, res.level_effects("user")["se"], res.level_effects("movie")["se"]
    t3 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")            # levels seen only in the holdout
        p = res.predict(hold).to_numpy()
    t4 = time.perf_counter()

    log = res.iteration_log
    extra = res.to_dict()[0].get("extra", {})
    fit_call = t2 - t1
    solver = float(extra.get("fit_seconds", extra.get("seconds", fit_call)))
    if "seconds" in log and len(log):
        iters = float(log["seconds"].iloc[-1])
        dp = float(log["passes"].iloc[-1] - log["passes"].iloc[0]) if "passes" in log else 0.0
        spp = float(log["seconds"].iloc[-1] - log["seconds"].iloc[0]) / dp if dp > 0 else None
    else:
        iters, spp = solver, None
    passes = extra.get("n_passes", int(log["passes"].iloc[-1]) if "passes" in log else None)
    tau = res.prior_sd
    tu, tm = tau["user"], tau["movie"]
    tr = ~test
    au, am = _effects(res, "user", nu), _effects(res, "movie", nm)
    obj = objective(y[tr], user[tr] - 1, movie[tr] - 1, float(res.params["Intercept"]), au, am,
                    tu, tm)
    return {"design": t1 - t0, "iterations": iters, "posterior": solver - iters + (t3 - t2),
            "results": fit_call - solver, "fit": t3 - t0, "predict": t4 - t3,
            "passes": passes, "s_per_pass": spp, "holdout_ll": logloss(y[test], p),
            "objective": obj, "fixed_prior": not isinstance(prior, str),
            "n_iter": int(res.n_iter), "converged": bool(res.converged),
            "note": f"tau {tu:.4f}/{tm:.4f}, {res.n_iter} it, "
                    f"converged {bool(res.converged)}, own objective "
                    f"{extra.get('objective', float('nan')):.10g}"}


# --------------------------------------------------------------------------- glum

def _onehot(user, movie, nu, nm):
    import scipy.sparse as sp

    n = len(user)
    rows = np.repeat(np.arange(n, dtype=np.int64), 2)
    cols = np.column_stack([user.astype(np.int64) - 1, nu + movie.astype(np.int64) - 1]).ravel()
    return sp.csr_matrix((np.ones(2 * n), (rows, cols)), shape=(n, nu + nm))


def _glum_fit(X, yt, alpha, tol, max_iter=None):
    from glum import GeneralizedLinearRegressor

    kw = {} if tol is None else {"gradient_tol": tol}
    if max_iter is not None:
        kw["max_iter"] = max_iter
    model = GeneralizedLinearRegressor(family="binomial", alpha=alpha, l1_ratio=0,
                                       solver="lbfgs", fit_intercept=True, **kw)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = time.perf_counter()
        model.fit(X, yt)
        seconds = time.perf_counter() - t
    conv = not any("converge" in str(w.message).lower() for w in caught)
    return model, seconds, conv


def worker_glum(path: str, tau: float, target: float | None) -> dict:
    user, movie, y, test, nu, nm = load(path)
    tr = ~test
    t0 = time.perf_counter()
    X = _onehot(user, movie, nu, nm)
    Xtr, Xte = X[tr], X[test]
    del X
    yt = y[tr].astype(np.float64)
    t1 = time.perf_counter()
    alpha = 1.0 / (int(tr.sum()) * tau ** 2)
    u0, m0 = user[tr] - 1, movie[tr] - 1

    def obj(model):
        return objective(yt, u0, m0, float(model.intercept_), model.coef_[:nu], model.coef_[nu:],
                         tau, tau)

    if target is None:                     # default gradient_tol and max_iter
        model, fit_s, conv = _glum_fit(Xtr, yt, alpha, None)
        note, value = "default gradient_tol", obj(model)
    else:
        tried = []
        for tol in MATCH_TOLS:
            model, fit_s, conv = _glum_fit(Xtr, yt, alpha, tol, max_iter=1000)
            value = obj(model)
            gap = (value - target) / abs(target)
            tried.append(f"{tol:g}: {fit_s:.1f} s gap {gap:.1e}")
            if gap <= MATCH_GAP:
                break
        note = f"gradient_tol={tol:g}, max_iter=1000 (tried {'; '.join(tried)})"
    t2 = time.perf_counter()
    p = model.predict(Xte)
    t3 = time.perf_counter()
    n_iter = int(np.max(model.n_iter_))
    return {"design": t1 - t0, "iterations": fit_s, "posterior": None, "results": None,
            "fit": (t1 - t0) + fit_s, "predict": t3 - t2, "passes": n_iter,
            "s_per_pass": fit_s / max(n_iter, 1), "holdout_ll": logloss(y[test], p),
            "objective": value, "fixed_prior": True, "converged": conv,
            "note": f"{note}; {n_iter} L-BFGS it, converged {conv}"}


# --------------------------------------------------------------------------- gpboost

def worker_gpboost(path: str) -> dict:
    import gpboost as gpb

    user, movie, y, test, nu, nm = load(path)
    tr = ~test
    ntr, nte = int(tr.sum()), int(test.sum())
    t0 = time.perf_counter()
    model = gpb.GPModel(group_data=np.column_stack([user[tr], movie[tr]]),
                        likelihood="bernoulli_logit")
    t1 = time.perf_counter()
    model.fit(y=y[tr].astype(np.float64), X=np.ones((ntr, 1)))
    t2 = time.perf_counter()
    pred = model.predict(group_data_pred=np.column_stack([user[test], movie[test]]),
                         X_pred=np.ones((nte, 1)), predict_var=False, predict_response=True)
    t3 = time.perf_counter()
    p = np.asarray(pred["mu"], float)
    sd = np.sqrt(np.asarray(model.get_cov_pars(), float).ravel())
    b0 = float(np.asarray(model.get_coef(), float).ravel()[0])
    obj, note = None, ""
    try:                                   # its objective at its own variances, from its modes
        re = np.asarray(model.predict_training_data_random_effects(predict_var=False), float)
        au, am = np.zeros(nu), np.zeros(nm)
        au[user[tr] - 1] = re[:, 0]
        am[movie[tr] - 1] = re[:, 1]
        obj = objective(y[tr], user[tr] - 1, movie[tr] - 1, b0, au, am, sd[0], sd[1])
    except Exception as e:                 # noqa: BLE001 - report, do not fail the run
        note = f"; objective not computed ({type(e).__name__})"
    return {"design": t1 - t0, "iterations": t2 - t1, "posterior": None, "results": None,
            "fit": t2 - t0, "predict": t3 - t2, "passes": None, "s_per_pass": None,
            "holdout_ll": logloss(y[test], p), "objective": obj, "fixed_prior": False,
            "note": f"sd {sd[0]:.4f}/{sd[1]:.4f} (estimated), default settings{note}"}


# --------------------------------------------------------------------------- table

def _f(v, fmt):
    return "" if v is None else format(v, fmt)


def print_table(rows: int, nu: int, nm: int, tau: float, oracle: float, results: dict) -> None:
    floor = results.get("floor", {}).get("s_per_pass")
    fixed = [r["objective"] for r in results.values()
             if r.get("fixed_prior") and r.get("objective") is not None]
    best = min(fixed) if fixed else None
    print(f"\nbinary y ~ ^user + ^movie, {rows:,} rows ({nu:,} x {nm:,} levels, 10% holdout), "
          f"tau = {tau:g}; {load_line()}")
    print(f"floor kernel: {_f(floor, '.4f')} s per pass; oracle holdout log-loss {oracle:.6f}")
    head = (f"{'tool':<16}{'design':>7}{'iters':>7}{'post':>6}{'result':>7}{'fit':>7}"
            f"{'predict':>8}{'passes':>7}{'s/pass':>8}{'/floor':>7}{'peak GB':>8}{'holdout LL':>11}"
            f"{'objective':>17}{'rel gap':>9}")
    print(head)
    print("-" * len(head))
    for tool, r in results.items():
        if tool == "floor":
            continue
        if "error" in r:
            print(f"{tool:<16}  {r['error']} (peak {r['peak_rss_gb']:.2f} GB)")
            continue
        gap = None
        if best is not None and r.get("fixed_prior") and r.get("objective") is not None:
            gap = (r["objective"] - best) / abs(best)
        spp = r.get("s_per_pass")
        ratio = spp / floor if spp and floor else None
        print(f"{tool:<16}{_f(r['design'], '7.2f')}{_f(r['iterations'], '7.2f')}"
              f"{_f(r['posterior'], '6.2f'):>6}{_f(r['results'], '7.2f'):>7}{r['fit']:7.2f}"
              f"{r['predict']:8.2f}{_f(r['passes'], '7d'):>7}{_f(spp, '8.4f'):>8}"
              f"{_f(ratio, '7.1f'):>7}{r['peak_rss_gb']:8.2f}{r['holdout_ll']:11.6f}"
              f"{_f(r['objective'], '17.6f'):>17}{_f(gap, '9.1e'):>9}")
    for tool, r in results.items():
        if "note" in r:
            print(f"  {tool}: {r['note']}")
    print("  objective: sum deviance/2 + sum a^2/(2 tau^2) computed here from each tool's "
          "coefficients (auto/gpboost at their own estimated sds; rel gap among fixed-tau tools)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", default="1e6,1e7", help="row counts, comma separated")
    ap.add_argument("--tools", default=",".join(TOOLS),
                    help="comma separated subset of: " + ", ".join(TOOLS))
    ap.add_argument("--tau", type=float, default=1.0, help="prior_sd of the fixed-prior fits")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per tool")
    ap.add_argument("--rss-limit", type=float, default=12.0, help="GB; a tool above is stopped")
    ap.add_argument("--workdir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"),
                                                      "impactglm_bench"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--target", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        w = args.worker
        if w == "floor":
            emit(worker_floor(args.data))
        elif w.startswith("impactglm"):
            emit(worker_impactglm(args.data, "auto" if w.endswith("auto") else args.tau))
        elif w.startswith("glum"):
            emit(worker_glum(args.data, args.tau, args.target))
        elif w == "gpboost":
            emit(worker_gpboost(args.data))
        else:
            raise SystemExit(f"unknown tool {w!r}")
        return 0
    tools = [t.strip() for t in args.tools.split(",")]
    unknown = set(tools) - set(TOOLS)
    if unknown:
        ap.error(f"unknown tools {sorted(unknown)}; choose from {TOOLS}")
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    for rows in (int(float(r)) for r in args.rows.split(",")):
        path = data_path(rows, args.seed, workdir)
        z = np.load(path)
        nu, nm, oracle = int(z["n_users"]), int(z["n_movies"]), float(z["oracle"])
        results: dict[str, dict] = {}
        for tool in TOOLS:                    # fixed order: glum matched needs impactglm's objective
            if tool not in tools:
                continue
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", tool, "--data", str(path),
                   "--tau", repr(args.tau)]
            if tool == "glum matched":
                target = results.get("impactglm", {}).get("objective")
                if target is None:
                    results[tool] = {"error": "needs the impactglm tool's objective",
                                     "peak_rss_gb": 0.0}
                    continue
                cmd += ["--target", repr(target)]
            r = run_child(cmd, timeout=args.timeout, rss_limit_gb=args.rss_limit)
            results[tool] = r
            print(f"{rows:,} {tool}: {json.dumps(r)}", file=sys.stderr, flush=True)
        print_table(rows, nu, nm, args.tau, oracle, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

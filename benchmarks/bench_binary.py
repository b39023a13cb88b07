"""Binary logistic y ~ ^user + ^movie on MovieLens-shaped data: impactglm vs glum vs sklearn.

    python3 benchmarks/bench_binary.py --rows 1e6
    python3 benchmarks/bench_binary.py --rows 1e7

Data: impactglm.simulate.make_ratings(kind="binary", covariates=False) with 6,040 users and
3,706 movies at 1M rows, 69,878 users and 10,677 movies at 10M rows (true effects
N(0, 0.8^2) and N(0, 0.6^2)); a random 10% of the rows is held out.  Every tool runs in a
fresh subprocess (same data, same split), so the peak RSS (resource.getrusage ru_maxrss)
is that tool's whole process, data generation included.  Columns: fit seconds (the fit
call only; wall clock, and the process CPU time summed over threads: on a shared machine the
wall clock depends on the load, printed in the header), peak RSS, iterations / passes over the rows, the final max |gradient| of the
tool's own objective where it reports one, train and holdout log-loss, and the oracle
log-loss (true probabilities) on the holdout.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

SIZES = {1_000_000: (6040, 3706), 10_000_000: (69878, 10677)}
TOOLS = ["impactglm auto", "impactglm tau=0.7", "glum lbfgs", "sklearn lbfgs"]


def _data(rows: int, seed: int = 0):
    from impactglm.simulate import make_ratings
    nu, nm = SIZES.get(rows, (max(rows // 165, 10), max(rows // 270, 10)))
    sim = make_ratings(rows, nu, nm, kind="binary", covariates=False, seed=seed)
    rng = np.random.default_rng(seed + 1)
    test = rng.random(rows) < 0.1
    return sim, nu, nm, ~test, test


def _logloss(y, p):
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def _worker(tool: str, rows: int) -> dict:
    sim, nu, nm, train, test = _data(rows)
    d = sim.data
    u = (d["UserID"].to_numpy() - 1).astype(np.int32)
    m = (d["MovieID"].to_numpy() - 1).astype(np.int32)
    y = d["y"].to_numpy().astype(np.float64)
    out = {"tool": tool}
    if tool.startswith("impactglm"):
        from impactglm.solver import fit_high_cardinality
        prior = "auto" if tool.endswith("auto") else [0.7, 0.7]
        ut, mt, yt = u[train], m[train], y[train]
        t0, c0 = time.perf_counter(), time.process_time()
        fit = fit_high_cardinality(None, [(ut, nu), (mt, nm)], yt, None, None, "binomial", prior,
                                   tol=1e-6)
        out["fit_s"] = time.perf_counter() - t0
        out["fit_cpu_s"] = time.process_time() - c0
        au, am = fit.effects[0].effect, fit.effects[1].effect

        def predict(idx):
            eta = fit.beta[0] + au[u[idx]] + am[m[idx]]
            return 1 / (1 + np.exp(-eta))
        out["iters"] = f"{fit.n_iter} it / {fit.extra['n_passes']} passes"
        out["max_grad"] = fit.extra["max_grad"]
        out["converged"] = bool(fit.converged)
        out["tau"] = [round(e.tau, 4) for e in fit.effects]
        log = fit.log
        out["seconds_per_pass"] = float(log["seconds"].iloc[-1] / max(fit.extra["n_passes"], 1))
    elif tool.startswith("glum"):
        import pandas as pd
        from glum import GeneralizedLinearRegressor
        Xdf = pd.DataFrame({"user": pd.Categorical(u, categories=np.arange(nu)),
                            "movie": pd.Categorical(m, categories=np.arange(nm))})
        model = GeneralizedLinearRegressor(family="binomial", alpha=1e-6, l1_ratio=0.0, solver="lbfgs",
                                           max_iter=1000, gradient_tol=1e-6)
        Xtr = Xdf.iloc[np.flatnonzero(train)]
        t0, c0 = time.perf_counter(), time.process_time()
        model.fit(Xtr, y[train])
        out["fit_s"] = time.perf_counter() - t0
        out["fit_cpu_s"] = time.process_time() - c0

        def predict(idx):
            return model.predict(Xdf.iloc[idx])
        out["iters"] = f"{model.n_iter_} it"
        out["max_grad"] = float("nan")
        out["converged"] = True
    elif tool.startswith("sklearn"):
        import scipy.sparse as sp
        from sklearn.linear_model import LogisticRegression
        n = len(y)
        Z = sp.hstack([sp.csr_matrix((np.ones(n), (np.arange(n), u)), shape=(n, nu)),
                       sp.csr_matrix((np.ones(n), (np.arange(n), m)), shape=(n, nm))]).tocsr()
        model = LogisticRegression(C=1e4, solver="lbfgs", max_iter=500, tol=1e-6)
        Ztr = Z[train]
        t0, c0 = time.perf_counter(), time.process_time()
        model.fit(Ztr, y[train])
        out["fit_s"] = time.perf_counter() - t0
        out["fit_cpu_s"] = time.process_time() - c0

        def predict(idx):
            return model.predict_proba(Z[idx])[:, 1]
        out["iters"] = f"{int(model.n_iter_[0])} it"
        out["max_grad"] = float("nan")
        out["converged"] = int(model.n_iter_[0]) < 500
    else:
        raise SystemExit(f"unknown tool {tool!r}")
    out["train_logloss"] = _logloss(y[train], predict(np.flatnonzero(train)))
    out["holdout_logloss"] = _logloss(y[test], predict(np.flatnonzero(test)))
    out["oracle_logloss"] = sim.oracle_logloss(np.flatnonzero(test))
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="1e6", help="number of rows (1e6 or 1e7 for the standard shapes)")
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per tool")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    rows = int(float(args.rows))
    if args.worker:
        print(json.dumps(_worker(args.worker, rows)))
        return
    results = []
    for tool in args.tools.split(","):
        cmd = [sys.executable, os.path.abspath(__file__), "--rows", str(rows), "--worker", tool]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            line = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
            res = json.loads(line) if line.startswith("{") else {"tool": tool, "error": r.stderr[-300:]}
        except subprocess.TimeoutExpired:
            res = {"tool": tool, "error": f"timeout after {args.timeout:.0f} s"}
        results.append(res)
        print(json.dumps(res), file=sys.stderr, flush=True)
    print(f"\nbinary logistic y ~ ^user + ^movie, {rows:,} rows (10% holdout), "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    hdr = f"{'tool':<20}{'fit s':>8}{'cpu s':>8}{'peak RSS GB':>12}{'iterations':>24}{'max grad':>10}" \
          f"{'train LL':>10}{'holdout LL':>11}{'oracle LL':>10}"
    print(hdr)
    print("-" * len(hdr))
    for r in results:
        if "error" in r:
            print(f"{r['tool']:<20}  error: {r['error'].strip().splitlines()[-1] if r['error'].strip() else '?'}")
            continue
        mg = "" if not np.isfinite(r["max_grad"]) else f"{r['max_grad']:.1e}"
        print(f"{r['tool']:<20}{r['fit_s']:>8.2f}{r.get('fit_cpu_s', float('nan')):>8.2f}{r['peak_rss_gb']:>12.2f}{r['iters']:>24}{mg:>10}"
              f"{r['train_logloss']:>10.5f}{r['holdout_logloss']:>11.5f}{r['oracle_logloss']:>10.5f}")
    for r in results:
        if "tau" in r:
            print(f"{r['tool']}: tau = {r['tau']}, converged = {r['converged']}, "
                  f"seconds/pass = {r['seconds_per_pass']:.3f}")


if __name__ == "__main__":
    main()

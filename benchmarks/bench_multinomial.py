"""MovieLens-shaped 10-class ratings, end to end: impactglm vs scikit-learn.

    python3 benchmarks/bench_multinomial.py                  # 1M and 10M rows
    python3 benchmarks/bench_multinomial.py --sizes 1m       # one size
    python3 benchmarks/bench_multinomial.py --sizes 100k --sklearn-max-iter 50

For each size the data (``impactglm.simulate.make_ratings(kind="multinomial",
covariates=False)``: lognormal user activity, Zipf-like movie popularity, an ordinal
logistic star rating in 10 classes) are written once to ``<workdir>/ratings_<size>.csv.gz``
(with the oracle log-loss of the holdout rows beside it).  Then every tool runs in a
fresh subprocess, so that its peak RSS is its own, end to end:

* read     the CSV.gz (impactglm.io.read_table with pyarrow; ids as categoricals);
* fit      on the 90% training rows (each row held out with probability 0.1 from
           numpy.random.default_rng(seed), the split of ``fit(holdout=0.1, seed=seed)``);
           impactglm: ``Rating ~ ^UserID + ^MovieID`` with ``prior_sd="auto"`` (design
           building included, and shown in the notes); sklearn: ``LogisticRegression(solver="lbfgs")``
           (multinomial, default C=1) on a sparse one-hot of both ids (building the
           one-hot included);
* score    the 10% holdout: log-loss, accuracy.

Columns: seconds per stage and in total, peak RSS of the process, holdout log-loss
and accuracy, the oracle log-loss (true probabilities), iterations and whether the
solver reported convergence.  Wall times depend on the machine's load; compare rows
within one run.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SIZES = {"100k": (100_000, 1_500, 1_000), "1m": (1_000_000, 6_040, 3_706),
         "10m": (10_000_000, 69_878, 10_677)}
TOOLS = ("impactglm", "impactglm (no UserID)", "sklearn lbfgs")
COLUMNS = ["UserID", "MovieID", "Rating"]


# --------------------------------------------------------------------------- data

def make_data(size: str, workdir: Path, seed: int, holdout: float) -> Path:
    """Write the ratings CSV.gz (once) and the oracle holdout log-loss beside it."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from impactglm.simulate import make_ratings

    n, users, movies = SIZES[size]
    path = workdir / f"ratings_{size}_s{seed}.csv.gz"
    meta = path.with_suffix("").with_suffix(".json")
    if path.exists() and meta.exists():
        return path
    t = time.perf_counter()
    sim = make_ratings(n, users, movies, kind="multinomial", covariates=False, seed=seed)
    test = np.random.default_rng(seed).random(n) < holdout
    info = {"rows": n, "users": users, "movies": movies,
            "oracle_holdout_logloss": sim.oracle_logloss(test),
            "oracle_train_logloss": sim.oracle_logloss(~test)}
    table = pa.Table.from_pandas(sim.data[COLUMNS], preserve_index=False)
    tmp = path.with_name(path.name + ".tmp")
    with pa.CompressedOutputStream(str(tmp), "gzip") as out:
        pacsv.write_csv(table, out)
    os.replace(tmp, path)
    meta.write_text(json.dumps(info))
    print(f"wrote {path} ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t:.0f} s",
          file=sys.stderr)
    return path


# --------------------------------------------------------------------------- workers

def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def _split(n: int, seed: int, holdout: float) -> np.ndarray:
    return np.random.default_rng(seed).random(n) < holdout


def worker_impactglm(path: str, seed: int, holdout: float, with_user: bool) -> dict:
    import impactglm as ig

    t0 = time.perf_counter()
    df = ig.read_table(path, columns=COLUMNS, categorical=["UserID", "MovieID"])
    t_read = time.perf_counter()
    test = _split(len(df), seed, holdout)
    train, hold = df[~test], df[test]
    del df
    formula = "Rating ~ ^UserID + ^MovieID" if with_user else "Rating ~ ^MovieID"
    model = ig.glm(formula, train, family="multinomial", prior_sd="auto")
    t_design = time.perf_counter()
    res = model.fit()
    t_fit = time.perf_counter()
    with __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("ignore")
        m = ig.evaluate(res, hold)
    t_score = time.perf_counter()
    log = res.iteration_log
    return {"read": t_read - t0, "fit": t_fit - t_read, "score": t_score - t_fit,
            "total": t_score - t0, "rss": _peak_rss_gb(), "logloss": m.logloss,
            "accuracy": m.accuracy, "iterations": int(res.n_iter),
            "converged": bool(res.converged), "design": t_design - t_read,
            "note": f"design {t_design - t_read:.1f} s; max|grad| {log['max_grad'].iloc[-1]:.1e}, passes "
                    f"{int(log['passes'].iloc[-1])}, tau " +
                    "/".join(f"{v:.3f}" for v in res.prior_sd.values())}


def worker_sklearn(path: str, seed: int, holdout: float, max_iter: int) -> dict:
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    import impactglm as ig

    t0 = time.perf_counter()
    df = ig.read_table(path, columns=COLUMNS, categorical=["UserID", "MovieID"])
    t_read = time.perf_counter()
    n = len(df)
    u = df["UserID"].cat.codes.to_numpy().astype(np.int64)
    m = df["MovieID"].cat.codes.to_numpy().astype(np.int64)
    nu, nm = len(df["UserID"].cat.categories), len(df["MovieID"].cat.categories)
    y = np.rint(df["Rating"].to_numpy() * 2).astype(np.int64)      # class labels 1..10
    del df
    rows = np.repeat(np.arange(n), 2)
    cols = np.column_stack([u, nu + m]).ravel()
    X = sp.csr_matrix((np.ones(2 * n), (rows, cols)), shape=(n, nu + nm))
    del rows, cols
    test = _split(n, seed, holdout)
    clf = LogisticRegression(solver="lbfgs", max_iter=max_iter)
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clf.fit(X[~test], y[~test])
    converged = not any("converge" in str(w.message).lower() for w in caught)
    t_fit = time.perf_counter()
    P = clf.predict_proba(X[test])
    ll = log_loss(y[test], P, labels=clf.classes_)
    acc = float(np.mean(clf.classes_[P.argmax(1)] == y[test]))
    t_score = time.perf_counter()
    return {"read": t_read - t0, "fit": t_fit - t_read, "score": t_score - t_fit,
            "total": t_score - t0, "rss": _peak_rss_gb(), "logloss": float(ll),
            "accuracy": acc, "iterations": int(np.max(clf.n_iter_)), "converged": converged,
            "note": f"C=1, max_iter={max_iter}, one-hot {nu + nm} columns"}


def run_worker(args) -> None:
    if args.worker == "sklearn":
        out = worker_sklearn(args.data, args.seed, args.holdout, args.sklearn_max_iter)
    else:
        out = worker_impactglm(args.data, args.seed, args.holdout, args.worker == "impactglm")
    print("RESULT " + json.dumps(out))


def spawn(tool: str, path: Path, args) -> dict:
    worker = {"impactglm": "impactglm", "impactglm (no UserID)": "impactglm-nouser",
              "sklearn lbfgs": "sklearn"}[tool]
    cmd = [sys.executable, __file__, "--worker", worker, "--data", str(path), "--seed",
           str(args.seed), "--holdout", str(args.holdout), "--sklearn-max-iter",
           str(args.sklearn_max_iter)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1][:120],
            "total": time.perf_counter() - t}


# --------------------------------------------------------------------------- table

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["1m", "10m"], choices=sorted(SIZES))
    ap.add_argument("--tools", nargs="+", default=list(TOOLS), choices=list(TOOLS))
    ap.add_argument("--workdir", default=os.environ.get("TMPDIR", "/tmp") + "/impactglm_bench")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--holdout", type=float, default=0.1)
    ap.add_argument("--sklearn-max-iter", type=int, default=100)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--data", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        run_worker(args)
        return 0
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    # warm the numba cache once, outside the timings
    subprocess.run([sys.executable, "-c", "import impactglm as ig; s = ig.make_ratings(3000, 50, 40, "
                    "kind='multinomial', covariates=False); ig.glm('Rating ~ ^UserID + ^MovieID', "
                    "s.data, family='multinomial').fit(holdout=0.2, seed=0)"], check=True,
                   capture_output=True)
    head = (f"{'rows':>10} {'tool':<22} {'read s':>7} {'fit s':>8} {'score s':>8} {'total s':>8} "
            f"{'peak GB':>8} {'logloss':>8} {'oracle':>8} {'accuracy':>8} {'iter':>5} conv  notes")
    print(head)
    print("-" * len(head))
    for size in args.sizes:
        path = make_data(size, workdir, args.seed, args.holdout)
        meta = json.loads(path.with_suffix("").with_suffix(".json").read_text())
        results = {}
        for tool in args.tools:
            r = spawn(tool, path, args)
            results[tool] = r
            rows = f"{meta['rows']:,}"
            if "error" in r:
                print(f"{rows:>10} {tool:<22} failed after {r['total']:.0f} s: {r['error']}")
                continue
            print(f"{rows:>10} {tool:<22} {r['read']:>7.1f} {r['fit']:>8.1f} {r['score']:>8.1f} "
                  f"{r['total']:>8.1f} {r['rss']:>8.2f} {r['logloss']:>8.4f} "
                  f"{meta['oracle_holdout_logloss']:>8.4f} {r['accuracy']:>8.4f} "
                  f"{r['iterations']:>5} {'yes' if r['converged'] else 'NO':<4}  {r['note']}",
                  flush=True)
        ours, sk = results.get("impactglm"), results.get("sklearn lbfgs")
        if ours and sk and "error" not in ours and "error" not in sk:
            print(f"{'':>10} impactglm vs sklearn: {sk['total'] / ours['total']:.1f}x faster end to "
                  f"end ({sk['fit'] / ours['fit']:.1f}x fit), holdout log-loss "
                  f"{ours['logloss'] - sk['logloss']:+.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

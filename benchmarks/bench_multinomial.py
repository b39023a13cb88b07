"""10-class ratings, end to end from CSV.gz, through the public API: impactglm vs scikit-learn.

    python benchmarks/bench_multinomial.py                  # 1M rows
    python benchmarks/bench_multinomial.py --rows 1e5 --tools impactglm

Data: ``impactglm.make_ratings(rows, users, movies, kind="multinomial")`` (the demo's
data: users and movies as ``impactglm.demo`` sizes them, 6,040 x 3,706 at 1M rows;
an ordinal-logistic star rating in 10 classes; user age and movie genre as
covariates), written once to ``<workdir>/ratings_<rows>_s<seed>.csv.gz``.  Each row is
held out with probability 0.1 (``numpy.random.default_rng(seed)``).  Every tool runs
in a fresh process, end to end:

* ``impactglm``: ``ig.read_table(path)``; ``ig.glm("Rating ~ ^UserID + ^MovieID + age +
  C(genre)", train, family="multinomial").fit()`` (default settings: prior_sd="auto"),
  the demo's model; ``res.bse`` and ``level_effects`` (timed, in case they are computed
  on first access); ``res.predict(holdout)``.
* ``impactglm tau=1`` (labelled): the same with ``prior_sd=1``, the objective scikit-learn
  minimises below.
* ``sklearn`` (labelled): ``LogisticRegression(C=1, solver="lbfgs")`` (multinomial, default
  max_iter=100 and tol) on a sparse one-hot of UserID and MovieID beside the genre
  dummies and the standardised age multiplied by 30.  Its objective is
  sum_i -log p_i[y_i] + ||W||^2 / 2: on the one-hot columns that is prior_sd=1 (the
  softmax coefficients of a penalised column sum to zero over the classes, as
  impactglm's level effects do); the x30 scaling divides the penalty on the covariates'
  coefficients by 900, so that they are all but free, as in impactglm.

Columns: seconds per stage (read; design = ``ig.glm(...)`` / the one-hot; iterations =
the solver's iteration log; posterior = the solver's time after the last iteration
plus the first access to ``bse``/``level_effects``; results = the rest of ``fit()``;
score = predict the holdout), fit = design + iterations + posterior + results, total;
passes over the rows, peak RSS of the process (``ru_maxrss``), holdout log-loss and
accuracy (computed here from the predicted probabilities), the oracle log-loss (true
probabilities), and the penalised objective sum_i -log p_i[y_i] + sum a^2 / (2 tau^2)
over both factors' level effects, **computed here from each tool's returned
coefficients** on the training rows (at tau = 1 for the tau=1 tools, with its relative
gap to the better one; at the estimated sds for the default fit).
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

TOOLS = ["impactglm", "impactglm tau=1", "sklearn"]
FORMULA = "Rating ~ ^UserID + ^MovieID + age + C(genre)"
COLUMNS = ["UserID", "MovieID", "Rating", "age", "genre"]
COVARIATE_SCALE = 30.0


# --------------------------------------------------------------------------- data

def make_data(rows: int, seed: int, workdir: Path) -> Path:
    """Write the ratings CSV.gz once, with the oracle holdout log-loss in a .json beside it."""
    path = workdir / f"ratings_{rows}_s{seed}.csv.gz"
    meta = workdir / f"ratings_{rows}_s{seed}.json"
    if path.exists() and meta.exists():
        return path
    import pyarrow as pa
    import pyarrow.csv as pacsv

    import impactglm as ig
    from impactglm.cli.demo import demo_sizes

    users, movies = demo_sizes(rows)
    sim = ig.make_ratings(rows, users, movies, kind="multinomial", seed=seed)
    test = split(rows, seed)
    meta.write_text(json.dumps({"rows": rows, "users": users, "movies": movies,
                                "oracle": sim.oracle_logloss(np.flatnonzero(test))}))
    tmp = path.with_name(path.name + ".tmp")
    with pa.CompressedOutputStream(str(tmp), "gzip") as out:
        pacsv.write_csv(pa.Table.from_pandas(sim.data[COLUMNS], preserve_index=False), out)
    os.replace(tmp, path)
    return path


def split(n: int, seed: int) -> np.ndarray:
    """The holdout mask (10% of the rows)."""
    return np.random.default_rng(seed).random(n) < 0.1


def class_index(rating: np.ndarray) -> np.ndarray:
    """Stars 0.5 .. 5.0 -> class 0 .. 9."""
    return np.rint(np.asarray(rating, float) * 2).astype(np.int64) - 1


def scores(P: np.ndarray, k: np.ndarray) -> tuple[float, float]:
    """Holdout log-loss and accuracy of probabilities P (n, 10) for classes k."""
    p = np.clip(P[np.arange(len(k)), k], 1e-300, 1.0)
    return float(-np.mean(np.log(p))), float(np.mean(P.argmax(1) == k))


def softmax_nll(eta: np.ndarray, k: np.ndarray) -> float:
    """sum_i -log softmax(eta_i)[k_i]."""
    mx = eta.max(axis=1, keepdims=True)
    lse = mx[:, 0] + np.log(np.exp(eta - mx).sum(axis=1))
    return float(np.sum(lse - eta[np.arange(len(k)), k]))


def covariates(df) -> tuple[np.ndarray, list[str]]:
    """Treatment-coded C(genre) dummies and age, named as impactglm names them."""
    genres = sorted(df["genre"].astype(str).unique())
    g = df["genre"].astype(str).to_numpy()
    cols = [(g == v).astype(np.float64) for v in genres[1:]]
    names = [f"C(genre)[T.{v}]" for v in genres[1:]] + ["age"]
    return np.column_stack(cols + [df["age"].to_numpy(np.float64)]), names


def codes(df, name: str) -> np.ndarray:
    col = df[name]
    return (col.cat.codes if hasattr(col, "cat") else col).to_numpy().astype(np.int64)


# --------------------------------------------------------------------------- workers

def worker_impactglm(path: str, seed: int, prior) -> dict:
    import pandas as pd

    import impactglm as ig

    t0 = time.perf_counter()
    df = ig.read_table(path)
    t1 = time.perf_counter()
    test = split(len(df), seed)
    train, hold = df[~test], df[test]
    model = ig.glm(FORMULA, train, family="multinomial", prior_sd=prior)
    t2 = time.perf_counter()
    res = model.fit()
    t3 = time.perf_counter()
    _ = res.bse, res.level_effects("UserID"), res.level_effects("MovieID")
    t4 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")            # levels seen only in the holdout
        P = res.predict(hold)
    t5 = time.perf_counter()

    classes = [float(c) for c in P.columns]
    order = np.argsort(classes)
    ll, acc = scores(P.to_numpy(float)[:, order], class_index(hold["Rating"]))
    log = res.iteration_log
    extra = res.to_dict()[0].get("extra", {})
    fit_call = t3 - t2
    solver = float(extra.get("seconds", extra.get("fit_seconds", fit_call)))
    iters = float(log["seconds"].iloc[-1]) if "seconds" in log and len(log) else solver
    passes = extra.get("n_passes", int(log["passes"].iloc[-1]) if "passes" in log else None)

    # objective from the returned coefficients, on the training rows
    X, names = covariates(train)
    B = res.params                                   # rows: coefficient names, columns: classes
    beta = B.loc[names].to_numpy(float)
    eta = X @ beta + B.loc["Intercept"].to_numpy(float)[None, :]
    k = class_index(train["Rating"])
    penalty = 0.0
    tau = res.prior_sd
    for name in ("UserID", "MovieID"):
        le = res.level_effects(name)
        A = le[[c for c in le.columns if c.startswith("effect[")]].to_numpy(float)
        pos = pd.Index(le.index).get_indexer(train[name])
        eta += A[pos]
        penalty += float(np.sum(A * A)) / (2 * tau[name] ** 2)
    obj = softmax_nll(eta[:, order], k) + penalty
    return {"read": t1 - t0, "design": t2 - t1, "iterations": iters,
            "posterior": solver - iters + (t4 - t3), "results": fit_call - solver,
            "fit": t4 - t1, "score": t5 - t4, "total": t5 - t0, "passes": passes,
            "logloss": ll, "accuracy": acc, "objective": obj, "tau1": prior == 1.0,
            "note": f"tau {tau['UserID']:.4f}/{tau['MovieID']:.4f}, {res.n_iter} it, converged "
                    f"{bool(res.converged)}, own objective "
                    f"{-extra.get('loglik', np.nan) + extra.get('penalty', np.nan):.10g}"}


def worker_sklearn(path: str, seed: int) -> dict:
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression

    import impactglm as ig

    t0 = time.perf_counter()
    df = ig.read_table(path)
    t1 = time.perf_counter()
    n = len(df)
    u, m = codes(df, "UserID"), codes(df, "MovieID")
    uu, ui = np.unique(u, return_inverse=True)
    mu_, mi = np.unique(m, return_inverse=True)
    nu, nm = len(uu), len(mu_)
    Xc, names = covariates(df)
    age = Xc[:, -1]
    Xc[:, -1] = (age - age.mean()) / age.std()
    k = class_index(df["Rating"])
    del df
    rows = np.repeat(np.arange(n), 2)
    cols = np.column_stack([ui, nu + mi]).ravel()
    Z = sp.csr_matrix((np.ones(2 * n), (rows, cols)), shape=(n, nu + nm))
    X = sp.hstack([Z, sp.csr_matrix(COVARIATE_SCALE * Xc)]).tocsr()
    del rows, cols, Z
    test = split(n, seed)
    Xtr, ktr = X[~test], k[~test]
    t2 = time.perf_counter()
    clf = LogisticRegression(C=1.0, solver="lbfgs")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clf.fit(Xtr, ktr)
    converged = not any("converge" in str(w.message).lower() for w in caught)
    t3 = time.perf_counter()
    P = clf.predict_proba(X[test])
    Pfull = np.zeros((P.shape[0], 10))
    Pfull[:, clf.classes_] = P
    ll, acc = scores(Pfull, k[test])
    t4 = time.perf_counter()
    W = clf.coef_                                    # (classes, columns)
    eta = np.asarray(Xtr @ W.T) + clf.intercept_[None, :]
    Wl = W[:, :nu + nm]
    obj = softmax_nll(eta, np.searchsorted(clf.classes_, ktr)) + 0.5 * float(np.sum(Wl * Wl))
    cov_pen = 0.5 * float(np.sum(W[:, nu + nm:] ** 2))
    return {"read": t1 - t0, "design": t2 - t1, "iterations": t3 - t2, "posterior": None,
            "results": None, "fit": t3 - t1, "score": t4 - t3, "total": t4 - t0,
            "passes": int(np.max(clf.n_iter_)), "logloss": ll, "accuracy": acc,
            "objective": obj, "tau1": True,
            "note": f"C=1, max_iter=100 (default), {int(np.max(clf.n_iter_))} L-BFGS it, "
                    f"converged {converged}; its penalty on the scaled covariates "
                    f"{cov_pen:.3g} is not in the objective column"}


# --------------------------------------------------------------------------- table

def _f(v, fmt):
    return "" if v is None else format(v, fmt)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", default="1e6")
    ap.add_argument("--tools", default=",".join(TOOLS), help="comma separated subset of "
                    + ", ".join(TOOLS))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--workdir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"),
                                                      "impactglm_bench"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        if args.worker == "sklearn":
            emit(worker_sklearn(args.data, args.seed))
        else:
            emit(worker_impactglm(args.data, args.seed,
                                  1.0 if args.worker.endswith("tau=1") else "auto"))
        return 0
    tools = [t.strip() for t in args.tools.split(",")]
    if set(tools) - set(TOOLS):
        ap.error(f"unknown tools; choose from {TOOLS}")
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    rows = int(float(args.rows))
    path = make_data(rows, args.seed, workdir)
    meta = json.loads(path.with_name(path.name.replace(".csv.gz", ".json")).read_text())
    results = {}
    for tool in tools:
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", tool, "--data", str(path),
               "--seed", str(args.seed)]
        results[tool] = run_child(cmd, timeout=args.timeout)
        print(f"{tool}: {json.dumps(results[tool])}", file=sys.stderr, flush=True)
    best = min((r["objective"] for r in results.values() if r.get("tau1")), default=None)
    print(f"\n10-class ratings {FORMULA}, {rows:,} rows ({meta['users']:,} x {meta['movies']:,} "
          f"levels, 10% holdout) from CSV.gz; {load_line()}")
    print(f"oracle holdout log-loss {meta['oracle']:.4f}")
    head = (f"{'tool':<17}{'read':>6}{'design':>7}{'iters':>7}{'post':>6}{'result':>7}{'fit':>7}"
            f"{'score':>6}{'total':>7}{'passes':>7}{'peak GB':>8}{'logloss':>8}{'accuracy':>9}"
            f"{'objective':>16}{'rel gap':>9}")
    print(head)
    print("-" * len(head))
    for tool, r in results.items():
        if "error" in r:
            print(f"{tool:<17}  {r['error']}")
            continue
        gap = (r["objective"] - best) / abs(best) if r.get("tau1") and best else None
        print(f"{tool:<17}{r['read']:6.1f}{r['design']:7.2f}{r['iterations']:7.2f}"
              f"{_f(r['posterior'], '6.2f'):>6}{_f(r['results'], '7.2f'):>7}{r['fit']:7.2f}"
              f"{r['score']:6.2f}{r['total']:7.1f}{_f(r['passes'], '7d'):>7}{r['peak_rss_gb']:8.2f}"
              f"{r['logloss']:8.4f}{r['accuracy']:9.4f}{r['objective']:16.4f}{_f(gap, '9.1e'):>9}")
    for tool, r in results.items():
        if "note" in r:
            print(f"  {tool}: {r['note']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

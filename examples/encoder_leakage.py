"""Cross-fitted impact codes do not leak; naive target encoding does.

A binary outcome depends on one numeric feature x.  A second column, "noise", is a
high-cardinality id (2,000 levels, ~1.5 rows each) that has NOTHING to do with the
outcome.  We encode the id three ways and hand the result to gradient boosting:

* naive target encoding: the level's mean outcome over all training rows;
* ImpactEncoder().fit(X, y).transform(X): shrunken codes, but computed on the same rows;
* ImpactEncoder().fit_transform(X, y): shrunken AND cross-fitted (5 folds).

and report holdout log-loss and the permutation importance of "noise" on the
training rows (how much the model leans on it) and on the holdout rows (how much it
really helps: ~0 for a noise column).

    python examples/encoder_leakage.py
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.inspection import permutation_importance
from sklearn.metrics import log_loss

from impactglm.encoder import ImpactEncoder


def make_data(n: int = 5000, n_levels: int = 3000, seed: int = 1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    X = pd.DataFrame({"noise": rng.integers(0, n_levels, n).astype(str), "x": x})
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-1.5 * x))).astype(int)
    return X, y


def naive_target_encoding(train: pd.Series, y: np.ndarray, test: pd.Series):
    means = pd.Series(y).groupby(train.to_numpy()).mean()
    return (train.map(means).astype(float).to_numpy(),
            test.map(means).astype(float).fillna(float(y.mean())).to_numpy())


def evaluate(name, A, B, ytr, yte):
    model = HistGradientBoostingClassifier(max_iter=60, random_state=0).fit(A, ytr)
    loss = log_loss(yte, model.predict_proba(B)[:, 1])
    imp_tr = permutation_importance(model, A, ytr, n_repeats=3, random_state=0,
                                    scoring="neg_log_loss").importances_mean[0]
    imp_te = permutation_importance(model, B, yte, n_repeats=3, random_state=0,
                                    scoring="neg_log_loss").importances_mean[0]
    return {"encoding": name, "holdout log-loss": loss,
            "noise importance (train)": imp_tr, "noise importance (holdout)": imp_te}


def main() -> pd.DataFrame:
    t0 = time.perf_counter()
    X, y = make_data()
    n_train = 3750
    Xtr, Xte, ytr, yte = X.iloc[:n_train], X.iloc[n_train:], y[:n_train], y[n_train:]
    rows = []
    na, nb = naive_target_encoding(Xtr["noise"], ytr, Xte["noise"])
    rows.append(evaluate("naive target encoding", Xtr.assign(noise=na), Xte.assign(noise=nb),
                         ytr, yte))
    for prior in ("auto", 1.0):
        tag = "tau estimated" if prior == "auto" else f"tau fixed at {prior}"
        enc = ImpactEncoder(prior_sd=prior, random_state=0).fit(Xtr, ytr)
        rows.append(evaluate(f"impact codes ({tag}), fit on the same rows",
                             enc.transform(Xtr), enc.transform(Xte), ytr, yte))
        enc = ImpactEncoder(prior_sd=prior, random_state=0)
        rows.append(evaluate(f"impact codes ({tag}), cross-fitted",
                             enc.fit_transform(Xtr, ytr), enc.transform(Xte), ytr, yte))
        if prior == "auto":
            tau = enc.prior_sd_["noise"]
    base = HistGradientBoostingClassifier(max_iter=60, random_state=0).fit(Xtr[["x"]], ytr)
    rows.append({"encoding": "column dropped (reference)",
                 "holdout log-loss": log_loss(yte, base.predict_proba(Xte[["x"]])[:, 1]),
                 "noise importance (train)": 0.0, "noise importance (holdout)": 0.0})
    table = pd.DataFrame(rows).set_index("encoding")
    print(f"{len(X)} rows, a pure-noise id with {X['noise'].nunique()} levels; "
          f"estimated prior sd of its codes: {tau:.3f}\n")
    print(table.to_string(float_format="{:.4f}".format))
    print(f"\n({time.perf_counter() - t0:.1f} s)")
    return table


if __name__ == "__main__":
    main()

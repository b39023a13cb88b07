"""``impactglm demo``: MovieLens-shaped ratings with known truth, fitted in seconds.

The simulator (:mod:`impactglm.simulate`) draws ratings from an ordinal-logistic
model with user and movie effects, so the best achievable holdout log-loss (the
"oracle": the true class probabilities) is known.  The demo fits

    Rating ~ ^UserID + ^MovieID + age + C(genre)      (family multinomial)

on a training split, and reports on the held-out rows the log-loss
-mean_i log p_i[y_i] and the accuracy mean_i [argmax_c p_i[c] = y_i] of

* the truth (the simulator's class probabilities),
* the impactglm model,
* the same model without the two id factors (fitted on at most BASELINE_ROWS rows), and
* the class frequencies of the training rows (the null model),

all computed by the same function, so the rows of the table are comparable.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd


from ..model import glm
from ..simulate import make_ratings
from .progress import ticker


@dataclass(frozen=True)
class Scores:
    """Holdout metrics of one set of predicted probabilities."""

    logloss: float
    accuracy: float


# The model without ids has a few dozen coefficients: 100,000 rows pin them down to
# well below the holdout noise (the expected log-loss cost is about p / (2 n) = 0.0004),
# and keep the demo's baseline quick whatever --rows is.
BASELINE_ROWS = 100_000


def score_probabilities(proba: np.ndarray, y: np.ndarray) -> Scores:
    """Log-loss and accuracy of class probabilities ``proba`` (n, C) for class indices ``y``.

    A binary outcome may be given as the vector P(y=1) with ``y`` in {0, 1}.
    Probabilities are clipped to [1e-300, 1] before the log so that one
    confident mistake gives a large, finite loss.
    """
    proba = np.asarray(proba, dtype=float)
    y = np.asarray(y, dtype=np.int64)
    if proba.ndim == 1:
        proba = np.column_stack([1.0 - proba, proba])
    p_true = proba[np.arange(len(y)), y]
    logloss = float(-np.mean(np.log(np.clip(p_true, 1e-300, 1.0))))
    accuracy = float(np.mean(np.argmax(proba, axis=1) == y))
    return Scores(logloss, accuracy)


def demo_sizes(rows: int) -> tuple[int, int]:
    """Users and movies for ``rows`` ratings, MovieLens-like: 6,040 users and 3,706
    movies at 1M rows; users grow with the rows, movies with their square root
    (10M rows -> 60,400 users and 11,719 movies; the real 10M set has 69,878 and 10,677)."""
    users = max(20, int(round(6040 * rows / 1e6)))
    movies = max(10, int(round(3706 * np.sqrt(rows / 1e6))))
    return users, movies


def run_demo(rows: int = 1_000_000, seed: int = 0, family: str = "multinomial",
             holdout: float = 0.1, quiet: bool = False, out=None) -> int:
    """Run the demo and print its report on ``out`` (stdout); returns 0."""
    out = out or sys.stdout
    kind = "multinomial" if family == "multinomial" else "binary"
    response = "Rating" if kind == "multinomial" else "y"
    users, movies = demo_sizes(rows)
    times: dict[str, float] = {}

    t = time.perf_counter()
    sim = make_ratings(rows, users, movies, kind=kind, seed=seed)
    times["simulate"] = time.perf_counter() - t
    rng = np.random.default_rng(seed + 1)
    test = rng.random(rows) < holdout
    train_data, test_data = sim.data[~test], sim.data[test]
    glm_family = "multinomial" if kind == "multinomial" else "binomial"
    print(f"impactglm demo: {rows:,} MovieLens-shaped ratings ({users:,} users, {movies:,} "
          f"movies{', 10 rating classes' if kind == 'multinomial' else ', binary outcome'}), "
          f"seed {seed}; {len(train_data):,} rows to fit, {len(test_data):,} held out",
          file=out)

    formula = f"{response} ~ ^UserID + ^MovieID + age + C(genre)"
    base_formula = f"{response} ~ age + C(genre)"
    t = time.perf_counter()
    with ticker(f"fitting {formula}", quiet):
        res = glm(formula, train_data, family=glm_family).fit()
    times["fit"] = time.perf_counter() - t
    print(file=out)
    print(compact_summary(res, formula, glm_family), file=out)

    t = time.perf_counter()
    base_rows = train_data.iloc[:BASELINE_ROWS]      # rows are in random order already
    with ticker(f"fitting {base_formula}", quiet):
        base = glm(base_formula, base_rows, family=glm_family).fit()
    times["fit without ids"] = time.perf_counter() - t

    t = time.perf_counter()
    y_test, labels = _class_index(test_data[response].to_numpy(), kind)
    full_p = _probabilities(res, test_data, labels, kind)
    times["score holdout"] = time.perf_counter() - t
    base_p = _probabilities(base, test_data, labels, kind)
    y_train, _ = _class_index(train_data[response].to_numpy(), kind)
    freq = np.bincount(y_train, minlength=len(labels)) / len(y_train)
    null_p = np.broadcast_to(freq, (len(y_test), len(labels)))
    true_p = sim.true_proba(np.flatnonzero(test))
    if kind == "binary":
        true_p = np.column_stack([1 - true_p, true_p])

    table = [
        ("truth (the simulator's probabilities)", score_probabilities(true_p, y_test)),
        (f"impactglm  {formula.split('~')[1].strip()}", score_probabilities(full_p, y_test)),
        (f"impactglm  {base_formula.split('~')[1].strip()}  (no ids"
         + (f", fitted on {len(base_rows):,} rows)" if len(base_rows) < len(train_data) else ")"),
         score_probabilities(base_p, y_test)),
        ("class frequencies only", score_probabilities(null_p, y_test)),
    ]
    print(file=out)
    print(format_table(table, len(test_data)), file=out)
    print(file=out)
    print("times: " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()), file=out)
    return 0


def compact_summary(res: Any, formula: str, family: str) -> str:
    """A short report of a fit: sizes, convergence, the prior sd of each ^ factor and
    the fixed coefficients as one table with a column per class (``res.summary()``
    has the full table with standard errors)."""
    params = res.params
    lines = [f"{formula}   (family {family})"]
    status = "converged" if getattr(res, "converged", True) else "NOT converged"
    lines.append(f"fitted on {int(res.nobs):,} rows: {res.n_iter} iterations, {status}")
    for e in getattr(res, "factor_effects", ()):
        how = "estimated" if getattr(e, "tau_estimated", False) else "given"
        tau = "none" if e.tau is None else f"{e.tau:.4g}"
        lines.append(f"  ^{e.name}: {len(e.levels):,} levels, prior sd tau = {tau} ({how})")
    if isinstance(params, pd.DataFrame):
        ref = params.columns[0]
        lines.append(f"fixed coefficients: log-odds of each class against class {_fmt_label(ref)}"
                     "\n(the level effects are symmetric: they sum to 0 over the classes)")
        table = params.iloc[:, 1:].rename(columns=_fmt_label)
    else:
        lines.append("fixed coefficients:")
        table = params.to_frame("coef")
    lines.append(table.to_string(float_format=lambda v: f"{v:.3f}"))
    lines.append("(res.summary() has standard errors and tests)")
    return "\n".join(lines)


def _fmt_label(c: Any) -> str:
    return f"{c:g}" if isinstance(c, (float, np.floating)) else str(c)


def format_table(table: list[tuple[str, Scores]], n_test: int) -> str:
    """The holdout comparison as aligned text."""
    width = max(len(name) for name, _ in table)
    head = f"holdout ({n_test:,} rows)".ljust(width)
    lines = [f"{head}   log-loss   accuracy", "-" * (width + 25)]
    for name, s in table:
        lines.append(f"{name.ljust(width)}   {s.logloss:8.4f}   {s.accuracy:8.4f}")
    return "\n".join(lines)


def _class_index(y: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Class indices 0..C-1 of ``y`` and the sorted labels."""
    if kind == "binary":
        return y.astype(np.int64), np.array([0, 1])
    labels = np.unique(y)
    return np.searchsorted(labels, y).astype(np.int64), labels


def _probabilities(res: Any, data: pd.DataFrame, labels: np.ndarray, kind: str) -> np.ndarray:
    """(n, C) class probabilities of ``res`` on ``data``, columns in ``labels`` order."""
    if kind == "binary":
        p = np.asarray(res.predict(data, which="mean"), dtype=float)
        return np.column_stack([1 - p, p])
    proba = pd.DataFrame(res.predict(data))
    columns = pd.Index(proba.columns)
    try:
        order = [columns.get_loc(c) for c in labels]
    except KeyError:
        order = [columns.get_loc(str(c)) for c in labels]
    return proba.to_numpy(dtype=float)[:, order]

"""MovieLens-shaped synthetic data with known truth, for the demo, tests and benchmarks.

Rows are (user, movie) pairs. User activity is lognormal and movie popularity
Zipf-like, so a few levels hold many rows and many levels hold one or two, as in
real ratings data. The linear predictor is

    eta_i = b0 + u[user_i] + m[movie_i] + b_age * age_std[user_i] + g[genre[movie_i]]

with u ~ N(0, user_sd^2) and m ~ N(0, movie_sd^2).  The outcome is

* ``kind="binary"``:      y ~ Bernoulli(logistic(eta)), column ``y`` (0/1);
* ``kind="gaussian"``:    y = eta + N(0, noise_sd^2) (scaled to a 1-5 range);
* ``kind="multinomial"``: an ordinal-logistic star rating in 0.5, 1.0, ..., 5.0
                          (10 classes), column ``Rating``.

Because the generator knows eta, it knows the true class probabilities, and so
the best achievable ("oracle") log-loss of any model on any subset of rows.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

GENRES = np.array(["Action", "Comedy", "Drama", "Horror", "Romance", "SciFi", "Thriller"])
STARS = np.arange(1, 11) / 2.0  # 0.5 .. 5.0


@dataclass(frozen=True)
class Simulated:
    """Generated data plus the truth behind them."""

    data: pd.DataFrame
    eta: np.ndarray            # true linear predictor per row
    user_effect: np.ndarray
    movie_effect: np.ndarray
    kind: str
    cutpoints: np.ndarray | None = None   # ordinal thresholds (multinomial)

    def true_proba(self, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
        """True P(y=1) (binary) or the (n, 10) class probabilities (multinomial)."""
        eta = self.eta[rows]
        if self.kind == "binary":
            return 1.0 / (1.0 + np.exp(-eta))
        if self.kind == "multinomial":
            cdf = 1.0 / (1.0 + np.exp(-(self.cutpoints[None, :] - eta[:, None])))
            cdf = np.hstack([np.zeros((len(eta), 1)), cdf, np.ones((len(eta), 1))])
            return np.diff(cdf, axis=1)
        raise ValueError("true_proba is defined for binary and multinomial data")

    def oracle_logloss(self, rows: np.ndarray | slice = slice(None)) -> float:
        """Mean log-loss of the true probabilities on ``rows`` (the best any model can do)."""
        if self.kind == "binary":
            p = self.true_proba(rows)
            y = self.data["y"].to_numpy()[rows]
            return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))
        p = self.true_proba(rows)
        k = np.rint(self.data["Rating"].to_numpy()[rows] * 2).astype(int) - 1
        return float(-np.mean(np.log(p[np.arange(len(k)), k])))


def make_ratings(n_rows: int = 1_000_000, n_users: int = 6040, n_movies: int = 3706,
                 kind: str = "multinomial", user_sd: float = 0.8, movie_sd: float = 0.6,
                 seed: int = 0, covariates: bool = True) -> Simulated:
    """Generate MovieLens-shaped ratings (see the module docstring for the model)."""
    if kind not in ("binary", "gaussian", "multinomial"):
        raise ValueError(f"kind must be 'binary', 'gaussian' or 'multinomial', not {kind!r}")
    rng = np.random.default_rng(seed)
    activity = rng.lognormal(0.0, 1.0, n_users)
    popularity = 1.0 / np.arange(1, n_movies + 1) ** 0.9
    rng.shuffle(popularity)
    user = _draw(rng, activity, n_rows)
    movie = _draw(rng, popularity, n_rows)
    u = rng.normal(0.0, user_sd, n_users)
    m = rng.normal(0.0, movie_sd, n_movies)
    eta = u[user] + m[movie]
    cols: dict[str, np.ndarray] = {"UserID": user + 1, "MovieID": movie + 1}
    if covariates:
        age = np.clip(rng.normal(33, 11, n_users), 16, 80).round()
        genre = rng.integers(0, len(GENRES), n_movies)
        genre_effect = np.linspace(-0.3, 0.3, len(GENRES))
        eta += 0.3 * (age[user] - 33) / 11 + genre_effect[genre[movie]]
        cols["age"] = age[user]
        cols["genre"] = GENRES[genre[movie]]
    cutpoints = None
    if kind == "binary":
        eta += 0.2
        cols["y"] = (rng.random(n_rows) < 1 / (1 + np.exp(-eta))).astype(np.int8)
    elif kind == "gaussian":
        cols["y"] = 3.5 + 0.5 * eta + rng.normal(0.0, 0.9, n_rows)
    else:
        # thresholds for a MovieLens-like star distribution (mode at 4 stars)
        cutpoints = np.array([-4.2, -3.3, -2.6, -1.7, -1.1, -0.1, 0.7, 1.9, 2.7])
        latent = eta + rng.logistic(0.0, 1.0, n_rows)
        cols["Rating"] = STARS[np.searchsorted(cutpoints, latent)]
    return Simulated(pd.DataFrame(cols), eta, u, m, kind, cutpoints)


def _draw(rng: np.random.Generator, weights: np.ndarray, n: int) -> np.ndarray:
    """n draws of indices with probabilities proportional to ``weights`` (int32)."""
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    return np.minimum(np.searchsorted(cdf, rng.random(n)), len(weights) - 1).astype(np.int32)

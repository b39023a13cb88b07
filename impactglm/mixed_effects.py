"""Nonlinear fixed part plus random effects: ``MixedEffectsRegressor``, ``MixedEffectsClassifier``.

The model (gaussian; binary with a logit link on the right-hand side):

    y_i = f(x_i) + x_i' gamma + sum_k b_k[z_k(i)] + e_i,   b_k ~ N(0, tau_k^2 I),  e ~ N(0, s^2)

f is any scikit-learn regressor trained on the non-``high_cardinality`` columns, the listed
columns are crossed ``^`` factors, and ``x_i' gamma`` (intercept plus the numeric columns,
``linear_correction=True``) is a linear correction fitted in the random-effects step.
Fitting alternates

(a) the random-effects step: the exact ``ig.glm("y ~ 1 + x... + ^z1 + ^z2", offset=f(X),
    prior_sd="auto")`` fit, i.e. the BLUPs b_hat and gamma given f, with tau_k (and s^2)
    re-estimated by REML (gaussian) or by the engine's Laplace criterion (binomial);
(b) the f step: f is refitted on the BLUP-adjusted target ``y - Z b_hat`` (binary: the
    working response ``f + x'gamma + (y - mu) / w`` with weights ``w = mu (1 - mu)`` at the
    mode), the residual after the BLUP being the gradient of the marginal NLL with respect to
    the values f(x_i): V^-1 (y - f) = (y - f - Z b_hat) / s^2 (docs/nonlinear.md);

until the marginal criterion of step (a) (the engine's REML or Laplace criterion, -2 log
scale) improves by less than ``tol`` per observation.
With ``cv=K`` (default 5) f is cross-fitted: K models, each trained on K-1 folds, and the
predictions that step (a) takes as its offset are out-of-fold, so f cannot absorb the level
effects or the noise of the rows it predicts (the flaw of MERF-style in-sample EM); new rows
get the mean of the K models.  ``cv=None`` trains one f in-sample; then with f a
``LinearRegression`` the fit is exactly ``ig.glm("y ~ x1 + ... + ^z", prior_sd="auto")``
(proof in docs/nonlinear.md), which the tests check to 1e-6.

    >>> from sklearn.ensemble import HistGradientBoostingRegressor
    >>> from impactglm.mixed_effects import MixedEffectsRegressor
    >>> m = MixedEffectsRegressor(HistGradientBoostingRegressor(), high_cardinality=["user"])
    >>> m.fit(X_train, y_train).predict(X_test)                       # doctest: +SKIP

Unseen levels at prediction time get the prior mean 0 (f and the linear correction alone),
reported by the engine's UnseenLevelWarning.  scikit-learn is an optional dependency.
"""
from __future__ import annotations

import math
import time
from typing import Any, Sequence

import numpy as np
import pandas as pd

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, clone
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.model_selection import KFold
    from sklearn.pipeline import Pipeline
    from sklearn.utils.validation import check_is_fitted, column_or_1d
except ImportError as exc:  # pragma: no cover - exercised only without scikit-learn
    raise ImportError("impactglm.mixed_effects needs scikit-learn: "
                      "pip install 'impactglm[sklearn]'") from exc

from .errors import ColumnNotFoundError, DataError, ModelError
from .model import glm

__all__ = ["MixedEffectsRegressor", "MixedEffectsClassifier"]

_Y = "y__"
_W_FLOOR = 1e-6          # binary working weights mu (1 - mu) are floored here


def _sample_weight_kw(estimator, weight: np.ndarray | None) -> dict:
    """``fit`` keyword passing row weights to ``estimator`` (a Pipeline: to its last step)."""
    if weight is None:
        return {}
    if isinstance(estimator, Pipeline):
        return {f"{estimator.steps[-1][0]}__sample_weight": weight}
    return {"sample_weight": weight}


class _MixedEffectsBase(BaseEstimator):
    """The alternation shared by the regressor and the classifier (module docstring)."""

    _family = "gaussian"

    def __init__(self, estimator=None, high_cardinality: Sequence[Any] | None = None, *,
                 cv: int | None = 5, linear_correction: bool = True, prior_sd: Any = "auto",
                 max_iter: int = 10, tol: float = 1e-3, random_state: int | None = 0,
                 verbose: bool = False):
        self.estimator = estimator
        self.high_cardinality = high_cardinality
        self.cv = cv
        self.linear_correction = linear_correction
        self.prior_sd = prior_sd
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.verbose = verbose

    # ---------------------------------------------------------------- data
    def _split(self, X, reset: bool) -> tuple[Any, pd.DataFrame]:
        """(features for f, frame for the random-effects step) from X (never modified).

        The frame has the numeric f-features as ``c0, c1, ...`` (the linear correction) and
        the high-cardinality columns as ``h0, h1, ...``."""
        hc = self.high_cardinality
        hc = [hc] if isinstance(hc, (str, int, np.integer)) else list(hc or [])
        if not hc:
            raise ModelError("high_cardinality must name at least one column")
        if isinstance(X, pd.DataFrame):
            frame_in = X
            names = list(X.columns)
            missing = [h for h in hc if h not in names]
            if missing:
                raise ColumnNotFoundError(missing[0], [str(c) for c in names])
            hc_names = hc
        else:
            arr = np.asarray(X, dtype=object if not np.issubdtype(np.asarray(X).dtype,
                                                                  np.number) else None)
            if arr.ndim != 2:
                raise DataError(f"X must be 2-dimensional, got shape {arr.shape}")
            bad = [h for h in hc if not (isinstance(h, (int, np.integer))
                                         and 0 <= h < arr.shape[1])]
            if bad:
                raise DataError(f"with array input, high_cardinality takes column positions "
                                f"0..{arr.shape[1] - 1}, not {bad[0]!r}")
            frame_in = pd.DataFrame({j: arr[:, j] for j in range(arr.shape[1])})
            names = list(frame_in.columns)
            hc_names = [int(h) for h in hc]
        if len(frame_in) == 0:
            raise DataError("X has 0 samples; at least one is required")
        feat_names = [c for c in names if c not in hc_names]
        if not feat_names:
            raise DataError("X has no column besides the high-cardinality ones for f")
        if reset:
            self.n_features_in_ = len(names)
            self.high_cardinality_ = hc_names
            if isinstance(X, pd.DataFrame):
                self.feature_names_in_ = np.asarray([str(c) for c in names], dtype=object)
            self._feat_names = feat_names
            self._numpy_input = not isinstance(X, pd.DataFrame)
        elif len(names) != self.n_features_in_:
            raise DataError(f"X has {len(names)} columns; the model was fitted on "
                            f"{self.n_features_in_}")
        feats = frame_in[self._feat_names]
        if self._numpy_input:
            try:
                feats = feats.to_numpy(dtype=np.float64)
            except (TypeError, ValueError):
                raise DataError("with array input the columns other than high_cardinality "
                                "must be numeric") from None
        cols: dict[str, Any] = {}
        if reset:
            self._lin_cols = []
        if self.linear_correction:
            lin = [c for c in self._feat_names if pd.api.types.is_numeric_dtype(frame_in[c])
                   and not pd.api.types.is_bool_dtype(frame_in[c])]
            if reset:
                self._lin_cols = lin
            for j, c in enumerate(lin):
                v = np.asarray(frame_in[c], dtype=np.float64)
                if not np.all(np.isfinite(v)):
                    raise DataError(f"column {c!r} holds a non-finite value at row "
                                    f"{int(np.flatnonzero(~np.isfinite(v))[0])}")
                cols[f"c{j}"] = v
        for k, h in enumerate(hc_names):
            cols[f"h{k}"] = frame_in[h].to_numpy()
        return feats, pd.DataFrame(cols)

    def _formula(self, frame: pd.DataFrame) -> str:
        lin = [c for c in frame.columns if c.startswith("c")]
        hc = [f"^{c}" for c in frame.columns if c.startswith("h")]
        return f"{_Y} ~ " + " + ".join(["1"] + lin + hc)

    # ---------------------------------------------------------------- the two steps
    def _f_step(self, feats, target: np.ndarray, weight: np.ndarray | None) -> np.ndarray:
        """Refit f (every fold model) on ``target``; return the offset for step (a):
        out-of-fold predictions (cv=K) or in-sample ones (cv=None)."""
        rows = (lambda idx: feats.iloc[idx]) if isinstance(feats, pd.DataFrame) \
            else (lambda idx: feats[idx])
        out = np.empty(len(target))
        for m, (train, test) in zip(self.estimators_, self._folds):
            w = None if weight is None else weight[train]
            m.fit(rows(train), target[train], **_sample_weight_kw(m, w))
            out[test] = np.asarray(m.predict(rows(test)), dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(out)):
            raise ModelError("the estimator returned non-finite predictions")
        return out

    def _f_predict(self, feats) -> np.ndarray:
        pred = [np.asarray(m.predict(feats), dtype=np.float64).reshape(-1)
                for m in self.estimators_]
        return np.mean(pred, axis=0)

    def _re_step(self, frame: pd.DataFrame, y: np.ndarray, offset: np.ndarray):
        """Step (a): the exact ^ fit given f (offset); returns (results, Z b_hat, X gamma,
        marginal criterion or None)."""
        res = glm(self.formula_, frame.assign(**{_Y: y}), family=self._family, offset=offset,
                  prior_sd=self.prior_sd, na_action="raise").fit()
        params = res.params
        lin = np.full(len(y), float(params.get("Intercept", 0.0)))
        for c in frame.columns:
            if c.startswith("c") and c in params.index:
                lin += float(params[c]) * frame[c].to_numpy()
        eta = np.asarray(res.predict(which="linear"), dtype=np.float64)
        crit = res.to_dict()[0]["extra"].get("tau_criterion")
        return res, eta - offset - lin, lin, (None if crit is None else float(crit))

    def _target(self, y: np.ndarray, offset: np.ndarray, zb: np.ndarray, lin: np.ndarray):
        """(target, weights) of the f step; gaussian: y - Z b_hat, unweighted."""
        return y - zb, None

    def _start(self, y: np.ndarray):
        """(target, weights) of the first f step (no random effects yet)."""
        return y, None

    # ---------------------------------------------------------------- fit
    def _fit(self, X, y: np.ndarray) -> "_MixedEffectsBase":
        t0 = time.perf_counter()
        if not (isinstance(self.max_iter, (int, np.integer)) and self.max_iter >= 1):
            raise ModelError(f"max_iter must be a positive integer, not {self.max_iter!r}")
        feats, frame = self._split(X, reset=True)
        n = len(frame)
        if len(y) != n:
            raise DataError(f"X has {n} rows but y has {len(y)}")
        self.formula_ = self._formula(frame)
        base = HistGradientBoostingRegressor() if self.estimator is None else self.estimator
        if self.cv is None or self.cv == 1:
            self._folds = [(np.arange(n), np.arange(n))]
        else:
            if not (isinstance(self.cv, (int, np.integer)) and 2 <= self.cv <= n):
                raise ModelError(f"cv must be None or an integer in 2..n_samples, not "
                                 f"{self.cv!r}")
            self._folds = list(KFold(int(self.cv), shuffle=True,
                                     random_state=self.random_state).split(np.zeros(n)))
        self.estimators_ = [clone(base) for _ in self._folds]
        target, weight = self._start(y)
        path, crit_old, eta_old = [], None, None
        for it in range(1, self.max_iter + 1):
            offset = self._f_step(feats, target, weight)
            res, zb, lin, crit = self._re_step(frame, y, offset)
            eta = offset + lin + zb
            path.append({"iteration": it, "criterion": crit,
                         "prior_sd": dict(res.prior_sd), "seconds": time.perf_counter() - t0})
            if self.verbose:
                print(f"iteration {it}: criterion {crit}, prior sd {res.prior_sd}")
            if crit is not None and crit_old is not None:
                done = crit_old - crit <= self.tol * n      # small gain, or none
            elif eta_old is not None:
                done = np.linalg.norm(eta - eta_old) <= self.tol * (1 + np.linalg.norm(eta))
            else:
                done = False
            crit_old, eta_old = crit, eta
            if done:
                break
            target, weight = self._target(y, offset, zb, lin)
        self.results_ = res
        self.n_iter_ = it
        self.converged_ = bool(done)
        self.path_ = pd.DataFrame(path).set_index("iteration")
        self.fit_seconds_ = time.perf_counter() - t0
        if len(self.estimators_) == 1:
            self.estimator_ = self.estimators_[0]
        return self

    # ---------------------------------------------------------------- outputs
    def _eta(self, X) -> np.ndarray:
        check_is_fitted(self, "results_")
        feats, frame = self._split(X, reset=False)
        f = self._f_predict(feats)
        eta = self.results_.predict(frame, which="linear", offset=f)
        return np.asarray(eta, dtype=np.float64)

    def _factor(self, name) -> str:
        check_is_fitted(self, "results_")
        for k, h in enumerate(self.high_cardinality_):
            if h == name or str(h) == str(name).lstrip("^"):
                return f"h{k}"
        raise ModelError(f"{name!r} is not one of the high_cardinality columns "
                         f"{self.high_cardinality_}")

    def level_effects(self, name) -> pd.DataFrame:
        """Per-level n, effect (BLUP / posterior mode), se of the high-cardinality column
        ``name``."""
        frame = self.results_.level_effects(self._factor(name)).copy()
        frame.index.name = str(name)
        return frame

    @property
    def prior_sd_(self) -> dict:
        """Estimated sd tau_k of each high-cardinality column's effects."""
        check_is_fitted(self, "results_")
        sd = self.results_.prior_sd
        return {h: sd[f"h{k}"] for k, h in enumerate(self.high_cardinality_)}

    @property
    def variance_components_(self) -> dict:
        """tau_k^2 by column, and (gaussian) the residual variance under ``"residual"``."""
        vc = {h: (None if t is None else t ** 2) for h, t in self.prior_sd_.items()}
        if self._family == "gaussian":
            vc["residual"] = float(self.results_.scale)
        return vc

    @property
    def linear_coef_(self) -> pd.Series:
        """The linear correction gamma of the last random-effects step (named by column)."""
        check_is_fitted(self, "results_")
        p = self.results_.params
        out = {"Intercept": float(p.get("Intercept", 0.0))}
        for j, c in enumerate(self._lin_cols):
            out[str(c)] = float(p[f"c{j}"])
        return pd.Series(out, name="coef")

    def summary(self) -> str:
        """Text: f, the variance components, the iterations, the random-effects fit."""
        check_is_fitted(self, "results_")
        est = self.estimators_[0]
        lines = [f"{type(self).__name__}: f = {type(est).__name__}"
                 + (f", cross-fitted over {len(self.estimators_)} folds"
                    if len(self.estimators_) > 1 else ", in-sample"),
                 f"iterations: {self.n_iter_} ({'converged' if self.converged_ else 'max_iter'}"
                 f" reached), {self.fit_seconds_:.2f} s",
                 "variance components:"]
        for k, v in self.variance_components_.items():
            lines.append(f"  {k}: {v:.6g}")
        lines.append(self.path_.to_string())
        lines.append("random-effects step (offset = f):")
        lines.append(str(self.results_.summary()))
        return "\n".join(lines)


class MixedEffectsRegressor(RegressorMixin, _MixedEffectsBase):
    """y = f(X) + x'gamma + Z b + e with f any scikit-learn regressor (module docstring).

    Parameters
    ----------
    estimator : scikit-learn regressor, default ``HistGradientBoostingRegressor()``
        f; trained on the columns that are not ``high_cardinality`` (cloned, never modified).
    high_cardinality : list of column names (positions for arrays)
        The crossed ^ factors, one random intercept per level.
    cv : int or None, default 5
        Folds of cross-fitting (out-of-fold f in the random-effects step); None: in-sample.
    linear_correction : bool, default True
        Fit intercept plus numeric columns linearly in the random-effects step (makes the REML
        step exact for linear f).
    prior_sd : "auto" (REML), a number, a dict by factor
    max_iter, tol : alternations; stop when the REML criterion improves by <= tol * n.
    random_state : folds' shuffling.

    Attributes
    ----------
    results_ (GLMResults of the last random-effects step), estimators_ (fold models),
    estimator_ (cv=None), prior_sd_, variance_components_, linear_coef_, n_iter_, path_.
    """

    def fit(self, X, y) -> "MixedEffectsRegressor":
        """Fit by alternating the exact random-effects step and the f step."""
        y = y.to_numpy() if isinstance(y, (pd.Series, pd.DataFrame)) else y
        try:
            y = np.asarray(column_or_1d(y), dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError("y must be numeric for a regressor") from None
        if not np.all(np.isfinite(y)):
            raise DataError(f"y holds a non-finite value (NaN or inf) at row "
                            f"{int(np.flatnonzero(~np.isfinite(y))[0])}")
        return self._fit(X, y)

    def predict(self, X) -> np.ndarray:
        """f(X) + x'gamma + the level effects of X's levels (0 for unseen levels)."""
        return self._eta(X)


class MixedEffectsClassifier(ClassifierMixin, _MixedEffectsBase):
    """Binary: P(y = 1) = logistic(f(X) + x'gamma + Z b), b_k ~ N(0, tau_k^2 I).

    f is a scikit-learn *regressor* trained on the working response at the mode,
    ``f + x'gamma + (y - mu) / w`` with weights ``w = mu (1 - mu)`` (one Newton step of the
    Laplace marginal likelihood in the values f(x_i) per alternation; docs/nonlinear.md).
    Parameters and attributes as :class:`MixedEffectsRegressor` (tau by the engine's Laplace
    criterion); ``classes_`` holds the two labels.
    """

    _family = "binomial"

    def fit(self, X, y) -> "MixedEffectsClassifier":
        """Fit; ``y`` holds two class labels (the second of ``classes_`` is the event)."""
        y = y.to_numpy() if isinstance(y, (pd.Series, pd.DataFrame)) else y
        y = column_or_1d(y)
        if pd.isna(y).any():
            raise DataError(f"y holds a missing value at row {int(np.flatnonzero(pd.isna(y))[0])}")
        self.classes_, idx = np.unique(y, return_inverse=True)
        if len(self.classes_) != 2:
            raise DataError(f"MixedEffectsClassifier is binary; y has {len(self.classes_)} "
                            f"classes")
        return self._fit(X, idx.astype(np.float64))

    def _start(self, y: np.ndarray):
        p = float(np.clip(y.mean(), 1e-3, 1 - 1e-3))
        w = p * (1 - p)
        return math.log(p / (1 - p)) + (y - p) / w, np.full(len(y), w)

    def _target(self, y, offset, zb, lin):
        eta = offset + lin + zb
        mu = 1.0 / (1.0 + np.exp(-eta))
        w = np.maximum(mu * (1 - mu), _W_FLOOR)
        return offset + lin + (y - mu) / w, w

    def predict_proba(self, X) -> np.ndarray:
        """(n, 2) probabilities in the order of ``classes_``."""
        p = 1.0 / (1.0 + np.exp(-self._eta(X)))
        return np.column_stack([1 - p, p])

    def decision_function(self, X) -> np.ndarray:
        """The linear predictor f(X) + x'gamma + Z b (log-odds of ``classes_[1]``)."""
        return self._eta(X)

    def predict(self, X) -> np.ndarray:
        return self.classes_[(self._eta(X) > 0).astype(int)]

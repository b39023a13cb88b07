"""scikit-learn estimators: ``ImpactGLMClassifier`` and ``ImpactGLMRegressor``.

Thin adapters around :func:`impactglm.glm`: ``fit(X, y)`` builds a formula from the
columns of ``X`` (or takes yours), fits the posterior-mode GLM with one shrunken effect
per level of each high-cardinality column, and keeps the results object as
``results_``.  They work in ``Pipeline``, ``cross_val_score`` and ``GridSearchCV``.

    >>> from impactglm.sklearn import ImpactGLMClassifier
    >>> clf = ImpactGLMClassifier(high_cardinality=["user", "movie"])
    >>> clf.fit(X_train, y_train).predict_proba(X_test)          # doctest: +SKIP

The model for a DataFrame ``X`` with ``high_cardinality=["user", "movie"]``:

    eta_i = x_i' beta + a_user[user_i] + a_movie[movie_i],   a_g ~ N(0, tau_g^2)

where x_i holds an intercept, every numeric column as it is, and every other column
(string, categorical, boolean) as an ordinary treatment-coded factor ``C(col)``.  With
``formula="x1 + np.log(x2) + ^user"`` (a right-hand side; a left-hand side, if any, is
ignored) you choose the terms yourself.  NumPy input: columns are named ``x0, x1, ...``
and ``high_cardinality`` takes positions; the other columns must be numeric.

Unseen levels at prediction time get the prior mean 0 (their count is on
``results_.last_unseen`` when the results expose it).  Missing values are an error
(``na_action="raise"``): a scikit-learn estimator returns one prediction per row.

scikit-learn is an optional dependency (``pip install impactglm[sklearn]``).
"""
from __future__ import annotations

import keyword
import re
from typing import Any, Sequence

import numpy as np
import pandas as pd

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data
except ImportError as exc:  # pragma: no cover - exercised only without scikit-learn
    raise ImportError("impactglm.sklearn needs scikit-learn: pip install 'impactglm[sklearn]'"
                      ) from exc


from .errors import ColumnNotFoundError, DataError, ModelError
from .formula import parse_formula
from .model import glm

__all__ = ["ImpactGLMClassifier", "ImpactGLMRegressor"]

_RESPONSE = "__impactglm_y__"
_PATSY_NAMES = {"C", "I", "Q", "np", "center", "standardize", "scale", "bs", "cr", "cc", "te"}


def _term_name(name: str) -> str:
    """A column name as Patsy reads it: bare if a plain identifier, else ``Q('...')``."""
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) and not keyword.iskeyword(name) \
            and name not in _PATSY_NAMES:
        return name
    if "'" in name and '"' in name:
        raise DataError(f"column name {name!r} holds both quote characters; rename it")
    quote = '"' if "'" in name else "'"
    return f"Q({quote}{name}{quote})"


def _is_categorical(col: pd.Series) -> bool:
    return (not pd.api.types.is_numeric_dtype(col)) or pd.api.types.is_bool_dtype(col)


def _check_weights(sample_weight, n: int) -> np.ndarray | None:
    """sample_weight as a float vector of n finite, non-negative values, not all zero."""
    if sample_weight is None:
        return None
    try:
        weights = np.asarray(sample_weight, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError("sample_weight must be numeric") from None
    if weights.ndim != 1 or len(weights) != n:
        raise DataError(f"sample_weight must be a 1-d array of {n} values, got shape "
                        f"{weights.shape}")
    if not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise DataError("sample_weight must be finite and non-negative")
    if not np.any(weights > 0):
        raise DataError("sample_weight is zero for every row: nothing to fit")
    return weights


class _ImpactGLMBase(BaseEstimator):
    """Shared fitting and data handling (see the module docstring)."""

    _families: tuple[str, ...] = ()

    # ---------------------------------------------------------------- data

    def _frame(self, X, reset: bool) -> pd.DataFrame:
        """X as a DataFrame with string column names (never modifying the caller's X)."""
        if isinstance(X, pd.DataFrame):
            validate_data(self, X, reset=reset, skip_check_array=True)
            if X.shape[0] == 0:
                raise DataError("X has 0 samples; at least one is required")
            frame = X.rename(columns=str) if not all(isinstance(c, str) for c in X.columns) \
                else X
            if reset:
                self._numpy_input = False
            return frame
        hc_pos = self._high_cardinality_positions(X)
        arr = validate_data(self, X, reset=reset, dtype=None, ensure_all_finite=True,
                            accept_sparse=False, ensure_min_samples=1)
        if reset:
            self._numpy_input = True
        cols = {}
        for j in range(arr.shape[1]):
            if j in hc_pos:
                cols[f"x{j}"] = arr[:, j]
            else:
                cols[f"x{j}"] = np.asarray(arr[:, j], dtype=np.float64)
        return pd.DataFrame(cols)

    def _high_cardinality_positions(self, X) -> set[int]:
        hc = self._high_cardinality_list()
        if not hc:
            return set()
        n_cols = np.shape(X)[1] if np.ndim(X) == 2 else 0
        bad = [h for h in hc if not (isinstance(h, (int, np.integer)) and 0 <= h < n_cols)]
        if bad:
            raise DataError(f"with array input, high_cardinality takes column positions "
                            f"0..{n_cols - 1}, not {bad[0]!r}")
        return {int(h) for h in hc}

    def _high_cardinality_list(self) -> list:
        hc = self.high_cardinality
        if hc is None:
            return []
        if isinstance(hc, (str, int, np.integer)):
            return [hc]
        return list(hc)

    def _formula(self, frame: pd.DataFrame) -> str:
        """The model formula: the user's right-hand side, or one built from the columns."""
        if self.formula is not None:
            parsed = parse_formula(self.formula, require_response=False)
            rhs = self.formula.split("~", 1)[1] if parsed.response or "~" in self.formula \
                else self.formula
            return f"{_RESPONSE} ~ {rhs.strip()}"
        hc = [f"x{h}" if self._numpy_input else str(h) for h in self._high_cardinality_list()]
        for h in hc:
            if h not in frame.columns:
                raise ColumnNotFoundError(h, frame.columns)
        terms = []
        for name in frame.columns:
            if name in hc:
                terms.append(f"^{_term_name(name)}")
            elif _is_categorical(frame[name]):
                terms.append(f"C({_term_name(name)})")
            else:
                terms.append(_term_name(name))
        return f"{_RESPONSE} ~ " + (" + ".join(terms) if terms else "1")

    # ---------------------------------------------------------------- fitting

    def _fit(self, X, y_model: np.ndarray, family: str, sample_weight):
        if self.family not in self._families:
            raise ModelError(f"family must be one of {self._families}, not {self.family!r}")
        frame = self._frame(X, reset=True)
        if len(frame) < 2:
            raise DataError("n_samples=1: a GLM needs at least 2 samples")
        if len(y_model) != len(frame):
            raise DataError(f"X has {len(frame)} rows but y has {len(y_model)}")
        if _RESPONSE in frame.columns:
            raise DataError(f"X may not hold a column named {_RESPONSE!r}")
        weights = _check_weights(sample_weight, len(frame))
        formula = self._formula(frame)
        data = frame.assign(**{_RESPONSE: y_model})
        model = glm(formula, data, family=family, link=self.link, weights=weights,
                    prior_sd=self.prior_sd, na_action="raise")
        fit_kw: dict[str, Any] = {}
        if self.maxiter is not None:
            fit_kw["maxiter"] = self.maxiter
        if self.tol is not None:
            fit_kw["tol"] = self.tol
        self.results_ = model.fit(**fit_kw)
        self.formula_ = formula
        self.family_ = family
        return self

    def _predict_mean(self, X) -> np.ndarray:
        """Predicted mean (binomial: P(class 1); multinomial: (n, C) probabilities)."""
        check_is_fitted(self, "results_")
        frame = self._frame(X, reset=False)
        return np.asarray(self.results_.predict(frame), dtype=np.float64)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.input_tags.sparse = False
        return tags

    @property
    def params_(self) -> pd.Series:
        """The fixed coefficients (a pandas Series named by the design columns)."""
        check_is_fitted(self, "results_")
        return self.results_.params


class ImpactGLMClassifier(ClassifierMixin, _ImpactGLMBase):
    """Logistic (binomial) or multinomial GLM with shrunken high-cardinality effects.

    Parameters
    ----------
    high_cardinality : list of column names (positions for arrays), optional
        Columns fitted as ``^col``: one effect per level with prior N(0, tau^2).
    formula : str, optional
        Right-hand side of the model (``"x + C(k) + ^user"``); overrides the columns.
    family : {"auto", "binomial", "multinomial"}
        "auto": binomial for two classes, multinomial for more.
    link : str, optional
        Binomial link ("logit" default, "probit", "cloglog").
    prior_sd : "auto", float, dict or None
        tau of the level effects (see :func:`impactglm.glm`).
    maxiter, tol : passed to ``GLM.fit`` when given.

    Attributes
    ----------
    classes_, results_, formula_, family_, n_features_in_, feature_names_in_, params_
    """

    _families = ("auto", "binomial", "multinomial")

    def __init__(self, high_cardinality: Sequence[Any] | None = None, formula: str | None = None,
                 family: str = "auto", link: str | None = None, prior_sd: Any = "auto",
                 maxiter: int | None = None, tol: float | None = None):
        self.high_cardinality = high_cardinality
        self.formula = formula
        self.family = family
        self.link = link
        self.prior_sd = prior_sd
        self.maxiter = maxiter
        self.tol = tol

    def fit(self, X, y, sample_weight=None) -> "ImpactGLMClassifier":
        """Fit the GLM; ``y`` holds class labels (any hashable values)."""
        y = self._check_y(y)
        check_classification_targets(y)
        sample_weight = _check_weights(sample_weight, len(y))
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        present = y_idx if sample_weight is None else y_idx[sample_weight > 0]
        if len(np.unique(present)) < 2:
            raise DataError("y holds only one class (among rows with positive weight); "
                            "a classifier needs at least 2 classes")
        family = self.family
        if family == "auto":
            family = "binomial" if len(self.classes_) == 2 else "multinomial"
        if family == "binomial" and len(self.classes_) > 2:
            raise DataError(f"family='binomial' needs 2 classes, y has {len(self.classes_)}; "
                            "use family='multinomial'")
        y_model = y_idx.astype(np.float64) if family == "binomial" else y_idx.astype(np.int64)
        return self._fit(X, y_model, family, sample_weight)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, shape (n, n_classes), columns in the order of ``classes_``."""
        mean = self._predict_mean(X)
        if self.family_ == "binomial":
            p = mean.reshape(-1)
            return np.column_stack([1.0 - p, p])
        return mean

    def predict_log_proba(self, X) -> np.ndarray:
        """log of :meth:`predict_proba`."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X) -> np.ndarray:
        """The most probable class label of each row."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def _check_y(self, y) -> np.ndarray:
        y = y.to_numpy() if isinstance(y, (pd.Series, pd.DataFrame)) else y
        return column_or_1d(y, warn=True)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = True
        return tags


class ImpactGLMRegressor(RegressorMixin, _ImpactGLMBase):
    """Gaussian, poisson or gamma GLM with shrunken high-cardinality effects.

    Parameters as :class:`ImpactGLMClassifier`, with ``family`` one of
    "gaussian" (default), "poisson", "gamma" and ``link`` any link the family allows.
    ``predict`` returns the mean response.
    """

    _families = ("gaussian", "poisson", "gamma")

    def __init__(self, high_cardinality: Sequence[Any] | None = None, formula: str | None = None,
                 family: str = "gaussian", link: str | None = None, prior_sd: Any = "auto",
                 maxiter: int | None = None, tol: float | None = None):
        self.high_cardinality = high_cardinality
        self.formula = formula
        self.family = family
        self.link = link
        self.prior_sd = prior_sd
        self.maxiter = maxiter
        self.tol = tol

    def fit(self, X, y, sample_weight=None) -> "ImpactGLMRegressor":
        """Fit the GLM; ``y`` numeric (poisson: counts >= 0; gamma: > 0)."""
        y = y.to_numpy() if isinstance(y, (pd.Series, pd.DataFrame)) else y
        y = column_or_1d(y, warn=True)
        try:
            y = np.asarray(y, dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError("y must be numeric for a regressor") from None
        if not np.all(np.isfinite(y)):
            raise DataError(f"y holds a non-finite value (NaN or inf) at row "
                            f"{int(np.flatnonzero(~np.isfinite(y))[0])}")
        return self._fit(X, y, self.family, _check_weights(sample_weight, len(y)))

    def predict(self, X) -> np.ndarray:
        """The predicted mean response of each row."""
        return self._predict_mean(X).reshape(-1)

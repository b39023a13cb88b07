"""``ImpactEncoder``: cross-fitted, shrunken impact codes for any downstream model.

Each high-cardinality column g is replaced by its *smoothed Bayesian impact code*:
for level l, the exact one-step Newton estimate of the level effect a[l] under the
prior a ~ N(0, tau^2), taken from the null model (every row at the grand mean mu0),

    code[l] = sum_{i in l} s_i  /  ( sum_{i in l} W_i + 1 / tau^2 )

where s_i = w_i (y_i - mu0) g'(mu0)^-1 / (phi V(mu0)) is the row's score and
W_i = w_i / (phi V(mu0) g'(mu0)^2) its working weight (family variance V, link g,
dispersion phi).  On the link scale this is the level's log-odds (binomial),
log-rate (poisson) or mean (gaussian) against the grand value, shrunk towards 0 the
more the fewer rows the level has.  The same function gives the solver's starting
point (``impactglm.encoding``); see :func:`_level_codes`.

For a multinomial target (C classes) each column gets C codes, one per class, each
the binomial one-vs-rest code of that class.

Leakage.  A code computed from a row's own outcome makes rare levels look
predictive (a level seen once "predicts" its own outcome perfectly).  So
``fit_transform(X, y)`` *cross-fits*: the rows are split into ``cv`` folds (stratified
for classification) and each fold's codes come from the other folds only.
``transform(X)`` on new data uses the codes fitted on all the training rows (this is
scikit-learn's TargetEncoder convention: ``fit(X, y).transform(X)`` is NOT
``fit_transform(X, y)``).  Levels unseen in fitting get the prior mean 0; missing
values (NaN/None) are a level of their own.

scikit-learn is an optional dependency (``pip install impactglm[sklearn]``).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

try:
    from sklearn.base import BaseEstimator, TransformerMixin
    from sklearn.model_selection import KFold, StratifiedKFold, check_cv
    from sklearn.utils.multiclass import type_of_target
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as exc:  # pragma: no cover - exercised only without scikit-learn
    raise ImportError("impactglm.encoder needs scikit-learn: pip install 'impactglm[sklearn]'"
                      ) from exc


from .errors import ColumnNotFoundError, DataError, ModelError
from .families import get_family
from .solvers import impact

_FAMILIES = ("auto", "gaussian", "binomial", "poisson", "multinomial")


# --------------------------------------------------------------------------- the codes


def _level_codes(level: np.ndarray, n_levels: int, y: np.ndarray, w: np.ndarray,
                 family: str, prior_sd: float | str) -> tuple[np.ndarray, float]:
    """Smoothed Bayesian impact codes of one factor: ``(code (n_levels,), tau)``.

    ``level`` holds each row's level index (0..n_levels-1), ``y`` the outcome
    (binomial: 0/1), ``w`` prior weights.  The code is
    :func:`impactglm.solvers.impact.smoothed_impact_code` (the solver's start values):
    ``g(mu_l) - g(mu_bar)`` with ``mu_l`` the level mean shrunk towards the grand
    mean ``mu_bar`` by ``kappa = (1/tau^2) / w(mu_bar)`` pseudo-rows.  For the
    gaussian family the dispersion phi in w(mu_bar) is the pooled within-level
    variance.  ``prior_sd="auto"`` estimates tau from these rows
    (:func:`_auto_tau`).
    """
    fam = get_family(family)
    sum_w = np.bincount(level, weights=w, minlength=n_levels)
    sum_wy = np.bincount(level, weights=w * y, minlength=n_levels)
    total = float(sum_w.sum())
    grand = float(sum_wy.sum() / total) if total > 0 else 0.0
    if family == "binomial":
        grand = min(max(grand, 1e-6), 1 - 1e-6)
    elif family == "poisson":
        grand = max(grand, 1e-6)
    phi = _within_level_variance(level, y, w, sum_w, sum_wy) if family == "gaussian" else 1.0
    tau = _auto_tau(sum_w, sum_wy, grand, phi, family) if prior_sd == "auto" else float(prior_sd)
    if tau == 0.0:
        return np.zeros(n_levels), tau
    kappa = impact.prior_pseudo_weight(grand, tau, fam, scale=phi)
    return impact.smoothed_impact_code(sum_wy, sum_w, grand, kappa, fam), tau


def _within_level_variance(level, y, w, sum_w, sum_wy) -> float:
    """phi = sum_i w_i (y_i - ybar_{l(i)})^2 / (sum w - levels), the pooled within-level
    variance (the total variance when every level has a single row)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_l = np.where(sum_w > 0, sum_wy / np.where(sum_w > 0, sum_w, 1.0), 0.0)
    dof = float(sum_w.sum()) - np.count_nonzero(sum_w)
    if dof > 0.5:
        phi = float(np.sum(w * (y - mean_l[level]) ** 2)) / dof
    else:
        grand = float(np.sum(w * y) / max(np.sum(w), 1e-300))
        phi = float(np.sum(w * (y - grand) ** 2) / max(np.sum(w) - 1, 1.0))
    return max(phi, 1e-12 * max(1.0, float(np.var(y))))


def _auto_tau(sum_w, sum_wy, grand, phi, family) -> float:
    """Moment estimate of tau from the per-level scores at the grand mean.

    With W_l = sum_{i in l} w_i / (phi V(mu0) g'(mu0)^2) and s_l the level's score,
    E[s_l^2 / W_l] = 1 + W_l tau^2, so tau^2 = (sum_l s_l^2/W_l - q) / sum_l W_l
    (clipped at 0): cheap, and unbiased when the codes are small.
    """
    fam = get_family(family)
    eta = fam.link.link(np.array([grand]))
    me = float(fam.link.mu_eta(eta)[0])
    unit_w = me * me / (float(fam.variance(np.array([grand]))[0]) * phi)
    W = sum_w * unit_w
    s = (sum_wy - sum_w * grand) * me / (float(fam.variance(np.array([grand]))[0]) * phi)
    used = W > 0
    if not np.any(used):
        return 0.0
    tau2 = (np.sum(s[used] ** 2 / W[used]) - np.count_nonzero(used)) / float(np.sum(W))
    return float(np.sqrt(max(tau2, 0.0)))


# --------------------------------------------------------------------------- the encoder


class ImpactEncoder(TransformerMixin, BaseEstimator):
    """Replace high-cardinality columns by cross-fitted shrunken impact codes.

    Parameters
    ----------
    columns : list of column names (DataFrame) or positions (array), or None
        The columns to encode.  None: every non-numeric column of a DataFrame
        (object, string, category, bool), or every column of an array.
    family : {"auto", "gaussian", "binomial", "poisson", "multinomial"}
        The outcome's family.  "auto": binomial for a two-class target,
        multinomial for more classes, gaussian for a continuous one.
    prior_sd : "auto" or float
        tau, the prior sd of the level effects; "auto" estimates it from the rows
        a code is fitted on (each fold's training rows when cross-fitting).
    cv : int or scikit-learn splitter
        Folds for ``fit_transform`` (stratified for classification).
    shuffle : bool
        Shuffle rows before splitting into folds.
    random_state : int or None
        Seed of the fold assignment.

    Attributes
    ----------
    columns_ : list           the encoded columns
    levels_ : dict            column -> pandas Index of the levels seen in fit
    codes_ : dict             column -> (n_levels,) or (n_levels, C) full-data codes
    prior_sd_ : dict          column -> tau used for the full-data codes
    classes_ : ndarray        class labels (classification targets)
    family_ : str             the family used
    """

    def __init__(self, columns: Sequence[Any] | None = None, family: str = "auto",
                 prior_sd: float | str = "auto", cv: Any = 5, shuffle: bool = True,
                 random_state: int | None = None):
        self.columns = columns
        self.family = family
        self.prior_sd = prior_sd
        self.cv = cv
        self.shuffle = shuffle
        self.random_state = random_state

    # ---------------------------------------------------------------- public API

    def fit(self, X, y, sample_weight=None) -> "ImpactEncoder":
        """Fit the full-data codes (used by :meth:`transform`)."""
        frame, y_arr, w = self._prepare_fit(X, y, sample_weight)
        self._fit_full(frame, y_arr, w)
        return self

    def fit_transform(self, X, y=None, sample_weight=None, **fit_params):
        """Fit on all rows, and return *cross-fitted* codes for the rows of ``X``.

        Row i's code comes from the folds that do not contain row i, so it never
        uses row i's own outcome.
        """
        frame, y_arr, w = self._prepare_fit(X, y, sample_weight)
        self._fit_full(frame, y_arr, w)
        out = {c: np.zeros((len(frame), self._n_code_columns())) for c in self.columns_}
        for train, test in self._splitter(y_arr).split(np.zeros(len(y_arr)), y_arr):
            for c in self.columns_:
                level, levels = _factorize(frame[c].iloc[train])
                codes = self._codes(level, len(levels), y_arr[train], w[train])[0]
                idx = levels.get_indexer(_as_index_values(frame[c].iloc[test]))
                out[c][test] = _lookup(codes, idx).reshape(len(test), -1)
        return self._assemble(frame, out, X)

    def transform(self, X):
        """Replace each encoded column by its full-data codes (unseen levels: 0)."""
        check_is_fitted(self, "codes_")
        frame = self._as_frame(X, fitting=False)
        out = {}
        for c in self.columns_:
            idx = self.levels_[c].get_indexer(_as_index_values(frame[c]))
            out[c] = _lookup(self.codes_[c], idx)
        return self._assemble(frame, out, X)

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """Output column names: ``g`` -> ``g_impact`` (or ``g_impact[class]``)."""
        check_is_fitted(self, "codes_")
        names = []
        for name in self._input_names:
            if name in self.columns_:
                names.extend(self._code_names(name))
            else:
                names.append(str(name))
        return np.asarray(names, dtype=object)

    # ---------------------------------------------------------------- internals

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.input_tags.allow_nan = True
        tags.input_tags.categorical = True
        tags.input_tags.string = True
        return tags

    def _prepare_fit(self, X, y, sample_weight):
        if y is None:
            raise DataError(f"{type(self).__name__} requires y to be passed, but the target y "
                            "is None")
        if self.family not in _FAMILIES:
            raise ModelError(f"family must be one of {_FAMILIES}, not {self.family!r}")
        if not (self.prior_sd == "auto" or (np.isscalar(self.prior_sd)
                                            and float(self.prior_sd) > 0)):
            raise ModelError(f"prior_sd must be 'auto' or a positive number, not "
                             f"{self.prior_sd!r}")
        frame = self._as_frame(X, fitting=True)
        y_arr = self._encode_target(y, len(frame))
        if sample_weight is None:
            w = np.ones(len(frame))
        else:
            w = np.asarray(sample_weight, dtype=float).reshape(-1)
            if len(w) != len(frame) or not np.all(np.isfinite(w)) or np.any(w < 0):
                raise DataError("sample_weight must be finite, non-negative, one per row")
            if not np.any(w > 0):
                raise DataError("sample_weight is zero for every row: nothing to fit")
        return frame, y_arr, w

    def _as_frame(self, X, fitting: bool) -> pd.DataFrame:
        """A DataFrame view of X (never modified) and, when fitting, the columns.

        scikit-learn's ``validate_data`` checks (and on fit records) the number and
        names of the features; arrays are checked as arrays (2-d, not sparse, NaN
        allowed: a missing value is a level), DataFrames are used as they are.
        """
        if isinstance(X, pd.DataFrame):
            validate_data(self, X, reset=fitting, skip_check_array=True)
            frame = X
        else:
            arr = validate_data(self, X, reset=fitting, dtype=None, accept_sparse=False,
                                ensure_all_finite="allow-nan")
            frame = pd.DataFrame(arr)
        if len(frame) == 0:
            raise DataError("X has 0 samples; at least one is required")
        if fitting:
            self._input_names = list(frame.columns)
            self.columns_ = self._resolve_columns(frame, X)
        else:
            missing = [c for c in self.columns_ if c not in frame.columns]
            if missing:
                raise ColumnNotFoundError(missing[0], frame.columns)
        return frame

    def _resolve_columns(self, frame: pd.DataFrame, X) -> list:
        if self.columns is None:
            if isinstance(X, pd.DataFrame):
                cols = [c for c in frame.columns
                        if not pd.api.types.is_numeric_dtype(frame[c])
                        or pd.api.types.is_bool_dtype(frame[c])]
            else:
                cols = list(frame.columns)
        else:
            cols = [self.columns] if isinstance(self.columns, (str, int)) else list(self.columns)
        for c in cols:
            if c not in frame.columns:
                raise ColumnNotFoundError(c, frame.columns)
        return cols

    def _encode_target(self, y, n: int) -> np.ndarray:
        y = y.to_numpy() if isinstance(y, (pd.Series, pd.DataFrame)) else np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1 or len(y) != n:
            raise DataError(f"y must be one outcome per row of X ({n}), got shape {y.shape}")
        if pd.isna(y).any():
            raise DataError(f"y has missing values (first at row {int(np.flatnonzero(pd.isna(y))[0])})")
        family = self.family
        if family == "auto":
            kind = type_of_target(y)
            family = {"binary": "binomial", "multiclass": "multinomial"}.get(kind, "gaussian")
        self.family_ = family
        if family in ("binomial", "multinomial"):
            self.classes_, y_idx = np.unique(y, return_inverse=True)
            if family == "binomial" and len(self.classes_) > 2:
                raise DataError(f"family='binomial' needs two classes; y has "
                                f"{len(self.classes_)}")
            return y_idx.astype(np.int64)
        try:
            y = np.asarray(y, dtype=float)
        except (TypeError, ValueError):
            raise DataError(f"family={family!r} needs a numeric outcome") from None
        if not np.all(np.isfinite(y)):
            raise DataError(f"y has a non-finite value at row {int(np.flatnonzero(~np.isfinite(y))[0])}")
        if family == "poisson" and np.any(y < 0):
            raise DataError("family='poisson' needs a non-negative outcome")
        if hasattr(self, "classes_"):
            del self.classes_
        return y

    def _splitter(self, y: np.ndarray):
        classification = self.family_ in ("binomial", "multinomial")
        if isinstance(self.cv, int):
            seed = self.random_state if self.shuffle else None
            if classification:
                counts = np.bincount(y)
                if counts[counts > 0].min() < self.cv:
                    return KFold(self.cv, shuffle=self.shuffle, random_state=seed)
                return StratifiedKFold(self.cv, shuffle=self.shuffle, random_state=seed)
            return KFold(self.cv, shuffle=self.shuffle, random_state=seed)
        return check_cv(self.cv, y, classifier=classification)

    def _n_code_columns(self) -> int:
        if self.family_ == "multinomial":
            return len(self.classes_)
        return 1

    def _code_names(self, name) -> list[str]:
        if self.family_ == "multinomial":
            return [f"{name}_impact[{k}]" for k in self.classes_]
        return [f"{name}_impact"]

    def _codes(self, level, n_levels, y, w) -> tuple[np.ndarray, float | list[float]]:
        """(n_levels,) codes (or (n_levels, C) for multinomial) from these rows."""
        if self.family_ == "multinomial":
            cols, taus = [], []
            for k in range(len(self.classes_)):
                code, tau = _level_codes(level, n_levels, (y == k).astype(float), w,
                                         "binomial", self.prior_sd)
                cols.append(code)
                taus.append(tau)
            return np.column_stack(cols), taus
        yy = y.astype(float)
        return _level_codes(level, n_levels, yy, w, self.family_, self.prior_sd)

    def _fit_full(self, frame: pd.DataFrame, y: np.ndarray, w: np.ndarray) -> None:
        self.levels_, self.codes_, self.prior_sd_ = {}, {}, {}
        for c in self.columns_:
            level, levels = _factorize(frame[c])
            codes, tau = self._codes(level, len(levels), y, w)
            self.levels_[c], self.codes_[c], self.prior_sd_[c] = levels, codes, tau

    def _assemble(self, frame: pd.DataFrame, codes: dict, X):
        """Put the code columns where the encoded columns were; keep the others."""
        pieces, names = [], []
        for name in frame.columns:
            if name in codes:
                block = codes[name].reshape(len(frame), -1)
                for j, code_name in enumerate(self._code_names(name)):
                    pieces.append(block[:, j])
                    names.append(code_name)
            else:
                pieces.append(frame[name].to_numpy())
                names.append(name)
        if isinstance(X, pd.DataFrame):
            return pd.DataFrame(dict(zip(names, pieces)), index=frame.index)
        if all(np.issubdtype(np.asarray(p).dtype, np.number) for p in pieces):
            return np.column_stack([np.asarray(p, dtype=float) for p in pieces])
        return np.column_stack([np.asarray(p, dtype=object) for p in pieces])


# --------------------------------------------------------------------------- helpers


def _as_index_values(col: pd.Series) -> np.ndarray | pd.Index:
    """Values of a column in a form ``Index.get_indexer`` matches on (categories -> values)."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        return pd.Index(np.asarray(col.astype(object)))
    return pd.Index(col.to_numpy())


def _factorize(col: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Level index of each row (0..q-1, NaN a level of its own) and the level Index."""
    values = _as_index_values(col)
    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    return codes.astype(np.int64), pd.Index(uniques)


def _lookup(codes: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """codes[idx] with idx == -1 (unseen level) mapped to the prior mean 0."""
    out = np.zeros((len(idx),) + codes.shape[1:])
    seen = idx >= 0
    out[seen] = codes[idx[seen]]
    return out

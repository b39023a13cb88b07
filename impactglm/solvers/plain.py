"""Plain GLMs (no ``^`` terms): IRLS (R's glm.fit), or MASS's glm.nb when a negative binomial
theta is to be estimated, then the covariance the user asked for
(:mod:`impactglm.solvers.covariance`)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from ..containers import FitOutput
from ..errors import ColumnNotFoundError, DataError
from ..families import Family, NegativeBinomial
from .covariance import glm_covariance
from .irls import fit_irls
from .negbin import fit_negbin


def fit_plain(X, y, weights, offset, family: Family, *, cov_type: str = "nonrobust",
              groups=None, information: str = "expected", freq=None, column_names=None,
              verbose: bool = False, **options) -> tuple[FitOutput, Family]:
    """(FitOutput with the requested ``cov_beta``, the fitted family).

    ``weights`` are the total weights (prior x var x freq); ``freq`` the frequency weights
    alone (statsmodels' freq_weights: replicated rows), which make df_resid = sum(freq) - p
    and so the dispersion and the model-based covariance.  ``extra`` records
    ``cov_type``, ``information`` and ``freq_weights``.  ``options``: maxiter, tol.
    """
    if isinstance(family, NegativeBinomial) and family.theta is None:
        out, family = fit_negbin(X, y, weights, offset, family.link.name,
                                 column_names=column_names, verbose=verbose, **options)
    else:
        out = fit_irls(X, y, weights, offset, family, column_names=column_names,
                       verbose=verbose, **options)
    extra = dict(out.extra, cov_type=cov_type, information=information)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)
    if freq is not None:
        freq = np.asarray(freq, dtype=np.float64)
        df = float(np.sum(freq[w > 0])) - np.shape(X)[1]
        ratio = 1.0 if family.fixed_scale else out.extra["df_resid"] / df
        extra.update(df_resid=df, freq_weights=freq)
        out = dataclasses.replace(out, scale=out.scale * ratio, cov_beta=out.cov_beta * ratio)
    if cov_type == "nonrobust" and information == "expected":
        return dataclasses.replace(out, extra=extra), family
    cov = glm_covariance(X, np.asarray(y, dtype=np.float64), w, out.mu, out.eta, family,
                         out.scale, cov_type, groups, information, freq=freq)
    return dataclasses.replace(out, cov_beta=cov, extra=extra), family


def combine_weights(formula: str, data, weights=None, freq_weights=None, var_weights=None,
                    exposure=None, offset=None):
    """(formula, weights, offset, freq) for the design builder from statsmodels' arguments.

    * weights (R's prior weights), var_weights and freq_weights multiply into the weights
      the fit uses (a column name or one value per row each); ``freq`` is the frequency
      weights alone (aligned to the fitted rows later with :func:`align_groups`).
    * ``exposure`` (log-link counts): a column name becomes the formula term
      ``offset(np.log(name))`` (so saved models read it from new data), an array is added
      to the offset as log(exposure).
    """
    if freq_weights is None and var_weights is None and exposure is None:
        return formula, weights, offset, None

    def values(arg, what):
        if isinstance(arg, str):
            if not (hasattr(data, "columns") and arg in data.columns):
                raise ColumnNotFoundError(f"{what} column {arg!r} is not in the data")
            arg = data[arg]
        v = np.asarray(arg, dtype=np.float64)
        if v.ndim != 1 or len(v) != len(data):
            raise DataError(f"{what} must have one value per row of the data ({len(data)}), "
                            f"got shape {v.shape}")
        if np.any(v[np.isfinite(v)] < 0):
            raise DataError(f"{what} must be non-negative; row "
                            f"{int(np.flatnonzero(v < 0)[0])} is negative")
        return v

    total = None
    for arg, what in ((weights, "weights"), (var_weights, "var_weights"),
                      (freq_weights, "freq_weights")):
        if arg is not None:
            v = values(arg, what)
            total = v if total is None else total * v
    freq = None if freq_weights is None else values(freq_weights, "freq_weights")
    if exposure is not None:
        if isinstance(exposure, str) and exposure.isidentifier():
            values(exposure, "exposure")             # checks the column exists, >= 0
            formula = f"{formula} + offset(np.log({exposure}))"
        else:
            e = values(exposure, "exposure")
            if np.any(e == 0):
                raise DataError(f"exposure must be positive; row {int(np.flatnonzero(e == 0)[0])} "
                                "is 0")
            log_e = np.log(e)
            offset = log_e if offset is None else values(offset, "offset") + log_e
    return formula, total, offset, freq


def align_groups(groups, data, row_labels) -> np.ndarray:
    """Cluster labels for the fitted rows: ``groups`` is a column of ``data`` or one label per
    row of ``data`` (rows the fit dropped for missing values are dropped here too), or one
    label per fitted row."""
    n_fit = len(row_labels)
    if isinstance(groups, str):
        if not (hasattr(data, "columns") and groups in data.columns):
            raise ColumnNotFoundError(f"groups column {groups!r} is not in the data")
        groups = data[groups]
    values = groups.to_numpy() if isinstance(groups, pd.Series) else np.asarray(groups)
    if values.ndim != 1:
        raise DataError(f"groups must be one label per row, got shape {values.shape}")
    n_data = len(data) if hasattr(data, "__len__") else None
    if len(values) == n_data and n_data != n_fit:
        index = pd.Index(data.index)
        if not index.is_unique:
            raise DataError("groups: the data's row labels are not unique, so the fitted rows "
                            "cannot be matched; pass one group label per fitted row")
        values = values[index.get_indexer(row_labels)]
    if len(values) != n_fit:
        raise DataError(f"groups has {len(values)} labels; expected one per row of the data "
                        f"({n_data}) or per fitted row ({n_fit})")
    return values

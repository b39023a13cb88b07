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
              groups=None, information: str = "expected", column_names=None,
              verbose: bool = False, **options) -> tuple[FitOutput, Family]:
    """(FitOutput with the requested ``cov_beta``, the fitted family).

    ``extra`` records ``cov_type`` and ``information``.  ``options``: maxiter, tol.
    """
    if isinstance(family, NegativeBinomial) and family.theta is None:
        out, family = fit_negbin(X, y, weights, offset, family.link.name,
                                 column_names=column_names, verbose=verbose, **options)
    else:
        out = fit_irls(X, y, weights, offset, family, column_names=column_names,
                       verbose=verbose, **options)
    extra = dict(out.extra, cov_type=cov_type, information=information)
    if cov_type == "nonrobust" and information == "expected":
        return dataclasses.replace(out, extra=extra), family
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)
    cov = glm_covariance(X, np.asarray(y, dtype=np.float64), w, out.mu, out.eta, family,
                         out.scale, cov_type, groups, information)
    return dataclasses.replace(out, cov_beta=cov, extra=extra), family


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

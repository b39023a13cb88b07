"""Score a fitted model on data that hold the outcome: ``ig.evaluate(res, data)``.

For a multinomial model: accuracy (most likely class), log-loss
``-sum w log p_y / sum w``, multinomial deviance ``-2 sum w log p_y`` and the
confusion matrix.  For a binomial model the same with the classes (0, 1) and the
cut-off 0.5; for the other families the deviance only (``family.deviance``).
Levels of ``^`` factors unseen at fit time get effect 0 and are counted in
``Metrics.unseen``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


from .errors import ModelError
from .results.multinomial import Metrics, metrics_from_scores, MultinomialResults

__all__ = ["evaluate", "Metrics"]


def evaluate(res, data) -> Metrics:
    """Metrics of ``res`` (MultinomialResults or GLMResults) on ``data``."""
    if isinstance(res, MultinomialResults):
        return res.evaluate(data)
    spec = getattr(res, "spec", None)
    if spec is None or not hasattr(res, "family"):
        raise ModelError(f"evaluate() needs a fitted impactglm model, not {type(res).__name__}")
    nd = spec.transform(data, response=True)
    if nd.y is None:
        raise ModelError(f"the data have no outcome column {spec.response!r}")
    y = np.asarray(nd.y, dtype=np.float64)
    w = np.ones(len(y)) if nd.weights is None else np.asarray(nd.weights, dtype=np.float64)
    rows = _as_frame(data)
    if nd.positions is not None:      # rows with an NA outcome are left out, as in the fit
        rows = rows.iloc[nd.positions]
    mu = np.asarray(res.predict(rows, which="mean"), dtype=np.float64)
    fam = res.family
    dev = float(fam.deviance(y, mu, w))
    unseen = dict(getattr(res, "last_unseen", {}) or {})
    if fam.name == "binomial":
        eps = 1e-300
        ll = float(np.sum(w * (y * np.log(np.maximum(mu, eps))
                               + (1 - y) * np.log(np.maximum(1 - mu, eps)))))
        pred = (mu >= 0.5).astype(int)
        conf = np.zeros((2, 2))
        if np.all((y == 0) | (y == 1)):
            np.add.at(conf, (y.astype(int), pred), w)
            m = metrics_from_scores(ll, conf, float(w.sum()), int(np.sum(w > 0)), (0, 1), unseen)
            return Metrics(m.nobs, m.sum_weights, m.accuracy, m.logloss, dev, m.confusion, unseen)
        return Metrics(int(np.sum(w > 0)), float(w.sum()), None, -ll / float(w.sum()), dev, None,
                       unseen)
    return Metrics(int(np.sum(w > 0)), float(w.sum()), None, None, dev, None, unseen)


def _as_frame(data) -> pd.DataFrame:
    """``data`` as a DataFrame (a pyarrow Table or a dict of columns are accepted too)."""
    if isinstance(data, pd.DataFrame):
        return data
    if hasattr(data, "to_pandas"):
        return data.to_pandas()
    return pd.DataFrame(data)

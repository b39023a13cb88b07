"""Results of a multinomial fit: coefficients per class, level effects, probabilities, metrics.

Parameterisation (stated in :meth:`MultinomialResults.summary` too):

* fixed coefficients use **reference class** ``classes[0]`` (the first label in natural
  order): ``params[classes[0]] == 0`` and ``params[c]`` are log-odds of class c against
  it, as statsmodels' ``MNLogit`` and R's ``nnet::multinom``;
* level effects of ``^`` factors are **symmetric**: every class has an effect with the
  prior N(0, tau^2), and the posterior mode has sum over classes = 0 for every level.

Definitions (w prior weights, p_i the fitted class probabilities, y_i the class):
``llf = sum_i w_i log p_{i,y_i}`` at the posterior mode; ``deviance = -2 llf`` (the
saturated model of individual rows has log-likelihood 0); ``null_deviance`` the
intercept-only model's; ``aic = -2 llf + 2 k`` and ``bic = -2 llf + log(nobs) k`` with
k = p (C - 1) + sum of the factors' effective degrees of freedom; accuracy and the
confusion matrix use the most likely class.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping
import numpy as np
import pandas as pd
from scipy import stats


from ..containers import FactorEffects, FitOutput
from ..errors import ModelError
from ..kernels import multinomial as km
from .base import FactorAccess, frozen_array, ScalarStats, Summary
from ..design.spec import ModelSpec
from . import files



IDENTIFIABILITY = ("Fixed coefficients: reference class {ref!r} (its column is 0; others are "
                   "log-odds against it, as MNLogit). Level effects: symmetric, one per class "
                   "with prior N(0, tau^2); they sum to 0 over classes for every level.")


@dataclass(frozen=True)
class Metrics:
    """Classification metrics of a multinomial (or binomial) model on a set of rows.

    ``logloss = -sum w log p_y / sum w``, ``deviance = -2 sum w log p_y``,
    ``accuracy`` the weighted share of rows whose most likely class is the observed one,
    ``confusion`` (DataFrame: rows true class, columns predicted class, weighted counts).
    ``unseen`` counts rows per ^ factor whose level the fit never saw (effect 0).
    """

    nobs: int
    sum_weights: float
    accuracy: float | None
    logloss: float | None
    deviance: float
    confusion: pd.DataFrame | None
    unseen: dict

    def get(self, key: str, default=None):
        return getattr(self, key, default)

    def as_dict(self) -> dict:
        return {"nobs": self.nobs, "accuracy": self.accuracy, "logloss": self.logloss,
                "deviance": self.deviance}

    def __str__(self) -> str:
        parts = [f"rows {self.nobs:,}"]
        if self.accuracy is not None:
            parts.append(f"accuracy {self.accuracy:.4f}")
        if self.logloss is not None:
            parts.append(f"log-loss {self.logloss:.6f}")
        parts.append(f"deviance {self.deviance:.6g}")
        return ", ".join(parts)


def metrics_from_scores(ll: float, conf: np.ndarray, sum_w: float, nobs: int, classes,
                        unseen: Mapping[str, int] | None = None) -> Metrics:
    """Metrics from a weighted log-likelihood and a (C, C) weighted confusion matrix."""
    idx = pd.Index(list(classes), name="true")
    cols = pd.Index(list(classes), name="predicted")
    return Metrics(nobs=int(nobs), sum_weights=float(sum_w),
                   accuracy=float(np.trace(conf) / sum_w) if sum_w > 0 else float("nan"),
                   logloss=float(-ll / sum_w) if sum_w > 0 else float("nan"),
                   deviance=float(-2.0 * ll), confusion=pd.DataFrame(conf, index=idx, columns=cols),
                   unseen=dict(unseen or {}))


def global_codes(codes: tuple[np.ndarray, ...], sizes) -> np.ndarray:
    """Stack per-factor codes into global level indices (K, n); -1 (unseen) stays -1."""
    n = len(codes[0]) if codes else 0
    out = np.empty((len(codes), n), dtype=np.int32)
    start = 0
    for k, (c, q) in enumerate(zip(codes, sizes)):
        c = np.asarray(c)
        np.copyto(out[k], np.where(c >= 0, c + start, -1), casting="unsafe")
        start += int(q)
    return out


class MultinomialResults(ScalarStats, FactorAccess):
    """Results of ``ig.glm(..., family="multinomial").fit()``; immutable.

    Build with :meth:`from_fit` (after a fit), :func:`fit_design` (fit with an optional
    holdout), or :meth:`from_dict` (a saved model).
    """

    def __init__(self, *, beta: np.ndarray, cov: np.ndarray, column_names, classes, spec,
                 stats: Mapping[str, Any], effects: tuple[FactorEffects, ...] = (),
                 log: pd.DataFrame | None = None, extra: Mapping[str, Any] | None = None,
                 train_metrics: Metrics | None = None, holdout_metrics: Metrics | None = None):
        d = self.__dict__
        d["_beta"] = frozen_array(beta)
        d["_cov"] = frozen_array(cov)
        d["_names"] = tuple(column_names)
        d["_classes"] = tuple(classes)
        d["_spec"] = spec
        d["_stats"] = dict(stats)
        d["_effects_"] = tuple(effects)
        d["_log"] = log.copy() if log is not None else pd.DataFrame()
        d["_extra"] = {k: v for k, v in (extra or {}).items()
                       if isinstance(v, (int, float, str, bool, np.number))}
        d["_train_metrics"] = train_metrics
        d["_holdout"] = holdout_metrics
        d["_last_unseen"] = {}
        d["_A"] = (np.concatenate([e.effect for e in self._effects]) if self._effects
                   else np.zeros((1, len(self._classes))))
        d["_sizes"] = tuple(len(e.levels) for e in self._effects)

    def __setattr__(self, name, value):
        raise AttributeError(f"MultinomialResults is immutable (cannot set {name!r})")

    def __delattr__(self, name):
        raise AttributeError(f"MultinomialResults is immutable (cannot delete {name!r})")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_fit(cls, fit: FitOutput, design, *, holdout_metrics: Metrics | None = None,
                 method: str = "re-encoding Newton (per-class directions)") -> "MultinomialResults":
        """Results from :func:`impactglm.multinomial.fit_multinomial`'s output and its Design."""
        classes = design.spec.classes
        C = len(classes)
        ex = fit.extra
        effects = _label_effects(fit.effects, design.factors)
        edf = float(sum(e.edf for e in effects))
        p = fit.beta.shape[0]
        k = p * (C - 1) + edf
        llf = float(ex["loglik"])
        nobs = int(ex.get("nobs", len(design.y)))
        st = {"llf": llf, "deviance": -2.0 * llf, "null_deviance": -2.0 * float(ex["null_loglik"]),
              "aic": -2.0 * llf + 2.0 * k, "bic": -2.0 * llf + np.log(max(nobs, 1)) * k,
              "nobs": nobs, "df_model": k - ((C - 1) if "Intercept" in design.column_names else 0),
              "df_resid": nobs - k, "converged": bool(fit.converged), "n_iter": int(fit.n_iter),
              "n_dropped": int(getattr(design, "n_dropped", 0)), "method": method,
              "cov_method": str(ex.get("cov_method", "")), "edf": edf}
        train = metrics_from_scores(llf, ex["confusion"], float(ex.get("sum_weights", nobs)),
                                    nobs, classes)
        return cls(beta=fit.beta, cov=fit.cov_beta, column_names=design.column_names,
                   classes=classes, spec=design.spec, stats=st, effects=effects, log=fit.log,
                   extra=ex, train_metrics=train, holdout_metrics=holdout_metrics)

    # ------------------------------------------------------------------ coefficients
    @property
    def classes(self) -> tuple:
        """Class labels in natural order; ``classes[0]`` is the reference class."""
        return self._classes

    @property
    def spec(self):
        return self._spec

    def _frame(self, values: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(values, index=pd.Index(list(self._names)),
                            columns=pd.Index(list(self._classes), name=self._response_label()))

    @property
    def params(self) -> pd.DataFrame:
        """Coefficients (variables x classes); the reference class column is 0."""
        return self._frame(self._beta.copy())

    @property
    def bse(self) -> pd.DataFrame:
        """Standard errors (variables x classes); NaN for the reference class."""
        se = np.full(self._beta.shape, np.nan)
        if self._cov.size:
            se[:, 1:] = np.sqrt(np.clip(np.diag(self._cov), 0, None)).reshape(len(self._names), -1)
        return self._frame(se)

    def cov_params(self) -> pd.DataFrame:
        """Covariance of the non-reference coefficients, indexed by (variable, class)."""
        idx = pd.MultiIndex.from_product([list(self._names), list(self._classes[1:])],
                                         names=["variable", "class"])
        return pd.DataFrame(self._cov.copy(), index=idx, columns=idx)

    @property
    def tvalues(self) -> pd.DataFrame:
        """z statistics params / bse."""
        return self.params / self.bse

    @property
    def pvalues(self) -> pd.DataFrame:
        """Two-sided normal p-values (fixed scale, as MNLogit)."""
        z = self.tvalues.to_numpy()
        return self._frame(2 * stats.norm.sf(np.abs(z)))

    def conf_int(self, alpha: float = 0.05) -> pd.DataFrame:
        """Wald intervals of the non-reference coefficients, rows (variable, class)."""
        q = stats.norm.ppf(1 - alpha / 2)
        b = self._beta[:, 1:].ravel()
        s = np.sqrt(np.clip(np.diag(self._cov), 0, None)) if self._cov.size else np.zeros(0)
        idx = self.cov_params().index
        return pd.DataFrame({0: b - q * s, 1: b + q * s}, index=idx)

    # ------------------------------------------------------------------ scalars

    @property
    def scale(self) -> float:
        return 1.0

    # ------------------------------------------------------------------ metrics
    @property
    def train_metrics(self) -> Metrics:
        """Accuracy, log-loss, deviance and confusion matrix on the training rows."""
        return self._train_metrics

    @property
    def holdout_metrics(self) -> Metrics | None:
        """The same on the holdout rows of ``fit(holdout=...)`` (None without a holdout)."""
        return self._holdout

    @property
    def accuracy(self) -> float:
        return self._train_metrics.accuracy

    @property
    def confusion_matrix(self) -> pd.DataFrame:
        return self._train_metrics.confusion.copy()

    # ------------------------------------------------------------------ ^ factors
    def level_effects(self, name: str) -> pd.DataFrame:
        """Per-level ``n``, then ``effect[<class>]`` and ``se[<class>]`` for every class."""
        key = name.lstrip("^")
        for e in self._effects:
            if e.name == key:
                cols: dict[str, np.ndarray] = {"n": np.asarray(e.counts)}
                for c, lab in enumerate(self._classes):
                    cols[f"effect[{lab}]"] = e.effect[:, c]
                for c, lab in enumerate(self._classes):
                    cols[f"se[{lab}]"] = e.se[:, c]
                return pd.DataFrame(cols, index=pd.Index(e.levels, name=e.name))
        have = ", ".join("^" + e.name for e in self._effects) or "none"
        raise ModelError(f"no high-cardinality factor {name!r} in this model (factors: {have})")

    @property
    def iteration_log(self) -> pd.DataFrame:
        return self._log.copy()

    # ------------------------------------------------------------------ prediction
    def _arrays(self, newdata, response: bool = False):
        nd = self._spec.transform(newdata, response=response)
        g = global_codes(tuple(nd.codes), self._sizes)
        self._record_unseen(nd.unseen)
        return nd, g

    def predict(self, newdata, which: str = "proba") -> pd.DataFrame | pd.Series:
        """Class probabilities (DataFrame, one column per class label) or, with
        ``which="class"``, the most likely class label (Series).  Levels of a ^ factor
        unseen at fit time get effect 0 (counted in :attr:`last_unseen`, with an
        UnseenLevelWarning)."""
        if which not in ("proba", "mean", "class", "linear"):
            raise ModelError(f"which must be 'proba', 'class' or 'linear', not {which!r}")
        nd, g = self._arrays(newdata)
        labels = pd.Index(nd.row_labels)
        if which == "linear":
            eta = np.asarray(nd.X) @ self._beta
            for k in range(g.shape[0]):
                seen = g[k] >= 0
                eta[seen] += self._A[g[k][seen]]
            return pd.DataFrame(eta, index=labels, columns=list(self._classes))
        P = km.predict_proba(np.ascontiguousarray(nd.X, dtype=np.float64), self._beta, g, self._A)
        if which == "class":
            cls = np.asarray(self._classes, dtype=object)[np.argmax(P, axis=1)]
            try:
                cls = cls.astype(type(self._classes[0])) if isinstance(
                    self._classes[0], (int, float, np.number)) else cls
            except (TypeError, ValueError):
                pass
            return pd.Series(cls, index=labels, name=self._response_label())
        return pd.DataFrame(P, index=labels, columns=list(self._classes))

    def evaluate(self, data) -> Metrics:
        """Metrics on ``data`` (which must hold the outcome); see :class:`Metrics`."""
        nd, g = self._arrays(data, response=True)
        if nd.y is None:
            raise ModelError(f"the data have no outcome column {self._response_label()!r}")
        y = np.asarray(nd.y, dtype=np.int32)
        w = np.ones(len(y)) if nd.weights is None else np.asarray(nd.weights, dtype=np.float64)
        ll, conf, _ = km.score_pass(np.ascontiguousarray(nd.X, dtype=np.float64), self._beta,
                                    g, self._A, y, w)
        return metrics_from_scores(ll, conf, float(w.sum()), int(np.sum(w > 0)), self._classes,
                                   nd.unseen)

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> tuple[dict, dict[str, np.ndarray]]:
        """(JSON-able metadata, named arrays): everything :meth:`from_dict` needs."""
        meta = {"kind": "multinomial", "column_names": list(self._names),
                "stats": {k: (v.item() if isinstance(v, np.generic) else v)
                          for k, v in self._stats.items()},
                "spec": self._spec.to_dict() if self._spec is not None else None,
                "extra": {k: (v.item() if isinstance(v, np.generic) else v)
                          for k, v in self._extra.items()},
                "factors": [{"name": e.name, "tau": e.tau, "edf": e.edf,
                             "tau_estimated": e.tau_estimated} for e in self._effects],
                "train_metrics": _metrics_meta(self._train_metrics),
                "holdout_metrics": _metrics_meta(self._holdout)}
        arrays = {"beta": self._beta, "cov": self._cov, "log": self._log.to_numpy(dtype=float),
                  "train_confusion": self._train_metrics.confusion.to_numpy()}
        meta["log_columns"] = list(self._log.columns)
        if self._holdout is not None:
            arrays["holdout_confusion"] = self._holdout.confusion.to_numpy()
        for k, e in enumerate(self._effects):
            arrays[f"effect_{k}"] = e.effect
            arrays[f"se_{k}"] = e.se
            arrays[f"counts_{k}"] = np.asarray(e.counts)
        return meta, arrays

    @classmethod
    def from_dict(cls, meta: Mapping, arrays: Mapping[str, np.ndarray]) -> "MultinomialResults":
        """Inverse of :meth:`to_dict` (the level tables and classes come from the spec)."""
        spec = ModelSpec.from_dict(meta["spec"])
        effects = tuple(FactorEffects(f["name"], np.asarray(lv), arrays[f"counts_{k}"],
                                      arrays[f"effect_{k}"], arrays[f"se_{k}"], f["tau"],
                                      f["edf"], f["tau_estimated"])
                        for k, (f, lv) in enumerate(zip(meta["factors"], spec.factor_levels)))
        classes = spec.classes
        train = _metrics_from_meta(meta["train_metrics"], arrays["train_confusion"], classes)
        hold = (_metrics_from_meta(meta["holdout_metrics"], arrays["holdout_confusion"], classes)
                if meta.get("holdout_metrics") else None)
        log = pd.DataFrame(arrays["log"], columns=meta.get("log_columns"))
        return cls(beta=arrays["beta"], cov=arrays["cov"], column_names=meta["column_names"],
                   classes=classes, spec=spec, stats=meta["stats"], effects=effects, log=log,
                   extra=meta.get("extra"), train_metrics=train, holdout_metrics=hold)

    def save(self, path) -> None:
        """Save as plain files (JSON + npz, no pickle); read back with ``impactglm.load``."""
        files.save(self, path)

    # ------------------------------------------------------------------ summary
    def _response_label(self) -> str:
        return self._spec.response if self._spec is not None else "y"

    def summary(self, alpha: float = 0.05) -> Summary:
        """Text summary: header, one coefficient block per non-reference class, the
        ^ factors, training (and holdout) metrics, and the identifiability choice."""
        width = 78
        tm = self._train_metrics
        left = [("Dep. Variable:", self._response_label()),
                ("Model:", "Multinomial logit"),
                ("Classes:", str(len(self._classes))),
                ("Reference class:", repr(self._classes[0])),
                ("Method:", "re-encoding Newton"),
                ("No. Iterations:", str(self.n_iter)),
                ("Converged:", "yes" if self.converged else "NO")]
        right = [("No. Observations:", str(self.nobs)),
                 ("Rows dropped (NA):", str(self.n_dropped)),
                 ("Df Model:", f"{self.df_model:.2f}"),
                 ("Log-Likelihood:", f"{self.llf:.6g}"),
                 ("Deviance:", f"{self.deviance:.6g}"),
                 ("Null deviance:", f"{self.null_deviance:.6g}"),
                 ("AIC:", f"{self.aic:.6g}"),
                 ("BIC:", f"{self.bic:.6g}"),
                 ("Train accuracy:", f"{tm.accuracy:.4f}"),
                 ("Train log-loss:", f"{tm.logloss:.5f}")]
        if self._holdout is not None:
            right += [("Holdout rows:", str(self._holdout.nobs)),
                      ("Holdout accuracy:", f"{self._holdout.accuracy:.4f}"),
                      ("Holdout log-loss:", f"{self._holdout.logloss:.5f}")]
        n = max(len(left), len(right))
        left += [("", "")] * (n - len(left))
        right += [("", "")] * (n - len(right))
        half = width // 2
        out = ["Multinomial Regression Results".center(width), "=" * width]
        for (lk, lv), (rk, rv) in zip(left, right):
            out.append(f"{lk:<20}{lv:>{half - 21}} " + f" {rk:<20}{rv:>{width - half - 21}}")
        out.append("=" * width)
        b, s, z, pv = self.params, self.bse, self.tvalues, self.pvalues
        q = stats.norm.ppf(1 - alpha / 2)
        rows = []
        for lab in self._classes[1:]:
            for var in self._names:
                rows.append({"class": lab, "variable": var, "coef": b.loc[var, lab],
                             "std err": s.loc[var, lab], "z": z.loc[var, lab],
                             "P>|z|": pv.loc[var, lab],
                             f"[{alpha / 2:g}": b.loc[var, lab] - q * s.loc[var, lab],
                             f"{1 - alpha / 2:g}]": b.loc[var, lab] + q * s.loc[var, lab]})
        table = pd.DataFrame(rows).set_index(["class", "variable"]) if rows else pd.DataFrame()
        nw = max([len(f"{r['class']}: {r['variable']}") for r in rows] + [12])
        if rows:
            out.append(" " * nw + "".join(f"{c:>11}" for c in table.columns))
            out.append("-" * (nw + 11 * len(table.columns)))
            for (lab, var), row in zip(table.index, table.itertuples(index=False)):
                name = f"{lab}: {var}"
                out.append(f"{name:<{nw}}" + f"{row[0]:>11.4f}" +
                           "".join(f"{v:>11.3f}" for v in row[1:]))
            out.append("=" * max(width, nw + 11 * len(table.columns)))
        if self._effects:
            out.append("High-cardinality factors (per-class level effects: level_effects(name))")
            for e in self._effects:
                prior = ("no prior (ridge 1e-5)" if e.tau is None else
                         f"prior sd tau = {e.tau:.4g} ({'estimated' if e.tau_estimated else 'given'})")
                out.append(f"^{e.name}: {e.n_levels} levels, {e.n_singletons} singletons, "
                           f"{prior}, edf = {e.edf:.1f}")
            cert = [f"{k} = {self._extra[k]:.3g}" for k in ("max_grad", "max_step", "n_passes")
                    if k in self._extra]
            out.append("Convergence certificate: " + ", ".join(cert))
            out.append("=" * width)
        notes = [IDENTIFIABILITY.format(ref=self._classes[0]),
                 f"Standard errors: model-based; {self._stats.get('cov_method', '')}."]
        out.extend(f"[{i + 1}] {t}" for i, t in enumerate(notes))
        header = [(k, v) for k, v in left + right if k]
        return Summary("\n".join(out), header, table)

    def __repr__(self) -> str:
        return (f"<MultinomialResults: {len(self._classes)} classes, {len(self._names)} "
                f"variables, {len(self._effects)} ^ factors, nobs={self.nobs}, "
                f"deviance={self.deviance:.6g}>")


def _metrics_meta(m: Metrics | None) -> dict | None:
    if m is None:
        return None
    return {"nobs": m.nobs, "sum_weights": m.sum_weights, "accuracy": m.accuracy,
            "logloss": m.logloss, "deviance": m.deviance,
            "unseen": {k: int(v) for k, v in m.unseen.items()}}


def _metrics_from_meta(d: Mapping, conf: np.ndarray, classes) -> Metrics:
    idx = pd.Index(list(classes), name="true")
    cols = pd.Index(list(classes), name="predicted")
    return Metrics(d["nobs"], d["sum_weights"], d["accuracy"], d["logloss"], d["deviance"],
                   pd.DataFrame(conf, index=idx, columns=cols), dict(d.get("unseen", {})))


def _label_effects(effects, factors) -> tuple[FactorEffects, ...]:
    """Names, levels and counts of the solver's effects from the Design's factor tables."""
    import dataclasses

    out = []
    for e, f in zip(effects, factors):
        counts = e.counts if len(e.counts) == len(f.levels) else f.counts
        out.append(dataclasses.replace(e, name=f.name, levels=f.levels, counts=counts))
    return tuple(out)


def score_holdout(fit: FitOutput, test, training) -> Metrics:
    """Metrics of a fit on the rows of the Design ``test`` that it was not fitted on.

    ``training`` is the Design the fit saw: a level without training rows has effect 0
    and is counted as unseen."""
    C = len(test.spec.classes)
    sizes = [f.n_levels for f in test.factors]
    g = global_codes(tuple(f.codes for f in test.factors), sizes)
    A = (np.concatenate([e.effect for e in fit.effects]) if fit.effects else np.zeros((1, C)))
    w = np.ascontiguousarray(test.weights)
    ll, conf, _ = km.score_pass(np.ascontiguousarray(test.X), fit.beta, g, A,
                                np.ascontiguousarray(test.y), w)
    unseen = {f.name: int(np.sum(s.counts[f.codes] == 0))
              for f, s in zip(test.factors, training.factors)}
    return metrics_from_scores(ll, conf, float(w.sum()), int(np.sum(w > 0)), test.spec.classes,
                               unseen)

"""Immutable results of a GLM fit, with statsmodels' names and R's definitions.

:class:`GLMResults` wraps what a solver returned (:class:`~impactglm.fitoutput.FitOutput`)
together with the model spec (to predict on new data) and the training arrays (for
residuals).  Everything is computed once at construction or lazily from frozen data;
nothing can be reassigned.

Definitions (w prior weights, V the variance function, d the unit deviance):

* deviance = sum w d(y, mu); null_deviance as R (intercept-only refit when there is an offset)
* pearson_chi2 = sum w (y - mu)^2 / V(mu)
* llf, aic as R's logLik/AIC (profiled sigma for gaussian, D/sum(w) for gamma);
  bic = -2 llf + log(n) * (rank [+ 1 if the dispersion is estimated]), n = all rows
  (R's logLik counts zero-weight rows; ``nobs`` = rows with positive weight, as R's nobs())
* tvalues = params / bse; p-values and conf_int() use Student's t with df_resid
  degrees of freedom when the dispersion is estimated and the normal otherwise (R's
  summary.glm); conf_int() is the Wald interval.
* With ``^`` factors, the level effects are part of the linear predictor, ``llf`` is
  the conditional log-likelihood at the posterior mode and AIC/BIC/df_resid count the
  effective degrees of freedom sum_k edf_k.
"""
from __future__ import annotations

from typing import Any, Mapping
import numpy as np
import pandas as pd
from scipy import stats


from ..containers import FactorEffects, FitOutput
from ..errors import ModelError
from ..families import Family, get_family
from .base import (FactorAccess, CERTIFICATE_KEYS, format_number, frozen_array, frozen_effects, LazyMap,
                   ScalarStats, stat_property, Summary)
from ..design.spec import ModelSpec
from ..plots import plot_calibration, plot_convergence, plot_effects
from ..solvers.irls import null_deviance
from . import files
from . import inference




class GLMResults(ScalarStats, FactorAccess):
    """Results of ``ig.glm(...).fit()``; immutable.

    Build with :meth:`from_fit` (after a fit) or through ``impactglm.load`` (a saved
    model: everything but the training-data residuals).
    """

    def __init__(self, *, params: np.ndarray, cov: np.ndarray, column_names, family: Family,
                 spec, stats: Mapping[str, Any], effects: tuple[FactorEffects, ...] = (),
                 log: pd.DataFrame | None = None, extra: Mapping[str, Any] | None = None,
                 training: Mapping[str, np.ndarray] | None = None, posterior=None):
        """``posterior``: for fits that leave it to first use, a callable returning
        (cov_beta, [se of each factor's levels]); ``cov`` and the effects' se are then None.
        ``stats`` and ``training`` may be :class:`~impactglm.results.base.LazyMap`."""
        d = self.__dict__
        d["_params"] = frozen_array(params)
        d["_names"] = tuple(column_names)
        d["_family"] = get_family(family)
        d["_spec"] = spec
        d["_stats"] = stats if isinstance(stats, LazyMap) else dict(stats)
        d["_effects_"] = tuple(frozen_effects(e) for e in effects)
        if posterior is None:
            d["_cov_"] = frozen_array(cov)
            d["_pending_se"] = None
        else:
            once = _Once(posterior)
            d["_cov_"] = None
            d["_pending_cov"] = once
            d["_pending_se"] = lambda: once()[1]
        d["_log"] = log.copy() if log is not None else pd.DataFrame()
        d["_extra"] = {k: (v.item() if isinstance(v, np.generic) else v)
                       for k, v in (extra or {}).items()
                       if isinstance(v, (int, float, str, bool, np.generic)) or v is None}
        if training is None or isinstance(training, LazyMap):
            d["_training"] = training
        else:
            d["_training"] = {k: (v if k == "row_labels" else frozen_array(v))
                              for k, v in training.items()}
        d["_last_unseen"] = {}

    def __setattr__(self, name, value):
        raise AttributeError(f"GLMResults is immutable (cannot set {name!r})")

    def __getstate__(self) -> dict:
        """Pickle with every lazy part computed (plain arrays and dicts, no closures)."""
        d = dict(self.__dict__)
        d["_cov_"], d["_pending_cov"] = self._cov, None
        d["_effects_"], d["_pending_se"] = self._effects, None
        d["_stats"] = dict(self._stats)
        if self._training is not None:
            d["_training"] = dict(self._training)
        return d

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def __delattr__(self, name):
        raise AttributeError(f"GLMResults is immutable (cannot delete {name!r})")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_fit(cls, fit: FitOutput, design, family: Family | str, *,
                 method: str = "IRLS", prior_method: str | None = None) -> "GLMResults":
        """Results from a solver's FitOutput and the Design it was fitted on.

        ``method`` and ``prior_method`` (how the prior sds were chosen) are shown in the
        summary header."""
        family = get_family(family)
        y, w, off = design.y, design.weights, design.offset
        lazy = fit.extra.get("lazy")
        p = len(fit.beta)
        pos = w > 0
        nobs = int(pos.sum())
        edf = float(sum(e.edf for e in fit.effects))
        k = p + edf
        intercept = "Intercept" in design.column_names
        freq = fit.extra.get("freq_weights")           # replicated rows (freq_weights=)
        w_var = w if freq is None else np.where(freq > 0, w / np.where(freq > 0, freq, 1), 0.0)
        n_bic = len(y) if freq is None else float(np.sum(freq))
        extra_par = family.n_extra_params
        st = {
            "scale": float(fit.scale),
            "nobs": nobs,
            "df_model": k - (1 if intercept else 0),
            "df_resid": float(fit.extra.get("df_resid", nobs - k)),
            "converged": bool(fit.converged),
            "n_iter": int(fit.n_iter),
            "n_dropped": int(design.n_dropped),
            "rank": p,
            "method": method,
        }
        if prior_method is not None:
            st["prior_method"] = prior_method
        labels = np.asarray(design.row_labels)
        if lazy is None:
            mu, eta = np.asarray(fit.mu, float), np.asarray(fit.eta, float)
            fitted = lambda: (eta, mu)          # noqa: E731
        else:
            fitted = lazy.fitted

        def training_arrays():
            eta, mu = fitted()
            return {"mu": _read_only(mu), "eta": _read_only(eta)}

        eager = {"y": _read_only(y), "weights": _read_only(w), "offset": _read_only(off),
                 "row_labels": labels}
        if not fit.effects:           # get_prediction() on the training rows
            eager["X"] = design.X
        training = LazyMap(eager, training_arrays)

        def fit_statistics():                   # passes over the rows: on first use
            mu = training["mu"]
            llf = family.loglik(y, mu, w_var, scale=fit.scale if family.llf_at_fit_scale else None,
                                freq=freq)
            return {"deviance": family.deviance(y, mu, w),
                    "null_deviance": null_deviance(y, w, off, family, intercept),
                    "pearson_chi2": _pearson_chi2(family, y[pos], mu[pos], w[pos]),
                    "llf": llf,
                    "aic": -2 * llf + 2 * (k + extra_par),
                    # R's BIC takes n from logLik.glm, which counts zero-weight rows too
                    "bic": -2 * llf + np.log(n_bic) * (k + extra_par)}

        posterior = None
        if lazy is not None:
            sizes = [len(e.effect) for e in fit.effects]

            def posterior():
                cov, se, _ = lazy.posterior()
                cuts = np.cumsum([0] + sizes)
                return cov, [se[a:b] for a, b in zip(cuts[:-1], cuts[1:])]
        return cls(params=fit.beta, cov=fit.cov_beta, column_names=design.column_names,
                   family=family, spec=design.spec, stats=LazyMap(st, fit_statistics),
                   effects=fit.effects, log=fit.log, extra=fit.extra, training=training,
                   posterior=posterior)

    @property
    def _cov(self) -> np.ndarray:
        """cov(beta) (computed on first access when the fit left the posterior to first use)."""
        d = self.__dict__
        if d["_cov_"] is None:
            d["_cov_"] = frozen_array(d["_pending_cov"]()[0])
        return d["_cov_"]

    # ------------------------------------------------------------------ coefficients
    @property
    def family(self) -> Family:
        return self._family

    @property
    def spec(self):
        """The ModelSpec (plain data) that rebuilds the design on new data."""
        return self._spec

    @property
    def params(self) -> pd.Series:
        return pd.Series(self._params.copy(), index=list(self._names), name="coef")

    def cov_params(self) -> pd.DataFrame:
        """cov(beta) = scale (X'WX)^-1 (model-based, as R's vcov)."""
        names = list(self._names)
        return pd.DataFrame(self._cov.copy(), index=names, columns=names)

    @property
    def bse(self) -> pd.Series:
        return pd.Series(np.sqrt(np.diag(self._cov)), index=list(self._names), name="std err")

    @property
    def tvalues(self) -> pd.Series:
        return (self.params / self.bse).rename("t" if self.use_t else "z")

    @property
    def use_t(self) -> bool:
        """Student t (dispersion estimated) or normal reference distribution (as R)."""
        return not self._family.fixed_scale

    def _dist(self):
        return stats.t(self.df_resid) if self.use_t else stats.norm()

    @property
    def pvalues(self) -> pd.Series:
        return pd.Series(2 * self._dist().sf(np.abs(self.tvalues.to_numpy())),
                         index=list(self._names), name="P>|t|" if self.use_t else "P>|z|")

    def conf_int(self, alpha: float = 0.05) -> pd.DataFrame:
        """Wald intervals params +- q_{1-alpha/2} bse (t or normal quantile, see use_t);
        columns 0 (lower) and 1 (upper) as statsmodels."""
        q = self._dist().ppf(1 - alpha / 2)
        b, s = self.params, self.bse
        return pd.DataFrame({0: b - q * s, 1: b + q * s})

    # ------------------------------------------------------------------ scalars
    pearson_chi2 = stat_property("pearson_chi2")
    scale = stat_property("scale")

    @property
    def cov_type(self) -> str:
        """"nonrobust", "HC0".."HC3" or "cluster" (fit(cov_type=...))."""
        return str(self._extra.get("cov_type", "nonrobust"))

    # ------------------------------------------------------------------ training data
    def _train(self, key: str) -> np.ndarray:
        if self._training is None:
            raise ModelError(f"{key}: the training data are not stored in a loaded model; "
                             "use predict(newdata)")
        return self._training[key]

    def _series(self, values: np.ndarray, name: str) -> pd.Series:
        return pd.Series(values, index=self._train("row_labels"), name=name)

    @property
    def fittedvalues(self) -> pd.Series:
        """mu on the training rows (after NA removal), indexed by the data's row labels."""
        return self._series(self._train("mu").copy(), "fitted")

    @property
    def resid_response(self) -> pd.Series:
        """y - mu."""
        return self._series(self._train("y") - self._train("mu"), "resid_response")

    @property
    def resid_pearson(self) -> pd.Series:
        """sqrt(w) (y - mu) / sqrt(V(mu))."""
        y, mu, w = self._train("y"), self._train("mu"), self._train("weights")
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.sqrt(w) * (y - mu) / np.sqrt(self._family.variance(mu))
        return self._series(r, "resid_pearson")

    @property
    def resid_deviance(self) -> pd.Series:
        """sign(y - mu) sqrt(w d(y, mu))."""
        y, mu, w = self._train("y"), self._train("mu"), self._train("weights")
        d = np.maximum(w * self._family.unit_deviance(y, mu), 0)
        return self._series(np.sign(y - mu) * np.sqrt(d), "resid_deviance")

    @property
    def resid_working(self) -> pd.Series:
        """(y - mu) / (dmu/deta)."""
        y, mu, eta = self._train("y"), self._train("mu"), self._train("eta")
        return self._series((y - mu) / self._family.link.mu_eta(eta), "resid_working")

    @property
    def resid_anscombe(self) -> pd.Series:
        """Anscombe residuals, scaled by sqrt(scale) (statsmodels; results/inference.py)."""
        r = inference.anscombe_residuals(self._family, self._train("y"), self._train("mu"),
                                         self._train("weights"), float(self.scale))
        return self._series(r, "resid_anscombe")

    # ------------------------------------------------------------------ tests, intervals
    def wald_test(self, R, q=None, use_f: bool | None = None) -> "inference.WaldTestResult":
        """Wald test of H0: R beta = q (R: a matrix, a coefficient name, a list of names, or
        equations such as ``"x1 = 0, C(k)[T.b] = C(k)[T.c]"``); chi2, or F on (r, df_resid)
        with ``use_f`` (default: when the dispersion is estimated).  Uses cov_params(), so
        a robust cov_type gives a robust test."""
        Rm, q_eq = inference.restriction_matrix(R, list(self._names))
        if q_eq is not None:
            if q is not None:
                raise ModelError("wald_test: the equations give q already; do not pass q=")
            q = q_eq
        return inference.wald_test(self._params, self._cov, Rm, q,
                                   use_f=self.use_t if use_f is None else bool(use_f),
                                   df_resid=float(self.df_resid))

    def get_prediction(self, newdata=None, offset=None) -> "inference.PredictionResults":
        """Predicted means with delta-method standard errors and intervals:
        ``.summary_frame(alpha)`` has mean, mean_se, mean_ci_lower, mean_ci_upper (as
        statsmodels; se as R's predict.glm(se.fit=TRUE, type="response"))."""
        if self._effects:
            raise ModelError("get_prediction is available for models without ^ terms")
        if newdata is None:
            X, off, labels = self._train("X"), self._train("offset"), self._train("row_labels")
        else:
            nd = self._spec.transform(newdata, offset=offset)
            X, off, labels = nd.X, nd.offset, nd.row_labels
        eta = X @ self._params + off
        return inference.PredictionResults(eta, inference.linear_predictor_se(X, self._cov),
                                           self._family, self._dist(), labels)

    # ------------------------------------------------------------------ ^ factors
    def level_effects(self, name: str) -> pd.DataFrame:
        """Per-level n, effect, se of the ^ factor ``name`` (``^`` optional)."""
        key = name.lstrip("^")
        for e in self._effects:
            if e.name == key:
                return e.frame()
        have = ", ".join("^" + e.name for e in self._effects) or "none"
        raise ModelError(f"no high-cardinality factor {name!r} in this model (factors: {have})")

    @property
    def iteration_log(self) -> pd.DataFrame:
        """One row per solver iteration (deviance/objective, changes, timings)."""
        return self._log.copy()

    # ------------------------------------------------------------------ prediction
    def predict(self, newdata=None, which: str = "mean", offset=None) -> pd.Series:
        """Predicted mean mu (``which="mean"``) or linear predictor eta (``"linear"``).

        eta = offset + X beta + sum_k a_k[level]; a level of a ^ factor never seen in the
        fit gets the prior mean 0, and the number of such rows per factor is stored in
        :attr:`last_unseen` and reported with an UnseenLevelWarning.  Without ``newdata``
        the training rows are used.
        """
        if which not in ("mean", "linear"):
            raise ModelError(f"which must be 'mean' or 'linear', not {which!r}")
        if newdata is None:
            eta = self._train("eta")
            labels = self._train("row_labels")
        else:
            nd = self._spec.transform(newdata, offset=offset)
            eta = nd.X @ self._params + nd.offset
            for e, codes in zip(self._point_effects, nd.codes):
                seen = codes >= 0
                eta = eta + np.where(seen, e.effect[np.where(seen, codes, 0)], 0.0)
            self._record_unseen(nd.unseen)
            labels = nd.row_labels
        values = np.array(eta, dtype=float) if which == "linear" else self._family.link.inverse(eta)
        return pd.Series(values, index=labels, name="eta" if which == "linear" else "mu")

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> tuple[dict, dict[str, np.ndarray]]:
        """(JSON-able metadata, named arrays) for :func:`impactglm.serialize.save`.

        Coefficients and covariance go into the metadata (JSON floats round-trip
        exactly); the per-level arrays of ^ factors into the arrays (the level values
        themselves are in the spec).
        """
        meta = {"kind": "glm", "spec": self._spec.to_dict(),
                "family": self._family.name, "link": self._family.link.name,
                "family_args": self._family.args,
                "column_names": list(self._names),
                "params": [float(b) for b in self._params],
                "cov": [[float(c) for c in row] for row in self._cov],
                "stats": dict(self._stats),
                "factors": [{"name": e.name, "tau": None if e.tau is None else float(e.tau),
                             "edf": float(e.edf), "tau_estimated": bool(e.tau_estimated)}
                            for e in self._effects],
                "extra": dict(self._extra),
                "log": self._log.to_dict(orient="list")}
        arrays = {}
        for k, e in enumerate(self._effects):
            arrays[f"counts_{k}"] = np.asarray(e.counts, dtype=np.int64)
            arrays[f"effect_{k}"] = np.asarray(e.effect, dtype=np.float64)
            arrays[f"se_{k}"] = np.asarray(e.se, dtype=np.float64)
        return meta, arrays

    @classmethod
    def from_dict(cls, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> "GLMResults":
        """Inverse of :meth:`to_dict` (no training data: residuals are unavailable)."""
        spec = ModelSpec.from_dict(meta["spec"])
        effects = tuple(
            FactorEffects(name=f["name"], levels=spec.factor_levels[k],
                          counts=arrays[f"counts_{k}"], effect=arrays[f"effect_{k}"],
                          se=arrays[f"se_{k}"], tau=f["tau"], edf=f["edf"],
                          tau_estimated=f["tau_estimated"])
            for k, f in enumerate(meta["factors"]))
        p = len(meta["params"])
        stats = {k: (float(v) if isinstance(v, str) and k not in ("method", "prior_method")
                     else v)
                 for k, v in meta["stats"].items()}      # "nan"/"inf" strings back to floats
        return cls(params=np.array(meta["params"], dtype=np.float64),
                   cov=np.array(meta["cov"], dtype=np.float64).reshape(p, p),
                   column_names=meta["column_names"],
                   family=type(get_family(meta["family"]))(link=meta["link"],
                                                            **meta.get("family_args", {})),
                   spec=spec, stats=stats,
                   effects=effects, log=pd.DataFrame(meta["log"]), extra=meta["extra"])

    # ------------------------------------------------------------------ plots (impactglm.plots)
    def plot_effects(self, name: str, **kwargs):
        """Caterpillar plot of the level effects of ^name; see :func:`impactglm.plots.plot_effects`."""
        return plot_effects(self, name, **kwargs)

    def plot_convergence(self, **kwargs):
        """Gradient and objective per iteration; see :func:`impactglm.plots.plot_convergence`."""
        return plot_convergence(self, **kwargs)

    def plot_calibration(self, data, **kwargs):
        """Binned calibration (binomial); see :func:`impactglm.plots.plot_calibration`."""
        return plot_calibration(self, data, **kwargs)

    def save(self, path) -> None:
        """Save as plain files (JSON + npz, no pickle); read back with ``impactglm.load``."""
        files.save(self, path)

    # ------------------------------------------------------------------ summary
    def _response_label(self) -> str:
        return self._spec.response if self._spec is not None else "y"

    def _header(self) -> list[tuple[tuple[str, str], tuple[str, str]]]:
        fam = self._family
        left = [("Dep. Variable:", self._response_label()),
                ("Model:", "GLM"),
                ("Model Family:", fam.name.capitalize()),
                ("Link Function:", fam.link.name),
                ("Method:", self.method),
                ("No. Iterations:", str(self.n_iter)),
                ("Converged:", "yes" if self.converged else "NO"),
                ("Covariance Type:", self.cov_type)]
        if "prior_method" in self._stats:
            left.append(("Prior sd:", self._stats["prior_method"]))
        theta = getattr(fam, "theta", None)
        if theta is not None:        # negative binomial: MASS's summary line
            how = "estimated" if fam.theta_estimated else "given"
            se = self._extra.get("theta_se")
            left.append((f"Theta ({how}):", f"{theta:.5g}" + (f" ({se:.3g})" if se else "")))
        if getattr(fam, "var_power", None) is not None:
            left.append(("Variance power:", f"{fam.var_power:g}"))
        if fam.name == "binomial" and self._spec is not None:
            info = self._spec.response_info
            if "success" in info:
                left.append(("Success level:", repr(info["success"])))
            elif info.get("kind") == "proportion":
                left.append(("Response:", "proportions"))
        right = [("No. Observations:", str(self.nobs)),
                 ("Rows dropped (NA):", str(self.n_dropped)),
                 ("Df Residuals:", format_number(self.df_resid)),
                 ("Df Model:", format_number(self.df_model)),
                 ("Scale:", f"{self.scale:.6g}"),
                 ("Log-Likelihood:", f"{self.llf:.6g}"),
                 ("Deviance:", f"{self.deviance:.6g}"),
                 ("Null deviance:", f"{self.null_deviance:.6g}"),
                 ("Pearson chi2:", f"{self.pearson_chi2:.4g}"),
                 ("AIC:", f"{self.aic:.6g}"),
                 ("BIC:", f"{self.bic:.6g}")]
        n = max(len(left), len(right))
        left += [("", "")] * (n - len(left))
        right += [("", "")] * (n - len(right))
        return list(zip(left, right))

    def _coef_table(self, alpha: float = 0.05) -> pd.DataFrame:
        ci = self.conf_int(alpha)
        stat = "t" if self.use_t else "z"
        return pd.DataFrame({"coef": self.params, "std err": self.bse, stat: self.tvalues,
                             f"P>|{stat}|": self.pvalues, f"[{alpha / 2:g}": ci[0],
                             f"{1 - alpha / 2:g}]": ci[1]})

    def _factor_lines(self) -> list[str]:
        lines = []
        for e in self._effects:
            if e.tau is None:
                prior = "no prior (fixed effects)"
            else:
                how = "estimated" if e.tau_estimated else "given"
                prior = f"prior sd tau = {e.tau:.4g} ({how})"
            lines.append(f"^{e.name}: {e.n_levels} levels, {e.n_singletons} singletons, "
                         f"{prior}, edf = {e.edf:.1f}")
        cert = [f"{k} = {v:.3g}" for k, v in self._extra.items()
                if k in CERTIFICATE_KEYS and isinstance(v, (int, float, np.number))]
        if cert:
            lines.append("Convergence certificate: " + ", ".join(cert))
        return lines

    def summary(self, alpha: float = 0.05) -> Summary:
        """Text summary laid out like statsmodels' GLM summary (header pairs, coefficients)."""
        width = 78
        header = self._header()
        out = ["Generalized Linear Model Regression Results".center(width), "=" * width]
        half = width // 2
        for (lk, lv), (rk, rv) in header:
            out.append(f"{lk:<20}{lv:>{half - 21}} " + f" {rk:<20}{rv:>{width - half - 21}}")
        out.append("=" * width)
        table = self._coef_table(alpha)
        names = [str(n) for n in table.index]
        nw = max([len(n) for n in names] + [10])
        cols = list(table.columns)
        out.append(" " * nw + "".join(f"{c:>11}" for c in cols))
        out.append("-" * max(width, nw + 11 * len(cols)))
        for name, row in zip(names, table.itertuples(index=False)):
            vals = [f"{row[0]:>11.4f}", f"{row[1]:>11.3f}", f"{row[2]:>11.3f}",
                    f"{row[3]:>11.3f}", f"{row[4]:>11.3f}", f"{row[5]:>11.3f}"]
            out.append(f"{name:<{nw}}" + "".join(vals))
        out.append("=" * max(width, nw + 11 * len(cols)))
        factor_lines = self._factor_lines()
        if factor_lines:
            out.append("High-cardinality factors (level effects: level_effects(name))")
            out.extend(factor_lines)
            out.append("=" * width)
        kind = ("model-based (as R's glm)" if self.cov_type == "nonrobust"
                else f"{self.cov_type} (sandwich)")
        info = self._extra.get("information", "expected")
        notes = [f"Standard errors are {kind}, {info} information; "
                 + ("t tests with df_resid degrees of freedom." if self.use_t else "z tests.")]
        out.extend(f"[{i + 1}] {n}" for i, n in enumerate(notes))
        flat = [(k, v) for pair in header for (k, v) in pair if k]
        return Summary("\n".join(out), flat, table)

    def __repr__(self) -> str:
        return (f"<GLMResults {self._family.name}/{self._family.link.name}: "
                f"{len(self._names)} coefficients, {len(self._effects)} ^ factors, "
                f"nobs={self.nobs}, deviance={self.deviance:.6g}>")


def _pearson_chi2(family: Family, y, mu, w) -> float:
    """sum w (y - mu)^2 / V(mu); inf (not a RuntimeWarning) if V(mu) = 0 at y != mu."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = w * (y - mu) ** 2 / family.variance(mu)
    terms[(y == mu)] = 0.0
    return float(np.sum(terms))


def _read_only(a) -> np.ndarray:
    """A read-only view of a (no copy: the design's and the solver's arrays are the results')."""
    v = np.asarray(a, dtype=np.float64).view()
    v.flags.writeable = False
    return v


class _Once:
    """Call ``fn`` once and keep its value."""

    def __init__(self, fn):
        self._fn, self._value = fn, None

    def __call__(self):
        if self._fn is not None:
            self._value, self._fn = self._fn(), None
        return self._value

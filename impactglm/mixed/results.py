"""Immutable results of a linear mixed model fit (:class:`LMMResults`).

Quantities follow lme4 (Bates et al. 2015):

* ``params``/``bse``/``cov_params()``: beta-hat and sigma^2 (R_X'R_X)^-1 (REML fits: at
  the REML estimates), as lme4's ``fixef``/``vcov``;
* ``theta`` (lme4's names), ``sigma``, ``vcomp`` (VarCorr: sigma^2 T_k T_k');
* ``llf`` = -criterion/2 (the REML log-likelihood for REML fits, like ``logLik``),
  ``aic``/``bic`` from it with df = p + n_theta + 1;
* ``reml_criterion`` (REML fits), ``deviance``: -2 ML log-likelihood (for REML fits
  evaluated at the REML estimates, as ``deviance(fit, REML = FALSE)``);
* ``ranef(group)``: conditional modes b = Lambda u and conditional SDs
  sigma sqrt(diag(Lambda (L L')^-1 Lambda')) (lme4's ``condVar``, beta held fixed).
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pandas as pd


from ..errors import ImpactGLMError, UnseenLevelWarning
from .core import LMMFit, LOG_2PI



class LMMResults:
    """Results of :meth:`impactglm.mixed.model.LMM.fit` (read-only)."""

    def __init__(self, model: Any, fit: LMMFit, singular: tuple[str, ...] = ()):
        d = self.__dict__
        d["model"] = model
        d["fit"] = fit
        d["singular_terms"] = singular
        d["_cache"] = {}

    def __setattr__(self, name, value):
        raise AttributeError("LMMResults is read-only")

    # ------------------------------------------------------------------ fixed effects, theta
    # (each access returns a new Series: changing it never changes the results)
    @property
    def params(self) -> pd.Series:
        """Fixed-effects estimates beta-hat."""
        return pd.Series(self.fit.beta.copy(), index=list(self.model.column_names), name="estimate")

    @property
    def bse(self) -> pd.Series:
        """Standard errors sqrt(diag(cov_params()))."""
        return pd.Series(np.sqrt(np.diag(self.fit.cov_beta)), index=list(self.model.column_names),
                         name="se")

    @property
    def tvalues(self) -> pd.Series:
        return pd.Series(self.fit.beta / np.sqrt(np.diag(self.fit.cov_beta)),
                         index=list(self.model.column_names), name="t")

    @property
    def theta(self) -> pd.Series:
        """lme4's theta (lower triangles of the relative covariance factors), lme4's names."""
        return pd.Series(self.fit.theta.copy(), index=self.model.theta_names(), name="theta")

    # ------------------------------------------------------------------ scalars
    @property
    def reml(self) -> bool:
        return self.fit.reml

    @property
    def method(self) -> str:
        return "REML" if self.reml else "ML"

    @property
    def sigma(self) -> float:
        """Residual standard deviation (REML: sqrt(pwrss / (n - p)); ML: sqrt(pwrss / n))."""
        return self.fit.sigma

    @property
    def scale(self) -> float:
        return self.fit.sigma ** 2

    @property
    def nobs(self) -> int:
        return self.fit.n

    @property
    def df_modelwc(self) -> int:
        """Number of parameters: p fixed effects + theta + sigma (lme4's logLik df)."""
        return self.fit.p + self.fit.theta.size + 1

    @property
    def criterion(self) -> float:
        """The optimised criterion: REML criterion (REML) or deviance (ML)."""
        return self.fit.criterion

    @property
    def reml_criterion(self) -> float | None:
        """lme4's REMLcrit: -2 x REML log-likelihood (None for ML fits)."""
        return self.fit.criterion if self.reml else None

    @property
    def deviance(self) -> float:
        """-2 x ML log-likelihood, profiled over beta and sigma, at the fitted theta.

        d(theta) = log|L|^2 - sum log w + n (1 + log(2 pi pwrss / n)); for ML fits the
        optimised criterion, for REML fits lme4's ``deviance(fit, REML = FALSE)`` at the
        REML theta.
        """
        f, prob = self.fit, self.fit.problem
        return f.ldL2 - prob.ldW + f.n * (1.0 + LOG_2PI + math.log(f.pwrss / f.n))

    @property
    def llf(self) -> float:
        """Log-likelihood (REML log-likelihood for REML fits, as lme4's logLik)."""
        return -0.5 * self.fit.criterion

    @property
    def aic(self) -> float:
        return -2.0 * self.llf + 2.0 * self.df_modelwc

    @property
    def bic(self) -> float:
        return -2.0 * self.llf + math.log(self.nobs) * self.df_modelwc

    @property
    def converged(self) -> bool:
        return self.fit.converged

    @property
    def n_evals(self) -> int:
        return self.fit.n_evals

    @property
    def optimizer_log(self) -> pd.DataFrame:
        """One row per criterion evaluation: eval, seconds, criterion, theta[j]."""
        return self.fit.log.copy()

    @property
    def is_singular(self) -> bool:
        return bool(self.singular_terms)

    def cov_params(self) -> pd.DataFrame:
        """sigma^2 (R_X' R_X)^-1, the covariance of the fixed effects (lme4's vcov)."""
        names = list(self.model.column_names)
        return pd.DataFrame(self.fit.cov_beta.copy(), index=names, columns=names)

    # ------------------------------------------------------------------ variance components
    @property
    def vcomp(self) -> pd.DataFrame:
        """Variance components (lme4's VarCorr): one row per (group, term) and the residual.

        Columns: group, term, variance, sd, corr (correlations with the earlier terms of
        the same block, as in lme4's summary; empty for uncorrelated terms).
        """
        rows = []
        for b, C in zip(self.model.blocks, self.fit.re_cov):
            sd = np.sqrt(np.diag(C))
            for i, term in enumerate(b.term_names):
                corr = tuple(float(C[i, j] / (sd[i] * sd[j])) if sd[i] * sd[j] > 0 else math.nan
                             for j in range(i))
                rows.append((b.name, term, float(C[i, i]), float(sd[i]), corr))
        rows.append(("Residual", "", self.scale, self.sigma, ()))
        return pd.DataFrame(rows, columns=["group", "term", "variance", "sd", "corr"])

    @property
    def correlations(self) -> pd.DataFrame:
        """Covariances and correlations of correlated terms: group, term1, term2, covariance, correlation."""
        rows = []
        for b, C in zip(self.model.blocks, self.fit.re_cov):
            sd = np.sqrt(np.diag(C))
            for j in range(b.r):
                for i in range(j + 1, b.r):
                    corr = C[i, j] / (sd[i] * sd[j]) if sd[i] * sd[j] > 0 else math.nan
                    rows.append((b.name, b.term_names[j], b.term_names[i], float(C[i, j]),
                                 float(corr)))
        return pd.DataFrame(rows, columns=["group", "term1", "term2", "covariance", "correlation"])

    # ------------------------------------------------------------------ random effects
    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(b.name for b in self.model.blocks))

    def ranef(self, group: str | None = None, condsd: bool = True, condvar: bool = False):
        """Conditional modes by level: DataFrame with a column per term and ``condsd(term)``.

        ``condvar=True`` adds lme4's ``condVar`` as columns: ``condvar(t)`` = Var(b_t | y)
        and ``condcov(t1,t2)`` = Cov(b_t1, b_t2 | y) for the terms of one block (all of
        :meth:`ranef_condvar` in plain columns).  ``group=None`` gives a dict {group:
        DataFrame}.  Terms of one grouping factor that come from separate blocks
        ((1|g) + (0+x|g), or (x||g)) share one DataFrame.
        """
        if group is None:
            return {g: self.ranef(g, condsd, condvar) for g in self.groups}
        key = ("ranef", group, condsd, condvar)
        if key in self._cache:
            return self._cache[key].copy()
        ks = self._blocks_of(group)
        index = pd.Index(self.model.levels[ks[0]], name=group)
        cols: dict[str, Any] = {}
        for k in ks:
            b = self.model.blocks[k]
            for j, term in enumerate(b.term_names):
                cols[term] = self.fit.b[k][:, j]
        if condsd:
            for k in ks:
                b = self.model.blocks[k]
                sds = self.fit.conditional_sd(k)
                for j, term in enumerate(b.term_names):
                    cols[f"condsd({term})"] = sds[:, j]
        if condvar:
            for k in ks:
                b = self.model.blocks[k]
                cv = self.fit.conditional_cov(k)
                for j, term in enumerate(b.term_names):
                    cols[f"condvar({term})"] = cv[:, j, j]
                for j in range(b.r):
                    for i in range(j + 1, b.r):
                        cols[f"condcov({b.term_names[j]},{b.term_names[i]})"] = cv[:, i, j]
        frame = pd.DataFrame(cols, index=index)
        self._cache[key] = frame
        return frame.copy()

    def ranef_condvar(self, group: str) -> dict:
        """lme4's ``attr(ranef(fit, condVar = TRUE)[[group]], "postVar")`` per term block.

        Returns {terms (tuple): array (n_levels, r, r)} with Var(b_level | y) =
        sigma^2 T [(L_ZZ L_ZZ')^-1]_level T' (beta held at its estimate, as lme4),
        one entry per random-effects term of ``group`` (levels in ``ranef``'s order).
        """
        return {self.model.blocks[k].term_names: self.fit.conditional_cov(k)
                for k in self._blocks_of(group)}

    def _blocks_of(self, group: str) -> list[int]:
        ks = [k for k, b in enumerate(self.model.blocks) if b.name == group]
        if not ks:
            raise ImpactGLMError(f"no random-effects term has the grouping factor {group!r}; "
                                 f"the groups are {', '.join(map(repr, self.groups))}")
        return ks

    # ------------------------------------------------------------------ fitted values
    def _linear_parts(self):
        if "parts" not in self._cache:
            fixed = self.model.X @ self.fit.beta
            rand = np.zeros_like(fixed)
            for b, bk in zip(self.model.blocks, self.fit.b):
                rand += np.einsum("ij,ij->i", b.Z, bk[b.codes])
            self._cache["parts"] = (fixed, rand)
        return self._cache["parts"]

    def _row_index(self) -> pd.Index:
        labels = self.model.design.row_labels
        if self.model.rows is not None:
            labels = labels[self.model.rows]
        return pd.Index(labels)

    @property
    def fittedvalues(self) -> pd.Series:
        """X beta + Z b (conditional fitted values), indexed by the rows used."""
        fixed, rand = self._linear_parts()
        return pd.Series(fixed + rand, index=self._row_index(), name="fitted")

    @property
    def resid(self) -> pd.Series:
        """Response residuals y - X beta - Z b."""
        fixed, rand = self._linear_parts()
        return pd.Series(self.model.y - fixed - rand, index=self._row_index(), name="resid")

    def predict(self, newdata=None, re_form: Any = None, include_random: bool = True) -> pd.Series:
        """Predictions X beta + sum over the chosen random terms of Z_k b_k (lme4's predict).

        ``re_form`` is lme4's ``re.form``: None (all random terms), ``"NA"`` / ``"~0"`` /
        ``NaN`` / False (none: X beta), or a formula naming a subset of the model's random
        terms, e.g. ``"~ (1 | Subject)"`` (a term is matched by grouping factor and
        terms; ``(x || g)`` counts as one term).  ``include_random=False`` is ``re_form="NA"``.
        Levels the fit never saw get b = 0: their rows are counted per grouping factor in
        an :class:`UnseenLevelWarning` and in :attr:`last_unseen`.  Rows of ``newdata``
        with missing values are dropped (the index says which remain).
        """
        chosen = self.model.random_selection(re_form) if include_random else frozenset()
        if newdata is None:
            eta = self.model.X @ self.fit.beta
            for pos in chosen:
                b = self.model.blocks[pos]
                eta = eta + np.einsum("ij,ij->i", b.Z, self.fit.b[pos][b.codes])
            self._cache["unseen"] = {}
            return pd.Series(eta, index=self._row_index(), name="fitted")
        nd = self.model.design.spec.transform(newdata)
        eta = nd.X[:, self.model.kept_columns] @ self.fit.beta
        unseen: dict[str, int] = {}
        for pos in sorted(chosen):
            codes, Z = nd.random[self.model.block_order[pos]]
            codes = self.model.level_map(pos, codes)
            seen = codes >= 0
            eta[seen] += np.einsum("ij,ij->i", Z[seen], self.fit.b[pos][codes[seen]])
            name = self.model.blocks[pos].name
            unseen[name] = max(unseen.get(name, 0), int((~seen).sum()))
        unseen = {g: c for g, c in unseen.items() if c}
        self._cache["unseen"] = unseen
        if unseen:
            what = ", ".join(f"{g}: {c} rows" for g, c in unseen.items())
            warnings.warn(f"new levels of grouping factors get random effect 0 ({what})",
                          UnseenLevelWarning, stacklevel=2)
        return pd.Series(eta, index=pd.Index(nd.row_labels), name="predicted")

    @property
    def last_unseen(self) -> dict[str, int]:
        """Rows with a level unseen at fit time, per grouping factor, in the last predict()."""
        return dict(self._cache.get("unseen", {}))

    # ------------------------------------------------------------------ summary
    def summary(self) -> str:
        """A text summary laid out like lme4's ``summary(lmer(...))``."""
        lines = [f"Linear mixed model fit by {'REML' if self.reml else 'maximum likelihood'} "
                 "(impactglm; lme4's criterion)", f"Formula: {self.model.formula}", ""]
        if self.reml:
            lines.append(f"REML criterion at convergence: {self.fit.criterion:.1f}")
        else:
            lines.append(f"{'AIC':>9} {'BIC':>9} {'logLik':>9} {'deviance':>9} {'df.resid':>9}")
            lines.append(f"{self.aic:9.1f} {self.bic:9.1f} {self.llf:9.1f} {self.fit.criterion:9.1f} "
                         f"{self.nobs - self.df_modelwc:9d}")
        lines += ["", "Scaled residuals: "]
        r = self.resid.to_numpy() * np.sqrt(self.model.weights) / self.sigma
        q = np.quantile(r, [0, 0.25, 0.5, 0.75, 1.0])
        lines.append("".join(f"{h:>9}" for h in ("Min", "1Q", "Median", "3Q", "Max")))
        lines.append("".join(f"{v:9.4f}" for v in q))
        lines += ["", "Random effects:"]
        vc = self.vcomp
        rows = [(" Groups", "Name", "Variance", "Std.Dev.", "Corr")]
        last = None
        for g, term, var, sd, corr in vc.itertuples(index=False):
            rows.append((" " + (g if g != last else ""), term, f"{var:.4g}", f"{sd:.4g}",
                         " ".join(f"{c:5.2f}" for c in corr)))
            last = g
        widths = [max(len(row[c]) for row in rows) for c in range(4)]
        for row in rows:
            lines.append(f"{row[0]:<{widths[0]}} {row[1]:<{widths[1]}} {row[2]:>{widths[2]}} "
                         f"{row[3]:>{widths[3]}} {row[4]}".rstrip())
        ngrp = ", ".join(f"{b.name}, {b.n_levels}" for b in self.model.blocks)
        lines.append(f"Number of obs: {self.nobs}, groups:  {ngrp}")
        lines += ["", "Fixed effects:"]
        names = list(self.model.column_names)
        w = max([len(n) for n in names] + [11])
        lines.append(f"{'':<{w}} {'Estimate':>10} {'Std. Error':>10} {'t value':>8}")
        for n_, est, se, t in zip(names, self.params, self.bse, self.tvalues):
            lines.append(f"{n_:<{w}} {est:10.4g} {se:10.4g} {t:8.3f}")
        if self.model.dropped_columns:
            lines.append(f"fixed-effect model matrix is rank deficient: dropped "
                         f"{', '.join(self.model.dropped_columns)}")
        if self.singular_terms:
            lines += ["", f"boundary (singular) fit: {', '.join(self.singular_terms)}"]
        lines += ["", f"optimizer: {self.fit.n_evals} criterion evaluations, "
                      f"{'converged' if self.converged else 'NOT converged: ' + self.fit.message}"]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"<LMMResults {self.method} {self.model.formula!r}: criterion "
                f"{self.fit.criterion:.4f}, sigma {self.sigma:.4g}>")

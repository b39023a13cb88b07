"""Run a fixed list of fits through the public API and dump or compare their numbers.

    python tools/compare_outputs.py dump OUT.npz          # run every fit, write every number
    python tools/compare_outputs.py compare A.npz B.npz   # exit 1 unless A and B are bit-identical

A refactoring that must not change numbers (the layout step, issue 9) is checked by a dump
before and after it (numba caches cleared before each: the cache does not track edits to
kernels inlined from other files).  Only the public API is used (``ig.glm``, ``ig.lmm``,
``ig.load``, ``impactglm.cli.main``), so the script runs unchanged on both trees.  The
thread counts are fixed before numpy/numba load (NUMBA_NUM_THREADS=2, BLAS threads 1):
parallel reductions are deterministic only at a fixed thread count.

What is dumped per fit: params, bse, the scalar statistics (llf, deviance, aic, ...), the
prior scales tau, every factor's level effects, fitted values, predictions on new data
(with unseen levels), the iteration log's numeric columns other than times, for the LMM
theta, sigma, ranef, vcomp and predictions, and for the CLI the coefficient TSV and the
scored file.  Comparison is exact (``np.array_equal``, NaN equal to NaN).
"""
from __future__ import annotations

import os

os.environ["NUMBA_NUM_THREADS"] = "2"
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import contextlib  # noqa: E402
import io  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import impactglm as ig  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"

SCALARS = ("llf", "deviance", "null_deviance", "aic", "bic", "nobs", "df_model", "df_resid",
           "converged", "n_iter", "scale", "accuracy", "sigma", "criterion", "reml_criterion")


def synthetic(n: int = 3000, seed: int = 1) -> pd.DataFrame:
    """Rows with two high-cardinality factors g (150 levels), h (40), two numbers, a small
    factor k, and a response for every family (gaussian, binomial, poisson, gamma, 3 classes)."""
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 150, n)
    h = rng.integers(0, 40, n)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    k = rng.choice(list("abc"), n)
    ug, uh = rng.normal(0, 0.7, 150), rng.normal(0, 0.4, 40)
    eta = 0.3 + 0.5 * x1 - 0.2 * x2 + ug[g] + uh[h] + (k == "b") * 0.3
    df = pd.DataFrame({
        "g": [f"g{v}" for v in g], "h": [f"h{v}" for v in h], "x1": x1, "x2": x2, "k": k,
        "y_gauss": eta + rng.normal(size=n),
        "y_bin": (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float),
        "y_pois": rng.poisson(np.exp(0.3 * eta)).astype(float),
        "y_gamma": rng.gamma(2.0, np.exp(0.3 * eta) / 2.0),
    })
    latent = eta + rng.logistic(size=n)
    df["y_cls"] = np.where(latent < 0, "low", np.where(latent < 1.0, "mid", "high"))
    return df


def newdata(df: pd.DataFrame) -> pd.DataFrame:
    """The first 200 rows, with some levels replaced by ones never seen in the fit."""
    new = df.iloc[:200].copy()
    new.loc[new.index[:10], "g"] = "unseen_g"
    new.loc[new.index[5:15], "h"] = "unseen_h"
    return new


def _arr(value) -> np.ndarray:
    if isinstance(value, (pd.Series, pd.DataFrame)):
        value = value.to_numpy()
    a = np.asarray(value)
    if a.dtype == object:
        try:
            a = a.astype(float)
        except (TypeError, ValueError):
            a = a.astype(str)
    return a


class Dump(dict):
    def put(self, key: str, value) -> None:
        assert key not in self, key
        self[key] = _arr(value)

    def frame(self, key: str, frame: pd.DataFrame) -> None:
        """A frame's numeric columns by position (names are recorded separately)."""
        self.put(key + ".columns", np.array([str(c) for c in frame.columns]))
        self.put(key + ".index", np.array([str(i) for i in frame.index]))
        for j, c in enumerate(frame.columns):
            col = frame[c]
            if pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
                self.put(f"{key}.{j}", col.to_numpy(dtype=float, na_value=np.nan))
            else:
                self.put(f"{key}.{j}", col.astype(str).to_numpy())


def dump_glm(d: Dump, name: str, res, new: pd.DataFrame | None) -> None:
    d.put(f"{name}.params", res.params)
    for attr in ("bse",):
        with contextlib.suppress(Exception):
            d.put(f"{name}.{attr}", getattr(res, attr))
    with contextlib.suppress(Exception):
        d.put(f"{name}.cov", res.cov_params())
    for attr in SCALARS:
        try:
            value = getattr(res, attr)
        except Exception:
            continue
        if value is not None and np.ndim(value) == 0:
            d.put(f"{name}.{attr}", float(value))
    prior = getattr(res, "prior_sd", None) or {}
    for f, tau in prior.items():
        d.put(f"{name}.tau.{f}", np.nan if tau is None else float(tau))
        d.frame(f"{name}.effects.{f}", res.level_effects(f))
    with contextlib.suppress(Exception):
        d.put(f"{name}.fitted", res.fittedvalues)
    log = res.iteration_log
    if isinstance(log, pd.DataFrame) and len(log):
        keep = [c for c in log.columns if "time" not in str(c) and "sec" not in str(c)]
        d.frame(f"{name}.log", log[keep])
    if new is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p = res.predict(new)
        if isinstance(p, pd.DataFrame):
            d.frame(f"{name}.predict", p)
        else:
            d.put(f"{name}.predict", p)


def dump_lmm(d: Dump, name: str, res, new: pd.DataFrame | None) -> None:
    d.put(f"{name}.params", res.params)
    d.put(f"{name}.bse", res.bse)
    d.put(f"{name}.theta", res.theta)
    d.put(f"{name}.cov", res.cov_params())
    for attr in ("sigma", "llf", "deviance", "aic", "bic", "criterion", "nobs"):
        d.put(f"{name}.{attr}", float(getattr(res, attr)))
    d.frame(f"{name}.vcomp", res.vcomp)
    for grp in res.groups:
        r = res.ranef(grp)
        if isinstance(r, pd.DataFrame):
            d.frame(f"{name}.ranef.{grp}", r)
        else:
            d.put(f"{name}.ranef.{grp}", r)
    d.put(f"{name}.fitted", res.fittedvalues)
    if new is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            d.put(f"{name}.predict", res.predict(new))


def run_cli(args: list[str]) -> int:
    from impactglm.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(args)
    if status != 0:
        raise RuntimeError(f"impactglm {' '.join(args)} exited {status}: {err.getvalue()}")
    return status


def fits(d: Dump, tmp: Path) -> list[str]:
    df = synthetic()
    new = newdata(df)
    glm_data = pd.read_csv(DATA / "glm_data.csv")
    names: list[str] = []

    def glm(name, formula, data, new_rows=None, fit_kwargs=None, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = ig.glm(formula, data, **kwargs).fit(**(fit_kwargs or {}))
        dump_glm(d, name, res, new_rows)
        names.append(name)
        return res

    # no ^ terms: R's glm.fit path, every family
    glm("irls.gaussian", "y_gauss ~ x1 + x2 + C(k)", glm_data, glm_data.iloc[:50])
    glm("irls.binomial", "y_logit ~ x1 + x2 + C(k)", glm_data, glm_data.iloc[:50],
        family="binomial")
    glm("irls.poisson", "count ~ x1 + x2", glm_data, glm_data.iloc[:50], family="poisson",
        offset="logexp")
    glm("irls.gamma", "y_gamma_log ~ x1 + x2", glm_data, glm_data.iloc[:50], family="gamma",
        link="log")
    # ^ terms, every family, auto and fixed prior
    # (^ terms support gaussian, binomial and poisson; gamma runs through IRLS above)
    for fam, y in (("gaussian", "y_gauss"), ("binomial", "y_bin"), ("poisson", "y_pois")):
        glm(f"hc.{fam}.auto", f"{y} ~ ^g + ^h + x1 + x2 + C(k)", df, new, family=fam)
        glm(f"hc.{fam}.fixed", f"{y} ~ ^g + x1", df, new, family=fam, prior_sd=0.5)
    glm("hc.poisson.offset", "y_pois ~ ^g + x1", df.assign(e=0.1 * df.x2), new.assign(e=0.2),
        family="poisson", offset="e")
    glm("hc.binomial.mixed_prior", "y_bin ~ ^g + ^h + x1", df, new, family="binomial",
        prior_sd={"g": 0.8, "h": None})
    glm("hc.binomial.weights", "y_bin ~ ^g + x2", df.assign(w=1.0 + (df.x1 > 0)), new.assign(w=1.0),
        family="binomial", weights="w")
    # multinomial
    glm("mn.covariates.auto", "y_cls ~ ^g + ^h + x1 + C(k)", df, new, family="multinomial")
    glm("mn.nocovariates.auto", "y_cls ~ ^g + ^h", df, new, family="multinomial")
    glm("mn.fixed", "y_cls ~ ^g + x2", df, new, family="multinomial", prior_sd=0.6)
    glm("mn.holdout", "y_cls ~ ^g + x1", df, new, family="multinomial",
        fit_kwargs={"holdout": 0.2, "seed": 3})
    glm("mn.noprior_levels", "y_cls ~ x1 + x2 + C(k)", df, new, family="multinomial")

    # save / load / predict
    for name in ("hc.binomial.auto", "mn.covariates.auto", "irls.gaussian"):
        formula = {"hc.binomial.auto": ("y_bin ~ ^g + ^h + x1 + x2 + C(k)", "binomial", df),
                   "mn.covariates.auto": ("y_cls ~ ^g + ^h + x1 + C(k)", "multinomial", df),
                   "irls.gaussian": ("y_gauss ~ x1 + x2 + C(k)", "gaussian", glm_data)}[name]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = ig.glm(formula[0], formula[2], family=formula[1]).fit()
            path = tmp / f"{name}.json"
            res.save(path)
            loaded = ig.load(path)
            rows = new if formula[2] is df else glm_data.iloc[:50]
            p = loaded.predict(rows)
        key = f"saveload.{name}"
        if isinstance(p, pd.DataFrame):
            d.frame(key + ".predict", p)
        else:
            d.put(key + ".predict", p)
        d.put(key + ".params", loaded.params)
        names.append(key)

    # linear mixed models
    sleep = pd.read_csv(DATA / "sleepstudy.csv")
    sleep_new = sleep.iloc[:30].copy()
    sleep_new.loc[sleep_new.index[:5], "Subject"] = 999
    for name, formula, data, reml, new_rows in (
            ("lmm.sleep.corr.reml", "Reaction ~ Days + (Days | Subject)", sleep, True, sleep_new),
            ("lmm.sleep.corr.ml", "Reaction ~ Days + (Days | Subject)", sleep, False, sleep_new),
            ("lmm.sleep.uncorr.reml", "Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)",
             sleep, True, sleep_new),
            ("lmm.crossed.reml", "y_gauss ~ x1 + (1 | g) + (1 | h)", df, True, new),
            ("lmm.crossed.ml", "y_gauss ~ x1 + x2 + (1 | g) + (1 | h)", df, False, new),
            ("lmm.penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)",
             pd.read_csv(DATA / "Penicillin.csv"), True, None)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = ig.lmm(formula, data).fit(reml=reml)
        dump_lmm(d, name, res, new_rows)
        names.append(name)

    # the command line: fit, then score, on a small CSV
    csv = tmp / "small.csv"
    df.to_csv(csv, index=False)
    for name, formula, family in (("cli.binomial", "y_bin ~ ^g + ^h + x1", "binomial"),
                                  ("cli.multinomial", "y_cls ~ ^g + x1 + C(k)", "multinomial"),
                                  ("cli.gaussian.fixed", "y_gauss ~ ^g + x2", "gaussian")):
        model, coef, scored = tmp / f"{name}.json", tmp / f"{name}.tsv", tmp / f"{name}.out.csv"
        extra = ["--prior-sd", "0.5"] if name.endswith("fixed") else []
        run_cli(["fit", "--data", str(csv), "--formula", formula, "--family", family,
                 "--model", str(model), "--coef-tsv", str(coef), "--quiet", *extra])
        run_cli(["score", "--model", str(model), "--data", str(csv), "--out", str(scored),
                 "--quiet"])
        d.frame(f"{name}.coef", pd.read_csv(coef, sep="\t", keep_default_na=False))
        d.frame(f"{name}.scored", pd.read_csv(scored))
        names.append(name)
    return names


def dump(out: str) -> None:
    d = Dump()
    with tempfile.TemporaryDirectory() as tmp:
        names = fits(d, Path(tmp))
    d.put("_fits", np.array(names))
    np.savez(out, **d)
    print(f"{len(names)} fits, {len(d)} arrays -> {out}")


def compare(a_path: str, b_path: str) -> int:
    a, b = np.load(a_path), np.load(b_path)
    fits_a = list(a["_fits"])
    bad = []
    for key in sorted(set(a.files) | set(b.files)):
        if key not in a.files or key not in b.files:
            bad.append(f"{key}: only in {'first' if key in a.files else 'second'}")
            continue
        x, y = a[key], b[key]
        equal_nan = x.dtype.kind in "fc" and y.dtype.kind in "fc"
        if x.shape != y.shape or x.dtype != y.dtype or not np.array_equal(x, y,
                                                                          equal_nan=equal_nan):
            diff = ""
            if equal_nan and x.shape == y.shape:
                diff = f" (max abs diff {np.nanmax(np.abs(x - y)):.3g})"
            bad.append(f"{key}: differs{diff}")
    if bad:
        print(f"NOT identical: {len(bad)} of {len(a.files)} arrays differ")
        print("\n".join(bad))
        return 1
    print(f"bit-identical: {len(fits_a)} fits, {len(a.files)} arrays")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "dump":
        dump(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        sys.exit(compare(sys.argv[2], sys.argv[3]))
    else:
        sys.exit(__doc__)

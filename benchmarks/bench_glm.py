"""IRLS speed: impactglm.solvers.irls.fit_irls vs statsmodels GLM vs glum (no penalty), same arrays.

    python3 benchmarks/bench_glm.py [--rows 100000 1000000] [--p 10] [--repeat 1]

Prints one table row per (rows, family): seconds per fit (best of --repeat, after a
warm-up that loads the numba cache), IRLS iterations, and the largest relative
coefficient difference to statsmodels (fitted to tol 1e-12).  Wall times depend on the
machine's load; compare columns within one run.
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from impactglm.solvers.irls import fit_irls


def make(n: int, p: int, family: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = np.column_stack([np.ones(n), rng.normal(size=(n, p - 1))])
    beta = rng.normal(0, 0.3, p) / np.sqrt(p)
    eta = X @ beta
    if family == "binomial":
        y = (rng.uniform(size=n) < 1 / (1 + np.exp(-eta))).astype(float)
    elif family == "poisson":
        y = rng.poisson(np.exp(eta)).astype(float)
    elif family == "gamma":
        y = rng.gamma(2.0, np.exp(eta) / 2.0)
    else:
        y = eta + rng.normal(size=n)
    return X, y


def best_time(fn, repeat: int):
    out, times = None, []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, min(times)


def run(rows, p, repeat, families):
    import statsmodels.api as sm
    try:
        import glum
    except ImportError:   # pragma: no cover
        glum = None
    sm_fam = {"binomial": sm.families.Binomial, "poisson": sm.families.Poisson,
              "gaussian": sm.families.Gaussian,
              "gamma": lambda: sm.families.Gamma(sm.families.links.Log())}
    link = {"gamma": "log"}
    header = (f"{'rows':>10} {'p':>4} {'family':>9} {'impactglm s':>12} {'iter':>5} "
              f"{'statsmodels s':>14} {'glum s':>8} {'max rel diff':>13}")
    print(header)
    print("-" * len(header))
    fit_irls(*make(200, p, "binomial"), None, None, "binomial")      # warm the numba cache
    for n in rows:
        for fam in families:
            X, y = make(n, p, fam)
            from impactglm.families import get_family
            family = get_family(fam, link.get(fam))
            ours, t_ours = best_time(lambda: fit_irls(X, y, None, None, family), repeat)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ref, t_sm = best_time(lambda: sm.GLM(y, X, family=sm_fam[fam]()).fit(), repeat)
                tight = sm.GLM(y, X, family=sm_fam[fam]()).fit(tol=1e-12, maxiter=100)
            t_glum = float("nan")
            if glum is not None:
                gfam = {"gamma": "gamma", "gaussian": "normal"}.get(fam, fam)
                kw = {"link": "log"} if fam == "gamma" else {}
                model = glum.GeneralizedLinearRegressor(family=gfam, alpha=0, fit_intercept=False,
                                                        **kw)
                _, t_glum = best_time(lambda: model.fit(X, y), repeat)
            diff = np.max(np.abs(ours.beta - tight.params) / np.maximum(np.abs(tight.params), 1e-3))
            print(f"{n:>10,} {p:>4} {fam:>9} {t_ours:>12.3f} {ours.n_iter:>5} {t_sm:>14.3f} "
                  f"{t_glum:>8.3f} {diff:>13.1e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--p", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--families", nargs="+", default=["gaussian", "binomial", "poisson", "gamma"])
    args = ap.parse_args()
    run(args.rows, args.p, args.repeat, args.families)


if __name__ == "__main__":
    main()

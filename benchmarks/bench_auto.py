"""prior_sd="auto" vs a fixed prior on MovieLens-shaped binary data, as users run it.

    python3 benchmarks/bench_auto.py 1000000            # rows (users x movies as make_ratings)
    python3 benchmarks/bench_auto.py 1000000 20000 8000  # rows users movies

Each fit runs in a fresh process: ``ig.glm("y ~ ^UserID + ^MovieID", d, family="binomial",
prior_sd=...).fit()`` at default settings, first with prior_sd="auto" and then with the prior
sds it found given as numbers (the fixed-prior fit of the same model).  Reported: seconds of
glm() + fit() (numba already compiled by a small warm-up fit in the same process), the prior
sds, the criterion evaluations, whether log det was exact (dense Schur) or SLQ, peak RSS, and
the ratio auto / fixed.  The machine's load is printed beside the figures.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time


def _one(rows: int, users: int, movies: int, prior: str) -> dict:
    import impactglm as ig
    sim = ig.make_ratings(rows, users, movies, kind="binary", covariates=False, seed=0)
    d = sim.data if hasattr(sim, "data") else sim.frame
    small = ig.make_ratings(5000, 300, 200, kind="binary", covariates=False, seed=1)
    ds = small.data if hasattr(small, "data") else small.frame
    ig.glm("y ~ ^UserID + ^MovieID", ds, family="binomial", prior_sd="auto").fit()   # compile
    ps = "auto" if prior == "auto" else json.loads(prior)
    t0 = time.perf_counter()
    res = ig.glm("y ~ ^UserID + ^MovieID", d, family="binomial", prior_sd=ps).fit()
    sec = time.perf_counter() - t0
    ex = getattr(res, "_extra", {})       # the fit's scalar diagnostics (tau_evaluations, tau_exact)
    return {"seconds": sec, "prior_sd": {k: float(v) for k, v in res.prior_sd.items()},
            "evaluations": ex.get("tau_evaluations"), "exact": ex.get("tau_exact"),
            "rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}


def _run(*args) -> dict:
    out = subprocess.run([sys.executable, __file__, "--one", *map(str, args)], capture_output=True,
                         text=True)
    if out.returncode:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(rows: int, users: int, movies: int) -> None:
    print(f"load {os.getloadavg()[0]:.2f}; rows {rows:,}, users {users:,}, movies {movies:,}")
    auto = _run(rows, users, movies, "auto")
    fixed = _run(rows, users, movies, json.dumps(auto["prior_sd"]))
    print("| fit | seconds | prior sds | evaluations | log det | peak RSS GB |")
    print("| --- | ---: | --- | ---: | --- | ---: |")
    for name, r in (("auto", auto), ("fixed at auto's sds", fixed)):
        sds = ", ".join(f"{k} {v:.6f}" for k, v in r["prior_sd"].items())
        ld = "" if r["exact"] is None else ("exact" if r["exact"] else "SLQ")
        print(f"| {name} | {r['seconds']:.2f} | {sds} | {r['evaluations'] or ''} | {ld} | {r['rss_gb']:.2f} |")
    print(f"auto / fixed = {auto['seconds'] / fixed['seconds']:.2f}; load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    if sys.argv[1] == "--one":
        print(json.dumps(_one(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])))
    else:
        a = [int(v) for v in sys.argv[1:]] + [6040, 3706][len(sys.argv) - 2:]
        main(a[0], a[1], a[2])

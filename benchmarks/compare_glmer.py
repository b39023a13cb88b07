"""prior_sd="auto" as users run it vs glmer(nAGQ = 0) on the reference cases of tests/data/glmer.json.

    python3 benchmarks/compare_glmer.py                  # all cases
    python3 benchmarks/compare_glmer.py cbpp grouseticks

Each case runs in a fresh subprocess: ``ig.glm(formula, data, family=..., prior_sd="auto").fit()``
with default settings (the call is the case's ``python_call`` in glmer.json, built by
tests/glmer_cases.py).  Columns: seconds of glm() + fit() (wall clock; the first fit in the
process, as a user's script sees it, and the same fit again once numba has compiled; the
machine's load is printed in the header), peak RSS of the process, per ^ factor
impactglm's prior sd, glmer's nAGQ = 0 sd at the tight optimum (and at glmer's default stopping
rule), their relative differences, and the largest relative difference of the fixed effects.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import glmer_cases  # noqa: E402  (tests/glmer_cases.py: the case definitions)


def _one(name: str) -> dict:
    t0 = time.perf_counter()
    res = glmer_cases.fit(name)
    seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    glmer_cases.fit(name)                       # again in the same process: numba compiled
    warm = time.perf_counter() - t0
    return {"seconds": seconds, "seconds_warm": warm, "prior_sd": {k: float(v) for k, v in res.prior_sd.items()},
            "params": {k: float(v) for k, v in res.params.items()},
            "rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}


def _run(name: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, __file__, "--one", name], capture_output=True, text=True,
                         env=env, cwd=ROOT)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _fixed_rel(params: dict, fixef: dict) -> float:
    """max relative difference of the fixed effects, matched by name (Patsy's spelled as R's)."""
    got = {glmer_cases.r_name(k): v for k, v in params.items()}
    if set(got) != set(fixef):
        return float("nan")
    return max(abs(got[k] - y) / max(abs(y), 1e-12) for k, y in fixef.items())


def main(names: list[str]) -> None:
    ref = glmer_cases.reference()
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}   "
          f"reference: lme4 {ref['lme4_version']}, {ref['R_version']}")
    print("| case | rows | factor | impactglm auto | glmer nAGQ=0 tight | rel diff | "
          "glmer nAGQ=0 default | rel diff vs default | fixef max rel diff | impactglm s (1st fit) | "
          "s (2nd fit) | peak RSS GB |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in names:
        case = ref["cases"][name]
        got = _run(name)
        tight, default = case["nagq0"]["tight"], case["nagq0"]["default"]
        if "error" in got:
            print(f"| {name} | {case['nobs']} | - | error: {got['error']} | | | | | | | | |")
            continue
        fx = _fixed_rel(got["params"], tight["fixed_effects"])
        for i, (g, want) in enumerate(tight["prior_sd"].items()):
            have = got["prior_sd"][g]
            d0 = default["prior_sd"][g]
            tail = (f"{fx:.1e} | {got['seconds']:.2f} | {got['seconds_warm']:.2f} | {got['rss_gb']:.2f} |"
                    if i == 0 else "| | | |")
            print(f"| {name if i == 0 else ''} | {case['nobs'] if i == 0 else ''} | {g} | {have:.6f} | "
                  f"{want:.6f} | {abs(have - want) / want:.1e} | {d0:.6f} | {abs(have - d0) / d0:.1e} | "
                  f"{tail}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        print(json.dumps(_one(sys.argv[2])))
    else:
        main(sys.argv[1:] or list(glmer_cases.CASES))

"""Design-builder timings on MovieLens-shaped data (one command, prints a table).

    python3 benchmarks/bench_design.py            # 1M and 10M rows
    python3 benchmarks/bench_design.py --rows 1000000

Times: the level coding of one ^ column (impactglm.design.levels.factorize), build_design
for three formulas, ModelSpec.transform on the same rows, and the spec's JSON round
trip.  Wall time is the median of --repeat runs; the machine is shared, so expect noise.
"""
from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np

from impactglm.design.build import build_design
from impactglm.design.levels import factorize
from impactglm.design.spec import ModelSpec
from impactglm.simulate import make_ratings

SIZES = {1_000_000: (6_040, 3_706), 10_000_000: (69_878, 10_677)}


def timed(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def run(n_rows: int, repeat: int) -> list[tuple[str, str, float]]:
    n_users, n_movies = SIZES.get(n_rows, (max(n_rows // 143, 2), max(n_rows // 936, 2)))
    data = make_ratings(n_rows, n_users, n_movies, kind="binary", seed=1).data
    users, movies = data["UserID"].nunique(), data["MovieID"].nunique()
    label = f"{n_rows:,} rows, {users:,} users x {movies:,} movies"
    rows = []
    t, _ = timed(lambda: factorize(data["UserID"]), repeat)
    rows.append((label, "factorize(UserID)", t))
    for formula in ("y ~ ^UserID + ^MovieID", "y ~ age + ^UserID + ^MovieID",
                    "y ~ standardize(age) + C(genre) + ^UserID + ^MovieID"):
        t, d = timed(lambda: build_design(formula, data, family="binomial"), repeat)
        rows.append((label, f"build_design {formula}", t))
    t, _ = timed(lambda: d.spec.transform(data), repeat)
    rows.append((label, "spec.transform (last formula)", t))
    t, _ = timed(lambda: ModelSpec.from_dict(json.loads(json.dumps(d.spec.to_dict()))), repeat)
    rows.append((label, "spec to_dict -> JSON -> from_dict", t))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="*", default=[1_000_000, 10_000_000])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(f"{'data':<52} {'step':<62} {'seconds':>8}")
    for n in args.rows:
        for label, step, t in run(n, args.repeat):
            print(f"{label:<52} {step:<62} {t:8.3f}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of the process: {rss:,.0f} MB")


if __name__ == "__main__":
    main()

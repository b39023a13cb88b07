"""A newcomer's first minute: import, first fits and the demo, with an empty and a warm numba cache.

    python benchmarks/bench_first_run.py                 # the table
    python benchmarks/bench_first_run.py --kernels       # also compile seconds per numba kernel
    python benchmarks/bench_first_run.py --only binary,lmm

Every scenario runs in a fresh process, first with ``NUMBA_CACHE_DIR`` pointed at a new
empty directory (what a fresh install sees: every kernel is compiled), then again in
a fresh process with that directory now filled (warm: the kernels are loaded from the
cache).  Scenarios:

* ``import deps``: ``import pandas, scipy.linalg, scipy.optimize, numba, patsy`` (the floor);
* ``import impactglm``: ``import impactglm as ig; ig.glm``;
* ``binary``: ``ig.glm("y ~ ^UserID + ^MovieID", df, family="binomial").fit()`` on 100,000
  MovieLens-shaped rows (``ig.make_ratings(kind="binary", covariates=False)``);
* ``multinomial``: the demo's model ``Rating ~ ^UserID + ^MovieID + age + C(genre)`` on
  100,000 rows of the demo's data (family multinomial);
* ``lmm``: InstEval ``ig.lmm("y ~ service + (1 | s) + (1 | d)", insteval).fit(reml=False)``
  as the README shows (InstEval.csv from shared/data beside the checkout, else
  tests/data/sleepstudy.csv with ``Reaction ~ Days + (Days | Subject)``);
* ``demo``: the whole ``impactglm demo`` command (1M rows).

Columns: ``import`` (seconds to import impactglm in the process), ``1st fit`` (the first
``ig.glm(...)`` / ``ig.lmm(...)`` + ``.fit()`` in the process: design, compilation or
cache loading, fit), ``2nd fit`` (the same call again in the same process: the warm
fit), ``1st - 2nd`` (what the first call costs beyond the warm fit), ``process``
(the whole process's wall clock, interpreter start and data generation included).

``--kernels``: one more fresh process per model kind with an empty cache, recording
numba's ``numba:compile`` events: per kernel (dispatcher) the number of signatures
compiled and the seconds spent, inclusive and exclusive of the kernels it calls
(a kernel inlined into another is compiled inside it).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _runner import emit, load_line, run_child  # noqa: E402

CHECKOUT = Path(__file__).resolve().parents[1]
SCENARIOS = ["import deps", "import impactglm", "binary", "multinomial", "lmm", "demo"]
FIT_ROWS = 100_000


def insteval_csv() -> Path | None:
    """shared/data/InstEval.csv in a directory above the checkout, as bench_lmm.py looks."""
    for parent in CHECKOUT.parents:
        p = parent / "shared" / "data" / "InstEval.csv"
        if p.exists():
            return p
    return None


# --------------------------------------------------------------------------- workers

def _fit_call(kind: str):
    """(data, a function doing the user's call) for a model kind."""
    import pandas as pd

    import impactglm as ig

    if kind == "binary":
        df = ig.make_ratings(FIT_ROWS, 606, 370, kind="binary", covariates=False, seed=0).data
        return lambda: ig.glm("y ~ ^UserID + ^MovieID", df, family="binomial").fit()
    if kind == "multinomial":
        from impactglm.demo import demo_sizes

        users, movies = demo_sizes(FIT_ROWS)
        df = ig.make_ratings(FIT_ROWS, users, movies, kind="multinomial", seed=0).data
        return lambda: ig.glm("Rating ~ ^UserID + ^MovieID + age + C(genre)", df,
                              family="multinomial").fit()
    if kind == "lmm":
        csv = insteval_csv()
        if csv is not None:
            df = pd.read_csv(csv)
            return lambda: ig.lmm("y ~ service + (1 | s) + (1 | d)", df).fit(reml=False)
        df = pd.read_csv(CHECKOUT / "tests" / "data" / "sleepstudy.csv")
        return lambda: ig.lmm("Reaction ~ Days + (Days | Subject)", df).fit()
    raise SystemExit(f"unknown kind {kind!r}")


def worker_fit(kind: str) -> dict:
    t0 = time.perf_counter()
    import impactglm as ig
    ig.glm, ig.lmm                                   # noqa: B018 - the lazy attributes
    t1 = time.perf_counter()
    call = _fit_call(kind)
    t2 = time.perf_counter()
    call()
    t3 = time.perf_counter()
    call()
    t4 = time.perf_counter()
    return {"import": t1 - t0, "data": t2 - t1, "first": t3 - t2, "second": t4 - t3}


def worker_import(what: str) -> dict:
    t0 = time.perf_counter()
    if what == "deps":
        import numba  # noqa: F401
        import pandas  # noqa: F401
        import patsy  # noqa: F401
        import scipy.linalg  # noqa: F401
        import scipy.optimize  # noqa: F401
    else:
        import impactglm as ig
        ig.glm                                       # noqa: B018
    return {"import": time.perf_counter() - t0}


def worker_kernels(kind: str) -> dict:
    """Compile events of the first call of ``kind`` (empty cache): per dispatcher."""
    from numba.core import event

    import impactglm as ig
    ig.glm, ig.lmm                                   # noqa: B018
    call = _fit_call(kind)
    with event.install_recorder("numba:compile") as rec:
        t = time.perf_counter()
        call()
        total = time.perf_counter() - t
    stats: dict[str, list] = {}
    stack: list[list] = []
    for ts, ev in rec.buffer:
        disp = ev.data["dispatcher"]
        name = f"{disp.py_func.__module__}.{disp.py_func.__qualname__}"
        if ev.status == event.EventStatus.START:
            stack.append([name, ts, 0.0])
        else:
            name0, start, children = stack.pop()
            inclusive = ts - start
            s = stats.setdefault(name0, [0, 0.0, 0.0])
            s[0] += 1
            s[1] += inclusive
            s[2] += inclusive - children
            if stack:
                stack[-1][2] += inclusive
    return {"total": total, "kernels": stats}


# --------------------------------------------------------------------------- parent

def _run(args_list: list[str], cache: str, timeout: float) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    return run_child([sys.executable, os.path.abspath(__file__), *args_list], env=env,
                     timeout=timeout)


def _demo_cmd() -> list[str]:
    code = "import sys; from impactglm.cli import main; sys.exit(main(['demo']))"
    exe = shutil.which("impactglm")
    return [exe, "demo"] if exe else [sys.executable, "-c", code]


def run_demo(cache: str, timeout: float) -> dict:
    import subprocess

    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    t = time.perf_counter()
    proc = subprocess.run(_demo_cmd(), env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t
    times = [ln for ln in proc.stdout.splitlines() if ln.startswith("times:")]
    if proc.returncode:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1], "wall_s": wall}
    return {"wall_s": wall, "note": times[-1] if times else ""}


def _f(v, fmt=".2f"):
    return "" if v is None else format(v, fmt)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default=",".join(SCENARIOS),
                    help="comma separated subset of: " + ", ".join(SCENARIOS))
    ap.add_argument("--kernels", action="store_true", help="also compile seconds per kernel")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        what, _, kind = args.worker.partition(":")
        emit({"fit": worker_fit, "import": worker_import, "kernels": worker_kernels}[what](kind))
        return 0
    only = [s.strip() for s in args.only.split(",")]
    if set(only) - set(SCENARIOS):
        ap.error(f"unknown scenarios; choose from {SCENARIOS}")
    rows = []
    root = tempfile.mkdtemp(prefix="impactglm_first_run_")
    try:
        for sc in SCENARIOS:
            if sc not in only:
                continue
            cache = tempfile.mkdtemp(dir=root)
            for state in ("empty cache", "warm cache"):
                if sc == "demo":
                    r = run_demo(cache, args.timeout)
                elif sc.startswith("import"):
                    r = _run(["--worker", "import:" + ("deps" if sc == "import deps" else "ig")],
                             cache, args.timeout)
                else:
                    r = _run(["--worker", "fit:" + sc], cache, args.timeout)
                rows.append((sc, state, r))
                print(f"{sc} ({state}): {r}", file=sys.stderr, flush=True)
        kernel_tables = []
        if args.kernels:
            for kind in ("binary", "multinomial", "lmm"):
                if kind in only:
                    cache = tempfile.mkdtemp(dir=root)
                    kernel_tables.append((kind, _run(["--worker", "kernels:" + kind], cache,
                                                     args.timeout)))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    lmm = "InstEval y ~ service + (1|s) + (1|d)" if insteval_csv() else "sleepstudy"
    print(f"\nfirst run: fresh processes, empty then warm numba cache; binary / multinomial "
          f"on {FIT_ROWS:,} rows, lmm {lmm}, demo 1M rows; {load_line()}")
    head = (f"{'scenario':<18}{'cache':<13}{'import':>8}{'1st fit':>9}{'2nd fit':>9}"
            f"{'1st-2nd':>9}{'process':>9}  notes")
    print(head)
    print("-" * len(head))
    for sc, state, r in rows:
        if "error" in r:
            print(f"{sc:<18}{state:<13}  error: {r['error']}")
            continue
        first, second = r.get("first"), r.get("second")
        diff = first - second if first is not None else None
        print(f"{sc:<18}{state:<13}{_f(r.get('import')):>8}{_f(first):>9}{_f(second):>9}"
              f"{_f(diff):>9}{r['wall_s']:9.2f}  {r.get('note', '')}")
    for kind, r in kernel_tables:
        if "error" in r:
            print(f"\n{kind}: kernel compile recording failed: {r['error']}")
            continue
        ks = sorted(r["kernels"].items(), key=lambda kv: -kv[1][2])
        total = sum(v[2] for _, v in ks)
        print(f"\ncompile seconds per kernel, first {kind} fit with an empty cache "
              f"(fit {r['total']:.1f} s, compiling {total:.1f} s)")
        print(f"{'kernel':<60}{'sigs':>5}{'exclusive s':>12}{'inclusive s':>12}")
        for name, (n, inc, exc) in ks:
            print(f"{name:<60}{n:>5}{exc:12.2f}{inc:12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

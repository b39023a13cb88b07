"""Make the three diagnostic plots shown in the README (docs/*.png).

A logistic model with user and movie factors on generated MovieLens-shaped data:

    python examples/make_doc_plots.py        # writes docs/effects.png, convergence.png,
                                             #        calibration.png
"""
from __future__ import annotations

import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import impactglm as ig  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs"


def main(out: Path = DOCS, n_rows: int = 40_000) -> dict[str, Path]:
    t0 = time.perf_counter()
    sim = ig.make_ratings(n_rows, 800, 500, kind="binary", seed=11)
    train, test = sim.data.iloc[: n_rows * 3 // 4], sim.data.iloc[n_rows * 3 // 4:]
    res = ig.glm("y ~ age + C(genre) + ^UserID + ^MovieID", train, family="binomial").fit()
    print(f"fit {len(train)} rows in {time.perf_counter() - t0:.1f} s; prior sd {res.prior_sd}")
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, ax in [("effects", res.plot_effects("MovieID", n=12)),
                     ("convergence", res.plot_convergence()),
                     ("calibration", res.plot_calibration(test, bins=10))]:
        path = out / f"{name}.png"
        ax.figure.savefig(path, dpi=100, bbox_inches="tight")
        paths[name] = path
        print("wrote", path)
    return paths


if __name__ == "__main__":
    main()

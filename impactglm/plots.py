"""Diagnostic plots of fitted models (matplotlib, an optional extra).

* :func:`plot_effects`      caterpillar plot of the level effects of one ``^g`` factor,
                            with intervals effect +- z * se (posterior sd);
* :func:`plot_convergence`  the solver's path: max |gradient| and the objective gap
                            f_k - f_final per iteration (from ``res.iteration_log``);
* :func:`plot_calibration`  binned mean predicted probability against the observed
                            frequency (binomial fits), with binomial intervals.

Each takes a results object and returns the matplotlib ``Axes`` it drew on (pass
``ax=`` to draw into your own figure).  Results objects expose them as methods
(``res.plot_effects("g")``...).  ``pip install impactglm[plot]`` for matplotlib.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from .errors import ModelError

__all__ = ["plot_effects", "plot_convergence", "plot_calibration"]


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - exercised only without matplotlib
        raise ImportError("impactglm plots need matplotlib: pip install 'impactglm[plot]'"
                          ) from exc
    return plt


def _axes(ax, figsize):
    if ax is not None:
        return ax
    plt = _pyplot()
    _, ax = plt.subplots(figsize=figsize)
    return ax


def _effect_columns(frame: pd.DataFrame, klass: int | None) -> tuple[str, str]:
    if "effect" in frame.columns:
        return "effect", "se"
    if klass is None:
        raise ModelError("multinomial level effects: choose the class with klass=<index>")
    return f"effect[{klass}]", f"se[{klass}]"


def plot_effects(res, name: str, n: int = 15, level: float = 0.95, klass: int | None = None,
                 levels: Any = None, ax=None):
    """Caterpillar plot of the level effects of ``^name``.

    Shows the ``n`` largest and ``n`` smallest posterior-mode effects a[l] (or the
    given ``levels``), each with the interval a[l] +- z se[l], z = Phi^-1((1+level)/2),
    and the row count of the level in its label.  Intervals are wide for rare levels
    and shrunk towards 0: that is the prior at work.
    """
    frame = res.level_effects(name)
    col, se_col = _effect_columns(frame, klass)
    frame = frame.sort_values(col)
    if levels is not None:
        chosen = frame.loc[list(levels)].sort_values(col)
    elif len(frame) > 2 * n:
        chosen = pd.concat([frame.iloc[:n], frame.iloc[-n:]])
    else:
        chosen = frame
    z = stats.norm.ppf(0.5 + level / 2.0)
    ax = _axes(ax, (6.5, max(3.0, 0.22 * len(chosen) + 1.2)))
    pos = np.arange(len(chosen))
    eff, se = chosen[col].to_numpy(), chosen[se_col].to_numpy()
    ax.errorbar(eff, pos, xerr=z * se, fmt="o", ms=3.5, color="C0", ecolor="0.55",
                elinewidth=1, capsize=0)
    ax.axvline(0.0, color="0.3", lw=0.8, ls="--")
    ax.set_yticks(pos)
    ax.set_yticklabels([f"{lv} (n={int(c)})" for lv, c in zip(chosen.index, chosen["n"])],
                       fontsize=7)
    if levels is None and len(frame) > 2 * n:
        ax.axhline(n - 0.5, color="0.7", lw=0.8)
    shown = "" if len(chosen) == len(frame) else f" (top and bottom {n} of {len(frame)})"
    ax.set_title(f"level effects of ^{name.lstrip('^')}{shown}", fontsize=9)
    ax.set_xlabel(f"effect on the linear predictor, {int(round(level * 100))}% interval")
    return ax


def solve_starts(log: pd.DataFrame, obj_col: str | None) -> np.ndarray:
    """Row indices where a new solve starts in a log of several solves.

    With ``prior_sd="auto"`` the log holds the solves of the tau search one after
    another.  Each solve logs its starting state with the iteration number it starts
    from, so a row whose iteration number does not increase starts a solve; it starts a
    solve at a *new* tau when its objective differs from the previous row's (a resumed
    solve at the same tau starts exactly where the last one stopped).
    """
    if obj_col is None or len(log) < 2:
        return np.array([0])
    f = log[obj_col].to_numpy(dtype=float)
    if "iteration" in log:
        it = log["iteration"].to_numpy()
        restart = np.diff(it) <= 0
    else:
        restart = np.ones(len(f) - 1, dtype=bool)
    changed = np.abs(np.diff(f)) > 1e-12 * np.maximum(np.abs(f[1:]), 1.0)
    if "iteration" not in log:
        changed &= np.diff(f) > 0          # within one solve the objective never rises
    return np.r_[0, np.flatnonzero(restart & changed) + 1]


def plot_convergence(res, solve: str = "last", ax=None):
    """Max |penalised gradient| (left, log scale) and the objective gap f_k - f_final
    (right, log scale) per iteration, from ``res.iteration_log``.

    ``solve="last"`` (default) shows the final solve only (with ``prior_sd="auto"`` the
    log also holds the solves of the tau search, each at another tau, so their
    objectives are not comparable); ``solve="all"`` shows the gradient over the whole
    log with a dotted line where each solve starts.  IRLS fits log the deviance and its
    relative change instead; they are plotted in the same places.  Returns the left
    Axes; the right one is ``ax.right_ax``.
    """
    if solve not in ("last", "all"):
        raise ModelError(f"solve must be 'last' or 'all', not {solve!r}")
    log = res.iteration_log
    if log is None or len(log) == 0:
        raise ModelError("this fit has no iteration log to plot")
    grad_col = next((c for c in ("max_grad", "rel_change", "max_step") if c in log), None)
    obj_col = next((c for c in ("objective", "deviance") if c in log), None)
    starts = solve_starts(log, obj_col)
    if solve == "last":
        log = log.iloc[starts[-1]:]
    x = np.arange(len(log))
    ax = _axes(ax, (6.5, 3.8))
    if grad_col is not None:
        g = np.abs(log[grad_col].to_numpy(dtype=float))
        ax.semilogy(x, np.where(g > 0, g, np.nan), "o-", color="C0", ms=3,
                    label=grad_col.replace("_", " "))
        ax.set_ylabel(grad_col.replace("_", " ") + " (log)", color="C0")
    ax.set_xlabel("iteration" + (" (all solves)" if solve == "all" else ""))
    if solve == "all":
        for s in starts[1:]:
            ax.axvline(s - 0.5, color="0.6", lw=0.6, ls=":")
    elif obj_col is not None:
        f = log[obj_col].to_numpy(dtype=float)
        gap = f - np.nanmin(f)
        right = ax.twinx()
        right.semilogy(x, np.where(gap > 0, gap, np.nan), "s--", color="C1", ms=3,
                       label=f"{obj_col} - final")
        right.set_ylabel(f"{obj_col} - min (log)", color="C1")
        ax.right_ax = right
    searched = f" after {len(starts) - 1} solves of the tau search" if len(starts) > 1 else ""
    ax.set_title(("convergence of the final solve" + searched) if solve == "last"
                 else f"convergence, {len(starts)} solves", fontsize=9)
    ax.grid(True, which="major", alpha=0.3)
    return ax


def plot_calibration(res, data, bins: int = 10, level: float = 0.95, ax=None):
    """Calibration of a binomial fit on ``data`` (training or new rows).

    Rows are grouped into ``bins`` quantile bins of the predicted probability; each
    point is (mean predicted, observed frequency) of a bin, with a Wilson interval for
    the observed frequency.  A calibrated model lies on the diagonal.
    """
    if getattr(res.family, "name", None) != "binomial":
        raise ModelError("plot_calibration needs a binomial fit")
    p = np.asarray(res.predict(data), dtype=float)
    nd = res.spec.transform(data, response=True)
    y = np.asarray(nd.y, dtype=float)
    if y.shape != p.shape:
        raise ModelError("the data must hold the response to plot calibration")
    edges = np.unique(np.quantile(p, np.linspace(0, 1, bins + 1)))
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, max(len(edges) - 2, 0))
    z = stats.norm.ppf(0.5 + level / 2.0)
    rows = []
    for b in np.unique(which):
        sel = which == b
        k, m = y[sel].sum(), sel.sum()
        phat = k / m
        centre = (phat + z * z / (2 * m)) / (1 + z * z / m)
        half = z * np.sqrt(phat * (1 - phat) / m + z * z / (4 * m * m)) / (1 + z * z / m)
        rows.append((p[sel].mean(), phat, centre - half, centre + half, m))
    tab = np.array(rows)
    ax = _axes(ax, (4.8, 4.6))
    ax.plot([0, 1], [0, 1], color="0.5", ls="--", lw=0.8, label="perfect calibration")
    ax.errorbar(tab[:, 0], tab[:, 1], yerr=[tab[:, 1] - tab[:, 2], tab[:, 3] - tab[:, 1]],
                fmt="o-", ms=4, color="C0", capsize=2, label="observed frequency")
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed frequency")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(f"calibration ({len(p)} rows, {len(tab)} bins)", fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    ax.calibration_table = pd.DataFrame(tab, columns=["predicted", "observed", "lower",
                                                      "upper", "n"])
    return ax

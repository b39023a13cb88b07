"""What the GLM and multinomial results classes share: frozen arrays, the scalar statistics,
the ^-factor accessors and the summary table."""
from __future__ import annotations

import dataclasses
import warnings
from typing import Mapping

import numpy as np
import pandas as pd


from .._util import user_stacklevel
from ..containers import FactorEffects
from ..errors import UnseenLevelWarning


# FitOutput.extra entries shown as the convergence certificate of ^ fits
CERTIFICATE_KEYS = ("max_grad", "max_step", "rel_obj_change", "n_passes", "grad_tol")


def frozen_array(a) -> np.ndarray:
    a = np.array(a, dtype=np.float64, copy=True)
    a.flags.writeable = False
    return a



class LazyMap(Mapping):
    """A read-only mapping: the ``eager`` entries plus those of ``compute()``, which runs once,
    on the first access of a key not in ``eager`` (or of the whole mapping).

    The results classes keep statistics and training arrays that cost passes over the
    rows (deviance, log-likelihood, fitted values) in one, so a fit does not pay for
    what nobody reads; the values are those an eager computation gives.
    """

    def __init__(self, eager: Mapping, compute=None):
        self._d = dict(eager)
        self._compute = compute

    def _fill(self) -> None:
        if self._compute is not None:
            compute, self._compute = self._compute, None
            self._d.update(compute())

    def __getitem__(self, key):
        if key not in self._d:
            self._fill()
        return self._d[key]

    def __iter__(self):
        self._fill()
        return iter(self._d)

    def __len__(self) -> int:
        self._fill()
        return len(self._d)


def stat_property(name: str) -> property:
    """A read-only property returning ``self._stats[name]`` (the results' scalar statistics)."""
    return property(lambda self: self._stats[name], doc=f"{name} (see module docstring)")


class Summary:
    """A printable summary: ``str(s)`` is the text; ``header`` and ``coefficients`` are data."""

    def __init__(self, text: str, header: list[tuple[str, str]], coefficients: pd.DataFrame):
        self.text = text
        self.header = header
        self.coefficients = coefficients

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return self.text

    def as_text(self) -> str:
        return self.text


class ScalarStats:
    """The scalar statistics every results class reads from its ``_stats`` dict."""

    llf = stat_property("llf")
    deviance = stat_property("deviance")
    null_deviance = stat_property("null_deviance")
    aic = stat_property("aic")
    bic = stat_property("bic")
    nobs = stat_property("nobs")
    df_model = stat_property("df_model")
    df_resid = stat_property("df_resid")
    converged = stat_property("converged")
    n_iter = stat_property("n_iter")
    n_dropped = stat_property("n_dropped")
    method = stat_property("method")


def frozen_effects(e: FactorEffects) -> FactorEffects:
    """A copy of e whose arrays are read-only."""
    arrays = {}
    for key in ("levels", "counts", "effect", "se"):
        v = getattr(e, key)
        if v is None:                       # se left to first use
            continue
        a = np.array(v, copy=True)
        a.flags.writeable = False
        arrays[key] = a
    return dataclasses.replace(e, **arrays)


def format_number(x) -> str:
    x = float(x)
    return str(int(x)) if x.is_integer() else f"{x:.2f}"


class FactorAccess:
    """What every results class with ``^`` factors shares: the fitted effects of each factor
    (``self._effects``, FactorEffects) and the unseen-level counts of the last ``predict()``
    (``self._last_unseen``)."""

    @property
    def _effects(self) -> tuple[FactorEffects, ...]:
        """The effects with their posterior se (computed on first access when the fit left
        them to first use: ``self.__dict__["_pending_se"]``, a callable giving the se arrays)."""
        d = self.__dict__
        pending = d.get("_pending_se")
        if pending is not None:
            d["_effects_"] = tuple(frozen_effects(dataclasses.replace(e, se=se))
                                   for e, se in zip(d["_effects_"], pending()))
            d["_pending_se"] = None
        return d["_effects_"]

    @property
    def _point_effects(self) -> tuple[FactorEffects, ...]:
        """The effects for prediction (their se may still be pending)."""
        return self.__dict__["_effects_"]

    @property
    def factor_effects(self) -> tuple[FactorEffects, ...]:
        return self._effects

    @property
    def prior_sd(self) -> dict[str, float | None]:
        """Prior sd tau of each ^ factor (given or estimated)."""
        return {e.name: e.tau for e in self._point_effects}

    @property
    def last_unseen(self) -> dict[str, int]:
        """Rows with a level unseen at fit time, per ^ factor, in the last predict()."""
        return dict(self._last_unseen)

    def _record_unseen(self, unseen: Mapping[str, int]) -> None:
        self._last_unseen.clear()
        self._last_unseen.update({str(k).lstrip("^"): int(v) for k, v in unseen.items()})
        msg = ", ".join(f"{v} row(s) of ^{k}" for k, v in self._last_unseen.items() if v)
        if msg:
            warnings.warn(f"levels unseen at fit time get effect 0 (the prior mean): {msg}",
                          UnseenLevelWarning, stacklevel=user_stacklevel())

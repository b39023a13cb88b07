"""The prior of the ``^`` factors' level effects, a_k[l] ~ N(0, tau_k^2): one resolver for
every family.

``prior_sd`` may be "auto" (tau estimated by empirical Bayes), a positive number, None (no
prior: a ridge of precision :data:`NO_PRIOR_RIDGE` keeps separated levels finite), a list with
one such entry per factor, or a dict by factor name ("^" optional) whose missing names mean
None (no prior), as in :func:`impactglm.glm`.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np


from ..errors import ModelError

__all__ = ["NO_PRIOR_RIDGE", "resolve_prior", "prior_precisions"]

NO_PRIOR_RIDGE = 1e-5           # prior precision used when prior_sd is None


def resolve_prior(prior_sd: Any, names: Sequence[str]) -> list[float | str | None]:
    """One entry per factor: a positive float tau, None (no prior) or "auto"."""
    K = len(names)
    if isinstance(prior_sd, str):
        entries = [prior_sd] * K
    elif isinstance(prior_sd, Mapping):
        keys = {str(k).lstrip("^"): v for k, v in prior_sd.items()}
        unknown = sorted(set(keys) - set(names))
        if unknown:
            raise ModelError(f"prior_sd names factors that are not ^ terms: {unknown}")
        entries = [keys.get(nm) for nm in names]
    elif isinstance(prior_sd, (list, tuple, np.ndarray)):
        entries = list(prior_sd)
        if len(entries) != K:
            raise ModelError(f"prior_sd has {len(entries)} entries for {K} ^ factors")
    else:
        entries = [prior_sd] * K
    out: list[float | str | None] = []
    for nm, e in zip(names, entries):
        if e is None or (isinstance(e, str) and e == "auto"):
            out.append(e)
            continue
        try:
            v = float(e)
        except (TypeError, ValueError):
            raise ModelError(f"prior_sd for ^{nm} must be a positive number, None or 'auto', "
                             f"not {e!r}") from None
        if not (v > 0 and math.isfinite(v)):
            raise ModelError(f"prior_sd for ^{nm} must be positive and finite, not {e!r}")
        out.append(v)
    return out


def prior_precisions(entries: Sequence[float | None]) -> np.ndarray:
    """lam_k = 1 / tau_k^2 per factor (None: the ridge :data:`NO_PRIOR_RIDGE`)."""
    return np.array([NO_PRIOR_RIDGE if t is None else 1.0 / float(t) ** 2 for t in entries],
                    dtype=np.float64)

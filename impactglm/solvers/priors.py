"""TODO docstring."""
from __future__ import annotations

import math
import numpy as np


from ..errors import ModelError


NO_PRIOR_RIDGE = 1e-5           # prior precision used when prior_sd is None


def prior_precisions(prior_sd, K: int, names) -> tuple[list[float | None], np.ndarray]:
    if isinstance(prior_sd, (int, float)) or prior_sd is None:
        prior_sd = [prior_sd] * K
    if isinstance(prior_sd, dict):
        prior_sd = [prior_sd.get(nm) for nm in names]
    taus = list(prior_sd)
    if len(taus) != K:
        raise ModelError(f"prior_sd must have one entry per factor ({K}), got {len(taus)}")
    lam = np.empty(K)
    for k, t in enumerate(taus):
        if t is None:
            lam[k] = NO_PRIOR_RIDGE
        else:
            t = float(t)
            if not (t > 0 and math.isfinite(t)):
                raise ModelError(f"prior_sd for factor {names[k]!r} must be a positive number or None, got {t!r}")
            lam[k] = 1.0 / t ** 2
            taus[k] = t
    return taus, lam

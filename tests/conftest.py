"""Shared test configuration: the tolerance tiers (DESIGN.md section 6) and data paths.

Every test compares against an independent reference at one of these tiers;
change a tier here, never inline in a test.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import settings

# CI (CI=true) replays a fixed sequence of fuzz examples, so a submission is judged on
# the same cases it was checked on; developers' runs draw new examples every time.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

DATA = Path(__file__).parent / "data"

# Tolerance tiers
KERNEL_RTOL = 1e-12          # numba kernel vs NumPy twin
OBJECTIVE_RTOL = 1e-10       # objective at fixed parameters vs an independent computation
COEF_RTOL_STATSMODELS = 1e-8 # coefficients vs statsmodels on the same formula
COEF_RTOL_R = 1e-6           # coefficients vs R glm()
SE_RTOL_R = 1e-5             # standard errors vs R glm()
EXACT_RTOL = 1e-6            # ^ effects vs an independent exact solver
LMM_THETA_ATOL = 1e-4        # LMM theta vs lme4
LMM_DEVIANCE_ATOL = 1e-3     # REML criterion / deviance vs lme4
LMM_FIXEF_RTOL = 1e-6        # LMM fixed effects vs lme4
LMM_SE_RTOL = 1e-4           # LMM standard errors vs lme4
LMM_BLUP_ATOL = 1e-4         # conditional modes vs lme4
GLMM_PRIOR_SD_RTOL = 1e-3    # prior_sd='auto' (binomial/poisson) vs glmer(nAGQ=0)'s sds


def read_csv(name: str) -> pd.DataFrame:
    """A data set from tests/data (copies of lme4's public data sets)."""
    return pd.read_csv(DATA / name)


@pytest.fixture(scope="session")
def lme4_reference() -> dict:
    """Frozen lme4 1.1-31 results (tests/data/lme4.json, made by make_lme4.R)."""
    return json.loads((DATA / "lme4.json").read_text())["cases"]

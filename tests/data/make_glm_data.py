"""Generate tests/data/glm_data.csv (fixed seed); make_glm_reference.R fits it with R's glm.

    python3 tests/data/make_glm_data.py && Rscript tests/data/make_glm_reference.R
"""
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import norm

rng = np.random.default_rng(20261121)
n = 300
x1 = rng.normal(0, 1, n)
x2 = rng.normal(0, 1, n)
x3 = rng.uniform(0.5, 5.0, n)
k = rng.choice(["a", "b", "c"], n, p=[0.4, 0.35, 0.25])
kb, kc = (k == "b").astype(float), (k == "c").astype(float)
w = rng.integers(1, 5, n).astype(float)
exposure = rng.uniform(0.5, 3.0, n)


def expit(e):
    return 1 / (1 + np.exp(-e))


mu_g = 1 + 0.5 * x1 - 0.8 * kb + 0.3 * kc + 0.4 * x1 * kb + 0.2 * x2**2
mu_gl = np.exp(1.0 + 0.3 * x1 - 0.2 * x2)
p_logit = expit(-0.3 + 0.8 * x1 + 0.5 * np.log(x3) - 0.6 * kb + 0.4 * kc)
p_probit = norm.cdf(0.2 + 0.7 * x1 - 0.4 * x2)
p_cloglog = 1 - np.exp(-np.exp(-0.5 + 0.6 * x1 + 0.3 * np.log(x3)))
trials = rng.integers(1, 12, n)
p_trials = expit(0.4 - 0.9 * x1 + 0.5 * kc)
mu_pois = exposure * np.exp(0.3 + 0.4 * x1 - 0.5 * kb + 0.2 * kc)
mu_ginv = 1 / (0.5 + 0.1 * x3 + 0.05 * (x1 > 0))
mu_glog = np.exp(0.5 + 0.3 * x1 - 0.1 * x2**2)
shape = 3.0

data = pd.DataFrame({
    "x1": x1, "x2": x2, "x3": x3, "k": k, "w": w, "exposure": exposure,
    "logexp": np.log(exposure),
    "y_gauss": mu_g + rng.normal(0, 0.7, n),
    "y_gausslog": mu_gl + rng.normal(0, 0.3, n),
    "y_logit": (rng.uniform(size=n) < p_logit).astype(int),
    "y_probit": (rng.uniform(size=n) < p_probit).astype(int),
    "y_cloglog": (rng.uniform(size=n) < p_cloglog).astype(int),
    "trials": trials,
    "prop": rng.binomial(trials, p_trials) / trials,
    "count": rng.poisson(mu_pois),
    "y_gamma_inv": rng.gamma(shape, mu_ginv / shape),
    "y_gamma_log": rng.gamma(shape, mu_glog / shape),
    "outcome": np.where(rng.uniform(size=n) < expit(0.5 * x1 - 0.2), "yes", "no"),
})
data["w0"] = w * (rng.uniform(size=n) > 0.1)          # prior weights with zeros
assert (data["y_gausslog"] > 0).all()
data.to_csv(Path(__file__).with_name("glm_data.csv"), index=False, float_format="%.17g")


# Boundary cases (found by search): IRLS must halve steps that leave the valid range,
# as R's glm.fit does ("algorithm stopped at boundary value").
boundary = {}
for seed, col in ((146, "binomial_log"), (200, "poisson_identity")):
    r = np.random.default_rng(seed)
    xb = r.uniform(0, 3, 40)
    y_bin = (r.uniform(size=40) < np.exp(-2 + 0.6 * xb)).astype(int)
    y_pois = r.poisson(0.2 + 1.0 * xb)
    boundary[f"x_{col}"] = xb
    boundary[f"y_{col}"] = y_bin if col.startswith("binomial") else y_pois
pd.DataFrame(boundary).to_csv(Path(__file__).with_name("glm_boundary.csv"), index=False,
                              float_format="%.17g")

"""A plain GLM end to end: simulate data, fit, read the summary, predict, save, load.

    python3 examples/glm_basic.py
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

import impactglm as ig


def make_data(n: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Insurance-style claim counts: exposure offset, a categorical region, a curved age effect."""
    rng = np.random.default_rng(seed)
    age = rng.uniform(18, 80, n)
    region = rng.choice(["north", "south", "east", "west"], n)
    exposure = rng.uniform(0.2, 1.0, n)
    effect = {"north": 0.0, "south": 0.3, "east": -0.2, "west": 0.1}
    eta = -1.5 + 0.02 * (age - 45) + 0.0008 * (age - 45) ** 2 + np.vectorize(effect.get)(region)
    claims = rng.poisson(exposure * np.exp(eta))
    return pd.DataFrame({"claims": claims, "age": age, "region": region, "exposure": exposure,
                         "log_exposure": np.log(exposure)})


def main() -> None:
    data = make_data()
    model = ig.glm("claims ~ center(age) + I(center(age)**2) + C(region)", data,
                   family="poisson", offset="log_exposure")
    res = model.fit()
    print(res.summary())
    print("\n95% confidence intervals:\n", res.conf_int())

    new = pd.DataFrame({"age": [25.0, 45.0, 70.0], "region": ["south", "north", "west"],
                        "exposure": 1.0, "log_exposure": 0.0})
    print("\nexpected claims per unit exposure:\n", res.predict(new))

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "claims_model.json"
        res.save(path)
        again = ig.load(path)
        same = np.array_equal(again.predict(new).to_numpy(), res.predict(new).to_numpy())
        print(f"\nsaved to {path.name} and loaded back; identical predictions: {same}")


if __name__ == "__main__":
    main()

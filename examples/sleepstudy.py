"""Linear mixed models on lme4's sleepstudy data, the lme4 way.

    python examples/sleepstudy.py

Reaction time over 10 days of sleep deprivation for 18 subjects: a random intercept,
then correlated random intercepts and slopes (Days | Subject), compared by a
likelihood-ratio test on ML fits, with conditional modes and predictions.
"""
from pathlib import Path

import pandas as pd

import impactglm as ig

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "sleepstudy.csv"


def main() -> None:
    sleep = pd.read_csv(DATA)

    # random intercept and random slope by subject, REML (lme4's default)
    slopes = ig.lmm("Reaction ~ Days + (Days | Subject)", sleep).fit()
    print(slopes.summary())
    print("\ntheta:", slopes.theta.round(5).to_dict())

    # conditional modes (BLUPs) with their conditional SDs, per subject
    print("\nrandom effects by subject (first 5):")
    print(slopes.ranef("Subject").head().round(3))

    # likelihood-ratio test of the random slope: ML fits of both models
    ri_ml = ig.lmm("Reaction ~ Days + (1 | Subject)", sleep).fit(reml=False)
    rs_ml = ig.lmm("Reaction ~ Days + (Days | Subject)", sleep).fit(reml=False)
    chisq = ri_ml.deviance - rs_ml.deviance
    print(f"\nLRT random slope: deviance {ri_ml.deviance:.2f} -> {rs_ml.deviance:.2f}, "
          f"chi^2 = {chisq:.2f} on 2 df; AIC {ri_ml.aic:.1f} vs {rs_ml.aic:.1f}")

    # predictions for a known subject and for a new one (random effect 0)
    new = pd.DataFrame({"Days": [5, 5], "Subject": [308, 999]})
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ig.errors.UnseenLevelWarning)
        print("\npredicted reaction on day 5 (subject 308, unseen subject 999):",
              slopes.predict(new).round(2).tolist())


if __name__ == "__main__":
    main()

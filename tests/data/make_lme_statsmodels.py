"""Copy statsmodels' lmer reference cases into tests/data (run once; the tests never need statsmodels).

Source: statsmodels 0.15.0, statsmodels/regression/tests/results/: lme00.csv-lme11.csv
(columns groups, endog, exog_fe_*, exog_re_*) and lme_r_results.py, made by lme_results.R
there with lme4::lmer:

    drf (dependent random effects):   endog ~ 0 + fe... + (0 + re... | groups)
    irf (independent random effects): endog ~ 0 + fe... + (0 + re_0 | groups) + (0 + re_1 | groups) ...

for REML = FALSE ("ml") and TRUE ("reml"): coef = fixef, vcov, cov_re = VarCorr (drf: the
r x r matrix; irf: its diagonal), scale = sigma^2, loglike = logLik, and (drf only)
ranef_mean / ranef_condvar = the first group's conditional mode and its condVar
(postVar) matrix.  Values are as R2nparray printed them (7 significant digits).
"""
import json
import shutil
from pathlib import Path

import numpy as np
import statsmodels
from statsmodels.regression.tests.results import lme_r_results as R

src = Path(statsmodels.__file__).parent / "regression" / "tests" / "results"
out = Path(__file__).parent
for f in sorted(src.glob("lme[0-9][0-9].csv")):
    shutil.copy(f, out / "lme_statsmodels" / f.name)
ref = {"source": f"statsmodels {statsmodels.__version__} regression/tests/results/lme_r_results.py "
                 "(lme4::lmer via lme_results.R)"}
for name in dir(R):
    v = getattr(R, name)
    if isinstance(v, np.ndarray):
        ref[name] = np.asarray(v).tolist()
(out / "lme_statsmodels.json").write_text(json.dumps(ref, indent=0, sort_keys=True) + "\n")

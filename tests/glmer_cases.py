"""The glmer reference cases (tests/data/glmer.json, made by tests/data/make_glmer.R) as
impactglm calls: one definition serves tests/test_glmer_reference.py and
benchmarks/compare_glmer.py.

Each case is ``ig.glm(formula, data, family=family, prior_sd="auto", **kwargs).fit()`` on the
CSV the R script fitted; ``call_text(name)`` spells that call exactly as the JSON's
``python_call`` field does (a test keeps the two in step).  impactglm's ``prior_sd[g]`` is
glmer's random-intercept sd of ``(1 | g)`` at nAGQ = 0.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

DATA = Path(__file__).parent / "data"
REFERENCE = DATA / "glmer.json"


@dataclass(frozen=True)
class GlmerCase:
    frame: str                    # the data frame's name in python_call
    csv: str                      # file in tests/data
    formula: str
    family: str
    kwargs: dict = field(default_factory=dict)


CASES = {
    "cbpp": GlmerCase("cbpp", "cbpp.csv", "I(incidence / size) ~ C(period) + ^herd", "binomial",
                      {"weights": "size"}),
    "verbagg": GlmerCase("verbagg", "glmer_verbagg.csv", "r2 ~ ^id + ^item", "binomial"),
    "verbagg_fixed": GlmerCase("verbagg", "glmer_verbagg.csv",
                               "r2 ~ Anger + Gender + btype + situ + ^id + ^item", "binomial"),
    "grouseticks": GlmerCase("grouseticks", "glmer_grouseticks.csv",
                             "TICKS ~ C(YEAR) + cHEIGHT + ^BROOD + ^INDEX + ^LOCATION", "poisson"),
    "movielens": GlmerCase("movielens", "glmer_movielens.csv.gz", "y ~ ^userId + ^movieId", "binomial"),
}


def reference() -> dict:
    """The whole glmer.json (R and lme4 versions, and ``cases``)."""
    return json.loads(REFERENCE.read_text())


def load(name: str) -> pd.DataFrame:
    """The CSV the R script fitted for case ``name``."""
    return pd.read_csv(DATA / CASES[name].csv)


def call_text(name: str) -> str:
    """The impactglm call of case ``name`` as text (the JSON's python_call)."""
    c = CASES[name]
    extra = "".join(f", {k}={v!r}".replace("'", '"') for k, v in c.kwargs.items())
    return (f'ig.glm("{c.formula}", {c.frame}, family="{c.family}"{extra}, '
            f'prior_sd="auto").fit()')


def fit(name: str, data: pd.DataFrame | None = None, **fit_options):
    """Run case ``name`` through the public API: ig.glm(...).fit()."""
    import impactglm as ig
    c = CASES[name]
    d = load(name) if data is None else data
    return ig.glm(c.formula, d, family=c.family, prior_sd="auto", **c.kwargs).fit(**fit_options)


def r_name(patsy_name: str) -> str:
    """A Patsy coefficient name as R's model.matrix spells it: "Intercept" -> "(Intercept)",
    "C(period)[T.2]" -> "period2", "Gender[T.M]" -> "GenderM"; numeric columns unchanged."""
    if patsy_name == "Intercept":
        return "(Intercept)"
    m = re.fullmatch(r"(?:C\((\w+)\)|(\w+))\[T\.(.+)\]", patsy_name)
    return (m.group(1) or m.group(2)) + m.group(3) if m else patsy_name

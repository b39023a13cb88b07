"""impactglm: GLMs with high-cardinality categorical predictors.

    import impactglm as ig
    res = ig.glm("y ~ ^user + ^movie + age", data, family="binomial").fit()
    res.summary()

Attributes are imported lazily so that ``import impactglm`` stays fast (numba
kernels are compiled or loaded from cache on first use).
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "glm": ("impactglm.model", "glm"),
    "GLM": ("impactglm.model", "GLM"),
    "lmm": ("impactglm.mixed.model", "lmm"),
    "LMM": ("impactglm.mixed.model", "LMM"),
    "load": ("impactglm.results.restore", "load"),
    "evaluate": ("impactglm.metrics", "evaluate"),
    "anova": ("impactglm.mixed.compare", "anova"),   # LMM fits; GLM fits go to results.inference
    "read_table": ("impactglm.io.read", "read_table"),
    "make_ratings": ("impactglm.simulate", "make_ratings"),
    "parse_formula": ("impactglm.formula", "parse_formula"),
    "families": ("impactglm.families", None),
    "errors": ("impactglm.errors", None),
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'impactglm' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__():
    return __all__

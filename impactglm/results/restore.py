"""``load(path)``: a saved model back as its results class (the inverse of ``save``).

The model is validated whole before ``load`` returns (nothing in it is evaluated):
the envelope by :func:`impactglm.modelfile.read_model_file` (format, version, kind,
arrays file name and SHA-256), the spec by :meth:`ModelSpec.from_dict` (formula and
every stored expression against the closed formula namespace), and here the content
of each kind: types of the entries, ``params`` against ``column_names``, the
covariance's shape, and every per-level array against its factor's level table.
Any damage is a :class:`~impactglm.errors.ModelFileError` naming what is wrong.
"""
from __future__ import annotations

import os
from typing import Mapping

import numpy as np

from ..design.spec import ModelSpec
from ..errors import ImpactGLMError, ModelFileError
from ..families import get_family
from ..modelfile import array, field, float_matrix, float_vector
from .files import read_saved
from .glm import GLMResults
from .multinomial import MultinomialResults

RESULTS_CLASSES = {"glm": GLMResults, "multinomial": MultinomialResults}


def load(path: str | os.PathLike):
    """Read a model written by :func:`impactglm.results.files.save` (never unpickles
    anything): GLMResults or MultinomialResults, whose ``predict`` gives the numbers of
    the saved fit bit for bit.  A damaged or foreign file is a ModelFileError."""
    meta, arrays = read_saved(path)
    where = repr(str(path))
    try:
        spec = ModelSpec.from_dict(field(meta, "spec", "object"))
        VALIDATORS[meta["kind"]](meta, arrays, spec)
        return RESULTS_CLASSES[meta["kind"]].from_dict(meta, arrays)
    except ModelFileError as e:
        raise ModelFileError(f"{where}: {e}") from None
    except ImpactGLMError as e:
        raise ModelFileError(f"{where} is damaged: {e}") from None
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:  # backstop
        raise ModelFileError(f"{where} is damaged ({type(e).__name__}: {e})") from None


def _names(meta: Mapping) -> list[str]:
    names = field(meta, "column_names", "list")
    if not all(isinstance(n, str) for n in names):
        raise ModelFileError("'column_names' should be a list of text")
    return names


def _factor_arrays(meta: Mapping, arrays: Mapping, spec: ModelSpec, width: int | None) -> None:
    """Per ^ factor: the entry's fields, and counts/effect/se of one row per level."""
    factors = field(meta, "factors", "list")
    if len(factors) != len(spec.factor_names):
        raise ModelFileError(f"{len(factors)} factor entries for the {len(spec.factor_names)} "
                             "^ factors of the spec")
    for k, (f, name, levels) in enumerate(zip(factors, spec.factor_names, spec.factor_levels)):
        where = f"factor entry {k}"
        if field(f, "name", "text", where) != name:
            raise ModelFileError(f"{where} names {f['name']!r}, the spec ^{name}")
        field(f, "tau", "number", where, optional=True)
        field(f, "edf", "number", where, optional=True)
        field(f, "tau_estimated", "boolean", where)
        n = len(levels)
        shape = (n,) if width is None else (n, width)
        array(arrays, f"counts_{k}", (n,), kinds="iuf")
        array(arrays, f"effect_{k}", shape)
        array(arrays, f"se_{k}", shape)


def _validate_glm(meta: Mapping, arrays: Mapping, spec: ModelSpec) -> None:
    names = _names(meta)
    if tuple(names) != spec.column_names:
        raise ModelFileError("'column_names' differ from the columns of the spec's design")
    p = len(names)
    float_vector(field(meta, "params", "list"), "params", p)
    float_matrix(field(meta, "cov", "list"), "cov", (p, p))
    get_family(field(meta, "family", "text"), field(meta, "link", "text"))
    for key in ("stats", "extra", "log"):
        field(meta, key, "object")
    _factor_arrays(meta, arrays, spec, None)


def _validate_multinomial(meta: Mapping, arrays: Mapping, spec: ModelSpec) -> None:
    names = _names(meta)
    if not spec.classes or len(spec.classes) < 2:
        raise ModelFileError("the spec of a multinomial model records no classes")
    p, k = len(names), len(spec.classes)
    array(arrays, "beta", (p, k))
    array(arrays, "cov", (p * (k - 1), p * (k - 1)))
    log_columns = field(meta, "log_columns", "list")
    array(arrays, "log", (None, len(log_columns)))
    for key in ("stats", "extra"):
        field(meta, key, "object")
    array(arrays, "train_confusion", (k, k), kinds="iuf")
    field(meta, "train_metrics", "object")
    if field(meta, "holdout_metrics", "object", optional=True) is not None:
        array(arrays, "holdout_confusion", (k, k), kinds="iuf")
    _factor_arrays(meta, arrays, spec, k)
    for key, a in arrays.items():
        if key.startswith(("beta", "effect_")) and not np.isfinite(a).all():
            raise ModelFileError(f"the array {key!r} holds non-finite values")


VALIDATORS = {"glm": _validate_glm, "multinomial": _validate_multinomial}

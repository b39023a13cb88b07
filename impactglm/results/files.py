"""Save fitted models and read them back as plain data: JSON, plus one arrays file.

Nothing is pickled.  ``save(results, "model.json")`` writes ``model.json`` (the
ModelSpec as plain data, family and link, coefficients and their covariance,
fit statistics, prior sds, the iteration log) and, when the model has arrays,
``model.json.npz`` beside it (per ``^`` factor: counts, effects, standard errors;
the level values themselves are in the spec), with its SHA-256 in the JSON.  The
file layout, the atomic writes and the envelope checks are
:mod:`impactglm.modelfile`'s.  Python's ``json`` writes floats with ``repr``, so
coefficients round-trip bit for bit, and ``load`` rebuilds a results object whose
``predict`` gives identical numbers.  A loaded model has no training data, hence
no residuals or fitted values.  Non-finite floats in the metadata are written as
the strings "nan"/"inf" (JSON has no NaN).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any
import numpy as np


from ..errors import ImpactGLMError
from ..modelfile import FORMAT_VERSION, read_model_file, write_model_file

__all__ = ["FORMAT_VERSION", "KINDS", "read_saved", "save"]

# the kinds of results a file can hold; each results class has to_dict() -> (meta, arrays)
# and from_dict(meta, arrays) -> results (impactglm.results.restore maps kind -> class)
KINDS = ("glm", "multinomial")


def _jsonable(v: Any):
    """Scalars and small containers as JSON values (NaN/inf as strings, read back by _float)."""
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return v if math.isfinite(v) else repr(v)
    if isinstance(v, str) or v is None:
        return v
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_jsonable(x) for x in v]
    return repr(v)


def save(results, path: str | os.PathLike) -> list[Path]:
    """Write ``results`` to ``path`` (JSON) and, when it has arrays, ``<path>.npz``.

    ``results`` is any results class registered in :data:`KINDS` (GLMResults,
    MultinomialResults): its ``to_dict()`` gives (JSON-able metadata, named arrays).
    Returns the paths written.  The directory must exist (else an error naming it).
    """
    to_dict = getattr(results, "to_dict", None)
    if to_dict is None:
        raise ImpactGLMError(f"save() takes a fitted impactglm model, not {type(results).__name__}")
    meta, arrays = to_dict()
    kind = meta.get("kind")
    if kind not in KINDS:
        raise ImpactGLMError(f"cannot save a model of kind {kind!r}")
    body = {k: v for k, v in _jsonable(meta).items() if k != "kind"}
    return write_model_file(path, kind, body, arrays)


def read_saved(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """The (metadata, arrays) of a model written by :func:`save`, the envelope validated
    (format, version, kind, arrays file and its hash); never unpickles anything."""
    return read_model_file(path, KINDS)

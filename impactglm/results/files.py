"""Save fitted models and read them back as plain data: JSON, plus one .npz for level-effect arrays.

Nothing is pickled.  ``save(results, "model.json")`` writes ``model.json`` (the
ModelSpec as plain data, family and link, coefficients and their covariance,
fit statistics, prior sds, the iteration log) and, when the model has ``^``
factors, ``model.npz`` beside it (per factor: counts, effects, standard errors;
the level values themselves are in the spec).  Python's ``json`` writes floats
with ``repr``, so coefficients round-trip bit for bit, and ``load`` rebuilds a
results object whose ``predict`` gives identical numbers.  A loaded model has no
training data, hence no residuals or fitted values.  Non-finite floats in the metadata
are written as the strings "nan"/"inf" (JSON has no NaN).
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any
import numpy as np


from ..errors import DataError, ImpactGLMError



FORMAT_VERSION = 1
# the kinds of results a file can hold; each results class has to_dict() -> (meta, arrays)
# and from_dict(meta, arrays) -> results (impactglm.results.restore maps kind -> class)
KINDS = ("glm", "multinomial")


def _npz_path(path: Path) -> Path:
    return path.with_suffix(".npz") if path.suffix else path.with_name(path.name + ".npz")


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


def _write_atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save(results, path: str | os.PathLike) -> list[Path]:
    """Write ``results`` to ``path`` (JSON) and, when it has arrays, ``<path stem>.npz``.

    ``results`` is any results class registered in :data:`KINDS` (GLMResults,
    MultinomialResults): its ``to_dict()`` gives (JSON-able metadata, named arrays).
    Returns the paths written.
    """
    to_dict = getattr(results, "to_dict", None)
    if to_dict is None:
        raise ImpactGLMError(f"save() takes a fitted impactglm model, not {type(results).__name__}")
    meta, arrays = to_dict()
    if meta.get("kind") not in KINDS:
        raise ImpactGLMError(f"cannot save a model of kind {meta.get('kind')!r}")
    path = Path(path)
    doc = {"format": "impactglm", "format_version": FORMAT_VERSION, **_jsonable(meta),
           "arrays": None}
    written = []
    if arrays:
        npz = _npz_path(path)
        doc["arrays"] = npz.name

        def write_npz(tmp):
            with open(tmp, "wb") as fh:
                np.savez(fh, **{k: np.asarray(v) for k, v in arrays.items()})

        _write_atomic(npz, write_npz)
        written.append(npz)
    text = json.dumps(doc, indent=1, allow_nan=False)
    _write_atomic(path, lambda tmp: Path(tmp).write_text(text))
    written.insert(0, path)
    return written


def read_saved(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """The (metadata, arrays) of a model written by :func:`save` (never unpickles anything)."""
    path = Path(path)
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"no saved model at {str(path)!r}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{str(path)!r} is not a saved impactglm model (not JSON: {e})") from None
    if not isinstance(meta, dict) or meta.get("format") != "impactglm":
        raise DataError(f"{str(path)!r} is not a saved impactglm model")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise DataError(f"{str(path)!r} was written by a newer impactglm "
                        f"(format {meta['format_version']} > {FORMAT_VERSION})")
    if meta.get("kind") not in KINDS:
        raise DataError(f"unknown kind of saved model {meta.get('kind')!r} "
                        f"(known: {', '.join(KINDS)})")
    arrays = {}
    if meta.get("arrays"):
        npz = path.with_name(meta["arrays"])
        try:
            with np.load(npz, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except FileNotFoundError:
            raise DataError(f"the arrays of {str(path)!r} are missing: {str(npz)!r}") from None
        except ValueError as e:
            raise DataError(f"{str(npz)!r} is not a plain-array .npz file ({e})") from None
    return meta, arrays

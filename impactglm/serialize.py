"""Save and load fitted models as plain data: JSON, plus one .npz for level-effect arrays.

Nothing is pickled.  ``save(results, "model.json")`` writes ``model.json`` (the
ModelSpec as plain data, family and link, coefficients and their covariance,
fit statistics, prior sds, the iteration log) and, when the model has ``^``
factors, ``model.npz`` beside it (per factor: counts, effects, standard errors;
the level values themselves are in the spec).  Python's ``json`` writes floats
with ``repr``, so coefficients round-trip bit for bit, and ``load`` rebuilds a
results object whose ``predict`` gives identical numbers.  A loaded model has no
training data, hence no residuals or fitted values.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import DataError, ImpactGLMError
from .fitoutput import FactorEffects

__all__ = ["save", "load", "FORMAT_VERSION"]

FORMAT_VERSION = 1


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


def _float(v) -> float:
    return float(v)       # float("nan"), float("inf") read back the strings _jsonable wrote


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
    """Write ``results`` (a GLMResults) to ``path`` (JSON) and, with ^ factors, its .npz.

    Returns the paths written.
    """
    from .results import GLMResults

    if not isinstance(results, GLMResults):
        raise ImpactGLMError(f"save() takes GLMResults, not {type(results).__name__}")
    path = Path(path)
    spec = results.spec
    effects = results.factor_effects
    for e, lv in zip(effects, spec.factor_levels):
        if len(e.levels) != len(lv):
            raise DataError(f"^{e.name}: {len(e.levels)} effects but {len(lv)} levels in the spec")
    meta = {
        "format": "impactglm", "format_version": FORMAT_VERSION, "kind": "GLMResults",
        "spec": spec.to_dict(),
        "family": results.family.name, "link": results.family.link.name,
        "column_names": list(results.params.index),
        "params": [float(b) for b in results.params.to_numpy()],
        "cov": [[float(c) for c in row] for row in results.cov_params().to_numpy()],
        "stats": _jsonable(results._stats),
        "factors": [{"name": e.name, "tau": None if e.tau is None else float(e.tau),
                     "edf": float(e.edf), "tau_estimated": bool(e.tau_estimated)}
                    for e in effects],
        "extra": _jsonable(results._extra),
        "log": _jsonable(results.iteration_log.to_dict(orient="list")),
        "arrays": None,
    }
    written = []
    if effects:
        npz = _npz_path(path)
        arrays = {}
        for k, e in enumerate(effects):
            arrays[f"counts_{k}"] = np.asarray(e.counts, dtype=np.int64)
            arrays[f"effect_{k}"] = np.asarray(e.effect, dtype=np.float64)
            arrays[f"se_{k}"] = np.asarray(e.se, dtype=np.float64)
        meta["arrays"] = npz.name

        def write_npz(tmp):
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)

        _write_atomic(npz, write_npz)
        written.append(npz)
    text = json.dumps(meta, indent=1, allow_nan=False)
    _write_atomic(path, lambda tmp: Path(tmp).write_text(text))
    written.insert(0, path)
    return written


def load(path: str | os.PathLike):
    """Read a model written by :func:`save` (never unpickles anything)."""
    from .design import ModelSpec
    from .families import get_family
    from .results import GLMResults

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
    if meta.get("kind") != "GLMResults":
        raise DataError(f"{str(path)!r} holds a {meta.get('kind')!r} model, which load() "
                        "cannot read")
    spec = ModelSpec.from_dict(meta["spec"])
    effects = ()
    if meta["factors"]:
        npz = path.with_name(meta["arrays"])
        try:
            with np.load(npz, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except FileNotFoundError:
            raise DataError(f"the level effects of {str(path)!r} are missing: {str(npz)!r}") \
                from None
        effects = tuple(
            FactorEffects(name=f["name"], levels=spec.factor_levels[k],
                          counts=arrays[f"counts_{k}"], effect=arrays[f"effect_{k}"],
                          se=arrays[f"se_{k}"], tau=f["tau"], edf=f["edf"],
                          tau_estimated=f["tau_estimated"])
            for k, f in enumerate(meta["factors"]))
    stats = dict(meta["stats"])
    for key in ("deviance", "null_deviance", "pearson_chi2", "scale", "llf", "aic", "bic",
                "df_model", "df_resid"):
        if key in stats:
            stats[key] = _float(stats[key])
    return GLMResults(params=np.array(meta["params"], dtype=np.float64),
                      cov=np.array(meta["cov"], dtype=np.float64).reshape(
                          len(meta["params"]), len(meta["params"])),
                      column_names=meta["column_names"],
                      family=get_family(meta["family"], meta["link"]), spec=spec, stats=stats,
                      effects=effects, log=pd.DataFrame(meta["log"]), extra=meta["extra"],
                      training=None)

"""Model files on disk: one JSON document plus, optionally, one arrays file tied to it.

The layout (format version :data:`FORMAT_VERSION`):

* ``m.json``: a JSON object with ``"format": "impactglm"``, ``"format_version"``,
  ``"kind"`` (which results class), ``"arrays"`` (the arrays file's plain name, or
  null) and ``"arrays_sha256"`` (the SHA-256 of the arrays file's bytes), besides the
  caller's metadata;
* ``m.json.npz``: the arrays (``numpy.savez``, read with ``allow_pickle=False``).  Its
  name is the JSON file's whole name plus ``.npz``, so ``m.json`` and ``m.model``
  can never share one, and the hash ties it to its JSON: a swapped, truncated or
  edited arrays file is refused.

:func:`read_model_file` validates the envelope (JSON object, format, version, kind,
that ``arrays`` is a plain file name in the same directory, the hash, that every array
is a plain numeric array) and raises :class:`~impactglm.errors.ModelFileError` naming
what is wrong; the small checkers (:func:`field`, :func:`float_vector`,
:func:`float_matrix`, :func:`array`) let each results class validate its own content
the same way.  Nothing is ever unpickled or evaluated.

Writes are atomic: every file is written to a temporary name from :func:`temp_path`
(``.<target>.<pid>.<random>.tmp`` beside the target) and renamed into place; the
temporaries of a process that died (SIGKILL, power loss) are removed by the next
write to the same target (:func:`remove_stale_temps`).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Collection, Mapping
import numpy as np

from .errors import DataFileNotFoundError, ModelFileError

FORMAT = "impactglm"
FORMAT_VERSION = 2
_TEMP = re.compile(r"\.(?P<target>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp")


# --------------------------------------------------------------------------- temporaries


def temp_path(target: str | os.PathLike, directory: bool = False) -> Path:
    """Create and return an empty temporary file (or directory) beside ``target``, named
    ``.<target name>.<pid>.<random>.tmp``; stale ones of dead processes are removed first."""
    target = Path(target)
    parent = target.parent if str(target.parent) else Path(".")
    remove_stale_temps(target)
    prefix, suffix = f".{target.name}.{os.getpid()}.", ".tmp"
    if directory:
        return Path(tempfile.mkdtemp(dir=parent, prefix=prefix, suffix=suffix))
    fd, name = tempfile.mkstemp(dir=parent, prefix=prefix, suffix=suffix)
    os.close(fd)
    return Path(name)


def remove_stale_temps(target: str | os.PathLike) -> list[Path]:
    """Remove the temporaries of ``target`` left by processes that no longer run."""
    target = Path(target)
    parent = target.parent if str(target.parent) else Path(".")
    removed = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _TEMP.fullmatch(p.name)
        if m is None or m.group("target") != target.name or _alive(int(m.group("pid"))):
            continue
        try:
            if p.is_dir() and not p.is_symlink():
                for child in p.iterdir():
                    child.unlink()
                p.rmdir()
            else:
                p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return True


def _write_atomic(target: Path, data: bytes) -> None:
    tmp = temp_path(target)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


# --------------------------------------------------------------------------- paths


def arrays_path(path: str | os.PathLike) -> Path:
    """The arrays file of the model file ``path``: ``m.json`` -> ``m.json.npz``."""
    path = Path(path)
    return path.with_name(path.name + ".npz")


def recorded_arrays_path(path: str | os.PathLike) -> Path | None:
    """The arrays file a model file records (which may differ from :func:`arrays_path`
    after a rename), or None if it cannot be read; for output-clobbering checks."""
    path = Path(path)
    try:
        name = json.loads(path.read_text(encoding="utf-8")).get("arrays")
        return path.with_name(_plain_name(name, path))
    except (OSError, ValueError, AttributeError, ModelFileError):
        return None


def _plain_name(name: Any, path: Path) -> str:
    """``name`` if it is a plain file name (no directory part), else ModelFileError."""
    if (not isinstance(name, str) or not name or name in (".", "..") or "/" in name
            or "\\" in name or "\0" in name or os.path.basename(name) != name
            or Path(name).is_absolute()):
        raise ModelFileError(f"{str(path)!r}: 'arrays' must be the plain name of a file in "
                             f"the same directory, not {name!r}")
    return name


def check_save_target(path: str | os.PathLike) -> Path:
    """``path`` as a Path if a model can be saved there: its directory exists and it is
    not a directory itself (else a clear error naming it)."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise DataFileNotFoundError(f"cannot save the model to {str(path)!r}: the directory "
                                    f"{str(parent)!r} does not exist")
    if path.is_dir():
        raise ModelFileError(f"cannot save the model to {str(path)!r}: it is a directory")
    return path


# --------------------------------------------------------------------------- write / read


def write_model_file(path: str | os.PathLike, kind: str, meta: Mapping[str, Any],
                     arrays: Mapping[str, np.ndarray] | None = None) -> list[Path]:
    """Write ``meta`` (JSON-able, no NaN) as the model file ``path`` and ``arrays`` (if
    any) as :func:`arrays_path` of it, with its SHA-256 in the JSON.  Returns the
    paths written (JSON first).  Replaces existing files (callers that must not
    clobber check first)."""
    path = check_save_target(path)
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind, **meta,
           "arrays": None, "arrays_sha256": None}
    written = [path]
    if arrays:
        buf = io.BytesIO()
        np.savez(buf, **{str(k): _plain_array(v, str(k)) for k, v in arrays.items()})
        data = buf.getvalue()
        npz = arrays_path(path)
        doc["arrays"], doc["arrays_sha256"] = npz.name, hashlib.sha256(data).hexdigest()
        _write_atomic(npz, data)
        written.append(npz)
    text = json.dumps(doc, indent=1, allow_nan=False)
    _write_atomic(path, text.encode("utf-8"))
    return written


def _plain_array(value, name: str) -> np.ndarray:
    a = np.asarray(value)
    if a.dtype.kind not in "biuf":
        raise ModelFileError(f"cannot store the array {name!r} of dtype {a.dtype} in a model file")
    return a


def read_model_file(path: str | os.PathLike, kinds: Collection[str]
                    ) -> tuple[dict, dict[str, np.ndarray]]:
    """(metadata, arrays) of a model file, its envelope validated (module docstring).

    ``kinds``: the kinds the caller can rebuild.  Every problem is a ModelFileError
    naming the file and what is wrong."""
    path = Path(path)
    where = repr(str(path))
    if path.is_dir():
        raise ModelFileError(f"{where} is a directory, not a saved model")
    raw = _read_bytes(path, f"no saved model at {where}")
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ModelFileError(f"{where} is not a saved impactglm model (not JSON: "
                             f"{str(e).splitlines()[0][:120]})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{where} is not a saved impactglm model (no \"format\": "
                             f"\"{FORMAT}\")")
    _check_version(meta.get("format_version", None), where)
    kind = meta.get("kind")
    if kind not in kinds:
        raise ModelFileError(f"{where}: unknown kind of saved model {kind!r} (known: "
                             f"{', '.join(sorted(kinds))})")
    return meta, _read_arrays(meta, path)


def _read_bytes(path: Path, missing: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ModelFileError(missing) from None
    except OSError as e:
        raise ModelFileError(f"cannot read {str(path)!r}: {e.strerror or e}") from None


def _check_version(version: Any, where: str) -> None:
    if isinstance(version, bool) or not isinstance(version, int):
        raise ModelFileError(f"{where}: format_version {version!r} is not a version number "
                             f"(this impactglm reads format {FORMAT_VERSION})")
    if version > FORMAT_VERSION:
        raise ModelFileError(f"{where} was written by a newer impactglm (format {version}; "
                             f"this version reads format {FORMAT_VERSION}): upgrade impactglm")
    if version < FORMAT_VERSION:
        raise ModelFileError(f"{where} was written by an older impactglm (format {version}; "
                             f"this version reads format {FORMAT_VERSION}): fit the model "
                             "again and save it")


def _read_arrays(meta: dict, path: Path) -> dict[str, np.ndarray]:
    where = repr(str(path))
    name, digest = meta.get("arrays"), meta.get("arrays_sha256")
    if name is None:
        if digest is not None:
            raise ModelFileError(f"{where} records an arrays hash but no arrays file")
        return {}
    npz = path.with_name(_plain_name(name, path))
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ModelFileError(f"{where}: 'arrays_sha256' is missing or not a SHA-256 hex digest")
    data = _read_bytes(npz, f"the arrays file of {where} is missing: {str(npz)!r}")
    if hashlib.sha256(data).hexdigest() != digest:
        raise ModelFileError(f"the arrays file {str(npz)!r} does not belong to {where} (its "
                             "SHA-256 differs from the one recorded: replaced, truncated or "
                             "edited)")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
        raise ModelFileError(f"{str(npz)!r} is not a plain-array .npz file "
                             f"({type(e).__name__}: {str(e)[:120]})") from None
    for k, a in arrays.items():
        if a.dtype.kind not in "biuf":
            raise ModelFileError(f"{str(npz)!r}: the array {k!r} has dtype {a.dtype}, not numbers")
    return arrays


# --------------------------------------------------------------------------- content checks


_TYPES = {"text": str, "integer": int, "number": (int, float), "list": list, "object": dict,
          "boolean": bool}


def field(doc: Mapping, key: str, kind: str, where: str = "the model file",
          optional: bool = False) -> Any:
    """``doc[key]`` checked to be of ``kind`` (text, integer, number, list, object,
    boolean; a number may be the strings "nan"/"inf"/"-inf"); ``optional``: None allowed."""
    if not isinstance(doc, Mapping):
        raise ModelFileError(f"{where} is damaged: expected an object")
    if key not in doc:
        raise ModelFileError(f"{where} is damaged: the entry {key!r} is missing")
    value = doc[key]
    if value is None and optional:
        return None
    ok = isinstance(value, _TYPES[kind]) and not (kind in ("integer", "number")
                                                 and isinstance(value, bool))
    if kind == "number" and isinstance(value, str):
        ok = value in ("nan", "inf", "-inf")
    if not ok:
        raise ModelFileError(f"{where} is damaged: {key!r} should be {kind}, not "
                             f"{type(value).__name__} {str(value)[:40]!r}")
    return value


def float_vector(value: Any, name: str, length: int | None = None) -> np.ndarray:
    """A JSON list of numbers ("nan"/"inf" strings allowed) as float64, of ``length``."""
    if not isinstance(value, list) or not all(
            (isinstance(v, (int, float)) and not isinstance(v, bool))
            or v in ("nan", "inf", "-inf") for v in value):
        raise ModelFileError(f"the model file is damaged: {name!r} should be a list of numbers")
    a = np.array([float(v) for v in value], dtype=np.float64)
    if length is not None and len(a) != length:
        raise ModelFileError(f"the model file is damaged: {name!r} has {len(a)} values, "
                             f"expected {length}")
    return a


def float_matrix(value: Any, name: str, shape: tuple[int, int]) -> np.ndarray:
    """A JSON list of rows of numbers as a float64 matrix of ``shape``."""
    if not isinstance(value, list) or len(value) != shape[0]:
        raise ModelFileError(f"the model file is damaged: {name!r} should have {shape[0]} rows")
    rows = [float_vector(r, f"{name} row {i}", shape[1]) for i, r in enumerate(value)]
    return np.array(rows, dtype=np.float64).reshape(shape)


def array(arrays: Mapping[str, np.ndarray], key: str, shape: tuple | None = None,
          kinds: str = "f") -> np.ndarray:
    """``arrays[key]`` checked for presence, dtype kind (``kinds``, e.g. "f", "iu") and
    ``shape`` (None entries match any size)."""
    if key not in arrays:
        raise ModelFileError(f"the model's arrays file is damaged: the array {key!r} is missing")
    a = arrays[key]
    if a.dtype.kind not in kinds:
        raise ModelFileError(f"the model's arrays file is damaged: {key!r} has dtype {a.dtype}")
    if shape is not None and (a.ndim != len(shape) or any(
            s is not None and s != n for s, n in zip(shape, a.shape))):
        want = "x".join("?" if s is None else str(s) for s in shape)
        raise ModelFileError(f"the model's arrays file is damaged: {key!r} has shape "
                             f"{'x'.join(map(str, a.shape)) or 'scalar'}, expected {want}")
    return a

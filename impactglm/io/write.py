"""Writing tables (CSV, CSV.gz, TSV, Parquet) atomically, and the output checks of the CLI.

* :func:`check_writable`: before any work, an output must be writable (its directory
  exists; it does not exist unless ``force``);
* :func:`check_distinct`: no output may be an input of the same command or another of
  its outputs, ``force`` or not (resolved paths, hard links included);
* :class:`atomic_output` / :func:`write_table` / :class:`table_writer`: the file is
  written to a temporary beside the target (:func:`impactglm.modelfile.temp_path`:
  ``.<name>.<pid>.<random>.tmp``, removed on any error or signal that Python sees;
  stale ones of killed processes are removed by the next write to the same target)
  and renamed into place, never replacing an existing file unless ``force``.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Mapping
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq


from ..errors import DataError, DataFileNotFoundError, OutputExistsError
from ..modelfile import temp_path
from .read import file_format, one_line, text_separator


# --------------------------------------------------------------------------- writing


def check_writable(path: str | os.PathLike, force: bool = False) -> Path:
    """Raise before any work if ``path`` cannot be written (exists without force, no dir)."""
    p = Path(path)
    if p.exists() and not force:
        raise OutputExistsError(f"{str(path)!r} exists; refusing to overwrite it "
                                "without force=True")
    if p.is_dir():
        raise OutputExistsError(f"{str(path)!r} is a directory")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise DataFileNotFoundError(f"cannot write {str(path)!r}: the directory "
                                    f"{str(parent)!r} does not exist")
    return p


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_distinct(inputs: Mapping[str, str | os.PathLike | None],
                   outputs: Mapping[str, str | os.PathLike | None]) -> None:
    """Refuse (DataError naming both) an output that is one of the ``inputs`` or another
    of the ``outputs`` (labels -> paths; None entries are skipped).  ``--force`` permits
    replacing an old output, never this."""
    ins = [(k, Path(v)) for k, v in inputs.items() if v is not None]
    outs = [(k, Path(v)) for k, v in outputs.items() if v is not None]
    for i, (label, out) in enumerate(outs):
        for other, src in ins:
            if _same_file(out, src):
                raise DataError(f"{label} {str(out)!r} is the input {other} {str(src)!r}: "
                                "refusing to overwrite an input (even with --force)")
        for other, prev in outs[:i]:
            if _same_file(out, prev):
                raise DataError(f"{label} {str(out)!r} and {other} {str(prev)!r} are the same "
                                "file: each output needs its own name")


class atomic_output:  # noqa: N801 - used as a context manager like open()
    """Context manager yielding a temporary path next to ``path``; on success the
    temporary file is renamed to ``path`` (never replacing an existing file unless
    ``force``); on failure it is removed.

        with atomic_output("model.json", force=False) as tmp:
            write_something(tmp)
    """

    def __init__(self, path: str | os.PathLike, force: bool = False):
        self.path = check_writable(path, force)
        self.force = force
        self.tmp: Path | None = None

    def __enter__(self) -> Path:
        self.tmp = temp_path(self.path)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> bool:
        assert self.tmp is not None
        if exc_type is not None:
            _unlink(self.tmp)
            return False
        try:
            _commit(self.tmp, self.path, self.force)
        except BaseException:
            _unlink(self.tmp)
            raise
        return False


def _commit(tmp: Path, path: Path, force: bool) -> None:
    """Move ``tmp`` to ``path``: os.replace with force, else an atomic no-clobber link."""
    mode = 0o666 & ~_umask()
    os.chmod(tmp, mode)
    if force:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)          # fails if path exists: no race with another writer
    except FileExistsError:
        raise OutputExistsError(f"{str(path)!r} exists; refusing to overwrite it "
                                "without force=True") from None
    except OSError:                 # file system without hard links
        if path.exists():
            raise OutputExistsError(f"{str(path)!r} exists; refusing to overwrite it "
                                    "without force=True") from None
        os.replace(tmp, path)
        return
    _unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _unlink(p: Path) -> None:
    try:
        p.unlink()
    except FileNotFoundError:
        pass


def write_table(df: pd.DataFrame | pa.Table, path: str | os.PathLike, force: bool = False,
                sep: str | None = None) -> Path:
    """Write ``df`` (a DataFrame without its index, or an Arrow table) to CSV/TSV
    (optionally .gz) or Parquet, atomically.

    The format follows the extension as in :func:`read_table`.  Text output
    quotes only when some value needs it (contains the separator, a quote or a
    line break); floats are written in their shortest round-trip form.  Raises
    :class:`OutputExistsError` if ``path`` exists and ``force`` is false.
    """
    kind, compression = file_format(path)
    table = _to_arrow(df)
    with atomic_output(path, force) as tmp:
        if kind == "parquet":
            pq.write_table(table, str(tmp), compression=compression or "snappy")
        else:
            delimiter = text_separator(path, sep)
            options = pacsv.WriteOptions(delimiter=delimiter,
                                         quoting_style=_quoting(table, delimiter),
                                         quoting_header=_header_quoting(table, delimiter))
            with pa.output_stream(str(tmp), compression=compression) as out:
                pacsv.write_csv(table, out, options)
    return Path(path)


class table_writer:  # noqa: N801 - a context manager like open()
    """Write a table in pieces, atomically: ``with table_writer(path) as write: write(t)``.

    Every piece is an Arrow table (or DataFrame) with the columns of the first one;
    the file appears under ``path`` only when the block ends without an error.
    Text output quotes values when ``quote_like`` (an Arrow table holding all the
    text that will be written, e.g. the whole input) or the first piece needs it.
    """

    def __init__(self, path: str | os.PathLike, force: bool = False, sep: str | None = None,
                 quote_like: pa.Table | None = None):
        self.path, self.force, self.sep, self.quote_like = Path(path), force, sep, quote_like
        self._atomic = atomic_output(path, force)
        self._writer = None
        self._stream = None
        self._schema = None

    def __enter__(self):
        self._tmp = self._atomic.__enter__()
        return self.write

    def write(self, piece: pd.DataFrame | pa.Table) -> None:
        table = _to_arrow(piece)
        if self._writer is None:
            self._open(table)
        elif table.schema != self._schema:
            table = table.cast(self._schema)
        self._writer.write_table(table)

    def _open(self, table: pa.Table) -> None:
        kind, compression = file_format(self.path)
        self._schema = table.schema
        if kind == "parquet":
            self._writer = pq.ParquetWriter(str(self._tmp), table.schema,
                                            compression=compression or "snappy")
            return
        delimiter = text_separator(self.path, self.sep)
        quoting = _quoting(table, delimiter)
        if self.quote_like is not None and quoting == "none":
            quoting = _quoting(_to_arrow(self.quote_like), delimiter)
        options = pacsv.WriteOptions(delimiter=delimiter, quoting_style=quoting,
                                     quoting_header=_header_quoting(table, delimiter))
        self._stream = pa.output_stream(str(self._tmp), compression=compression)
        self._writer = pacsv.CSVWriter(self._stream, table.schema, write_options=options)

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if self._writer is not None:
                self._writer.close()
            if self._stream is not None:
                self._stream.close()
        except BaseException:
            if exc_type is None:
                self._atomic.__exit__(*sys.exc_info())
                raise
        if exc_type is None and self._writer is None:
            exc_type = exc = DataError("nothing was written")
            self._atomic.__exit__(DataError, exc, None)
            raise exc
        return self._atomic.__exit__(exc_type, exc, tb)


def _to_arrow(df: pd.DataFrame | pa.Table) -> pa.Table:
    if isinstance(df, pa.Table):
        table = df
    elif not isinstance(df, pd.DataFrame):
        raise DataError(f"write_table needs a pandas DataFrame or a pyarrow Table, not "
                        f"{type(df).__name__}")
    else:
        try:
            table = pa.Table.from_pandas(df, preserve_index=False)
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise DataError(f"cannot convert the table for writing: {one_line(exc)}") from None
    columns = []
    for col in table.columns:  # CSV writers want plain values, not dictionaries
        columns.append(col.cast(col.type.value_type) if pa.types.is_dictionary(col.type) else col)
    return pa.table(columns, names=[str(n) for n in table.column_names])


_SPECIAL = r'[\n\r"]'


def _quoting(table: pa.Table, delimiter: str) -> str:
    pattern = _SPECIAL[:-1] + re.escape(delimiter) + "]"
    for col in table.columns:
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            if pc.any(pc.match_substring_regex(col, pattern)).as_py():
                return "needed"
        elif not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)
                  or pa.types.is_boolean(col.type) or pa.types.is_null(col.type)):
            return "needed"
    return "none"


def _header_quoting(table: pa.Table, delimiter: str) -> str:
    special = set('\n\r"') | {delimiter}
    return "needed" if any(set(n) & special for n in table.column_names) else "none"



"""Reading and writing data files with pyarrow: CSV, CSV.gz, TSV and Parquet.

``read_table`` reads only the columns a model needs, turns the columns of
``^`` factors into categoricals (even when they hold integers, so that an id
is never mistaken for a number), and turns every problem with the file into a
one-line :class:`~impactglm.errors.ImpactGLMError`:

* a missing file                    -> :class:`DataFileNotFoundError`
* a column that is not in the file  -> :class:`~impactglm.errors.ColumnNotFoundError`
                                       (naming the closest column)
* a malformed row                   -> :class:`MalformedRowError`, with the 1-based line
                                       number in the file (the header is line 1)
* an empty file (or a header only)  -> :class:`EmptyFileError`

``write_table`` writes CSV, TSV (optionally gzipped) or Parquet by extension,
atomically: the data go to a temporary file in the target directory that is
renamed over the target only once it is complete, so a failure never leaves a
partial file; an existing file is never replaced unless ``force=True``.
"""
from __future__ import annotations

import csv
import io as _io
import os
import re
import sys
from pathlib import Path
from typing import Iterable, Sequence
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq


from .. import _util
from ..errors import ColumnNotFoundError, DataError, DataFileNotFoundError, EmptyFileError, FileFormatError, ImpactGLMError, MalformedRowError
from ..formula import parse_formula




PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")
TAB_SUFFIXES = (".tsv", ".tab")
BLOCK_SIZE = 1 << 22  # bytes per pyarrow CSV block (types are inferred from the first)
COMPRESSION_SUFFIXES = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd", ".lz4": "lz4"}


# --------------------------------------------------------------------------- formats


def file_format(path: str | os.PathLike) -> tuple[str, str | None]:
    """``(kind, compression)`` of a path from its extension.

    ``kind`` is "parquet", "tsv" (``.tsv``/``.tab``) or "csv" (anything else);
    ``compression`` is "gzip", "bz2", "zstd", "lz4" or None, from a trailing
    ``.gz``/``.bz2``/``.zst``/``.lz4``.
    """
    name = Path(path).name.lower()
    compression = None
    for suffix, codec in COMPRESSION_SUFFIXES.items():
        if name.endswith(suffix):
            compression, name = codec, name[: -len(suffix)]
            break
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet", compression
    if name.endswith(TAB_SUFFIXES):
        return "tsv", compression
    return "csv", compression


def text_separator(path: str | os.PathLike, sep: str | None) -> str:
    if sep is not None:
        sep = {"\\t": "\t", "tab": "\t", "TAB": "\t"}.get(sep, sep)
        if len(sep) != 1:
            raise DataError(f"the separator must be one character, not {sep!r}")
        return sep
    return "\t" if file_format(path)[0] == "tsv" else ","


def check_input(path: str | os.PathLike) -> Path:
    """``path`` as a Path if it is an existing file, else :class:`DataFileNotFoundError`."""
    p = Path(path)
    if not p.exists():
        hint = ""
        if p.parent.is_dir():
            near = _closest_file(p)
            hint = f"; did you mean {near!r}?" if near else ""
        raise DataFileNotFoundError(f"{str(path)!r}: no such file{hint}")
    if p.is_dir():
        raise DataFileNotFoundError(f"{str(path)!r} is a directory, not a data file")
    return p


def _closest_file(p: Path) -> str | None:
    import difflib
    try:
        names = [q.name for q in p.parent.iterdir() if q.is_file()]
    except OSError:
        return None
    close = difflib.get_close_matches(p.name, names, n=1, cutoff=0.6)
    return str(p.parent / close[0]) if close else None


# --------------------------------------------------------------------------- header


def file_columns(path: str | os.PathLike, sep: str | None = None) -> list[str]:
    """The column names of a data file, in file order (reads the header only)."""
    p = check_input(path)
    kind, _ = file_format(p)
    if kind == "parquet":
        return list(_parquet_schema(p).names)
    line = _first_line(p)
    if line is None or not line.strip():
        raise EmptyFileError(f"{str(path)!r} is empty")
    names = next(csv.reader([line], delimiter=text_separator(p, sep)))
    return [n for n in names]


def _first_line(p: Path) -> str | None:
    """The first line of a (possibly compressed) text file, without its line ending."""
    _, compression = file_format(p)
    chunks = []
    try:
        with pa.input_stream(str(p), compression=compression) as stream:
            while True:
                chunk = stream.read(1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
                if b"\n" in chunk or b"\r" in chunk:
                    break
    except (OSError, pa.ArrowException) as exc:
        raise FileFormatError(f"{str(p)!r}: cannot read the file: {one_line(exc)}") from None
    raw = b"".join(chunks)
    if not raw:
        return None
    first = re.split(rb"\r\n|\n|\r", raw, maxsplit=1)[0]
    return first.decode("utf-8-sig", errors="replace")


def _parquet_schema(p: Path) -> pa.Schema:
    try:
        return pq.read_schema(str(p))
    except (OSError, pa.ArrowException) as exc:
        raise FileFormatError(f"{str(p)!r} is not a readable Parquet file: "
                              f"{one_line(exc)}") from None


# --------------------------------------------------------------------------- reading


def read_table(path: str | os.PathLike, columns: Sequence[str] | None = None,
               sep: str | None = None, categorical: Iterable[str] = (),
               progress: bool = False, strings_as_categorical: bool = False) -> pd.DataFrame:
    """Read a CSV, CSV.gz, TSV or Parquet file into a DataFrame with pyarrow.

    Parameters
    ----------
    path:
        ``.parquet``/``.parq``/``.pq`` files are read as Parquet; ``.tsv``/``.tab``
        as tab-separated text; anything else as CSV.  A trailing ``.gz``, ``.bz2``,
        ``.zst`` or ``.lz4`` is decompressed on the fly.
    columns:
        Read only these columns (the returned frame keeps the file's column
        order); None reads all of them.  A name not in the file raises
        :class:`ColumnNotFoundError` naming the closest column.
    sep:
        One-character field separator for text files; inferred from the
        extension when None ("\\t" for .tsv/.tab, "," otherwise).
    categorical:
        Columns to return as pandas categoricals whose categories are the
        distinct values in sorted (natural) order: the ``^`` factors, so that an
        integer id column is a factor, not a number.
    progress:
        Show a tqdm progress bar (bytes read) on stderr when it is a terminal.
    strings_as_categorical:
        Return every text column as a categorical too (sorted categories, so
        Patsy's ``C(x)`` levels and reference level are unchanged); Patsy turns
        categoricals into dummies through their integer codes, several times
        faster than through Python strings.
    """
    p = check_input(path)
    kind, _ = file_format(p)
    available = file_columns(p, sep)
    wanted = _wanted_columns(available, columns)
    categorical = list(dict.fromkeys(categorical))
    for name in categorical:
        if name not in available:
            raise ColumnNotFoundError(name, available)
    if kind == "parquet":
        table = _read_parquet(p, wanted)
    else:
        table = _read_text(p, wanted, text_separator(p, sep), progress)
    if table.num_rows == 0:
        raise EmptyFileError(f"{str(path)!r} has a header but no data rows")
    if strings_as_categorical:
        categorical += [f.name for f in table.schema if f.name not in categorical
                        and (pa.types.is_string(f.type) or pa.types.is_large_string(f.type))]
    for name in categorical:
        if name in table.column_names:
            i = table.column_names.index(name)
            table = table.set_column(i, name, _sorted_dictionary(table.column(name)))
    return table.to_pandas(split_blocks=True, self_destruct=True)


def _wanted_columns(available: list[str], columns: Sequence[str] | None) -> list[str]:
    dup = [c for i, c in enumerate(available) if c in available[:i]]
    if columns is None:
        if dup:
            raise DataError(f"the column name {dup[0]!r} appears twice in the header")
        return list(available)
    if isinstance(columns, str):
        columns = [columns]
    for name in columns:
        if name not in available:
            raise ColumnNotFoundError(name, available)
        if name in dup:
            raise DataError(f"the column name {name!r} appears twice in the header")
    wanted = set(columns)
    return [c for c in available if c in wanted]


def _read_parquet(p: Path, wanted: list[str]) -> pa.Table:
    try:
        return pq.read_table(str(p), columns=wanted)
    except (OSError, pa.ArrowException) as exc:
        raise FileFormatError(f"{str(p)!r}: cannot read the Parquet file: "
                              f"{one_line(exc)}") from None


def _csv_options(wanted: list[str], sep: str, threads: bool, handler=None):
    read = pacsv.ReadOptions(use_threads=threads, block_size=BLOCK_SIZE)
    parse = pacsv.ParseOptions(delimiter=sep, invalid_row_handler=handler)
    convert = pacsv.ConvertOptions(include_columns=wanted, strings_can_be_null=True)
    return read, parse, convert


def _read_text(p: Path, wanted: list[str], sep: str, progress: bool) -> pa.Table:
    """Read a delimited text file (multi-threaded); map parse errors to file lines."""
    _, compression = file_format(p)
    read, parse, convert = _csv_options(wanted, sep, True)
    try:
        with _ProgressFile(p, progress) as raw:
            source = pa.CompressedInputStream(raw, compression) if compression else raw
            table = pacsv.read_csv(source, read, parse, convert)
    except pa.ArrowInvalid as exc:
        if "Empty CSV file" in str(exc):
            raise EmptyFileError(f"{str(p)!r} is empty") from None
        raise _locate_error(p, wanted, sep, exc) from None
    except (OSError, pa.ArrowException) as exc:
        raise FileFormatError(f"{str(p)!r}: cannot read the file: {one_line(exc)}") from None
    _check_utf8(p, table)
    return table


def _check_utf8(p: Path, table: pa.Table) -> None:
    """pyarrow reads text that is not UTF-8 as binary: name the first such value's line."""
    for name in table.column_names:
        column = table.column(name)
        if not (pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type)):
            continue
        for i, value in enumerate(column.to_pylist()):
            if value is None:
                continue
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                line = _file_line(p, i + 2)     # pyarrow row 1 is the header
                raise MalformedRowError(
                    f"{str(p)!r}, line {line}: column {name!r} holds text that is not UTF-8 "
                    f"({value[:40]!r}); convert the file to UTF-8 (e.g. iconv -f latin1 "
                    "-t utf-8)", p, line) from None


_ROW = re.compile(r"Row #(\d+):?\s*")
_COLUMN = re.compile(r"In CSV column #(\d+): ")
_COUNT = re.compile(r"Expected (\d+) columns, got (\d+): ?(.*)", re.S)


def _locate_error(p: Path, wanted: list[str], sep: str, exc: Exception) -> ImpactGLMError:
    """Re-read single-threaded (pyarrow then numbers rows) and build a one-line error.

    pyarrow's "Row #N" counts the non-empty lines from the header (= row 1); blank
    lines are skipped, so the file line is found by counting non-empty lines.
    """
    _, compression = file_format(p)
    read, parse, convert = _csv_options(wanted, sep, False)
    try:
        with pa.input_stream(str(p), compression=compression) as source:
            pacsv.read_csv(source, read, parse, convert)
        first = exc  # the threaded read failed but a serial one did not: report as is
    except pa.ArrowInvalid as again:
        first = again
    except (OSError, pa.ArrowException) as again:
        return FileFormatError(f"{str(p)!r}: cannot read the file: {one_line(again)}")
    message = str(first)
    row = _ROW.search(message)
    line = _file_line(p, int(row.group(1))) if row else None
    detail = _ROW.sub("", message).replace("CSV parse error: ", "")
    column = _COLUMN.search(detail)
    if column:
        # "In CSV column #k" indexes the columns that were read (include_columns order)
        k = int(column.group(1))
        name = wanted[k] if k < len(wanted) else f"#{k}"
        detail = _COLUMN.sub("", detail)
        detail = f"column {name!r}: {detail.strip()} (the rows above had another type)"
    detail = detail.strip().rstrip(":").strip()
    count = _COUNT.match(detail)
    if count:
        text = count.group(3)
        text = text if len(text) <= 60 else text[:57] + "..."
        detail = f"expected {count.group(1)} fields, found {count.group(2)}: {text!r}"
    where = f"line {line}" if line is not None else "a row"
    return MalformedRowError(f"{str(p)!r}, {where}: {one_line(detail)}", p, line)


def _file_line(p: Path, row: int) -> int:
    """The 1-based file line of pyarrow's row number ``row`` (non-empty lines only)."""
    _, compression = file_format(p)
    seen = 0
    with pa.input_stream(str(p), compression=compression) as stream:
        text = _io.TextIOWrapper(_io.BufferedReader(_ArrowRaw(stream)), encoding="utf-8",
                                 errors="replace", newline="")
        for number, content in enumerate(text, start=1):
            if content.strip("\r\n"):
                seen += 1
                if seen == row:
                    return number
    return row


class _ArrowRaw(_io.RawIOBase):
    """A minimal raw-IO view of a pyarrow input stream (for io.TextIOWrapper)."""

    def __init__(self, stream):
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _ProgressFile:
    """A pyarrow input file that advances a tqdm bar by the bytes read from disk."""

    def __init__(self, path: Path, progress: bool):
        self.path = path
        self.progress = progress and _util.stderr_is_terminal()
        self._bar = None
        self._file = None

    def __enter__(self):
        if not self.progress:
            self._file = pa.OSFile(str(self.path), "rb")
            return self._file
        from tqdm.auto import tqdm
        self._bar = tqdm(total=self.path.stat().st_size, unit="B", unit_scale=True,
                         unit_divisor=1024, desc=f"reading {self.path.name}", leave=False,
                         file=sys.stderr)
        self._pyfile = open(self.path, "rb")
        bar = self._bar

        class _Counting(_io.RawIOBase):
            def readable(self):
                return True

            def readinto(inner, buffer):  # noqa: N805 - closure over bar/file
                n = self._pyfile.readinto(buffer)
                bar.update(n or 0)
                return n

        self._file = pa.PythonFile(_io.BufferedReader(_Counting(), 1 << 20), mode="r")
        return self._file

    def __exit__(self, *exc):
        if self._file is not None:
            self._file.close()
        if self._bar is not None:
            self._pyfile.close()
            self._bar.close()
        return False




def _sorted_dictionary(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Dictionary-encode a column with its distinct values sorted (natural order)."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    values = pc.unique(column.drop_null() if hasattr(column, "drop_null") else column)
    values = values.take(pc.array_sort_indices(values))
    index_type = pa.int32()
    chunks = []
    for chunk in column.chunks:
        idx = pc.index_in(chunk, value_set=values).cast(index_type)
        chunks.append(pa.DictionaryArray.from_arrays(idx, values))
    return pa.chunked_array(chunks, type=pa.dictionary(index_type, values.type))


# --------------------------------------------------------------------------- formulas


_TOKEN = re.compile(r"[A-Za-z_.][A-Za-z0-9_.]*")
_STRING = re.compile(r"""(['"])(?:\\.|(?!\1).)*\1""")
_Q = re.compile(r"""Q\(\s*(['"])(.*?)\1\s*\)|`([^`]+)`""")
_NOT_COLUMNS = {"True", "False", "None", "np", "numpy", "math"}


def columns_in_formula(formula: str, available: Sequence[str], strict: bool = True) -> list[str]:
    """The columns of ``available`` that a formula names, in ``available`` order.

    The ``^`` factors and random-effect grouping variables are column names by
    construction; in the Patsy parts a name counts as a column when it is in
    ``available`` (``Q('odd name')`` and backquoted names included).  Names
    used as functions (``C(``, ``np.log(``), keyword arguments and quoted
    strings are skipped.  With ``strict`` any other name that is not a column
    raises :class:`ColumnNotFoundError` (naming the closest column), which is
    what a command line wants: there are no variables other than columns.
    """
    parsed = parse_formula(formula, require_response=False)
    available = list(available)
    present = set(available)
    named: list[str] = []
    for g in parsed.high_cardinality:
        named.append(g)
    for term in parsed.random:
        named.extend(term.group_vars)
    for name in named:
        if name not in present:
            raise ColumnNotFoundError(name, available)
    texts = [parsed.response, parsed.fixed] + [t.expr for t in parsed.random]
    for text in texts:
        named.extend(_patsy_names(text, present, available, strict))
    found = set(named)
    return [c for c in available if c in found]


def _patsy_names(text: str, present: set[str], available: list[str], strict: bool) -> list[str]:
    names = []
    for m in _Q.finditer(text):
        name = m.group(2) if m.group(2) is not None else m.group(3)
        if name not in present and strict:
            raise ColumnNotFoundError(name, available)
        names.append(name)
    text = _Q.sub(" ", text)
    text = _STRING.sub(" ", text)
    for m in _TOKEN.finditer(text):
        token = m.group(0)
        before = text[: m.start()].rstrip()
        after = text[m.end():].lstrip()
        if token in present:
            names.append(token)
            continue
        if (after.startswith("(") or (after.startswith("=") and not after.startswith("=="))
                or before.endswith(".") or token in _NOT_COLUMNS
                or token.split(".")[0] in _NOT_COLUMNS or _is_number(token)):
            continue
        if strict:
            raise ColumnNotFoundError(token, available)
    return names


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def one_line(exc: Exception | str) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

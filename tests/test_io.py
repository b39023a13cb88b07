"""Tests of impactglm.io: reading CSV/CSV.gz/TSV/Parquet, errors with line numbers,
atomic no-clobber writes, and the columns a formula names."""
from __future__ import annotations

import gzip
import os

import numpy as np
import pandas as pd
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from impactglm import errors
from impactglm.io import read as io_read, write as io_write
from impactglm.errors import ColumnNotFoundError, DataError, FormulaError, ImpactGLMError

FORMATS = ["data.csv", "data.csv.gz", "data.tsv", "data.tab.gz", "data.parquet"]


@pytest.fixture
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    n = 50
    return pd.DataFrame({
        "UserID": rng.integers(1, 12, n),
        "x": rng.normal(size=n),
        "MovieID": rng.integers(100, 103, n),
        "genre": rng.choice(["Drama", "Action", "Comedy, dark"], n),
        "Rating": rng.choice(np.arange(1, 11) / 2, n),
    })


def write_text(path, text: str) -> None:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wt", newline="") as f:
        f.write(text)


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize("name", FORMATS)
def test_round_trip_every_format(tmp_path, frame, name):
    path = tmp_path / name
    before = frame.copy()
    io_write.write_table(frame, path)
    pd.testing.assert_frame_equal(frame, before)           # caller's data untouched
    back = io_read.read_table(path)
    assert list(back.columns) == list(frame.columns)
    for col in frame.columns:
        if frame[col].dtype.kind == "f":
            # shortest round-trip float text: exact, not approximately equal
            np.testing.assert_array_equal(back[col].to_numpy(), frame[col].to_numpy())
        else:
            assert back[col].tolist() == frame[col].tolist()


@pytest.mark.parametrize("name", FORMATS)
def test_reads_only_requested_columns_in_file_order(tmp_path, frame, name):
    path = tmp_path / name
    io_write.write_table(frame, path)
    back = io_read.read_table(path, columns=["Rating", "UserID", "genre"])
    assert list(back.columns) == ["UserID", "genre", "Rating"]
    assert back["Rating"].tolist() == frame["Rating"].tolist()


def test_csv_reader_is_given_only_the_requested_columns(tmp_path, frame, monkeypatch):
    seen = {}
    real = pacsv.read_csv

    def spy(source, read, parse, convert):
        seen["include"] = list(convert.include_columns)
        return real(source, read, parse, convert)

    monkeypatch.setattr(io_read.pacsv, "read_csv", spy)
    io_write.write_table(frame, tmp_path / "d.csv")
    io_read.read_table(tmp_path / "d.csv", columns=["x", "UserID"])
    assert seen["include"] == ["UserID", "x"]


def test_parquet_reader_is_given_only_the_requested_columns(tmp_path, frame, monkeypatch):
    seen = {}
    real = pq.read_table

    def spy(source, columns=None, **kw):
        seen["columns"] = list(columns)
        return real(source, columns=columns, **kw)

    monkeypatch.setattr(io_read.pq, "read_table", spy)
    io_write.write_table(frame, tmp_path / "d.parquet")
    io_read.read_table(tmp_path / "d.parquet", columns=["genre"])
    assert seen["columns"] == ["genre"]


@pytest.mark.parametrize("name", ["data.csv", "data.csv.gz", "data.tsv", "data.parquet"])
def test_categorical_columns_sorted_in_natural_order(tmp_path, name):
    df = pd.DataFrame({"id": [10, 9, 100, 9, 2], "s": ["b", "a", "c", "a", "b"],
                       "y": [1.5, 2.0, 3.0, 4.0, 5.0]})
    io_write.write_table(df, tmp_path / name)
    back = io_read.read_table(tmp_path / name, categorical=["id", "s"])
    assert isinstance(back["id"].dtype, pd.CategoricalDtype)
    assert back["id"].cat.categories.tolist() == [2, 9, 10, 100]      # numeric, 10 after 9
    assert back["id"].tolist() == [10, 9, 100, 9, 2]
    assert back["s"].cat.categories.tolist() == ["a", "b", "c"]
    assert back["y"].dtype == np.float64


def test_categorical_keeps_missing_values(tmp_path):
    write_text(tmp_path / "d.csv", "id,y\n3,1\n,2\n1,3\n")
    back = io_read.read_table(tmp_path / "d.csv", categorical=["id"])
    assert back["id"].cat.categories.tolist() == [1, 3]
    assert back["id"].isna().tolist() == [False, True, False]


def test_explicit_separator_and_tab_alias(tmp_path):
    write_text(tmp_path / "semi.csv", "a;b\n1;x\n2;y\n")
    back = io_read.read_table(tmp_path / "semi.csv", sep=";")
    assert back["a"].tolist() == [1, 2] and back["b"].tolist() == ["x", "y"]
    write_text(tmp_path / "tabs.txt", "a\tb\n1\tx\n")
    assert io_read.read_table(tmp_path / "tabs.txt", sep="\\t")["b"].tolist() == ["x"]
    with pytest.raises(DataError, match="one character"):
        io_read.read_table(tmp_path / "semi.csv", sep=";;")


def test_byte_order_mark_is_not_part_of_the_first_name(tmp_path):
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbfa,b\n1,2\n")
    assert io_read.file_columns(tmp_path / "bom.csv") == ["a", "b"]
    assert io_read.read_table(tmp_path / "bom.csv", columns=["a"])["a"].tolist() == [1]


def test_file_format_from_extension():
    assert io_read.file_format("x.CSV.GZ") == ("csv", "gzip")
    assert io_read.file_format("x.tsv") == ("tsv", None)
    assert io_read.file_format("x.tab.bz2") == ("tsv", "bz2")
    assert io_read.file_format("x.parquet") == ("parquet", None)
    assert io_read.file_format("x.txt") == ("csv", None)


# --------------------------------------------------------------------------- errors


def test_missing_file_suggests_a_close_name(tmp_path, frame):
    io_write.write_table(frame, tmp_path / "ratings.csv")
    with pytest.raises(errors.DataFileNotFoundError) as err:
        io_read.read_table(tmp_path / "ratngs.csv")
    message = str(err.value)
    assert "ratngs.csv" in message and "no such file" in message and "ratings.csv" in message
    assert "\n" not in message
    assert isinstance(err.value, ImpactGLMError) and isinstance(err.value, FileNotFoundError)


def test_directory_is_not_a_data_file(tmp_path):
    with pytest.raises(errors.DataFileNotFoundError, match="directory"):
        io_read.read_table(tmp_path)


@pytest.mark.parametrize("name", ["data.csv", "data.csv.gz", "data.parquet"])
def test_missing_column_names_it_and_the_closest(tmp_path, frame, name):
    io_write.write_table(frame, tmp_path / name)
    with pytest.raises(ColumnNotFoundError) as err:
        io_read.read_table(tmp_path / name, columns=["Rating", "MovieId"])
    assert str(err.value) == "column 'MovieId' is not in the data; did you mean 'MovieID'?"
    with pytest.raises(ColumnNotFoundError, match="'usr'"):
        io_read.read_table(tmp_path / name, categorical=["usr"])


@pytest.mark.parametrize("name", ["bad.csv", "bad.csv.gz"])
def test_malformed_row_reports_the_file_line(tmp_path, name):
    # line 1 header, 2-3 data, 4 blank (pyarrow skips it), 5 data, 6 the bad row
    write_text(tmp_path / name, "a,b,c\n1,2,3\n4,5,6\n\n7,8,9\n10,11\n12,13,14\n")
    with pytest.raises(errors.MalformedRowError) as err:
        io_read.read_table(tmp_path / name)
    assert err.value.line == 6
    message = str(err.value)
    assert "line 6" in message and "expected 3 fields, found 2" in message and "'10,11'" in message
    assert "\n" not in message


def test_malformed_row_far_into_a_multi_block_file(tmp_path, monkeypatch):
    monkeypatch.setattr(io_read, "BLOCK_SIZE", 1 << 10)   # many blocks, parsed by several threads
    lines = ["u,v"] + [f"{i},{i % 7}" for i in range(5000)]
    lines[3210] = "3209,1,extra"
    lines.insert(100, "")                            # a blank line shifts the file lines
    write_text(tmp_path / "big.csv", "\n".join(lines) + "\n")
    with pytest.raises(errors.MalformedRowError) as err:
        io_read.read_table(tmp_path / "big.csv", columns=["v"])
    expected_line = lines.index("3209,1,extra") + 1
    assert err.value.line == expected_line
    assert f"line {expected_line}:" in str(err.value)


@pytest.mark.parametrize("content", [b"", b"\n"])
def test_empty_file(tmp_path, content):
    (tmp_path / "e.csv").write_bytes(content)
    with pytest.raises(errors.EmptyFileError, match="is empty"):
        io_read.read_table(tmp_path / "e.csv")
    with gzip.open(tmp_path / "e.csv.gz", "wb") as f:
        f.write(content)
    with pytest.raises(errors.EmptyFileError, match="is empty"):
        io_read.read_table(tmp_path / "e.csv.gz")


def test_header_only_file_has_no_rows(tmp_path):
    write_text(tmp_path / "h.csv", "a,b\n")
    with pytest.raises(errors.EmptyFileError, match="no data rows"):
        io_read.read_table(tmp_path / "h.csv")
    io_write.write_table(pd.DataFrame({"a": np.array([], dtype=float)}), tmp_path / "h.parquet")
    with pytest.raises(errors.EmptyFileError, match="no data rows"):
        io_read.read_table(tmp_path / "h.parquet")


def test_not_a_parquet_file(tmp_path):
    write_text(tmp_path / "fake.parquet", "a,b\n1,2\n")
    with pytest.raises(errors.FileFormatError, match="Parquet"):
        io_read.read_table(tmp_path / "fake.parquet")


def test_duplicate_header_names(tmp_path):
    write_text(tmp_path / "d.csv", "a,b,a\n1,2,3\n")
    with pytest.raises(DataError, match="'a' appears twice"):
        io_read.read_table(tmp_path / "d.csv")
    assert io_read.read_table(tmp_path / "d.csv", columns=["b"])["b"].tolist() == [2]


# --------------------------------------------------------------------------- writing


def test_no_overwrite_without_force(tmp_path, frame):
    path = tmp_path / "out.csv"
    path.write_text("keep me\n")
    with pytest.raises(errors.OutputExistsError, match="refusing to overwrite"):
        io_write.write_table(frame, path)
    assert path.read_text() == "keep me\n"
    io_write.write_table(frame, path, force=True)
    assert io_read.read_table(path)["Rating"].tolist() == frame["Rating"].tolist()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]   # no temp files left


@pytest.mark.parametrize("name", ["out.csv", "out.parquet"])
def test_failed_write_leaves_no_partial_file(tmp_path, frame, monkeypatch, name):
    def explode(table, where, *args, **kwargs):
        with open(where, "wb") if isinstance(where, (str, os.PathLike)) else where as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(io_write.pacsv, "write_csv", explode)
    monkeypatch.setattr(io_write.pq, "write_table", explode)
    with pytest.raises(OSError, match="disk full"):
        io_write.write_table(frame, tmp_path / name)
    assert list(tmp_path.iterdir()) == []
    # a failed overwrite keeps the old file intact
    (tmp_path / name).write_bytes(b"old")
    with pytest.raises(OSError, match="disk full"):
        io_write.write_table(frame, tmp_path / name, force=True)
    assert [p.name for p in tmp_path.iterdir()] == [name]
    assert (tmp_path / name).read_bytes() == b"old"


def test_atomic_output_refuses_an_existing_file_at_commit_time(tmp_path):
    target = tmp_path / "m.json"
    with pytest.raises(errors.OutputExistsError):
        with io_write.atomic_output(target) as tmp:
            tmp.write_text("new")
            target.write_text("someone else was faster")
    assert target.read_text() == "someone else was faster"
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_write_into_missing_directory(tmp_path, frame):
    with pytest.raises(errors.DataFileNotFoundError, match="does not exist"):
        io_write.write_table(frame, tmp_path / "nope" / "x.csv")


def test_text_output_quotes_only_when_needed(tmp_path):
    df = pd.DataFrame({"a": ["x", "y"], "b": [1, 2]})
    io_write.write_table(df, tmp_path / "plain.tsv")
    assert (tmp_path / "plain.tsv").read_text() == "a\tb\nx\t1\ny\t2\n"
    df = pd.DataFrame({"a": ["x,1", 'q"t'], "b": [1, 2]})
    io_write.write_table(df, tmp_path / "quoted.csv")
    back = io_read.read_table(tmp_path / "quoted.csv")
    assert back["a"].tolist() == ["x,1", 'q"t']


def test_categorical_frame_is_written_as_values(tmp_path):
    df = pd.DataFrame({"g": pd.Categorical([30, 4, 30])})
    io_write.write_table(df, tmp_path / "g.csv")
    assert (tmp_path / "g.csv").read_text() == "g\n30\n4\n30\n"


# --------------------------------------------------------------------------- formulas


HEADER = ["UserID", "MovieID", "age", "genre", "Rating", "w", "odd name", "x.1"]


@pytest.mark.parametrize("formula, expected", [
    ("Rating ~ ^UserID + ^MovieID", ["UserID", "MovieID", "Rating"]),
    ("Rating ~ ^UserID + age + C(genre)", ["UserID", "age", "genre", "Rating"]),
    ("Rating ~ np.log(age) + I(age**2) + C(genre, Treatment(reference='Drama'))",
     ["age", "genre", "Rating"]),
    ("Rating ~ Q('odd name') + x.1 + (age | UserID)",
     ["UserID", "age", "Rating", "odd name", "x.1"]),
    ("Rating ~ (1 | UserID/MovieID) + center(age)", ["UserID", "MovieID", "age", "Rating"]),
    ("~ ^MovieID", ["MovieID"]),
])
def test_columns_in_formula(formula, expected):
    assert io_read.columns_in_formula(formula, HEADER) == expected


@pytest.mark.parametrize("formula, missing, close", [
    ("Ratng ~ ^UserID", "Ratng", "Rating"),
    ("Rating ~ ^UserId", "UserId", "UserID"),
    ("Rating ~ C(genres)", "genres", "genre"),
    ("Rating ~ (1 | Movie)", "Movie", "MovieID"),
    ("Rating ~ Q('odd nam')", "odd nam", "odd name"),
])
def test_columns_in_formula_unknown_names(formula, missing, close):
    with pytest.raises(ColumnNotFoundError) as err:
        io_read.columns_in_formula(formula, HEADER)
    assert err.value.name == missing and repr(close) in str(err.value)
    # non-strict: unknown Patsy names are ignored, explicit factors still checked
    if "^" not in formula and "|" not in formula:
        io_read.columns_in_formula(formula, HEADER, strict=False)


def test_columns_in_formula_bad_formula():
    with pytest.raises(FormulaError):
        io_read.columns_in_formula("Rating ~ ^UserID +", HEADER)


def test_strings_as_categorical_keeps_sorted_levels(tmp_path):
    df = pd.DataFrame({"g": ["b", "c", "a", "b"], "n": [3, 1, 2, 3], "x": [0.5, 1.5, 2.5, 3.5]})
    io_write.write_table(df, tmp_path / "d.csv")
    back = io_read.read_table(tmp_path / "d.csv", strings_as_categorical=True)
    assert back["g"].cat.categories.tolist() == ["a", "b", "c"]
    assert back["g"].tolist() == ["b", "c", "a", "b"]
    assert back["n"].dtype == np.int64 and back["x"].dtype == np.float64


def test_text_that_is_not_utf8_names_its_line(tmp_path):
    (tmp_path / "latin.csv").write_bytes(b"a,b\n1,ok\n\n2,caf\xe9\n3,x\n")
    with pytest.raises(errors.MalformedRowError) as err:
        io_read.read_table(tmp_path / "latin.csv")
    assert err.value.line == 4
    assert "line 4" in str(err.value) and "'b'" in str(err.value) and "UTF-8" in str(err.value)
    # a column that is not read does not matter
    assert io_read.read_table(tmp_path / "latin.csv", columns=["a"])["a"].tolist() == [1, 2, 3]


def test_truncated_gzip_is_a_file_format_error(tmp_path):
    whole = gzip.compress(b"a,b\n" + b"".join(b"%d,%d\n" % (i, i) for i in range(20000)))
    (tmp_path / "cut.csv.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(errors.FileFormatError, match="cut.csv.gz"):
        io_read.read_table(tmp_path / "cut.csv.gz")


def test_write_arrow_table(tmp_path):
    import pyarrow as pa
    table = pa.table({"p": np.array([0.25, np.nan]), "k": ["a", None]})
    io_write.write_table(table, tmp_path / "t.csv")
    assert (tmp_path / "t.csv").read_text() == "p,k\n0.25,a\nnan,\n"


@pytest.mark.parametrize("name", ["pieces.csv", "pieces.tsv.gz", "pieces.parquet"])
def test_table_writer_appends_pieces_atomically(tmp_path, frame, name):
    path = tmp_path / name
    with io_write.table_writer(path, quote_like=frame) as write:
        for start in range(0, len(frame), 20):
            write(frame.iloc[start:start + 20])
            assert not path.exists()                     # only complete files appear
    back = io_read.read_table(path)
    assert back["genre"].tolist() == frame["genre"].tolist()   # "Comedy, dark" quoted
    np.testing.assert_array_equal(back["x"].to_numpy(), frame["x"].to_numpy())
    with pytest.raises(errors.OutputExistsError):
        with io_write.table_writer(path) as write:
            write(frame)


def test_table_writer_failure_leaves_nothing(tmp_path, frame):
    with pytest.raises(RuntimeError):
        with io_write.table_writer(tmp_path / "p.csv") as write:
            write(frame.iloc[:10])
            raise RuntimeError("stop")
    assert list(tmp_path.iterdir()) == []

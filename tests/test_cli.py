"""End-to-end tests of the ``impactglm`` command line (in-process through main(argv),
plus one subprocess run of the console script)."""
from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from impactglm import cli, io
from impactglm.simulate import make_ratings

FORMULA = "Rating ~ ^UserID + ^MovieID + age"


def run(capsys, *argv):
    """Run main(argv); return (exit code, stdout, stderr)."""
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code, out, err, *fragments):
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err                      # one line, no traceback
    assert lines[0].startswith("impactglm: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture(scope="module")
def ratings() -> pd.DataFrame:
    return make_ratings(3000, 60, 40, kind="multinomial", seed=3).data


@pytest.fixture
def csv_file(tmp_path, ratings):
    path = tmp_path / "ratings.csv"
    io.write_table(ratings, path)
    return path


# --------------------------------------------------------------------------- user errors


def test_missing_data_file(capsys, tmp_path, csv_file):
    code, out, err = run(capsys, "fit", "--data", tmp_path / "ratngs.csv", "--formula", FORMULA,
                         "--family", "multinomial", "--model", tmp_path / "m.json")
    assert_user_error(code, out, err, "ratngs.csv", "no such file", "ratings.csv")
    assert not (tmp_path / "m.json").exists()


def test_missing_column_names_the_closest(capsys, tmp_path, csv_file):
    code, out, err = run(capsys, "fit", "--data", csv_file, "--formula",
                         "Rating ~ ^UserId + ^MovieID", "--family", "multinomial",
                         "--model", tmp_path / "m.json")
    assert_user_error(code, out, err, "'UserId'", "did you mean 'UserID'")
    code, out, err = run(capsys, "fit", "--data", csv_file, "--formula", FORMULA,
                         "--weights", "wt", "--model", tmp_path / "m.json")
    assert_user_error(code, out, err, "'wt'")


@pytest.mark.parametrize("name", ["bad.csv", "bad.csv.gz", "bad.tsv"])
def test_malformed_row_with_line_number(capsys, tmp_path, name):
    sep = "\t" if name.endswith(".tsv") else ","
    lines = [sep.join(["Rating", "UserID", "MovieID", "age"])]
    lines += [sep.join(["4.0", str(i % 5), str(i % 3), "30"]) for i in range(20)]
    lines[13] = sep.join(["4.0", "1", "2"])          # line 14 of the file lacks a field
    text = "\n".join(lines) + "\n"
    path = tmp_path / name
    if name.endswith(".gz"):
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    code, out, err = run(capsys, "fit", "--data", path, "--formula", FORMULA,
                         "--family", "multinomial", "--model", tmp_path / "m.json")
    assert_user_error(code, out, err, name, "line 14", "expected 4 fields, found 3")


@pytest.mark.parametrize("content", ["", "Rating,UserID,MovieID,age\n"])
def test_empty_file(capsys, tmp_path, content):
    path = tmp_path / "empty.csv"
    path.write_text(content)
    code, out, err = run(capsys, "fit", "--data", path, "--formula", FORMULA,
                         "--family", "multinomial", "--model", tmp_path / "m.json")
    assert_user_error(code, out, err, "empty.csv")
    assert "empty" in err or "no data rows" in err


def test_existing_model_is_not_overwritten_and_nothing_is_read(capsys, tmp_path):
    model = tmp_path / "m.json"
    model.write_text("precious")
    # the data file does not even exist: the output check comes first
    code, out, err = run(capsys, "fit", "--data", tmp_path / "none.csv", "--formula", FORMULA,
                         "--model", model)
    assert_user_error(code, out, err, "m.json", "exists", "--force")
    assert model.read_text() == "precious"


def test_existing_coef_tsv_is_not_overwritten(capsys, tmp_path, csv_file):
    (tmp_path / "coef.tsv").write_text("precious")
    code, out, err = run(capsys, "fit", "--data", csv_file, "--formula", FORMULA,
                         "--model", tmp_path / "m.json", "--coef-tsv", tmp_path / "coef.tsv")
    assert_user_error(code, out, err, "coef.tsv", "exists")
    assert (tmp_path / "coef.tsv").read_text() == "precious"


def test_bad_formula_is_one_line(capsys, tmp_path, csv_file):
    code, out, err = run(capsys, "fit", "--data", csv_file, "--formula", "Rating ~ ^UserID +",
                         "--model", tmp_path / "m.json")
    assert_user_error(code, out, err, "Rating ~ ^UserID +", "at character")


def test_unknown_family(capsys, tmp_path, csv_file):
    code, out, err = run(capsys, "fit", "--data", csv_file, "--formula", FORMULA,
                         "--family", "multinomal", "--model", tmp_path / "m.json")
    assert_user_error(code, out, err, "'multinomal'", "did you mean 'multinomial'")


@pytest.mark.parametrize("option, value", [("--prior-sd", "big"), ("--prior-sd", "-1"),
                                           ("--holdout", "1.5"), ("--seed", "x")])
def test_bad_option_values_are_usage_errors(capsys, tmp_path, csv_file, option, value):
    code, out, err = run(capsys, "fit", "--data", csv_file, "--formula", FORMULA,
                         "--model", tmp_path / "m.json", option, value)
    assert code == 2
    assert "impactglm fit: error:" in err and option in err
    assert "Traceback" not in err


def test_prior_sd_values():
    assert cli._prior_sd("auto") == "auto"
    assert cli._prior_sd("None") is None
    assert cli._prior_sd("0.25") == 0.25


def test_no_command_prints_help(capsys):
    code, out, err = run(capsys)
    assert code == 2 and "fit" in err and "score" in err


def test_score_and_summary_missing_model(capsys, tmp_path, csv_file):
    code, out, err = run(capsys, "score", "--model", tmp_path / "nope.json", "--data", csv_file,
                         "--out", tmp_path / "s.csv")
    assert_user_error(code, out, err, "nope.json", "no such file")
    code, out, err = run(capsys, "summary", "--model", tmp_path / "nope.json")
    assert_user_error(code, out, err, "nope.json", "no such file")


def test_score_refuses_existing_output(capsys, tmp_path, csv_file):
    (tmp_path / "s.csv").write_text("precious")
    code, out, err = run(capsys, "score", "--model", tmp_path / "m.json", "--data", csv_file,
                         "--out", tmp_path / "s.csv")
    assert_user_error(code, out, err, "s.csv", "exists")
    assert (tmp_path / "s.csv").read_text() == "precious"


def test_internal_error_exit_1_without_traceback(capsys, monkeypatch):
    def boom(args):
        raise RuntimeError("kaboom\nsecond line")

    monkeypatch.setattr(cli, "cmd_summary", boom)
    monkeypatch.delenv("IMPACTGLM_DEBUG", raising=False)
    code, out, err = run(capsys, "summary", "--model", "x.json")
    assert code == 1
    assert err.strip() == ("impactglm: error: internal error: RuntimeError: kaboom "
                           "(set IMPACTGLM_DEBUG=1 for the traceback)")
    monkeypatch.setenv("IMPACTGLM_DEBUG", "1")
    with pytest.raises(RuntimeError, match="kaboom"):
        cli.main(["summary", "--model", "x.json"])


def test_console_script_runs(tmp_path):
    exe = shutil.which("impactglm")
    command = [exe] if exe else [sys.executable, "-m", "impactglm.cli"]
    done = subprocess.run(command + ["fit", "--data", str(tmp_path / "missing.csv"),
                                     "--formula", FORMULA, "--model", str(tmp_path / "m.json")],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "IMPACTGLM_DEBUG": "0"})
    assert done.returncode == 2
    assert done.stderr.strip() == f"impactglm: error: {str(tmp_path / 'missing.csv')!r}: no such file"
    version = subprocess.run(command + ["--version"], capture_output=True, text=True, timeout=120)
    assert version.returncode == 0 and version.stdout.strip().startswith("impactglm ")

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

from impactglm import _util
from impactglm.cli import commands as cli
from impactglm.io import read as io_read, write as io_write
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
    io_write.write_table(ratings, path)
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
    assert cli.parse_prior_sd("auto") == "auto"
    assert cli.parse_prior_sd("None") is None
    assert cli.parse_prior_sd("0.25") == 0.25


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
    missing = str(tmp_path / "missing.csv")
    assert done.stderr.strip() == f"impactglm: error: {missing!r}: no such file"
    version = subprocess.run(command + ["--version"], capture_output=True, text=True, timeout=120)
    assert version.returncode == 0 and version.stdout.strip().startswith("impactglm ")


# --------------------------------------------------------------------------- end to end
# The multinomial model is fitted once through the CLI (module fixture) and once in
# Python on the in-memory frame (the reference); every other test reuses them or fits
# a cheap Gaussian model, to keep the file fast.

import impactglm as ig  # noqa: E402
from impactglm.cli.demo import demo_sizes, score_probabilities  # noqa: E402

MULTI = "Rating ~ ^UserID + ^MovieID + age"
PRIOR = 0.7                                 # fixed prior sd: a shorter fit than "auto"
CHEAP = "Rating ~ ^MovieID + age"          # fitted with --family gaussian


def write_independently(df: pd.DataFrame, path) -> None:
    """Write with pandas (not impactglm.io), so that reading is checked independently."""
    name = str(path)
    if name.endswith(".parquet"):
        df.to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False, sep="\t" if ".tsv" in name else ",")


class Fitted:
    """Paths and outputs of the one CLI multinomial fit."""


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, ratings):
    tmp = tmp_path_factory.mktemp("fitted")
    f = Fitted()
    f.data, f.model, f.coef = tmp / "train.csv.gz", tmp / "model.json", tmp / "coef.tsv"
    write_independently(ratings, f.data)
    argv = ["fit", "--data", f.data, "--formula", MULTI, "--family", "multinomial",
            "--prior-sd", PRIOR, "--holdout", "0.2", "--seed", "5", "--model", f.model,
            "--coef-tsv", f.coef]
    import contextlib
    import io as stdio
    out, err = stdio.StringIO(), stdio.StringIO()
    with pytest.MonkeyPatch.context() as mp:             # pretend stderr is a terminal
        mp.setattr(_util, "stderr_is_terminal", lambda: True)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            f.code = cli.main([str(a) for a in argv])
    f.out, f.err = out.getvalue(), err.getvalue()
    return f


@pytest.fixture(scope="module")
def reference(ratings):
    """The same model fitted in Python on the in-memory frame."""
    return ig.glm(MULTI, ratings, family="multinomial", prior_sd=PRIOR).fit(holdout=0.2, seed=5)


def test_fit_from_csv_gz_matches_the_python_fit(fitted, reference):
    assert fitted.code == 0, fitted.err
    assert "Multinomial" in fitted.out and "Holdout" in fitted.out
    assert f"{reference.holdout_metrics.nobs}" in fitted.out.replace(",", "")
    assert "read 3,000 rows" in fitted.err and "times:" in fitted.err   # notes (no --quiet)
    # progress bars on a terminal: bytes read, then one tick per solver iteration
    assert "reading train.csv.gz" in fitted.err
    ticks = [line for line in fitted.err.replace("\r", "\n").splitlines()
             if line.startswith("fitting:") and "max|grad|" in line]
    assert len(ticks) >= 3
    loaded = ig.load(fitted.model)
    np.testing.assert_allclose(loaded.params.to_numpy(), reference.params.to_numpy(),
                               rtol=1e-9, atol=1e-12)
    assert loaded.prior_sd == pytest.approx(reference.prior_sd, rel=1e-9)
    assert sorted(p.name for p in fitted.model.parent.iterdir()) == [
        "coef.tsv", "model.json", "model.json.npz", "train.csv.gz"]          # no temp files


@pytest.mark.parametrize("name", ["new.csv", "new.csv.gz", "new.tsv", "new.parquet"])
def test_score_every_format(capsys, tmp_path, ratings, fitted, reference, name):
    data = tmp_path / name
    write_independently(ratings, data)
    out_name = "scored.parquet" if "csv" in name else "scored.csv"
    code, out, err = run(capsys, "score", "--model", fitted.model, "--data", data,
                         "--out", tmp_path / out_name, "--quiet")
    assert code == 0, err
    result = io_read.read_table(tmp_path / out_name)
    classes = [cli.class_label(c) for c in reference.classes]
    assert list(result.columns) == ([f"prob_{c}" for c in classes] + ["predicted"]
                                    + list(ratings.columns))
    np.testing.assert_allclose(result.iloc[:, :len(classes)].to_numpy(),
                               reference.predict(ratings).to_numpy(), rtol=1e-9, atol=1e-15)
    np.testing.assert_array_equal(result["predicted"].to_numpy(dtype=float),
                                  reference.predict(ratings, which="class").to_numpy(dtype=float))
    for col in ratings.columns:                        # input columns carried through unchanged
        assert result[col].astype(str).tolist() == ratings[col].astype(str).tolist() \
            or np.array_equal(result[col].to_numpy(dtype=float), ratings[col].to_numpy(dtype=float))
    # the printed accuracy is the share of rows whose predicted class is the rating
    accuracy = float(np.mean(result["predicted"].to_numpy(dtype=float)
                             == ratings["Rating"].to_numpy(dtype=float)))
    assert f"accuracy {accuracy:,.6g}" in out and "deviance" in out and "log-loss" in out


@pytest.mark.parametrize("name", ["d.csv", "d.csv.gz", "d.tsv", "d.parquet"])
def test_fit_every_format(capsys, tmp_path, ratings, name):
    data = tmp_path / name
    write_independently(ratings, data)
    code, out, err = run(capsys, "fit", "--data", data, "--formula", CHEAP, "--family",
                         "gaussian", "--prior-sd", "0.5", "--model", tmp_path / "m.json",
                         "--quiet")
    assert code == 0, err
    assert err == ""                                   # --quiet: nothing on stderr
    ref = cheap_reference(ratings)
    loaded = ig.load(tmp_path / "m.json")
    np.testing.assert_allclose(loaded.params.to_numpy(), ref.params.to_numpy(), rtol=1e-9)
    np.testing.assert_allclose(loaded.level_effects("MovieID")["effect"].to_numpy(),
                               ref.level_effects("MovieID")["effect"].to_numpy(), rtol=1e-9,
                               atol=1e-12)


_CHEAP = {}


def cheap_reference(ratings):
    if "ref" not in _CHEAP:
        _CHEAP["ref"] = ig.glm(CHEAP, ratings, family="gaussian", prior_sd=0.5).fit()
    return _CHEAP["ref"]


def test_coef_tsv_rebuilds_the_predictions(fitted, ratings, reference):
    """Any tool can score from the TSV: softmax of the summed rows equals predict()."""
    table = pd.read_csv(fitted.coef, sep="\t", dtype={"outcome": str, "level": str},
                        keep_default_na=False)
    assert list(table.columns) == ["outcome", "variable", "kind", "level", "value"]
    assert set(table["kind"]) == {"Const", "Numeric", "CategoricalLevel"}
    classes = [cli.class_label(c) for c in reference.classes]
    assert list(dict.fromkeys(table["outcome"])) == classes
    params = reference.params
    for j, c in enumerate(reference.classes):
        rows = table[table["outcome"] == classes[j]]
        const = rows[rows["kind"] == "Const"]["value"].to_numpy()
        np.testing.assert_allclose(const, [params.loc["Intercept", c]], rtol=1e-9, atol=1e-12)
        age = rows[(rows["kind"] == "Numeric") & (rows["variable"] == "age")]["value"]
        np.testing.assert_allclose(age, [params.loc["age", c]], rtol=1e-9, atol=1e-12)
        for factor in ("UserID", "MovieID"):
            lv = reference.level_effects(factor)
            got = rows[rows["variable"] == factor]
            assert got["level"].tolist() == [str(x) for x in lv.index]
            np.testing.assert_allclose(got["value"].to_numpy(), lv[f"effect[{c}]"].to_numpy(),
                                       rtol=1e-9, atol=1e-12)
    # rebuild eta for every row from the TSV alone
    eta = np.zeros((len(ratings), len(classes)))
    for j, label in enumerate(classes):
        rows = table[table["outcome"] == label]
        value = {(v, lvl): x for v, lvl, x in zip(rows["variable"], rows["level"], rows["value"])}
        eta[:, j] += value[("Intercept", "")] + value[("age", "")] * ratings["age"].to_numpy()
        for factor in ("UserID", "MovieID"):
            eta[:, j] += [value.get((factor, str(x)), 0.0) for x in ratings[factor]]
    p = np.exp(eta - eta.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(p, reference.predict(ratings).to_numpy(), rtol=1e-8, atol=1e-12)


def test_summary_of_saved_model(capsys, fitted):
    code, out, err = run(capsys, "summary", "--model", fitted.model)
    assert code == 0 and out.strip() and out.strip() in fitted.out


def test_overwrite_needs_force(capsys, tmp_path, ratings):
    data = tmp_path / "d.parquet"
    write_independently(ratings, data)
    model = tmp_path / "m.json"
    model.write_text("old model")

    def argv(*extra):
        return ["fit", "--data", data, "--formula", CHEAP, "--family", "gaussian",
                "--prior-sd", "0.5", "--model", model, "--quiet", *extra]

    code, out, err = run(capsys, *argv())
    assert_user_error(code, out, err, "m.json", "exists")
    assert model.read_text() == "old model"
    assert run(capsys, *argv("--force"))[0] == 0
    assert ig.load(model).params.to_numpy() == pytest.approx(
        cheap_reference(pd.read_parquet(data)).params.to_numpy(), rel=1e-9)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.parquet", "m.json", "m.json.npz"]


def test_failed_save_leaves_nothing(capsys, tmp_path, ratings, monkeypatch):
    from impactglm.results import files

    def broken(res, path, *args, **kwargs):
        with open(path, "w") as f:
            f.write('{"partial": ')
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(files, "save", broken)
    data = tmp_path / "d.parquet"
    write_independently(ratings, data)
    code, out, err = run(capsys, "fit", "--data", data, "--formula", CHEAP, "--family", "gaussian",
                         "--prior-sd", "0.5", "--model", tmp_path / "m.json",
                         "--coef-tsv", tmp_path / "c.tsv", "--quiet")
    assert_user_error(code, out, err, "No space left on device")
    assert [p.name for p in tmp_path.iterdir()] == ["d.parquet"]   # no model, temp dir, TSV


def test_score_without_outcome_and_with_unseen_levels(capsys, tmp_path, ratings, fitted,
                                                      reference):
    new = ratings.drop(columns="Rating").iloc[:50].copy()
    new["UserID"] = new["UserID"] + 10_000                 # users never seen
    data = tmp_path / "new.csv"
    write_independently(new, data)
    with pytest.warns(ig.errors.UnseenLevelWarning):
        expected = reference.predict(new).to_numpy()
    code, out, err = run(capsys, "score", "--model", fitted.model, "--data", data,
                         "--out", tmp_path / "s.csv")
    assert code == 0, err
    assert "accuracy" not in out
    assert "impactglm: warning: " in err and "UserID" in err
    result = io_read.read_table(tmp_path / "s.csv")
    assert list(result.columns)[-4:] == list(new.columns)
    np.testing.assert_allclose(result.iloc[:, :10].to_numpy(), expected, rtol=1e-9)


def test_score_missing_predictor_column(capsys, tmp_path, ratings, fitted):
    data = tmp_path / "new.csv"
    write_independently(ratings.drop(columns="MovieID"), data)
    code, out, err = run(capsys, "score", "--model", fitted.model, "--data", data,
                         "--out", tmp_path / "s.csv")
    assert_user_error(code, out, err, "'MovieID'")
    assert not (tmp_path / "s.csv").exists()


def test_binomial_fit_coefficients_and_score(capsys, tmp_path):
    df = make_ratings(2000, 40, 30, kind="binary", seed=4).data
    formula = "y ~ ^UserID + age + C(genre)"
    data = tmp_path / "d.csv"
    write_independently(df, data)
    code, out, err = run(capsys, "fit", "--data", data, "--formula", formula, "--family",
                         "binomial", "--model", tmp_path / "m.json", "--coef-tsv",
                         tmp_path / "c.tsv")       # prior sd: auto (default)
    assert code == 0, err
    # stderr is not a terminal here: notes, but no progress bars
    assert "read 2,000 rows" in err and "it/s" not in err and "\r" not in err
    ref = ig.glm(formula, df, family="binomial", prior_sd="auto").fit()
    table = pd.read_csv(tmp_path / "c.tsv", sep="\t", keep_default_na=False)
    assert set(table["outcome"]) == {"y"}
    fixed = table[table["variable"] != "UserID"]
    assert fixed["kind"].tolist() == ["Const"] + ["CategoricalLevel"] * 6 + ["Numeric"]
    assert fixed["variable"].tolist() == ["Intercept"] + ["C(genre)"] * 6 + ["age"]
    assert fixed["level"].tolist()[1:-1] == [n.split("[T.")[1][:-1] for n in ref.params.index[1:-1]]
    np.testing.assert_allclose(fixed["value"].to_numpy(), ref.params.to_numpy(), rtol=1e-9)
    levels = table[table["variable"] == "UserID"]
    np.testing.assert_allclose(levels["value"].to_numpy(),
                               ref.level_effects("UserID")["effect"].to_numpy(), rtol=1e-9,
                               atol=1e-12)
    code, out, err = run(capsys, "score", "--model", tmp_path / "m.json", "--data", data,
                         "--out", tmp_path / "s.parquet", "--quiet")
    assert code == 0, err
    result = pd.read_parquet(tmp_path / "s.parquet")
    assert list(result.columns) == ["prob", "predicted"] + list(df.columns)
    np.testing.assert_allclose(result["prob"].to_numpy(), ref.predict(df).to_numpy(), rtol=1e-9)
    np.testing.assert_array_equal(result["predicted"], (ref.predict(df).to_numpy() >= 0.5) * 1)
    assert "accuracy" in out and "deviance" in out


def test_demo_runs_small(capsys):
    code, out, err = run(capsys, "demo", "--rows", "6000", "--seed", "2", "--quiet")
    assert code == 0, err
    table = {}
    for line in out.splitlines():
        for key, start in (("truth", "truth"), ("model", "impactglm  ^UserID"),
                           ("no ids", "impactglm  age"), ("null", "class frequencies")):
            if line.startswith(start):
                table[key] = float(line.split()[-2])
    assert len(table) == 4, out
    # the truth beats the model, the ids help, everything beats the class frequencies
    assert table["truth"] < table["model"] < table["no ids"] < table["null"]
    assert "times:" in out and "(family multinomial)" in out and "^UserID:" in out


def test_demo_scores_agree_with_the_simulator():
    sim = make_ratings(5000, 50, 40, kind="multinomial", seed=9)
    rows = np.arange(0, 5000, 3)
    y = np.rint(sim.data["Rating"].to_numpy()[rows] * 2).astype(int) - 1
    s = score_probabilities(sim.true_proba(rows), y)
    assert s.logloss == pytest.approx(sim.oracle_logloss(rows), rel=1e-12)
    binary = make_ratings(3000, 30, 20, kind="binary", seed=9)
    yb = binary.data["y"].to_numpy()
    assert score_probabilities(binary.true_proba(), yb).logloss == pytest.approx(
        binary.oracle_logloss(), rel=1e-12)
    assert demo_sizes(1_000_000) == (6040, 3706)


def test_score_rows_with_missing_values_get_empty_predictions(capsys, tmp_path, ratings,
                                                              fitted, reference):
    new = ratings.iloc[:40].copy()
    new.loc[[3, 17], "age"] = np.nan
    data = tmp_path / "na.csv"
    write_independently(new, data)
    code, out, err = run(capsys, "score", "--model", fitted.model, "--data", data,
                         "--out", tmp_path / "s.csv", "--quiet")
    assert code == 0, err
    result = pd.read_csv(tmp_path / "s.csv")
    assert len(result) == 40
    missing = result["prob_0.5"].isna().to_numpy()
    assert missing.tolist() == [i in (3, 17) for i in range(40)]
    assert result["predicted"].isna().to_numpy().tolist() == missing.tolist()
    kept = new.drop(index=[3, 17])
    np.testing.assert_allclose(result.loc[~missing].iloc[:, :10].to_numpy(),
                               reference.predict(kept).to_numpy(), rtol=1e-9)
    assert "rows 38" in out


@pytest.mark.parametrize("out_name", ["s.csv", "s.parquet"])
def test_chunked_scoring_equals_one_piece(capsys, tmp_path, ratings, fitted, reference,
                                          monkeypatch, out_name):
    data = tmp_path / "d.parquet"
    write_independently(ratings, data)
    monkeypatch.setattr(cli, "SCORE_CHUNK", 700)          # 5 chunks, the last one short
    code, out, err = run(capsys, "score", "--model", fitted.model, "--data", data,
                         "--out", tmp_path / out_name, "--quiet")
    assert code == 0, err
    result = io_read.read_table(tmp_path / out_name)
    assert len(result) == len(ratings)
    np.testing.assert_allclose(result.iloc[:, :10].to_numpy(),
                               reference.predict(ratings).to_numpy(), rtol=1e-9, atol=1e-15)
    from impactglm.metrics import evaluate
    whole = evaluate(reference, ratings)
    line = [x for x in out.splitlines() if x.startswith("on ")][0]
    assert f"accuracy {whole.accuracy:,.6g}" in line
    assert f"log-loss {whole.logloss:,.6g}" in line
    assert f"deviance {whole.deviance:,.6g}" in line and "rows 3,000" in line


def test_combine_metrics_is_the_metric_of_the_union():
    parts = [{"nobs": 2, "sum_weights": 2.0, "accuracy": 0.5, "logloss": 1.0, "deviance": 4.0},
             {"nobs": 6, "sum_weights": 6.0, "accuracy": 1.0, "logloss": 2.0, "deviance": 24.0}]
    got = cli.combine_metrics(parts)
    assert got == {"nobs": 8, "accuracy": 0.875, "logloss": 1.75, "deviance": 28.0}
    gaussian = [{"nobs": 3, "sum_weights": 3.0, "accuracy": None, "logloss": None,
                 "deviance": 1.5}] * 2
    assert cli.combine_metrics(gaussian) == {"nobs": 6, "deviance": 3.0}


def test_wrong_separator_is_named(capsys, tmp_path, ratings):
    path = tmp_path / "semi.csv"
    ratings.to_csv(path, sep=";", index=False)
    code, out, err = run(capsys, "fit", "--data", path, "--formula", CHEAP,
                         "--model", tmp_path / "m.json")
    assert_user_error(code, out, err, "is the separator ';'", "--sep ';'")
    code, out, err = run(capsys, "fit", "--data", path, "--formula", CHEAP, "--sep", ";",
                         "--family", "gaussian", "--prior-sd", "0.5", "--quiet",
                         "--model", tmp_path / "m.json")
    assert code == 0, err


def test_holdout_for_a_family_without_it_is_a_user_error(capsys, tmp_path, ratings):
    data = tmp_path / "d.parquet"
    write_independently(ratings, data)
    code, out, err = run(capsys, "fit", "--data", data, "--formula", CHEAP, "--family",
                         "gaussian", "--holdout", "0.1", "--model", tmp_path / "m.json")
    assert_user_error(code, out, err, "holdout")
    assert not (tmp_path / "m.json").exists()

"""Untrusted input: formulas and model files never run code; damaged model files give
ModelFileError; outputs never clobber inputs (issue 10, sections 1, 2 and 4).

Every injection test plants a sentinel path that the injected code would create; the
sentinel must not appear, and the error must be impactglm's own.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import patsy
import pytest

import impactglm as ig
from impactglm.cli import commands as cli
from impactglm.design.namespace import check_expression, ClosedEnvironment, NUMPY_NAMES
from impactglm.design.patsy import EVAL_ENV
from impactglm.errors import DataError, FormulaError, ImpactGLMError, ModelFileError
from impactglm.modelfile import arrays_path, FORMAT_VERSION, remove_stale_temps


@pytest.fixture(scope="module")
def df() -> pd.DataFrame:
    rng = np.random.default_rng(10)
    n = 120
    x = rng.normal(size=n)
    g = rng.choice([f"g{i}" for i in range(8)], n)
    k = rng.choice(["a", "b", "c"], n)
    y = 1 + 0.5 * x + (k == "b") + rng.normal(size=n)
    return pd.DataFrame({"y": y, "x": x, "pos": np.exp(x), "k": k, "g": g,
                         "cnt": rng.poisson(np.exp(0.3 * x)), "expo": rng.uniform(1, 2, n)})


def _injections(sentinel: str) -> list[str]:
    s = repr(sentinel)
    return [
        f"y ~ __import__('os').system('touch {sentinel}')",
        f"y ~ I(x + 0*len(str(__import__('pathlib').Path({s}).touch())))",
        f"y ~ x + I(open({s}, 'w'))",
        f"y ~ x + I(x.__class__.__mro__[1].__subclasses__())",
        f"y ~ x + I(getattr(x, 'to_csv')({s}))",
        f"y ~ x + I(x.to_csv({s}))",
        f"y ~ x + I((lambda: open({s}, 'w'))())",
        f"y ~ x + I([open({s}, 'w') for _ in [1]])",
        f"y ~ x + I(f\"{{open({s}, 'w')}}\")",
        f"y ~ x + I((f := open({s}, 'w')))",
        f"y ~ x + np.save({s}, x)",
        f"y ~ x + np.load({s})",
        f"y ~ x + np.fromfile({s})",
        f"y ~ x + np.lib.npyio.savetxt({s}, x)",
        f"y ~ x + I(np.savetxt({s}, x))",
        f"y ~ x + np.frompyfunc(open, 1, 1)({s})",
        f"y ~ x + eval(\"open({s}, 'w')\")",
        f"y ~ x + exec(\"open({s}, 'w')\")",
        f"y ~ x + C(k, Treatment(reference=open({s}, 'w')))",
        f"y ~ x + C(k, **{{'levels': open({s}, 'w')}})",
        f"y ~ x + I(*[open({s}, 'w')])",
        f"y ~ x + Q('__builtins__')",
        f"y ~ x + _patsy_stobj0__center__.transform(open({s}, 'w'))",
        f"y ~ x + I(np.__dict__['save']({s}, x))",
        f"y ~ x + np.log.__call__(x)",
        f"I(open({s}, 'w')) ~ x",
    ]


INJECTION_COUNT = len(_injections("s"))


@pytest.mark.parametrize("i", range(INJECTION_COUNT))
def test_injected_formula_is_refused_before_it_runs(tmp_path, df, i):
    sentinel = tmp_path / "SENTINEL"
    formula = _injections(str(sentinel))[i]
    with pytest.raises(FormulaError):
        ig.glm(formula, df).fit()
    assert not sentinel.exists()


@pytest.mark.parametrize("i", [0, 1, 2, 6, 10])
def test_injected_formula_is_refused_by_lmm(tmp_path, df, i):
    sentinel = tmp_path / "SENTINEL"
    formula = _injections(str(sentinel))[i] + " + (1 | g)"
    with pytest.raises(FormulaError):
        ig.lmm(formula, df).fit()
    assert not sentinel.exists()
    with pytest.raises(FormulaError):          # inside a random-effects term
        ig.lmm(f"y ~ x + (I(open({str(sentinel)!r}, 'w')) | g)", df).fit()
    assert not sentinel.exists()


def test_injected_formula_is_refused_by_the_cli(tmp_path, df, capsys):
    data = tmp_path / "d.csv"
    df.to_csv(data, index=False)
    sentinel = tmp_path / "SENTINEL"
    for formula in _injections(str(sentinel))[:3]:
        code = cli.main(["fit", "--data", str(data), "--formula", formula,
                         "--model", str(tmp_path / "m.json"), "--quiet"])
        err = capsys.readouterr().err
        assert code == 2, err
        assert err.startswith("impactglm: error: ") and len(err.strip().splitlines()) == 1
        assert not sentinel.exists()
        assert not (tmp_path / "m.json").exists()


def test_the_error_names_the_offender_with_a_caret(df):
    with pytest.raises(FormulaError, match="unknown function 'len'") as e:
        ig.glm("y ~ x + I(len(x))", df)
    assert e.value.position == "y ~ x + I(len(x))".index("len")
    with pytest.raises(FormulaError, match="__import__") as e:
        ig.glm("y ~ x + __import__('os')", df)
    assert e.value.position == "y ~ x + __import__('os')".index("__import__")
    with pytest.raises(FormulaError, match="np.load"):
        ig.glm("y ~ np.load('x')", df)
    with pytest.raises(FormulaError, match="cannot access attributes"):
        ig.glm("y ~ x.shape", df)


@pytest.mark.parametrize("formula", ["y ~ I(x + 10**10**10)", "y ~ I(x + (10**100)**100)",
                                     "y ~ I(x + len([0] * 10**10))", "y ~ x + I([0] * 10**10)",
                                     "y ~ I(x + (1 << 10**10))"])
def test_formulas_that_would_never_finish_are_refused(df, formula):
    with pytest.raises(FormulaError):
        ig.glm(formula, df)


def test_a_string_literal_term_is_an_error(df):
    with pytest.raises(FormulaError, match="the string 'g' is not a term") as e:
        ig.glm("y ~ x + 'g'", df)
    assert e.value.position == "y ~ x + 'g'".index("'g'")
    with pytest.raises(FormulaError, match="string"):
        ig.glm("y ~ x + I(x + 'a')", df)


def test_a_function_name_used_as_a_column(df):
    with pytest.raises(FormulaError, match="'log' is a function, not a column"):
        ig.glm("y ~ x + log", df)
    with_log = df.assign(log=np.random.default_rng(1).normal(size=len(df)))          # a column named log is a column
    res = ig.glm("y ~ x + log", with_log).fit()
    assert "log" in res.params.index


def test_date_columns_name_the_column_and_the_fix(df):
    dated = df.assign(when=pd.date_range("2020-01-01", periods=len(df)),
                      whenz=pd.date_range("2020-01-01", periods=len(df), tz="UTC"))
    for formula, col in [("y ~ x + when", "when"), ("y ~ C(when)", "when"),
                         ("y ~ np.log(whenz)", "whenz")]:
        with pytest.raises(DataError, match=f"column '{col}' holds dates") as e:
            ig.glm(formula, dated).fit()
        assert ".dt.year" in str(e.value) and ".astype(str)" in str(e.value)


def test_patsy_evaluates_without_builtins():
    assert isinstance(EVAL_ENV.subset(["np"]), ClosedEnvironment)
    assert isinstance(EVAL_ENV.with_outer_namespace({}), ClosedEnvironment)
    with pytest.raises(NameError):
        EVAL_ENV.eval("len")                       # passes the check (could be a column) ...
    with pytest.raises(NameError):
        EVAL_ENV.subset(["np"]).eval("open")       # ... but no builtin is reachable
    with pytest.raises(FormulaError):
        EVAL_ENV.eval("__import__('os')")


def test_numpy_whitelist_is_elementwise_functions_only():
    assert {"log", "exp", "sqrt", "abs", "maximum", "isfinite", "clip", "where", "pi"} <= NUMPY_NAMES
    assert not {"load", "save", "fromfile", "lib", "frompyfunc", "vectorize", "savetxt",
                "genfromtxt", "memmap", "ctypeslib", "testing", "random"} & NUMPY_NAMES
    check_expression("np.maximum(x, 0) + np.log1p(np.abs(x))")
    check_expression("C(k, Treatment(reference='b')) ")
    check_expression("cr(x, df=4, constraints='center')")


LEGIT = [
    "y ~ np.log(pos) + I(x**2) + C(k)",
    "y ~ center(x) + standardize(pos) + scale(expo)",
    "y ~ x * C(k) + np.exp(x / 4) + log(expo) + sqrt(cnt)",
    "y ~ C(k, Treatment(reference='b')) + x:C(k) + Q('pos')",
    "y ~ C(k, Sum) + bs(x, df=4)",
    "y ~ x + ^g",
    "y ~ numpy.log(pos) + np.maximum(x, 0) + I(np.pi * expo) + I((x > 0) * 1.0)",
]


@pytest.mark.parametrize("formula", LEGIT)
def test_legitimate_formulas_still_work_and_round_trip(tmp_path, df, formula):
    res = ig.glm(formula, df).fit()
    res.save(tmp_path / "m.json")
    loaded = ig.load(tmp_path / "m.json")
    pd.testing.assert_series_equal(loaded.predict(df), res.predict(df), check_exact=True)
    if "^" not in formula:                      # the design is Patsy's own
        rhs = formula.split("~", 1)[1]
        X = patsy.dmatrix(rhs, df, eval_env=patsy.EvalEnvironment([{"np": np, "numpy": np,
                                                                    "log": np.log,
                                                                    "sqrt": np.sqrt}]))
        assert list(X.design_info.column_names) == list(res.params.index)


def test_offsets_and_poisson_still_work(df):
    res = ig.glm("cnt ~ x + C(k)", df, family="poisson", offset=np.log(df["expo"])).fit()
    by_column = ig.glm("cnt ~ x + C(k)", df.assign(lo=np.log(df["expo"])), family="poisson",
                       offset="lo").fit()
    np.testing.assert_allclose(res.params, by_column.params, rtol=1e-10)


# --------------------------------------------------------------------------- model files


@pytest.fixture
def saved(tmp_path, df):
    res = ig.glm("y ~ center(x) + C(k) + ^g", df).fit()
    path = tmp_path / "m.json"
    res.save(path)
    return res, path


def _edit(path, change):
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def _rewrite_arrays(path, change):
    """Change the arrays and record the new hash (a consistent but wrong file)."""
    npz = arrays_path(path)
    with np.load(npz) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    npz.write_bytes(buf.getvalue())
    _edit(path, lambda d: d.update(arrays_sha256=hashlib.sha256(buf.getvalue()).hexdigest()))


def test_arrays_file_is_named_after_the_whole_json_name(tmp_path, df):
    a = ig.glm("y ~ x + ^g", df).fit()
    b = ig.glm("y ~ x + ^g", df.assign(y=df["y"] * 3)).fit()
    a.save(tmp_path / "m.json")
    b.save(tmp_path / "m.model")
    assert {p.name for p in tmp_path.iterdir()} == {"m.json", "m.json.npz", "m.model",
                                                    "m.model.npz"}
    pd.testing.assert_series_equal(ig.load(tmp_path / "m.json").predict(df), a.predict(df))
    pd.testing.assert_series_equal(ig.load(tmp_path / "m.model").predict(df), b.predict(df))
    assert json.loads((tmp_path / "m.json").read_text())["format_version"] == FORMAT_VERSION


def test_swapped_arrays_file_is_refused(tmp_path, df, saved):
    _, path = saved
    other = ig.glm("y ~ center(x) + C(k) + ^g", df.assign(y=df["y"] * 2)).fit()
    other.save(tmp_path / "o.json")
    shutil.copy(tmp_path / "o.json.npz", arrays_path(path))
    with pytest.raises(ModelFileError, match="does not belong"):
        ig.load(path)


DAMAGE = {
    "truncated npz": (lambda p: arrays_path(p).write_bytes(arrays_path(p).read_bytes()[:100]),
                      "does not belong"),
    "arrays missing": (lambda p: arrays_path(p).unlink(), "missing"),
    "format_version x": (lambda p: _edit(p, lambda d: d.update(format_version="x")),
                         "not a version number"),
    "format_version 1": (lambda p: _edit(p, lambda d: d.update(format_version=1)), "older"),
    "format_version 99": (lambda p: _edit(p, lambda d: d.update(format_version=99)), "newer"),
    "no format_version": (lambda p: _edit(p, lambda d: d.pop("format_version")),
                          "not a version number"),
    "missing cov": (lambda p: _edit(p, lambda d: d.pop("cov")), "'cov'"),
    "missing spec": (lambda p: _edit(p, lambda d: d.pop("spec")), "'spec'"),
    "missing formula": (lambda p: _edit(p, lambda d: d["spec"].pop("formula")), "formula"),
    "shortened params": (lambda p: _edit(p, lambda d: d["params"].pop()), "'params'"),
    "params as text": (lambda p: _edit(p, lambda d: d.update(params="1,2")), "'params'"),
    "arrays ../x.npz": (lambda p: _edit(p, lambda d: d.update(arrays="../x.npz")), "plain name"),
    "arrays absolute": (lambda p: _edit(p, lambda d: d.update(arrays="/etc/passwd")),
                        "plain name"),
    "no hash": (lambda p: _edit(p, lambda d: d.update(arrays_sha256=None)), "SHA-256"),
    "kind": (lambda p: _edit(p, lambda d: d.update(kind="pickle")), "unknown kind"),
    "not json": (lambda p: p.write_text("{not json"), "not JSON"),
    "json list": (lambda p: p.write_text("[1, 2]"), "not a saved impactglm model"),
    "column_names": (lambda p: _edit(p, lambda d: d["column_names"].reverse()), "column_names"),
    "factor name": (lambda p: _edit(p, lambda d: d["factors"][0].update(name="h")), "names"),
    "levels": (lambda p: _edit(p, lambda d: d["spec"]["factors"][0]["levels"].update(
        values=[1, 2])), "shape"),
    "family": (lambda p: _edit(p, lambda d: d.update(family="weird")), "weird"),
    "na_action": (lambda p: _edit(p, lambda d: d["spec"].update(na_action="zap")), "na_action"),
    "level dtype": (lambda p: _edit(p, lambda d: d["spec"]["factors"][0]["levels"].update(
        dtype="O")), "dtype"),
    "contrast matrix": (lambda p: _edit(p, lambda d: [r.pop() for r in d["spec"][
        "fixed_design"]["terms"][1]["subterms"][0]["contrasts"][0]["matrix"]]), "damaged"),
    "transform state": (lambda p: _edit(p, lambda d: d["spec"]["fixed_design"]["factors"][0][
        "transforms"]["_patsy_stobj0__center__"].update(attrs={})), "attributes"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_model_file_is_a_model_file_error(saved, df, case):
    _, path = saved
    damage, fragment = DAMAGE[case]
    damage(path)
    with pytest.raises(ModelFileError, match=fragment) as e:
        ig.load(path)
    assert str(path) in str(e.value) or "model" in str(e.value)


ARRAY_DAMAGE = {
    "shortened effect": (lambda a: a.update(effect_0=a["effect_0"][:-1]), "effect_0"),
    "shortened se": (lambda a: a.update(se_0=a["se_0"][:-1]), "se_0"),
    "missing counts": (lambda a: a.pop("counts_0"), "counts_0"),
    "text effect": (lambda a: a.update(effect_0=np.array(["a"] * len(a["effect_0"]))), "effect_0"),
}


@pytest.mark.parametrize("case", sorted(ARRAY_DAMAGE))
def test_consistent_but_wrong_arrays_are_refused(saved, case):
    _, path = saved
    change, fragment = ARRAY_DAMAGE[case]
    _rewrite_arrays(path, change)
    with pytest.raises(ModelFileError, match=fragment):
        ig.load(path)


def test_truncated_npz_with_matching_hash_is_refused(saved):
    _, path = saved
    npz = arrays_path(path)
    data = npz.read_bytes()[:200]
    npz.write_bytes(data)
    _edit(path, lambda d: d.update(arrays_sha256=hashlib.sha256(data).hexdigest()))
    with pytest.raises(ModelFileError, match="not a plain-array"):
        ig.load(path)


def test_loading_a_directory_or_nothing(tmp_path):
    (tmp_path / "d.json").mkdir()
    with pytest.raises(ModelFileError, match="directory"):
        ig.load(tmp_path / "d.json")
    with pytest.raises(ModelFileError, match="no saved model"):
        ig.load(tmp_path / "none.json")


def test_multinomial_damage(tmp_path):
    sim = ig.make_ratings(600, 20, 10, kind="multinomial", seed=2)
    res = ig.glm("Rating ~ ^UserID + age", sim.data, family="multinomial").fit()
    path = tmp_path / "m.json"
    res.save(path)
    pd.testing.assert_frame_equal(ig.load(path).predict(sim.data), res.predict(sim.data))
    _rewrite_arrays(path, lambda a: a.update(beta=a["beta"][:, :-1]))
    with pytest.raises(ModelFileError, match="beta"):
        ig.load(path)
    res.save(path)
    _rewrite_arrays(path, lambda a: a.update(effect_0=a["effect_0"][:-2]))
    with pytest.raises(ModelFileError, match="effect_0"):
        ig.load(path)


def test_saving_into_a_missing_directory_names_it(tmp_path, saved):
    res, _ = saved
    target = tmp_path / "nope" / "m.json"
    with pytest.raises(ImpactGLMError, match="nope") as e:
        res.save(target)
    assert "does not exist" in str(e.value) and ".tmp" not in str(e.value)


def _code_edits(sentinel):
    evil = f"__import__('pathlib').Path({str(sentinel)!r}).touch()"
    return {
        "eval_code": lambda d: d["spec"]["fixed_design"]["factors"][0].update(eval_code=evil),
        "code": lambda d: d["spec"]["fixed_design"]["factors"][0].update(code=evil),
        "both": lambda d: d["spec"]["fixed_design"]["factors"][0].update(code=evil,
                                                                         eval_code=evil),
        "eval_code extra": lambda d: d["spec"]["fixed_design"]["factors"][0].update(
            eval_code="_patsy_stobj0__center__.transform(x) + 0 * len(" + evil + ")"),
        "transform class": lambda d: d["spec"]["fixed_design"]["factors"][0]["transforms"][
            "_patsy_stobj0__center__"].update({"class": "BS"}),
        "formula": lambda d: d["spec"].update(formula="y ~ " + evil),
        "response": lambda d: d["spec"].update(response=evil),
    }


@pytest.mark.parametrize("edit", sorted(_code_edits("s")))
def test_edited_model_file_never_runs_code(tmp_path, df, saved, edit, capsys):
    _, path = saved
    sentinel = tmp_path / "SENTINEL"
    doc = json.loads(path.read_text())
    assert doc["spec"]["fixed_design"]["factors"][0]["code"] == "center(x)"
    _edit(path, _code_edits(sentinel)[edit])
    with pytest.raises(ModelFileError):
        ig.load(path).predict(df)
    data = tmp_path / "d.csv"
    df.to_csv(data, index=False)
    code = cli.main(["score", "--model", str(path), "--data", str(data),
                     "--out", str(tmp_path / "o.csv"), "--quiet"])
    assert code == 2 and "impactglm: error:" in capsys.readouterr().err
    assert cli.main(["summary", "--model", str(path)]) == 2
    assert not sentinel.exists()


def test_edited_response_design_never_runs_code(tmp_path, df):
    res = ig.glm("np.log(pos) ~ x", df).fit()
    path = tmp_path / "m.json"
    res.save(path)
    sentinel = tmp_path / "SENTINEL"
    evil = f"__import__('pathlib').Path({str(sentinel)!r}).touch()"
    _edit(path, lambda d: d["spec"]["response_design"]["factors"][0].update(eval_code=evil))
    with pytest.raises(ModelFileError):
        ig.load(path)
    assert not sentinel.exists()


# --------------------------------------------------------------------------- temporaries


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    target = tmp_path / "out.csv"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = tmp_path / f".out.csv.{dead}.abc123.tmp"
    stale.write_text("partial")
    mine = tmp_path / f".out.csv.{os.getpid()}.abc123.tmp"
    mine.write_text("in progress")
    other = tmp_path / f".other.csv.{dead}.abc123.tmp"
    other.write_text("not ours")
    assert remove_stale_temps(target) == [stale]
    assert mine.exists() and other.exists()


# --------------------------------------------------------------------------- outputs vs inputs


@pytest.fixture
def cli_files(tmp_path, df):
    data = tmp_path / "d.csv"
    df.to_csv(data, index=False)
    model = tmp_path / "model.json"
    assert cli.main(["fit", "--data", str(data), "--formula", "y ~ x + ^g", "--model",
                     str(model), "--quiet"]) == 0
    return data, model


def _snapshot(paths):
    return {p: p.read_bytes() for p in paths}


@pytest.mark.parametrize("case", ["model=data", "coef=data", "coef=arrays", "coef=model",
                                  "model arrays=data"])
def test_fit_never_overwrites_its_input_or_its_other_outputs(tmp_path, cli_files, capsys, case):
    data, model = cli_files
    before = _snapshot([data, model, arrays_path(model)])
    base = ["fit", "--data", str(data), "--formula", "y ~ x + ^g", "--force", "--quiet"]
    extra = {"model=data": ["--model", str(data)],
             "coef=data": ["--model", str(model), "--coef-tsv", str(data)],
             "coef=arrays": ["--model", str(model), "--coef-tsv", str(arrays_path(model))],
             "coef=model": ["--model", str(model), "--coef-tsv", str(model)],
             "model arrays=data": ["--model", str(tmp_path / "d")]}[case]
    if case == "model arrays=data":                       # d's arrays file would be d.npz
        shutil.copy(data, tmp_path / "d.npz")
        data2 = tmp_path / "d.npz"
        base[2] = str(data2)
        before[data2] = data2.read_bytes()
    capsys.readouterr()
    code = cli.main(base + extra)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "impactglm: error:" in err and len(err.strip().splitlines()) == 1
    assert ("input" in err or "same file" in err), err
    assert _snapshot(list(before)) == before


@pytest.mark.parametrize("target", ["model", "arrays", "data", "hardlink", "symlink"])
def test_score_never_overwrites_its_inputs(tmp_path, cli_files, capsys, target):
    data, model = cli_files
    before = _snapshot([data, model, arrays_path(model)])
    out = {"model": model, "arrays": arrays_path(model), "data": data,
           "hardlink": tmp_path / "hard.csv", "symlink": tmp_path / "sym.csv"}[target]
    if target == "hardlink":
        os.link(data, out)
    if target == "symlink":
        os.symlink(data, out)
    capsys.readouterr()
    code = cli.main(["score", "--model", str(model), "--data", str(data), "--out", str(out),
                     "--force", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "input" in err, err
    assert _snapshot(list(before)) == before
    assert ig.load(model).predict(pd.read_csv(data)).notna().all()


def test_a_renamed_model_still_protects_its_arrays_file(tmp_path, cli_files, capsys):
    data, model = cli_files
    renamed = tmp_path / "renamed.json"
    model.rename(renamed)                      # its arrays file is still model.json.npz
    before = arrays_path(model).read_bytes()
    code = cli.main(["score", "--model", str(renamed), "--data", str(data), "--out",
                     str(arrays_path(model)), "--force", "--quiet"])
    assert code == 2 and "input" in capsys.readouterr().err
    assert arrays_path(model).read_bytes() == before


def test_force_still_replaces_an_old_output(tmp_path, cli_files, capsys):
    data, model = cli_files
    out = tmp_path / "scored.csv"
    out.write_text("old")
    assert cli.main(["score", "--model", str(model), "--data", str(data), "--out", str(out),
                     "--force", "--quiet"]) == 0
    assert "predicted_mean" in out.read_text()


def test_sigterm_is_handled_like_sigint(tmp_path, cli_files, capsys, monkeypatch):
    data, model = cli_files
    out = tmp_path / "scored.csv"
    real = cli.score_columns

    def score_then_terminate(res, part):
        cols = real(res, part)
        os.kill(os.getpid(), signal.SIGTERM)      # arrives while the output is being written
        time.sleep(0.1)
        return cols

    monkeypatch.setattr(cli, "score_columns", score_then_terminate)
    before = set(tmp_path.iterdir())
    code = cli.main(["score", "--model", str(model), "--data", str(data), "--out", str(out),
                     "--quiet"])
    assert code == 143
    assert "terminated" in capsys.readouterr().err
    assert set(tmp_path.iterdir()) == before             # no output, no temporary left
    assert signal.getsignal(signal.SIGTERM) is not None   # handler restored


def test_a_later_run_removes_the_temporaries_of_a_killed_one(tmp_path, cli_files):
    data, model = cli_files
    out = tmp_path / "scored.csv"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    stale = tmp_path / f".scored.csv.{child.pid}.k1ll3d.tmp"
    stale.write_bytes(b"x" * 1000)
    child.kill()
    child.wait()
    assert cli.main(["score", "--model", str(model), "--data", str(data), "--out", str(out),
                     "--quiet"]) == 0
    assert not stale.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

"""The ``impactglm`` command line: fit, score, summary and demo.

    impactglm demo                 # simulate 1M MovieLens-shaped ratings, fit, compare with the truth
    impactglm fit --data ratings.csv.gz --formula "Rating ~ ^UserID + ^MovieID" \\
                  --family multinomial --model model.json --coef-tsv coef.tsv
    impactglm score --model model.json --data new.parquet --out scored.csv
    impactglm summary --model model.json

Every user error (missing file or column, malformed row, empty file, an output
that exists without ``--force``, a bad formula...) prints one line
``impactglm: error: ...`` on stderr and exits with status 2; an unexpected
internal error exits with status 1, without a traceback unless the environment
variable ``IMPACTGLM_DEBUG=1`` is set.  Outputs are written atomically
(temporary file in the same directory, then a rename) and never replace an
existing file unless ``--force`` is given.  Progress bars go to stderr, only
when it is a terminal and ``--quiet`` is not given.
"""
from __future__ import annotations

import argparse
import inspect
import os
import re
import shutil
import signal
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Sequence
import numpy as np
import pandas as pd
import pyarrow as pa


from .. import __version__
from .. import _util
from ..errors import ColumnNotFoundError, DataError, FormulaError, ImpactGLMError, OutputExistsError, UnseenLevelWarning
from ..formula import parse_formula
from ..io.read import check_input, columns_in_formula, file_columns, read_table
from ..io.write import check_distinct, check_writable, table_writer, write_table
from ..modelfile import arrays_path, recorded_arrays_path, temp_path
from .progress import iteration_progress, ticker, Timer
from ..metrics import evaluate
from ..model import glm
from ..results.restore import load
from .demo import run_demo


PROG = "impactglm"
FAMILIES = ("multinomial", "binomial", "gaussian", "poisson", "gamma")


# --------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 user error, 1 internal error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:          # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return 2
    debug = os.environ.get("IMPACTGLM_DEBUG", "") not in ("", "0")
    with _cli_warnings(debug), _terminate_like_interrupt():
        try:
            return int(args.run(args) or 0)
        except ImpactGLMError as exc:
            if debug:
                raise
            _error(_one_line_error(exc))
            return 2
        except Terminated:
            _error("terminated")
            return 143
        except KeyboardInterrupt:
            _error("interrupted")
            return 130
        except BrokenPipeError:          # e.g. `impactglm summary ... | head`
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            except (OSError, ValueError):
                pass
            return 1
        except OSError as exc:           # the system refused: disk full, permissions...
            if debug:
                raise
            where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
            _error(f"{where}{exc.strerror or _first_line(str(exc)) or type(exc).__name__}")
            return 2
        except Exception as exc:  # noqa: BLE001 - the last line of defence
            if debug:
                raise
            _error(f"internal error: {type(exc).__name__}: {_first_line(str(exc))} "
                   "(set IMPACTGLM_DEBUG=1 for the traceback)")
            return 1


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``impactglm`` and its sub-commands."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="GLMs with high-cardinality categorical predictors (^factors).",
        epilog="examples:\n"
               "  impactglm demo\n"
               "  impactglm fit --data ratings.csv.gz --formula \"Rating ~ ^UserID + ^MovieID\" "
               "--family multinomial --model model.json\n"
               "  impactglm score --model model.json --data new.parquet --out scored.csv\n"
               "exit status: 0 ok, 2 user error (one line on stderr), 1 internal error",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    fit = sub.add_parser("fit", help="fit a model to a data file and save it",
                         description="Fit a model; print its summary; save it as JSON.")
    fit.add_argument("--data", required=True, metavar="FILE",
                     help="CSV, CSV.gz, TSV or Parquet file")
    fit.add_argument("--formula", required=True,
                     help='e.g. "Rating ~ ^UserID + ^MovieID + age"')
    fit.add_argument("--family", default="gaussian",
                     help=f"one of {', '.join(FAMILIES)} (default gaussian)")
    fit.add_argument("--link", default=None, help="link function (default: canonical)")
    fit.add_argument("--model", required=True, metavar="FILE", help="where to save the model")
    fit.add_argument("--sep", default=None,
                     help="field separator of text files (default: from the extension)")
    fit.add_argument("--weights", metavar="COL", help="column of prior weights")
    fit.add_argument("--offset", metavar="COL", help="column of offsets")
    fit.add_argument("--holdout", type=_fraction, default=None, metavar="FRACTION",
                     help="multinomial: hold this fraction of rows out and report their "
                     "accuracy and log-loss")
    fit.add_argument("--seed", type=int, default=None, help="seed of the holdout split")
    fit.add_argument("--prior-sd", default="auto", type=parse_prior_sd, metavar="auto|NUMBER|none",
                     help="prior sd of the level effects: estimated (auto), fixed, or none")
    fit.add_argument("--coef-tsv", metavar="FILE",
                     help="also write every coefficient and level effect as TSV")
    _common(fit)
    fit.set_defaults(run=cmd_fit)

    score = sub.add_parser("score", help="score a data file with a saved model",
                           description="Write predictions followed by the input columns.")
    score.add_argument("--model", required=True, metavar="FILE")
    score.add_argument("--data", required=True, metavar="FILE")
    score.add_argument("--out", required=True, metavar="FILE",
                       help="output .csv, .csv.gz, .tsv or .parquet")
    score.add_argument("--sep", default=None, help="field separator of the input")
    _common(score)
    score.set_defaults(run=cmd_score)

    summary = sub.add_parser("summary", help="print the summary of a saved model")
    summary.add_argument("--model", required=True, metavar="FILE")
    summary.set_defaults(run=cmd_summary)

    demo = sub.add_parser("demo", help="simulate MovieLens-shaped ratings and fit them",
                          description="Generate MovieLens-shaped ratings with known truth, "
                          "fit Rating ~ ^UserID + ^MovieID + age + C(genre), and compare "
                          "holdout metrics with the truth and with a model without the ids.")
    demo.add_argument("--rows", type=_positive_int, default=1_000_000,
                      help="number of ratings (default 1,000,000)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--family", choices=("multinomial", "binary"), default="multinomial")
    demo.add_argument("--holdout", type=_fraction, default=0.1, metavar="FRACTION")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(run=cmd_demo)
    return parser


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.add_argument("--quiet", action="store_true", help="no progress bars or notes on stderr")


# --------------------------------------------------------------------------- argument types


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), not {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text.replace(",", "").replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def parse_prior_sd(text: str) -> float | str | None:
    """``auto`` (estimate tau by empirical Bayes), ``none`` (no prior) or tau > 0."""
    low = text.strip().lower()
    if low == "auto":
        return "auto"
    if low in ("none", "inf", "infinity"):
        return None
    try:
        value = float(low)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto, none or a number, not {text!r}") from None
    if not (value > 0 and np.isfinite(value)):
        raise argparse.ArgumentTypeError(f"the prior sd must be positive, not {text}")
    return value


# --------------------------------------------------------------------------- fit


def cmd_fit(args: argparse.Namespace) -> int:
    """``impactglm fit``: read the columns the formula names, fit, print, save."""
    check_distinct({"--data": args.data},
                   {"--model": args.model, "the model's arrays file": arrays_path(args.model),
                    "--coef-tsv": args.coef_tsv})
    check_writable(args.model, args.force)
    if args.coef_tsv:
        check_writable(args.coef_tsv, args.force)
    family = _family_name(args.family)
    if args.holdout is not None and family != "multinomial":     # fail before reading
        raise DataError("--holdout is available for --family multinomial only; for other "
                        "families fit on a split and score the rest with impactglm score")
    timer = Timer()
    data = _read_model_data(args.data, args.formula, args.sep, args.quiet,
                            extra=[c for c in (args.weights, args.offset) if c])
    timer.lap("read")
    _note(args, f"read {len(data):,} rows x {data.shape[1]} columns from {args.data} "
                f"in {timer.laps['read']:.1f} s")
    kwargs: dict[str, Any] = {"family": family, "prior_sd": args.prior_sd}
    if args.link:
        kwargs["link"] = args.link
    if args.weights:
        kwargs["weights"] = args.weights
    if args.offset:
        kwargs["offset"] = args.offset
    with ticker("building the design", args.quiet):
        model = glm(args.formula, data, **kwargs)
    timer.lap("design")
    accepted = inspect.signature(model.fit).parameters
    fit_kwargs: dict[str, Any] = {}
    if args.holdout is not None:
        fit_kwargs["holdout"] = args.holdout
        if args.seed is not None:
            fit_kwargs["seed"] = args.seed
    iterations = "callback" in accepted and family == "multinomial"
    with iteration_progress("fitting", args.quiet, iterations) as callback:
        if callback is not None:
            fit_kwargs["callback"] = callback
        res = model.fit(**fit_kwargs)
    timer.lap("fit")
    print(res.summary())
    save_model(res, args.model, args.force)
    if args.coef_tsv:
        write_table(coefficient_table(res), args.coef_tsv, force=args.force)
    timer.lap("write")
    written = args.model + (f" and {args.coef_tsv}" if args.coef_tsv else "")
    _note(args, f"wrote {written}; times: {timer.format()}")
    return 0


def _family_name(name: str) -> str:
    low = name.strip().lower()
    aliases = {"binary": "binomial", "logistic": "binomial", "normal": "gaussian",
               "categorical": "multinomial", "softmax": "multinomial"}
    low = aliases.get(low, low)
    if low not in FAMILIES:
        near = [f for f in FAMILIES if f.startswith(low[:3])] if low else []
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise DataError(f"unknown family {name!r} (choose from {', '.join(FAMILIES)}){hint}")
    return low


def model_columns(formula: str, header: Sequence[str], extra: Sequence[str] = ()) -> list[str]:
    """The columns of a file (``header``) that a model needs, in file order."""
    needed = set(columns_in_formula(formula, header))
    for name in extra:
        if name not in header:
            raise ColumnNotFoundError(name, header)
        needed.add(name)
    return [c for c in header if c in needed]


def factor_columns(formula: str) -> list[str]:
    """Columns read as categoricals: the ^ factors and the random-effect groups."""
    parsed = parse_formula(formula, require_response=False)
    names = list(parsed.high_cardinality)
    for term in parsed.random:
        names.extend(term.group_vars)
    return list(dict.fromkeys(names))


def _read_model_data(path: str, formula: str, sep: str | None, quiet: bool,
                     extra: Sequence[str] = ()) -> pd.DataFrame:
    header = _header(path, sep)
    columns = model_columns(formula, header, extra)
    return read_table(path, columns=columns, sep=sep, categorical=factor_columns(formula),
                      progress=not quiet, strings_as_categorical=True)


def _header(path: str, sep: str | None) -> list[str]:
    """The file's column names; a one-column header that holds a likely separator is
    reported as a wrong separator rather than as missing columns later."""
    header = file_columns(path, sep)
    if len(header) == 1:
        for candidate in ("\t", ";", "|", ","):
            if candidate in header[0]:
                shown = "\\t" if candidate == "\t" else candidate
                raise DataError(f"{path!r}: the header is one column {header[0][:60]!r}; "
                                f"is the separator {shown!r}? (use --sep '{shown}')")
    return header


# --------------------------------------------------------------------------- saving


def save_model(res: Any, path: str | os.PathLike, force: bool = False) -> list[Path]:
    """Save a fitted model with ``res.save`` atomically and without clobbering.

    ``res.save`` writes into a fresh temporary directory beside ``path`` (so any
    companion files it makes are caught too); each file is then renamed into
    place.  Nothing is renamed unless every target is free (or ``force``).
    """
    target = check_writable(path, force)
    parent = target.parent if str(target.parent) else Path(".")
    tmpdir = temp_path(target, directory=True)
    try:
        res.save(str(tmpdir / target.name))
        made = sorted(p for p in tmpdir.iterdir())
        if not made:
            raise OSError(f"saving the model wrote nothing to {tmpdir}")
        dests = [parent / p.name for p in made]
        for dest in dests:
            check_writable(dest, force)
        for src, dest in zip(made, dests):
            _move_into_place(src, dest, force)
        return dests
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _move_into_place(src: Path, dest: Path, force: bool) -> None:
    os.chmod(src, 0o666 & ~_umask())
    if force:
        os.replace(src, dest)
        return
    try:
        os.link(src, dest)
    except FileExistsError:
        raise OutputExistsError(f"{str(dest)!r} exists; refusing to overwrite it "
                                "without force=True") from None
    except OSError:
        os.replace(src, dest)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --------------------------------------------------------------------------- coefficients


def coefficient_table(res: Any) -> pd.DataFrame:
    """Every coefficient and level effect, one row per (outcome, variable, level).

    Columns ``outcome, variable, kind, level, value``; ``kind`` is ``Const``
    (the intercept), ``Numeric`` (a column of the fixed design, with the Patsy
    column name as variable and an empty level), or ``CategoricalLevel`` (a
    treatment dummy ``C(g)[T.a]`` -> variable ``C(g)``, level ``a``; or a level
    effect of a ``^g`` factor -> variable ``g``, level the level's value).
    ``outcome`` is the class label for multinomial models (one block per class,
    the reference class included with its zeros) and the response otherwise.
    The linear predictor of class c for a row is the sum of its Const, Numeric x
    value and CategoricalLevel values (a level not in the table contributes 0).
    """
    params = res.params
    if isinstance(params, pd.DataFrame):          # multinomial: variables x classes
        outcomes = [class_label(c) for c in params.columns]
        beta = params.to_numpy(dtype=float)
    else:
        outcomes = [str(res.spec.response)]
        beta = np.asarray(params, dtype=float)[:, None]
    described = [_describe_column(str(name)) for name in params.index]
    variables = [d[0] for d in described]
    kinds = [d[1] for d in described]
    levels = [d[2] for d in described]
    pieces = []
    for j, outcome in enumerate(outcomes):
        pieces.append(pd.DataFrame({"outcome": outcome, "variable": variables, "kind": kinds,
                                    "level": levels, "value": beta[:, j]}))
        for e in res.factor_effects:
            effect = np.asarray(e.effect, dtype=float).reshape(len(e.levels), -1)
            pieces.append(pd.DataFrame({
                "outcome": outcome, "variable": e.name, "kind": "CategoricalLevel",
                "level": pd.Index(e.levels).astype(str), "value": effect[:, j]}))
    return pd.concat(pieces, ignore_index=True)


_DUMMY = re.compile(r"^(?P<var>[^\[\]:]+)\[(?:T\.)?(?P<level>[^\]]*)\]$")


def _describe_column(name: str) -> tuple[str, str, str]:
    """(variable, kind, level) of a Patsy column name."""
    if name in ("Intercept", "(Intercept)"):
        return "Intercept", "Const", ""
    m = _DUMMY.match(name)
    if m:
        return m.group("var"), "CategoricalLevel", m.group("level")
    return name, "Numeric", ""


# --------------------------------------------------------------------------- score


def cmd_score(args: argparse.Namespace) -> int:
    """``impactglm score``: predictions, the chosen class, then the input columns."""
    check_distinct({"--model": args.model, "the model's arrays file": arrays_path(args.model),
                    "the model's recorded arrays file": recorded_arrays_path(args.model),
                    "--data": args.data}, {"--out": args.out})
    check_writable(args.out, args.force)
    check_input(args.model)
    check_input(args.data)
    timer = Timer()
    res = load(args.model)
    timer.lap("load")
    formula = _model_formula(res)
    header = _header(args.data, args.sep)
    _rhs_columns(formula, header)            # every predictor must be in the file
    factors = [c for c in factor_columns(formula) if c in header]
    spec = getattr(res, "spec", None)
    response = getattr(spec, "response_column", None) or parse_formula(formula).response
    data = read_table(args.data, sep=args.sep, categorical=factors, progress=not args.quiet,
                      strings_as_categorical=True)
    timer.lap("read")
    has_outcome = response in data.columns
    inputs = pa.Table.from_pandas(data, preserve_index=False)
    metrics, unseen = [], {}
    with _progress_rows("scoring", len(data), args.quiet) as advance, \
            table_writer(args.out, force=args.force, sep=None, quote_like=inputs) as write, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", UnseenLevelWarning)    # summed over chunks below
        for start in range(0, len(data), SCORE_CHUNK):
            part = data.iloc[start:start + SCORE_CHUNK]
            write(_output_table(score_columns(res, part), inputs.slice(start, len(part))))
            for name, count in (getattr(res, "last_unseen", None) or {}).items():
                unseen[name] = unseen.get(name, 0) + int(count)
            if has_outcome:
                metrics.append(_evaluate(res, part))
            advance(len(part))
    timer.lap("score")
    _warn_unseen(unseen)
    print(f"scored {len(data):,} rows of {args.data} -> {args.out}")
    if metrics:
        print(f"on {args.data}: {_format_metrics(combine_metrics(metrics))}")
    _note(args, f"times: {timer.format()}")
    return 0


def _rhs_columns(formula: str, header: Sequence[str]) -> list[str]:
    parsed = parse_formula(formula)
    rhs = parsed.text.split("~", 1)[1] if "~" in parsed.text else parsed.text
    return columns_in_formula("~ " + rhs, header)


def _model_formula(res: Any) -> str:
    spec = getattr(res, "spec", None)
    if spec is None or not getattr(spec, "formula", None):
        raise ImpactGLMError("the saved model does not record its formula")
    return spec.formula


def score_frame(res: Any, data: pd.DataFrame) -> pd.DataFrame:
    """Prediction columns for ``data`` as a DataFrame (see :func:`score_columns`)."""
    return pd.DataFrame(score_columns(res, data), index=data.index)


def score_columns(res: Any, data: pd.DataFrame) -> dict[str, np.ndarray]:
    """Prediction columns for the rows of ``data``, in output order.

    Multinomial: ``prob_<class>`` for every class, then ``predicted`` (the most likely
    class, the first on ties as ``predict(which="class")``, computed from the same
    probabilities rather than by a second pass).  Binomial: ``prob`` (P(success)) and
    ``predicted`` (the success level when prob >= 0.5).  Other families:
    ``predicted_mean``.  Rows that the model dropped for missing values get NaN/None.
    """
    family = _family_of(res)
    if family == "multinomial":
        proba = pd.DataFrame(res.predict(data))
        labels = list(proba.columns)
        values = proba.to_numpy(dtype=float)
        where = _positions(proba.index, data.index)
        cols = {f"prob_{class_label(c)}": _aligned(values[:, j], where, len(data))
                for j, c in enumerate(labels)}
        cols["predicted"] = _aligned(np.asarray(labels)[np.argmax(values, axis=1)], where,
                                     len(data))
        return cols
    mean = pd.Series(res.predict(data, which="mean"))
    where = _positions(mean.index, data.index)
    mu = _aligned(mean.to_numpy(dtype=float), where, len(data))
    if family == "binomial":
        info = getattr(getattr(res, "spec", None), "response_info", None) or {}
        success = 1 if info.get("success") is None else info["success"]
        failure = 0 if info.get("failure") is None else info["failure"]
        chosen = np.where(mean.to_numpy() >= 0.5, success, failure)
        return {"prob": mu, "predicted": _aligned(chosen, where, len(data))}
    return {"predicted_mean": mu}


def _positions(labels: pd.Index, index: pd.Index) -> np.ndarray | None:
    """Positions in ``index`` of the predicted rows (None: all rows, in order)."""
    if len(labels) == len(index) and labels.equals(index):
        return None
    return index.get_indexer(labels)


def _aligned(values: np.ndarray, where: np.ndarray | None, n: int) -> np.ndarray:
    if where is None:
        return np.ascontiguousarray(values)
    if values.dtype.kind in "fc":
        out = np.full(n, np.nan, dtype=values.dtype)
    else:
        out = np.full(n, None, dtype=object)
    out[where] = values
    return out


def class_label(c: Any) -> str:
    if isinstance(c, (float, np.floating)) and float(c).is_integer():
        return str(int(c)) if abs(c) < 1e15 else str(c)
    return str(c)


def _family_of(res: Any) -> str:
    return str(res.spec.family)


def _output_table(predictions: dict[str, np.ndarray], inputs: pa.Table) -> pa.Table:
    """The prediction columns, then the input columns, as one Arrow table (the float
    prediction columns are not copied)."""
    clash = [c for c in predictions if c in inputs.column_names]
    if clash:
        raise DataError(f"the input already has a column {clash[0]!r}; rename it before scoring")
    columns = [pa.array(v, from_pandas=True) for v in predictions.values()]
    return pa.table(columns + list(inputs.columns), names=list(predictions) + inputs.column_names)


SCORE_CHUNK = 1_000_000   # rows scored at a time: bounds the memory of the (n, C) arrays


def _evaluate(res: Any, data: pd.DataFrame) -> dict:
    """evaluate(res, data) as a dict of the additive pieces combine_metrics needs."""
    m = evaluate(res, data)
    get = m.get if hasattr(m, "get") else (lambda k, d=None: getattr(m, k, d))
    return {"nobs": get("nobs"), "sum_weights": get("sum_weights", get("nobs")),
            "accuracy": get("accuracy"), "logloss": get("logloss"), "deviance": get("deviance")}


def combine_metrics(parts: list[dict]) -> dict:
    """Metrics of the union of disjoint row sets: sums, and weight-averaged means
    (accuracy and log-loss are weighted means over rows)."""
    total_w = sum(float(p["sum_weights"]) for p in parts)
    out: dict[str, Any] = {"nobs": int(sum(int(p["nobs"]) for p in parts))}
    for key in ("accuracy", "logloss"):
        if all(p[key] is not None for p in parts) and total_w > 0:
            out[key] = sum(float(p[key]) * float(p["sum_weights"]) for p in parts) / total_w
    if all(p["deviance"] is not None for p in parts):
        out["deviance"] = float(sum(float(p["deviance"]) for p in parts))
    return out


def _warn_unseen(unseen: dict) -> None:
    msg = ", ".join(f"{v:,} row(s) of ^{k}" for k, v in unseen.items() if v)
    if msg:
        warnings.warn(f"levels unseen at fit time get effect 0 (the prior mean): {msg}",
                      UnseenLevelWarning, stacklevel=2)


def _format_metrics(metrics: Any) -> str:
    get = metrics.get if isinstance(metrics, dict) else (lambda k, d=None: getattr(metrics, k, d))
    parts = []
    for key, label in (("accuracy", "accuracy"), ("logloss", "log-loss"), ("log_loss", "log-loss"),
                       ("deviance", "deviance"), ("nobs", "rows")):
        value = get(key, None)
        if value is not None and not (label == "log-loss" and any("log-loss" in p for p in parts)):
            if isinstance(value, (int, np.integer)):
                parts.append(f"{label} {value:,}")
            elif isinstance(value, (float, np.floating)):
                parts.append(f"{label} {value:,.6g}")
            else:
                parts.append(f"{label} {value}")
    return ", ".join(parts) if parts else str(metrics)


# --------------------------------------------------------------------------- summary


def cmd_summary(args: argparse.Namespace) -> int:
    """``impactglm summary``: print a saved model's summary."""
    check_input(args.model)
    print(load(args.model).summary())
    return 0


# --------------------------------------------------------------------------- demo


def cmd_demo(args: argparse.Namespace) -> int:
    """``impactglm demo``: simulate, fit with and without the ids, compare with the truth."""
    return run_demo(rows=args.rows, seed=args.seed, family=args.family,
                    holdout=args.holdout, quiet=args.quiet)


def _note(args: argparse.Namespace, text: str) -> None:
    if not getattr(args, "quiet", False):
        print(f"{PROG}: {text}", file=sys.stderr)


def _error(text: str) -> None:
    print(f"{PROG}: error: {text}", file=sys.stderr)


def _first_line(text: str) -> str:
    text = text.strip()
    return text.splitlines()[0] if text else ""


def _one_line_error(exc: BaseException) -> str:
    if isinstance(exc, FormulaError) and exc.formula is not None:
        where = f" at character {exc.position + 1}" if exc.position is not None else ""
        return f"{exc.reason}: {exc.formula!r}{where}"
    text = _first_line(str(exc)) or type(exc).__name__
    if isinstance(exc, OutputExistsError):
        text = text.replace("without force=True", "(use --force to replace it)")
    return text


class Terminated(BaseException):
    """SIGTERM arrived: unwinds like KeyboardInterrupt, so temporary files are removed."""


@contextmanager
def _terminate_like_interrupt():
    """Handle SIGTERM as SIGINT is handled (exception, cleanup, exit status 143)."""
    def handler(signum, frame):
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:                # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _cli_warnings(debug: bool):
    """Show impactglm's warnings as one line each ("impactglm: warning: ...")."""
    original = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if debug:
            return original(message, category, filename, lineno, file, line)
        print(f"{PROG}: warning: {_first_line(str(message))}", file=sys.stderr)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = original


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


@contextmanager
def _progress_rows(desc: str, total: int, quiet: bool):
    """A bar over rows on a terminal; yields advance(n)."""
    if quiet or not _util.stderr_is_terminal() or total <= SCORE_CHUNK:
        with ticker(desc, quiet):
            yield lambda n: None
        return
    from tqdm.auto import tqdm
    bar = tqdm(total=total, desc=desc, unit=" rows", unit_scale=True, file=sys.stderr,
               leave=False)
    try:
        yield bar.update
    finally:
        bar.close()

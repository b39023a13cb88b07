"""The package's shape (issue 9): one-way imports, no private reach-ins, lazy API intact."""
from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import impactglm as ig

ROOT = Path(__file__).resolve().parents[1]
# The one documented testing hook: tests patch impactglm._util.stderr_is_terminal.
TESTING_HOOKS = {("impactglm", "_util")}


def test_import_contract_is_kept():
    """The import-linter `layers` contract in pyproject.toml (imports point downward)."""
    importlinter = pytest.importorskip("importlinter.cli")
    if not (ROOT / "pyproject.toml").exists():
        pytest.skip("run from a checkout")
    import os
    here = os.getcwd()
    os.chdir(ROOT)
    try:
        assert importlinter.lint_imports() == 0
    finally:
        os.chdir(here)


def _submodules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(ig.__path__, "impactglm.")
                  if "torch" not in m.name)


@pytest.mark.parametrize("name", _submodules())
def test_importing_a_submodule_keeps_the_public_functions(name):
    """No module or subpackage is named like a lazy attribute (ig.glm, ig.lmm ...)."""
    importlib.import_module(name)
    for attr in ("glm", "lmm", "load", "evaluate"):
        assert callable(getattr(ig, attr)), (name, attr)


def _imports_of(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("impactglm"):
            for alias in node.names:
                yield node.module, alias.name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("impactglm"):
                    yield alias.name.rsplit(".", 1)[0], alias.name.rsplit(".", 1)[-1]


def test_no_test_imports_a_private_name():
    bad = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        for module, name in _imports_of(path):
            private = name.startswith("_") or any(p.startswith("_") for p in module.split(".")[1:])
            if private and (module, name) not in TESTING_HOOKS:
                bad.append(f"{path.name}: from {module} import {name}")
    assert not bad, bad

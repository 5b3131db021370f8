"""The house rules a tool can check: layers (import-linter), private names, one registry."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fsl_opt", "channels", "solvers", "experiments")


def _modules():
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


def test_no_module_imports_another_modules_private_names():
    """`from a.b import _x` reaches into another module's insides: a shared helper gets a
    public name instead (a private *module* of the same package, like solvers._common, is
    the package's own business)."""
    found = []
    for path in _modules():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                private = [a.name for a in node.names if a.name.startswith("_")]
                if private and node.module.split(".")[0] in PACKAGES:
                    found.append(f"{path.relative_to(ROOT)}: from {node.module} import {private}")
    assert not found, "\n".join(found)


@pytest.mark.skipif(
    shutil.which("lint-imports", path=str(Path(sys.executable).parent)) is None,
    reason="import-linter is not installed (pip install -e '.[dev]')",
)
def test_layer_contracts_hold():
    """The import contracts of pyproject.toml are kept (`make test` runs them too)."""
    tool = Path(sys.executable).parent / "lint-imports"
    proc = subprocess.run([str(tool)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]

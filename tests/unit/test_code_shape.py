"""The shape limits of the package (issue 15): a newcomer reads one concept per module and one
step per function. ruff enforces the complexity half (C901, max 12, in ruff.toml); this test
holds the sizes, which ruff has no rule for.

The limits are deliberately blunt — a module past 400 lines or a function past 60 is a sign
that two concepts share a home; split it rather than raising the figure.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "diminuendo"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60

MODULES = sorted(PACKAGE.rglob("*.py"))


def _functions(tree: ast.AST) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_and_its_functions_are_within_the_limits(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    lines = len(text.splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.name}: {lines} lines (at most {MAX_MODULE_LINES})"
    too_long = {
        f"{fn.name} (line {fn.lineno})": fn.end_lineno - fn.lineno + 1
        for fn in _functions(ast.parse(text))
        if fn.end_lineno is not None and fn.end_lineno - fn.lineno + 1 > MAX_FUNCTION_LINES
    }
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines: {too_long}"


def test_the_limits_see_the_package() -> None:
    """A test that walks no file cannot fail: the package is where it is looked for."""
    assert len(MODULES) > 50
    assert PACKAGE / "sessions" / "stream.py" in MODULES

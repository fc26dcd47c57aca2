"""No function in ``perception/`` is over :data:`MAX_FUNCTION_LINES` lines (issue 41).

A function is measured from its ``def`` line to its last line (``end_lineno - lineno + 1``
in ``ast``: docstring, comments and blank lines inside count, decorators do not), and
every function counts: module-level ones, methods and functions nested in functions.
A longer one is split into named pieces, the way torchvision's references and openpilot
read.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "perception"
MAX_FUNCTION_LINES = 60


def long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, int, int]]:
    """``(qualified name, line of its def, lines)`` of every function in ``source`` longer
    than ``limit`` lines, methods (``Class.method``) and nested functions (``outer.inner``)
    included, in source order."""
    out: list[tuple[str, int, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (child.end_lineno or child.lineno) - child.lineno + 1
                if lines > limit:
                    out.append((prefix + child.name, child.lineno, lines))
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return out


def test_no_function_in_the_package_is_over_the_limit() -> None:
    long = [
        f"{path.relative_to(PKG.parent)}:{line} {name} ({lines} lines)"
        for path in sorted(PKG.rglob("*.py"))
        for name, line, lines in long_functions(path.read_text(), MAX_FUNCTION_LINES)
    ]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines (split them into named pieces):\n" + "\n".join(long)


def _function(header: str, lines: int, indent: str = "") -> str:
    """The source of a function of exactly ``lines`` lines (``header`` is its def line)."""
    body = "".join(f"{indent}    x{i} = {i}\n" for i in range(lines - 2))
    return f"{indent}{header}\n{body}{indent}    return 0\n"


def test_the_checker_sees_a_long_function_a_long_method_and_a_long_nested_function() -> None:
    """A 61-line function, method and nested function are reported with their lines; one of
    60 lines is not; decorators do not count."""
    source = "\n".join(
        [
            _function("def long():", 61),
            _function("def just_fits():", 60),
            "@staticmethod\n@property\n" + _function("def decorated():", 60),
            "class Node:\n    x = 1\n" + _function("async def step(self):", 61, indent="    "),
            "def outer():\n" + _function("def inner():", 61, indent="    ") + "    return inner\n",
        ]
    )
    assert [len(_function("def f():", n).splitlines()) for n in (60, 61)] == [60, 61]
    found = {name: lines for name, _, lines in long_functions(source, 60)}
    assert found == {"long": 61, "Node.step": 61, "outer": 63, "outer.inner": 61}
    assert long_functions(source, 63) == []
    first = long_functions(source, 60)[0]
    assert first == ("long", 1, 61)

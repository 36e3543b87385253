"""The shape a newcomer can walk (issue 17): a thin app.py, and no long function in rag/ without a reason."""

from __future__ import annotations

import ast
from pathlib import Path

from rag.config import PROJECT_ROOT

MAX_APP_LINES = 300
MAX_FUNCTION_LINES = 60
# A function in rag/ longer than MAX_FUNCTION_LINES says why in its docstring, after this marker
# ("Long: one pass over the rows keeps the lock held once"); otherwise split it into stages.
LONG_MARKER = "Long:"


def test_app_is_a_thin_dispatch():
    """app.py parses and dispatches; handlers live beside their library (rag/cli, eval/cli, ...)."""
    lines = (PROJECT_ROOT / "app.py").read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_APP_LINES, f"app.py has {lines} lines: put the new command's handler beside its library"


def long_functions(folder: Path) -> list[tuple[str, int, str]]:
    """(file:name, lines, docstring) of every function under ``folder`` longer than MAX_FUNCTION_LINES."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    found.append((f"{path.relative_to(folder.parent)}:{node.name}", n, ast.get_docstring(node) or ""))
    return found


def test_long_functions_in_rag_say_why():
    found = long_functions(PROJECT_ROOT / "rag")
    unexplained = [f"{where} ({n} lines)" for where, n, doc in found if LONG_MARKER not in doc]
    assert unexplained == [], (f"split these into stage functions, or say why they stay long with "
                               f"'{LONG_MARKER} <reason>' in the docstring: {unexplained}")


def test_the_long_function_check_can_fail(tmp_path):
    """The check finds a long function and reads its docstring."""
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text(f'def f():\n    """Stages."""\n{body}\n', encoding="utf-8")
    [(where, n, doc)] = long_functions(tmp_path / "pkg")
    assert where == "pkg/m.py:f" and n == MAX_FUNCTION_LINES + 2 and LONG_MARKER not in doc

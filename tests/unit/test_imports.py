import subprocess
import sys

import pytest

from rag.config import PROJECT_ROOT


@pytest.mark.parametrize("module", ["corpora", "corpora.document", "corpora.markdown"])
def test_corpora_importable_in_a_fresh_interpreter(module):
    proc = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr.strip().splitlines()[-1]


def test_rag_pure_modules_do_not_import_heavy_backends():
    code = (
        "import sys, rag.text, rag.chunk, rag.retrieve, rag.cite, rag.confidence, rag.config, rag.generate; "
        "print(sorted(m for m in ('torch', 'transformers', 'faiss', 'peft') if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_the_runtime_never_imports_training_or_evaluation_code():
    """Layers import one way: corpora <- rag <- finetune, eval <- app.py (issue 17)."""
    import ast

    upward = []
    for path in sorted((PROJECT_ROOT / "rag").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            upward += [f"{path.name}: {n}" for n in names if n.split(".")[0] in ("finetune", "eval", "app")]
    assert upward == []


@pytest.mark.parametrize(("layer", "higher"), [("corpora", ("rag", "finetune", "eval", "serve", "app")),
                                               ("rag", ("serve",)),
                                               ("finetune", ("eval", "serve", "app")), ("eval", ("serve", "app")),
                                               ("serve", ("finetune", "eval", "app"))])
def test_lower_layers_never_import_higher_ones(layer, higher):
    """corpora (sources, errors) <- rag (runtime) <- finetune / eval <- app.py, checked on every module."""
    import ast

    upward = []
    for path in sorted((PROJECT_ROOT / layer).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            upward += [f"{path.relative_to(PROJECT_ROOT)}: {n}" for n in names if n.split(".")[0] in higher]
    assert upward == []


def test_help_imports_no_heavy_backend():
    """Every command's arguments are declared at import: that must not load torch, FastAPI or the models."""
    code = ("import sys, app; app._parser(); "
            "print(sorted(m for m in ('torch', 'transformers', 'faiss', 'fastapi', 'numpy') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"

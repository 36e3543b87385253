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

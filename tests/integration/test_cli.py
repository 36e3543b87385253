"""Every CLI error path: one line on stderr, the documented exit code, no traceback."""

from __future__ import annotations

import json
import shutil

import pytest

import app

pytestmark = pytest.mark.integration


def run(capsys, *argv):
    code = app.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str):
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err


def test_status_and_verify(capsys, real_index):
    code, out, _ = run(capsys, "index", "status", "--index", str(real_index), "--json")
    assert code == 0
    status = json.loads(out)
    assert status["counts"]["documents"] >= 45 and "P002" in status["patients"]
    code, out, _ = run(capsys, "index", "verify", "--index", str(real_index))
    assert code == 0 and "OK" in out


def test_no_generate_json(capsys, real_index):
    code, out, _ = run(capsys, "query", "What is the target blood pressure in hypertension?", "--no-generate",
                       "--json", "--index", str(real_index))
    assert code == 0
    d = json.loads(out)
    assert d["citations"] and d["citations"][0]["kind"] == "guideline"


@pytest.mark.parametrize(
    ("argv", "code", "needle"),
    [
        (["query", ""], 2, "empty"),
        (["query", "x" * 5000], 2, "limit"),
        (["query", "q", "--top-k", "0"], 2, "top-k"),
        (["query", "q", "--set", "retrieval.nope=1"], 2, "unknown key 'retrieval.nope'"),
        (["query", "q", "--set", "retrieval.top_k=0"], 2, "retrieval.top_k"),
        (["query", "q", "--config", "/nonexistent.yaml"], 2, "config file not found"),
        (["index", "build", "/nonexistent/dir"], 2, "source not found"),
        (["risk", " "], 2, "empty"),
        (["risk", "x" * 9000], 2, "limit"),
        (["risk"], 2, "one of them"),
        (["risk", "--file", "/nonexistent/case.txt"], 2, "no such file"),
    ],
)
def test_input_errors(capsys, argv, code, needle):
    got, _, err = run(capsys, *argv)
    assert got == code
    assert_one_line_error(err)
    assert needle in err


def test_missing_index(capsys, tmp_path):
    got, _, err = run(capsys, "query", "What is HFrEF?", "--index", str(tmp_path / "none"))
    assert got == 2 and "no index at" in err
    assert_one_line_error(err)


def test_unknown_patient(capsys, real_index):
    got, _, err = run(capsys, "query", "latest EF?", "--patient", "P999", "--no-generate", "--index", str(real_index))
    assert got == 2 and "P999" in err
    assert_one_line_error(err)


def test_model_not_fetched(capsys, real_index, tmp_path):
    got, _, err = run(capsys, "query", "What is HFrEF?", "--index", str(real_index), "--set",
                      "generator.model=bundle:qwen2.5-coder-1.5b-instruct", "--set", f"models.cache_dir={tmp_path}")
    assert got == 2 and "models fetch" in err
    assert_one_line_error(err)


def test_mismatched_embedder(capsys, hash_index):
    root, _ = hash_index  # built with the hash embedder; the CLI uses MiniLM
    got, _, err = run(capsys, "query", "What is HFrEF?", "--no-generate", "--index", str(root))
    assert got == 2 and "embedder" in err
    assert_one_line_error(err)


def test_corrupted_index(capsys, real_index, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(real_index, broken)
    vdir = next(p for p in (broken / "versions").iterdir())
    (vdir / "dense.faiss").write_bytes(b"\0" * 16)
    got, _, err = run(capsys, "query", "What is HFrEF?", "--no-generate", "--index", str(broken))
    assert got == 2 and "rebuild" in err
    assert_one_line_error(err)
    got, out, _ = run(capsys, "index", "verify", "--index", str(broken))
    assert got == 1 and "BROKEN" in out
    (vdir / "manifest.json").write_text("{")
    got, _, err = run(capsys, "index", "status", "--index", str(broken))
    assert got == 2 and "not valid JSON" in err


def test_malformed_source_file(capsys, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "good.md").write_text("---\ntitle: Good\n---\n# Good\n\nStatins lower LDL cholesterol.\n")
    (src / "bad.md").write_text("---\nthis line is not key value\n---\n# Bad\n\ntext\n")
    got, _, err = run(capsys, "index", "build", str(src), "--index", str(tmp_path / "idx"), "-q")
    assert got == 2 and "bad.md" in err
    assert not (tmp_path / "idx" / "CURRENT").exists(), "a failed build must publish nothing"
    got, out, _ = run(capsys, "index", "build", str(src), "--index", str(tmp_path / "idx"), "--skip-bad", "-q")
    assert got == 3 and "skipped" in out and "bad.md" in out
    assert (tmp_path / "idx" / "CURRENT").exists()

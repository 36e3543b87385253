"""Fuzz suite (issue 18): malformed input to every command must give the documented exit code, one
line on stderr that says what to do, no traceback, and leave the index exactly as it was.

Table-driven cases (questions, patient ids, options, ``--set``, ``--config``, sources of every
format, rollback targets, ``risk``), damaged index folders (each on its own copy), and
property-based cases from hypothesis. A tiny index of demo documents built with the hash
embedder stands in for the real one: no model is loaded. BENCHMARKS.md ("Reliability") reports
the counts; ``pytest tests/test_fuzz_cli.py -q`` runs them.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import app
from rag.assistant import Assistant
from tests.fakes import HashEmbedder
from tests.index_helpers import edit, make_sources

FIX = Path(__file__).resolve().parent / "fixtures" / "corpora"
Q = "What reduces mortality in HFrEF?"
# Every error line says what to do: one of these verbs or pointers (finding 8).
ADVICE = re.compile(
    r"\b(?:run|use|pass|give|ask|check|set|fix|rebuild|roll ?back|convert|remove|retry|rename|make|add|split|"
    r"shorten|choose|move|name|save|see|raise|OCR|define|allow|point|copy|correct|re-export|leave|pick|"
    r"summar\w*|install|fetch|fill|delete|define|ask|report|set|lists?)\b|--\w|`python app\.py", re.I)


@pytest.fixture(autouse=True)
def hash_embedder(monkeypatch):
    monkeypatch.setattr(Assistant, "embedder", property(lambda self: HashEmbedder()))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """(index root, its sources): two published versions of three guidelines and one patient."""
    from rag.config import load_config
    from rag.update import read_sources, update_index

    base = tmp_path_factory.mktemp("fuzz")
    src = make_sources(base / "src", ["hfref-gdmt.md", "cap.md", "sepsis.md"], ("P002",))
    root = base / "idx"
    chunking = load_config().chunking.model_dump()
    srcs = [src / "guidelines", src / "ehr"]
    update_index(read_sources(srcs).documents, HashEmbedder(), root, chunking)
    edit(src / "guidelines" / "cap.md", "fuzz")
    update_index(read_sources(srcs).documents, HashEmbedder(), root, chunking)
    return root, src


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> Path:
    """A folder of malformed inputs: sources of every format, configs, case files."""
    d = tmp_path_factory.mktemp("bad")

    def w(name: str, data: str | bytes) -> None:
        p = d / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data if isinstance(data, bytes) else data.encode())

    w("empty-dir/.keep", "")
    w("only-readme/README.md", "# readme\n")
    w("latin1/a.md", "# Caf\xe9\n\nna\xefve text\n".encode("latin-1"))
    w("fm/a.md", "---\nnot key value\n---\n# A\n\ntext\n")
    w("kind/a.md", "---\nkind: recipe\n---\n# A\n\ntext\n")
    w("ehr-no-patient/a.md", "---\nkind: ehr\n---\n# A\n\ntext\n")
    w("patient-on-guideline/a.md", "---\npatient_id: P9\n---\n# A\n\ntext\n")
    w("empty-doc/a.md", "---\ntitle: x\n---\n\n   \n")
    w("dup/a.md", "---\ndoc_id: same\n---\n# A\n\ntext\n")
    w("dup/b.md", "---\ndoc_id: same\n---\n# B\n\ntext\n")
    w("html/a.html", "<html><script>x</script></html>")
    w("pdf/a.pdf", b"%PDF-1.4 not really a pdf")
    w("binary/a.txt", b"\x00\x01\x02\xff\xfe" * 100)
    w("big/a.md", "# Big\n\n" + "word " * 30_000)  # 150 KB: over a 0.1 MB limit
    w("xml/a.xml", "<Document><QAPairs>")
    w("xml-root/a.xml", "<Other/>")
    w("x.jsonl", "{not json\n")
    w("fields.jsonl", '{"a": 1, "b": 2}\n')
    w("array.jsonl", "[1, 2, 3]\n")
    w("x.csv", "a,b,c\n1,2,3\n")
    w("hf-missing.csv", "ejection_fraction,serum_creatinine\n20,1.1\n")
    w("x.json", '{"not": "an array"}')
    w("bad.json", "[1, 2,")
    w("nul.json", b"[\x00]")
    w("latin1.jsonl", '{"ngc_id": "1", "title": "t", "text": "caf\xe9"}\n'.encode("latin-1"))
    w("ngc-missing.jsonl", '{"ngc_id": "1", "title": "", "text": ""}\n')
    w("cfg/list.yaml", "- a\n- b\n")
    w("cfg/invalid.yaml", "a: [1, 2\n")
    w("cfg/unknown.yaml", "retrieval:\n  nope: 1\n")
    w("cfg/unknown-section.yaml", "nonsense:\n  a: 1\n")
    w("cfg/wrong-type.yaml", "retrieval:\n  top_k: many\n")
    w("cfg/loop.yaml", "extends: loop.yaml\n")
    w("cfg/extends-missing.yaml", "extends: nowhere.yaml\n")
    w("cfg/extends-number.yaml", "extends: 5\n")
    w("cfg/latin1.yaml", "retrieval:\n  top_k: 5 # caf\xe9\n".encode("latin-1"))
    w("cfg/big.yaml", "# " + "x" * (2 << 20) + "\n")
    w("cfg/deep.yaml", "a: " + "[" * 5000 + "]" * 5000 + "\n")
    w("cfg/overlap.yaml", "chunking:\n  child_tokens: 32\n  child_overlap: 64\n")
    w("cfg/weights.yaml", "retrieval:\n  dense_weight: 0\n  bm25_weight: 0\n")
    w("case/binary.txt", b"\x00\x01\x02" * 10)
    w("case/latin1.txt", "LVEF 30% caf\xe9".encode("latin-1"))
    w("case/big.txt", "x" * 40_000)
    w("case/empty.txt", "")
    (d / "fifo").parent.mkdir(exist_ok=True)
    import os

    os.mkfifo(d / "fifo")
    return d


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file of an index (the lock file only by presence: holders rewrite it)."""
    return {p.relative_to(root).as_posix(): ("" if p.name == "LOCK" else hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file()}


def run(capsys, argv: list[str]) -> tuple[int, str, str]:
    try:
        code = app.main(argv)
    except SystemExit as e:  # argparse
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def check_error(code: int, err: str, want: int, argv: list[str]) -> None:
    assert "Traceback" not in err, (argv, err)
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == want, (argv, code, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), (argv, err)
    assert ADVICE.search(lines[0].removeprefix("error: ")), f"no advice in: {lines[0]}"
    assert "Error:" not in lines[0] and "(an unexpected failure" not in lines[0], lines[0]


# -- the table ------------------------------------------------------------------------------------------------
# (id, argv with {idx}, {src}, {bad} placeholders, expected exit code)
QUESTIONS = ["", " ", "\t\n ", "x" * 2001, "\udcff\udcfe", "What\x00is HFrEF?", "a\x1b[31mred", "\x7f", "\x08" * 3,
             "q\udc80", "\u0000"]
PATIENTS = ["", " ", "\t", "P00\n2", "P002\nINFO forged", "P 002", "../P002", "/etc/passwd", "P002;rm -rf",
            "x" * 65, "\udcff", "P999", "p002", "-", "P002\x00"]
SETS = ["nokey", "=1", ".=1", "retrieval.nope=1", "retrieval.top_k=0", "retrieval.top_k=abc", "retrieval.top_k=51",
        "retrieval=5", "retrieval.top_k.x=1", "generator.temperature=-1", "generator.temperature=9",
        "chunking.child_overlap=999", "index.max_file_mb=0", "index.max_file_mb=-1", "query.max_question_chars=1",
        "confidence.medium=0.9", "retrieval.fusion=magic", "retrieval.merge_score=median", "embedder.dtype=int8",
        "verifier.answerable_min=[1", "index.keep_versions=1", "index.max_removed=2", "nonsense.key=1",
        "retrieval.bm25_weight=-1", "embedder.batch_size=0"]
CONFIGS = ["/dev/zero", "/dev/null/x", "{bad}", "{bad}/fifo", "/bin/sh", "{bad}/nowhere.yaml", "{bad}/cfg/list.yaml",
           "{bad}/cfg/invalid.yaml", "{bad}/cfg/unknown.yaml", "{bad}/cfg/unknown-section.yaml",
           "{bad}/cfg/wrong-type.yaml", "{bad}/cfg/loop.yaml", "{bad}/cfg/extends-missing.yaml",
           "{bad}/cfg/extends-number.yaml", "{bad}/cfg/latin1.yaml", "{bad}/cfg/big.yaml", "{bad}/cfg/deep.yaml",
           "{bad}/cfg/overlap.yaml", "{bad}/cfg/weights.yaml"]
SOURCES = ["/nonexistent/dir", "/dev/zero", "{bad}/fifo", "{bad}/empty-dir", "{bad}/only-readme", "{bad}/latin1",
           "{bad}/fm", "{bad}/kind", "{bad}/ehr-no-patient", "{bad}/patient-on-guideline", "{bad}/empty-doc",
           "{bad}/dup", "{bad}/html", "{bad}/pdf", "{bad}/binary", "{bad}/xml", "{bad}/xml-root", "{bad}/x.jsonl",
           "{bad}/fields.jsonl", "{bad}/array.jsonl", "{bad}/x.csv", "{bad}/hf-missing.csv", "{bad}/x.json",
           "{bad}/bad.json", "{bad}/nul.json", "{bad}/latin1.jsonl", "{bad}/ngc-missing.jsonl",
           "medquad:{bad}/empty-dir", "medquad:{bad}/xml", "ngc:{bad}/x.csv", "wikidoc:{bad}/x.jsonl",
           "uci-heart-failure:{bad}/x.json", "mtsamples:{bad}/x.csv"]

CASES: list[tuple[str, list[str], int]] = []
CASES += [(f"question-{i}", ["query", q, "--no-generate", "--index", "{idx}"], 2) for i, q in enumerate(QUESTIONS)]
CASES += [(f"patient-{i}", ["query", Q, "--patient", p, "--no-generate", "--index", "{idx}"], 2)
          for i, p in enumerate(PATIENTS)]
CASES += [(f"top-k-{v}", ["query", Q, "--top-k", v, "--no-generate", "--index", "{idx}"], 2)
          for v in ["0", "-1", "51", "1e9", "abc", "", "3.5", "nan"]]
CASES += [(f"set-{i}", ["query", Q, "--no-generate", "--index", "{idx}", "--set", s], 2) for i, s in enumerate(SETS)]
CASES += [(f"config-{i}", ["--config", c, "query", Q, "--no-generate", "--index", "{idx}"], 2)
          for i, c in enumerate(CONFIGS)]
CASES += [(f"config-status-{i}", ["index", "status", "--config", c, "--index", "{idx}"], 2)
          for i, c in enumerate(CONFIGS[:6])]
# strict builds and updates into the live index: refused, nothing published
CASES += [(f"build-{i}", ["index", "build", s, "--index", "{idx}", "-q"], 2) for i, s in enumerate(SOURCES)]
CASES += [(f"update-strict-{i}", ["index", "update", s, "--strict", "--index", "{idx}", "-q"], 2)
          for i, s in enumerate(SOURCES[:12])]
CASES += [
    ("build-too-big", ["index", "build", "{bad}/big", "--index", "{idx}", "--set", "index.max_file_mb=0.1"], 2),
    ("build-kind-fixed", ["index", "build", "{fix}/ngc.jsonl", "--kind", "ehr", "--index", "{idx}"], 2),
    ("build-kind-bad", ["index", "build", "{src}/guidelines", "--kind", "recipe", "--index", "{idx}"], 2),
    ("build-no-sources", ["index", "build", "--index", "{idx}"], 2),
    ("build-unknown-set", ["index", "build", "--source-set", "nope", "--index", "{idx}"], 2),
    ("update-removes-most", ["index", "update", "{src}/guidelines/cap.md", "--index", "{idx}"], 2),
    ("update-chunking", ["index", "update", "{src}/guidelines", "{src}/ehr", "--index", "{idx}",
                         "--set", "chunking.child_tokens=64"], 2),
    ("update-embedder-dim", ["index", "update", "{src}/guidelines", "{src}/ehr", "--index", "{idx}",
                             "--set", "embedder.max_length=4"], 2),
    ("update-max-removed-2", ["index", "update", "{src}", "--max-removed", "2", "--index", "{idx}"], 2),
    ("update-max-removed-nan", ["index", "update", "{src}", "--max-removed", "nan", "--index", "{idx}"], 2),
    ("update-max-removed-neg", ["index", "update", "{src}", "--max-removed", "-0.1", "--index", "{idx}"], 2),
    ("update-lock-timeout-neg", ["index", "update", "{src}", "--lock-timeout", "-1", "--index", "{idx}"], 2),
    ("update-lock-timeout-nan", ["index", "update", "{src}", "--lock-timeout", "nan", "--index", "{idx}"], 2),
    ("update-lock-timeout-inf", ["index", "update", "{src}", "--lock-timeout", "inf", "--index", "{idx}"], 2),
    ("rollback-to-missing", ["index", "rollback", "--to", "v0099", "--index", "{idx}"], 2),
    ("rollback-to-empty", ["index", "rollback", "--to", "", "--index", "{idx}"], 2),
    ("rollback-to-path", ["index", "rollback", "--to", "../../etc", "--index", "{idx}"], 2),
    ("rollback-to-newline", ["index", "rollback", "--to", "v0001\nv0002", "--index", "{idx}"], 2),
    ("rollback-to-word", ["index", "rollback", "--to", "latest", "--index", "{idx}"], 2),
    ("rollback-to-current", ["index", "rollback", "--to", "2", "--index", "{idx}"], 2),
    ("index-is-a-file", ["query", Q, "--no-generate", "--index", "{src}/guidelines/cap.md"], 2),
    ("index-missing", ["query", Q, "--no-generate", "--index", "{bad}/no-index-here"], 2),
    ("status-missing", ["index", "status", "--index", "{bad}/no-index-here"], 2),
    ("verify-missing", ["index", "verify", "--index", "/nonexistent"], 2),
    ("rollback-missing", ["index", "rollback", "--index", "{bad}/empty-dir"], 2),
    ("adapter-missing", ["query", Q, "--adapter", "{bad}/empty-dir", "--index", "{idx}"], 2),
    ("risk-empty", ["risk", ""], 2),
    ("risk-blank", ["risk", "  \n "], 2),
    ("risk-long", ["risk", "x" * 9000], 2),
    ("risk-none", ["risk"], 2),
    ("risk-both", ["risk", "case", "--file", "{bad}/case/empty.txt"], 2),
    ("risk-lvef-250", ["risk", "A 70-year-old man, LVEF 250%."], 2),
    ("risk-lvef-0", ["risk", "A 70-year-old man, LVEF 0%."], 2),
    ("risk-age-300", ["risk", "A 300-year-old man, LVEF 30%."], 2),
    ("risk-sodium", ["risk", "A 70-year-old man, LVEF 30%, sodium 9."], 2),
    ("risk-creatinine", ["risk", "A 70-year-old man, LVEF 30%, creatinine 4000 µmol/L."], 2),
    ("risk-not-utf8", ["risk", "LVEF 30% \udcff"], 2),
    ("risk-nul", ["risk", "LVEF 30%\x00"], 2),
    ("risk-file-missing", ["risk", "--file", "/nonexistent/case.txt"], 2),
    ("risk-file-dir", ["risk", "--file", "{bad}"], 2),
    ("risk-file-zero", ["risk", "--file", "/dev/zero"], 2),
    ("risk-file-fifo", ["risk", "--file", "{bad}/fifo"], 2),
    ("risk-file-binary", ["risk", "--file", "{bad}/case/binary.txt"], 2),
    ("risk-file-latin1", ["risk", "--file", "{bad}/case/latin1.txt"], 2),
    ("risk-file-big", ["risk", "--file", "{bad}/case/big.txt"], 2),
    ("risk-file-empty", ["risk", "--file", "{bad}/case/empty.txt"], 2),
    ("argv-none", [], 2),
    ("argv-unknown-command", ["frobnicate"], 2),
    ("argv-unknown-option", ["query", Q, "--frob"], 2),
    ("argv-no-question", ["query"], 2),
    ("argv-index-no-action", ["index"], 2),
    ("argv-bad-choice", ["index", "build", "x", "--kind", "poem"], 2),
    ("argv-eval-bad-bench", ["eval", "mcq", "--bench", "nope", "--data", "x", "--output", "y"], 2),
    ("argv-models-nothing", ["models"], 2),
    ("argv-set-missing-value", ["query", Q, "--set"], 2),
]


def _fill(argv: list[str], idx: Path, src: Path, bad: Path) -> list[str]:
    return [a.format(idx=idx, src=src, bad=bad, fix=FIX) if "{" in a and "[" not in a else a for a in argv]


@pytest.mark.parametrize(("argv", "want"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_input(capsys, tiny, bad, argv, want):
    root, src = tiny
    before = snapshot(root)
    full = _fill(argv, root, src, bad)
    code, _, err = run(capsys, full)
    check_error(code, err, want, full)
    assert snapshot(root) == before, f"{full} changed the index"


# -- damaged index folders: each case on its own copy ------------------------------------------------------
def _current(root: Path) -> Path:
    return root / "versions" / (root / "CURRENT").read_text().strip()


def _manifest_edit(f: Callable[[dict], object]) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        mpath = _current(root) / "manifest.json"
        m = json.loads(mpath.read_text())
        out = f(m)
        mpath.write_text(json.dumps(m if out is None else out))

    return apply


def _flip(rel: str, offset: int = -5) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        p = _current(root) / rel
        data = bytearray(p.read_bytes())
        data[offset] ^= 0x01
        p.write_bytes(bytes(data))

    return apply


def _replace_same_size(root: Path) -> None:
    p = _current(root) / "chunks.jsonl"
    p.write_bytes(p.read_bytes().replace(b"preferred", b"FORBIDDEN", 1))


def _bm25_file(root: Path) -> None:
    p = next(q for q in sorted((_current(root) / "bm25").iterdir()) if q.suffix == ".npy")
    data = bytearray(p.read_bytes())
    data[-1] ^= 0x01
    p.write_bytes(bytes(data))


def _rm(rel: str) -> Callable[[Path], None]:
    return lambda root: (_current(root) / rel).unlink()


def _current_dir(root: Path) -> None:
    (root / "CURRENT").unlink()
    (root / "CURRENT").mkdir()


def _current_text(text: str) -> Callable[[Path], None]:
    return lambda root: (root / "CURRENT").write_text(text)


def _versions_file(root: Path) -> None:
    shutil.rmtree(root / "versions")
    (root / "versions").write_text("not a folder")


def _lock_dir(root: Path) -> None:
    lock = root / "LOCK"
    if lock.exists():
        lock.unlink()
    lock.mkdir()


def _lock_link(root: Path) -> None:
    lock = root / "LOCK"
    if lock.exists():
        lock.unlink()
    lock.symlink_to(root / "history.jsonl")


def _foreign(root: Path) -> None:
    versions = sorted(p for p in (root / "versions").iterdir())
    shutil.copy(versions[0] / "manifest.json", _current(root) / "manifest.json")


def _version_link(root: Path) -> None:
    cur = _current(root)
    moved = root.parent / (root.name + "-elsewhere")
    shutil.move(cur, moved)
    cur.symlink_to(moved, target_is_directory=True)


def _del(key: str) -> Callable[[dict], object]:
    return lambda m: {k: v for k, v in m.items() if k != key}


DAMAGE: dict[str, Callable[[Path], None]] = {
    "same-size-edit": _replace_same_size,
    "faiss-flip": _flip("dense.faiss"),
    "faiss-header-flip": _flip("dense.faiss", 3),
    "bm25-flip": _bm25_file,
    "chunks-missing": _rm("chunks.jsonl"),
    "faiss-missing": _rm("dense.faiss"),
    "manifest-missing": _rm("manifest.json"),
    "manifest-not-json": lambda r: (_current(r) / "manifest.json").write_text("{"),
    "manifest-list": lambda r: (_current(r) / "manifest.json").write_text("[]"),
    "manifest-binary": lambda r: (_current(r) / "manifest.json").write_bytes(b"\xff\xfe\x00"),
    "manifest-no-embedder": _manifest_edit(_del("embedder")),
    "manifest-documents-list": _manifest_edit(lambda m: {**m, "documents": list(m["documents"])}),
    "manifest-no-counts": _manifest_edit(_del("counts")),
    "manifest-files-escape": _manifest_edit(lambda m: {**m, "files": {**m["files"], "../../x": m["files"]
                                                                      ["chunks.jsonl"]}}),
    "manifest-files-empty": _manifest_edit(lambda m: {**m, "files": {}}),
    "manifest-format": _manifest_edit(lambda m: {**m, "format_version": 99}),
    "foreign-version": _foreign,
    "version-link": _version_link,
    "current-dir": _current_dir,
    "current-dotdot": _current_text("../../../etc\n"),
    "current-absolute": _current_text("/etc\n"),
    "current-garbage": _current_text("\x00\xff garbage"),
    "current-missing-version": _current_text("v0042-20990101T000000Z\n"),
    "versions-file": _versions_file,
}
# What each command must do with a damaged current version: refuse with exit 2 (index verify reports
# checksum problems as BROKEN with exit 1: that is its answer, not an error).
COMMANDS = {
    "query": ["query", Q, "--no-generate"],
    "status": ["index", "status"],
    "verify": ["index", "verify"],
    "update": ["index", "update", "{src}/guidelines", "{src}/ehr"],
}
VERIFY_REPORTS = {"same-size-edit", "faiss-flip", "faiss-header-flip", "bm25-flip", "chunks-missing", "faiss-missing",
                  "manifest-files-empty"}
STATUS_READS_MANIFEST_ONLY = {"same-size-edit", "faiss-flip", "faiss-header-flip", "bm25-flip", "chunks-missing",
                              "faiss-missing", "manifest-files-empty"}


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_index(capsys, tiny, tmp_path, damage, command):
    root0, src = tiny
    root = tmp_path / "idx"
    shutil.copytree(root0, root, symlinks=True)
    DAMAGE[damage](root)
    before = snapshot(root) if (root / "versions").is_dir() else None
    argv = _fill([*COMMANDS[command], "--index", "{idx}", "-q"], root, src, src)
    code, out, err = run(capsys, argv)
    if command == "verify" and damage in VERIFY_REPORTS:
        assert code == 1 and "BROKEN" in out and not err.strip(), (damage, out, err)
    elif command == "status" and damage in STATUS_READS_MANIFEST_ONLY:
        assert code == 0 and not err.strip(), (damage, err)  # status describes; query and update refuse
    else:
        check_error(code, err, 2, argv)
        assert not out.strip(), (damage, command, out)
    if before is not None:
        after = snapshot(root)
        assert after == before, f"{damage}/{command} changed the index"


@pytest.mark.parametrize("damage", ["lock-dir", "lock-link", "index-read-only"])
def test_lock_damage(capsys, tiny, tmp_path, damage, monkeypatch):
    import os

    root0, src = tiny
    root = tmp_path / "idx"
    shutil.copytree(root0, root)
    if damage == "lock-dir":
        _lock_dir(root)
    elif damage == "lock-link":
        _lock_link(root)
    else:
        real_open = os.open

        def deny(path, flags, *a):
            if str(path).startswith(str(root)) and flags & (os.O_RDWR | os.O_WRONLY):
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, flags, *a)

        monkeypatch.setattr(os, "open", deny)
    before = snapshot(root)
    for argv in (["index", "update", "{src}/guidelines", "{src}/ehr", "--index", "{idx}"],
                 ["index", "rollback", "--index", "{idx}"]):
        full = _fill(argv, root, src, src)
        code, _, err = run(capsys, full)
        check_error(code, err, 2, full)
    assert snapshot(root) == before
    code, out, _ = run(capsys, _fill(["query", Q, "--no-generate", "--index", "{idx}"], root, src, src))
    assert code == 0 and "SOURCES" in out, "readers take no lock: queries keep working"


# -- property-based: whatever the bytes, the contract holds --------------------------------------------------
_BAD_CHARS = st.sampled_from(["\x00", "\x01", "\x07", "\x1b", "\x7f", "\udcff", "\udc80", "\x0b", "\x0c"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(head=st.text(max_size=30), bad_char=_BAD_CHARS, tail=st.text(max_size=30))
def test_questions_with_control_or_undecodable_characters(capsys, tiny, head, bad_char, tail):
    root, _ = tiny
    argv = ["query", head + bad_char + tail, "--no-generate", "--index", str(root)]
    code, _, err = run(capsys, argv)
    check_error(code, err, 2, argv)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pid=st.text(min_size=0, max_size=80).filter(lambda s: s.strip() != "P002"))
def test_patient_ids_other_than_the_indexed_one(capsys, tiny, pid):
    root, _ = tiny
    argv = ["query", Q, "--patient", pid, "--no-generate", "--index", str(root)]
    code, _, err = run(capsys, argv)
    check_error(code, err, 2, argv)
    assert "\n" not in err.strip()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["retrieval.top_k", "retrieval.rrf_k", "generator.max_new_tokens", "index.keep_versions",
                            "chunking.child_tokens", "confidence.high", "retrieval.merge_threshold"]),
       value=st.one_of(st.integers(max_value=0), st.just("nan"), st.just("-inf"), st.text(alphabet="xyz[{", min_size=1,
                                                                                            max_size=5)))
def test_out_of_range_overrides(capsys, tiny, key, value):
    root, _ = tiny
    argv = ["query", Q, "--no-generate", "--index", str(root), "--set", f"{key}={value}"]
    code, _, err = run(capsys, argv)
    check_error(code, err, 2, argv)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=1, max_size=400))
def test_random_bytes_as_a_config(capsys, tiny, tmp_path_factory, data):
    root, _ = tiny
    cfg = tmp_path_factory.mktemp("cfg") / "random.yaml"
    cfg.write_bytes(data)
    argv = ["--config", str(cfg), "query", Q, "--no-generate", "--index", str(root)]
    code, out, err = run(capsys, argv)
    if code == 0:  # some random bytes are a valid empty or comment-only preset
        assert "SOURCES" in out
    else:
        check_error(code, err, 2, argv)


def test_the_table_is_large_enough():
    n_table = len(CASES) + len(DAMAGE) * len(COMMANDS) + 3
    assert n_table >= 150, n_table

"""`app.py index update|status|rollback|verify` with the hash embedder: output and exit codes."""

from __future__ import annotations

import json

import pytest

import app
from rag.assistant import Assistant
from tests.fakes import HashEmbedder
from tests.index_helpers import edit, make_sources


@pytest.fixture(autouse=True)
def hash_embedder(monkeypatch):
    monkeypatch.setattr(Assistant, "embedder", property(lambda self: HashEmbedder()))


def run(capsys, *argv):
    code = app.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_update_status_rollback_verify(capsys, tmp_path):
    src = make_sources(tmp_path / "src")
    idx = str(tmp_path / "idx")
    srcs = [str(src / "guidelines"), str(src / "ehr")]
    code, out, _ = run(capsys, "index", "update", *srcs, "--index", idx, "--json")
    assert code == 0 and len(out.strip().splitlines()) == 1
    first = json.loads(out)
    assert first["published"] and first["documents"]["added"] == 11
    assert set(first["seconds"]) >= {"diff", "chunk", "embed", "index", "write", "publish"}

    code, out, _ = run(capsys, "index", "update", *srcs, "--index", idx)
    assert code == 0 and out.startswith("no changes")

    edit(src / "guidelines" / "cap.md", "cli")
    code, out, _ = run(capsys, "index", "update", *srcs, "--index", idx, "--json")
    second = json.loads(out)
    assert code == 0 and second["documents"]["changed"] == 1 and second["changed_ids"] == {"changed": ["demo-cap"]}
    assert second["previous"] == first["version"] and second["embeddings"]["computed"] <= 2

    code, out, _ = run(capsys, "index", "status", "--index", idx, "--json")
    st = json.loads(out)
    assert code == 0 and st["version"] == second["version"] and st["parent_version"] == first["version"]
    assert st["last_update"]["documents"]["changed"] == ["demo-cap"]
    assert [s["documents"] for s in st["sources"]] == [6, 5] and st["lock"] is None
    assert [v["current"] for v in st["versions"]] == [False, True]
    code, out, _ = run(capsys, "index", "status", "--index", idx)
    assert "changed: demo-cap" in out and "(current)" in out

    code, out, _ = run(capsys, "index", "rollback", "--index", idx)
    assert code == 0 and first["version"] in out
    code, out, _ = run(capsys, "index", "verify", "--index", idx)
    assert code == 0 and "OK" in out
    code, out, _ = run(capsys, "index", "rollback", "--index", idx, "--to", second["version"][:5], "--json")
    assert json.loads(out)["to"] == second["version"]


def test_exit_codes_for_bad_input(capsys, tmp_path):
    src = make_sources(tmp_path / "src", ["cap.md", "sepsis.md"], ())
    idx = str(tmp_path / "idx")
    (src / "guidelines" / "broken.md").write_bytes(b"\xff\xfe\x00bad")
    code, _, err = run(capsys, "index", "update", str(src / "guidelines"), "--index", idx, "--strict")
    assert code == 2 and "broken.md" in err and "not UTF-8" in err
    assert not (tmp_path / "idx" / "CURRENT").exists()
    code, out, _ = run(capsys, "index", "update", str(src / "guidelines"), "--index", idx, "--json")
    res = json.loads(out)
    assert code == 3 and res["published"] and res["skipped"][0]["path"].endswith("broken.md")
    # Still skipped, nothing else changed: no new version, but the job keeps saying so (exit 3).
    code, out, _ = run(capsys, "index", "update", str(src / "guidelines"), "--index", idx)
    assert code == 3 and "no changes" in out and "skipped" in out
    code, _, err = run(capsys, "index", "rollback", "--index", idx)
    assert code == 2 and "no earlier version" in err


def test_embedder_change_through_cli(capsys, tmp_path, monkeypatch):
    src = make_sources(tmp_path / "src", ["cap.md"], ())
    idx = str(tmp_path / "idx")
    assert run(capsys, "index", "update", str(src), "--index", idx)[0] == 0
    monkeypatch.setattr(Assistant, "embedder", property(lambda self: HashEmbedder(dim=64)))
    code, _, err = run(capsys, "index", "update", str(src), "--index", idx)
    assert code == 2 and "--rebuild" in err and err.count("\n") == 1
    code, out, _ = run(capsys, "index", "update", str(src), "--index", idx, "--rebuild", "--json")
    assert code == 0 and json.loads(out)["mode"] == "rebuild"


def test_build_from_a_source_set_with_fixture_formats(capsys, tmp_path):
    """`index build --source-set` resolves [FORMAT:]PATH entries against index.data_dir."""
    from pathlib import Path

    fix = Path(__file__).resolve().parent / "fixtures" / "corpora"
    cfg = tmp_path / "set.yaml"
    cfg.write_text(f"index:\n  data_dir: {fix}\n  source_sets:\n    mini:\n      - medquad:medquad\n"
                   "      - ngc.jsonl\n      - uci-heart-failure:heart_failure.csv\n", encoding="utf-8")
    idx = str(tmp_path / "idx")
    code, out, err = run(capsys, "--config", str(cfg), "index", "build", "--source-set", "mini", "--index", idx,
                         "--skip-bad", "--json")
    assert code == 3, err  # the fixture CSV has one malformed row: published, skipped, exit 3
    summary = json.loads(out)
    assert summary["read"]["medquad.pairs_without_answer"] == 3
    assert [s["path"].rsplit("/", 1)[-1] for s in summary["skipped"]] == ["heart_failure.csv:4"]
    code, out, _ = run(capsys, "--config", str(cfg), "index", "status", "--index", idx, "--json")
    counts = json.loads(out)["counts"]
    assert counts["documents_by_collection"] == {"medquad": 3, "ngc": 2, "uci-heart-failure": 2}


def test_source_set_errors(capsys, tmp_path):
    code, _, err = run(capsys, "index", "build", "--source-set", "nope", "--index", str(tmp_path / "i"))
    assert code == 2 and "unknown source set 'nope'" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "--config", "configs/full.yaml", "--set", f"index.data_dir={tmp_path / 'none'}",
                       "index", "build", "--source-set", "full", "--index", str(tmp_path / "i"))
    assert code == 2 and "data folder" in err
    code, _, err = run(capsys, "index", "build", "--index", str(tmp_path / "i"))
    assert code == 2 and "--source-set" in err

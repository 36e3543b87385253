"""`index update` through the CLI with the real default embedder on a copy of the demo corpus."""

from __future__ import annotations

import json
import shutil

import pytest

import app

pytestmark = pytest.mark.integration


def test_update_with_the_real_embedder(capsys, tmp_path, real_index, demo_sources):
    idx = tmp_path / "idx"
    shutil.copytree(real_index, idx)
    src = tmp_path / "src"
    copies = [shutil.copytree(s, src / str(i)) for i, s in enumerate(demo_sources)]
    # The same documents from another place: nothing to re-chunk or re-embed.
    assert app.main(["index", "update", *map(str, copies), "--index", str(idx), "--json", "-q"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert not res["published"] and res["documents"] == {"added": 0, "changed": 0, "removed": 0, "kept": 0}
    doc = copies[0] / "hfref-gdmt.md"
    doc.write_text(doc.read_text(encoding="utf-8") + "\n\nReviewed without changes.\n", encoding="utf-8")
    assert app.main(["index", "update", *map(str, copies), "--index", str(idx), "--json", "-q"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["changed_ids"] == {"changed": ["demo-hfref-gdmt"]} and res["embeddings"]["computed"] <= 2
    assert app.main(["index", "verify", "--index", str(idx)]) == 0
    assert app.main(["query", "What reduces mortality in HFrEF?", "--no-generate", "--json", "--index", str(idx)]) == 0
    ans = json.loads(capsys.readouterr().out.split("index OK\n", 1)[-1])
    assert ans["index_version"] == res["version"] and ans["citations"]

"""`train reranker` on the real verifier (bundled MiniLM + adapters/verifier-minilm), a few steps on written pairs:
it resumes after its time cap, writes a folder `retrieval.reranker` can name, and reranking with it reorders the
fused head by its scores as configured."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from finetune.reranker_data import RerankPair, write

pytestmark = pytest.mark.integration

FACTS = [("asthma", "inhaled corticosteroids", "the airways narrow and swell"),
         ("gout", "colchicine and allopurinol", "uric acid crystals form in a joint"),
         ("anemia", "iron supplements", "there are too few red blood cells"),
         ("migraine", "triptans", "recurrent throbbing headaches occur")]


def pairs(tag: str) -> list[RerankPair]:
    out = []
    for i, (name, treat, what) in enumerate(FACTS):
        q = f"what helps with {name}?{tag}"
        other = FACTS[(i + 1) % len(FACTS)]
        out += [RerankPair(q, f"{name.title()} — Treatment\n{name} is treated with {treat}.", f"d{i}", "own", 1),
                RerankPair(q, f"{name.title()} — Information\nIn {name}, {what}.", f"d{i}", "sibling", 0),
                RerankPair(q, f"{other[0].title()} — Treatment\n{other[0]} is treated with {other[1]}.", f"d{i}",
                           "bm25", 0)]
    return out


@pytest.fixture(scope="module")
def student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from finetune.reranker import RerankTrainOptions, train
    from rag.config import load_config, resolve_path
    from rag.models import resolve
    from rag.verifier import Verifier
    from tests.integration.conftest import _require

    cfg = load_config()
    _require(cfg.verifier.model)
    root = tmp_path_factory.mktemp("reranker")
    write({"train": pairs(""), "heldout": pairs(" (held out)")}, {"counts": {}}, root / "data")
    teacher = Verifier(resolve(cfg.verifier.model, resolve_path(cfg.models.cache_dir)).path,
                       resolve_path(cfg.verifier.adapter))
    opts = RerankTrainOptions(layers=2, ffn=384, batch_size=4, label_block=5, save_steps=1, max_minutes=0.0)
    out, run = root / "minilm-l2", root / "run"
    with pytest.raises(TimeoutError, match="run again to resume"):
        train(root / "data", teacher, out, run, opts)  # the cap is hit at once: nothing lost, nothing written
    assert not out.exists() and (run / "elapsed.json").exists()
    opts.max_minutes = None
    card = train(root / "data", teacher, out, run, opts)
    assert card["steps_done"] == card["steps_planned"] == 3 and not card["stopped_by_time_cap"]
    labels = [float(x) for x in (run / "labels.jsonl").read_text().split()]
    assert len(labels) == 12 and all(0.0 <= x <= 1.0 for x in labels)
    assert card["heldout"]["pairs"] == 12 and -1.0 <= card["heldout"]["spearman"] <= 1.0
    assert json.loads((out / "cds_reranker.json").read_text())["layers"] == 2
    assert (out / "README.md").read_text().startswith("# cds/minilm-l2@")
    return out


def test_student_scores_pairs_and_follows_its_teacher_somewhat(student: Path):
    from rag.cross_encoder import DistilledReranker

    r = DistilledReranker(student)
    p = r.answerability("what helps with gout?", ["Gout — Treatment\ngout is treated with colchicine.",
                                                  "Asthma — Information\nIn asthma, the airways narrow."])
    assert p.shape == (2,) and ((p >= 0) & (p <= 1)).all()
    assert r._model.config.num_hidden_layers == 2 and r._model.config.intermediate_size == 384


def test_configured_reranker_reorders_the_fused_head_by_its_scores(student: Path, hash_index):
    from rag import Assistant
    from rag.config import load_config
    from rag.cross_encoder import DistilledReranker
    from tests.fakes import HashEmbedder

    root, index = hash_index
    base = ["index.auto_build_demo=false", f"index.dir={root}", "retrieval.rerank_top_n=8"]
    allowed = np.ones(len(index.children), dtype=bool)
    q = "heart failure treatment"
    plain = Assistant(load_config(None, base), embedder=HashEmbedder()).retriever()
    qv = plain.embedder.encode_queries([q])[0]
    before = plain.search(q, qv, allowed=allowed).fused
    texts = [index.children[index.child_pos[f.chunk_id]].context_text() for f in before[:8]]
    probs = DistilledReranker(student).answerability(q, texts)
    for weight in (1.0, 0.0):
        a = Assistant(load_config(None, [*base, "retrieval.rerank=true", f"retrieval.reranker={student}",
                                         f"retrieval.rerank_weight={weight}"]), embedder=HashEmbedder())
        r = a.retriever()
        assert isinstance(r.reranker.__self__, DistilledReranker)  # type: ignore[union-attr]
        after = r.search(q, qv, allowed=allowed)
        head = [f.chunk_id for f in after.fused[:8]]
        want = [before[i].chunk_id for i in sorted(range(8), key=lambda i: (-probs[i], i))] if weight == 1.0 \
            else [f.chunk_id for f in before[:8]]
        assert head == want
        assert after.fused[0].raw["rerank"] == pytest.approx(float(probs[[f.chunk_id for f in before[:8]].index(
            head[0])]), abs=1e-5)
    assert [f.chunk_id for f in after.fused[8:]] == [f.chunk_id for f in before[8:]]


def test_missing_reranker_folder_is_a_one_line_input_error(tmp_path: Path):
    from rag import Assistant
    from rag.config import load_config
    from rag.errors import InputError

    cfg = load_config(None, ["index.auto_build_demo=false", "retrieval.rerank=true",
                             f"retrieval.reranker={tmp_path / 'nope'}"])
    with pytest.raises(InputError, match=r"reranker folder .* not found; build one with") as e:
        Assistant(cfg).retriever()
    assert "\n" not in str(e.value)

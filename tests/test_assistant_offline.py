"""The whole pipeline on the demo corpus with a hash embedder and a tiny random Qwen2."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from rag.answer import Answer
from rag.assistant import ABSTAIN_MESSAGE, Assistant
from rag.config import load_config
from rag.errors import EmbedderMismatchError, IndexCorruptError, IndexMissingError, InputError, UnknownPatientError
from rag.index import HybridIndex, verify_index
from tests.fakes import HashEmbedder, LexicalVerifier, ScriptedGenerator

ANSWER_KEYS = {"question", "answer", "abstained", "confidence", "confidence_label", "citations", "sentences",
               "index_version", "models", "timings_ms"}
CITATION_KEYS = {"n", "doc_id", "chunk_id", "title", "source", "kind", "patient_id", "section", "start", "end",
                 "score", "text"}


@pytest.fixture
def assistant(hash_index, tiny_generator):
    root, _ = hash_index
    cfg = load_config(overrides=[f"index.dir={root}", "index.auto_build_demo=false", "generator.max_new_tokens=12"])
    return Assistant(cfg, embedder=HashEmbedder(), generator=tiny_generator, verifier=LexicalVerifier())


def test_manifest_and_verify(hash_index):
    root, idx = hash_index
    m = idx.manifest
    assert m["embedder"]["model_id"] == "test/hash-embedder"
    assert m["counts"]["children"] == idx.dense.ntotal == len(idx.children)
    assert {"P001", "P002", "P003", "P004"} <= set(m["patients"])
    assert all(d["hash"] for d in m["documents"].values())
    assert verify_index(root) == []


def test_no_generate_returns_evidence_with_spans(assistant):
    ans = assistant.ask("Which drug classes reduce mortality in HFrEF?", generate=False)
    d = ans.to_dict()
    assert set(d) >= ANSWER_KEYS
    assert not ans.abstained and not ans.generated
    assert ans.citations and set(d["citations"][0]) >= CITATION_KEYS
    idx = assistant.index
    for c in ans.citations:
        child = idx.children[idx.child_pos[c.chunk_id]]
        assert c.text == child.text and c.end > c.start
    assert ans.citations[0].doc_id == "demo-hfref-gdmt"
    json.dumps(d)  # serialisable


def test_tiny_model_output_is_never_presented_as_sourced(assistant):
    ans = assistant.ask("Which drug classes reduce mortality in HFrEF?")
    # A random model's tokens cannot be supported by any source: the assistant must abstain.
    assert ans.abstained and ans.answer == ABSTAIN_MESSAGE
    assert ans.confidence_label == "low"
    assert ans.citations, "abstentions still show the closest sources"
    assert {"generation", "first_token", "retrieval_search", "total"} <= set(ans.timings_ms)
    assert 0.0 <= ans.confidence <= 1.0


@pytest.mark.parametrize("patient", ["P001", "P002", "P003", "P004"])
def test_patient_scoping_never_crosses_patients(assistant, patient):
    for q in ["latest ejection fraction", "potassium creatinine medications", "discharge summary plan"]:
        ret = assistant.retrieve(q, patient, top_k=20)
        for f in ret.fused:
            c = assistant.index.children[assistant.index.child_pos[f.chunk_id]]
            assert c.kind != "ehr" or c.patient_id == patient
        assert any(u.chunk.patient_id == patient for u in ret.units)


def test_without_patient_no_ehr_record_is_retrieved(assistant):
    ret = assistant.retrieve("ejection fraction echocardiogram sacubitril metoprolol furosemide", None, top_k=30)
    assert ret.fused
    assert all(assistant.index.children[assistant.index.child_pos[f.chunk_id]].kind != "ehr" for f in ret.fused)


def test_allowed_mask_is_exact(hash_index):
    _, idx = hash_index
    none = idx.allowed_mask(None)
    assert not np.any(none & idx.is_ehr)
    p2 = idx.allowed_mask("P002")
    assert set(idx.patient_of[p2 & idx.is_ehr]) == {"P002"}


def test_weights_change_ranking(assistant):
    q = "apixaban dose reduction criteria"
    dense_only = Assistant(load_config(overrides=[f"index.dir={assistant.index_root}", "retrieval.bm25_weight=0"]),
                           embedder=HashEmbedder()).retrieve(q)
    bm25_only = Assistant(load_config(overrides=[f"index.dir={assistant.index_root}", "retrieval.dense_weight=0"]),
                          embedder=HashEmbedder()).retrieve(q)
    assert not dense_only.bm25 and not bm25_only.dense
    assert [f.chunk_id for f in dense_only.fused] != [f.chunk_id for f in bm25_only.fused]


def test_concurrent_bm25_can_be_turned_off_with_the_same_results(assistant, monkeypatch):
    import rag.retrieve

    monkeypatch.setattr(rag.retrieve, "available_cpus", lambda: 2)  # auto: BM25 beside the dense search
    off = Assistant(load_config(overrides=[f"index.dir={assistant.index_root}", "retrieval.concurrent_bm25=false"]),
                    embedder=HashEmbedder())
    assert assistant.retriever().overlapping() and not off.retriever().overlapping()
    for q, p in (("apixaban dose reduction criteria", None), ("latest potassium", "P001")):
        a, b = assistant.retrieve(q, p), off.retrieve(q, p)
        assert (a.dense, a.bm25, [f.chunk_id for f in a.fused]) == (b.dense, b.bm25, [f.chunk_id for f in b.fused])
        assert a.bm25 and a.dense


@pytest.mark.parametrize("question", ["", "   ", "x" * 2001])
def test_bad_questions(assistant, question):
    with pytest.raises(InputError):
        assistant.ask(question)


def test_unknown_patient(assistant):
    with pytest.raises(UnknownPatientError):
        assistant.ask("latest ejection fraction", patient_id="P999")


def test_missing_index(tmp_path):
    cfg = load_config(overrides=[f"index.dir={tmp_path / 'none'}", "index.auto_build_demo=false"])
    with pytest.raises(IndexMissingError):
        Assistant(cfg, embedder=HashEmbedder()).ask("What is HFrEF?", generate=False)


def test_reading_the_index_never_builds_it_open_does(tmp_path):
    """Issue 17: the demo index is built by the explicit step (Assistant.open / ensure_index), not by a property."""
    cfg = load_config(overrides=[f"index.dir={tmp_path / 'idx'}"])  # index.auto_build_demo is on by default
    plain = Assistant(cfg, embedder=HashEmbedder())
    with pytest.raises(IndexMissingError):
        _ = plain.index
    assert not (tmp_path / "idx").exists()
    opened = Assistant.open(cfg, embedder=HashEmbedder())
    assert opened.index.patients and opened.ensure_index() is None  # built once; the second call builds nothing
    ans = opened.ask("Which drug classes reduce mortality in HFrEF?", generate=False)
    assert ans.citations and ans.index_version == opened.index.version


def test_index_jobs_publish_and_roll_back_under_a_live_assistant(tmp_path, demo_sources):
    from rag.index_jobs import IndexJobs

    cfg = load_config(overrides=[f"index.dir={tmp_path / 'idx'}", "index.auto_build_demo=false"])
    a = Assistant(cfg, embedder=HashEmbedder())
    jobs = IndexJobs.of(a)
    v1 = jobs.build(demo_sources[:1])["version"]
    assert a.index.version == v1 and not a.index.patients and jobs.verify() == []
    res = jobs.update(demo_sources)
    assert res.published and a.index.version == res.version != v1  # the assistant dropped v1 on publish
    assert jobs.rollback() == (res.version, v1) and a.index.version == v1
    assert jobs.status()["version"] == v1
    alone = IndexJobs(cfg, embedder=HashEmbedder())  # the same jobs without an assistant
    assert alone.exists() and alone.update(demo_sources[:1]).published is False


def test_mismatched_embedder_refused(hash_index):
    root, _ = hash_index

    class Other(HashEmbedder):
        pass

    other = Other(dim=128)
    with pytest.raises(EmbedderMismatchError):
        HybridIndex.load(root, expect_embedder={**HybridIndex.load(root).manifest["embedder"], "dim": other.dim})


def test_corrupted_files_detected(tmp_path, demo_sources):
    import shutil

    from corpora import load_sources
    from rag.update import build_index

    root = tmp_path / "idx"
    build_index(load_sources(demo_sources[:1]).documents, HashEmbedder(), root, load_config().chunking.model_dump())
    vdir = next((root / "versions").iterdir())
    with (vdir / "chunks.jsonl").open("r+b") as f:
        f.seek(10)
        f.write(b"#")
    assert any("checksum" in p for p in verify_index(root))
    (vdir / "dense.faiss").write_bytes(b"garbage")
    with pytest.raises(IndexCorruptError):
        HybridIndex.load(root)
    (vdir / "manifest.json").write_text("{not json")
    with pytest.raises(IndexCorruptError):
        HybridIndex.load(root)
    shutil.rmtree(vdir)
    with pytest.raises(IndexCorruptError):
        HybridIndex.load(root)


def test_failed_build_leaves_previous_version_current(tmp_path, demo_sources):
    from corpora import load_sources
    from rag.index import current_version
    from rag.update import build_index

    root = tmp_path / "idx"
    docs = load_sources(demo_sources[:1]).documents
    v1, _ = build_index(docs, HashEmbedder(), root, load_config().chunking.model_dump())

    class Exploding(HashEmbedder):
        def encode_passages(self, texts, progress=False):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        build_index(docs, Exploding(), root, load_config().chunking.model_dump())
    assert current_version(root) == v1
    assert [p.name for p in (root / "versions").iterdir()] == [v1]
    HybridIndex.load(root)


def test_long_lived_assistant_picks_up_a_new_version(tmp_path, demo_sources):
    from corpora import load_sources
    from rag.update import build_index

    root = tmp_path / "idx"
    chunking = load_config().chunking.model_dump()
    v1, _ = build_index(load_sources(demo_sources[:1]).documents, HashEmbedder(), root, chunking)
    a = Assistant(load_config(overrides=[f"index.dir={root}", "index.auto_build_demo=false"]), embedder=HashEmbedder())
    a.retrieve("statin intensity")
    assert a.index.version == v1 and not a.index.patients
    v2, _ = build_index(load_sources(demo_sources).documents, HashEmbedder(), root, chunking)
    a.retrieve("latest ejection fraction", "P002")
    assert a.index.version == v2 != v1


def test_ask_many_matches_ask(assistant):
    """Batched answering is the same pipeline: same drafts (greedy), same citations, same decisions."""
    questions = ["What drug classes reduce mortality in HFrEF?", "How is hypertension diagnosed?",
                 "What is the LDL target after a heart attack?"]
    one_by_one = [assistant.ask(q) for q in questions]
    batched = assistant.ask_many(questions, batch_size=3)
    for a, b in zip(one_by_one, batched, strict=True):
        assert a.draft == b.draft
        # a batched answer's generation time is its batch's, and says so
        assert "batch_size" not in a.timings_ms
        assert not b.generated or 1 <= b.timings_ms["batch_size"] <= 3
        assert a.abstained == b.abstained and a.answer == b.answer
        assert [c.chunk_id for c in a.citations] == [c.chunk_id for c in b.citations]
    assert any(b.generated for b in batched)


def test_ask_many_gives_each_question_its_patient(assistant):
    qs = ["What is the latest ejection fraction of this patient?"] * 2
    one = [assistant.ask(qs[0], patient_id="P001"), assistant.ask(qs[1], patient_id="P002")]
    many = assistant.ask_many(qs, batch_size=2, patient_ids=["P001", "P002"])
    for a, b, pid in zip(one, many, ["P001", "P002"], strict=True):
        assert b.patient_id == pid and a.draft == b.draft
        assert all(c.patient_id in (None, pid) for c in b.citations)
        assert a.confidence_signals["patient_scoped"] == b.confidence_signals["patient_scoped"] == 1.0
    assert assistant.ask(qs[0]).confidence_signals.get("patient_scoped", 0.0) == 0.0  # a calibration signal
    with pytest.raises(InputError, match="one patient id"):
        assistant.ask_many(qs, patient_ids=["P001"])


def test_withheld_documents_are_never_retrieved(assistant):
    first = assistant.ask("What drug classes reduce mortality in HFrEF?", generate=False)
    top = first.citations[0].doc_id
    again = assistant.ask("What drug classes reduce mortality in HFrEF?", generate=False, withhold={top})
    assert top not in {c.doc_id for c in again.citations}
    with pytest.raises(InputError, match="one set"):
        assistant.ask_many(["a question"], withhold=[])


# -- the trust layer: answerability gate, only supported sentences shown, calibrated confidence ------------
def _scripted(hash_index, reply: str, *overrides: str) -> tuple[Assistant, ScriptedGenerator]:
    root, _ = hash_index
    gen = ScriptedGenerator(reply)
    cfg = load_config(overrides=[f"index.dir={root}", "index.auto_build_demo=false", *overrides])
    return Assistant(cfg, embedder=HashEmbedder(), generator=gen, verifier=LexicalVerifier()), gen  # type: ignore[arg-type]


def test_no_passage_answers_so_it_abstains_before_generating(hash_index):
    a, gen = _scripted(hash_index, "Bake it at 180 degrees [1].", "verifier.answerable_min=0.5")
    ans = a.ask("How long should I bake a sourdough loaf in a home oven?")
    assert ans.abstained and ans.answer == ABSTAIN_MESSAGE and not ans.generated
    assert gen.calls == 0, "a gated question must not cost a generation"
    assert "answerability" in (ans.abstain_reason or "")
    assert ans.confidence_signals["answerability"] < 0.5
    assert all(c.answerability is not None for c in ans.citations)


SUPPORTED = ("SGLT2 inhibitors (dapagliflozin or empagliflozin) are recommended in symptomatic chronic HFrEF to "
             "reduce cardiovascular death and heart failure hospitalisation")


def test_only_supported_sentences_are_shown(hash_index):
    reply = f"{SUPPORTED} [1]. Aspirin cures heart failure in 3 days [1]."
    a, gen = _scripted(hash_index, reply, "verifier.answerable_min=0.0", "confidence.abstain_below=0.0",
                       "confidence.attribute_uncited=false")
    ans = a.ask("Which SGLT2 inhibitors are recommended in chronic HFrEF?")
    assert gen.calls == 1 and not ans.abstained
    assert [s.supported for s in ans.sentences] == [True, False]
    assert "Aspirin" not in ans.answer and "dapagliflozin" in ans.answer
    assert "Aspirin" in (ans.draft or ""), "the unsupported sentence is kept for audit"
    assert ans.sentences[0].checks["numbers"] is True and ans.sentences[1].checks["numbers"] is False


@pytest.mark.parametrize("limit, cut", [(8, True), (200, False)])
def test_a_sentence_cut_at_the_token_limit_is_shown_unfinished(hash_index, limit, cut):
    """The scripted generation makes 8 tokens: at max_new_tokens 8 it stopped at the limit, mid-sentence."""
    tail = "SGLT2 inhibitors are recommended in symptomatic chronic HFrEF to reduce [1]"
    a, _ = _scripted(hash_index, f"{SUPPORTED} [1]. {tail}", "verifier.answerable_min=0.0",
                     "confidence.abstain_below=0.0", f"generator.max_new_tokens={limit}")
    ans = a.ask("Which SGLT2 inhibitors are recommended in chronic HFrEF?")
    assert not ans.abstained and [s.supported for s in ans.sentences] == [True, True]
    assert [s.cut_off for s in ans.sentences] == [False, cut]
    assert ans.answer.endswith("to reduce\u2026 [1]") is cut and ans.answer.endswith("to reduce [1]") is not cut
    assert ans.sentences[-1].text.endswith("to reduce [1]"), "the record keeps the generated text"
    assert ans.to_dict()["sentences"][-1]["cut_off"] is cut


def test_calibrated_confidence_is_the_fitted_probability(hash_index, tmp_path):
    import math

    calib = tmp_path / "calibration.json"
    calib.write_text(json.dumps({"features": ["support", "answerability", "answer_answerability"],
                                 "coef": [2.0, 1.0, -0.5], "intercept": -1.0}))
    a, _ = _scripted(hash_index, f"{SUPPORTED} [1].", "verifier.answerable_min=0.0", "confidence.abstain_below=0.0",
                     f"confidence.calibration={calib}")
    q = "Which SGLT2 inhibitors are recommended in chronic HFrEF?"
    ans = a.ask(q)
    sig = ans.confidence_signals
    # The answer read as a whole, by the answerability model, without its citation markers.
    from rag.verifier import answer_answerability

    expected = answer_answerability(a.answerability_verifier, q, [SUPPORTED])
    assert sig["answer_answerability"] == pytest.approx(expected, abs=1e-6)
    want = 1 / (1 + math.exp(-(-1.0 + 2.0 * sig["support"] + 1.0 * sig["answerability"]
                               - 0.5 * sig["answer_answerability"])))
    assert ans.confidence == pytest.approx(want, abs=1e-9)
    # The lexical signals (rag.coverage) are recorded for every answer: the question's words are in the index
    assert 0.0 < sig["coverage"] <= 1.0 and sig["unseen"] == 0.0
    off = a.ask("Which SGLT2 inhibitors treat zygomycosis?", generate=False).confidence_signals
    assert off["unseen"] > 0.0  # a word no indexed passage contains


def test_a_bad_calibration_file_is_a_config_error(hash_index, tmp_path):
    from rag.errors import ConfigError

    bad = tmp_path / "calibration.json"
    bad.write_text('{"features": ["support"], "coef": []}')
    a, _ = _scripted(hash_index, f"{SUPPORTED} [1].", "verifier.answerable_min=0.0", f"confidence.calibration={bad}")
    with pytest.raises(ConfigError, match="eval trust fit"):
        a.ask("Which SGLT2 inhibitors are recommended in chronic HFrEF?")


def test_the_calibrated_gate_decides_before_generating(hash_index, tmp_path):
    calib = tmp_path / "calibration.json"
    gate = {"features": ["answerability_logit", "retrieval", "agreement"], "coef": [0.0, 0.0, 0.0], "intercept": -3.0}
    calib.write_text(json.dumps({"features": ["support"], "coef": [1.0], "intercept": 0.0, "gate": gate}))
    # Raw answerability would pass a 0.2 bar; the gate model says P(answerable) = sigmoid(-3) = 0.047.
    a, gen = _scripted(hash_index, f"{SUPPORTED} [1].", "verifier.answerable_min=0.2",
                       f"confidence.calibration={calib}")
    ans = a.ask("Which SGLT2 inhibitors are recommended in chronic HFrEF?")
    assert ans.confidence_signals["answerability"] > 0.2
    assert ans.confidence_signals["answerable_p"] == pytest.approx(0.0474, abs=1e-3)
    assert ans.abstained and gen.calls == 0


def test_a_calibration_fitted_on_another_gate_adapter_is_refused(hash_index, tmp_path):
    """A gate model reads one adapter's answerability logits: under another adapter it would mean nothing."""
    from rag import provenance
    from rag.errors import ConfigError

    q = "Which SGLT2 inhibitors are recommended in chronic HFrEF?"
    gate = {"features": ["answerability_logit", "retrieval", "agreement"], "coef": [1.0, 0.0, 0.0], "intercept": 0.0}
    body = {"features": ["support"], "coef": [1.0], "intercept": 0.0, "gate": gate}
    a, _ = _scripted(hash_index, f"{SUPPORTED} [1].", "verifier.answerable_min=0.0")
    fitted = provenance.gate_verifier(a.config)
    assert fitted["adapter"] == provenance.gate_adapter(a.config) and len(fitted["adapter_digest"]) == 16
    ok, other = tmp_path / "ok.json", tmp_path / "other.json"
    ok.write_text(json.dumps({**body, "gate_verifier": fitted}))
    other.write_text(json.dumps({**body, "gate_verifier": {**fitted, "adapter": "adapters/x", "adapter_digest": "0"}}))
    a, _ = _scripted(hash_index, f"{SUPPORTED} [1].", "verifier.answerable_min=0.0", f"confidence.calibration={ok}")
    assert not a.ask(q).abstained
    a, gen = _scripted(hash_index, f"{SUPPORTED} [1].", "verifier.answerable_min=0.0",
                       f"confidence.calibration={other}")
    with pytest.raises(ConfigError, match="adapters/x") as e:
        a.ask(q)
    assert "\n" not in str(e.value) and "eval trust fit" in str(e.value) and gen.calls == 0
    # The committed version-2 calibration carries its record too: under the default's mpnet gate it is refused.
    from rag.config import PROJECT_ROOT

    mpnet = load_config(overrides=[f"confidence.calibration={PROJECT_ROOT / 'configs/calibration/default.json'}"])
    assert "adapters/verifier-minilm" in (provenance.gate_mismatch(json.loads(
        (PROJECT_ROOT / "configs/calibration/default.json").read_text())["gate_verifier"], mpnet) or "")
    # Without a verifier no gate is read: the file may serve the answer calibration alone.
    a, _ = _scripted(hash_index, f"{SUPPORTED} [1].", "verifier.enabled=false", f"confidence.calibration={other}")
    assert a.calibration is not None


def test_the_gate_adapter_digest_reads_weights_not_the_card(tmp_path):
    from types import SimpleNamespace

    from rag import provenance

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"w1")
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "README.md").write_text("card")
    cfg = SimpleNamespace(verifier=SimpleNamespace(answerability_adapter=str(adapter), adapter="unused",
                                                   answerability_model=None, model="bundle:m", enabled=True))
    first = provenance.gate_verifier(cfg)
    assert first["adapter"] == str(adapter) and first["model"] == "bundle:m"
    (adapter / "README.md").write_text("card, edited")
    assert provenance.gate_verifier(cfg) == first
    assert provenance.gate_mismatch(first, cfg) is None and provenance.gate_mismatch(None, cfg) is None
    (adapter / "adapter_model.safetensors").write_bytes(b"w2")
    assert provenance.gate_verifier(cfg)["adapter_digest"] != first["adapter_digest"]
    assert "fitted on the answerability logits of" in (provenance.gate_mismatch(first, cfg) or "")


def test_each_sentence_points_at_the_passage_that_supports_it(hash_index):
    """Per sentence and cited source, the span of the best-supporting passage (not one span per source)."""
    reply = f"{SUPPORTED} [1]."
    a, _ = _scripted(hash_index, reply, "verifier.answerable_min=0.0", "confidence.abstain_below=0.0")
    ans = a.ask("Which SGLT2 inhibitors are recommended in chronic HFrEF?")
    s = ans.sentences[0]
    assert s.supported and [sp["n"] for sp in s.spans] == s.citations == [1]
    span = s.spans[0]
    child = a.index.children[a.index.child_pos[span["chunk_id"]]]
    assert (child.start, child.end, child.text) == (span["start"], span["end"], span["text"])
    assert child.doc_id == ans.citations[0].doc_id
    assert "dapagliflozin" in span["text"], "the span is the passage that states the sentence"
    assert ans.to_dict()["sentences"][0]["spans"][0]["chunk_id"] == span["chunk_id"]


def test_a_separate_answerability_adapter_gates_and_the_main_one_checks_support(hash_index):
    """verifier.answerability_adapter: one verifier for the gate, the other for claim support."""
    root, _ = hash_index
    cfg = load_config(overrides=[f"index.dir={root}", "index.auto_build_demo=false", "verifier.answerable_min=0.3",
                                 "confidence.abstain_below=0.0", "verifier.answerability_adapter=adapters/other",
                                 "confidence.calibration=null"])  # the default gate model: another adapter
    support, gate = LexicalVerifier(), LexicalVerifier()
    a = Assistant(cfg, embedder=HashEmbedder(), generator=ScriptedGenerator(f"{SUPPORTED} [1]."),  # type: ignore[arg-type]
                  verifier=support, answerability_verifier=gate)  # type: ignore[arg-type]
    assert a.answerability_verifier is gate and a.verifier is support
    ans = a.ask("Which SGLT2 inhibitors are recommended in chronic HFrEF?")
    assert not ans.abstained and gate.calls and support.calls, "the gate asked one, support the other"
    gate_calls = len(gate.calls)
    assert a.answerability_verifier is gate and len(gate.calls) == gate_calls
    plain = Assistant(cfg.model_copy(update={"verifier": cfg.verifier.model_copy(
        update={"answerability_adapter": None})}), embedder=HashEmbedder(), verifier=support)  # type: ignore[arg-type]
    assert plain.answerability_verifier is support, "without the setting one verifier does both"
    injected = Assistant(cfg, embedder=HashEmbedder(), verifier=support)  # type: ignore[arg-type]
    assert injected.answerability_verifier is support, "an injected verifier never loads the configured gate"


def _index_adapter(tmp_path, manifest, drop: str | None = None, name: str = "adapter"):
    """An index adapter folder whose card lists the index's non-record documents (less ``drop``)."""
    from rag.verifier import ADAPTED_DOCUMENTS

    folder = tmp_path / name
    folder.mkdir()
    docs = {k: v["hash"] for k, v in manifest["documents"].items() if v["kind"] != "ehr" and k != drop}
    (folder / "training_card.json").write_text(json.dumps({ADAPTED_DOCUMENTS: docs}))
    return folder


def test_an_index_adapter_gates_only_the_index_it_was_adapted_on(hash_index, tmp_path, caplog):
    """index.answerability_adapter: used for the gate (and the answer's answerability) while the index holds exactly
    the documents it was adapted on; otherwise the general answerability verifier gates, with a warning."""
    root, index = hash_index
    fits = _index_adapter(tmp_path, index.manifest)
    stale = _index_adapter(tmp_path, index.manifest, drop="demo-hfref-gdmt", name="stale")
    base = [f"index.dir={root}", "index.auto_build_demo=false", "verifier.answerable_min=0.3",
            "confidence.abstain_below=0.0"]
    general, adapted = LexicalVerifier(), LexicalVerifier()
    a = Assistant(load_config(overrides=[*base, f"index.answerability_adapter={fits}"]), embedder=HashEmbedder(),
                  generator=ScriptedGenerator(f"{SUPPORTED} [1]."), verifier=general,  # type: ignore[arg-type]
                  index_verifier=adapted)  # type: ignore[arg-type]
    assert a.gate_verifier is adapted and a.answerability_verifier is general
    ans = a.ask(HFREF_Q)
    assert not ans.abstained and adapted.calls, "the index adapter gated"
    assert "answer_answerability" in ans.confidence_signals
    # One of the index's guidelines is not among the adapted documents: the general verifier gates, said once.
    general2, adapted2 = LexicalVerifier(), LexicalVerifier()
    b = Assistant(load_config(overrides=[*base, f"index.answerability_adapter={stale}"]), embedder=HashEmbedder(),
                  generator=ScriptedGenerator(f"{SUPPORTED} [1]."), verifier=general2,  # type: ignore[arg-type]
                  index_verifier=adapted2)  # type: ignore[arg-type]
    with caplog.at_level("WARNING"):
        b.ask(HFREF_Q)
        b.ask(HFREF_Q)
    assert not adapted2.calls and general2.calls
    warned = [r for r in caplog.records if "index.answerability_adapter" in r.getMessage()]
    assert len(warned) == 1 and "demo-hfref-gdmt" in warned[0].getMessage()


def test_an_adapter_card_must_name_the_index_documents(hash_index, tmp_path):
    from rag.verifier import adapter_mismatch

    _, index = hash_index
    assert adapter_mismatch(_index_adapter(tmp_path, index.manifest), index.manifest) is None
    assert "cannot read" in str(adapter_mismatch(tmp_path / "nowhere", index.manifest))  # no card at all
    (tmp_path / "training_card.json").write_text("{}")  # a general adapter's card
    assert "lists no adapted documents" in str(adapter_mismatch(tmp_path, index.manifest))
    changed = json.loads(json.dumps(index.manifest))
    changed["documents"]["demo-hfref-gdmt"]["hash"] = "0" * 16
    assert "1 changed since" in str(adapter_mismatch(_index_adapter(tmp_path, index.manifest, name="b"), changed))
    records_only = {"documents": {k: v for k, v in index.manifest["documents"].items() if v["kind"] == "ehr"}}
    assert "no documents other than patient records" in str(
        adapter_mismatch(_index_adapter(tmp_path, index.manifest, name="c"), records_only))


# -- generator.second_try: a withheld answer is asked again with the best-answering source alone -----------
HFREF_Q = "Which SGLT2 inhibitors are recommended in chronic HFrEF?"


@pytest.mark.parametrize("first", ["INSUFFICIENT EVIDENCE", "Aspirin cures heart failure in 3 days [2]."])
def test_a_withheld_answer_gets_a_second_try_from_the_best_source(hash_index, first):
    settings = ("verifier.answerable_min=0.0", "confidence.abstain_below=0.0", "confidence.attribute_uncited=false")
    a, gen = _scripted(hash_index, [first, f"{SUPPORTED} [1]."], *settings, "generator.second_try=true")
    ans = a.ask(HFREF_Q)
    assert gen.calls == 2 and not ans.abstained, ans.abstain_reason
    assert "dapagliflozin" in ans.answer
    second_prompt = gen.prompts[1][-1]["content"]
    assert second_prompt.count("<source") == 1, "the second try shows one source"
    assert len(ans.citations) == 1 and ans.citations[0].doc_id == "demo-hfref-gdmt"
    assert ans.first_try is not None and ans.first_try.abstained and ans.first_try.draft == first
    assert ans.confidence_signals["second_try"] == 1.0
    assert "first_try_generation" in ans.timings_ms
    assert ans.to_dict()["first_try"]["draft"] == first
    # Off: the first answer is withheld and nothing more is generated.
    b, gen_b = _scripted(hash_index, [first, f"{SUPPORTED} [1]."], *settings, "generator.second_try=false")
    off = b.ask(HFREF_Q)
    assert off.abstained and gen_b.calls == 1 and off.first_try is None


def test_the_second_try_is_checked_like_the_first_and_runs_once(hash_index):
    bad = "Aspirin cures heart failure in 3 days [1]."
    a, gen = _scripted(hash_index, [bad, bad, bad], "verifier.answerable_min=0.0", "confidence.abstain_below=0.0",
                       "confidence.attribute_uncited=false", "generator.second_try=true")
    ans = a.ask(HFREF_Q)
    assert ans.abstained and gen.calls == 2, "one second try, never a third"
    assert ans.first_try is not None and ans.abstain_reason == ans.first_try.abstain_reason


def test_a_low_confidence_answer_gets_no_second_try(hash_index):
    a, gen = _scripted(hash_index, [f"{SUPPORTED} [1].", f"{SUPPORTED} [1]."], "verifier.answerable_min=0.0",
                       "confidence.abstain_below=0.99", "generator.second_try=true")
    ans = a.ask(HFREF_Q)
    assert ans.abstained and "confidence" in (ans.abstain_reason or "") and gen.calls == 1


def test_ask_many_gives_second_tries_in_a_batch(hash_index):
    a, gen = _scripted(hash_index, ["INSUFFICIENT EVIDENCE", "INSUFFICIENT EVIDENCE", f"{SUPPORTED} [1]."],
                       "verifier.answerable_min=0.0", "confidence.abstain_below=0.0", "generator.second_try=true")
    answers = a.ask_many([HFREF_Q, HFREF_Q], batch_size=2)
    assert gen.calls == 4 and all(not x.abstained and x.first_try is not None for x in answers)


def test_the_trust_record_keeps_both_tries_and_replay_decides(hash_index):
    from eval import trust

    a, _ = _scripted(hash_index, ["INSUFFICIENT EVIDENCE", f"{SUPPORTED} [1]."], "verifier.answerable_min=0.0",
                     "confidence.abstain_below=0.0", "generator.second_try=true")
    q = {"suite": "demo_answerable", "id": "x1", "question": HFREF_Q, "answerable": True,
         "gold": ["demo-hfref-gdmt"], "required": [["dapagliflozin"]]}
    row = trust.record(q, a.ask(HFREF_Q), a.index.parents)
    assert row["abstained"] and row["second_try"]["sources"][0]["doc_id"] == "demo-hfref-gdmt"
    assert "second_try" not in row["second_try"]
    on = trust.replay(row, 0.0, 0.0, None, {})
    assert on["answered"] and on["right"] and on["second_try"]
    off = trust.replay(row, 0.0, 0.0, None, {}, second_try=False)
    assert not off["answered"] and not off["right"]


def test_a_trust_run_resumes_from_its_journal(hash_index, tmp_path, monkeypatch):
    """eval trust run --resume: answers already journaled are not generated again."""

    from eval import trust

    monkeypatch.setattr(trust, "read_records", lambda *_a, **_k: [])
    a, gen = _scripted(hash_index, f"{SUPPORTED} [1].", "verifier.answerable_min=0.0", "confidence.abstain_below=0.0")
    qs = [{"suite": "demo_answerable", "id": f"q{i}", "question": q, "answerable": True, "gold": ["x"],
           "required": [["SGLT2"]]} for i, q in enumerate(["Which SGLT2 inhibitors are recommended in HFrEF?",
                                                            "What reduces heart failure hospitalisation?"])]
    journal = tmp_path / "rows-dev.journal.jsonl"
    full = trust.run({"demo": a}, qs, tmp_path / "hf.csv", batch_size=1, journal=journal)
    assert gen.calls == 2 and [json.loads(x)["id"] for x in journal.read_text().splitlines()] == ["q0", "q1"]
    journal.write_text(journal.read_text().splitlines()[0] + "\n")  # killed after the first answer
    again = trust.run({"demo": a}, qs, tmp_path / "hf.csv", batch_size=1, journal=journal)
    assert gen.calls == 3, "only the question missing from the journal is generated"
    assert [r["id"] for r in again] == ["q0", "q1"] and again[0]["draft"] == full[0]["draft"]


def test_sources_about_another_variant_abstain_before_generating(tmp_path):
    """verifier.subject_variant: the asked type is not indexed, its sibling is; no generation is spent."""
    from corpora.document import Document
    from rag.update import build_index

    text = ("Aicardi-Goutieres syndrome type {n} is a disorder that mainly affects the brain, the immune system "
            "and the skin. Signs of type {n} include seizures, stiffness and skin lesions called chilblains.")
    docs = [Document(f"ags-{n}", text.format(n=n), f"Aicardi-Goutieres syndrome type {n}", "reference",
                     f"ags-{n}.md") for n in (1, 2)]
    root = tmp_path / "index"
    build_index(docs, HashEmbedder(), root, load_config().chunking.model_dump())
    gen = ScriptedGenerator("Signs include seizures [1].")
    cfg = load_config(overrides=[f"index.dir={root}", "index.auto_build_demo=false", "verifier.answerable_min=0.0",
                                 "confidence.abstain_below=0.0", "verifier.subject_variant=true"])
    a = Assistant(cfg, embedder=HashEmbedder(), generator=gen, verifier=LexicalVerifier())  # type: ignore[arg-type]
    ans = a.ask("What are the symptoms of Aicardi-Goutieres syndrome type 4?")
    assert ans.abstained and not ans.generated and gen.calls == 0
    assert "another variant" in (ans.abstain_reason or "") and "syndrome type 1" in (ans.abstain_reason or "")
    assert not a.ask("What are the symptoms of Aicardi-Goutieres syndrome type 2?").abstained
    off = Assistant(cfg.model_copy(update={"verifier": cfg.verifier.model_copy(update={"subject_variant": False})}),
                    embedder=HashEmbedder(), generator=gen, verifier=LexicalVerifier())  # type: ignore[arg-type]
    assert not off.ask("What are the symptoms of Aicardi-Goutieres syndrome type 4?").abstained


def _checked_assistant(tmp_path: Any, docs: list[tuple[str, str, str]], gen: ScriptedGenerator, switch: str,
                       on: bool, second_try: bool) -> Assistant:
    """An assistant over ``docs`` (id, text, title): no gate, threshold or calibration; ``verifier.<switch>`` set."""
    from corpora.document import Document
    from rag.update import build_index

    root = tmp_path / "index"
    if not root.exists():
        build_index([Document(d, text, title, "reference", f"{d}.md") for d, text, title in docs], HashEmbedder(),
                    root, load_config().chunking.model_dump())
    cfg = load_config(overrides=[f"index.dir={root}", "index.auto_build_demo=false", "verifier.answerable_min=0.0",
                                 "confidence.abstain_below=0.0", "confidence.calibration=null",
                                 f"generator.second_try={str(second_try).lower()}",
                                 f"verifier.{switch}={str(on).lower()}"])
    return Assistant(cfg, embedder=HashEmbedder(), generator=gen, verifier=LexicalVerifier())  # type: ignore[arg-type]


def test_a_sentence_restating_a_question_word_the_index_never_holds_is_not_supported(tmp_path):
    """verifier.unseen_terms: "glaucoma" is in no indexed passage, so "glaucoma is treated with metformin [1]"
    cannot be sourced however close it reads to the metformin passage (recorded even with the switch off); the
    whole answer is withheld, naming the word, with no second try (it would read the same off-topic sources)."""
    docs = [("t2d", "Metformin is the first-line treatment for type 2 diabetes, with lifestyle change. Early "
                    "combination therapy is considered when HbA1c is far above target.", "Type 2 diabetes treatment"),
            ("htn", "First-line treatment for hypertension is a thiazide, an ACE inhibitor, an ARB or a calcium "
                    "channel blocker.", "Hypertension treatment")]
    # The second sentence is true and sourced, but about type 2 diabetes: not an answer either.
    gen = ScriptedGenerator("The first-line treatment for glaucoma is metformin [1]. Metformin is the first-line "
                            "treatment for type 2 diabetes, with lifestyle change [1].")
    question = "What is the first-line treatment of glaucoma?"

    def ask(on: bool, q: str = question) -> Answer:
        return _checked_assistant(tmp_path, docs, gen, "unseen_terms", on, second_try=True).ask(q)

    off = ask(False)
    assert not off.abstained and off.sentences[0].checks.get("unseen_terms") is False and gen.calls == 1
    on = ask(True)
    assert on.abstained and not on.sentences[0].supported and on.sentences[1].supported
    assert gen.calls == 2, "one generation, no second try"
    assert on.abstain_reason == "the question asks about 'glaucoma', which no indexed source mentions"
    # A question whose words are all indexed is answered as before.
    gen.replies = ["The first-line treatment for type 2 diabetes is metformin [1]."]
    kept = ask(True, "What is the first-line treatment of type 2 diabetes?")
    assert not kept.abstained and "unseen_terms" not in kept.sentences[0].checks


def test_a_sentence_bringing_a_word_no_source_holds_is_not_supported(tmp_path):
    """verifier.novel_terms: "bronchoscopy" is in no indexed passage and not in the question; that sentence goes,
    the sourced one stays (recorded even with the switch off)."""
    docs = [("pe", "CT pulmonary angiography confirms pulmonary embolism. A low D-dimer excludes it when clinical "
                   "probability is low.", "Pulmonary embolism diagnosis")]
    gen = ScriptedGenerator("CT pulmonary angiography confirms pulmonary embolism [1]. CT pulmonary angiography or "
                            "bronchoscopy confirms pulmonary embolism [1].")

    def ask(on: bool) -> Answer:
        a = _checked_assistant(tmp_path, docs, gen, "novel_terms", on, second_try=False)
        return a.ask("How is pulmonary embolism diagnosed?")

    off, on = ask(False), ask(True)
    assert [s.supported for s in off.sentences] == [True, True]
    assert off.sentences[1].checks.get("novel_terms") is False and "novel_terms" not in off.sentences[0].checks
    assert [s.supported for s in on.sentences] == [True, False] and not on.abstained
    assert "bronchoscopy" not in on.answer


def test_an_answerability_adapter_on_another_base_loads_on_that_base(hash_index, tmp_path):
    """verifier.answerability_model: the gate's adapter is read on its own encoder (a larger base), claim support
    stays on verifier.model; loading is lazy, so only the chosen folders are checked here."""
    root, _ = hash_index
    gate_base, gate_adapter, support_adapter = tmp_path / "mpnet", tmp_path / "gate", tmp_path / "support"
    for folder in (gate_adapter, support_adapter):
        folder.mkdir()
        (folder / "adapter_config.json").write_text("{}", encoding="utf-8")
    gate_base.mkdir()
    (gate_base / "config.json").write_text("{}", encoding="utf-8")
    cfg = load_config(overrides=[f"index.dir={root}", "index.auto_build_demo=false",
                                 f"verifier.adapter={support_adapter}",
                                 f"verifier.answerability_adapter={gate_adapter}",
                                 f"verifier.answerability_model={gate_base}"])
    a = Assistant(cfg, embedder=HashEmbedder())  # type: ignore[arg-type]
    gate, support = a.answerability_verifier, a.verifier
    assert gate is not None and support is not None
    assert (gate.base, gate.adapter) == (gate_base, gate_adapter)
    assert support.base != gate_base and support.adapter == support_adapter

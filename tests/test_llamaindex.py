"""Our retriever inside llama-index: scored nodes with source metadata, patient scoping kept."""

from __future__ import annotations

from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.response_synthesizers import get_response_synthesizer
from llama_index.core.schema import NodeWithScore

from rag.assistant import Assistant
from rag.config import load_config
from rag.llamaindex import CDSRetriever
from tests.fakes import HashEmbedder


def _assistant(root):
    return Assistant(load_config(overrides=[f"index.dir={root}", "index.auto_build_demo=false"]),
                     embedder=HashEmbedder())


def test_nodes_carry_scores_and_citation_metadata(hash_index):
    root, _ = hash_index
    a = _assistant(root)
    nodes = CDSRetriever(a).retrieve("Which drug classes reduce mortality in heart failure?")
    assert nodes and all(isinstance(n, NodeWithScore) for n in nodes)
    assert [n.score for n in nodes] == sorted((n.score for n in nodes), reverse=True)
    ours = a.retrieve("Which drug classes reduce mortality in heart failure?")
    assert [n.node.node_id for n in nodes] == [u.chunk.chunk_id for u in ours.units]
    m = nodes[0].node.metadata
    assert {"doc_id", "chunk_id", "title", "source", "kind", "section", "start", "end", "index_version"} <= set(m)
    assert m["index_version"] == a.index.version
    assert not any(n.node.metadata["kind"] == "ehr" for n in nodes)  # no patient: no records


def test_patient_scope_and_a_query_engine(hash_index):
    root, idx = hash_index
    a = _assistant(root)
    patient = sorted(idx.patients)[0]
    nodes = CDSRetriever(a, patient_id=patient).retrieve("latest ejection fraction")
    assert any(n.node.metadata["patient_id"] == patient for n in nodes)
    assert all(n.node.metadata["kind"] != "ehr" or n.node.metadata["patient_id"] == patient for n in nodes)
    # Drop-in: a llama-index query engine over our retriever (a mock LLM, no network).
    engine = RetrieverQueryEngine(CDSRetriever(a), get_response_synthesizer(llm=MockLLM(max_tokens=8)))
    resp = engine.query("When is an ICD indicated?")
    assert resp.source_nodes and resp.source_nodes[0].node.metadata["doc_id"]

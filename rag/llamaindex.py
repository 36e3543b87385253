"""Our hybrid retriever as a llama-index ``BaseRetriever``.

A llama-index user drops it into a query engine and gets our retrieval (dense + BM25, fusion,
auto-merge, patient scoping, whatever vector store the index uses) as scored nodes::

    from llama_index.core.query_engine import RetrieverQueryEngine
    from rag import Assistant
    from rag.llamaindex import CDSRetriever

    retriever = CDSRetriever(Assistant.open("configs/default.yaml"), patient_id=None)
    nodes = retriever.retrieve("What reduces mortality in HFrEF?")
    engine = RetrieverQueryEngine.from_args(retriever, llm=...)   # any llama-index LLM

Each node is the source the generator would see (a merged section or a passage), its score the
fused score, and its metadata the citation fields of the answer JSON (doc_id, chunk_id, title,
source, kind, patient_id, section, start, end) plus the index version.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode


class CDSRetriever(BaseRetriever):
    """``assistant.retrieve`` as llama-index nodes; ``patient_id`` scopes every query to one patient."""

    def __init__(self, assistant: Any, patient_id: str | None = None, top_k: int | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.assistant = assistant
        self.patient_id = patient_id
        self.top_k = top_k

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        ret = self.assistant.retrieve(query_bundle.query_str, self.patient_id, self.top_k)
        version = self.assistant.index.version
        out = []
        for unit in ret.units:
            c = unit.chunk
            meta = {"doc_id": c.doc_id, "chunk_id": c.chunk_id, "title": c.title, "source": c.source,
                    "kind": c.kind, "patient_id": c.patient_id, "section": c.section, "start": c.start,
                    "end": c.end, "merged": unit.merged, "passages": [h.chunk_id for h in unit.hits],
                    "index_version": version}
            node = TextNode(id_=c.chunk_id, text=c.text, metadata=meta)
            node.excluded_embed_metadata_keys = node.excluded_llm_metadata_keys = [
                k for k in meta if k not in ("title", "section")]
            out.append(NodeWithScore(node=node, score=float(unit.score)))
        return out

"""Retrieval speed and memory, side by side with what a user would otherwise pick.

Run on the full index (build it first)::

    python eval/bench_retrieval.py --config configs/full.yaml --queries 300

Sections (each prints ratios measured in this one run):
  1. ours vs the stock llama-index composition on the same passages, vectors and embedder:
     QueryFusionRetriever(reciprocal_rerank) over a FAISS-backed VectorIndexRetriever and a
     BM25Retriever, wrapped in AutoMergingRetriever. nDCG@10 and per-query latency (p50/p95);
     query encoding is timed apart and excluded from both.
  2. BM25: rank-bm25 (BM25Okapi) vs bm25s on the same tokens: top-10 agreement, speed.
  3. index build throughput vs the raw encoder on the same passages; disk and RSS per 100k.
  4. FAISS flat vs HNSW: recall of the flat top-10, latency.
Needs the bench extra: pip install -e ".[bench]".
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from eval.metrics import dedupe, ndcg_at


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_queries(assistant: Any, cfg: Any, n: int) -> list[Any]:
    from corpora import load_sources
    from eval.retrieval import build_queries, medquad_path
    from eval.splits import load_split

    docs = load_sources([f"medquad:{medquad_path(cfg, None)}"]).documents
    return build_queries(docs, load_split(), "test", n)


# -- 1. ours vs llama-index --------------------------------------------------------------------


def llama_index_composition(index: Any, embedder: Any, k: int, merge_threshold: float) -> Any:
    import faiss
    from llama_index.core import StorageContext, VectorStoreIndex
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.llms.mock import MockLLM
    from llama_index.core.retrievers import AutoMergingRetriever, QueryFusionRetriever
    from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode
    from llama_index.retrievers.bm25 import BM25Retriever
    from llama_index.vector_stores.faiss import FaissVectorStore

    class OurEmbedding(BaseEmbedding):
        """The same encoder as ours (queries only: passage vectors are reused from our index)."""

        def _get_query_embedding(self, query: str) -> list[float]:
            return [float(x) for x in embedder.encode_queries([query])[0]]

        def _get_text_embedding(self, text: str) -> list[float]:
            return [float(x) for x in embedder.encode_passages([text])[0]]

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return self._get_query_embedding(query)

    vectors = index.dense.reconstruct_n(0, index.dense.ntotal)
    parents = {}
    for pid, p in index.parents.items():
        node = TextNode(id_=pid, text=p.context_text(), metadata={"doc_id": p.doc_id})
        node.relationships[NodeRelationship.CHILD] = [RelatedNodeInfo(node_id=c) for c in p.child_ids]
        parents[pid] = node
    children: list[Any] = []
    for c, v in zip(index.children, vectors, strict=True):
        node = TextNode(id_=c.chunk_id, text=c.context_text(), metadata={"doc_id": c.doc_id}, embedding=v.tolist())
        if c.parent_id:
            node.relationships[NodeRelationship.PARENT] = RelatedNodeInfo(node_id=c.parent_id)
        node.excluded_embed_metadata_keys = node.excluded_llm_metadata_keys = ["doc_id"]
        children.append(node)
    store = FaissVectorStore(faiss_index=faiss.IndexFlatIP(index.dense.d))
    storage = StorageContext.from_defaults(vector_store=store)
    storage.docstore.add_documents(list(parents.values()) + children)
    vindex = VectorStoreIndex(children, storage_context=storage, embed_model=OurEmbedding(), show_progress=False)
    vector_retriever = vindex.as_retriever(similarity_top_k=k)
    bm25 = BM25Retriever.from_defaults(nodes=children, similarity_top_k=k)
    fusion = QueryFusionRetriever([vector_retriever, bm25], llm=MockLLM(), mode="reciprocal_rerank",  # type: ignore[arg-type,unused-ignore]
                                  similarity_top_k=k, num_queries=1, use_async=False)
    return AutoMergingRetriever(fusion, storage, simple_ratio_thresh=merge_threshold)  # type: ignore[arg-type,unused-ignore]


def bench_vs_llama_index(assistant: Any, queries: list[Any], out: dict[str, Any]) -> None:
    from llama_index.core.schema import QueryBundle

    from rag.retrieve import HybridRetriever

    index, embedder, r = assistant.index, assistant.embedder, assistant.config.retrieval
    k = max(r.dense_k, r.bm25_k)
    ours = HybridRetriever(index, embedder, r.dense_k, r.bm25_k, r.rrf_k, r.dense_weight, r.bm25_weight,
                           r.merge_threshold, top_k=k, fusion=r.fusion, merge_score=r.merge_score)
    t = time.perf_counter()
    qvs = embedder.encode_queries([q.text for q in queries])
    encode_ms = (time.perf_counter() - t) * 1000 / len(queries)
    t = time.perf_counter()
    li = llama_index_composition(index, embedder, k, r.merge_threshold)
    li_setup = time.perf_counter() - t
    all_rows = np.ones(len(index.children), dtype=bool)
    results: dict[str, dict[str, list[float]]] = {n: {"ms": [], "ndcg": []} for n in ("ours", "ours_scoped", "li")}
    for q, qv in zip(queries, qvs, strict=True):
        qv = qv.astype(np.float32)
        # unscoped (every passage), as llama-index's FAISS store has no metadata filter
        t = time.perf_counter()
        ret = ours.search(q.text, qv, allowed=all_rows)
        results["ours"]["ms"].append((time.perf_counter() - t) * 1000)
        results["ours"]["ndcg"].append(ndcg_at(dedupe([u.chunk.doc_id for u in ret.units]), q.gold))
        t = time.perf_counter()  # the product path: patient records excluded inside the searches
        ours.search(q.text, qv)
        results["ours_scoped"]["ms"].append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        nodes = li.retrieve(QueryBundle(q.text, embedding=[float(x) for x in qv]))
        results["li"]["ms"].append((time.perf_counter() - t) * 1000)
        results["li"]["ndcg"].append(ndcg_at(dedupe([n.node.metadata["doc_id"] for n in nodes]), q.gold))
    row: dict[str, Any] = {n: {"p50_ms": pct(v["ms"], 50), "p95_ms": pct(v["ms"], 95),
               "ndcg@10": float(np.mean(v["ndcg"])) if v["ndcg"] else None} for n, v in results.items()}
    row["query_encode_ms"] = encode_ms
    row["llama_index_setup_s"] = li_setup
    row["speedup_p50"] = row["li"]["p50_ms"] / row["ours"]["p50_ms"]
    row["speedup_p95"] = row["li"]["p95_ms"] / row["ours"]["p95_ms"]
    out["vs_llama_index"] = row
    print(f"[1] {len(queries)} queries, {len(index.children):,} passages, k={k}; query encoding {encode_ms:.1f} ms "
          "(excluded)")
    for n, label in (("ours", "ours (unscoped)"), ("ours_scoped", "ours (scoped, product path)"),
                     ("li", "llama-index composition")):
        nd = row[n]["ndcg@10"]
        print(f"    {label:30s} p50 {row[n]['p50_ms']:7.1f} ms  p95 {row[n]['p95_ms']:7.1f} ms"
              + (f"  nDCG@10 {100 * nd:.1f}" if nd is not None else ""))
    print(f"    speed ratio llama-index/ours: p50 {row['speedup_p50']:.1f}x, p95 {row['speedup_p95']:.1f}x; "
          f"nDCG@10 difference ours-li {100 * (row['ours']['ndcg@10'] - row['li']['ndcg@10']):+.1f} points")


# -- 2. rank-bm25 vs bm25s ---------------------------------------------------------------------


def bench_bm25(assistant: Any, queries: list[Any], out: dict[str, Any], n_queries: int) -> None:
    import bm25s
    from rank_bm25 import BM25Okapi

    from rag.text import tokenize

    texts = [c.context_text() for c in assistant.index.children]
    t = time.perf_counter()
    corpus = [tokenize(x) for x in texts]
    tok_s = time.perf_counter() - t
    t = time.perf_counter()
    b2 = bm25s.BM25()
    b2.index(corpus, show_progress=False)
    bm25s_build = time.perf_counter() - t
    t = time.perf_counter()
    rb = BM25Okapi(corpus)
    rank_build = time.perf_counter() - t
    agree, ms_s, ms_r = [], [], []
    for q in queries[:n_queries]:
        toks = tokenize(q.text)
        t = time.perf_counter()
        s = np.asarray(b2.get_scores(toks))
        top_s = np.argsort(-s, kind="stable")[:10]
        ms_s.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        r = np.asarray(rb.get_scores(toks))
        top_r = np.argsort(-r, kind="stable")[:10]
        ms_r.append((time.perf_counter() - t) * 1000)
        agree.append(len(set(top_s.tolist()) & set(top_r.tolist())) / 10)
    row = {"queries": len(ms_s), "tokenize_s": tok_s, "bm25s_build_s": bm25s_build, "rank_bm25_build_s": rank_build,
           "bm25s_p50_ms": pct(ms_s, 50), "rank_bm25_p50_ms": pct(ms_r, 50), "top10_agreement": float(np.mean(agree)),
           "speed_ratio_p50": pct(ms_r, 50) / pct(ms_s, 50)}
    out["bm25"] = row
    print(f"[2] BM25 on {len(texts):,} passages, {row['queries']} queries: bm25s p50 {row['bm25s_p50_ms']:.2f} ms, "
          f"rank-bm25 p50 {row['rank_bm25_p50_ms']:.1f} ms ({row['speed_ratio_p50']:.0f}x); top-10 agreement "
          f"{100 * row['top10_agreement']:.0f}%; build bm25s {bm25s_build:.1f} s vs rank-bm25 {rank_build:.1f} s")


# -- 3. build throughput, disk, RSS -------------------------------------------------------------


def bench_build(assistant: Any, out: dict[str, Any], n_docs: int) -> None:
    from corpora import load_sources
    from rag.config import source_set
    from rag.update import build_index

    cfg = assistant.config
    docs = load_sources(source_set(cfg, "full"), strict=False).documents
    rng = np.random.default_rng(0)
    sample = [docs[i] for i in sorted(rng.choice(len(docs), size=min(n_docs, len(docs)), replace=False))]
    embedder = assistant.embedder
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        _, manifest = build_index(sample, embedder, Path(tmp), cfg.chunking.model_dump())
        build_s = time.perf_counter() - t
    n = manifest["counts"]["children"]
    from rag.chunk import HierarchicalChunker
    from rag.index import chunk_documents

    ch = cfg.chunking
    _, kids = chunk_documents(sample, HierarchicalChunker(embedder.tokenize, ch.parent_max_tokens, ch.child_tokens,
                                                          ch.child_overlap))
    texts = [c.context_text() for c in kids]  # exactly the passages the build embedded
    assert len(texts) == n
    t = time.perf_counter()
    embedder.encode_passages(texts)
    raw_s = time.perf_counter() - t
    m = assistant.index.manifest
    disk = sum(f["bytes"] for f in m["files"].values())
    children = m["counts"]["children"]
    row = {"sample_docs": len(sample), "sample_passages": n, "build_s": build_s, "build_passages_per_s": n / build_s,
           "raw_encoder_passages_per_s": n / raw_s, "build_vs_raw": (n / build_s) / (n / raw_s),
           "stages_s": manifest["seconds"], "full_index_passages": children, "full_index_bytes": disk,
           "disk_mb_per_100k": disk / children * 1e5 / 1e6}
    out["build"] = row
    print(f"[3] build of {len(sample)} docs ({n:,} passages): {row['build_passages_per_s']:.0f} passages/s vs raw "
          f"encoder {row['raw_encoder_passages_per_s']:.0f}/s = {100 * row['build_vs_raw']:.0f}%; stages "
          + ", ".join(f"{k} {v:.1f}s" for k, v in manifest["seconds"].items()))
    print(f"    full index: {children:,} passages, {disk / 1e6:.0f} MB on disk = {row['disk_mb_per_100k']:.0f} MB "
          "per 100k passages")


# -- 4. FAISS flat vs HNSW ----------------------------------------------------------------------


def bench_hnsw(assistant: Any, queries: list[Any], out: dict[str, Any]) -> None:
    import faiss

    index = assistant.index
    vectors = index.dense.reconstruct_n(0, index.dense.ntotal)
    qvs = assistant.embedder.encode_queries([q.text for q in queries]).astype(np.float32)
    t = time.perf_counter()
    flat = index.dense.index  # the raw FAISS index of a FAISS-backed version
    _, flat_top = flat.search(qvs, 10)
    flat_ms = (time.perf_counter() - t) * 1000 / len(queries)
    flat_single = []
    for qv in qvs[:200]:
        t = time.perf_counter()
        flat.search(qv.reshape(1, -1), 10)
        flat_single.append((time.perf_counter() - t) * 1000)
    t = time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(index.dense.d, 32, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = 80
    hnsw.add(vectors)
    build_s = time.perf_counter() - t
    rows = []
    for ef in (16, 32, 64, 128):
        hnsw.hnsw.efSearch = ef
        _, top = hnsw.search(qvs, 10)
        single = []
        for qv in qvs[:200]:
            t = time.perf_counter()
            hnsw.search(qv.reshape(1, -1), 10)
            single.append((time.perf_counter() - t) * 1000)
        recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top, flat_top, strict=True)]))
        rows.append({"efSearch": ef, "recall_of_flat_top10": recall, "p50_ms": pct(single, 50)})
    out["hnsw"] = {"build_s": build_s, "flat_p50_ms": pct(flat_single, 50), "flat_batch_ms_per_query": flat_ms,
                   "hnsw": rows, "passages": int(index.dense.ntotal)}
    print(f"[4] FAISS flat p50 {pct(flat_single, 50):.2f} ms/query on {index.dense.ntotal:,} vectors; "
          f"HNSW(M=32, efC=80) built in {build_s:.0f} s")
    for r in rows:
        print(f"    efSearch {r['efSearch']:4d}: recall of flat top-10 {100 * r['recall_of_flat_top10']:.1f}%, "
              f"p50 {r['p50_ms']:.2f} ms ({pct(flat_single, 50) / r['p50_ms']:.1f}x faster than flat)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/full.yaml")
    ap.add_argument("--queries", type=int, default=300, help="held-out test queries for latency and nDCG")
    ap.add_argument("--bm25-queries", type=int, default=100, help="queries for the rank-bm25 comparison (slow)")
    ap.add_argument("--build-docs", type=int, default=1000, help="documents in the build-throughput sample")
    ap.add_argument("--sections", default="1,2,3,4")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.ERROR)
    from rag import Assistant
    from rag.config import load_config

    cfg = load_config(args.config, ["index.auto_build_demo=false"])
    assistant = Assistant(cfg, progress=False)
    t = time.perf_counter()
    _ = assistant.index, assistant.embedder
    load_s = time.perf_counter() - t
    out: dict[str, Any] = {"config": args.config, "index_version": assistant.index.version,
                           "passages": len(assistant.index.children), "load_s": load_s, "rss_after_load_mb": rss_mb()}
    print(f"index {assistant.index.version}: {len(assistant.index.children):,} passages loaded in {load_s:.1f} s; "
          f"RSS {rss_mb():.0f} MB (= {rss_mb() / len(assistant.index.children) * 1e5:.0f} MB per 100k passages "
          "incl. models)")
    queries = load_queries(assistant, cfg, args.queries)
    sections = set(args.sections.split(","))
    if "1" in sections:
        bench_vs_llama_index(assistant, queries, out)
        gc.collect()
    if "2" in sections:
        bench_bm25(assistant, queries, out, args.bm25_queries)
        gc.collect()
    if "4" in sections:
        bench_hnsw(assistant, queries, out)
    if "3" in sections:
        bench_build(assistant, out, args.build_docs)
    out["peak_rss_mb"] = rss_mb()
    print(f"peak RSS {rss_mb():.0f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The lexical side: bm25s (what the retriever uses) vs PostgreSQL full-text search, quality and speed.

    taskset -c 1 nice -n 10 python eval/bench_lexical.py --json runs/bench_lexical.json

Quality, on the trust index (9,806 real passages): the trust questions that have gold documents
(MedQuAD and demo guideline questions), nDCG@10 and recall@10 at the document level for the lexical
search alone and for the full hybrid retriever with each lexical side (dense + lexical, RRF,
auto-merge: what ``query`` ranks). PostgreSQL's ranking function (``ts_rank`` or ``ts_rank_cd``,
with or without length normalisation) is chosen on the dev questions and reported on the test ones.
Speed and agreement: every test question plus one record question per patient, on the real index
and on a 100k-passage synthetic corpus made from it (``eval/bench_hybrid_scale.py``'s ``synth_corpus``):
top-10 overlap of the two lexical searches, latency and CPU (this process plus the PostgreSQL backend).

PostgreSQL: the ``pgserver`` wheel (PostgreSQL 16) on a Unix socket; a ``tsvector`` column
(``to_tsvector('english', title + section + passage)``, Snowball stemming and stop words) with a GIN
index; the question becomes ``plainto_tsquery`` with its ANDs turned into ORs (BM25 semantics: any
term may match; an AND of every question word matches almost nothing), scoped like the retriever
(shared passages plus the patient's records), ranked in SQL, top 30.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eval.bench_backends import PATIENT_QUESTIONS
from eval.bench_scale import pct, proc_cpu_s
from eval.metrics import dedupe, ndcg_at, recall_at, write_json

RANKINGS = {"ts_rank": "ts_rank(tsv, q)", "ts_rank/len": "ts_rank(tsv, q, 1)", "ts_rank_cd": "ts_rank_cd(tsv, q)",
            "ts_rank_cd/len": "ts_rank_cd(tsv, q, 1)"}


class PgLexical:
    """One table of passages with a tsvector + GIN index; scoped, ranked full-text search."""

    def __init__(self, url: str, children: list[Any], table: str):
        import psycopg

        self.conn = psycopg.connect(url, autocommit=True)
        self.table = table
        self.rank = RANKINGS["ts_rank"]
        t = time.perf_counter()
        self.conn.execute(f"DROP TABLE IF EXISTS {table}")
        self.conn.execute(f"CREATE TABLE {table} (row int PRIMARY KEY, kind text, patient_id text, body text)")
        with self.conn.cursor() as cur, cur.copy(f"COPY {table} (row, kind, patient_id, body) FROM STDIN") as cp:
            for i, c in enumerate(children):
                cp.write_row((i, c.kind, c.patient_id, c.context_text()))
        self.conn.execute(f"ALTER TABLE {table} ADD COLUMN tsv tsvector "
                          "GENERATED ALWAYS AS (to_tsvector('english', body)) STORED")
        self.conn.execute(f"CREATE INDEX {table}_tsv ON {table} USING gin (tsv)")
        self.conn.execute(f"ANALYZE {table}")
        self.build_s = time.perf_counter() - t
        size = self.conn.execute("SELECT pg_total_relation_size(%s)", (table,)).fetchone()
        pid = self.conn.execute("SELECT pg_backend_pid()").fetchone()
        assert size is not None and pid is not None
        self.size_mb, self.pid = size[0] / 2**20, int(pid[0])

    def search(self, query: str, patient_id: str | None, k: int) -> list[tuple[int, float]]:
        sql = (f"WITH x AS (SELECT replace(plainto_tsquery('english', %s)::text, '&', '|')::tsquery AS q) "
               f"SELECT row, {self.rank} AS s FROM {self.table}, x WHERE tsv @@ q "
               f"AND (kind <> 'ehr' OR patient_id = %s) ORDER BY s DESC, row LIMIT %s")
        return [(int(r), float(s)) for r, s in self.conn.execute(sql, (query, patient_id or "", k)).fetchall()]

    def close(self) -> None:
        self.conn.execute(f"DROP TABLE IF EXISTS {self.table}")
        self.conn.close()


def bm25_rows(ret: Any, idx: Any, q: str, p: str | None, k: int) -> list[int]:
    return [idx.child_pos[c] for c, _ in ret._bm25(f"{q} {p}" if p else q, idx.allowed_mask(p), k)]


def timed(fn: Any, items: list[Any], backend_pid: int | None = None) -> tuple[list[Any], dict[str, float]]:
    out, lat = [], []
    srv0, cpu0 = (proc_cpu_s(backend_pid) if backend_pid else 0.0), time.process_time()
    for it in items:
        t = time.perf_counter()
        out.append(fn(*it))
        lat.append((time.perf_counter() - t) * 1000)
    cpu = time.process_time() - cpu0 + ((proc_cpu_s(backend_pid) - srv0) if backend_pid else 0.0)
    return out, {"p50_ms": pct(lat, 50), "p95_ms": pct(lat, 95), "cpu_ms_per_query": cpu * 1000 / len(items)}


def overlap(a: list[list[int]], b: list[list[int]], k: int = 10) -> float:
    return float(np.mean([len(set(x[:k]) & set(y[:k])) / max(1, len(x[:k])) for x, y in zip(a, b, strict=True)
                          if x or y]))


def quality(assistant: Any, idx: Any, pg: PgLexical, rows: list[dict[str, Any]], cfg: Any) -> dict[str, Any]:
    """nDCG@10 / recall@10 (documents) of each lexical side alone and inside the hybrid retriever."""
    from rag.retrieve import HybridRetriever

    r = cfg.retrieval
    ret = HybridRetriever(idx, assistant.embedder, r.dense_k, r.bm25_k, r.rrf_k, r.dense_weight, r.bm25_weight,
                          r.merge_threshold, 10, r.patient_slots, r.fusion, r.merge_score)

    class PgRetriever(HybridRetriever):
        _patient: str | None = None  # the question's patient (the SQL scopes by it)

        def _bm25(self, query: str, allowed: np.ndarray, k: int) -> list[tuple[str, float]]:
            pid = self._patient
            return [(idx.children[row].chunk_id, s) for row, s in pg.search(query, pid, k) if allowed[row]]

    pgret = PgRetriever(idx, assistant.embedder, r.dense_k, r.bm25_k, r.rrf_k, r.dense_weight, r.bm25_weight,
                        r.merge_threshold, 10, r.patient_slots, r.fusion, r.merge_score)
    qvs = assistant.embedder.encode_queries([x["question"] for x in rows]).astype(np.float32)
    per: dict[str, dict[str, list[float]]] = {}
    for x, qv in zip(rows, qvs, strict=True):
        gold, q, p = set(x["gold"]), str(x["question"]), x.get("patient_id")
        pgret._patient = p
        ranked = {
            "bm25s": dedupe([idx.children[i].doc_id for i in bm25_rows(ret, idx, q, p, 30)]),
            "postgres": dedupe([idx.children[i].doc_id for i, _ in pg.search(f"{q} {p}" if p else q, p, 30)]),
            "hybrid (bm25s)": dedupe([u.chunk.doc_id for u in ret.search(q, qv, p).units]),
            "hybrid (postgres)": dedupe([u.chunk.doc_id for u in pgret.search(q, qv, p).units]),
        }
        for name, docs in ranked.items():
            m = per.setdefault(name, {"ndcg@10": [], "recall@10": []})
            m["ndcg@10"].append(ndcg_at(docs, gold, 10))
            m["recall@10"].append(recall_at(docs, gold, 10))
    return {name: {k: float(np.mean(v)) for k, v in m.items()} | {"n": len(rows)} for name, m in per.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=None)
    ap.add_argument("--index", default=".cds/index/trust")
    ap.add_argument("--dev-rows", default=".cds/eval/trust/rows-dev.jsonl")
    ap.add_argument("--rows", default=".cds/eval/trust/rows-test.jsonl")
    ap.add_argument("--size", type=int, default=100_000, help="synthetic corpus for speed (0: skip)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import pgserver

    from eval.bench_hybrid_scale import synth_corpus
    from rag.assistant import Assistant
    from rag.config import load_config
    from rag.index import HybridIndex, import_bm25s
    from rag.retrieve import HybridRetriever
    from rag.text import tokenize

    cfg = load_config(Path(args.config) if args.config else None,
                      overrides=[f"index.dir={Path(args.index).resolve()}", "index.auto_build_demo=false"])
    assistant = Assistant(cfg)
    idx = HybridIndex.load(Path(args.index), verify=False)
    load = lambda p: [json.loads(line) for line in Path(p).read_text(encoding="utf-8").splitlines() if line.strip()]  # noqa: E731
    dev, test = [x for x in load(args.dev_rows) if x.get("gold")], [x for x in load(args.rows) if x.get("gold")]
    test_all = load(args.rows)
    questions = [(str(x["question"]), x.get("patient_id")) for x in test_all]
    questions += [(PATIENT_QUESTIONS[i % 3], p) for i, p in enumerate(sorted(idx.patients))]
    srv = pgserver.get_server(tempfile.mkdtemp(prefix="cds-pg-lex-"), cleanup_mode="delete")
    out: dict[str, Any] = {"command": " ".join(["python", "eval/bench_lexical.py", *(argv or sys.argv[1:])])}
    try:
        url = srv.get_uri()
        pg = PgLexical(url, idx.children, "lex_real")
        out["real"] = {"passages": len(idx.children), "pg_build_s": pg.build_s, "pg_size_mb": pg.size_mb}
        # choose PostgreSQL's ranking on dev (lexical nDCG@10), report test
        dev_scores = {}
        for name, expr in RANKINGS.items():
            pg.rank = expr
            dev_scores[name] = quality(assistant, idx, pg, dev, cfg)
            print(f"dev {name}: " + json.dumps({k: round(v['ndcg@10'], 3) for k, v in dev_scores[name].items()}),
                  flush=True)
        chosen = max(RANKINGS, key=lambda n: dev_scores[n]["postgres"]["ndcg@10"])
        pg.rank = RANKINGS[chosen]
        out["real"]["dev"] = dev_scores
        out["real"]["ranking_chosen_on_dev"] = chosen
        out["real"]["test"] = quality(assistant, idx, pg, test, cfg)
        for name, m in out["real"]["test"].items():
            print(f"test ({m['n']} questions with gold documents) {name:<18} nDCG@10 {m['ndcg@10']:.3f} "
                  f"recall@10 {m['recall@10']:.3f}", flush=True)
        sizes = [("real", idx, pg)]
        if args.size:
            rng = np.random.default_rng(0)
            vecs = idx.dense.reconstruct_n(0, idx.dense.ntotal).astype(np.float32)
            children, _ = synth_corpus(idx.children, vecs, args.size, 0.15, 0.02, 2_000_000, 0.15, rng)
            bm25s = import_bm25s()
            t = time.perf_counter()
            bm = bm25s.BM25()
            bm.index([tokenize(c.context_text()) for c in children], show_progress=False)
            bm25_build = time.perf_counter() - t
            from rag.vectorstore import DenseSettings, build_faiss, faiss_spec

            big = HybridIndex(idx.root, idx.version, idx.manifest, idx.parents, children,
                              build_faiss(np.zeros((len(children), vecs.shape[1]), np.float32),
                                          faiss_spec(DenseSettings()), None), bm)
            pg_big = PgLexical(url, children, "lex_big")
            pg_big.rank = RANKINGS[chosen]
            out[str(args.size)] = {"bm25s_build_s": bm25_build, "pg_build_s": pg_big.build_s,
                                   "pg_size_mb": pg_big.size_mb}
            sizes.append((str(args.size), big, pg_big))
        r = cfg.retrieval
        for name, ix, p in sizes:
            ret = HybridRetriever(ix, assistant.embedder, r.dense_k, r.bm25_k, r.rrf_k, 0.0, 1.0, r.merge_threshold,
                                  10, r.patient_slots)
            items = [(q, pid) for q, pid in questions]
            a, ta = timed(lambda q, pid, ix=ix, ret=ret: bm25_rows(ret, ix, q, pid, r.bm25_k), items)
            b, tb = timed(lambda q, pid, p=p: [i for i, _ in p.search(f"{q} {pid}" if pid else q, pid, r.bm25_k)],
                          items, p.pid)
            out.setdefault(name, {}).update(bm25s=ta, postgres=tb, top10_overlap=overlap(a, b),
                                            questions=len(items))
            print(f"{name}: bm25s p50 {ta['p50_ms']:.2f} p95 {ta['p95_ms']:.2f} ms CPU {ta['cpu_ms_per_query']:.2f} | "
                  f"postgres p50 {tb['p50_ms']:.2f} p95 {tb['p95_ms']:.2f} ms CPU {tb['cpu_ms_per_query']:.2f} | "
                  f"top-10 overlap {out[name]['top10_overlap']:.3f}", flush=True)
            p.close()
    finally:
        srv.cleanup()
    if args.json:
        write_json(args.json, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Retrieval on realistic questions: the hand-written set, the MedQuAD split and NGC (issue 15).

    python -m eval.realistic_retrieval --part dev --sweep      # choose on dev (weights, rerank mix)
    python -m eval.realistic_retrieval --part test             # report the chosen settings once

Runs on the index of ``configs/realistic.yaml`` (``python -m eval.realistic_index``). Each
question is searched once per retriever and query form (original, abbreviations expanded),
then every method is scored on the same candidates at the document level (several passages
of one document count once; merged sections count as their document):

    bm25, dense              one retriever alone
    hybrid                   the configured fusion and auto-merge (what ``query`` ranks)
    hybrid+expand            the same with abbreviation expansion (rag/abbrev.py)
    hybrid+rerank            the fused top ``rerank_top_n`` reordered by the verifier (rag/rerank.py)
    hybrid+expand+rerank     both
    chosen                   the settings picked on dev by ``--sweep`` (passed back as --bm25-weight ...)

Metrics: recall@1 (a gold document first), nDCG@10, MRR@10 with 95% percentile-bootstrap
intervals, per question set (realistic: all, by source and style; MedQuAD split; NGC
questions). Latency: query encoding, search, and the rerank of the top 20 measured per query.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from eval.metrics import bootstrap_ci, dedupe, mrr_at, ndcg_at, paired_bootstrap_diff, recall_at
from rag.abbrev import expand
from rag.errors import InputError
from rag.retrieve import Fused, fuse

QUESTIONS = Path("eval/questions/realistic_retrieval.jsonl")
METRICS = ("recall@1", "ndcg@10", "mrr@10")
STYLES = ("lay", "shorthand", "multipart", "vignette")


@dataclass
class Q:
    qid: str
    text: str
    gold: set[str]
    tags: set[str] = field(default_factory=set)  # question-set names this question belongs to


@dataclass
class Cands:
    """Both retrievers' candidates for one question, for the original and the expanded query."""

    dense: dict[str, list[tuple[str, float]]]
    bm25: dict[str, list[tuple[str, float]]]


@dataclass
class Variant:
    name: str
    fusion: str = "wsum"
    bm25_weight: float = 0.5
    expand: bool = False
    rerank: bool = False
    rerank_weight: float = 1.0
    single: str | None = None  # "bm25" / "dense": that retriever alone
    rerank_top_n: int | None = None  # passages the verifier reads (None: the config's rerank_top_n)
    stored_questions: bool = False  # BM25 over passages + their page's stored question (add_stored_questions)


def load_realistic(path: Path = QUESTIONS, part: str = "dev", source: str | None = None) -> list[Q]:
    """The realistic questions of ``part`` (only those whose gold comes from ``source``, when given)."""
    if not path.exists():
        raise InputError(f"{path} not found; it ships with the repository (eval/questions/README.md)")
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        if r["split"] != part or (source is not None and r["source"] != source):
            continue
        tags = {"realistic", f"realistic:{r['style']}", f"realistic:{r['source']}"}
        if r["source"] in ("ngc", "mixed"):
            tags.add("ngc")
        out.append(Q(r["id"], r["question"], set(r["gold"]), tags))
    if not out:
        raise InputError(f"{path} has no '{part}' questions (parts: dev, test)")
    return out


def load_medquad(cfg: Any, part: str, limit: int | None) -> list[Q]:
    from corpora import load_sources
    from eval.retrieval import build_queries, medquad_path
    from eval.splits import load_split

    docs = load_sources([f"medquad:{medquad_path(cfg, None)}"]).documents
    return [Q(f"mq-{q.qid}", q.text, q.gold, {"medquad-split"}) for q in build_queries(docs, load_split(), part, limit)]


class Runner:
    """Candidates once per question; any variant scored from them; verifier scores cached per passage."""

    def __init__(self, assistant: Any, depth: int = 100, rerank_top_n: int = 20):
        from eval.retrieval import RetrievalEvaluator

        self.a = assistant
        self.ev = RetrievalEvaluator(assistant.retriever(), depth=depth)
        self.idx = assistant.index
        self.top_n = rerank_top_n
        self.cache: dict[tuple[str, str], float] = {}
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.bm25_q: Any = None  # add_stored_questions
        self._scorer: Any = None

    @property
    def scorer(self) -> Any:
        """The configured reranker's answerability (retrieval.reranker: the verifier or a distilled folder)."""
        if self._scorer is None:
            self._scorer = self.a.rerank_scorer()
        return self._scorer

    def add_stored_questions(self, question_of: dict[str, str]) -> int:
        """A second BM25 over every passage with its document's stored question appended (MedQuAD pages have one):
        the "stored questions as a BM25 field" experiment, without touching the index. Returns passages given one."""
        from rag.index import import_bm25s
        from rag.retrieve import bm25_tokenize

        texts = [c.context_text() + ("\n" + question_of[c.doc_id] if c.doc_id in question_of else "")
                 for c in self.idx.children]
        bm = import_bm25s().BM25()
        bm.index([bm25_tokenize(t) for t in texts], show_progress=False)
        self.bm25_q = bm
        return sum(c.doc_id in question_of for c in self.idx.children)

    def _bm25_q(self, text: str) -> list[tuple[str, float]]:
        from rag.retrieve import bm25_tokenize, bm25_top

        tokens = bm25_tokenize(text)
        if not tokens:
            return []
        scores = np.asarray(self.bm25_q.get_scores(tokens), dtype=np.float32)
        return [(self.idx.children[i].chunk_id, float(scores[i])) for i in bm25_top(scores, self.ev.all_allowed,
                                                                                    self.ev.depth)]

    def candidates(self, qs: Sequence[Q]) -> list[Cands]:
        emb = self.a.embedder
        out = []
        for q in qs:
            c = Cands({}, {})
            for form in ("orig", "exp"):
                e = expand(q.text)
                dtext = q.text if form == "orig" else e.dense_text
                btext = q.text if form == "orig" else e.bm25_text
                if form == "exp" and not e.found:  # nothing to expand: the same candidates
                    c.dense["exp"], c.bm25["exp"] = c.dense["orig"], c.bm25["orig"]
                    if self.bm25_q is not None:
                        c.bm25["exp+q"] = c.bm25["orig+q"]
                    continue
                t, c0 = time.perf_counter(), time.process_time()
                qv = emb.encode_queries([dtext])[0].astype(np.float32)
                t1, c1 = time.perf_counter(), time.process_time()
                c.dense[form] = self.ev.r._dense(qv, self.ev.all_allowed, self.ev.depth)
                t2 = time.perf_counter()
                c.bm25[form] = self.ev.r._bm25(btext, self.ev.all_allowed, self.ev.depth)
                t3 = time.perf_counter()
                if self.bm25_q is not None:
                    c.bm25[f"{form}+q"] = self._bm25_q(btext)
                if form == "orig":
                    self.latency["encode_ms"].append((t1 - t) * 1000)
                    self.latency["encode_cpu_ms"].append((c1 - c0) * 1000)
                    self.latency["dense_search_ms"].append((t2 - t1) * 1000)
                    self.latency["bm25_search_ms"].append((t3 - t2) * 1000)
            out.append(c)
        return out

    def probs(self, question: str, fused: Sequence[Fused], timed: bool = False, top_n: int | None = None
              ) -> np.ndarray:
        head = fused[: top_n or self.top_n]
        missing = [f.chunk_id for f in head if (question, f.chunk_id) not in self.cache]
        if missing or timed:
            texts = [self.idx.children[self.idx.child_pos[c]].context_text() for c in (missing or
                                                                                      [f.chunk_id for f in head])]
            t, c = time.perf_counter(), time.process_time()
            scores = self.scorer(question, texts)
            if timed:  # the full top-N read, as the product does per question
                self.latency[f"rerank_top{len(texts)}_ms"].append((time.perf_counter() - t) * 1000)
                # CPU time: what the read costs without the other jobs sharing this core
                self.latency[f"rerank_top{len(texts)}_cpu_ms"].append((time.process_time() - c) * 1000)
            for cid, s in zip(missing or [f.chunk_id for f in head], scores, strict=True):
                self.cache[(question, cid)] = float(s)
        return np.array([self.cache[(question, f.chunk_id)] for f in head])

    def ranking(self, q: Q, c: Cands, v: Variant) -> list[str]:
        from rag.rerank import rerank

        form = "exp" if v.expand else "orig"
        bform = form + "+q" if v.stored_questions else form
        doc_of = self.ev.doc_of
        if v.single:
            lst = c.dense[form] if v.single == "dense" else c.bm25[bform]
            return dedupe([doc_of[cid] for cid, _ in lst])
        fused = fuse({"dense": c.dense[form], "bm25": c.bm25[bform]}, {"dense": 1.0, "bm25": v.bm25_weight},
                     v.fusion, self.ev.r.rrf_k)
        if v.rerank and fused:
            fused = rerank(fused, self.probs(q.text, fused, top_n=v.rerank_top_n), v.rerank_weight)
        return dedupe(self.ev.merged_docs(fused, self.ev.r.merge_score))


def stored_questions(assistant: Any) -> dict[str, str]:
    """Document id -> the question its source page stores (MedQuAD), for the documents of the index."""
    from corpora import load_sources
    from rag.config import resolve_path

    indexed = {c.doc_id for c in assistant.index.children}
    docs = load_sources([f"medquad:{resolve_path('.cds/realistic/medquad')}"]).documents  # eval.realistic_index
    return {d.doc_id: str(d.meta["question"]) for d in docs if d.meta.get("question") and d.doc_id in indexed}


def score(ranked: Sequence[str], gold: set[str]) -> dict[str, float]:
    return {"recall@1": recall_at(ranked, gold, 1), "ndcg@10": ndcg_at(ranked, gold), "mrr@10": mrr_at(ranked, gold)}


def evaluate(runner: Runner, qs: Sequence[Q], cands: Sequence[Cands], variants: Sequence[Variant],
             progress: Callable[[str], None] | None = None) -> dict[str, list[dict[str, float]]]:
    per: dict[str, list[dict[str, float]]] = {}
    for v in variants:
        per[v.name] = [score(runner.ranking(q, c, v), q.gold) for q, c in zip(qs, cands, strict=True)]
        if progress:
            progress(v.name)
    return per


def summarise(per: dict[str, list[dict[str, float]]], qs: Sequence[Q], tag: str, n_boot: int = 1000
              ) -> dict[str, Any]:
    idx = [i for i, q in enumerate(qs) if tag in q.tags]
    table: dict[str, Any] = {"n": len(idx), "methods": {}}
    if not idx:
        return table
    for name, rows in per.items():
        row = {}
        for m in METRICS:
            vals = [rows[i][m] for i in idx]
            lo, hi = bootstrap_ci(vals, n_boot, 0)
            row[m] = {"mean": float(np.mean(vals)), "ci95": [lo, hi]}
        table["methods"][name] = row
    singles = [m for m in ("bm25", "dense") if m in per]
    if singles:
        best = max(singles, key=lambda m: table["methods"][m]["recall@1"]["mean"])
        table["best_single_recall@1"] = best
        table["paired_recall@1_vs_best_single"] = {}
        for name in per:
            if name in singles:
                continue
            d, lo, hi = paired_bootstrap_diff([per[name][i]["recall@1"] for i in idx],
                                              [per[best][i]["recall@1"] for i in idx], n_boot, 0)
            table["paired_recall@1_vs_best_single"][name] = {"diff": d, "ci95": [lo, hi]}
    base = "hybrid+expand"
    if base in per and any("rerank" in n for n in per):
        table["paired_recall@1_vs_hybrid+expand"] = {}
        for name in per:
            if "rerank" in name or name == "chosen":
                d, lo, hi = paired_bootstrap_diff([per[name][i]["recall@1"] for i in idx],
                                                  [per[base][i]["recall@1"] for i in idx], n_boot, 0)
                table["paired_recall@1_vs_hybrid+expand"][name] = {"diff": d, "ci95": [lo, hi]}
    return table


def markdown(title: str, t: dict[str, Any]) -> str:
    lines = [f"**{title}** (n = {t['n']})", "", "| method | recall@1 | nDCG@10 | MRR@10 |", "|---|---|---|---|"]
    for name, row in t.get("methods", {}).items():
        cells = [f"{100 * row[m]['mean']:.1f} [{100 * row[m]['ci95'][0]:.1f}, {100 * row[m]['ci95'][1]:.1f}]"
                 for m in METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for name, c in t.get("paired_recall@1_vs_best_single", {}).items():
        lines.append(f"- recall@1 {name} - {t['best_single_recall@1']}: {100 * c['diff']:+.1f} "
                     f"[{100 * c['ci95'][0]:+.1f}, {100 * c['ci95'][1]:+.1f}] (paired bootstrap)")
    for name, c in t.get("paired_recall@1_vs_hybrid+expand", {}).items():
        lines.append(f"- recall@1 {name} - hybrid+expand: {100 * c['diff']:+.1f} "
                     f"[{100 * c['ci95'][0]:+.1f}, {100 * c['ci95'][1]:+.1f}] (paired bootstrap)")
    return "\n".join(lines) + "\n"


def standard_variants(fusion: str, w: float, rw: float) -> list[Variant]:
    return [
        Variant("bm25", single="bm25"), Variant("dense", single="dense"),
        Variant("bm25+expand", single="bm25", expand=True), Variant("dense+expand", single="dense", expand=True),
        Variant("hybrid", fusion, w),
        Variant("hybrid+expand", fusion, w, expand=True),
        Variant("hybrid+rerank", fusion, w, rerank=True, rerank_weight=rw),
        Variant("hybrid+expand+rerank", fusion, w, expand=True, rerank=True, rerank_weight=rw),
    ]


def sweep_variants(fusion: str, w: float, rerank: bool = True) -> list[Variant]:
    """The dev grid: fusion x BM25 weight x expansion without rerank (cheap: no model), and the rerank mix on the
    configured fusion, reading the top 20 or the top 10 (each new fused head costs verifier reads: ~0.5 s of one
    core per question); ``rerank`` False: the grid without the verifier."""
    out = [Variant("bm25", single="bm25"), Variant("dense", single="dense"),
           Variant("bm25+expand", single="bm25", expand=True), Variant("dense+expand", single="dense", expand=True)]
    for f in ("wsum", "rrf"):
        for bw in (0.25, 0.5, 0.75, 1.0):
            for ex in (False, True):
                out.append(Variant(f"{f} bm25={bw}{' +expand' if ex else ''}", f, bw, expand=ex))
    if not rerank:
        return out
    for ex in (False, True):
        for rw in (1.0, 0.75, 0.5, 0.25):
            out.append(Variant(f"{fusion} bm25={w}{' +expand' if ex else ''} +rerank(w={rw})", fusion, w, expand=ex,
                               rerank=True, rerank_weight=rw))
        for rw in (0.5, 0.25):
            out.append(Variant(f"{fusion} bm25={w}{' +expand' if ex else ''} +rerank10(w={rw})", fusion, w,
                               expand=ex, rerank=True, rerank_weight=rw, rerank_top_n=10))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--config", default="configs/realistic.yaml")
    ap.add_argument("--set", action="append", default=[], help="config override key=value (repeatable)")
    ap.add_argument("--no-rerank", action="store_true", help="no verifier: the methods without rerank only")
    ap.add_argument("--stored-questions", action="store_true",
                    help="add methods whose BM25 also reads each MedQuAD page's stored question (needs --no-medquad: "
                         "the split's queries are those questions)")
    ap.add_argument("--rerank-max-length", type=int, default=None,
                    help="tokens the verifier reads per (question, passage) pair (default: the verifier's 192)")
    ap.add_argument("--part", choices=("dev", "test"), default="dev")
    ap.add_argument("--sweep", action="store_true", help="score the grid of fusion/weights/expansion/rerank (dev)")
    ap.add_argument("--fusion", default=None, help="fusion for the hybrid methods (default: the config's)")
    ap.add_argument("--bm25-weight", type=float, default=None, help="BM25 weight, dense 1 (default: the config's)")
    ap.add_argument("--rerank-weight", type=float, default=1.0, help="verifier share in the rerank score")
    ap.add_argument("--chosen", default=None, help="extra method 'fusion,bm25_weight,expand(0/1),rerank(0/1),"
                                                   "rerank_weight[,rerank_top_n]' (the dev choice)")
    ap.add_argument("--medquad-limit", type=int, default=None, help="first N MedQuAD split questions (speed)")
    ap.add_argument("--no-medquad", action="store_true")
    ap.add_argument("--only-source", default=None, choices=("medquad", "ngc"),
                    help="realistic questions whose gold is from this source only (an index without the other)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (this machine lends one core)")
    ap.add_argument("--out", default=".cds/eval/realistic")
    ap.add_argument("--probs-cache", default=None, help="verifier scores (and rerank latencies) to reuse / keep: "
                                                        "a JSON file, read if present, written at the end")
    ap.add_argument("--precompute-only", action="store_true",
                    help="only read the fused heads with the verifier (fills --probs-cache; scores nothing)")
    args = ap.parse_args(argv)
    if args.sweep and args.part == "test":
        raise InputError("--sweep chooses settings: run it on --part dev only")
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    torch.set_num_threads(args.threads)
    from rag import Assistant
    from rag.config import load_config, resolve_path

    cfg = load_config(args.config, ["index.auto_build_demo=false", *args.set])
    a = Assistant(cfg, progress=False)
    if not args.no_rerank:
        a.rerank_scorer()  # retrieval.reranker: the verifier (needs verifier.enabled) or a distilled folder
    if a.verifier is not None:
        a.verifier.batch_size = max(a.verifier.batch_size, 20)  # the top 20 in one batch
        if args.rerank_max_length:
            a.verifier.max_length = args.rerank_max_length
    r = cfg.retrieval
    fusion = args.fusion or r.fusion
    w = r.bm25_weight / r.dense_weight if args.bm25_weight is None else args.bm25_weight
    runner = Runner(a, rerank_top_n=r.rerank_top_n)
    if args.stored_questions:
        if not args.no_medquad:
            raise InputError("--stored-questions indexes the MedQuAD split's own questions: pass --no-medquad")
        print(f"stored questions on {runner.add_stored_questions(stored_questions(a))} passages", flush=True)
    qs = load_realistic(part=args.part, source=args.only_source)
    if not args.no_medquad:
        qs += load_medquad(cfg, args.part, args.medquad_limit)
    t0 = time.perf_counter()
    cands = runner.candidates(qs)
    print(f"{len(qs)} questions ({args.part}), candidates in {time.perf_counter() - t0:.0f}s", flush=True)
    variants = sweep_variants(fusion, w, not args.no_rerank) if args.sweep else \
        standard_variants(fusion, w, args.rerank_weight)
    if args.no_rerank:
        variants = [v for v in variants if not v.rerank]
    if args.stored_questions:
        variants += [Variant(f"{v.name} +stored-q", v.fusion, v.bm25_weight, v.expand, v.rerank, v.rerank_weight,
                             v.single, v.rerank_top_n, stored_questions=True)
                     for v in list(variants) if v.single != "dense"]
    if args.chosen:
        f, bw, ex, rr, rw, *n = args.chosen.split(",")
        variants.append(Variant("chosen", f, float(bw), expand=ex == "1", rerank=rr == "1", rerank_weight=float(rw),
                                rerank_top_n=int(n[0]) if n else None))
    cache_path = resolve_path(args.probs_cache) if args.probs_cache else None
    if cache_path is not None and cache_path.exists():
        saved = json.loads(cache_path.read_text(encoding="utf-8"))
        runner.cache = {(k.split("\x1f")[0], k.split("\x1f")[1]): v for k, v in saved["probs"].items()}
        for k, vals in saved["latency"].items():
            runner.latency[k] = vals
    # Latency of the product's rerank: the verifier reading the fused top N (timed for every question), and the
    # expanded query's head (the other rerank methods read the same heads).
    for q, c in zip(qs, cands, strict=True) if not args.no_rerank else ():
        for form in ("orig", "exp") if not args.precompute_only else ("orig",):
            fused = fuse({"dense": c.dense[form], "bm25": c.bm25[form]}, {"dense": 1.0, "bm25": w}, fusion, r.rrf_k)
            # timed once per question: a head already in the cache was timed by the run that scored it
            timed = form == "orig" and len(fused) >= runner.top_n and (q.text, fused[0].chunk_id) not in runner.cache
            runner.probs(q.text, fused, timed=timed)
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        cache_path.write_text(json.dumps({"probs": {f"{k[0]}\x1f{k[1]}": v for k, v in runner.cache.items()},
                                          "latency": runner.latency}), encoding="utf-8")
    if args.precompute_only:
        print(f"verifier scores for {len(qs)} questions in {cache_path}; nothing scored")
        return 0
    per = evaluate(runner, qs, cands, variants, lambda n: print(f"  scored {n}", flush=True) if args.sweep else None)
    sets = [("realistic", "realistic questions, all"), ("realistic:medquad", "realistic, MedQuAD gold"),
            ("ngc", "realistic, NGC gold"), *((f"realistic:{s}", f"realistic, {s}") for s in STYLES),
            ("medquad-split", "MedQuAD held-out split (templated questions)")]
    out = resolve_path(args.out) / (f"{args.part}-sweep" if args.sweep else args.part)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"part": args.part, "index": str(a.index.root), "index_version": a.index.version,
                               "fusion": fusion, "bm25_weight": w, "rerank_weight": args.rerank_weight,
                               "rerank_top_n": runner.top_n, "merge_score": r.merge_score, "threads": args.threads,
                               "embedder": a.index.manifest["embedder"]["model_id"],
                               "rerank_max_length": a.verifier.max_length if a.verifier is not None else None,
                               "reranker": r.reranker, "reranker_int8": r.reranker_int8,
                               "sets": {}, "latency_ms": {}}
    md = []
    for tag, title in sets:
        t = summarise(per, qs, tag)
        if t["n"]:
            summary["sets"][tag] = t
            if not args.sweep or tag in ("realistic", "medquad-split"):
                md.append(markdown(f"{title}, {args.part}", t))
    for k, vals in runner.latency.items():
        summary["latency_ms"][k] = {"p50": float(np.percentile(vals, 50)), "p95": float(np.percentile(vals, 95)),
                                    "n": len(vals)}
    md.append("| latency per query (ms) | p50 | p95 | n |\n|---|---|---|---|\n" + "\n".join(
        f"| {k} | {v['p50']:.1f} | {v['p95']:.1f} | {v['n']} |" for k, v in summary["latency_ms"].items()))
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    (out / "table.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    with (out / "per_query.jsonl").open("w", encoding="utf-8") as fh:
        for i, q in enumerate(qs):
            fh.write(json.dumps({"id": q.qid, **{n: rows[i]["recall@1"] for n, rows in per.items()}}) + "\n")
    if args.sweep:
        print(choose(summary))
    print("\n".join(md))
    print(f"wrote {out}")
    return 0


def choose(summary: dict[str, Any]) -> str:
    """The dev choice: best recall@1 on the realistic set among variants whose recall@1 is not below the best
    single retriever's on either dev set (ties: nDCG@10)."""
    real = summary["sets"]["realistic"]["methods"]
    mq = summary["sets"].get("medquad-split", {}).get("methods", {})

    def floor(methods: dict[str, Any]) -> float:
        return max(methods[m]["recall@1"]["mean"] for m in ("bm25", "dense"))

    ok = [n for n in real if n not in ("bm25", "dense") and real[n]["recall@1"]["mean"] >= floor(real)
          and (not mq or mq[n]["recall@1"]["mean"] >= floor(mq))]
    lines = ["| variant | realistic R@1 | realistic nDCG@10 | MedQuAD R@1 | MedQuAD nDCG@10 |", "|---|---|---|---|---|"]
    ranked = sorted(real, key=lambda n: (-real[n]["recall@1"]["mean"], -real[n]["ndcg@10"]["mean"]))
    for n in ranked[:25]:
        m = mq.get(n)
        lines.append(f"| {n}{' *' if n in ok else ''} | {100 * real[n]['recall@1']['mean']:.1f} | "
                     f"{100 * real[n]['ndcg@10']['mean']:.1f} | "
                     + (f"{100 * m['recall@1']['mean']:.1f} | {100 * m['ndcg@10']['mean']:.1f} |" if m else "- | - |"))
    best = max(ok, key=lambda n: (real[n]["recall@1"]["mean"], real[n]["ndcg@10"]["mean"])) if ok else None
    lines.append(f"\n* = rank 1 not below the best single retriever on both dev sets. Chosen: {best}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

"""Cost of doc2query with the bundled generator: questions written for passages, per passage and projected.

    python -m eval.bench_doc2query [--config configs/realistic.yaml] [--passages 20] [--set generator.backend=llamacpp]

Picks ``--passages`` passages of the configured index at random (seeded), asks the configured generator
(no adapter: the base instruction model) for three questions each passage answers, greedily, and reports
per passage: prompt and generated tokens, wall and CPU milliseconds (``time.process_time``: robust to
other jobs on the core), and the projection to the index's passage count and to the full corpus's
(114,896 passages, BENCHMARKS.md). The questions are written to ``--out`` (under .cds, never the
repository: they restate source text) so their quality can be read.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import time
import warnings
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

FULL_CORPUS_PASSAGES = 114_896  # the full preset's index (BENCHMARKS.md, "Retrieval quality")
PROMPT = ("Write three short questions that the passage below answers, as a patient or a clinician would ask "
          "them. One question per line, no numbering, nothing else.\n\nPassage:\n{passage}")


def questions_of(text: str) -> list[str]:
    """The generated lines that look like questions (numbering and bullets stripped)."""
    out = []
    for line in text.splitlines():
        q = line.strip().lstrip("-*0123456789.) ").strip()
        if len(q.split()) >= 3 and q.endswith("?"):
            out.append(q)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--config", default="configs/realistic.yaml")
    ap.add_argument("--set", action="append", default=[], help="config override key=value (repeatable)")
    ap.add_argument("--passages", type=int, default=20)
    ap.add_argument("--max-new-tokens", type=int, default=80)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--out", default=".cds/eval/doc2query")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    import torch

    torch.set_num_threads(args.threads)
    from rag.backends import load_backend
    from rag.config import load_config, resolve_path
    from rag.index import HybridIndex

    cfg = load_config(args.config, ["index.auto_build_demo=false", "generator.adapter=null",
                                    f"generator.threads={args.threads}", *args.set])
    index = HybridIndex.load(resolve_path(cfg.index.dir))
    picks = random.Random(args.seed).sample(range(len(index.children)), min(args.passages, len(index.children)))
    backend = load_backend(cfg.generator, resolve_path(cfg.models.cache_dir))
    backend.generate([{"role": "user", "content": "Say OK."}], max_new_tokens=2)  # warm up
    rows: list[dict[str, Any]] = []
    for i in picks:
        passage = index.children[i].context_text()
        t, c = time.perf_counter(), time.process_time()
        g = backend.generate([{"role": "user", "content": PROMPT.format(passage=passage)}],
                             max_new_tokens=args.max_new_tokens)
        rows.append({"chunk_id": index.children[i].chunk_id, "wall_ms": (time.perf_counter() - t) * 1000,
                     "cpu_ms": (time.process_time() - c) * 1000, "prompt_tokens": g.prompt_tokens,
                     "new_tokens": g.new_tokens, "questions": questions_of(g.text), "raw": g.text})
    out = resolve_path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"{cfg.generator.backend}-{getattr(backend, 'info', {}).get('dtype', '')}".rstrip("-")
    with (out / f"{name}.jsonl").open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    wall = np.array([r["wall_ms"] for r in rows])
    cpu = np.array([r["cpu_ms"] for r in rows])
    n_q = np.array([len(r["questions"]) for r in rows])
    mean_s = float(wall.mean()) / 1000
    summary = {
        "backend": name, "threads": args.threads, "passages": len(rows),
        "prompt_tokens_mean": float(np.mean([r["prompt_tokens"] for r in rows])),
        "new_tokens_mean": float(np.mean([r["new_tokens"] for r in rows])),
        "wall_ms_p50": float(np.median(wall)), "wall_ms_mean": float(wall.mean()), "cpu_ms_p50": float(np.median(cpu)),
        "questions_per_passage": float(n_q.mean()), "passages_with_3": int((n_q >= 3).sum()),
        "index_passages": len(index.children),
        "projected_hours_index": round(mean_s * len(index.children) / 3600, 1),
        "projected_hours_full_corpus": round(mean_s * FULL_CORPUS_PASSAGES / 3600, 1),
    }
    (out / f"{name}-summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(summary, indent=1))
    for r in rows[:3]:
        print(f"- {r['chunk_id']}: {r['questions']}")
    print(f"wrote {out / (name + '.jsonl')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

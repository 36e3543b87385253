"""Chunking one large source document with the real embedder's tokenizer: time and peak memory.

    .venv/bin/python -m eval.bench_large_source --mb 20 [--headings]

The document is the demo HFrEF summary repeated to ``--mb`` megabytes, its headings removed
(one section of the whole size: the hardest case for the splitters) unless ``--headings``.
Only the tokenizer of the configured embedder (all-MiniLM-L6-v2) is loaded. Issue 18: the same
document tokenised whole took 3.2 GB at 20 MB and aborted the process at 50 MB.
"""

from __future__ import annotations

import argparse
import re
import resource
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--mb", type=float, default=20.0)
    ap.add_argument("--headings", action="store_true", help="keep the headings (many small sections)")
    args = ap.parse_args()
    from transformers import AutoTokenizer

    from corpora.document import Document
    from rag.chunk import HierarchicalChunker
    from rag.config import load_config, resolve_path
    from rag.embed import TransformersEmbedder
    from rag.models import resolve

    cfg = load_config()
    emb = object.__new__(TransformersEmbedder)  # the tokenizer only: no model weights are needed to chunk
    emb._tok = AutoTokenizer.from_pretrained(str(resolve(cfg.embedder.model, resolve_path(cfg.models.cache_dir)).path))
    base = (ROOT / "corpora/demo/guidelines/hfref-gdmt.md").read_text(encoding="utf-8")
    if not args.headings:
        base = re.sub(r"(?m)^#+ .*$", "", base)
    text = (base * int(args.mb * 1e6 / len(base) + 1))[: int(args.mb * 1e6)]
    doc = Document(doc_id="big", text=text, title="Big", kind="guideline", source="big.md")
    c = cfg.chunking
    t = time.perf_counter()
    parents, children = HierarchicalChunker(emb.tokenize, c.parent_max_tokens, c.child_tokens,
                                            c.child_overlap).chunk(doc)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.mb:g} MB: {len(parents):,} sections, {len(children):,} passages in "
          f"{time.perf_counter() - t:.1f} s; peak RSS {rss:.0f} MB")


if __name__ == "__main__":
    main()

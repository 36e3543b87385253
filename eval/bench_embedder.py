"""Embedder float32 vs bfloat16: throughput and whether retrieval changes.

    python eval/bench_embedder.py --n 600

Encodes the first N WikiDoc answers (first 450 characters, ~96 tokens like our passages) and
their questions with the configured embedder in both dtypes, then reports passages/s,
tokens/s, the cosine between the two vectors of each passage, question->answer recall in
each dtype, and top-10 overlap between the dtypes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=None)
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--data", default=None, help="WikiDoc JSON (default: data_dir/wikidoc_patient_info/...)")
    args = ap.parse_args()
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    from rag.config import data_dir, load_config, resolve_path
    from rag.embed import TransformersEmbedder
    from rag.models import EMBEDDER_SPECS, resolve

    cfg = load_config(args.config)
    data = Path(args.data) if args.data else \
        data_dir(cfg) / "wikidoc_patient_info" / "medical_meadow_wikidoc_patient_information.json"
    items = [x for x in json.loads(data.read_text(encoding="utf-8")) if x.get("output")][: args.n]
    passages, questions = [x["output"][:450] for x in items], [x["input"] for x in items]
    r = resolve(cfg.embedder.model, resolve_path(cfg.models.cache_dir))
    spec = EMBEDDER_SPECS[r.model_id]
    res: dict[str, dict[str, Any]] = {}
    for dtype in ("float32", "bfloat16"):
        emb = TransformersEmbedder(r.path, spec, cfg.embedder.batch_size, dtype=dtype)
        ntok = sum(len(emb.tokenize(p)) for p in passages)
        emb.encode_passages(passages[:64])  # warm-up
        t = time.perf_counter()
        pv = emb.encode_passages(passages)
        dt = time.perf_counter() - t
        qv = emb.encode_queries(questions)
        top = np.argsort(-(qv @ pv.T), axis=1)[:, :10]
        n = len(passages)
        res[dtype] = {"passages_per_s": n / dt, "tokens_per_s": ntok / dt, "pv": pv, "top": top,
                      "recall@1": float((top[:, 0] == np.arange(n)).mean()),
                      "recall@10": float(np.mean([i in top[i] for i in range(n)]))}
        print(f"{dtype:9s} {n / dt:6.1f} passages/s {ntok / dt:7.0f} tokens/s  question->answer recall@1 "
              f"{res[dtype]['recall@1']:.3f} recall@10 {res[dtype]['recall@10']:.3f}")
    a, b = res["float32"], res["bfloat16"]
    cos = (a["pv"] * b["pv"]).sum(1)
    overlap = np.mean([len(set(x) & set(y)) / 10 for x, y in zip(a["top"], b["top"], strict=True)])
    print(f"bf16/fp32 speed {b['passages_per_s'] / a['passages_per_s']:.2f}x; cosine(fp32, bf16) mean "
          f"{cos.mean():.5f} min {cos.min():.4f}; top-10 overlap {100 * overlap:.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())

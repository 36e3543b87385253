"""Peak memory of building the BM25 index: token lists (before) vs token ids in one array (rag.lexical).

    taskset -c 1 nice -n 15 python eval/bench_bm25_memory.py --size 300000 --json runs/bench_bm25_memory.json

The passages are the scale corpus of ``eval/bench_hybrid_scale.py`` (the trust index's real passages
and synthetic ones made from them), written once to a scratch file. Each method then runs in a fresh
process that reads the texts, resets its peak-RSS counter (``/proc/self/clear_refs``), builds the
index and reports the peak above what the texts took (``VmHWM``), wall and CPU time. The two
indexes must give the same scores to the trust dev questions (checked here).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from eval.metrics import write_json

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

METHODS = ("lists", "ids")


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(method: str, texts_path: Path, questions: list[str], out: Path) -> dict[str, Any]:
    """Build one index from the texts file (run in its own process); scores of ``questions`` go to ``out``."""
    from rag.lexical import build_bm25, import_bm25s
    from rag.text import tokenize

    import_bm25s()
    with texts_path.open(encoding="utf-8") as f:
        texts = [json.loads(line) for line in f]
    base = _status_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
    t, c = time.perf_counter(), time.process_time()
    if method == "lists":  # the update job before rag.lexical
        bm25 = import_bm25s().BM25()
        bm25.index([tokenize(x) for x in texts], show_progress=False)
    else:
        bm25 = build_bm25(texts)
    res = {"method": method, "wall_s": time.perf_counter() - t, "cpu_s": time.process_time() - c,
           "texts_rss_mb": base, "peak_above_texts_mb": _status_mb("VmHWM") - base,
           "index_rss_mb": _status_mb("VmRSS") - base}
    np.save(out, np.stack([bm25.get_scores(tokenize(q)) for q in questions]))
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--index", default=".cds/index/trust")
    ap.add_argument("--dev-rows", default=".cds/eval/trust/rows-dev.jsonl")
    ap.add_argument("--size", type=int, default=300_000)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--work", default=".cds/scale-bm25")
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    work = Path(args.work)
    questions = [str(json.loads(x)["question"]) for x in Path(args.dev_rows).read_text(encoding="utf-8").splitlines()
                 if x.strip()]
    if args.child:
        print(json.dumps(child(args.child, work / "texts.jsonl", questions, work / f"scores-{args.child}.npy")))
        return 0

    from eval.bench_hybrid_scale import synth_corpus
    from rag.index import HybridIndex

    work.mkdir(parents=True, exist_ok=True)
    real = HybridIndex.load(Path(args.index), verify=False)
    real_vecs = real.dense.reconstruct_n(0, real.dense.ntotal).astype(np.float32)
    children, _ = synth_corpus(real.children, real_vecs, args.size, 0.15, 0.02, 2_000_000, 0.15,
                               np.random.default_rng(0))
    with (work / "texts.jsonl").open("w", encoding="utf-8") as f:
        for c in children:
            f.write(json.dumps(c.context_text(), ensure_ascii=False) + "\n")
    del children
    results: dict[str, Any] = {"command": " ".join(["python", "eval/bench_bm25_memory.py", *(argv or sys.argv[1:])]),
                               "size": args.size, "runs": {}}
    for method in args.methods.split(","):
        out = subprocess.run([sys.executable, __file__, *(argv or sys.argv[1:]), "--child", method],
                             capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        results["runs"][method] = json.loads(out)
        print(json.dumps(results["runs"][method]), flush=True)
    if len(results["runs"]) == 2:
        a, b = (np.load(work / f"scores-{m}.npy") for m in METHODS)
        results["same_scores"] = bool(np.array_equal(a, b))
        print(f"same scores for all {len(questions)} dev questions: {results['same_scores']}", flush=True)
    if args.json:
        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

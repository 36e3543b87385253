"""Cost of reranking the fused top N with the verifier, float32 vs dynamic int8, N = 10 and 20.

    python -m eval.bench_rerank [--config configs/realistic.yaml] [--questions 12] [--threads 1]
                                [--max-lengths 192,128,96] [--no-int8] [--students .cds/reranker/minilm-l2,...]

``--students``: distilled rerankers (``app.py train reranker``, rag/cross_encoder.py) timed in the same run,
float32 and dynamic int8 each, with their ratio to the verifier's float32 time and how often they put the
verifier's top passage first.

Each ``--max-lengths`` value caps the tokens of a (question, passage) pair the verifier reads (the verifier
was trained at 192; shorter cuts the passage's end) and is timed on float32.

For each of the first realistic dev questions, the configured retriever's fused top N passages
are scored by the verifier as the product would (one batch). Reports CPU time per question
(``time.process_time``: robust to other jobs sharing the core, unlike wall time), wall time,
and how far int8 scores move from float32 (max |diff|, and whether the top passage changes).
int8 is ``torch.ao.quantization.quantize_dynamic`` over the Linear layers (no calibration data).
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import time
import warnings
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--config", default="configs/realistic.yaml")
    ap.add_argument("--questions", type=int, default=12)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-lengths", default="", help="comma-separated pair lengths to time on float32 as well")
    ap.add_argument("--no-int8", action="store_true", help="skip the dynamic int8 comparison")
    ap.add_argument("--students", default="", help="comma-separated distilled reranker folders to time as well")
    ap.add_argument("--student-batch", type=int, default=20,
                    help="pairs per forward pass of a student (length-sorted; 10: the top 20 in two, less padding)")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    import torch

    torch.set_num_threads(args.threads)
    from eval.realistic_retrieval import load_realistic
    from rag import Assistant
    from rag.config import load_config, resolve_path
    from rag.cross_encoder import DistilledReranker

    a = Assistant(load_config(args.config, ["index.auto_build_demo=false"]))
    v = a.verifier
    assert v is not None
    v.batch_size = 20
    r = a.retriever()
    qs = load_realistic(part="dev")[: args.questions]
    heads = []
    for q in qs:
        ret = r.retrieve(q.text)
        heads.append((q.text, [a.index.children[a.index.child_pos[f.chunk_id]].context_text() for f in ret.fused[:20]]))
    v.answerability("warm up", heads[0][1][:2])
    fp32 = v._model
    models = [("float32", fp32, v.max_length)]
    models += [(f"float32 max_length {m}", fp32, int(m)) for m in args.max_lengths.split(",") if m.strip()]
    if not args.no_int8:
        models.append(("int8", torch.ao.quantization.quantize_dynamic(copy.deepcopy(fp32), {torch.nn.Linear},
                                                                      dtype=torch.qint8), v.max_length))
    trained_length = v.max_length
    rows = []
    scores: dict[str, list[np.ndarray]] = {}

    def timed(name: str, fn: Any) -> None:
        fn("warm up", heads[0][1][:2])
        for n in (10, 20):
            cpu, wall, out = [], [], []
            for question, texts in heads:
                t, c = time.perf_counter(), time.process_time()
                out.append(fn(question, texts[:n]))
                wall.append((time.perf_counter() - t) * 1000)
                cpu.append((time.process_time() - c) * 1000)
            scores[f"{name}-{n}"] = out
            rows.append((name, n, float(np.median(cpu)), float(np.percentile(cpu, 95)), float(np.median(wall))))

    for name, model, length in models:
        v._model, v.max_length = model, length
        timed(name, v.answerability)
    v._model, v.max_length = fp32, trained_length
    names = [n for n, _, _ in models[1:]]
    for folder in [f.strip() for f in args.students.split(",") if f.strip()]:
        for int8 in (False, True):
            student = DistilledReranker(resolve_path(folder), int8=int8, batch_size=args.student_batch)
            name = f"{resolve_path(folder).name} {'int8' if int8 else 'float32'} batch {args.student_batch}"
            timed(name, student.answerability)
            names.append(name)
    load = os.getloadavg()
    print(f"{len(heads)} questions, {args.threads} thread(s), load average {load[0]:.2f}\n")
    ref = {n: c50 for name, n, c50, _, _ in rows if name == "float32"}
    print("| model | top N | CPU ms p50 | CPU ms p95 | wall ms p50 (shared core) | CPU p50 / verifier float32 |\n"
          "|---|---|---|---|---|---|")
    for name, n, c50, c95, w50 in rows:
        print(f"| {name} | {n} | {c50:.0f} | {c95:.0f} | {w50:.0f} | {c50 / ref[n]:.2f} |")
    for other in names:
        diff = max(float(np.abs(x - y).max()) for x, y in zip(scores["float32-20"], scores[f"{other}-20"],
                                                               strict=True))
        same_top = np.mean([int(np.argmax(x) == np.argmax(y)) for x, y in zip(scores["float32-20"],
                                                                             scores[f"{other}-20"], strict=True)])
        print(f"{other} vs float32 on the top 20: max |p diff| {diff:.3f}; same top passage for "
              f"{100 * same_top:.0f}% of questions")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

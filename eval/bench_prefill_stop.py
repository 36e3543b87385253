"""How long a generation goes on after its request is abandoned during the prompt's prefill (issue 14).

    OMP_NUM_THREADS=2 .venv/bin/python -m eval.bench_prefill_stop --output .cds/eval/bench_prefill_stop.json

The default preset's generator (transformers) and the real prompts of ``eval/bench_query.py``'s two
questions. For each path the server uses (a batch of both prompts, ``generate_batch`` with
``should_stop``; one streamed prompt, ``generate`` with an ``on_text`` that raises once the client has
gone) the request is abandoned ``--after`` seconds into the call, first with the prompt read in one pass
(``prefill_chunk`` larger than any prompt: what the server did before) and then in chunks of 256 tokens.
Reported: the prefill alone (one new token, nothing abandoned), when the call returned, and the CPU time
spent after the request was abandoned. One process, the variants one after another, same prompts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = [("What drug classes reduce mortality in heart failure with reduced ejection fraction?", None),
             ("What is the latest ejection fraction of this patient?", "P002")]


class _Gone(Exception):
    pass


def _timed(call: Any) -> float:
    t0 = time.perf_counter()
    with contextlib.suppress(_Gone):
        call(t0)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    from rag import Assistant
    from rag.config import load_config

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--after", type=float, default=1.0, help="seconds into the call at which the request is abandoned")
    ap.add_argument("--chunk", type=int, default=256)
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    ap.add_argument("--output", type=Path, default=ROOT / ".cds/eval/bench_prefill_stop.json")
    args = ap.parse_args(argv)

    assistant = Assistant(load_config(overrides=args.overrides))
    assistant.ensure_index()
    prepared = []
    for q, pid in QUESTIONS:
        p = assistant.prepare(q, patient_id=pid)
        if hasattr(p, "messages"):
            prepared.append(p.messages)
    if not prepared:
        raise SystemExit("both questions were answered without generation (gate); nothing to measure")
    gen: Any = assistant.generator
    if not hasattr(gen, "prefill_chunk"):
        raise SystemExit(f"generator.backend {assistant.config.generator.backend}: only transformers reads prompts "
                         "in chunks")
    gen.generate(prepared[0], 1)  # warm: the fixed prefix is cached, as in a running server
    tokens = [gen.count_tokens(m[-1]["content"]) for m in prepared]
    after = args.after
    rows: dict[str, Any] = {"prompt_tokens_last_message": tokens, "after_s": after, "chunk": args.chunk,
                            "threads": os.environ.get("OMP_NUM_THREADS"), "variants": {}}
    for name, chunk in (("one pass (before)", 10**9), (f"chunks of {args.chunk}", args.chunk)):
        gen.prefill_chunk = chunk
        batch_prefill = _timed(lambda t0: gen.generate_batch(prepared, 1, should_stop=lambda: False))
        batch_stop = _timed(lambda t0: gen.generate_batch(
            prepared, 200, should_stop=lambda t0=t0: time.perf_counter() - t0 > after))
        stream_prefill = _timed(lambda t0: gen.generate(prepared[0], 1, on_text=lambda _t: None))

        def streamed(t0: float) -> None:
            def on_text(_text: str) -> None:
                if time.perf_counter() - t0 > after:
                    raise _Gone
            gen.generate(prepared[0], 200, on_text=on_text)

        stream_stop = _timed(streamed)
        rows["variants"][name] = {
            "batch_prefill_s": round(batch_prefill, 2), "batch_returned_s": round(batch_stop, 2),
            "batch_after_abandon_s": round(batch_stop - after, 2),
            "stream_prefill_s": round(stream_prefill, 2), "stream_returned_s": round(stream_stop, 2),
            "stream_after_abandon_s": round(stream_stop - after, 2)}
        print(name, rows["variants"][name], flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Generation backends side by side, one run, the same prompts (README / BENCHMARKS "Generation backends").

    taskset -c 1 nice -n 10 .venv/bin/python -m eval.bench_backends_gen --output .cds/eval/bench_backends_gen.json

Each variant runs in a fresh process (so load time and peak RSS are its own): the default preset's
Assistant with ``generator.backend`` (and dtype) set, warmed with one question, then the questions
of ``eval/bench_query.py`` answered through the staged API (prepare -> generate streamed -> finish).
Per question: prompt tokens and how many came from the cached fixed prefix, prefill tokens/s
(uncached prompt tokens / first token), decode tokens/s, first streamed token, whole answer
(retrieval + gate + generation + checks), the draft text and token probabilities. Then the same
prompt once more with the prefix cache off and one new token: the first token without reuse.
Agreement is the share of drafts identical to the transformers float32 reference (and a
character-level similarity). The ``openai`` variant starts ``eval.llamacpp_server`` (the same GGUF
and LoRA) and talks to it over HTTP; its RSS is the server's plus the client's.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WARMUP = "What is the first-line treatment for stage 1 hypertension?"

# name -> (--set overrides, needs a GGUF LoRA, description)
VARIANTS: dict[str, tuple[list[str], str]] = {
    "transformers-fp32": (["generator.backend=transformers", "generator.dtype=float32"],
                          "transformers float32 (the reference)"),
    "transformers-bf16": (["generator.backend=transformers", "generator.dtype=bfloat16"],
                          "transformers bfloat16 (dtype auto on this CPU)"),
    "llamacpp": (["generator.backend=llamacpp"], "llama.cpp in process, bundle GGUF (Q4_K_M) + GGUF LoRA"),
    "llamacpp-no-lora": (["generator.backend=llamacpp", "generator.adapter=null"],
                         "llama.cpp without our adapter (shows what the LoRA changes)"),
    "openai": (["generator.backend=openai", "generator.openai_model=cds"],
               "OpenAI-compatible HTTP server (eval.llamacpp_server: same GGUF + LoRA)"),
}


def _rss_mb(pid: int | None = None) -> float:
    if pid is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _stamp(first: list[float]) -> Callable[[str], None]:
    def on_text(_text: str) -> None:
        if not first:
            first.append(time.perf_counter())
    return on_text


def run_variant(name: str, overrides: list[str], n_questions: int, n_cold: int = 1) -> dict[str, Any]:
    """One backend in this process; returns its measurements."""
    import torch

    from eval.bench_query import QUESTIONS
    from rag import Assistant
    from rag.answer import Answer
    from rag.backends import cpu_threads
    from rag.config import load_config
    from rag.generate import Generation, build_messages

    torch.set_num_threads(cpu_threads())  # torch would start one thread per core of the machine, not of taskset
    server: subprocess.Popen[str] | None = None
    server_load_s = 0.0
    sets = list(overrides)
    cfg0 = load_config(None, [s for s in sets if not s.startswith("generator.openai")] +
                       (["generator.backend=transformers"] if name == "openai" else []))
    if name == "openai":
        from rag.models import resolve_gguf

        gguf, _ = resolve_gguf(cfg0.generator.model, ROOT / cfg0.models.cache_dir,
                               Path(cfg0.generator.gguf) if cfg0.generator.gguf else None)
        lora = Path(cfg0.generator.adapter or "") / "adapter_model.gguf"
        t = time.perf_counter()
        server = subprocess.Popen([sys.executable, "-m", "eval.llamacpp_server", "--gguf", str(gguf), "--lora",
                                   str(ROOT / lora), "--threads", str(cpu_threads()), "--ctx", "4096"],
                                  cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  text=True)
        assert server.stdout is not None
        url = server.stdout.readline().split()[-1]
        server_load_s = time.perf_counter() - t
        sets.append(f"generator.openai_url={url}")
    try:
        a = Assistant(load_config(None, sets))
        t = time.perf_counter()
        _ = a.index, a.embedder, a.verifier, a.calibration
        t_gen = time.perf_counter()
        gen = a.generator
        load_s = time.perf_counter() - t_gen
        others_s = t_gen - t
        # Warm: first-call allocations, and the fixed prefix computed once (an empty source list,
        # one new token: the prefix is the same for every question).
        gen.generate(build_messages(WARMUP, [], None), 1)
        rows = []
        for i, (q, pid) in enumerate(QUESTIONS[:n_questions]):
            t0 = time.perf_counter()
            prep = a.prepare(q, pid)
            if isinstance(prep, Answer):  # answered without generating (the gate abstained)
                rows.append({"question": q, "generated": False})
                continue
            first: list[float] = []
            t_gen0 = time.perf_counter()
            out: Generation = a.generate(prep, _stamp(first))
            ans = a.finish(prep, out)
            whole = (time.perf_counter() - t0) * 1000
            uncached = out.prompt_tokens - out.cached_tokens
            prefill_s = out.first_token_ms / 1000
            decode_s = (out.total_ms - out.first_token_ms) / 1000
            # The first token again with nothing reused (prefix cache off), one new token: the gain.
            # Only for the first questions (--cold): on one shared core a prefill takes minutes.
            cold = None
            if i < n_cold:
                switch: Any = gen
                switch.prefix_cache = False
                cold = gen.generate(prep.messages, 1)
                switch.prefix_cache = True
            rows.append({
                "question": q, "patient_id": pid, "generated": True, "prompt_tokens": out.prompt_tokens,
                "cached_tokens": out.cached_tokens, "new_tokens": out.new_tokens,
                "first_token_ms": round(out.first_token_ms, 1),
                "first_streamed_ms": round((first[0] - t_gen0) * 1000, 1) if first else None,
                "generation_ms": round(out.total_ms, 1), "whole_answer_ms": round(whole, 1),
                "prefill_tok_s": round(uncached / prefill_s, 1) if prefill_s > 0 else None,
                "decode_tok_s": round(max(out.new_tokens - 1, 0) / decode_s, 2) if decode_s > 0 else None,
                "first_token_no_prefix_cache_ms": round(cold.first_token_ms, 1) if cold else None,
                "prefill_no_cache_tok_s": round(cold.prompt_tokens / (cold.first_token_ms / 1000), 1)
                if cold else None,
                "draft": out.text, "token_probs": [round(p, 5) for p in out.token_probs],
                "answer": ans.answer, "abstained": ans.abstained, "confidence": ans.confidence,
                "models": ans.models})
        result = {"variant": name, "overrides": sets, "load_generator_s": round(load_s, 2),
                  "load_index_embedder_verifier_s": round(others_s, 2), "server_load_s": round(server_load_s, 2),
                  "rows": rows, "client_peak_rss_mb": round(_rss_mb(), 1), "info": dict(getattr(gen, "info", {}))}
        if server is not None:
            result["server_peak_rss_mb"] = round(_rss_mb(server.pid), 1)
        return result
    finally:
        if server is not None and server.stdin is not None:
            server.stdin.close()
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()


def _median(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return round(statistics.median(xs), 1) if xs else None


def summarise(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ref = next((r for r in results if r["variant"] == "transformers-fp32"), None)
    ref_drafts = {row["question"]: row.get("draft") for row in ref["rows"]} if ref else {}
    table = []
    for r in results:
        rows = [x for x in r["rows"] if x.get("generated")]
        same = [x for x in rows if ref_drafts.get(x["question"]) is not None]
        exact = sum(x["draft"] == ref_drafts[x["question"]] for x in same)
        sim = [difflib.SequenceMatcher(None, x["draft"], ref_drafts[x["question"]]).ratio() for x in same]
        table.append({
            "variant": r["variant"], "questions": len(rows),
            "prefill_tok_s": _median([x["prefill_tok_s"] for x in rows]),
            "prefill_no_cache_tok_s": _median([x["prefill_no_cache_tok_s"] for x in rows]),
            "decode_tok_s": _median([x["decode_tok_s"] for x in rows]),
            "first_token_ms_p50": _median([x["first_token_ms"] for x in rows]),
            "first_token_no_prefix_cache_ms_p50": _median([x["first_token_no_prefix_cache_ms"] for x in rows]),
            "first_streamed_ms_p50": _median([x["first_streamed_ms"] for x in rows]),
            "whole_answer_ms_p50": _median([x["whole_answer_ms"] for x in rows]),
            "load_s": r["load_generator_s"] + r.get("server_load_s", 0.0),
            "peak_rss_mb": round(r["client_peak_rss_mb"] + r.get("server_peak_rss_mb", 0.0), 1),
            "agree_exact": f"{exact}/{len(same)}", "agree_char_similarity": round(statistics.mean(sim), 3)
            if sim else None})
    return table


def markdown(table: list[dict[str, Any]]) -> str:
    cols = ["variant", "prefill_tok_s", "prefill_no_cache_tok_s", "decode_tok_s", "first_token_ms_p50",
            "first_token_no_prefix_cache_ms_p50", "first_streamed_ms_p50", "whole_answer_ms_p50", "load_s",
            "peak_rss_mb", "agree_exact", "agree_char_similarity"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(row[c]) for c in cols) + " |" for row in table]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="transformers-fp32,transformers-bf16,llamacpp,openai")
    ap.add_argument("--questions", type=int, default=2)
    ap.add_argument("--cold", type=int, default=1, help="questions also timed with the prefix cache off")
    ap.add_argument("--output", default=".cds/eval/bench_backends_gen.json")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one variant, print its JSON
    ap.add_argument("--set", action="append", default=[], help="extra config override for every variant")
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(run_variant(args.one, VARIANTS[args.one][0] + args.set, args.questions, args.cold)))
        return 0
    results = []
    for name in args.variants.split(","):
        t = time.perf_counter()
        cmd = [sys.executable, "-m", "eval.bench_backends_gen", "--one", name, "--questions", str(args.questions),
               "--cold", str(args.cold), *[f"--set={s}" for s in args.set]]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{name} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
            results.append({"variant": name, "error": proc.stderr[-1000:], "rows": []})
            continue
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"{name}: {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    ok = [r for r in results if "error" not in r]
    table = summarise(ok)
    out = {"host": {"platform": platform.platform(), "affinity": sorted(os.sched_getaffinity(0)),
                    "loadavg_end": os.getloadavg()}, "questions": args.questions,
           "descriptions": {k: v[1] for k, v in VARIANTS.items()}, "table": table, "results": results}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=2))
    print(markdown(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

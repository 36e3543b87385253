"""A local OpenAI-compatible server (llama.cpp through xllamacpp) for tests and benchmarks.

    python -m eval.llamacpp_server --gguf MODEL.gguf [--lora ADAPTER.gguf] [--threads N]

Prints ``listening URL`` on its first line once the model is loaded, then serves until stdin is
closed or the process is terminated. The ``openai`` backend is tested and measured against it
(``/v1/chat/completions`` with streaming and log-probabilities, as vLLM serves them).
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--lora", help="a GGUF LoRA (python app.py models convert-lora)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ctx", type=int, default=4096)
    ap.add_argument("--alias", default="cds", help="the model name clients send")
    args = ap.parse_args(argv)
    import xllamacpp as xlc

    p = xlc.CommonParams()
    p.model.path = args.gguf
    p.model_alias = args.alias
    p.n_ctx = args.ctx
    p.cpuparams.n_threads = args.threads
    p.cpuparams_batch.n_threads = args.threads
    p.hostnames = ["127.0.0.1"]
    p.verbosity = 0
    if args.lora:
        p.lora_adapters = [xlc.CommonAdapterLoraInfo(args.lora, 1.0)]
    server = xlc.Server(p)
    print(f"listening {server.listening_address}", flush=True)
    sys.stdin.read()  # until the parent closes our stdin (or terminates us)
    del server
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

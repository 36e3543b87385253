"""``app.py models list|fetch|convert-lora``: the offline models (:mod:`rag.models`, :mod:`rag.gguf_lora`)."""

from __future__ import annotations

import argparse
from typing import Any

from rag.cli import load_config, print_json


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    m = sub.add_parser("models", parents=[common], help="list or fetch offline models")
    msub = m.add_subparsers(dest="models_command", required=True)
    ml = msub.add_parser("list", parents=[common], help="models available locally")
    ml.add_argument("--json", action="store_true")
    ml.set_defaults(handler=list_local)
    mf = msub.add_parser("fetch", parents=[common], help="install and convert offline bundles")
    mf.add_argument("names", nargs="*", help="bundle names (default: the configured embedder and generator)")
    mf.set_defaults(handler=fetch)
    mc = msub.add_parser("convert-lora", parents=[common], help="write a peft LoRA adapter as a GGUF LoRA "
                         "(for generator.backend llamacpp)")
    mc.add_argument("adapter", nargs="?", help="adapter folder (default: generator.adapter)")
    mc.add_argument("--out", help="output file (default: ADAPTER/adapter_model.gguf)")
    mc.set_defaults(handler=convert_lora)


def list_local(args: argparse.Namespace) -> int:
    from rag.config import PROJECT_ROOT, resolve_path
    from rag.models import list_models

    cfg = load_config(args)
    rows = list_models(resolve_path(cfg.models.cache_dir),
                       [PROJECT_ROOT / "adapters", resolve_path(cfg.train.output_dir).parent])
    if args.json:
        print_json([r.__dict__ for r in rows])
    else:
        for r in rows:
            print(f"{r.name:40s} {r.role:10s} {r.status:12s} {r.model_id}")
        if cfg.generator.adapter:
            print(f"configured adapter: {cfg.generator.adapter}")
    return 0


def fetch(args: argparse.Namespace) -> int:
    from rag.config import resolve_path
    from rag.models import fetch as fetch_bundle

    cfg = load_config(args)
    v = cfg.verifier
    wanted = [cfg.embedder.model, cfg.generator.model] + (
        [v.model] + ([v.answerability_model] if v.answerability_model else []) if v.enabled else [])
    names = args.names or list(dict.fromkeys(m.split(":", 1)[1] for m in wanted if m.startswith("bundle:")))
    for name in names:
        print(f"ready: bundle:{name} -> {fetch_bundle(name, resolve_path(cfg.models.cache_dir)).path}")
    return 0


def convert_lora(args: argparse.Namespace) -> int:
    from rag.gguf_lora import convert_adapter

    lora = convert_adapter(load_config(args), args.adapter, args.out)
    print(f"GGUF LoRA written to {lora.path}: {lora.tensors} tensors ({lora.arch}, rank {lora.rank}, "
          f"alpha {lora.alpha:g})")
    return 0

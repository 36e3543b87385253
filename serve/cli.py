"""``app.py serve``: the warm HTTP API and clinician page (:mod:`serve.api`)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from rag.cli import load_config, with_index


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    sv = sub.add_parser("serve", parents=[common], help="warm HTTP API and clinician page (models load once)",
                        description="Serve POST /v1/query, GET /v1/index/status, /healthz, /readyz, /metrics, the "
                                    "OpenAPI docs at /docs and the clinician page at /. Binding anything but "
                                    "loopback needs an API key in the environment (serve.api_key_env, default "
                                    "CDS_API_KEY). Logs are JSON lines on stderr, without record text.")
    sv.add_argument("--host", help="address to bind (default: serve.host, 127.0.0.1)")
    sv.add_argument("--port", type=int, help="port (default: serve.port, 8000)")
    sv.add_argument("--adapter", help="LoRA adapter folder for the generator")
    with_index(sv)
    sv.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from serve import api_key
    from serve import run as serve_forever
    from serve.logs import json_handler

    if args.port is not None and not 1 <= args.port <= 65535:
        from rag.errors import InputError

        raise InputError("--port must be between 1 and 65535")
    cfg = load_config(args)
    if args.host is not None:
        cfg.serve.host = args.host
    if args.port is not None:
        cfg.serve.port = args.port
    key = api_key(cfg.serve)  # refuses a non-loopback bind without a key, before any model loads
    logging.basicConfig(force=True, handlers=[json_handler()], level=logging.DEBUG if args.verbose else logging.WARNING)
    for name in ("serve", "uvicorn.error"):
        logging.getLogger(name).setLevel(logging.DEBUG if args.verbose else logging.INFO)
    serve_forever(cfg, key)
    return 0

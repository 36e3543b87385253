"""The warm server: ``app.py serve`` (HTTP API + clinician page). Imports ``rag``; nothing imports it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from serve.api import api_key, create_app, run
    from serve.engine import Engine

_LAZY = {"Engine": "serve.engine", "api_key": "serve.api", "create_app": "serve.api", "run": "serve.api"}


def __getattr__(name: str) -> Any:
    # Lazy: `app.py --help` imports serve.cli (the arguments), not FastAPI and the models behind it.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'serve' has no attribute {name!r}")


__all__ = ["Engine", "api_key", "create_app", "run"]

"""The warm server: ``app.py serve`` (HTTP API + clinician page). Imports ``rag``; nothing imports it."""

from serve.api import api_key, create_app, run
from serve.engine import Engine

__all__ = ["Engine", "api_key", "create_app", "run"]

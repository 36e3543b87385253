"""JSON-lines reading for the evaluation tools: :func:`rag.jsonl.objects` (one implementation, shared with
``finetune``, which cannot import ``eval``)."""

from rag.jsonl import objects

__all__ = ["objects"]

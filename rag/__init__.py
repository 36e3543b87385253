"""CDS Assistant retrieval-augmented generation library.

    from rag import Assistant, IndexJobs, load_config
    assistant = Assistant.open("configs/default.yaml")  # builds the demo index if missing
    answer = assistant.ask("What reduces mortality in HFrEF?")

    IndexJobs(load_config()).update(["corpora/demo/guidelines", "corpora/demo/ehr"])  # index jobs
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rag.errors import CDSError, InputError

if TYPE_CHECKING:
    from rag.answer import Answer, Citation, SentenceRecord
    from rag.assistant import Assistant
    from rag.config import AppConfig, load_config
    from rag.index_jobs import IndexJobs

_LAZY = {"Answer": "rag.answer", "Citation": "rag.answer", "SentenceRecord": "rag.answer",
         "Assistant": "rag.assistant", "AppConfig": "rag.config", "load_config": "rag.config",
         "IndexJobs": "rag.index_jobs"}


def __getattr__(name: str) -> Any:
    # Lazy: `import rag.text` (or any light module) must not load the assistant and its backends.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rag' has no attribute {name!r}")


__all__ = ["Answer", "AppConfig", "Assistant", "CDSError", "Citation", "IndexJobs", "InputError", "SentenceRecord",
           "load_config"]

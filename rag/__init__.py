"""CDS Assistant retrieval-augmented generation library.

    from rag import Assistant
    assistant = Assistant.from_config("configs/default.yaml")
    answer = assistant.ask("What reduces mortality in HFrEF?")
"""

from rag.answer import Answer, Citation, SentenceRecord
from rag.assistant import Assistant
from rag.config import AppConfig, load_config
from rag.errors import CDSError, InputError

__all__ = ["Answer", "AppConfig", "Assistant", "CDSError", "Citation", "InputError", "SentenceRecord", "load_config"]

"""JSON log lines for the server. No record text: questions, answers, patient ids and error
messages (which may quote them) are never logged, only their sizes, outcomes and types."""

from __future__ import annotations

import json
import logging
import time

# The only extra fields a record may carry into the log (anything else passed in `extra` is dropped).
FIELDS = ("event", "request_id", "method", "route", "status", "ms", "question_chars", "patient", "stream",
          "abstained", "generated", "confidence", "confidence_label", "index_version", "error_type", "load_s",
          "host", "port", "auth", "batch", "abandoned")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.msg if isinstance(record.msg, str) and not record.args else record.getMessage(),
        }
        for k in FIELDS:
            if k in record.__dict__:
                out[k] = record.__dict__[k]
        if record.exc_info and record.exc_info[0] is not None:
            # The exception's type only: its message and traceback locals may quote a record.
            out["error_type"] = record.exc_info[0].__name__
        return json.dumps(out, ensure_ascii=False)


def json_handler() -> logging.Handler:
    """A stderr handler writing one JSON object per line."""
    h = logging.StreamHandler()
    h.setFormatter(JsonFormatter())
    return h

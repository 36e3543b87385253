"""What every reader returns: documents, skipped inputs with reasons, and counts."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from corpora.document import Document
from corpora.errors import SourceError

log = logging.getLogger("corpora")


@dataclass
class LoadReport:
    """Documents read plus the inputs that were skipped and why (never silently dropped).

    ``stats`` counts what a reader passed over on purpose (pairs without an answer, duplicate
    notes); ``skipped`` lists inputs that were bad (path or path:line, and the reason).
    """

    documents: list[Document] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    stats: Counter[str] = field(default_factory=Counter)
    fmt: str = ""

    def count(self, key: str, n: int = 1) -> None:
        self.stats[key] += n

    def extend(self, other: LoadReport) -> None:
        self.documents.extend(other.documents)
        self.skipped.extend(other.skipped)
        for k, v in other.stats.items():
            self.stats[f"{other.fmt}.{k}" if other.fmt else k] += v


def skip(report: LoadReport, where: str | Path, reason: str, strict: bool) -> None:
    """Record a bad input, or raise when the caller asked for strict loading."""
    if strict:
        raise SourceError(f"{where}: {reason} (fix it, or skip bad inputs and index the rest: `index build "
                          "--skip-bad`, `index update` without --strict)")
    report.skipped.append((str(where), reason))
    log.warning("skipped %s: %s", where, reason)

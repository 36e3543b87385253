"""``app.py eval ...``: evaluation commands, declared beside their handlers (see :mod:`rag.cli`).

retrieval.py: ``split``, ``retrieval``; mcq.py: ``mcq``, ``compare``; tuning.py: ``grounded``,
``hf-risk``, ``risk-extraction``, ``patient-records``; trust.py: ``trust``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    from eval.cli import mcq, retrieval, trust, tuning

    ev = sub.add_parser("eval", parents=[common], help="evaluation: retrieval quality, multiple-choice benchmarks")
    esub = ev.add_subparsers(dest="eval_command", required=True)
    for add_group in (retrieval.add, mcq.add, tuning.add, trust.add, mcq.add_compare):  # the order of --help
        add_group(esub, common)


def bar(total: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc="answering", unit="answer", file=sys.stderr)


def advance(progress_bar: Any) -> Any:
    """A ``progress(done, total)`` callback that moves ``progress_bar`` (None: no callback)."""
    if progress_bar is None:
        return None

    def progress(done: int, _total: int) -> None:
        progress_bar.n = done
        progress_bar.refresh()

    return progress

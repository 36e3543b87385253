"""Command-line handlers next to the library they drive, and what they share.

``app.py`` parses and dispatches; each command module here (and ``finetune/cli.py``,
``eval/cli/``, ``serve/cli.py``) has an ``add(sub, common)`` that declares its arguments beside
its handlers and binds each parser to its handler with ``set_defaults(handler=...)``. Handlers
take the parsed arguments, call one library function and print; errors are ``CDSError``s that
``app.main`` turns into one line and an exit code. Heavy modules are imported inside handlers,
so ``python app.py --help`` stays instant.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import textwrap
from pathlib import Path
from typing import Any


def seconds(raw: str) -> float:
    v = float(raw)
    if not math.isfinite(v) or v < 0:
        raise ValueError(raw)
    return v


def fraction(raw: str) -> float:
    v = float(raw)
    if not 0.0 <= v <= 1.0:  # also refuses nan
        raise ValueError(raw)
    return v


# argparse names the type in its error message ("invalid fraction (0 to 1) value: ...").
seconds.__name__ = "seconds (a number >= 0)"
fraction.__name__ = "fraction (0 to 1)"


def with_index(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", help="index directory (default: index.dir from config)")


def with_lock(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lock-timeout", type=seconds, metavar="SECONDS",
                   help="wait this long for another writer's lock (default: index.lock_timeout)")


def load_config(args: argparse.Namespace) -> Any:
    """The config of a command: ``--config``, ``--set``, and ``--index`` / ``--adapter`` where the command has them."""
    from rag.config import load_config as load

    overrides = list(args.overrides)
    if getattr(args, "index", None):
        # An explicitly named index is never silently replaced by the demo corpus.
        overrides += [f"index.dir={Path(args.index).resolve()}", "index.auto_build_demo=false"]
    if getattr(args, "adapter", None):
        overrides.append(f"generator.adapter={Path(args.adapter).resolve()}")
    return load(args.config, overrides)


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False))


def wrap(text: str, indent: str = "") -> str:
    return "\n".join(textwrap.fill(line, width=100, initial_indent=indent, subsequent_indent=indent)
                     for line in text.splitlines() if line.strip())


def excerpt(text: str, limit: int = 300) -> str:
    """A passage cut at a word boundary near ``limit`` characters, for the SOURCES lists."""
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " …"


def say(quiet: bool, file: Any = None) -> Any:
    """A ``say(message)`` callback printing progress lines (to stderr by default), silent with ``--quiet``."""
    out = sys.stderr if file is None else file
    return (lambda m: None) if quiet else (lambda m: print(m, file=out, flush=True))

"""`python -m eval.<tool>` entry points: bad input is one line on stderr and exit code 2, not a traceback."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

from rag.errors import CDSError, InputError


def message(e: BaseException) -> str | None:
    """The one line for an error a user can act on, or None for an unexpected failure (its traceback is kept)."""
    if isinstance(e, (InputError, CDSError)):
        return str(e).splitlines()[0] if str(e) else type(e).__name__
    if isinstance(e, FileNotFoundError):
        return (f"{e.filename or e} not found; check the path (run records live under .cds/, kept outcomes in "
                "eval/results/)")
    if isinstance(e, json.JSONDecodeError):
        return f"malformed JSON ({e.msg}, line {e.lineno}); write the file again from its command"
    if isinstance(e, OSError):
        return f"{e.strerror or e}: {e.filename or ''}; check the path and its permissions"
    return None


def run(main: Callable[[], int]) -> None:
    try:
        code = main()
    except (CDSError, OSError, json.JSONDecodeError) as e:
        print(f"error: {message(e)}", file=sys.stderr)
        code = 2
    raise SystemExit(code)

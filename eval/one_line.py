"""`python -m eval.<tool>` entry points: bad input is one line on stderr and exit code 2, not a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable

from rag.errors import InputError


def run(main: Callable[[], int]) -> None:
    try:
        code = main()
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        code = 2
    raise SystemExit(code)

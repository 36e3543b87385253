"""CDS Assistant command line: parses arguments, loads config, calls the library, prints.

A thin dispatch: the command table below lists the modules that declare each command's arguments
beside its handler (``rag/cli/``, ``serve/cli.py``, ``eval/cli/``, ``finetune/cli.py``); this file
holds only what every command shares: the global options, the error contract and logging.

Exit codes: 0 success, 1 runtime failure, 2 usage or input error, 3 index job published but
skipped unreadable files, 75 index locked by another job (retry later). Errors are one line on
stderr; ``-v`` adds the traceback and debug logs.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from typing import Any, NoReturn

# Offline by default: nothing here may reach a model hub (set before transformers is imported).
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import eval.cli  # noqa: E402  (after the environment above; these modules import nothing heavy)
import finetune.cli  # noqa: E402
import rag.cli.index  # noqa: E402
import rag.cli.models  # noqa: E402
import rag.cli.query  # noqa: E402
import rag.cli.risk  # noqa: E402
import serve.cli  # noqa: E402

SAMPLE_QUESTION = "What drug classes reduce mortality in heart failure with reduced ejection fraction?"

# The command table, in --help order: each entry's ``add(sub, common)`` declares a command (or a group of
# subcommands) and binds every parser to its handler with ``set_defaults(handler=...)``.
COMMANDS = (
    rag.cli.query.add,  # query
    serve.cli.add,  # serve
    rag.cli.risk.add,  # risk
    rag.cli.index.add,  # index build|update|status|verify|rollback
    eval.cli.add,  # eval split|retrieval|mcq|grounded|hf-risk|risk-extraction|patient-records|trust|compare
    finetune.cli.add,  # train [run|data|verifier|risk]
    rag.cli.models.add,  # models list|fetch
)


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's error contract: one line on stderr naming the fix, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {_one_line(message)}; see `python {self.prog} --help`\n")


def _one_line(text: str) -> str:
    """``text`` on one line: control characters (a newline in a path or an id) shown escaped, never raw."""
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: repr(m.group())[1:-1], text.strip())


def _common(defaults: bool) -> _Parser:
    # Subcommands get the options without defaults: a subparser's default would overwrite the value
    # given before the subcommand (`app.py --config X eval ...` silently lost X).
    def d(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    common = _Parser(add_help=False)
    common.add_argument("--config", default=d(None), help="preset YAML (default: configs/default.yaml)")
    common.add_argument("--set", dest="overrides" if defaults else "sub_overrides", action="append", default=d([]),
                        metavar="KEY=VALUE",
                        help="override a config key, e.g. --set retrieval.top_k=8 (repeatable)")
    common.add_argument("-v", "--verbose", action="store_true", default=d(False), help="debug logs and tracebacks")
    common.add_argument("-q", "--quiet", action="store_true", default=d(False), help="no progress bars or info logs")
    return common


def _parser() -> argparse.ArgumentParser:
    """The CLI's arguments: the global options, then every command of the table."""
    common = _common(defaults=False)
    p = _Parser(prog="app.py", description="CDS Assistant: cited answers from guidelines and "
                "patient records. Not a medical device.", parents=[_common(defaults=True)])
    sub = p.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub, common)
    return p


def _quiet_libraries() -> None:
    """Without -v: no warnings, progress bars or info lines from the model libraries."""
    import warnings

    warnings.filterwarnings("ignore")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # bitsandbytes (imported by peft with an adapter) warns on every run that an optional CPU
    # kernel package is missing; we do not use 4-bit inference, so it is noise in the answer.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    if "transformers" in sys.modules:  # imported before main() (Python callers, tests): env vars came too late
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.overrides = [*args.overrides, *getattr(args, "sub_overrides", [])]
    level = logging.DEBUG if args.verbose else (logging.ERROR if args.quiet else logging.WARNING)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        _quiet_libraries()
    from rag.errors import CDSError

    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if args.verbose:
            raise
        message, code = _error_line(e, CDSError)
        print(f"error: {message}", file=sys.stderr)
        return code


def _error_line(e: Exception, cds_error: type[Exception]) -> tuple[str, int]:
    """One line saying what went wrong and what to do, and the exit code (2 input, 1 runtime)."""
    if isinstance(e, cds_error):
        return _one_line(str(e)), int(getattr(e, "exit_code", 1))
    if isinstance(e, PermissionError):
        return (f"permission denied: {_one_line(str(e.filename or e))}; check its permissions, or run as the "
                "owner of the files"), 2
    if isinstance(e, OSError):
        return (f"{_one_line(e.strerror or str(e))}: {_one_line(str(e.filename or ''))}; check the path, the "
                "free disk space and the folder's permissions (run with -v for the traceback)"), 1
    return (f"{type(e).__name__}: {_one_line(str(e).splitlines()[0] if str(e) else '')} "
            "(an unexpected failure: run with -v for the traceback and report it)"), 1


if __name__ == "__main__":
    sys.exit(main())

"""Errors a user can act on (the bottom layer, so sources and the runtime share them).

Every error the library raises for a user-facing reason is a :class:`CDSError` whose
message is one line saying what went wrong and what to do. The CLI prints it and exits
with :attr:`CDSError.exit_code` (2 for input/usage problems, 1 for runtime failures).
"""

from __future__ import annotations


class CDSError(Exception):
    """Base class: a one-line, actionable message and an exit code."""

    exit_code = 1


class InputError(CDSError):
    """The user's input (question, patient id, path, option) is wrong."""

    exit_code = 2


class ConfigError(InputError):
    """A config file or ``--set`` override is invalid."""


class UnknownPatientError(InputError):
    """A ``--patient`` id that has no records in the index."""


class IndexMissingError(InputError):
    """No index at the configured location."""


class IndexCorruptError(InputError):
    """The index exists but its files do not match its manifest."""


class EmbedderMismatchError(InputError):
    """The index was built with a different embedder than the one configured."""


class ModelNotAvailableError(InputError):
    """A model reference cannot be resolved to local files (not fetched, hub offline)."""


class SourceError(InputError):
    """A source file or folder cannot be read or parsed."""


class GenerationError(CDSError):
    """The generation backend failed at run time (a server unreachable or answering an error)."""

__all__ = [
    "CDSError",
    "ConfigError",
    "EmbedderMismatchError",
    "GenerationError",
    "IndexCorruptError",
    "IndexMissingError",
    "InputError",
    "ModelNotAvailableError",
    "SourceError",
    "UnknownPatientError",
]

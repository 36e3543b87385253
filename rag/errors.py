"""Errors a user can act on: defined in :mod:`corpora.errors` (the bottom layer, which the
source readers use too) and re-exported here, where the runtime and the CLI import them."""

from corpora.errors import *  # noqa: F403
from corpora.errors import __all__  # noqa: F401

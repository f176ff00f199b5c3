"""The errors a user can fix, which every job turns into a one-paragraph message and exit code 2
(``distrec.cli.run_job``), and that end a Ray run at once instead of after its retries.

They live here, below everything else, so that library code raises them without importing the
command-line layer. ``ConfigError`` (a bad config file or override) stays with the loader in
``distrec/config.py``.
"""

from __future__ import annotations

__all__ = ["UserError", "DataError"]


class UserError(RuntimeError):
    """A mistake the user can fix (wrong setting for this machine, unreachable cluster, ...)."""


class DataError(ValueError):
    """Stored data is missing, incomplete, corrupt or of the wrong kind; the message names the file."""

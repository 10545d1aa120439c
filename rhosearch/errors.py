"""The one exception type for mistakes a user can fix (bad flags, bad files, bad data).

`cli.py` prints it as a single line on stderr and exits with code 2; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["RhoSearchError"]


class RhoSearchError(Exception):
    """A user-facing error: the message says what is wrong and how to fix it."""

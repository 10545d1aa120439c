"""The one exception type for mistakes a user can fix (bad flags, bad files, bad data).

`cli.py` prints it as a single line on stderr and exits with code 2; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["RhoSearchError", "Terminated"]


class RhoSearchError(Exception):
    """A user-facing error: the message says what is wrong and how to fix it."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised by the CLI's handler as an interrupt: drivers stop as on Ctrl-C (running
    trials marked, the resume command printed) and exit with 143 instead of 130."""

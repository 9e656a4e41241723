"""The one exception type that the command line turns into a one-line error."""

from __future__ import annotations


class FitpilotError(Exception):
    """A user-facing error: the message says what was wrong and how to fix it.

    The command line prints it as one line (``error: <message>``) and exits
    with status 2, without a traceback.
    """

"""The one exception root that the command line turns into a one-line error, and its helpers.

A leaf module: it imports nothing of fitpilot, so every layer may use it.
"""

from __future__ import annotations


class FitpilotError(Exception):
    """A user-facing error: the message says what was wrong and how to fix it.

    The command line prints it as one line (``error: <message>``) and exits
    with status 2, without a traceback.
    """


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of ``exc``'s message, cut at ``limit`` characters (its type name if empty).

    For quoting a third-party exception inside a one-line :class:`FitpilotError`.
    """
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else type(exc).__name__

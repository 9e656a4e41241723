"""One module per command; each has ``register(app)``. Shared helpers live here.

The library below names Python parameters in its error messages (``pass
`resume=True` to continue it``); :func:`user_errors` rewrites the parameters of
the command into its flags (``--resume``), so a user of the command line reads
the options they can type.
"""

from __future__ import annotations

import functools
import os
import re
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import typer
from typer.models import ArgumentInfo, OptionInfo
from typer.utils import get_params_from_function

from fitpilot.errors import FitpilotError
from fitpilot.extras import require

F = TypeVar("F", bound=Callable[..., Any])

# A backticked parameter in a library message: `name`, `name=True`, `name='ray'`.
_PARAMETER = re.compile(r"`([A-Za-z_]\w*)(?:=([^`]*))?`")


def fail(message: str) -> typer.Exit:
    """Print ``error: message`` on stderr and return the exit (status 2) to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def user_errors(function: F) -> F:
    """Turn :class:`FitpilotError` into a one-line message and exit status 2.

    Backticked parameter names of ``function`` in the message become its
    command-line flags (see :func:`flag_wording`).
    """

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except FitpilotError as exc:
            raise fail(flag_wording(str(exc), command_flags(function))) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def needs(*extras: str) -> Callable[[F], F]:
    """Check, before the command runs, that its optional extras are installed: a missing one
    is a one-line error naming the extra to install (under :func:`user_errors`)."""

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for extra in extras:
                require(extra, f"fitpilot {function.__name__}")
            return function(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def command_flags(function: Callable[..., Any]) -> dict[str, tuple[str, str | None]]:
    """``{parameter: (flag, negative flag or None)}`` of a typer command function.

    An option's flag is its first declared long name (``--n-envs``), else the one
    typer derives (``--eval-every``); a bool option without declared names has
    the negative ``--no-<name>``. An argument's "flag" is its metavar, e.g. ``DIRECTORY``.
    """
    flags: dict[str, tuple[str, str | None]] = {}
    for name, meta in get_params_from_function(function).items():
        info = meta.default
        if isinstance(info, ArgumentInfo):
            flags[name] = (info.metavar or name.upper(), None)
        elif isinstance(info, OptionInfo) and info.param_decls:
            long = [d for d in info.param_decls if d.startswith("--")] or info.param_decls
            positive, _, negative = long[0].partition("/")
            flags[name] = (positive, negative or None)
        else:
            derived = "--" + name.replace("_", "-")
            flags[name] = (derived, f"--no-{derived[2:]}" if meta.annotation is bool else None)
    return flags


def flag_wording(message: str, flags: Mapping[str, tuple[str, str | None]]) -> str:
    """``message`` with each backticked parameter of ``flags`` written as the flag to type.

    `` `lr_factors` `` -> ``--lr-factors``; `` `resume=True` `` -> ``--resume``;
    `` `progress=False` `` -> ``--no-progress``; `` `backend='ray'` `` -> ``--backend ray``.
    Other backticked names (not parameters of the command) are left as they are.
    """

    def flag(match: re.Match[str]) -> str:
        name, value = match.groups()
        if name not in flags:
            return match.group(0)
        positive, negative = flags[name]
        if value is None or value == "True":
            return positive
        if value == "False":
            return negative or match.group(0)
        return f"{positive} {value.strip(chr(39) + chr(34))}"

    return _PARAMETER.sub(flag, message)


def check_writable(folder: Path, option: str) -> None:
    """Raise :class:`FitpilotError` unless files can be created in ``folder`` (``option``'s value).

    ``folder`` need not exist: then its nearest existing parent must take a new
    folder. The probe is a temporary file, deleted at once, so nothing is left behind.
    """
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "is" if existing == folder else f"is inside {existing}, which is"
        raise FitpilotError(f"{option} {folder} {where} a file, not a folder; give a folder")
    try:
        handle, probe = tempfile.mkstemp(dir=existing, prefix=".fitpilot-probe-")
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise FitpilotError(
            f"{option} {folder} is not writable ({exc.strerror or exc}); give a folder you "
            f"can write to"
        ) from None


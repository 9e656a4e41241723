"""The ``fitpilot`` console script: the command line, or one line saying what to install.

A core install (``pip install fitpilot``: the callback only) has no command line; this
entry point imports nothing it lacks before saying so.
"""

from __future__ import annotations

import sys

from fitpilot.extras import CLI_MODULES, missing_modules


def main() -> None:
    """Console-script entry point: run :mod:`fitpilot.cli`, or explain in one line."""
    missing = missing_modules(CLI_MODULES)
    if missing:
        print(
            f"error: the fitpilot command line needs an extra ({', '.join(missing)} not "
            f"installed): pip install 'fitpilot[train]' to train, 'fitpilot[benchmark]' to "
            f"benchmark, or 'fitpilot[all]'",
            file=sys.stderr,
        )
        sys.exit(2)
    from fitpilot.cli import main as run  # typer and the commands: present now

    run()

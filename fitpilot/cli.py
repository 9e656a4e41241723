"""The ``fitpilot`` command line. Each command lives in ``fitpilot/commands/<name>.py``."""

from __future__ import annotations

import importlib

import typer

from fitpilot.runtime import quiet_environment

quiet_environment()

app = typer.Typer(
    name="fitpilot",
    help="A learned training controller for Keras: train it, deploy it, benchmark it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)



@app.callback()
def _root() -> None:
    """A learned training controller for Keras: train it, deploy it, benchmark it."""


# Commands register themselves on `app`, in this order in `fitpilot --help`.
COMMAND_MODULES = ["tasks", "train", "benchmark", "report", "recipe"]

for _name in COMMAND_MODULES:
    importlib.import_module(f"fitpilot.commands.{_name}").register(app)


def main() -> None:
    """Console-script entry point."""
    app()

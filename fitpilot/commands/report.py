"""``fitpilot report DIR``: rebuild a benchmark's report from its results store alone."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fitpilot.commands import check_writable, user_errors
from fitpilot.experiments.report import write_report


def register(app: typer.Typer) -> None:
    app.command("report")(report)


@user_errors
def report(
    directory: Annotated[Path, typer.Argument(help="The --out directory of `fitpilot benchmark`.")],
) -> None:
    """Write DIR/report.md and its plots from DIR/runs.jsonl (any protocol version)."""
    check_writable(directory, "DIRECTORY")
    result = write_report(directory)
    if result.warning:
        typer.echo(result.warning, err=True)
    typer.echo(f"report: {result.path}")

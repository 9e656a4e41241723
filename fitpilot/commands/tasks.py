"""``fitpilot tasks``: list the tasks of a suite or an import path."""

from __future__ import annotations

from typing import Annotated

import typer

from fitpilot.commands import checked_tasks, user_errors

SUITE_HELP = "Built-in suite: train or holdout."
TASKS_HELP = "Import path package.module:NAME of a TrainingTask or a list of them."


def register(app: typer.Typer) -> None:
    app.command("tasks")(tasks)


@user_errors
def tasks(
    suite: Annotated[str | None, typer.Option("--suite", help=SUITE_HELP)] = None,
    tasks: Annotated[str | None, typer.Option("--tasks", help=TASKS_HELP)] = None,
) -> None:
    """List tasks, one line each: name, kind, data sizes, budget, default learning rate.

    Tasks from an import path are checked first (their model is built and run
    on two rows), so a task that does not fit its data fails here, not mid-run.
    """
    for task in checked_tasks(suite, tasks, default="train"):
        data = task.data()
        sizes = f"{len(data.train)}/{len(data.validation)}/{len(data.test)}"
        typer.echo(
            f"{task.name:<20} {task.kind:<14} train/val/test {sizes:<13} "
            f"epochs {task.epochs:<3} batch {task.batch_size:<3} "
            f"{task.optimizer_name:<7} lr {task.learning_rate:g}"
        )

"""``fitpilot tasks``: list the tasks of a suite or an import path."""

from __future__ import annotations

from typing import Annotated

import typer

from fitpilot.commands import needs, user_errors
from fitpilot.envs.loading import check_spec, resolve_tasks
from fitpilot.envs.tasks import TrainingTask
from fitpilot.runtime import configure

SUITE_HELP = (
    "Built-in suite: train, train_v2, validation, holdout or real (real needs the data extra)."
)
TASKS_HELP = "Import path package.module:NAME of a TrainingTask or a list of them."


def register(app: typer.Typer) -> None:
    app.command("tasks")(tasks)


@user_errors
@needs("benchmark")
def tasks(
    suite: Annotated[str | None, typer.Option("--suite", help=SUITE_HELP)] = None,
    tasks: Annotated[str | None, typer.Option("--tasks", help=TASKS_HELP)] = None,
) -> None:
    """List tasks, one line each: name, kind, data sizes, budget, default learning rate.

    Tasks from an import path are checked first (their model is built and run
    on two rows), so a task that does not fit its data fails here, not mid-run.
    """
    for task in _checked_tasks(suite, tasks):
        data = task.data()
        sizes = f"{len(data.train)}/{len(data.validation)}/{len(data.test)}"
        typer.echo(
            f"{task.name:<20} {task.kind:<14} train/val/test {sizes:<13} "
            f"epochs {task.epochs:<3} batch {task.batch_size:<3} "
            f"{task.optimizer_name:<7} lr {task.learning_rate:g}"
        )


def _checked_tasks(suite: str | None, tasks: str | None) -> list[TrainingTask]:
    """The tasks of ``--suite`` / ``--tasks`` (else the train suite), checked first.

    An import path's typo is found before TensorFlow loads; then TensorFlow is
    configured and each task's model is built and run on two rows of its data.
    Built-in suites are trusted. (``train`` and ``benchmark`` run the same check
    in :func:`~fitpilot.agents.train.train` and ``plan_benchmark``.)
    """
    spec = tasks or suite or "train"
    check_spec(spec)
    if ":" in spec:
        configure()
    return resolve_tasks(suite, tasks, check=True)

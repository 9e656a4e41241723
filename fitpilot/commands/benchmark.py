"""``fitpilot benchmark``: the learned controller against Keras' heuristic callbacks.

The protocol is BENCHMARK.md's; the work is in :mod:`fitpilot.experiments`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fitpilot.commands import user_errors
from fitpilot.commands.tasks import SUITE_HELP, TASKS_HELP


def register(app: typer.Typer) -> None:
    app.command("benchmark")(benchmark)


@user_errors
def benchmark(
    controller: Annotated[
        str,
        typer.Option("--controller", help="Controller bundle (controller.zip) or 'pretrained'."),
    ] = "pretrained",
    suite: Annotated[str | None, typer.Option("--suite", help=SUITE_HELP)] = None,
    tasks: Annotated[str | None, typer.Option("--tasks", help=TASKS_HELP)] = None,
    seeds: Annotated[int, typer.Option("--seeds", help="Seeds per cell (3+ to publish).")] = 3,
    lr_factors: Annotated[
        str,
        typer.Option(
            "--lr-factors", help="Starting learning rates, as factors of the task default."
        ),
    ] = "0.1,1,10",
    strategies: Annotated[
        str | None,
        typer.Option("--strategies", help="Comma list of strategies (default: all of them)."),
    ] = None,
    oracle_grid: Annotated[
        int,
        typer.Option(
            "--oracle-grid",
            help="Constant learning rates of the hindsight oracle, "
            "log-spaced over 4 decades around the default (0: no oracle; 7+ to publish).",
        ),
    ] = 7,
    out: Annotated[
        Path, typer.Option("--out", help="Directory of the results store and report.")
    ] = Path("fitpilot-benchmark"),
    resume: Annotated[bool, typer.Option("--resume", help="Continue the store in --out.")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Delete the store in --out first.")
    ] = False,
    jobs: Annotated[int, typer.Option("--jobs", help="Parallel worker processes.")] = 1,
) -> None:
    """Train every strategy on every cell (task x start lr x seed), store the runs, report."""
    from fitpilot import __version__
    from fitpilot.envs.tasks import resolve_tasks
    from fitpilot.experiments.benchmark import WorkerConfig, default_threads, run_benchmark
    from fitpilot.experiments.settings import (
        BenchmarkError,
        Settings,
        TaskInfo,
        oracle_factors,
        parse_lr_factors,
        parse_strategies,
    )

    names = parse_strategies(strategies)
    factors = parse_lr_factors(lr_factors)
    oracle_factors(oracle_grid)  # validates
    if seeds < 1:
        raise BenchmarkError(f"--seeds must be at least 1, not {seeds}")
    if jobs < 1:
        raise BenchmarkError(f"--jobs must be at least 1, not {jobs}")
    if resume and force:
        raise BenchmarkError("give --resume or --force, not both")
    task_list = resolve_tasks(suite, tasks, default="holdout")
    task_source = tasks or suite or "holdout"

    controller_source = controller_hash = None
    if "learned" in names:
        from fitpilot.experiments.runs import controller_hash as hash_of

        controller_source = (
            controller if controller == "pretrained" else str(Path(controller).resolve())
        )
        controller_hash = hash_of(controller_source)

    settings = Settings(
        tasks=tuple(TaskInfo.of(t) for t in task_list),
        strategies=tuple(names),
        lr_factors=tuple(factors),
        seeds=seeds,
        oracle_grid=oracle_grid,
        controller=controller_hash,
        fitpilot_version=__version__,
        task_source=task_source,
        controller_source=controller if "learned" in names else "",
    )
    cells = len(task_list) * seeds * len(factors)
    typer.echo(
        f"benchmark: {len(task_list)} task(s) x {seeds} seed(s) x {len(factors)} lr factor(s) = "
        f"{cells} cells; {len(names)} strategies + {oracle_grid} oracle lrs per task and seed = "
        f"{len(settings.run_keys())} runs; {jobs} job(s); store {out / 'runs.jsonl'}",
        err=True,
    )
    config = WorkerConfig(task_source, controller_source, controller_hash, default_threads(jobs))
    report = run_benchmark(
        settings,
        config,
        out,
        jobs=jobs,
        resume=resume,
        force=force,
        echo=lambda line: typer.echo(line, err=True),
    )
    typer.echo(f"report: {report}")

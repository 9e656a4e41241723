"""``fitpilot benchmark``: the learned controller against what a careful user does instead
(Keras' heuristics, a range test, Prodigy, the rival rules), from tuned starting rates.

The protocol is docs/benchmark.md's (v3); the work, checks included, is in
:func:`fitpilot.experiments.benchmark.plan_benchmark` and ``run_benchmark``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fitpilot.commands import check_writable, needs, user_errors
from fitpilot.commands.ray_options import Backend, RayAddress, WorkerCpus, WorkerMemory
from fitpilot.commands.tasks import SUITE_HELP, TASKS_HELP
from fitpilot.experiments.benchmark import plan_benchmark, run_benchmark
from fitpilot.experiments.strategies import strategy_names
from fitpilot.ray_backend import RayOptions, ray_options, session


def register(app: typer.Typer) -> None:
    app.command("benchmark")(benchmark)


@user_errors
@needs("benchmark")
def benchmark(
    controller: Annotated[
        str,
        typer.Option("--controller", help="Controller bundle (controller.zip) or 'pretrained'."),
    ] = "pretrained",
    suite: Annotated[str | None, typer.Option("--suite", help=SUITE_HELP)] = None,
    tasks: Annotated[str | None, typer.Option("--tasks", help=TASKS_HELP)] = None,
    seeds: Annotated[int, typer.Option("--seeds", help="Seeds per cell (3+ to publish).")] = 3,
    lr_reference: Annotated[
        str,
        typer.Option(
            "--lr-reference",
            help="What the starting factors multiply: 'tuned' (the grid's constant rate with "
            "the best validation loss; the default) or 'default' (the task's own rate, "
            "protocol v1's reference).",
        ),
    ] = "tuned",
    lr_factors: Annotated[
        str,
        typer.Option(
            "--lr-factors", help="Starting learning rates, as factors of the reference rate."
        ),
    ] = "0.1,1,10",
    strategies: Annotated[
        str | None,
        typer.Option(
            "--strategies",
            help=f"Comma list of strategies (default: all of them: {', '.join(strategy_names())}).",
        ),
    ] = None,
    oracle_grid: Annotated[
        int,
        typer.Option(
            "--oracle-grid",
            help="Constant learning rates of the grid (hindsight oracle and tuned rate), "
            "log-spaced over 4 decades around the default (0: none, only with --lr-reference "
            "default; 7+ to publish).",
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
    reuse: Annotated[
        Path | None,
        typer.Option(
            "--reuse",
            help="The folder of a benchmark of the same tasks, seeds, factors and grid (of "
            "another controller): its runs that do not depend on the controller are copied, "
            "not run again.",
        ),
    ] = None,
    backend: Backend = "local",
    ray_address: RayAddress = None,
    worker_cpus: WorkerCpus = None,
    worker_memory: WorkerMemory = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Train every strategy on every cell (task x start lr x seed), store the runs, report.

    A run that fails (raises) is stored as failed and the others go on; the command
    ends with one line about them, and exits 1 only if every run failed.
    """
    check_writable(out, "--out")
    ray = ray_options(backend, ray_address, worker_cpus, worker_memory)
    settings, config = plan_benchmark(
        controller=controller,
        suite=suite,
        tasks=tasks,
        seeds=seeds,
        lr_factors=lr_factors,
        strategies=strategies,
        oracle_grid=oracle_grid,
        lr_reference=lr_reference,
        jobs=jobs,
        resume=resume,
        force=force,
        ray=ray,
    )
    cells = len(settings.tasks) * seeds * len(settings.lr_factors)
    typer.echo(
        f"benchmark: {len(settings.tasks)} task(s) x {seeds} seed(s) x "
        f"{len(settings.lr_factors)} lr factor(s) = {cells} cells; "
        f"{len(settings.strategies)} strategies + {oracle_grid} grid lrs per task and seed "
        f"= {len(settings.run_keys())} runs"
        + (" (+ grid extensions)" if settings.tuned else "")
        + f"; reference {settings.lr_reference}; {_workers(jobs, ray)}; "
        f"store {out / 'runs.jsonl'}",
        err=True,
    )
    with session(ray):
        result = run_benchmark(
            settings,
            config,
            out,
            jobs=jobs,
            resume=resume,
            force=force,
            echo=lambda line: typer.echo(line, err=True),
            progress=progress,
            ray=ray,
            reuse=reuse,
        )
    typer.echo(f"report: {result.report}")
    failures = result.failure_line()
    if failures:
        typer.echo(f"warning: {failures}", err=True)
    if result.all_failed:
        raise typer.Exit(1)


def _workers(jobs: int, ray: RayOptions | None) -> str:
    """``"2 job(s)"``, or ``"Ray workers of 1 CPU(s)"`` for the Ray backend."""
    if ray is None:
        return f"{jobs} job(s)"
    return f"Ray workers of {ray.worker_cpus:g} CPU(s)"

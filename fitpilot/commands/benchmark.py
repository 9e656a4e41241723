"""``fitpilot benchmark``: the learned controller against Keras' heuristic callbacks.

The protocol is BENCHMARK.md's; the work is in :mod:`fitpilot.experiments`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fitpilot.commands import check_writable, checked_tasks, user_errors
from fitpilot.commands.ray_options import Backend, RayAddress, WorkerCpus, WorkerMemory
from fitpilot.commands.tasks import SUITE_HELP, TASKS_HELP

if TYPE_CHECKING:
    from fitpilot.ray_backend import RayOptions


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
    backend: Backend = "local",
    ray_address: RayAddress = None,
    worker_cpus: WorkerCpus = None,
    worker_memory: WorkerMemory = None,
) -> None:
    """Train every strategy on every cell (task x start lr x seed), store the runs, report."""
    from fitpilot._version import __version__
    from fitpilot.envs.loading import resolve_tasks
    from fitpilot.experiments.benchmark import WorkerConfig, run_benchmark
    from fitpilot.experiments.settings import (
        BenchmarkError,
        Settings,
        TaskInfo,
        oracle_factors,
        parse_lr_factors,
        parse_strategies,
    )
    from fitpilot.ray_backend import ray_options, session
    from fitpilot.runtime import configure, default_threads

    check_writable(out, "--out")
    names = parse_strategies(strategies)
    factors = parse_lr_factors(lr_factors)
    oracle_factors(oracle_grid)  # validates
    if seeds < 1:
        raise BenchmarkError(f"--seeds must be at least 1, not {seeds}")
    if jobs < 1:
        raise BenchmarkError(f"--jobs must be at least 1, not {jobs}")
    if resume and force:
        raise BenchmarkError("give --resume or --force, not both")
    ray = ray_options(backend, ray_address, worker_cpus, worker_memory)
    if ray is not None and jobs != 1:
        raise BenchmarkError(
            "--jobs is for the local backend; with --backend ray the runs in parallel are "
            "the cluster's CPUs / --worker-cpus"
        )
    task_list = resolve_tasks(suite, tasks, default="holdout")
    task_source = tasks or suite or "holdout"

    threads = ray.threads if ray is not None else default_threads(jobs)
    configure(threads)  # before anything here imports TensorFlow: quiet, pools sized
    checked_tasks(suite, tasks, "holdout")  # as `fitpilot tasks` does, before any writing
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
        f"{len(settings.run_keys())} runs; {_workers(jobs, ray)}; store {out / 'runs.jsonl'}",
        err=True,
    )
    config = WorkerConfig(task_source, controller_source, controller_hash, threads)
    with contextlib.nullcontext() if ray is None else session(ray):
        report = run_benchmark(
            settings,
            config,
            out,
            jobs=jobs,
            resume=resume,
            force=force,
            echo=lambda line: typer.echo(line, err=True),
            ray=ray,
        )
    typer.echo(f"report: {report}")


def _workers(jobs: int, ray: RayOptions | None) -> str:
    """``"2 job(s)"``, or ``"Ray workers of 1 CPU(s)"`` for the Ray backend."""
    if ray is None:
        return f"{jobs} job(s)"
    return f"Ray workers of {ray.worker_cpus:g} CPU(s)"

"""Orchestration: plan the runs, skip the finished ones, run the rest, store them, write the report.

A benchmark runs in two phases (docs/benchmark.md): first the constant-rate grid
(extended at an edge for the tuned reference), which decides each task's
reference rate; then every strategy from that reference times each starting
factor. Each finished run is appended to the store at once, in this process,
so a killed benchmark resumes where it stopped.

With ``jobs == 1`` the runs execute in this process; otherwise in a pool of
``jobs`` *spawned* worker processes (never forked: TensorFlow does not survive
a fork), each of which sizes TensorFlow's threads before importing it and
exits if this process dies. Runs are handed out one at a time in task order,
so a worker reuses its compiled models.

This module does not import TensorFlow; :mod:`fitpilot.experiments.runs` does,
in whichever process runs the training.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import multiprocessing
import signal
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column

from fitpilot._version import __version__
from fitpilot.envs.loading import check_spec, resolve_tasks
from fitpilot.experiments.ray_execute import execute_on_ray
from fitpilot.experiments.reference_rate import grid_extensions, reference_rates
from fitpilot.experiments.report import write_report
from fitpilot.experiments.settings import (
    MIN_TUNED_GRID,
    BenchmarkError,
    RunOrder,
    RunRecord,
    Settings,
    TaskInfo,
    oracle_factors,
    parse_lr_factors,
    parse_lr_reference,
    parse_strategies,
)
from fitpilot.experiments.store import ResultsStore, reuse_runs
from fitpilot.experiments.strategies import is_factor_free, settings_of, strategy
from fitpilot.experiments.worker import WorkerConfig, init_worker, run_in_process, run_in_worker
from fitpilot.ray_backend import RayOptions
from fitpilot.runtime import configure, default_threads

#: Runs a sequence of orders; yields each record as soon as it is finished (any order).
Execute = Callable[[Sequence[RunOrder]], Generator[RunRecord, None, None]]


@contextlib.contextmanager
def local_pool(config: WorkerConfig, jobs: int, runs: int) -> Iterator[Execute]:
    """An :data:`Execute` on this machine: in this process if ``jobs == 1``, else a pool of
    ``min(jobs, runs)`` spawned workers, kept for every call within the block and ended
    (terminated, not waited for) when it exits."""
    if jobs <= 1:
        yield lambda orders: (run_in_process(config, order) for order in orders)
        return
    executor = ProcessPoolExecutor(
        max_workers=max(1, min(jobs, runs)),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=init_worker,
        initargs=(config,),
    )
    try:
        yield functools.partial(_run_in_pool, executor, jobs)
    finally:
        _terminate(executor)


def _run_in_pool(
    executor: ProcessPoolExecutor, jobs: int, orders: Sequence[RunOrder]
) -> Generator[RunRecord, None, None]:
    """Run ``orders`` in ``executor``'s workers.

    Interrupted (Ctrl-C, or SIGTERM under :func:`sigterm_as_interrupt`), the
    workers are terminated at once, without waiting for their runs in
    progress; the runs already finished are yielded first, then the
    ``KeyboardInterrupt`` goes on.
    """
    # Keep only a few runs queued per worker, so that the order of hand-out is the plan's.
    pending: set[Future[RunRecord]] = set()
    queue = iter(orders)
    try:
        for order in queue:
            pending.add(executor.submit(run_in_worker, order))
            if len(pending) >= 2 * jobs:
                break
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
                following = next(queue, None)
                if following is not None:
                    pending.add(executor.submit(run_in_worker, following))
    except KeyboardInterrupt:
        finished = [f for f in pending if f.done() and not f.cancelled() and not f.exception()]
        _terminate(executor)
        for future in finished:
            yield future.result()
        raise


def _terminate(executor: ProcessPoolExecutor) -> None:
    """Stop ``executor`` now: cancel queued runs, terminate (then kill) its worker processes.

    ``shutdown`` alone waits, at interpreter exit, for the runs in progress.
    """
    # _processes is private, but the only handle on the workers before Python 3.14's
    # ProcessPoolExecutor.terminate_workers().
    processes = list((getattr(executor, "_processes", None) or {}).values())
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=5)
        if process.is_alive():
            process.kill()
    executor.shutdown(wait=False, cancel_futures=True)
    # Before Python 3.12, the executor's exit hook can write to its manager thread's wakeup
    # pipe while that thread closes it (an "Exception ignored" traceback with EBADF at exit).
    # The workers are gone, so the thread ends at once: waiting for it leaves no race.
    manager = getattr(executor, "_executor_manager_thread", None)
    if manager is not None:
        manager.join(timeout=10)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises ``KeyboardInterrupt`` in the main thread, as Ctrl-C does.

    Only in the main thread (signals cannot be set elsewhere); the previous
    handler is restored on exit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def plan_benchmark(
    *,
    controller: str = "pretrained",
    suite: str | None = None,
    tasks: str | None = None,
    seeds: int = 3,
    lr_factors: str = "0.1,1,10",
    strategies: str | None = None,
    oracle_grid: int = 7,
    lr_reference: str = "tuned",
    jobs: int = 1,
    resume: bool = False,
    force: bool = False,
    ray: RayOptions | None = None,
) -> tuple[Settings, WorkerConfig]:
    """Check a benchmark's parameters and plan it: its settings and its workers' config.

    Text parameters are as a user types them (``lr_factors="0.1,1,10"``,
    ``strategies="constant,learned"`` or ``None`` for all). Configures
    TensorFlow's threads for this process (the controller's hash loads it).
    Raises :class:`BenchmarkError` naming the parameter that is wrong.
    """
    names = parse_strategies(strategies)
    factors = parse_lr_factors(lr_factors)
    reference = parse_lr_reference(lr_reference)
    oracle_factors(oracle_grid)  # validates
    if reference == "tuned" and oracle_grid < MIN_TUNED_GRID:
        raise BenchmarkError(
            f"the tuned `lr_reference` is chosen on the grid: `oracle_grid` must be at least "
            f"{MIN_TUNED_GRID} (7+ to publish), not {oracle_grid}; or pass `lr_reference` "
            f"'default'"
        )
    if seeds < 1:
        raise BenchmarkError(f"`seeds` must be at least 1, not {seeds}")
    if jobs < 1:
        raise BenchmarkError(f"`jobs` must be at least 1, not {jobs}")
    if resume and force:
        raise BenchmarkError("pass `resume=True` or `force=True`, not both")
    if ray is not None and jobs != 1:
        raise BenchmarkError(
            "`jobs` is for the local backend; with Ray the runs in parallel are the "
            "cluster's CPUs / `worker_cpus`"
        )
    task_source = tasks or suite or "holdout"
    check_spec(task_source)  # a typo in an import path, before TensorFlow loads
    threads = ray.threads if ray is not None else default_threads(jobs)
    configure(threads)  # before anything here imports TensorFlow: quiet, pools sized
    # Each task's model is run on two rows of its data (as `fitpilot tasks` does), so that a
    # model that does not fit its data is one line, before anything is written.
    task_list = resolve_tasks(suite, tasks, default="holdout", check=True)
    controller_source = digest = None
    needs_controller = any(strategy(name).needs_controller for name in names)
    if needs_controller:
        controller_source = (
            controller if controller == "pretrained" else str(Path(controller).resolve())
        )
        from fitpilot.experiments.runs import controller_hash  # imports TF: after configure

        digest = controller_hash(controller_source)
    settings = Settings(
        tasks=tuple(TaskInfo.of(t) for t in task_list),
        strategies=tuple(names),
        lr_factors=tuple(factors),
        seeds=seeds,
        oracle_grid=oracle_grid,
        controller=digest,
        fitpilot_version=__version__,
        task_source=task_source,
        controller_source=controller if needs_controller else "",
        lr_reference=reference,
        strategy_settings=settings_of(names),
    )
    return settings, WorkerConfig(task_source, controller_source, digest, threads)


def run_benchmark(
    settings: Settings,
    config: WorkerConfig,
    out: str | Path,
    jobs: int = 1,
    resume: bool = False,
    force: bool = False,
    echo: Callable[[str], None] = print,
    progress: bool = True,
    ray: RayOptions | None = None,
    execute: Execute | None = None,
    reuse: str | Path | None = None,
) -> BenchmarkResult:
    """Run every run of ``settings`` not yet in the store at ``out``; write the report.

    First the constant-rate grid (extended at an edge for the tuned reference,
    :mod:`fitpilot.experiments.reference_rate`), then every strategy from the
    reference rate times each starting factor. A :data:`FACTOR_FREE` strategy
    runs once per task and seed; its record is stored for every factor. A run that raises
    is stored as a failed run (its error's first line) and the others go on; with
    ``resume`` the failed runs of an earlier call run again.

    With ``ray`` options the runs are Ray tasks (:mod:`fitpilot.experiments.ray_execute`)
    instead of local processes, and ``jobs`` is not used; ``execute`` replaces
    both (tests). ``reuse``: the folder of a benchmark of the same tasks, seeds, factors
    and grid (another controller's): its runs that do not depend on the controller are
    copied instead of run again. Returns where the report is and which runs failed. Raises
    ``BenchmarkError`` for a store that cannot be used (other settings, or existing
    without ``resume``).
    """
    planned = settings.run_keys()
    with (
        sigterm_as_interrupt(),
        ResultsStore.open(out, settings, resume=resume, force=force) as store,
    ):
        if store.warning:
            echo(store.warning)
        if reuse is not None:
            echo(f"reused {reuse_runs(reuse, store, settings)} runs of {reuse}")
        done = sum(key in store.finished for key in planned)
        if resume and store.finished:
            echo(f"resuming: {done} of {len(planned)} runs already in {store.path}")
        todo = len({settings.runs_at(key) for key in planned if key not in store.finished})
        with (
            _progress_bar(len(planned), done, enabled=progress) as bar,
            _executor(config, jobs, todo, ray, execute) as run,
        ):
            _run_plan(settings, store, run, bar)
        ran = [r for r in store.runs if settings.runs_at(r.key) == r.key]
        failed = [r for r in ran if r.failed]
    return BenchmarkResult(write_report(out).path, len(ran), failed)


@dataclasses.dataclass(frozen=True)
class BenchmarkResult:
    """What :func:`run_benchmark` leaves: the report, the runs in the store (a factor-free
    strategy's counted once) and those of them that failed."""

    report: Path
    runs: int
    failed: list[RunRecord]

    def failure_line(self) -> str | None:
        """One line on the failed runs (``None`` if none): how many, per strategy, the first
        error, and how to retry them."""
        if not self.failed:
            return None
        per_strategy: dict[str, int] = {}
        for record in self.failed:
            per_strategy[record.strategy] = per_strategy.get(record.strategy, 0) + 1
        counts = ", ".join(f"{name} {count}" for name, count in per_strategy.items())
        first = self.failed[0]
        return (
            f"{len(self.failed)} run(s) failed ({counts}); first: {first.key.label()}: "
            f"{first.error}; they count as untrained in the report, and `--resume` runs them "
            f"again"
        )

    @property
    def all_failed(self) -> bool:
        return bool(self.failed) and len(self.failed) >= self.runs


@contextlib.contextmanager
def _executor(
    config: WorkerConfig, jobs: int, runs: int, ray: RayOptions | None, execute: Execute | None
) -> Iterator[Execute]:
    if execute is not None:
        yield execute
    elif ray is not None:
        yield functools.partial(execute_on_ray, config=config, options=ray)
    else:
        with local_pool(config, jobs, runs) as pool:
            yield pool


def _run_plan(
    settings: Settings, store: ResultsStore, execute: Execute, bar: _progress_bar
) -> None:
    """Grid, grid extensions, then strategies; every record stored as soon as it arrives."""

    def run(orders: list[RunOrder]) -> None:
        records = execute(orders)
        with contextlib.closing(records):  # ends the workers at once if interrupted
            for record in records:
                for stored in [record, *_copies(settings, record)]:
                    if stored.key not in store.finished:
                        store.append(stored)
                        bar.advance(stored.key.label() + (" FAILED" if stored.failed else ""))

    defaults = {task.name: task.learning_rate for task in settings.tasks}
    grid = [key for key in settings.grid_keys() if key not in store.finished]
    run([RunOrder(key, defaults[key.task] * key.lr_factor) for key in grid])
    while settings.tuned:
        extension = grid_extensions(store.runs, settings)
        if not extension:
            break
        missing = [key for key in extension if key not in store.finished]
        bar.extend(len(missing))
        run([RunOrder(key, defaults[key.task] * key.lr_factor) for key in missing])

    for record in list(store.runs):  # copies a kill left out
        for copy in _copies(settings, record):
            if copy.key not in store.finished:
                store.append(copy)
                bar.advance(copy.key.label())
    references = reference_rates(store.runs, settings)
    orders = {}
    for key in settings.strategy_keys():
        runs_at = settings.runs_at(key)
        if runs_at not in store.finished and runs_at not in orders:
            reference = references.get(key.task, defaults[key.task])
            factor = 1.0 if is_factor_free(key.strategy) else key.lr_factor
            orders[runs_at] = RunOrder(runs_at, reference * factor)
    run(list(orders.values()))


def _copies(settings: Settings, record: RunRecord) -> list[RunRecord]:
    """The records a factor-free strategy's run stands for at the other factors."""
    if not is_factor_free(record.strategy) or record.lr_factor != settings.lr_factors[0]:
        return []
    return [dataclasses.replace(record, lr_factor=f) for f in settings.lr_factors[1:]]


class _progress_bar:
    """A rich progress bar over runs on stderr, with elapsed time and estimated time left."""

    def __init__(self, total: int, completed: int, enabled: bool = True) -> None:
        self.total, self.completed, self.enabled = total, completed, enabled
        self._progress: Progress | None = None
        self._task: Any = None

    def __enter__(self) -> _progress_bar:
        if not self.enabled:
            return self
        self._progress = Progress(
            TextColumn("benchmark"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TextColumn("runs"),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            TextColumn(
                "{task.fields[last]}",
                style="dim",
                table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1),
            ),
            console=Console(stderr=True),
            speed_estimate_period=120,
        )
        self._progress.start()
        self._task = self._progress.add_task(
            "runs", total=self.total, completed=self.completed, last=""
        )
        return self

    def advance(self, label: str) -> None:
        """One more run finished: ``label``."""
        if self._progress is not None:
            self._progress.update(self._task, advance=1, last=label)

    def extend(self, runs: int) -> None:
        """``runs`` more runs planned (the grid's extensions)."""
        self.total += runs
        if self._progress is not None:
            self._progress.update(self._task, total=self.total)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

"""Orchestration: plan the runs, skip the finished ones, run the rest, store them, write the report.

With ``jobs == 1`` the runs execute in this process; otherwise in a pool of
``jobs`` *spawned* worker processes (never forked: TensorFlow does not survive
a fork), each of which sizes TensorFlow's threads before importing it. Runs
are handed out one at a time in task order, so a worker reuses its compiled
models; each finished run is appended to the store at once, in this process.

This module does not import TensorFlow; :mod:`fitpilot.experiments.runs` does,
in whichever process runs the training.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fitpilot.experiments.settings import RunKey, Settings
from fitpilot.experiments.store import ResultsStore

if TYPE_CHECKING:
    from fitpilot.ray_backend import RayOptions


@dataclass(frozen=True)
class WorkerConfig:
    """What a process needs to run benchmark runs (picklable, TensorFlow-free).

    ``task_source`` is a suite name or import path for ``load_tasks``;
    ``controller_source`` a bundle path or ``"pretrained"`` (``None``: no
    learned strategy); ``threads`` TensorFlow's intra-op threads per process.
    """

    task_source: str
    controller_source: str | None
    controller_hash: str | None
    threads: int = 1

    def runner(self) -> Any:
        """A :class:`~fitpilot.experiments.runs.Runner` (imports TensorFlow)."""
        from fitpilot.envs.loading import load_tasks
        from fitpilot.experiments.runs import Runner, controller_factory

        controller = controller_factory(self.controller_source) if self.controller_source else None
        return Runner(load_tasks(self.task_source), controller, self.controller_hash)


_RUNNER: Any = None


def init_worker(config: WorkerConfig) -> None:
    """Pool initializer: ignore Ctrl-C (the parent handles it), size TF threads, make the runner."""
    from fitpilot.runtime import configure

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure(threads=config.threads)
    global _RUNNER
    _RUNNER = config.runner()


def run_in_worker(key: RunKey) -> dict[str, Any]:
    """Pool task: one run in this worker's runner."""
    return _RUNNER.run(key)


def execute(keys: Sequence[RunKey], config: WorkerConfig, jobs: int) -> Iterator[dict[str, Any]]:
    """Run ``keys``; yield each run record as soon as it is finished (any order if ``jobs > 1``)."""
    if not keys:
        return
    if jobs <= 1:
        from fitpilot.runtime import configure

        configure(threads=config.threads)
        runner = config.runner()
        for key in keys:
            yield runner.run(key)
        return
    context = multiprocessing.get_context("spawn")
    executor = ProcessPoolExecutor(
        max_workers=min(jobs, len(keys)),
        mp_context=context,
        initializer=init_worker,
        initargs=(config,),
    )
    # Keep only a few runs queued per worker, so that the order of hand-out is the plan's.
    pending: set[Future[dict[str, Any]]] = set()
    queue = iter(keys)
    try:
        for key in queue:
            pending.add(executor.submit(run_in_worker, key))
            if len(pending) >= 2 * jobs:
                break
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
                next_key = next(queue, None)
                if next_key is not None:
                    pending.add(executor.submit(run_in_worker, next_key))
    finally:
        executor.shutdown(wait=False, cancel_futures=True)


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
) -> Path:
    """Run every run of ``settings`` not yet in the store at ``out``; write the report.

    With ``ray`` options the runs are Ray tasks (:mod:`fitpilot.experiments.ray_execute`)
    instead of local processes, and ``jobs`` is not used.

    Returns the path of ``report.md``. Raises ``BenchmarkError`` for a store
    that cannot be used (other settings, or existing without ``resume``).
    """
    from fitpilot.experiments.report import write_report

    with ResultsStore.open(out, settings, resume=resume, force=force) as store:
        if store.warning:
            echo(store.warning)
        plan = settings.run_keys()
        todo = [key for key in plan if key not in store.finished]
        if resume and store.finished:
            echo(f"resuming: {len(plan) - len(todo)} of {len(plan)} runs already in {store.path}")
        with _progress_bar(len(plan), len(plan) - len(todo), enabled=progress) as advance:
            if ray is None:
                records = execute(todo, config, jobs)
            else:
                from fitpilot.experiments.ray_execute import execute_on_ray

                records = execute_on_ray(todo, config, ray)
            for record in records:
                store.append(record)
                advance(RunKey.of(record).label())
    return write_report(out).path


class _progress_bar:
    """A rich progress bar over runs on stderr, with elapsed time and estimated time left."""

    def __init__(self, total: int, completed: int, enabled: bool = True) -> None:
        self.total, self.completed, self.enabled = total, completed, enabled
        self._progress: Any = None

    def __enter__(self) -> Callable[[str], None]:
        if not self.enabled:
            return lambda label: None
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
        task = self._progress.add_task("runs", total=self.total, completed=self.completed, last="")
        return lambda label: self._progress.update(task, advance=1, last=label)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


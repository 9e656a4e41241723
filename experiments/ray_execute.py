"""Benchmark runs as Ray tasks: the ``--backend ray`` counterpart of :func:`benchmark.execute`.

The unit of work is the same as the local backend's: one :class:`RunKey` (one
strategy, or one oracle learning rate, on one cell) per Ray task. Each
finished run is yielded as soon as :func:`ray.wait` reports it, and the caller
appends it to the results store at once, so a killed benchmark loses no
finished run and ``--resume`` skips them as before.

A run whose worker process dies (killed, out of memory, node lost) is retried
by Ray up to :data:`RUN_RETRIES` times; an exception raised by the run itself
is not retried (it would fail again).

Ray reuses a worker process for many tasks, so each process keeps the
:class:`~fitpilot.experiments.runs.Runner` it built (compiled models, initial
weights) for later runs of the same benchmark, as a local pool worker does.
TensorFlow's threads are sized from ``--worker-cpus`` before it is imported.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from fitpilot.errors import FitpilotError
from fitpilot.experiments.benchmark import WorkerConfig
from fitpilot.experiments.settings import BenchmarkError, RunKey
from fitpilot.ray_backend import RayOptions, check_capacity, connect, worker_slots

#: Times Ray re-runs a run whose worker process died.
RUN_RETRIES = 3
#: Runs queued per worker slot (the rest wait here, in plan order).
QUEUED_PER_SLOT = 2

_RUNNER: tuple[WorkerConfig, Any] | None = None


def run_in_process(config: WorkerConfig, key: RunKey) -> dict[str, Any]:
    """One run in this (Ray worker) process, with the runner kept from earlier runs."""
    global _RUNNER
    if _RUNNER is None or _RUNNER[0] != config:
        from fitpilot.runtime import configure

        configure(threads=config.threads)
        _RUNNER = (config, config.runner())
    return _RUNNER[1].run(key)


def execute_on_ray(
    keys: Sequence[RunKey], config: WorkerConfig, options: RayOptions
) -> Iterator[dict[str, Any]]:
    """Run ``keys`` as Ray tasks; yield each run record as it finishes (any order).

    ``config.threads`` should be ``options.threads``. Connects to Ray if this
    process is not connected yet (see :func:`fitpilot.ray_backend.connect`).
    """
    if not keys:
        return
    ray, _ = connect(options)
    check_capacity(ray, options, 1, "benchmark runs")
    remote = ray.remote(run_in_process).options(
        max_retries=RUN_RETRIES, retry_exceptions=False, **options.remote_options()
    )
    shared = ray.put(config)
    window = QUEUED_PER_SLOT * worker_slots(ray, options)
    queue = iter(keys)
    pending: dict[Any, RunKey] = {}

    def submit() -> None:
        key = next(queue, None)
        if key is not None:
            pending[remote.remote(shared, key)] = key

    try:
        for _ in range(window):
            submit()
        while pending:
            (done,), _ = ray.wait(list(pending), num_returns=1)
            key = pending.pop(done)
            record = _result(ray, done, key)
            submit()
            yield record
    finally:
        for ref in pending:
            with contextlib.suppress(Exception):  # already finished, or its worker gone
                ray.cancel(ref, force=True)


def _result(ray: Any, ref: Any, key: RunKey) -> dict[str, Any]:
    """The record behind ``ref``; a run's own user-facing error is raised as it is."""
    from ray.exceptions import NodeDiedError, OutOfMemoryError, RayTaskError, WorkerCrashedError

    try:
        return ray.get(ref)
    except RayTaskError as exc:
        if isinstance(exc.cause, FitpilotError):
            raise exc.cause from None
        raise
    except (WorkerCrashedError, NodeDiedError, OutOfMemoryError) as exc:
        hint = "give more --worker-memory, or " if isinstance(exc, OutOfMemoryError) else ""
        raise BenchmarkError(
            f"run {key.label()} lost its Ray worker {1 + RUN_RETRIES} times "
            f"({type(exc).__name__}); the finished runs are stored: {hint}add --resume "
            f"to try the rest again"
        ) from exc

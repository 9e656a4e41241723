"""Benchmark runs as Ray tasks: the Ray counterpart of :func:`benchmark.local_pool`.

The unit of work is the same as the local backend's: one :class:`RunOrder` (one
strategy, or one oracle learning rate, on one cell) per Ray task. Each
finished run is yielded as soon as :func:`ray.wait` reports it, and the caller
appends it to the results store at once, so a killed benchmark loses no
finished run and a resumed benchmark skips them as before.

A run whose worker process dies (killed, out of memory, node lost) is retried
by Ray up to :data:`RUN_RETRIES` times; an exception raised by the run itself
is not retried (it would fail again).

Ray reuses a worker process for many tasks, so each process keeps the
:class:`~fitpilot.experiments.runs.Runner` it built (compiled models, initial
weights) for later runs of the same benchmark: the runner cache of
:mod:`fitpilot.experiments.worker`, which a local pool worker uses too.
TensorFlow's threads are sized from ``--worker-cpus`` before it is imported.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Sequence
from typing import Any

from fitpilot.errors import FitpilotError
from fitpilot.experiments.settings import BenchmarkError, RunOrder, RunRecord
from fitpilot.experiments.worker import WorkerConfig, run_in_process
from fitpilot.ray_backend import RayOptions, check_capacity, connect, worker_slots

#: Times Ray re-runs a run whose worker process died.
RUN_RETRIES = 3
#: Runs queued per worker slot (the rest wait here, in plan order).
QUEUED_PER_SLOT = 2


def execute_on_ray(
    orders: Sequence[RunOrder], config: WorkerConfig, options: RayOptions
) -> Generator[RunRecord, None, None]:
    """Run ``orders`` as Ray tasks; yield each run record as it finishes (any order).

    ``config.threads`` should be ``options.threads``. Connects to Ray if this
    process is not connected yet (see :func:`fitpilot.ray_backend.connect`).
    """
    if not orders:
        return
    ray, _ = connect(options)
    check_capacity(ray, options, 1, "benchmark runs")
    remote = ray.remote(run_in_process).options(
        max_retries=RUN_RETRIES, retry_exceptions=False, **options.remote_options()
    )
    shared = ray.put(config)
    window = QUEUED_PER_SLOT * worker_slots(ray, options)
    queue = iter(orders)
    pending: dict[Any, RunOrder] = {}

    def submit() -> None:
        order = next(queue, None)
        if order is not None:
            pending[remote.remote(shared, order)] = order

    try:
        for _ in range(window):
            submit()
        while pending:
            (done,), _ = ray.wait(list(pending), num_returns=1)
            order = pending.pop(done)
            record = _result(ray, done, order)
            submit()
            yield record
    finally:
        for ref in pending:
            with contextlib.suppress(Exception):  # already finished, or its worker gone
                ray.cancel(ref, force=True)


def _result(ray: Any, ref: Any, order: RunOrder) -> RunRecord:
    """The record behind ``ref``; a run's own user-facing error is raised as it is."""
    from ray.exceptions import (  # ray is an optional extra: imported only when used
        NodeDiedError,
        OutOfMemoryError,
        RayTaskError,
        WorkerCrashedError,
    )

    try:
        return ray.get(ref)
    except RayTaskError as exc:
        if isinstance(exc.cause, FitpilotError):
            raise exc.cause from None
        raise
    except (WorkerCrashedError, NodeDiedError, OutOfMemoryError) as exc:
        hint = "give more `worker_memory`, or " if isinstance(exc, OutOfMemoryError) else ""
        raise BenchmarkError(
            f"run {order.label()} lost its Ray worker {1 + RUN_RETRIES} times "
            f"({type(exc).__name__}); the finished runs are stored: {hint}pass `resume=True` "
            f"to try the rest again"
        ) from exc

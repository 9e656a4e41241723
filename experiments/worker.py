"""What a process that runs benchmark runs holds: its config and ONE runner cache.

Both backends use it: the local pool's workers (:func:`init_worker`,
:func:`run_in_worker`), Ray's worker processes (:func:`run_in_process`) and
the main process with ``jobs == 1``. A process keeps the
:class:`~fitpilot.experiments.runs.Runner` it built (compiled models, initial
weights) for every later run of the same config.

A local pool worker also watches its parent: if the benchmark process dies
(SIGKILL included, which it cannot handle), the worker exits within
:data:`PARENT_POLL_SECONDS` instead of waiting on its task pipe for ever.

This module does not import TensorFlow: :func:`runner` configures its threads
first, then imports :mod:`fitpilot.experiments.runs`, which does.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fitpilot.envs.loading import load_tasks
from fitpilot.experiments.settings import RunOrder, RunRecord
from fitpilot.runtime import configure

if TYPE_CHECKING:
    from fitpilot.experiments.runs import Runner

#: How often a pool worker checks that its parent is still alive (seconds).
PARENT_POLL_SECONDS = 0.5


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


_RUNNER: tuple[WorkerConfig, Runner] | None = None


def runner(config: WorkerConfig) -> Runner:
    """This process's runner for ``config``: built on first use (sizes TF threads, imports it)."""
    global _RUNNER
    if _RUNNER is None or _RUNNER[0] != config:
        configure(threads=config.threads)  # before TensorFlow is imported, just below
        from fitpilot.experiments.runs import Runner, controller_factory  # imports TF

        source, tasks = config.controller_source, load_tasks(config.task_source)
        controller = controller_factory(source) if source else None
        _RUNNER = (config, Runner(tasks, controller, config.controller_hash))
    return _RUNNER[1]


def run_in_process(config: WorkerConfig, order: RunOrder) -> RunRecord:
    """One run in this process (a Ray worker, or the main one), with the cached runner."""
    return runner(config).run(order)


# --- the local pool --------------------------------------------------------------


def init_worker(config: WorkerConfig) -> None:
    """Pool initializer: exit with the parent, ignore Ctrl-C (the parent handles it), build the
    runner (which sizes TensorFlow's threads before importing it)."""
    watch_parent(os.getppid())
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    runner(config)


def run_in_worker(order: RunOrder) -> RunRecord:
    """Pool task: one run in this worker's runner (built by :func:`init_worker`)."""
    if _RUNNER is None:
        raise RuntimeError("run_in_worker called in a process that init_worker did not set up")
    return _RUNNER[1].run(order)


def watch_parent(parent: int, poll: float = PARENT_POLL_SECONDS) -> threading.Thread:
    """Start a daemon thread that ends this process (``os._exit(1)``) once ``parent`` is gone.

    A dead parent's children are re-parented, so ``os.getppid()`` changes; this
    works after SIGKILL, which the parent cannot handle, and wherever the main
    thread is blocked (a pipe read, or TensorFlow's C++ code).
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll)
        os._exit(1)

    thread = threading.Thread(target=watch, name="fitpilot-parent-watch", daemon=True)
    thread.start()
    return thread

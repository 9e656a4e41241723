"""Process set-up for TensorFlow (and torch, when it is loaded): quiet logs, sane threads.

TensorFlow's thread pools can only be sized before its first op, so call
:func:`configure` early in a process (the command line, each worker process
and the tests do). Importing this module does not import TensorFlow.

Only :func:`configure`, which fitpilot's own processes call, pins Keras to the
TensorFlow backend (the training environment and the benchmark run TensorFlow).
``import fitpilot`` leaves the user's Keras backend alone: the deployed callback
runs on any of them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator

_configured_threads: int | None = None


def quiet_environment() -> None:
    """Silence TensorFlow's C++ and Python start-up logs (idempotent, no TF import).

    Leaves ``KERAS_BACKEND`` and TensorFlow's numerics (oneDNN) alone: this runs at
    ``import fitpilot``, in the user's process.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.filterwarnings("ignore", message=r".*np\.find_common_type.*")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def default_threads(processes: int = 1) -> int:
    """Threads per process when ``processes`` share the machine (at least 1).

    ``FITPILOT_THREADS`` if set, else the cores shared out among ``processes``.
    """
    value = os.environ.get("FITPILOT_THREADS")
    if value:
        return max(1, int(value))
    return max(1, (os.cpu_count() or 1) // max(1, processes))


def configure(threads: int | None = None) -> int:
    """Quiet TensorFlow and size its thread pools (and torch's, if loaded) to ``threads``.

    For fitpilot's own processes (command line, environment and benchmark workers,
    tests): it also sets ``KERAS_BACKEND=tensorflow`` unless Keras is already loaded,
    since the environment and the benchmark run TensorFlow whatever ``keras.json`` says,
    and turns TensorFlow's oneDNN custom ops off (TensorFlow warns they change float results).

    Safe to call more than once: once TensorFlow has run an op its pools cannot
    change, and later calls keep the first size. Returns the thread count in force.
    """
    global _configured_threads
    quiet_environment()
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = "tensorflow"
    threads = threads or default_threads()
    if _configured_threads is None:
        with _native_stderr_silenced():
            import tensorflow as tf

            tf.get_logger().setLevel(logging.ERROR)
            try:
                tf.config.threading.set_intra_op_parallelism_threads(threads)
                tf.config.threading.set_inter_op_parallelism_threads(min(threads, 2))
                _configured_threads = threads
            except RuntimeError:  # TF already initialised by the caller: keep its pools
                _configured_threads = (
                    tf.config.threading.get_intra_op_parallelism_threads() or threads
                )
            tf.config.list_physical_devices()  # probes CUDA now, while stderr is silenced
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    return _configured_threads


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for the duration (Python exceptions still raise).

    TensorFlow's C++ start-up lines ("All log messages before absl::InitializeLog()",
    "Could not find cuda drivers", "failed call to cuInit") ignore
    ``TF_CPP_MIN_LOG_LEVEL``; this is the only way to keep them off the terminal.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def worker_start_method() -> str:
    """The start method of environment worker processes: ``forkserver`` where it exists,
    else ``spawn``; never ``fork`` (TensorFlow and torch do not survive one)."""
    import multiprocessing  # here: most processes never start workers

    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"

"""``FitEpochRunner``: any compiled Keras model and any ``fit`` input, one epoch per call.

The cross-check of the fast path (:class:`~fitpilot.envs.runner.FastEpochRunner`): it
drives the user's own ``model.fit`` in a worker thread, so its logs are ``fit``'s by
construction, and the tests compare the fast runner's against them. It is also the
generic path for data that is not in memory (a ``tf.data`` pipeline, a generator,
``validation_split``), reached with ``make_runner(task, fast=False)`` or built directly;
the built-in tasks always take the fast path.
"""

from __future__ import annotations

import queue
import threading
import weakref
from typing import Any

import keras
import tensorflow as tf

from fitpilot.envs.model_state import (
    Logs,
    ModelAccess,
    ModelResetter,
    RunnerError,
    WeightSnapshot,
    deterministic,
)
from fitpilot.envs.tasks import TrainingTask

_FIT_EPOCHS = 2**31 - 1  # fit runs "forever"; the runner decides when it stops


class _FitWorker:
    """One ``model.fit`` in a daemon thread, paused at every epoch end.

    A bridge callback (last in the callback list) posts each epoch's logs to
    ``outbox`` and waits on ``inbox`` for ``"go"`` (train the next epoch) or
    ``"stop"`` (set ``model.stop_training``, so ``fit`` ends cleanly and runs its
    callbacks' ``on_train_end``). Holds no reference to the runner, so dropping a
    runner mid-episode lets a finalizer stop the thread.
    """

    def __init__(self, model: keras.Model, fit_kwargs: dict[str, Any]) -> None:
        self.model = model
        self.fit_kwargs = fit_kwargs
        self.thread: threading.Thread | None = None  # while set, it waits in the bridge

    def next_epoch(self) -> Logs:
        """Let fit train one more epoch (starting fit if needed); the epoch's logs."""
        if self.thread is None:
            self.inbox: queue.Queue[str] = queue.Queue()
            self.outbox: queue.Queue[tuple[str, Any]] = queue.Queue()
            kwargs = dict(self.fit_kwargs)
            callbacks = [*(kwargs.get("callbacks") or []), _EpochBridge(self.inbox, self.outbox)]
            kwargs["callbacks"] = callbacks
            self.thread = threading.Thread(
                target=_run_fit,
                args=(self.model, kwargs, self.outbox),
                name="fitpilot-fit",
                daemon=True,
            )
            self.thread.start()
        else:
            self.inbox.put("go")
        kind, value = self.outbox.get()
        if kind == "logs":
            return value
        self.thread.join()
        self.thread = None
        if kind == "error":
            raise value
        raise RunnerError(
            "model.fit ended on its own (did another callback set model.stop_training?); "
            "reset the runner to start a new run"
        )

    def stop(self, timeout: float = 60.0) -> None:
        """End the running fit, if any, and wait for its thread (``timeout`` seconds)."""
        if self.thread is None:
            return
        self.inbox.put("stop")  # read by the bridge now if paused, else at the epoch end
        if threading.current_thread() is not self.thread:  # a finalizer may run anywhere
            self.thread.join(timeout)
        self.thread = None


def _run_fit(model: keras.Model, kwargs: dict[str, Any], outbox: queue.Queue) -> None:
    try:
        model.fit(**kwargs)
    except BaseException as exc:  # handed to the caller's thread and re-raised there
        outbox.put(("error", exc))
    else:
        outbox.put(("done", None))


class _EpochBridge(keras.callbacks.Callback):
    """Hands each epoch's logs to the runner (``outbox``) and waits for its go-ahead (``inbox``)."""

    def __init__(self, inbox: queue.Queue, outbox: queue.Queue) -> None:
        super().__init__()
        self.inbox, self.outbox = inbox, outbox

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.outbox.put(("logs", _float_logs(logs or {})))
        if self.inbox.get() == "stop":
            self.model.stop_training = True


def _float_logs(logs: dict[str, Any]) -> Logs:
    out = {}
    for name, value in logs.items():
        try:
            out[name] = float(value)
        except (TypeError, ValueError):
            continue  # non-numeric entries other callbacks may add
    return out


class FitEpochRunner(ModelAccess):
    """Wraps any compiled Keras model and any ``fit`` input, one epoch per call.

    Drives the user's own ``model.fit(**fit_kwargs)`` in a worker thread and pauses
    it at each epoch end (see :class:`_FitWorker`): ``run_epoch`` returns the logs
    ``fit`` gives its callbacks, so ``tf.data`` pipelines, generators and
    ``validation_split`` all work. ``epochs`` and ``initial_epoch`` are set by the
    runner (the caller decides when to stop); ``verbose`` defaults to 0.

    ``reset`` stops the running ``fit``, re-initialises weights and optimizer state
    in place (:class:`ModelResetter`, as the fast path) and seeds TensorFlow's
    global random seed, so ``fit``'s own shuffling repeats under the same seed; the
    next ``run_epoch`` starts a new ``fit``.

    Args:
        model: a compiled, built Keras model with a float learning rate.
        fit_kwargs: keyword arguments for ``model.fit`` (``x``, ``y``, ``batch_size``,
            ``validation_data`` or ``validation_split``, ``callbacks``...).
        task: the task this model belongs to, if any (the environment reads it).
        test_data: ``(x, y)`` or a dataset for :meth:`evaluate_test`, or ``None``.
    """

    @deterministic
    def __init__(
        self,
        model: keras.Model,
        fit_kwargs: dict[str, Any],
        task: TrainingTask | None = None,
        test_data: tuple[Any, Any] | Any | None = None,
    ) -> None:
        validation = fit_kwargs.get("validation_data") is not None
        if not (validation or fit_kwargs.get("validation_split")):
            raise RunnerError(
                "fit_kwargs give no validation data; the controller needs val_loss: pass "
                "validation_data=... or validation_split=..."
            )
        self.task = task
        self.model = model
        self.epoch = 0
        self.test_data = test_data
        self.resetter = ModelResetter(model)
        self._snapshot = WeightSnapshot(model)
        # shuffle does nothing for a dataset; False keeps fit from warning about it
        defaults = {"verbose": 0, "shuffle": not isinstance(fit_kwargs.get("x"), tf.data.Dataset)}
        kwargs = {**defaults, **fit_kwargs, "epochs": _FIT_EPOCHS}
        kwargs.pop("initial_epoch", None)
        self._worker = _FitWorker(model, kwargs)
        self._finalizer = weakref.finalize(self, self._worker.stop)

    @deterministic
    def reset(self, seed: int, learning_rate: float) -> None:
        """Stop the current fit; fresh weights from ``seed``, zeroed optimizer, new lr."""
        self._worker.stop()
        self.resetter.reset(seed, learning_rate)
        self._snapshot.clear()
        tf.random.set_seed(seed & 0x7FFFFFFF)
        self.epoch = 0

    @deterministic
    def run_epoch(self) -> Logs:
        """Let ``fit`` train and validate one more epoch; its epoch-end logs as floats.

        An exception raised inside ``fit`` is re-raised here.
        """
        if not self._finalizer.alive:
            raise RunnerError("the runner is closed; make a new one")
        logs = self._worker.next_epoch()
        self.epoch += 1
        return logs

    @deterministic
    def evaluate_test(self) -> Logs:
        """``model.evaluate`` on ``test_data`` (fit stays paused meanwhile)."""
        if self.test_data is None:
            raise RunnerError("no test data was given; pass test_data=(x, y) to FitEpochRunner")
        data = self.test_data
        x, y = data if isinstance(data, tuple) else (data, None)
        batch_size = None if y is None else self._worker.fit_kwargs.get("batch_size")
        logs = self.model.evaluate(x, y, batch_size=batch_size, verbose=0, return_dict=True)
        return _float_logs(logs)

    @deterministic
    def close(self) -> None:
        """End the fit thread cleanly (also done when the runner is garbage-collected)."""
        self._finalizer()

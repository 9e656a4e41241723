"""Epoch runners: train a Keras model one epoch per call, for the training environment.

Every runner meets :class:`EpochRunner`, the whole contract the environment relies on:

- :class:`FastEpochRunner` (here) for in-memory data (every :class:`TrainingTask`): a
  whole epoch (shuffled mini-batches, then validation) runs inside ONE compiled
  ``tf.function`` that calls Keras' own ``model.train_step`` / ``model.test_step``, so
  its logs equal ``model.fit``'s at a fraction of the cost (docs/design.md, "Speed");
- :class:`~fitpilot.envs.fit_runner.FitEpochRunner`, the cross-check of the fast path
  and the generic one for other inputs: the user's own ``model.fit`` in a thread;
- :class:`~fitpilot.envs.batched.BatchedCopy`, one of N copies trained in one call.

They share one set of machinery: :mod:`~fitpilot.envs.model_state` (reset a cached,
compiled model in place; snapshots) and :mod:`~fitpilot.envs.batches` (the stateless
epoch order and the batch loop).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import tensorflow as tf

from fitpilot.controller.actions import (
    check_settable_learning_rate,
)
from fitpilot.controller.probe import ProbeConfig, ProbeResult
from fitpilot.envs.batches import batch_loop, epoch_order, rows, split_tensors
from fitpilot.envs.fit_runner import FitEpochRunner
from fitpilot.envs.model_state import (
    Logs,
    ModelAccess,
    ModelResetter,
    RunnerError,
    WeightSnapshot,
    deterministic,
)
from fitpilot.envs.tasks import TrainingTask


class EpochRunner(Protocol):
    """What the environment needs from a runner: one call trains and validates one epoch."""

    task: TrainingTask | None
    epoch: int

    def reset(self, seed: int, learning_rate: float) -> None:
        """Fresh seeded weights and data order, fresh optimizer state, learning rate set."""

    def run_epoch(self) -> Logs:
        """Train one epoch, then validate; the logs ``model.fit`` gives at the epoch end."""

    @property
    def learning_rate(self) -> float:
        """The optimizer's current learning rate."""

    @learning_rate.setter
    def learning_rate(self, value: float) -> None: ...

    def remember_weights(self) -> None:
        """Snapshot the current weights (the best so far)."""

    def restore_weights(self) -> None:
        """Put the last snapshot back."""

    def evaluate_test(self) -> Logs:
        """``{"loss": ..., "<metric>": ...}`` on the test split."""

    def trainable_weights(self) -> list[Any]:
        """The model's trainable weights (variables or arrays): what featurizer v2 samples."""

    def scale_probe(self, config: ProbeConfig) -> tuple[ProbeResult, float]:
        """Controller v3: the scale probe from the run's initial weights, and their validation
        loss (the model left as it was)."""

    def track_optimizer_state(self) -> None:
        """From now on the snapshots also hold the optimizer's state (for a rollback).

        Called before :meth:`reset`."""

    def close(self) -> None:
        """Release threads and graphs; the runner is unusable afterwards."""


def make_runner(task: TrainingTask, fast: bool | None = None) -> EpochRunner:
    """The runner for ``task``: the fast in-graph path unless ``fast=False``.

    ``fast=None`` picks the fast path when the data is in memory, which is always
    the case for a :class:`TrainingTask`; ``fast=False`` drives ``model.fit`` instead
    (same logs, slower; useful to cross-check the fast path).
    """
    if fast is None or fast:
        return FastEpochRunner(task)
    data = task.data()
    fit_kwargs = dict(
        x=data.train.x,
        y=data.train.y,
        batch_size=task.batch_size,
        validation_data=(data.validation.x, data.validation.y),
        shuffle=True,
    )
    return FitEpochRunner(
        task.compiled_model(), fit_kwargs, task=task, test_data=(data.test.x, data.test.y)
    )


class FastEpochRunner(ModelAccess):
    """Runs an epoch of an in-memory :class:`TrainingTask` inside one compiled graph.

    The model is built and compiled once (``task.compiled_model()``); the epoch
    function loops over mini-batches in the graph (``tf.while_loop`` over the full
    batches, then the last partial batch, as ``fit`` does), calling Keras'
    ``model.train_step``, then validates with ``model.test_step`` at the same batch
    size; the logs come from ``model.get_metrics_result()`` like ``fit``'s. The data
    order of epoch ``e`` after ``reset(seed, ...)`` is a stateless shuffle seeded by
    ``(seed, e)``, and its methods run with TensorFlow op determinism on (the caller's
    setting is restored after each call: :func:`deterministic`), so a seed fixes the run.

    Args:
        task: the task; its data is held as tensors for the runner's lifetime.
        shuffle: shuffle the training rows every epoch (``False`` keeps their order,
            like ``fit(shuffle=False)``).
    """

    @deterministic
    def __init__(self, task: TrainingTask, shuffle: bool = True) -> None:
        self.task = task
        self.shuffle = shuffle
        self.epoch = 0
        self._seed = 0
        self.model = task.compiled_model()
        check_settable_learning_rate(self.model.optimizer, f"task {task.name!r}")
        self._train, self._validation, self._test = split_tensors(task)
        # Build the model, the compiled loss and metrics, and the optimizer eagerly:
        # no variable may be created inside the traced loop.
        self.model.test_step((self._train[0][:2], self._train[1][:2]))
        self.model.optimizer.build(self.model.trainable_variables)
        self.resetter = ModelResetter(self.model)
        self._snapshot = WeightSnapshot(self.model)
        self._keys: dict[str, list[str]] = {}  # log names per graph, recorded when traced
        self.epoch_function = tf.function(
            lambda seed: self._stacked("epoch", self._epoch_graph(seed)),
            input_signature=[tf.TensorSpec([2], tf.int64)],
            autograph=False,
        )
        self.test_function = tf.function(
            lambda: self._stacked("test", self._evaluate_graph(*self._test)), autograph=False
        )
        self.validation_function = tf.function(
            lambda: self._stacked("validation", self._evaluate_graph(*self._validation)),
            autograph=False,
        )
        self._closed = False

    # graph bodies (traced once each)

    def _batches(
        self,
        step: Callable[[tuple[tf.Tensor, tf.Tensor]], Any],
        x: tf.Tensor,
        y: tf.Tensor,
        order: tf.Tensor | None,
    ) -> None:
        """Call ``step((x_batch, y_batch))`` on every mini-batch, in ``order`` if given."""

        def one(state: tuple, start: Any, length: int) -> tuple:
            step((rows(x, start, length, order), rows(y, start, length, order)))
            return state

        batch_loop(one, (), int(x.shape[0]), self.task.batch_size)

    def _stacked(self, graph: str, logs: dict[str, tf.Tensor]) -> tf.Tensor:
        """The log values as one float64 vector (one host copy per call); names kept aside."""
        self._keys[graph] = list(logs)
        return tf.stack([tf.cast(value, tf.float64) for value in logs.values()])

    def _metrics_graph(self) -> dict[str, tf.Tensor]:
        return dict(self.model.get_metrics_result())

    def _evaluate_graph(self, x: tf.Tensor, y: tf.Tensor) -> dict[str, tf.Tensor]:
        self.model.reset_metrics()
        self._batches(self.model.test_step, x, y, None)
        return self._metrics_graph()

    def _epoch_graph(self, seed: tf.Tensor) -> dict[str, tf.Tensor]:
        x, y = self._train
        order = epoch_order(int(x.shape[0]), seed) if self.shuffle else None
        self.model.reset_metrics()
        self._batches(self.model.train_step, x, y, order)
        logs = self._metrics_graph()
        validation = self._evaluate_graph(*self._validation)
        logs.update({f"val_{name}": value for name, value in validation.items()})
        return logs

    # the EpochRunner interface

    @deterministic
    def reset(self, seed: int, learning_rate: float) -> None:
        """Fresh weights and data order from ``seed``, zeroed optimizer, ``learning_rate``."""
        self.resetter.reset(seed, learning_rate)
        self._snapshot.clear()
        self._seed = seed & 0x7FFFFFFFFFFFFFFF
        self.epoch = 0

    @deterministic
    def run_epoch(self) -> Logs:
        """Train one epoch and validate; NaN/inf come back as float nan/inf."""
        if self._closed:
            raise RunnerError("the runner is closed; make a new one")
        values = self.epoch_function(tf.constant([self._seed, self.epoch], tf.int64))
        self.epoch += 1
        return dict(zip(self._keys["epoch"], values.numpy().tolist(), strict=True))

    @deterministic
    def evaluate_test(self) -> Logs:
        values = self.test_function()
        return dict(zip(self._keys["test"], values.numpy().tolist(), strict=True))

    @deterministic
    def validation_loss(self) -> float:
        """The validation loss of the current weights, in the epoch graph's own pass."""
        values = self.validation_function()
        return dict(zip(self._keys["validation"], values.numpy().tolist(), strict=True))["loss"]

    def close(self) -> None:
        """Drop the compiled functions (the runner is unusable afterwards)."""
        self._closed = True
        self.epoch_function = self.test_function = None  # type: ignore[assignment]
        self.validation_function = None  # type: ignore[assignment]

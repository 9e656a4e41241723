"""N training runs of one task in one compiled call: the batched epoch runner.

:class:`BatchedEpochRunner` holds ``copies`` independent training runs of the same
:class:`TrainingTask` (same architecture, each with its own weights, optimizer state,
learning rate, seed and data order) and trains one epoch of all of them, with
validation, in ONE call. Each copy's train step is Keras' own stateless one
(``model.stateless_call``, ``stateless_compute_loss``, ``optimizer.stateless_apply``,
the compiled metrics' updates in a ``StatelessScope``), vectorised over the copies with
``tf.vectorized_map`` and compiled with XLA. On the 64-64-10 digits MLP this trains
16 copies in ~4.4x less CPU time than 16 single-run epochs (see
``benchmarks/env_speed.py --batched``).

Each copy follows the :class:`~fitpilot.envs.runner.FastEpochRunner` of the same seed:
weights re-drawn by the same :class:`ModelResetter`, the same stateless shuffle per
``(seed, epoch)``, the same batches and logs, within float tolerance (XLA fuses and
reorders float operations). :meth:`BatchedEpochRunner.copy` gives copy ``i`` as an
:class:`~fitpilot.envs.runner.EpochRunner` whose ``run_epoch`` returns the logs of the
last batched epoch, so :class:`~fitpilot.envs.env.KerasTrainingEnv` works on it
unchanged (``begin_step``, one batched :meth:`BatchedEpochRunner.run_epochs`, then
``end_step``).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import tensorflow as tf
from keras import StatelessScope

from fitpilot.controller.actions import check_settable_learning_rate
from fitpilot.controller.probe import ProbeConfig, ProbeResult
from fitpilot.envs.batches import batch_loop, epoch_order, rows, split_tensors
from fitpilot.envs.env import KerasTrainingEnv
from fitpilot.envs.model_state import Logs, ModelResetter, RunnerError, deterministic
from fitpilot.envs.runner import EpochRunner
from fitpilot.envs.tasks import TrainingTask
from fitpilot.keras_internals import (
    register_bitcast_pfor,
    stateless_optimizer,
    update_compiled_metrics,
)

# run_epochs trains at most copies // FEW copies with one call each, in groups of at least
# 2 * FEW copies: a call of one copy is compiled once more (seconds per task) and costs
# 1/5-1/2 of a call of 16 on small models (per-call overhead), about a full call of 4.
FEW = 4


class BatchedEpochRunner:
    """``copies`` training runs of ``task`` whose epochs run together, in one call.

    Args:
        task: an in-memory task; every copy trains its model on the task's data.
        copies: how many runs (N).
        shuffle: shuffle each copy's training rows every epoch, seeded per copy.
        jit_compile: compile the epoch with XLA (~4x faster epochs; the first call takes
            seconds longer). A model XLA cannot compile (e.g. max pooling's gradient under
            op determinism) falls back to the plain graph, with a warning. ``False``
            serves tests of the logic around it.

    Attributes:
        keys: the log names, in the order of the columns of :meth:`run_epochs`.
        learning_rates: ``float32[N]``, each copy's learning rate.
        epochs: ``int[N]``, epochs trained since each copy's reset.
        lone_calls: a few active copies get a call of one copy each (see ``FEW``).
    """

    @deterministic
    def __init__(
        self, task: TrainingTask, copies: int, shuffle: bool = True, jit_compile: bool = True
    ) -> None:
        if copies < 1:
            raise RunnerError(f"`copies` must be >= 1, got {copies}")
        register_bitcast_pfor()
        self.task, self.copies, self.shuffle = task, int(copies), shuffle
        self.model = task.compiled_model()
        check_settable_learning_rate(self.model.optimizer, f"task {task.name!r}")
        self._train, self._validation, self._test = split_tensors(task)
        model = self.model
        model.test_step((self._train[0][:2], self._train[1][:2]))  # builds loss and metrics
        model.optimizer.build(model.trainable_variables)
        self.resetter = ModelResetter(model)  # re-draws the template; copies load from it
        self.optimizer = stateless_optimizer(model.optimizer)
        self.optimizer.build(model.trainable_variables)
        self._lr_index = next(
            i for i, v in enumerate(self.optimizer.variables) if v is self.optimizer.learning_rate
        )
        self._fresh_optimizer = [tf.constant(v.numpy()) for v in self.optimizer.variables]
        n = self.copies

        def stacked(variables: list[Any]) -> list[tf.Variable]:
            return [
                tf.Variable(tf.zeros((n, *v.shape), v.dtype), trainable=False) for v in variables
            ]

        self._trainable = stacked(model.trainable_variables)
        self._non_trainable = stacked(model.non_trainable_variables)
        self._optimizer_state = stacked(self.optimizer.variables)
        # everything a copy's run is: weights, then optimizer state (for a rollback)
        self._state = self._trainable + self._non_trainable + self._optimizer_state
        self._best = stacked(
            model.trainable_variables + model.non_trainable_variables + self.optimizer.variables
        )
        self._host_weights: list[np.ndarray] | None = None  # all copies', read after a call
        self._moved: set[int] = set()  # copies whose weights changed since (reset, restore)
        self.learning_rates = np.zeros(n, np.float32)
        self.epochs = np.zeros(n, np.int64)
        self._seeds = np.zeros(n, np.int64)
        self._remember = np.zeros(n, bool)
        self._remembered = np.zeros(n, bool)
        self._logs = np.full((n, 0), np.nan)
        self.keys: list[str] = []
        self._test_keys: list[str] = []
        self.jit_compile = jit_compile
        self.lone_calls = n >= 2 * FEW  # see FEW
        self._compiled = False  # True once an epoch call succeeded
        self._make_epoch_function()
        self._load_function = tf.function(self._load_graph, autograph=False)
        self._restore_function = tf.function(self._restore_graph, autograph=False)
        self._test_function = tf.function(self._test_graph, autograph=False)
        self._weights_function = tf.function(
            lambda index: [v[index] for v in self._trainable], autograph=False
        )
        self._closed = False

    def _make_epoch_function(self) -> None:
        self._xla_epoch = tf.function(
            self._epoch_graph, autograph=False, jit_compile=self.jit_compile
        )
        self._epoch_function = tf.function(self._epoch_call, autograph=False)

    # -- one copy's stateless steps (traced inside tf.vectorized_map) ---------

    def _metrics_update(
        self, metrics: list[Any], loss: Any, x: Any, y: Any, y_pred: Any
    ) -> list[Any]:
        """The metric values after a batch, as Keras' ``train_step``/``test_step`` update them."""
        model = self.model
        mapping = list(zip(model.metrics_variables, metrics, strict=True))
        with StatelessScope(state_mapping=mapping) as scope:
            update_compiled_metrics(model, loss, x, y, y_pred)
        return [scope.get_current_value(v) for v in model.metrics_variables]

    def _train_step(self, state: tuple, x: Any, y: Any) -> tuple:
        """``model.train_step`` without side effects: (weights, optimizer, metrics) in and out."""
        model = self.model
        trainable, non_trainable, optimizer, metrics = state
        with tf.GradientTape() as tape:
            tape.watch(trainable)
            y_pred, non_trainable = model.stateless_call(
                trainable, non_trainable, x, training=True
            )
            loss, (_, non_trainable, metrics) = model.stateless_compute_loss(
                trainable, non_trainable, metrics, x, y, y_pred, training=True
            )
            scaled = self.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled, trainable)
        trainable, optimizer = self.optimizer.stateless_apply(optimizer, gradients, trainable)
        metrics = self._metrics_update(metrics, loss, x, y, y_pred)
        return trainable, non_trainable, optimizer, metrics

    def _test_step(self, state: tuple, x: Any, y: Any) -> list[Any]:
        """``model.test_step`` without side effects; the metric values after the batch."""
        model = self.model
        trainable, non_trainable, metrics = state
        y_pred, non_trainable = model.stateless_call(trainable, non_trainable, x, training=False)
        loss, (_, _, metrics) = model.stateless_compute_loss(
            trainable, non_trainable, metrics, x, y, y_pred, training=False
        )
        return self._metrics_update(metrics, loss, x, y, y_pred)

    def _results(self, metrics: list[Any]) -> tuple[list[str], Any]:
        """Log names and values (float64 vector) of one copy's metric state."""
        model = self.model
        with StatelessScope(state_mapping=list(zip(model.metrics_variables, metrics, strict=True))):
            logs = dict(model.get_metrics_result())
        return list(logs), tf.stack([tf.cast(v, tf.float64) for v in logs.values()])

    def _fresh_metrics(self, copies: int | None = None) -> list[Any]:
        shape = () if copies is None else (copies,)
        return [tf.zeros((*shape, *v.shape), v.dtype) for v in self.model.metrics_variables]

    # -- the batched epoch -----------------------------------------------------

    def _epoch_graph(
        self, trainable: list, non_trainable: list, optimizer: list, order: Any
    ) -> tuple:
        """One epoch of every copy (XLA): training in ``order`` ``[N, rows]``, then validation."""
        x, y = self._train
        n = int(order.shape[0])

        def train(state: tuple, start: Any, length: int) -> tuple:
            xb, yb = rows(x, start, length, order), rows(y, start, length, order)  # [N, length]
            return _map_copies(lambda a: self._train_step(a[0], a[1], a[2]), (state, xb, yb))

        state = (trainable, non_trainable, optimizer, self._fresh_metrics(n))
        state = batch_loop(train, state, int(x.shape[0]), self.task.batch_size)
        trainable, non_trainable, optimizer, metrics = state
        keys, train_logs = self._vector_results(metrics)
        val_keys, val_logs = self._vector_results(
            self._evaluate_all(trainable, non_trainable, *self._validation)
        )
        self.keys = keys + [f"val_{k}" for k in val_keys]
        logs = tf.concat([train_logs, val_logs], axis=1)
        return trainable, non_trainable, optimizer, logs

    def _evaluate_all(self, trainable: list, non_trainable: list, x: Any, y: Any) -> list:
        """Every copy's metric state after a test pass over ``(x, y)`` (shared data)."""
        def test(metrics: list, start: Any, length: int) -> list:
            xb, yb = rows(x, start, length), rows(y, start, length)
            return _map_copies(
                lambda a: self._test_step((a[0], a[1], a[2]), xb, yb),
                (trainable, non_trainable, metrics),
            )

        copies = int(trainable[0].shape[0])
        return batch_loop(test, self._fresh_metrics(copies), int(x.shape[0]),
                          self.task.batch_size)

    def _vector_results(self, metrics: list) -> tuple[list[str], Any]:
        keys: list[str] = []

        def one(m: list) -> Any:
            names, values = self._results(m)
            keys[:] = names
            return values

        values = _map_copies(one, metrics)
        return keys, values

    def _epoch_call(
        self, indices: Any, train: Any, seeds: Any, learning_rates: Any, remember: Any
    ) -> Any:
        """Snapshot the copies in ``remember``, then train one epoch of copies ``indices``.

        Args:
            indices: ``int32[k]``: the copies computed (all N, or one).
            train: ``bool[k]``: those whose state the epoch updates (the others keep
                theirs: a partial call costs the same as a full one).
            seeds: ``int64[k, 2]``, each computed copy's ``(seed, epoch)`` for its data order.
            learning_rates: ``float32[k]``.
            remember: ``bool[N]``: copies whose weights and optimizer state are snapshot first.

        Returns:
            ``float64[k, len(keys)]``: the epoch's logs, one row per computed copy.
        """
        stacked = (self._trainable, self._non_trainable, self._optimizer_state)
        for best, variable in zip(self._best, self._state, strict=True):
            best.assign(_select(remember, variable.read_value(), best.read_value()))
        before = [[tf.gather(v, indices) for v in variables] for variables in stacked]
        trainable, non_trainable, optimizer = (list(values) for values in before)
        optimizer[self._lr_index] = tf.cast(learning_rates, optimizer[self._lr_index].dtype)
        total, k = int(self._train[0].shape[0]), int(indices.shape[0])
        if self.shuffle:  # each copy's order, as its FastEpochRunner's
            order = tf.stack([epoch_order(total, seeds[i]) for i in range(k)])
        else:
            order = tf.tile(tf.range(total)[None], [k, 1])
        *after, logs = self._xla_epoch(trainable, non_trainable, optimizer, order)
        for variables, old, new in zip(stacked, before, after, strict=True):
            for variable, old_value, new_value in zip(variables, old, new, strict=True):
                variable.scatter_nd_update(indices[:, None], _select(train, new_value, old_value))
        return logs

    def _load_graph(self, index: Any, learning_rate: Any) -> None:
        """Copy ``index`` <- the template's weights, fresh optimizer state, ``learning_rate``."""
        model = self.model
        sources = list(model.trainable_variables) + list(model.non_trainable_variables)
        for stacked, source in zip(self._trainable + self._non_trainable, sources, strict=True):
            stacked.scatter_nd_update([[index]], tf.convert_to_tensor(source)[None])
        fresh = list(self._fresh_optimizer)
        fresh[self._lr_index] = tf.cast(learning_rate, fresh[self._lr_index].dtype)
        for stacked, value in zip(self._optimizer_state, fresh, strict=True):
            stacked.scatter_nd_update([[index]], value[None])

    def _restore_graph(self, index: Any) -> None:
        for stacked, best in zip(self._state, self._best, strict=True):
            stacked.scatter_nd_update([[index]], best[index][None])

    def _test_graph(self, index: Any) -> Any:
        """Copy ``index``'s test logs (float64 vector; names in ``_test_keys``)."""
        trainable = [v[index] for v in self._trainable]
        non_trainable = [v[index] for v in self._non_trainable]
        x, y = self._test

        def test(metrics: list, start: Any, length: int) -> list:
            xb, yb = rows(x, start, length), rows(y, start, length)
            return self._test_step((trainable, non_trainable, metrics), xb, yb)

        metrics = batch_loop(test, self._fresh_metrics(), int(x.shape[0]), self.task.batch_size)
        self._test_keys, values = self._results(metrics)
        return values

    # -- the Python side ---------------------------------------------------------

    @deterministic
    def reset_copy(self, index: int, seed: int, learning_rate: float) -> None:
        """Copy ``index`` starts afresh: the weights a FastEpochRunner reset with ``seed`` draws."""
        self._check_open()
        self.resetter.reset(seed, learning_rate)
        self._load_function(tf.constant(index), tf.constant(learning_rate, tf.float32))
        self.learning_rates[index] = learning_rate
        self._seeds[index] = seed & 0x7FFFFFFFFFFFFFFF
        self.epochs[index] = 0
        self._remember[index] = self._remembered[index] = False
        self._moved.add(index)

    @deterministic
    def run_epochs(self, active: np.ndarray | None = None) -> np.ndarray:
        """Train one epoch of the ``active`` copies (default: all) in one call.

        When only a few copies train (at most ``copies // FEW``, if ``lone_calls``), each
        gets a call of its own, of one copy.

        Returns ``float64[N, len(keys)]``, the epoch's logs per copy (NaN/inf as they
        come); rows of inactive copies are meaningless.
        """
        self._check_open()
        active = np.ones(self.copies, bool) if active is None else np.asarray(active, bool)
        if self.lone_calls and 0 < active.sum() <= self.copies // FEW:
            # a few copies (new episodes' first epochs): a call of one copy each is cheaper
            rows = {i: self._call([i], [True])[0] for i in np.flatnonzero(active)}
            if self._logs.shape != (self.copies, len(self.keys)):
                self._logs = np.full((self.copies, len(self.keys)), np.nan)
            for index, row in rows.items():
                self._logs[index] = row
        else:
            self._logs = self._call(np.arange(self.copies), active)
        self.epochs[active] += 1
        return self._logs

    def _call(self, indices: Any, train: Any) -> np.ndarray:
        """One epoch call for copies ``indices`` (see :meth:`_epoch_call`); their logs."""
        indices = np.asarray(indices, np.int32)
        seeds = np.stack([self._seeds[indices], self.epochs[indices]], axis=1)
        arguments = (
            tf.constant(indices),
            tf.constant(np.asarray(train, bool)),
            tf.constant(seeds, tf.int64),
            tf.constant(self.learning_rates[indices]),
            tf.constant(self._remember),
        )
        self._remembered |= self._remember  # the snapshots are taken first in the call
        self._remember[:] = False
        self._host_weights = None
        self._moved.clear()
        try:
            logs = self._epoch_function(*arguments).numpy()
        except (tf.errors.UnimplementedError, tf.errors.InvalidArgumentError) as exc:
            if self._compiled or not self.jit_compile:
                raise
            warnings.warn(
                f"task {self.task.name!r}: XLA cannot compile its batched epoch "
                f"({type(exc).__name__}); it runs uncompiled, several times slower",
                stacklevel=3,
            )
            self.jit_compile = False
            self._make_epoch_function()
            logs = self._epoch_function(*arguments).numpy()
        self._compiled = True
        return logs

    def logs(self, index: int) -> Logs:
        """Copy ``index``'s logs of the last :meth:`run_epochs` call."""
        return dict(zip(self.keys, self._logs[index].tolist(), strict=True))

    @deterministic
    def remember(self, index: int) -> None:
        """Snapshot copy ``index``'s weights (done at the start of the next call)."""
        self._remember[index] = True

    @deterministic
    def restore(self, index: int) -> None:
        """Put copy ``index``'s last snapshot back."""
        if self._remember[index]:  # the snapshot would be the current weights
            self._remember[index] = False
            self._remembered[index] = True
            return
        if not self._remembered[index]:
            raise RunnerError("restore_weights() called before remember_weights()")
        self._restore_function(tf.constant(index))
        self._moved.add(index)

    def weights(self, index: int) -> list[np.ndarray]:
        """Copy ``index``'s trainable weights as numpy arrays, in the model's order.

        After an epoch call every copy's are read in one go (the envs of all copies ask);
        a copy reset or restored since is read alone.
        """
        self._check_open()
        if index in self._moved:
            return [w.numpy() for w in self._weights_function(tf.constant(index))]
        if self._host_weights is None:
            self._host_weights = [v.numpy() for v in self._trainable]
        return [w[index] for w in self._host_weights]

    @deterministic
    def evaluate_test(self, index: int) -> Logs:
        """``{"loss": ..., "<metric>": ...}`` of copy ``index`` on the test split."""
        self._check_open()
        values = self._test_function(tf.constant(index)).numpy()
        return dict(zip(self._test_keys, values.tolist(), strict=True))

    def copy(self, index: int) -> BatchedCopy:
        """Copy ``index`` as an :class:`~fitpilot.envs.runner.EpochRunner`."""
        return BatchedCopy(self, index)

    def close(self) -> None:
        """Drop the compiled functions (the runner is unusable afterwards)."""
        self._closed = True
        self._xla_epoch = self._epoch_function = self._test_function = None  # type: ignore
        self._weights_function = self._host_weights = None  # type: ignore

    def _check_open(self) -> None:
        if self._closed:
            raise RunnerError("the batched runner is closed; make a new one")


def _map_copies(function: Any, copies: Any) -> Any:
    """``tf.vectorized_map(function, copies)`` over the leading (copy) axis of ``copies``.

    A single copy is called directly: ``pfor`` fails on some models for a loop of one
    (a GRU's inner while loop: "Shapes must be equal rank").
    """
    if int(tf.nest.flatten(copies)[0].shape[0]) == 1:
        out = function(tf.nest.map_structure(lambda t: t[0], copies))
        return tf.nest.map_structure(lambda t: t[None], out)
    return tf.vectorized_map(function, copies)


def _select(mask: Any, new: Any, old: Any) -> Any:
    """``new`` where ``mask`` (``bool[N]``, broadcast over the trailing axes), else ``old``."""
    mask = tf.reshape(mask, [-1] + [1] * (new.shape.rank - 1))
    return tf.where(mask, new, old)


class BatchedCopy:
    """Copy ``index`` of a :class:`BatchedEpochRunner`, as an ``EpochRunner``.

    ``run_epoch`` returns the copy's logs of the group's last :meth:`run_epochs
    <BatchedEpochRunner.run_epochs>` call when that call trained it and they were not
    yet read; otherwise it trains the copy alone (a full batched call).
    """

    def __init__(self, group: BatchedEpochRunner, index: int) -> None:
        self.group, self.index, self.task = group, index, group.task
        self._read = group.epochs[index]  # epochs whose logs were read

    @property
    def epoch(self) -> int:
        return int(self.group.epochs[self.index])

    def reset(self, seed: int, learning_rate: float) -> None:
        self.group.reset_copy(self.index, seed, learning_rate)
        self._read = 0

    def run_epoch(self) -> Logs:
        if self.epoch == self._read:
            active = np.zeros(self.group.copies, bool)
            active[self.index] = True
            self.group.run_epochs(active)
        self._read = self.epoch
        return self.group.logs(self.index)

    @property
    def learning_rate(self) -> float:
        return float(self.group.learning_rates[self.index])

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        self.group.learning_rates[self.index] = value

    def remember_weights(self) -> None:
        self.group.remember(self.index)

    def restore_weights(self) -> None:
        self.group.restore(self.index)

    def track_optimizer_state(self) -> None:
        """Nothing to do: a copy's snapshots always hold its optimizer state too."""

    def scale_probe(self, config: ProbeConfig) -> tuple[ProbeResult, float]:
        raise RunnerError(
            "the batched copies do not run controller v3's scale probe (featurizer version 3); "
            "train it with vec='subproc' or 'dummy'"
        )

    def trainable_weights(self) -> list[np.ndarray]:
        return self.group.weights(self.index)

    def evaluate_test(self) -> Logs:
        return self.group.evaluate_test(self.index)

    def close(self) -> None:
        """Nothing to release: the group owns the models."""


class BatchedCopyEnv(KerasTrainingEnv):
    """A :class:`KerasTrainingEnv` on one copy of a batched group (its task only).

    Args:
        runner: the copy; the env trains it, and reads its logs from the group's calls.
        **env_kwargs: the other arguments of :class:`KerasTrainingEnv`.
    """

    def __init__(self, runner: BatchedCopy, **env_kwargs: Any) -> None:
        super().__init__(tasks=[runner.task], **env_kwargs)
        self.copy_runner = runner

    def _runner_for(self, task: TrainingTask) -> EpochRunner:
        return self.copy_runner

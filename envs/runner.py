"""Epoch runners: train a Keras model one epoch per call, for the training environment.

Two runners share one interface (:class:`EpochRunner`):

- :class:`FastEpochRunner` for in-memory data (every :class:`TrainingTask`): a whole
  epoch (shuffled mini-batches, then validation) runs inside ONE compiled
  ``tf.function`` that calls Keras' own ``model.train_step`` / ``model.test_step``, so
  its logs equal ``model.fit``'s at a fraction of the cost (see DESIGN.md, "Speed").
- :class:`FitEpochRunner` for anything else (a ``tf.data.Dataset``, a generator,
  ``validation_split``): drives the user's own ``model.fit`` in a worker thread and
  hands over the logs at each epoch end through a bridge callback.

Both reset a cached, compiled model in place (:class:`ModelResetter`): fresh seeded
weights and fresh optimizer state, without rebuilding or retracing anything.
"""

from __future__ import annotations

import functools
import queue
import threading
import weakref
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import keras
import numpy as np
import tensorflow as tf
from keras import ops

# The query and the off switch of op determinism are not in tf.config's public API (TF 2.9+).
from tensorflow.python.framework import config as tf_config

from fitpilot.controller.actions import (
    check_settable_learning_rate,
    get_learning_rate,
    set_learning_rate,
)
from fitpilot.envs.tasks import TrainingTask
from fitpilot.errors import FitpilotError

Logs = dict[str, float]
F = TypeVar("F", bound=Callable[..., Any])

# Variable name -> attribute of its layer holding the initializer, where the name is
# not simply ``<variable name>_initializer`` (kernel, bias, gamma, beta, moving_mean,
# moving_variance, embeddings, alpha all follow that rule).
_INITIALIZER_ALIASES = {
    "recurrent_kernel": "recurrent_initializer",
    "depthwise_kernel": "depthwise_initializer",
    "pointwise_kernel": "pointwise_initializer",
}
_SEED_STATE = "seed_generator_state"


class RunnerError(FitpilotError):
    """A model, optimizer or input that an epoch runner cannot work with."""


def deterministic(method: F) -> F:
    """Run ``method`` with TensorFlow op determinism on, then put the caller's setting back.

    A runner's ops need it (with the runner's seeds, a seed then fixes a run); the
    process must not keep it, or a user's own ``fit`` afterwards, with unseeded random
    ops (Dropout, shuffling), fails with "Random ops require a seed". The setting is
    process-wide: TensorFlow ops of other threads during the call see it too.
    """

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if tf_config.is_op_determinism_enabled():
            return method(*args, **kwargs)
        tf_config.enable_op_determinism()
        try:
            return method(*args, **kwargs)
        finally:
            tf_config.disable_op_determinism()

    return wrapper  # type: ignore[return-value]


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


# --- shared: re-initialise a built model and its optimizer in place ------------------


class ModelResetter:
    """Puts a built, compiled model back to a fresh seeded start, in place.

    Each model variable is re-drawn from the initializer its layer declares for it
    (``kernel_initializer`` for ``kernel``, ``recurrent_initializer`` for
    ``recurrent_kernel``, BatchNorm's ``moving_mean_initializer``...): the
    initializer is re-created with a seed generator that the reset seeds, so the
    same seed gives the same weights. An LSTM bias with ``unit_forget_bias`` gets
    ones for the forget gate, as Keras does; random-seed states (dropout) are
    re-seeded. Keras 3 variables do not keep their initializer, so a variable whose
    layer declares no Keras initializer for it (custom layers, LoRA weights, a plain
    function as initializer) falls back to the value it had when the resetter was
    made: it is reset, but not re-drawn per seed (listed in ``fallback_variables``).

    The optimizer's variables (iterations, momentums, velocities...) go back to the
    values they had right after ``optimizer.build`` (zeros for the built-in
    optimizers; with ``use_ema=True`` the moving averages restart from the weights
    at construction, not the re-drawn ones), the learning rate is set and the
    metrics are reset. All of it runs
    as one compiled function, traced once: nothing is rebuilt or retraced.
    """

    def __init__(self, model: keras.Model) -> None:
        self.model = model
        optimizer = model.optimizer
        check_settable_learning_rate(optimizer, f"model {model.name!r}")
        if not model.built:
            raise RunnerError(
                "the model is not built; call model.build(input_shape) or run it on one "
                "batch before wrapping it"
            )
        if not optimizer.built:
            optimizer.build(model.trainable_variables)
        self._generator = keras.random.SeedGenerator(0, name="fitpilot_reset_seed")
        # (variable, kind, payload): kind "initializer" (payload: re-seeded initializer),
        # "forget_bias" (the same, LSTM layout), "seed" (a seed state) or "value" (tensor).
        self._plans: list[tuple[keras.Variable, str, Any]] = []
        planned: set[int] = set()
        for layer in model._flatten_layers(include_self=True, recursive=True):
            for value in vars(layer).values():
                if isinstance(value, keras.Variable) and id(value) not in planned:
                    planned.add(id(value))
                    self._plans.append(self._plan(layer, value))
        for variable in model.variables:
            if id(variable) not in planned:
                planned.add(id(variable))
                self._plans.append(self._plan(None, variable))
        self.fallback_variables = [v.path for v, kind, _ in self._plans if kind == "value"]
        self._seed_states = sum(kind == "seed" for _, kind, _ in self._plans)
        lr_variable = optimizer.learning_rate
        self._optimizer_state = [
            (v, tf.constant(v.numpy())) for v in optimizer.variables if v is not lr_variable
        ]
        self.reset_function = tf.function(
            self._reset_graph,
            input_signature=[
                tf.TensorSpec([self._seed_states + 1, 2], tf.int64),
                tf.TensorSpec([], lr_variable.dtype),
            ],
            autograph=False,
        )

    def _plan(self, layer: Any, variable: keras.Variable) -> tuple[keras.Variable, str, Any]:
        name = variable.name
        if name == _SEED_STATE:
            return variable, "seed", None
        initializer = getattr(layer, _INITIALIZER_ALIASES.get(name, f"{name}_initializer"), None)
        if not isinstance(initializer, keras.initializers.Initializer):
            return variable, "value", tf.constant(variable.numpy())
        config = initializer.get_config()
        if "seed" in config:
            initializer = type(initializer).from_config({**config, "seed": self._generator})
        if name == "bias" and getattr(layer, "unit_forget_bias", False):
            return variable, "forget_bias", initializer
        return variable, "initializer", initializer

    def _reset_graph(self, seeds: tf.Tensor, learning_rate: tf.Tensor) -> None:
        self._generator.state.assign(ops.cast(seeds[0], self._generator.state.dtype))
        next_seed = 1
        for variable, kind, payload in self._plans:
            shape, dtype = tuple(variable.shape), variable.dtype
            if kind == "initializer":
                variable.assign(payload(shape, dtype=dtype))
            elif kind == "forget_bias":
                units = shape[0] // 4
                parts = [
                    payload((units,), dtype=dtype),
                    ops.ones((units,), dtype=dtype),
                    payload((2 * units,), dtype=dtype),
                ]
                variable.assign(ops.concatenate(parts))
            elif kind == "seed":
                variable.assign(ops.cast(seeds[next_seed], variable.dtype))
                next_seed += 1
            else:
                variable.assign(payload)
        for variable, value in self._optimizer_state:
            variable.assign(value)
        self.model.optimizer.learning_rate.assign(learning_rate)
        self.model.reset_metrics()

    def reset(self, seed: int, learning_rate: float) -> None:
        """Re-draw the weights from ``seed`` (same seed, same weights), zero the optimizer."""
        entropy = np.random.SeedSequence(seed & 0xFFFFFFFFFFFFFFFF)
        seeds = entropy.generate_state(self._seed_states + 1, np.uint32).astype(np.int64)
        seeds = np.stack([seeds, np.zeros_like(seeds)], axis=1)
        self.reset_function(seeds, learning_rate)


class WeightSnapshot:
    """Remember and restore a model's weights (``model.weights``: trainable and not).

    Copies go to shadow variables inside one compiled function each way (about
    0.1 ms for the reference MLP, against 0.2 ms to read the weights to numpy and
    0.6 ms to assign them back). With ``optimizer=True`` the optimizer's variables
    but its learning rate (iterations, moments...) are copied too (a rollback).
    """

    def __init__(self, model: keras.Model, optimizer: bool = False) -> None:
        self.optimizer = optimizer
        weights = list(model.weights)
        if optimizer:
            rate = model.optimizer.learning_rate
            weights += [v for v in model.optimizer.variables if v is not rate]
        shadows = [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False) for v in weights]
        self._remembered = False

        def copy(sources: list[Any], targets: list[Any]) -> None:
            for source, target in zip(sources, targets, strict=True):
                target.assign(tf.convert_to_tensor(source))

        self._remember = tf.function(lambda: copy(weights, shadows), autograph=False)
        self._restore = tf.function(lambda: copy(shadows, weights), autograph=False)

    def remember(self) -> None:
        self._remember()
        self._remembered = True

    def restore(self) -> None:
        if not self._remembered:
            raise RunnerError("restore_weights() called before remember_weights()")
        self._restore()

    def clear(self) -> None:
        self._remembered = False


def _to_tensor(array: np.ndarray) -> tf.Tensor:
    """Like Keras' array adapter: floating arrays become ``floatx``, others keep their dtype."""
    array = np.asarray(array)
    if np.issubdtype(array.dtype, np.floating):
        array = array.astype(keras.config.floatx())
    return tf.constant(array)


Tensors = tuple[tf.Tensor, tf.Tensor]


def split_tensors(task: TrainingTask) -> tuple[Tensors, Tensors, Tensors]:
    """The task's train, validation and test splits as ``(x, y)`` constants on the device."""
    data = task.data()
    return tuple(  # type: ignore[return-value]
        (_to_tensor(split.x), _to_tensor(split.y))
        for split in (data.train, data.validation, data.test)
    )


# --- the fast path: a whole epoch in one tf.function ---------------------------------


class _ModelAccess:
    """What both runners do the same way on their ``model`` and ``_snapshot``."""

    model: keras.Model
    _snapshot: WeightSnapshot

    @property
    def learning_rate(self) -> float:
        return get_learning_rate(self.model.optimizer)

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        set_learning_rate(self.model.optimizer, value)

    def trainable_weights(self) -> list[Any]:
        """The model's trainable variables (what featurizer version 2 samples)."""
        return list(self.model.trainable_variables)

    def track_optimizer_state(self) -> None:
        """From now on remember/restore_weights also cover the optimizer's state (a rollback).

        Call it before :meth:`reset` (a new snapshot forgets the last one).
        """
        if not self._snapshot.optimizer:
            self._snapshot = WeightSnapshot(self.model, optimizer=True)

    @deterministic
    def remember_weights(self) -> None:
        self._snapshot.remember()

    @deterministic
    def restore_weights(self) -> None:
        self._snapshot.restore()


class FastEpochRunner(_ModelAccess):
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
        rows, size = int(x.shape[0]), self.task.batch_size
        full, rest = divmod(rows, size)

        def batch(start: tf.Tensor | int, length: int) -> tuple[tf.Tensor, tf.Tensor]:
            if order is None:
                return tuple(
                    tf.slice(t, [start] + [0] * (t.shape.rank - 1), [length, *t.shape[1:]])
                    for t in (x, y)
                )
            index = tf.slice(order, [start], [length])
            return tf.gather(x, index), tf.gather(y, index)

        if full:

            def body(i: tf.Tensor) -> tf.Tensor:
                step(batch(i * size, size))
                return i + 1

            tf.while_loop(lambda i: i < full, body, [tf.constant(0)], parallel_iterations=1)
        if rest:
            step(batch(full * size, rest))

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
        # A permutation: the ranks of full-range random integers (ties have odds ~n^2/2^64).
        order = (
            tf.argsort(
                tf.random.stateless_uniform(
                    [int(x.shape[0])], seed, minval=None, maxval=None, dtype=tf.int64
                )
            )
            if self.shuffle
            else None
        )
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

    def close(self) -> None:
        """Drop the compiled functions (the runner is unusable afterwards)."""
        self._closed = True
        self.epoch_function = self.test_function = None  # type: ignore[assignment]


# --- the generic path: the user's own model.fit, driven from a worker thread ----------

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


class FitEpochRunner(_ModelAccess):
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

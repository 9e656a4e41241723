"""Putting a compiled model back to a fresh seeded start, and snapshots of its state, in place.

What every epoch runner (:mod:`~fitpilot.envs.runner`, :mod:`~fitpilot.envs.fit_runner`,
:mod:`~fitpilot.envs.batched`) shares to reset a cached model without rebuilding or
retracing it: :class:`ModelResetter` (fresh seeded weights, fresh optimizer state),
:class:`WeightSnapshot` (remember and restore the best weights, with the optimizer state
for a rollback), and :func:`deterministic` (TensorFlow op determinism for the length of a
call, so that a seed fixes a run).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, TypeVar

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from fitpilot.controller.actions import (
    check_settable_learning_rate,
    get_learning_rate,
    set_learning_rate,
)
from fitpilot.controller.probe import ProbeConfig, ProbeResult, scale_probe
from fitpilot.errors import FitpilotError
from fitpilot.keras_internals import (
    disable_op_determinism,
    enable_op_determinism,
    flatten_layers,
    op_determinism_enabled,
)

F = TypeVar("F", bound=Callable[..., Any])
#: An epoch's logs, as ``fit`` gives them at the epoch end: name -> float.
Logs = dict[str, float]

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
        if op_determinism_enabled():
            return method(*args, **kwargs)
        enable_op_determinism()
        try:
            return method(*args, **kwargs)
        finally:
            disable_op_determinism()

    return wrapper  # type: ignore[return-value]


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
        for layer in flatten_layers(model):
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


class ModelAccess:
    """What the single-run runners do the same way on their ``model`` and ``_snapshot``."""

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

    @deterministic
    def scale_probe(self, config: ProbeConfig) -> tuple[ProbeResult, float]:
        """Controller v3's scale probe from the current weights (a run's start), on the task's
        training data, and the validation loss of those weights; the model is left as it was.
        """
        task = getattr(self, "task", None)
        if task is None:
            raise RunnerError("the scale probe needs the runner's task (its data and budget)")
        data = task.data()
        steps = math.ceil(len(data.train) / task.batch_size)
        probe = scale_probe(self.model, data.train.x, data.train.y, task.batch_size, steps,
                            task.epochs, config)
        return probe, self.validation_loss()

    def validation_loss(self) -> float:
        """The validation loss of the current weights (``model.evaluate``)."""
        data = self.task.data()
        scores = self.model.evaluate(data.validation.x, data.validation.y,
                                     batch_size=self.task.batch_size, verbose=0, return_dict=True)
        return float(scores["loss"])

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

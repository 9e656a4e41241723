"""Run one strategy on one cell through a real ``model.fit``, and score it on the test split.

A :class:`Runner` lives in one process (the main one or a pool worker) and
keeps, per task, one compiled model for constant-variable learning rates and
one for the cosine schedule. Each run resets the model to the cell's initial
variables and the optimizer to its freshly built state, so all strategies of a
cell start from the same weights and see the same data order:

- initial variables (weights and dropout seed states): those of a fresh
  ``task.build_model()`` after ``keras.utils.set_random_seed(seed)``;
- data order: per epoch a numpy permutation of the training rows drawn from
  ``seed`` (:func:`epoch_orders`), fed through ``tf.data``.

Neither depends on TensorFlow's global seed, so no run calls
``tf.random.set_seed``: it clears TensorFlow's kernel caches, which costs
~0.45 s per fit on this machine, longer than a whole run of a small task.

Compiled with ``steps_per_execution`` = batches per epoch, an epoch is one
call into the graph; callbacks act at epoch ends, as they always do.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from fitpilot.envs.tasks import Split, TrainingTask
from fitpilot.errors import FitpilotError
from fitpilot.experiments.settings import ORACLE, BenchmarkError, RunKey
from fitpilot.experiments.strategies import SCHEDULED, cosine_schedule, strategy_callbacks

#: Rows per batch when scoring the validation and test splits (one batch for small splits).
EVAL_BATCH = 8192


class TrajectoryRecorder(keras.callbacks.Callback):
    """Per epoch: the learning rate in force during it, and the train and validation loss."""

    def __init__(self) -> None:
        super().__init__()
        self.lr: list[float] = []
        self.loss: list[float] = []
        self.val_loss: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.lr.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        self.loss.append(float(logs.get("loss", np.nan)))
        self.val_loss.append(float(logs.get("val_loss", np.nan)))


def _pipeline_options() -> tf.data.Options:
    # tf.data's autotuning and default rewrites cost more than they save on
    # in-memory arrays of a few thousand rows (iterator creation dominates).
    options = tf.data.Options()
    options.autotune.enabled = False
    options.experimental_optimization.apply_default_optimizations = False
    return options


def epoch_orders(rows: int, epochs: int, seed: int) -> np.ndarray:
    """The training-row order of every epoch: shape ``(epochs, rows)``, int32, fixed by ``seed``."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(rows) for _ in range(epochs)]).astype(np.int32)


def train_dataset(split: Split, batch_size: int, epochs: int, seed: int) -> tf.data.Dataset:
    """``epochs`` passes over ``split`` in the orders of :func:`epoch_orders`, in batches.

    Batches never span two epochs (the last of an epoch may be short), so
    ``fit(steps_per_epoch=ceil(rows / batch_size), epochs=epochs)`` sees one
    pass per epoch from one iterator.
    """
    x, y = tf.constant(split.x), tf.constant(split.y)
    orders = tf.data.Dataset.from_tensor_slices(epoch_orders(len(split), epochs, seed))
    batches = orders.flat_map(
        lambda order: tf.data.Dataset.from_tensor_slices(order).batch(batch_size)
    )
    dataset = batches.map(lambda rows: (tf.gather(x, rows), tf.gather(y, rows)))
    return dataset.with_options(_pipeline_options())


def eval_dataset(split: Split) -> tf.data.Dataset:
    """``split`` in order, in batches of up to :data:`EVAL_BATCH` rows."""
    dataset = tf.data.Dataset.from_tensor_slices((split.x, split.y))
    return dataset.batch(min(len(split), EVAL_BATCH)).with_options(_pipeline_options())


@dataclass
class CompiledModel:
    """A compiled model reused across runs, with what resetting it needs.

    ``optimizer_state`` holds the optimizer variables' values right after
    ``optimizer.build`` (iteration 0, fresh slots). ``initial_lr`` is the
    cosine schedule's starting-rate variable (``None`` for a variable rate).
    """

    model: keras.Model
    optimizer_state: list[np.ndarray]
    initial_lr: keras.Variable | None

    def reset(self, variables: list[np.ndarray], learning_rate: float) -> None:
        """Set the model's ``variables``, fresh optimizer state and the start ``learning_rate``."""
        for variable, value in zip(self.model.variables, variables, strict=True):
            variable.assign(value)
        for variable, value in zip(
            self.model.optimizer.variables, self.optimizer_state, strict=True
        ):
            variable.assign(value)
        if self.initial_lr is not None:
            self.initial_lr.assign(learning_rate)
        else:
            self.model.optimizer.learning_rate.assign(learning_rate)


class Runner:
    """Runs :class:`RunKey` s of one set of tasks in this process; returns store records."""

    def __init__(
        self,
        tasks: Sequence[TrainingTask],
        controller: Callable[[], keras.callbacks.Callback] | None = None,
        controller_hash: str | None = None,
    ) -> None:
        self.tasks = {task.name: task for task in tasks}
        self.controller = controller
        self.controller_hash = controller_hash
        self._models: dict[tuple[str, bool], CompiledModel] = {}
        self._variables: dict[tuple[str, int], list[np.ndarray]] = {}
        self._eval: dict[tuple[str, str], tf.data.Dataset] = {}

    # --- caches -------------------------------------------------------------

    def initial_variables(self, task: TrainingTask, seed: int) -> list[np.ndarray]:
        """The cell's initial model variables: a fresh ``task.build_model()`` under ``seed``."""
        key = (task.name, seed)
        if key not in self._variables:
            keras.utils.set_random_seed(seed)  # clears TF's kernel caches: once per cell here
            model = _built(task.build_model(), task)
            self._variables[key] = [np.array(v.numpy()) for v in model.variables]
        return self._variables[key]

    def _eval_data(self, task: TrainingTask, split: str) -> tf.data.Dataset:
        key = (task.name, split)
        if key not in self._eval:
            self._eval[key] = eval_dataset(getattr(task.data(), split))
        return self._eval[key]

    def compiled(self, task: TrainingTask, scheduled: bool) -> CompiledModel:
        """The task's reusable compiled model (built, traced and warmed up on first use)."""
        key = (task.name, scheduled)
        if key not in self._models:
            data = task.data()
            steps = steps_per_epoch(task)
            initial_lr = None
            learning_rate: Any = task.learning_rate
            if scheduled:
                initial_lr = keras.Variable(task.learning_rate, dtype="float32", trainable=False)
                learning_rate = cosine_schedule(initial_lr, decay_steps=task.epochs * steps)
            model = _built(task.compiled_model(learning_rate, steps_per_execution=steps), task)
            model.optimizer.build(model.trainable_variables)
            state = [np.array(v.numpy()) for v in model.optimizer.variables]
            # Trace the train and evaluation steps now, so no run's wall time includes it.
            model.fit(
                train_dataset(data.train, task.batch_size, 1, 0),
                steps_per_epoch=steps,
                epochs=1,
                verbose=0,
                validation_data=self._eval_data(task, "validation"),
                shuffle=False,
            )
            self._models[key] = CompiledModel(model, state, initial_lr)
        return self._models[key]

    # --- one run --------------------------------------------------------------

    def run(self, key: RunKey) -> dict[str, Any]:
        """Train ``key.strategy`` on its cell and score the final weights on the test split."""
        task = self.tasks.get(key.task)
        if task is None:
            raise BenchmarkError(f"no task named {key.task!r} in this benchmark's task list")
        compiled = self.compiled(task, scheduled=key.strategy in SCHEDULED)
        model = compiled.model
        learning_rate = task.learning_rate * key.lr_factor
        initial = self.initial_variables(task, key.seed)
        if len(initial) != len(model.variables):
            raise BenchmarkError(
                f"task {task.name!r}: build_model() gave models with {len(initial)} and "
                f"{len(model.variables)} variables; it must build the same model every time"
            )
        compiled.reset(initial, learning_rate)
        callbacks = strategy_callbacks(key.strategy, self.controller)
        recorder = TrajectoryRecorder()
        data = task.data()

        start = time.perf_counter()
        with warnings.catch_warnings():  # a diverging run warns; its record says so
            warnings.simplefilter("ignore")
            history = model.fit(
                train_dataset(data.train, task.batch_size, task.epochs, key.seed),
                steps_per_epoch=steps_per_epoch(task),
                validation_data=self._eval_data(task, "validation"),
                epochs=task.epochs,
                verbose=0,
                shuffle=False,
                callbacks=[recorder, *callbacks],
            )
            scores = model.evaluate(self._eval_data(task, "test"), verbose=0, return_dict=True)
        wall = time.perf_counter() - start

        metric = _metric_name(task, scores)
        learned = callbacks[0] if key.strategy == "learned" else None
        return {
            "type": "run",
            "task": key.task,
            "seed": key.seed,
            "lr_factor": key.lr_factor,
            "strategy": key.strategy,
            "oracle": key.strategy == ORACLE,
            "controller": self.controller_hash,
            "learning_rate": learning_rate,
            "budget": task.epochs,
            "epochs": len(history.epoch),
            "test_loss": float(scores["loss"]),
            "metric": metric,
            "test_metric": float(scores[metric]) if metric else None,
            "wall_seconds": round(wall, 4),
            "lr": recorder.lr,
            "val_loss": recorder.val_loss,
            "loss": recorder.loss,
            "decisions": _decisions(learned) if learned is not None else None,
        }


def steps_per_epoch(task: TrainingTask) -> int:
    """Batches per epoch: ``ceil(training rows / batch size)``."""
    return math.ceil(len(task.data().train) / task.batch_size)


def _built(model: keras.Model, task: TrainingTask) -> keras.Model:
    """``model``, built by a call on two training rows if it was not built yet (subclassed)."""
    if not model.built:
        model(task.data().train.x[:2])
    return model


def _decisions(controller: keras.callbacks.Callback) -> list[dict[str, Any]]:
    """What the controller did, one dict per epoch (epoch, lr_before, action, lr_after, ...)."""
    if hasattr(controller, "decisions_as_dicts"):
        return list(controller.decisions_as_dicts())
    return [dataclasses.asdict(row) for row in getattr(controller, "decisions", [])]


def _metric_name(task: TrainingTask, scores: dict[str, Any]) -> str | None:
    """The task's first metric as ``evaluate`` names it (``None`` if the task has none)."""
    names = [name for name in scores if name != "loss"]
    if not names:
        return None
    wanted = str(task.metrics[0]) if task.metrics else names[0]
    return wanted if wanted in scores else names[0]


# --- the controller -------------------------------------------------------------


def _learned_controller_class() -> Any:
    try:
        from fitpilot.controller.callback import LearnedController
    except ImportError as exc:
        raise BenchmarkError(
            f"the learned controller is not available in this install ({exc}); "
            f"leave 'learned' out of --strategies"
        ) from exc
    return LearnedController


def controller_factory(source: str) -> Callable[[], keras.callbacks.Callback]:
    """A maker of fresh ``LearnedController`` s from a bundle path or ``"pretrained"``."""
    controller = _learned_controller_class()
    if source == "pretrained":
        return controller.pretrained
    return functools.partial(controller.load, source)


def controller_hash(source: str) -> str:
    """The content hash of the controller bundle at ``source`` (a path, or ``"pretrained"``)."""
    if source == "pretrained":
        try:
            return str(_learned_controller_class().pretrained().bundle.content_hash)
        except FitpilotError as exc:
            raise BenchmarkError(
                f"--controller pretrained: {exc}; or give --controller path/to/controller.zip"
            ) from exc
    from fitpilot.controller.bundle import load_bundle

    return load_bundle(source).content_hash

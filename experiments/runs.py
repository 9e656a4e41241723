"""Run one strategy on one cell through a real ``model.fit``, and score it on the test split.

A :class:`Runner` lives in one process (the main one or a pool worker) and
keeps one :class:`PreparedTask` per task: its data and evaluation datasets,
and compiled models of each kind it needed (a variable learning rate; the
cosine schedule; Prodigy; the range test's one-batch-per-call model). Each run
resets the model to the cell's initial variables and the optimizer to its
freshly built state, so all strategies of a cell start from the same weights
and see the same data order:

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

import functools
import math
import re
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from fitpilot.baselines.lr_finder import LRFinderResult, find_learning_rate
from fitpilot.baselines.prodigy import Prodigy
from fitpilot.controller.bundle import load_bundle
from fitpilot.controller.callback import LearnedController
from fitpilot.envs.tasks import Split, TaskData, TrainingTask
from fitpilot.errors import FitpilotError, first_line
from fitpilot.experiments.callbacks import cosine_schedule
from fitpilot.experiments.settings import BenchmarkError, RunOrder, RunRecord
from fitpilot.experiments.strategies import RunContext, strategy

#: Rows per batch when scoring the validation and test splits (one batch for small splits).
EVAL_BATCH = 8192
#: At most this many batches in the ``lr_finder`` strategy's range test (docs/benchmark.md).
RANGE_TEST_BATCHES = 100


class TrajectoryRecorder(keras.callbacks.Callback):
    """Per epoch: the learning rate in force during it, and the train and validation loss.

    Goes last in the callback list: a strategy may set the epoch's rate when it begins
    (a ``LearningRateScheduler``), and the rate is read after that.
    """

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
    cosine schedule's starting-rate variable (``None`` for a variable rate,
    and for Prodigy, whose schedule always starts at 1).
    """

    model: keras.Model
    optimizer_state: list[np.ndarray]
    initial_lr: keras.Variable | None
    scheduled: bool = False

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
        elif not self.scheduled:
            self.model.optimizer.learning_rate.assign(learning_rate)


@dataclass
class PreparedTask:
    """Everything a runner keeps for one task: its data, batches per epoch, evaluation
    datasets, compiled models (one per :data:`~fitpilot.experiments.strategies.MODEL_KINDS`
    kind, built on first use), each seed's initial variables and their test loss."""

    task: TrainingTask
    data: TaskData
    steps: int
    validation: tf.data.Dataset
    test: tf.data.Dataset
    models: dict[str, CompiledModel] = field(default_factory=dict)
    initial: dict[int, list[np.ndarray]] = field(default_factory=dict)
    untrained: dict[int, float] = field(default_factory=dict)

    @classmethod
    def of(cls, task: TrainingTask) -> PreparedTask:
        data = task.data()
        return cls(
            task,
            data,
            steps_per_epoch(task),
            eval_dataset(data.validation),
            eval_dataset(data.test),
        )

    def initial_variables(self, seed: int) -> list[np.ndarray]:
        """The cell's initial model variables: a fresh ``task.build_model()`` under ``seed``."""
        if seed not in self.initial:
            keras.utils.set_random_seed(seed)  # clears TF's kernel caches: once per cell here
            model = _built(self.task.build_model(), self.task)
            self.initial[seed] = [np.array(v.numpy()) for v in model.variables]
        return self.initial[seed]

    def untrained_test_loss(self, seed: int) -> float:
        """The test loss of the cell's initial weights: what a diverged or failed run scores."""
        if seed not in self.untrained:
            compiled = self.compiled("constant")
            compiled.reset(self.initial_variables(seed), self.task.learning_rate)
            scores = compiled.model.evaluate(self.test, verbose=0, return_dict=True)
            self.untrained[seed] = float(scores["loss"])
        return self.untrained[seed]

    def compiled(self, kind: str) -> CompiledModel:
        """The task's reusable compiled model of ``kind`` (built, traced, warmed up once)."""
        if kind not in self.models:
            self.models[kind] = self._compile(kind)
        return self.models[kind]

    def _compile(self, kind: str) -> CompiledModel:
        task, steps = self.task, self.steps
        initial_lr = None
        if kind == "cosine":
            initial_lr = keras.Variable(task.learning_rate, dtype="float32", trainable=False)
            schedule = cosine_schedule(initial_lr, decay_steps=task.epochs * steps)
            model = task.compiled_model(schedule, steps_per_execution=steps)
        elif kind == "prodigy":
            model = task.build_model()
            model.compile(
                optimizer=Prodigy(cosine_schedule(1.0, decay_steps=task.epochs * steps)),
                loss=task.loss,
                metrics=list(task.metrics),
                steps_per_execution=steps,
            )
        elif kind == "probe":  # one batch per call: the range test acts after every batch
            model = task.compiled_model(task.learning_rate)
        else:
            model = task.compiled_model(task.learning_rate, steps_per_execution=steps)
        model = _built(model, task)
        model.optimizer.build(model.trainable_variables)
        state = [np.array(v.numpy()) for v in model.optimizer.variables]
        if kind == "probe":
            # Trace the one-batch train step now (the range test runs train_on_batch).
            x, y = self.data.train.x[: task.batch_size], self.data.train.y[: task.batch_size]
            model.train_on_batch(x, y)
        else:
            # Trace the train and evaluation steps now, so no run's wall time includes it.
            model.fit(
                train_dataset(self.data.train, task.batch_size, 1, 0),
                steps_per_epoch=steps,
                epochs=1,
                verbose=0,
                validation_data=self.validation,
                shuffle=False,
            )
        return CompiledModel(model, state, initial_lr, scheduled=kind == "prodigy")


class Runner:
    """Runs :class:`RunOrder` s of one set of tasks in this process; returns run records."""

    def __init__(
        self,
        tasks: Sequence[TrainingTask],
        controller: Callable[[], keras.callbacks.Callback] | None = None,
        controller_hash: str | None = None,
    ) -> None:
        self.tasks = {task.name: task for task in tasks}
        self.controller = controller
        self.controller_hash = controller_hash
        self.prepared: dict[str, PreparedTask] = {}

    def prepare(self, name: str) -> PreparedTask:
        """The task ``name``, prepared on first use."""
        if name not in self.prepared:
            task = self.tasks.get(name)
            if task is None:
                raise BenchmarkError(f"no task named {name!r} in this benchmark's task list")
            self.prepared[name] = PreparedTask.of(task)
        return self.prepared[name]

    # --- one run --------------------------------------------------------------

    def run(self, order: RunOrder) -> RunRecord:
        """Train ``order`` 's strategy on its cell, score its final weights on the test split.

        A run that raises is a result too: its record holds the error's first line
        (``error``), and the benchmark goes on (a resumed benchmark runs it again).
        """
        try:
            return self._run(order)
        except Exception as exc:  # noqa: BLE001 (any error of a run is recorded, not raised)
            return self._failed(order, exc)

    def _run(self, order: RunOrder) -> RunRecord:
        """:meth:`run` without the error handling.

        A strategy with a probe (the range test) first runs it from the cell's initial
        weights (its batches count as compute, its seconds as wall time) and trains from
        the rate it suggests; if it gives none (a loss that is NaN from the first batch),
        from ``order.learning_rate``, with a warning.
        """
        key = order.key
        row = strategy(key.strategy)
        prepared = self.prepare(key.task)
        task = prepared.task
        initial = prepared.initial_variables(key.seed)
        untrained = prepared.untrained_test_loss(key.seed)
        compiled = prepared.compiled(row.model)
        model = compiled.model
        if len(initial) != len(model.variables):
            raise BenchmarkError(
                f"task {task.name!r}: build_model() gave models with {len(initial)} and "
                f"{len(model.variables)} variables; it must build the same model every time"
            )
        learning_rate, probe_epochs, probe_wall, warning = order.learning_rate, 0.0, 0.0, None
        if row.probe == "range_test":
            prepared.compiled("probe")  # built and traced outside the timed range test
            start = time.perf_counter()
            probe = self._range_test(prepared, initial, key.seed)
            probe_wall = time.perf_counter() - start
            probe_epochs = probe.batches / prepared.steps
            if probe.suggestion is None:
                warning = (
                    "range test gave no suggestion"
                    + (f" ({probe.warning})" if probe.warning else "")
                    + f"; trained from the reference rate {learning_rate:g}"
                )
            else:
                learning_rate = float(probe.suggestion)
        if row.fixed_learning_rate is not None:
            learning_rate = row.fixed_learning_rate
        compiled.reset(initial, learning_rate)
        context = RunContext(learning_rate, task.epochs, prepared.steps, self.controller)
        callbacks = row.callbacks(context)
        recorder = TrajectoryRecorder()

        start = time.perf_counter()
        with warnings.catch_warnings():  # a diverging run warns; its record says so
            warnings.simplefilter("ignore")
            history = model.fit(
                train_dataset(prepared.data.train, task.batch_size, task.epochs, key.seed),
                steps_per_epoch=prepared.steps,
                validation_data=prepared.validation,
                epochs=task.epochs,
                verbose=0,
                shuffle=False,
                callbacks=[*callbacks, recorder],  # last: it sees the rate the others set
            )
            scores = model.evaluate(prepared.test, verbose=0, return_dict=True)
        wall = time.perf_counter() - start + probe_wall

        metric = _metric_name(task, scores)
        decisions = callbacks[0].decisions_as_dicts() if row.records_decisions else None
        if row.records_decisions:  # a controller v3 measures the scale first: compute too
            probe_epochs += callbacks[0].probe_batches / prepared.steps
        return RunRecord(
            task=key.task,
            seed=key.seed,
            lr_factor=key.lr_factor,
            strategy=key.strategy,
            learning_rate=learning_rate,
            budget=task.epochs,
            epochs=len(history.epoch),
            test_loss=float(scores["loss"]),
            wall_seconds=round(wall, 4),
            controller=self.controller_hash,
            metric=metric,
            test_metric=float(scores[metric]) if metric else None,
            lr=tuple(recorder.lr),
            val_loss=tuple(recorder.val_loss),
            loss=tuple(recorder.loss),
            probe_epochs=probe_epochs,
            decisions=tuple(decisions) if decisions is not None else None,
            warning=warning,
            untrained_test_loss=untrained,
            finite_weights=all(
                bool(np.all(np.isfinite(keras.ops.convert_to_numpy(v))))
                for v in model.trainable_variables
            ),
        )

    def _failed(self, order: RunOrder, exc: Exception) -> RunRecord:
        """The record of a run that raised ``exc``: its error, and what is known of its cell."""
        key = order.key
        task = self.tasks.get(key.task)
        untrained = None
        prepared = self.prepared.get(key.task)
        if prepared is not None:
            untrained = prepared.untrained.get(key.seed)
        return RunRecord(
            task=key.task,
            seed=key.seed,
            lr_factor=key.lr_factor,
            strategy=key.strategy,
            learning_rate=order.learning_rate,
            budget=task.epochs if task is not None else 0,
            epochs=0,
            test_loss=math.nan,
            wall_seconds=math.nan,
            controller=self.controller_hash,
            untrained_test_loss=untrained,
            error=_error_line(exc),
        )

    def _range_test(
        self, prepared: PreparedTask, initial: list[np.ndarray], seed: int
    ) -> LRFinderResult:
        """The learning-rate range test on the training data, from the cell's initial weights,
        in the cell's data order, with the task's batch size and optimizer."""
        probe = prepared.compiled("probe")
        probe.reset(initial, prepared.task.learning_rate)
        task = prepared.task
        passes = math.ceil(RANGE_TEST_BATCHES / prepared.steps)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return find_learning_rate(
                probe.model,
                train_dataset(prepared.data.train, task.batch_size, passes, seed),
                batch_size=task.batch_size,
                max_batches=RANGE_TEST_BATCHES,
            )


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _error_line(exc: BaseException) -> str:
    """``"TypeError: message"``: the exception's type and first line. Keras wraps errors raised
    in a layer under a first line of its own ("Exception encountered when calling X.call()."):
    then the layer's own message, the next line, is added."""
    lines = [_ANSI.sub("", line).strip() for line in str(exc).splitlines()]
    lines = [line for line in lines if line]
    text = first_line(exc)
    if lines and lines[0].startswith("Exception encountered when calling") and len(lines) > 1:
        text = f"{lines[0]} {lines[1]}"
    return f"{type(exc).__name__}: {text}"[:300]


def steps_per_epoch(task: TrainingTask) -> int:
    """Batches per epoch: ``ceil(training rows / batch size)``."""
    return math.ceil(len(task.data().train) / task.batch_size)


def _built(model: keras.Model, task: TrainingTask) -> keras.Model:
    """``model``, built by a call on two training rows if it was not built yet (subclassed)."""
    if not model.built:
        model(task.data().train.x[:2])
    return model


def _metric_name(task: TrainingTask, scores: dict[str, Any]) -> str | None:
    """The task's first metric as ``evaluate`` names it (``None`` if the task has none)."""
    names = [name for name in scores if name != "loss"]
    if not names:
        return None
    wanted = str(task.metrics[0]) if task.metrics else names[0]
    return wanted if wanted in scores else names[0]


# --- the controller -------------------------------------------------------------


def controller_factory(source: str) -> Callable[[], keras.callbacks.Callback]:
    """A maker of fresh ``LearnedController`` s from a bundle path or ``"pretrained"``."""
    if source == "pretrained":
        return LearnedController.pretrained
    return functools.partial(LearnedController.load, source)


def controller_hash(source: str) -> str:
    """The content hash of the controller bundle at ``source`` (a path, or ``"pretrained"``)."""
    if source == "pretrained":
        try:
            return str(LearnedController.pretrained().bundle.content_hash)
        except FitpilotError as exc:
            raise BenchmarkError(
                f"`controller` 'pretrained': {exc}; or give the path of a controller.zip"
            ) from exc
    return load_bundle(source).content_hash

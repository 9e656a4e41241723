"""Training tasks: what to train, on which data, with which optimizer and budget.

A :class:`TrainingTask` is a small value object. Users define their own in
Python; every command that takes tasks accepts a built-in suite name or an
import path ``package.module:NAME`` pointing at a task or a list of tasks
(resolved by :mod:`fitpilot.envs.loading`). This module does not import
TensorFlow: only building or checking a model does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from fitpilot.errors import FitpilotError, first_line

if TYPE_CHECKING:
    import keras

TaskKind = Literal["classification", "regression"]
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
#: Which rate of a task the training environment draws starting rates around:
#: ``learning_rate`` (``"default"``) or ``tuned_learning_rate`` (``"tuned"``).
LR_DISTRIBUTIONS = ("default", "tuned")


class TaskError(FitpilotError, ValueError):
    """A task that cannot be loaded or does not fit together."""


@dataclass(frozen=True)
class Split:
    """Inputs ``x`` with shape ``(n, ...)`` and targets ``y`` with shape ``(n, ...)``."""

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        # Accept array-likes (lists, tensors): store numpy arrays.
        object.__setattr__(self, "x", np.asarray(self.x))
        object.__setattr__(self, "y", np.asarray(self.y))

    def __len__(self) -> int:
        return int(self.x.shape[0]) if self.x.ndim else 0


@dataclass(frozen=True)
class TaskData:
    """The three splits of a task. ``test`` is never shown to a controller."""

    train: Split
    validation: Split
    test: Split


@dataclass(frozen=True, eq=False)
class TrainingTask:
    """One training problem: model, data, loss, optimizer, batch size and epoch budget.

    Attributes:
        name: unique, short, used in reports and the results store.
        kind: ``"classification"`` or ``"regression"``.
        build_model: returns a fresh, uncompiled ``keras.Model``.
        load_data: returns the :class:`TaskData`; called once, then cached.
        loss: a Keras loss identifier, e.g. ``"sparse_categorical_crossentropy"``, or a Keras
            loss object such as ``SparseCategoricalCrossentropy(from_logits=True)``.
        metrics: Keras metric identifiers, e.g. ``("accuracy",)``, or metric objects.
        optimizer: ``"sgd"``, ``"adam"``, ``"adamw"`` or ``"rmsprop"``, or a callable taking a
            learning rate and returning a Keras optimizer.
        learning_rate: the default (well-chosen) learning rate.
        batch_size: mini-batch size, in rows.
        epochs: the epoch budget.
        optimizer_kwargs: extra keyword arguments for a named optimizer (e.g. momentum).
        tuned_learning_rate: the best constant learning rate, measured (by validation
            loss, see ``experiments/tune_suite.py``), or ``None`` if not measured.
    """

    name: str
    kind: TaskKind
    build_model: Callable[[], keras.Model]
    load_data: Callable[[], TaskData]
    loss: str | Any
    metrics: tuple[str | Any, ...] = ()
    optimizer: str | Callable[[float], Any] = "adam"
    learning_rate: float = 1e-3
    batch_size: int = 32
    epochs: int = 30
    optimizer_kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    tuned_learning_rate: float | None = None
    _cache: dict[str, TaskData] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in ("classification", "regression"):
            raise TaskError(
                f"task {self.name!r}: kind must be 'classification' or 'regression', "
                f"got {self.kind!r}"
            )
        if isinstance(self.optimizer, str) and self.optimizer not in OPTIMIZERS:
            raise TaskError(
                f"task {self.name!r}: unknown optimizer {self.optimizer!r}; use one of "
                f"{', '.join(OPTIMIZERS)} or a callable lr -> keras optimizer"
            )
        if self.learning_rate <= 0 or self.batch_size <= 0 or self.epochs <= 0:
            raise TaskError(
                f"task {self.name!r}: learning_rate, batch_size and epochs must be positive"
            )
        if self.tuned_learning_rate is not None and not self.tuned_learning_rate > 0:
            raise TaskError(
                f"task {self.name!r}: tuned_learning_rate must be positive or None, "
                f"got {self.tuned_learning_rate}"
            )

    def data(self) -> TaskData:
        """The task's splits (loaded on first use, then cached), validated."""
        if "data" not in self._cache:
            try:
                data = self.load_data()
            except TaskError as exc:
                raise TaskError(f"task {self.name!r}: {exc}") from exc
            except Exception as exc:
                raise TaskError(
                    f"task {self.name!r}: load_data() failed: {type(exc).__name__}: "
                    f"{first_line(exc)}; fix load_data"
                ) from exc
            _check_splits(self.name, data)
            self._cache["data"] = data
        return self._cache["data"]

    def make_optimizer(
        self, learning_rate: float | Any | None = None
    ) -> keras.optimizers.Optimizer:
        """A fresh optimizer at ``learning_rate`` (a float or a Keras schedule)."""
        import keras  # here: tasks are defined and listed without loading TensorFlow

        lr = self.learning_rate if learning_rate is None else learning_rate
        if callable(self.optimizer) and not isinstance(self.optimizer, str):
            return self.optimizer(lr)
        classes = {
            "sgd": keras.optimizers.SGD,
            "adam": keras.optimizers.Adam,
            "adamw": keras.optimizers.AdamW,
            "rmsprop": keras.optimizers.RMSprop,
        }
        return classes[self.optimizer](learning_rate=lr, **self.optimizer_kwargs)

    def compiled_model(
        self, learning_rate: float | Any | None = None, **compile_kwargs: Any
    ) -> keras.Model:
        """Build and compile a fresh model with the task's loss, metrics and optimizer."""
        model = self.build_model()
        model.compile(
            optimizer=self.make_optimizer(learning_rate),
            loss=self.loss,
            metrics=list(self.metrics),
            **compile_kwargs,
        )
        return model

    @property
    def optimizer_name(self) -> str:
        """Short optimizer name for listings (``custom`` for a callable)."""
        return self.optimizer if isinstance(self.optimizer, str) else "custom"

    def check(self) -> None:
        """Raise :class:`TaskError` unless the data splits and the model fit together.

        Builds one model (uncompiled) and runs it on two training rows: the
        inputs must be accepted, the output shape must match the targets for
        the task's loss, and the loss must be finite. Imports TensorFlow.
        """
        import keras  # here: tasks are defined and listed without loading TensorFlow

        data = self.data()
        loss = self._resolve("loss", keras.losses.get, self.loss)
        for metric in self.metrics:
            self._resolve("metric", keras.metrics.get, metric)
        try:
            model = self.build_model()
        except Exception as exc:
            raise TaskError(
                f"task {self.name!r}: build_model() failed: {type(exc).__name__}: "
                f"{first_line(exc)}; fix build_model"
            ) from exc
        if not isinstance(model, keras.Model):
            raise TaskError(
                f"task {self.name!r}: build_model() returned a {type(model).__name__}, "
                f"not a keras.Model; return a fresh uncompiled model"
            )
        x, y = data.train.x[:2], data.train.y[:2]
        try:
            prediction = model(x)
        except Exception as exc:
            raise TaskError(
                f"task {self.name!r}: the model does not accept inputs of shape "
                f"{data.train.x.shape[1:]} ({first_line(exc)}); fix build_model or the data"
            ) from exc
        _check_targets(self.name, self.loss, tuple(prediction.shape[1:]), data)
        try:
            value = float(np.mean(np.asarray(loss(y, prediction))))
        except Exception as exc:
            raise TaskError(
                f"task {self.name!r}: loss {self.loss!r} fails on the model output of shape "
                f"{tuple(prediction.shape[1:])} and targets of shape {data.train.y.shape[1:]} "
                f"({first_line(exc)}); fix the output layer, the targets or the loss"
            ) from exc
        if not np.isfinite(value):
            raise TaskError(
                f"task {self.name!r}: loss {self.loss!r} is {value} on the first training rows "
                f"before any training; check the targets and the output activation"
            )

    def _resolve(self, what: str, getter: Callable[[Any], Any], identifier: Any) -> Any:
        """``getter(identifier)`` (a Keras loss or metric), or a :class:`TaskError`."""
        try:
            return getter(identifier)
        except Exception as exc:
            raise TaskError(
                f"task {self.name!r}: unknown {what} {identifier!r}; use a Keras {what} name "
                f"such as {'mse' if what == 'loss' else 'mae'} or a Keras {what} object"
            ) from exc


def _check_targets(
    name: str, loss: Any, output: tuple[int | None, ...], data: TaskData
) -> None:
    """Check target shapes (and class labels) against the model's per-row output shape.

    Applies to Keras losses given by name (except ``ctc``): a sparse loss takes
    integer labels in ``[0, classes)`` with the output's shape minus its last
    axis; every other loss takes targets of the output's shape (``(n,)`` for
    an output of shape ``(n, 1)``).
    """
    if not isinstance(loss, str) or "ctc" in loss.lower():
        return
    target = data.train.y.shape[1:]
    fix = "fix the output layer or the targets"
    if "sparse" in loss.lower():
        classes = output[-1] if output else None
        if target not in (output[:-1], output[:-1] + (1,)):
            raise TaskError(
                f"task {name!r}: loss {loss!r} needs integer labels of shape {output[:-1]}, "
                f"but the targets have shape {target}; {fix}"
            )
        labels = np.concatenate([s.y.ravel() for s in (data.train, data.validation, data.test)])
        if labels.size and not np.all(np.floor(labels) == labels):
            raise TaskError(
                f"task {name!r}: loss {loss!r} needs integer class labels; the targets "
                f"have fractions; use a non-sparse loss or integer labels"
            )
        if classes and labels.size and (labels.min() < 0 or labels.max() >= classes):
            raise TaskError(
                f"task {name!r}: the targets hold labels {int(labels.min())}..{int(labels.max())}"
                f" but the model outputs {classes} classes; give the output layer "
                f"{int(labels.max()) + 1} units or relabel the targets"
            )
        return
    if target != output and not (target == () and output == (1,)):
        raise TaskError(
            f"task {name!r}: the model outputs shape {output} per row but the targets have "
            f"shape {target} for loss {loss!r}; {fix}"
        )


def _check_splits(name: str, data: Any) -> None:
    """Raise :class:`TaskError` unless ``data`` is a TaskData of three sound splits."""
    if not isinstance(data, TaskData):
        raise TaskError(
            f"task {name!r}: load_data() must return a fitpilot TaskData(train, validation, "
            f"test), got {type(data).__name__}"
        )
    splits = {s: getattr(data, s) for s in ("train", "validation", "test")}
    for split_name, split in splits.items():
        if not isinstance(split, Split):
            raise TaskError(
                f"task {name!r}: the {split_name} split is missing (got "
                f"{type(split).__name__}); give TaskData a Split(x, y) for train, "
                f"validation and test"
            )
        if split.x.ndim == 0 or split.y.ndim == 0:
            raise TaskError(
                f"task {name!r}: the {split_name} split's x and y must be arrays with one "
                f"row per example; got shapes {split.x.shape} and {split.y.shape}"
            )
        if len(split.x) == 0 or len(split.x) != len(split.y):
            raise TaskError(
                f"task {name!r}: the {split_name} split has {len(split.x)} inputs and "
                f"{len(split.y)} targets; they must be equal and non-zero"
            )
        for part in (split.x, split.y):
            if part.dtype.kind not in "biuf":
                raise TaskError(
                    f"task {name!r}: the {split_name} split holds {part.dtype} values; "
                    f"give numeric arrays (e.g. float32 inputs, int or float targets)"
                )
            if part.dtype.kind == "f" and not np.all(np.isfinite(part)):
                raise TaskError(
                    f"task {name!r}: the {split_name} split holds NaN or inf values; "
                    f"clean or impute the data"
                )
    for part in ("x", "y"):
        shapes = {s: getattr(split, part).shape[1:] for s, split in splits.items()}
        if len(set(shapes.values())) != 1:
            raise TaskError(
                f"task {name!r}: the splits' {part} shapes per row differ: {shapes}; "
                f"give every split the same shape"
            )


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def describe(value: Any) -> str:
    """A loss, metric or optimizer identifier as text that is equal for equal values.

    A name stays itself; a Keras object (a loss, metric or optimizer with ``get_config``)
    is its registered class and config, as ``keras.saving.serialize_keras_object`` gives
    them, in JSON with sorted keys; another function or class is ``module.qualname``;
    anything else its ``repr`` without memory addresses. Results stores compare tasks by
    this text, so it must not change from one process to the next.
    """
    if isinstance(value, str):
        return value
    if hasattr(value, "get_config"):
        import keras  # here: only a Keras object needs it

        try:
            serialized = keras.saving.serialize_keras_object(value)
        except Exception:  # an object whose config does not serialize: fall through
            serialized = None
        if serialized is not None:
            return json.dumps(serialized, sort_keys=True, default=str)
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '?')}.{value.__qualname__}"
    return without_addresses(repr(value))


def without_addresses(text: str) -> str:
    """``text`` with the `` at 0x7f..`` memory addresses of Python reprs cut out."""
    return _ADDRESS.sub("", text)


def legacy_description(value: Any) -> str:
    """How results stores before :func:`describe` wrote a loss or metric (``str(value)``),
    addresses cut out: to continue such a store."""
    return without_addresses(str(value))

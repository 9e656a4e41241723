"""Training tasks: what to train, on which data, with which optimizer and budget.

A :class:`TrainingTask` is a small value object. Users define their own in
Python; every command that takes tasks accepts a built-in suite name or an
import path ``package.module:NAME`` pointing at a task or a list of tasks.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from fitpilot.errors import FitpilotError

if TYPE_CHECKING:
    import keras

TaskKind = Literal["classification", "regression"]
OPTIMIZERS = ("sgd", "adam", "rmsprop")


class TaskError(FitpilotError):
    """A task that cannot be loaded or does not fit together."""


@dataclass(frozen=True)
class Split:
    """Inputs ``x`` with shape ``(n, ...)`` and targets ``y`` with shape ``(n, ...)``."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return int(self.x.shape[0])


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
        loss: a Keras loss identifier, e.g. ``"sparse_categorical_crossentropy"``.
        metrics: Keras metric identifiers, e.g. ``("accuracy",)``.
        optimizer: ``"sgd"``, ``"adam"`` or ``"rmsprop"``, or a callable taking a
            learning rate and returning a Keras optimizer.
        learning_rate: the default (well-chosen) learning rate.
        batch_size: mini-batch size, in rows.
        epochs: the epoch budget.
        optimizer_kwargs: extra keyword arguments for a named optimizer (e.g. momentum).
    """

    name: str
    kind: TaskKind
    build_model: Callable[[], keras.Model]
    load_data: Callable[[], TaskData]
    loss: str
    metrics: tuple[str, ...] = ()
    optimizer: str | Callable[[float], Any] = "adam"
    learning_rate: float = 1e-3
    batch_size: int = 32
    epochs: int = 30
    optimizer_kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""
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

    def data(self) -> TaskData:
        """The task's splits (loaded on first use, then cached), validated."""
        if "data" not in self._cache:
            data = self.load_data()
            _check_splits(self.name, data)
            self._cache["data"] = data
        return self._cache["data"]

    def make_optimizer(self, learning_rate: float | Any | None = None) -> keras.optimizers.Optimizer:
        """A fresh optimizer at ``learning_rate`` (a float or a Keras schedule)."""
        import keras

        lr = self.learning_rate if learning_rate is None else learning_rate
        if callable(self.optimizer) and not isinstance(self.optimizer, str):
            return self.optimizer(lr)
        classes = {
            "sgd": keras.optimizers.SGD,
            "adam": keras.optimizers.Adam,
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
        """Raise :class:`TaskError` unless the data splits and the model fit together."""
        data = self.data()
        try:
            model = self.build_model()
        except Exception as exc:
            raise TaskError(f"task {self.name!r}: build_model() failed: {exc}") from exc
        x, y = data.train.x[:2], data.train.y[:2]
        try:
            prediction = model(x)
        except Exception as exc:
            raise TaskError(
                f"task {self.name!r}: the model does not accept inputs of shape "
                f"{data.train.x.shape[1:]} ({_first_line(exc)}); fix build_model or the data"
            ) from exc
        try:
            import keras

            value = keras.losses.get(self.loss)(y, prediction)
            if not np.isfinite(float(np.mean(np.asarray(value)))):
                raise ValueError("loss is not finite")
        except Exception as exc:
            raise TaskError(
                f"task {self.name!r}: model output shape {tuple(prediction.shape[1:])} does "
                f"not match targets of shape {data.train.y.shape[1:]} for loss "
                f"{self.loss!r} ({_first_line(exc)}); fix the output layer or the targets"
            ) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _check_splits(name: str, data: Any) -> None:
    if not isinstance(data, TaskData):
        raise TaskError(
            f"task {name!r}: load_data() must return a fitpilot TaskData(train, validation, "
            f"test), got {type(data).__name__}"
        )
    for split_name in ("train", "validation", "test"):
        split = getattr(data, split_name)
        if split is None or not isinstance(split, Split):
            raise TaskError(
                f"task {name!r}: the {split_name} split is missing; give TaskData a "
                f"Split(x, y) for train, validation and test"
            )
        if len(split.x) == 0 or len(split.x) != len(split.y):
            raise TaskError(
                f"task {name!r}: the {split_name} split has {len(split.x)} inputs and "
                f"{len(split.y)} targets; they must be equal and non-zero"
            )
    shapes = {s: getattr(data, s).x.shape[1:] for s in ("train", "validation", "test")}
    if len(set(shapes.values())) != 1:
        raise TaskError(f"task {name!r}: the splits' input shapes differ: {shapes}")


def load_tasks(spec: str) -> list[TrainingTask]:
    """Resolve a built-in suite name or an import path ``package.module:NAME``.

    ``NAME`` may be a :class:`TrainingTask`, a list or tuple of them, or a
    callable returning either. Raises :class:`TaskError` with a fix on failure.
    """
    from fitpilot.envs.suites import SUITES

    if ":" not in spec:
        if spec in SUITES:
            return list(SUITES[spec]())
        raise TaskError(
            f"unknown suite {spec!r}; built-in suites are {', '.join(sorted(SUITES))}, "
            f"or give an import path such as my_package.my_module:TASKS"
        )
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise TaskError(f"bad import path {spec!r}; write it as package.module:NAME")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TaskError(
            f"cannot import module {module_name!r} from {spec!r} ({exc}); check the name "
            f"and that it is on PYTHONPATH"
        ) from exc
    if not hasattr(module, attribute):
        raise TaskError(f"module {module_name!r} has no attribute {attribute!r} (from {spec!r})")
    value = getattr(module, attribute)
    if callable(value) and not isinstance(value, TrainingTask):
        value = value()
    tasks = [value] if isinstance(value, TrainingTask) else value
    if not isinstance(tasks, Sequence) or not all(isinstance(t, TrainingTask) for t in tasks):
        raise TaskError(
            f"{spec!r} is a {type(value).__name__}, not a TrainingTask or a list of them"
        )
    if not tasks:
        raise TaskError(f"{spec!r} is an empty task list; give at least one TrainingTask")
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise TaskError(f"{spec!r} has duplicate task names: {sorted(names)}")
    return list(tasks)


def resolve_tasks(suite: str | None, tasks: str | None, default: str = "train") -> list[TrainingTask]:
    """The tasks named by the command-line pair ``--suite`` / ``--tasks`` (one at most)."""
    if suite and tasks:
        raise TaskError("give --suite or --tasks, not both")
    return load_tasks(tasks or suite or default)

"""Training tasks: what to train, on which data, with which optimizer and budget.

A :class:`TrainingTask` is a small value object. Users define their own in
Python; every command that takes tasks accepts a built-in suite name or an
import path ``package.module:NAME`` pointing at a task or a list of tasks.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from fitpilot.errors import FitpilotError, first_line

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
        """Raise :class:`TaskError` unless the data splits and the model fit together.

        Builds one model (uncompiled) and runs it on two training rows: the
        inputs must be accepted, the output shape must match the targets for
        the task's loss, and the loss must be finite. Imports TensorFlow.
        """
        import keras

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


def load_tasks(spec: str, check: bool = False) -> list[TrainingTask]:
    """Resolve a built-in suite name or an import path ``package.module:NAME``.

    ``NAME`` may be a :class:`TrainingTask`, a list or tuple of them, or a
    callable returning either. Modules are looked up on ``sys.path`` and in
    the current directory. With ``check``, each task from an import path is
    validated with :meth:`TrainingTask.check` (builds its model; imports
    TensorFlow); built-in suites are trusted. Raises :class:`TaskError` with
    a fix on failure.
    """
    from fitpilot.envs.suites import SUITES

    if ":" not in spec:
        if spec in SUITES:
            return list(SUITES[spec]())
        raise TaskError(
            f"unknown suite {spec!r}; built-in suites are {', '.join(sorted(SUITES))}, "
            f"or give an import path such as my_package.my_module:TASKS"
        )
    tasks = _import_tasks(spec)
    if check:
        for task in tasks:
            task.check()
    return tasks


def _import_tasks(spec: str) -> list[TrainingTask]:
    """The tasks that the import path ``package.module:NAME`` points at."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute or ":" in attribute or module_name.startswith("."):
        raise TaskError(f"bad import path {spec!r}; write it as package.module:NAME")
    if module_name.endswith(".py") or "/" in module_name or "\\" in module_name:
        raise TaskError(
            f"bad import path {spec!r}: {module_name!r} is a file name; write the module "
            f"with dots and no .py, e.g. my_package.my_module:NAME"
        )
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())  # like `python -m`: modules in the current directory
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name + ".").startswith(exc.name + "."):
            raise TaskError(
                f"cannot import module {module_name!r} from {spec!r}: no module named "
                f"{exc.name!r}; check the name, and run from the folder that holds it or "
                f"add that folder to PYTHONPATH"
            ) from exc
        raise TaskError(
            f"importing {module_name!r} failed: {first_line(exc)}; install the missing package"
        ) from exc
    except Exception as exc:
        raise TaskError(
            f"importing {module_name!r} failed: {type(exc).__name__}: {first_line(exc)}; "
            f"fix the module"
        ) from exc
    if not hasattr(module, attribute):
        raise TaskError(
            f"module {module_name!r} has no attribute {attribute!r} (from {spec!r}); "
            f"check the name after the colon"
        )
    value = getattr(module, attribute)
    if callable(value) and not isinstance(value, TrainingTask):
        try:
            value = value()
        except Exception as exc:
            raise TaskError(
                f"calling {spec!r} failed: {type(exc).__name__}: {first_line(exc)}; it "
                f"must take no arguments and return a TrainingTask or a list of them"
            ) from exc
    if isinstance(value, TrainingTask):
        return [value]
    if not isinstance(value, (list, tuple)):
        raise TaskError(
            f"{spec!r} is not a TrainingTask or a list of them (got {type(value).__name__}); "
            f"point the import path at your tasks"
        )
    if not value:
        raise TaskError(f"{spec!r} is an empty task list; give at least one TrainingTask")
    for index, item in enumerate(value):
        if not isinstance(item, TrainingTask):
            raise TaskError(
                f"{spec!r}: item {index} is not a TrainingTask (got {type(item).__name__}); "
                f"give a list of TrainingTask objects"
            )
    names = [t.name for t in value]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise TaskError(f"{spec!r} has duplicate task names {duplicates}; give each a unique name")
    return list(value)


def resolve_tasks(
    suite: str | None, tasks: str | None, default: str = "train", check: bool = False
) -> list[TrainingTask]:
    """The tasks named by the command-line pair ``--suite`` / ``--tasks`` (one at most).

    ``check`` validates tasks from an import path, as in :func:`load_tasks`.
    """
    if suite and tasks:
        raise TaskError("give --suite or --tasks, not both")
    return load_tasks(tasks or suite or default, check=check)

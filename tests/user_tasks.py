"""Test helper: user-defined tasks, good and bad, loaded as ``tests.user_tasks:NAME``.

The data are tiny and generated (40 rows, 4 features, 3 classes), so checking
or training one of these tasks takes well under a second.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from fitpilot.envs.tasks import Split, TaskData, TrainingTask

CLASSES = 3
_CLF = dict(kind="classification", loss="sparse_categorical_crossentropy", metrics=("accuracy",))


def blobs(rows: int = 40, regression: bool = False) -> TaskData:
    """``rows`` rows of 4 features, split 50/25/25; labels 0..2, or float targets (n, 1)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 4)).astype("float32")
    if regression:
        y = (x @ np.arange(1, 5, dtype="float32")).reshape(-1, 1)
    else:
        y = (np.arange(rows) % CLASSES).astype("int32")
    a, b = rows // 2, rows * 3 // 4
    return TaskData(Split(x[:a], y[:a]), Split(x[a:b], y[a:b]), Split(x[b:], y[b:]))


def mlp(outputs: int):
    """An uncompiled 4-8-``outputs`` MLP (softmax when ``outputs`` > 1)."""
    import keras  # here: listing these tasks does not load TensorFlow, building a model does

    return keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(outputs, activation="softmax" if outputs > 1 else None),
        ]
    )


# --- good -------------------------------------------------------------------

ONE = TrainingTask("user_mlp", build_model=partial(mlp, CLASSES), load_data=blobs, **_CLF)
TASKS = [
    ONE,
    TrainingTask(
        "user_regression", kind="regression", build_model=partial(mlp, 1),
        load_data=partial(blobs, regression=True), loss="mse", optimizer="sgd",
        learning_rate=0.01,
    ),
]


def make_tasks() -> list[TrainingTask]:
    """A callable is accepted too: it is called with no arguments."""
    return TASKS


# --- not tasks --------------------------------------------------------------

NOT_A_TASK = 42
EMPTY: list[TrainingTask] = []
MIXED = [ONE, "digits_mlp"]

# --- tasks whose model or data are wrong --------------------------------------

TOO_FEW_CLASSES = TrainingTask(  # labels 0..2, two output units
    "too_few_classes", build_model=partial(mlp, 2), load_data=blobs, **_CLF
)
WRONG_OUTPUT_WIDTH = TrainingTask(  # targets (n, 1), outputs (n, 3): mse would broadcast
    "wrong_output_width", kind="regression", build_model=partial(mlp, 3),
    load_data=partial(blobs, regression=True), loss="mse",
)


def _without_test_split() -> TaskData:
    data = blobs()
    return TaskData(data.train, data.validation, None)  # type: ignore[arg-type]


def _forgot_test_split() -> TaskData:
    data = blobs()
    return TaskData(data.train, data.validation)  # type: ignore[call-arg]


def _short_targets() -> TaskData:
    data = blobs()
    return TaskData(Split(data.train.x, data.train.y[:-1]), data.validation, data.test)


MISSING_SPLIT = TrainingTask(
    "missing_split", build_model=partial(mlp, CLASSES), load_data=_without_test_split, **_CLF
)
FORGOT_SPLIT = TrainingTask(
    "forgot_split", build_model=partial(mlp, CLASSES), load_data=_forgot_test_split, **_CLF
)
SHORT_TARGETS = TrainingTask(
    "short_targets", build_model=partial(mlp, CLASSES), load_data=_short_targets, **_CLF
)

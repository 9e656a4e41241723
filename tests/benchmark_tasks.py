"""Test helper: tiny tasks for benchmark tests, loaded as ``tests.benchmark_tasks:NAME``.

Three Gaussian blobs in 4 dimensions (240 rows, 120/60/60), a 4-16-3 MLP and a
budget of 8 epochs: one run takes a fraction of a second.
"""

from __future__ import annotations

import numpy as np

from fitpilot.envs.tasks import Split, TaskData, TrainingTask


def blobs(rows: int = 240, seed: int = 0) -> TaskData:
    """Three overlapping Gaussian blobs: x ``(rows, 4)`` float32, labels ``(rows,)`` int32."""
    rng = np.random.default_rng(seed)
    y = (np.arange(rows) % 3).astype("int32")
    centres = rng.normal(0, 1.5, size=(3, 4))
    x = (centres[y] + rng.normal(size=(rows, 4))).astype("float32")
    order = rng.permutation(rows)
    x, y = x[order], y[order]
    a, b = rows // 2, rows * 3 // 4
    return TaskData(Split(x[:a], y[:a]), Split(x[a:b], y[a:b]), Split(x[b:], y[b:]))


def mlp() -> object:
    import keras

    return keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )


def tiny(name: str = "tiny_blobs", epochs: int = 8) -> TrainingTask:
    return TrainingTask(
        name, kind="classification", build_model=mlp, load_data=blobs,
        loss="sparse_categorical_crossentropy", metrics=("accuracy",), optimizer="adam",
        learning_rate=0.01, batch_size=32, epochs=epochs,
    )


TASKS = [tiny()]
#: A longer budget, so that a benchmark is still running when a test kills it.
LONGER = [tiny("tiny_blobs_long", epochs=20)]
EMPTY: list[TrainingTask] = []
TWO = [tiny("tiny_a"), tiny("tiny_b", epochs=6)]
SAME_NAME_OTHER_BUDGET = [tiny(epochs=5)]


# --- tasks whose runs fail (a failed run is a result, not a crash) -----------------------

#: Set (to anything) in the environment of a benchmark: the task SCHEDULE_FAILS then fails.
FAIL_WITH_A_SCHEDULE = "FITPILOT_TEST_FAIL_WITH_A_SCHEDULE"


def float_rate_adam(learning_rate):
    """A user's optimizer factory that wants a float rate: a learning-rate schedule (the
    ``cosine`` strategy's) makes it raise, while the variable ``FAIL_WITH_A_SCHEDULE`` is
    set; unset, it passes the schedule on (so a resumed benchmark can succeed)."""
    import os

    import keras

    if os.environ.get(FAIL_WITH_A_SCHEDULE):
        learning_rate = float(learning_rate)  # TypeError for a CosineDecay
    return keras.optimizers.Adam(learning_rate=learning_rate)


def failing_mlp() -> object:
    """The 4-16-3 MLP plus a layer that raises in training (inference works)."""
    import keras

    class FailsInTraining(keras.layers.Layer):
        def call(self, inputs, training=None):
            if training:
                raise RuntimeError("this layer cannot train")
            return inputs

    return keras.Sequential([mlp(), FailsInTraining()])


SCHEDULE_FAILS = [
    TrainingTask(
        "schedule_fails", kind="classification", build_model=mlp, load_data=blobs,
        loss="sparse_categorical_crossentropy", metrics=("accuracy",), optimizer=float_rate_adam,
        learning_rate=0.01, batch_size=32, epochs=4,
    )
]
ALWAYS_FAILS = [
    TrainingTask(
        "always_fails", kind="classification", build_model=failing_mlp, load_data=blobs,
        loss="sparse_categorical_crossentropy", metrics=("accuracy",), optimizer="adam",
        learning_rate=0.01, batch_size=32, epochs=4,
    )
]

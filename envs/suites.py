"""Built-in task suites: ``train`` and ``train_v2`` (for training controllers),
``validation`` (for choosing recipes and checkpoints) and ``holdout`` (never trained on).

All data ships with scikit-learn or is generated: nothing downloads. Datasets
are kept small so that one epoch takes a few milliseconds with the fast
runner. ``holdout`` differs from ``train`` in dataset or architecture for
every task. ``train`` is the shipped controller's suite and stays as it is;
``train_v2`` adds varied tasks to it (datasets, widths and depths, dropout,
batch normalisation, SGD with momentum and AdamW, batch sizes, budgets of
20 to 100 epochs). ``validation`` uses datasets that neither ``train_v2`` nor
``holdout`` uses. Tasks of ``train_v2`` and ``validation`` carry their
measured ``tuned_learning_rate`` (:data:`TUNED_LEARNING_RATES`). The ``real`` suite
(real data from the ``data`` extra, reported like ``holdout``) lives in
:mod:`fitpilot.envs.real_suite`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial

import numpy as np

from fitpilot.envs.real_suite import real_suite
from fitpilot.envs.splits import DATA_SEED, split_arrays
from fitpilot.envs.tasks import Split, TaskData, TrainingTask


def digits_data(train_rows: int | None = None, as_image: bool = False) -> TaskData:
    from sklearn.datasets import load_digits  # here: scikit-learn loads in ~1 s

    x, y = load_digits(return_X_y=True)
    data = split_arrays(x, y, train_rows=train_rows)
    if as_image:
        data = TaskData(*(Split(s.x.reshape(-1, 8, 8, 1), s.y) for s in _splits(data)))
    return data


def digits_rows_data(train_rows: int | None = None) -> TaskData:
    """Digits as sequences: 8 time steps (image rows) of 8 features."""
    data = digits_data(train_rows=train_rows)
    return TaskData(*(Split(s.x.reshape(-1, 8, 8), s.y) for s in _splits(data)))


def _splits(data: TaskData) -> tuple[Split, Split, Split]:
    return data.train, data.validation, data.test


def sklearn_data(loader: str, regression: bool = False) -> TaskData:
    import sklearn.datasets as datasets  # here: scikit-learn loads in ~1 s

    x, y = getattr(datasets, loader)(return_X_y=True)
    return split_arrays(x, y, standardize_y=regression)


def generated_data(generator: str, regression: bool = False, **kwargs) -> TaskData:
    import sklearn.datasets as datasets  # here: scikit-learn loads in ~1 s

    x, y = getattr(datasets, generator)(random_state=DATA_SEED, **kwargs)
    if generator == "make_hastie_10_2":
        y = (y > 0).astype("int32")
    return split_arrays(x, y, standardize_y=regression)


def binary_data(loader: str) -> TaskData:
    """A two-class sklearn dataset with 0/1 float targets of shape ``(n, 1)`` (for binary
    cross-entropy on one sigmoid output)."""
    data = sklearn_data(loader)
    return TaskData(*(Split(s.x, s.y.astype("float32").reshape(-1, 1)) for s in _splits(data)))


def adding_problem_data(rows: int = 600, steps: int = 10) -> TaskData:
    """The adding problem: 2 features per step (a value in [0, 1), a 0/1 marker on two
    steps); predict the sum of the two marked values. Inputs ``(rows, steps, 2)``."""
    rng = np.random.default_rng(DATA_SEED)
    values = rng.uniform(0, 1, size=(rows, steps))
    marked = np.argsort(rng.uniform(size=(rows, steps)), axis=1)[:, :2]
    markers = np.zeros((rows, steps))
    np.put_along_axis(markers, marked, 1.0, axis=1)
    return split_arrays(
        np.stack([values, markers], axis=-1), (values * markers).sum(axis=1), standardize_y=True
    )


def counting_data(rows: int = 600, steps: int = 10, symbols: int = 3) -> TaskData:
    """Noisy one-hot symbol sequences; the label is the most frequent symbol (ties: lowest).
    Inputs ``(rows, steps, symbols)``."""
    rng = np.random.default_rng(DATA_SEED)
    tokens = rng.integers(symbols, size=(rows, steps))
    x = np.eye(symbols)[tokens] + rng.normal(0, 0.3, size=(rows, steps, symbols))
    counts = np.stack([(tokens == k).sum(axis=1) for k in range(symbols)], axis=1)
    return split_arrays(x, counts.argmax(axis=1))


def lines_data(rows: int = 600, size: int = 10) -> TaskData:
    """Noisy ``size`` x ``size`` images of one line of 4-8 pixels at a random place; the
    label is its direction (horizontal, vertical, diagonal, anti-diagonal). Inputs
    ``(rows, size, size, 1)``."""
    rng = np.random.default_rng(DATA_SEED)
    steps = np.array([(0, 1), (1, 0), (1, 1), (1, -1)])
    images = rng.normal(0, 0.35, size=(rows, size, size))
    labels = rng.integers(len(steps), size=rows)
    for image, label in zip(images, labels, strict=True):
        length = int(rng.integers(4, 9))
        dr, dc = steps[label]
        row = int(rng.integers(0, size - dr * (length - 1)))
        col = int(rng.integers(max(0, -dc * (length - 1)), size - max(0, dc) * (length - 1)))
        for k in range(length):
            image[row + dr * k, col + dc * k] += 1.0
    return split_arrays(images[..., None], labels)


def checkerboard_data(rows: int = 800, flip: float = 0.05) -> TaskData:
    """Points uniform on [-2, 2]^2 labelled by the colour of their unit square (a 4x4
    checkerboard), ``flip`` of the labels flipped. Inputs ``(rows, 2)``."""
    rng = np.random.default_rng(DATA_SEED)
    x = rng.uniform(-2, 2, size=(rows, 2))
    y = (np.floor(x).sum(axis=1) % 2).astype("int32")
    flipped = rng.uniform(size=rows) < flip
    return split_arrays(x, np.where(flipped, 1 - y, y))


def sine_sequence_data(rows: int = 600, steps: int = 12) -> TaskData:
    """Noisy sums of two sines of random frequency; predict the next value."""
    rng = np.random.default_rng(DATA_SEED)
    t = np.arange(steps + 1, dtype="float32")
    freq = rng.uniform(0.05, 0.4, size=(rows, 2))
    phase = rng.uniform(0, 2 * np.pi, size=(rows, 2))
    series = np.sin(freq[:, :1] * t + phase[:, :1]) + 0.5 * np.sin(freq[:, 1:] * t + phase[:, 1:])
    series += rng.normal(0, 0.1, size=series.shape)
    return split_arrays(series[:, :steps, None], series[:, steps], standardize_y=True)


# --- models -----------------------------------------------------------------


def mlp(
    input_shape: tuple[int, ...], hidden: tuple[int, ...], outputs: int, activation: str = "relu"
):
    import keras  # here: building a model loads TensorFlow; listing a suite does not

    layers = [keras.Input(input_shape)]
    layers += [keras.layers.Dense(units, activation=activation) for units in hidden]
    layers.append(keras.layers.Dense(outputs, activation="softmax" if outputs > 1 else None))
    return keras.Sequential(layers)


def small_cnn(input_shape: tuple[int, ...], outputs: int):
    import keras  # here: building a model loads TensorFlow; listing a suite does not

    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(8, 3, activation="relu", padding="same"),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(outputs, activation="softmax"),
        ]
    )


def small_conv1d(input_shape: tuple[int, ...], outputs: int):
    import keras  # here: building a model loads TensorFlow; listing a suite does not

    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv1D(16, 3, activation="relu"),
            keras.layers.Conv1D(16, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(outputs, activation="softmax" if outputs > 1 else None),
        ]
    )


def recurrent(input_shape: tuple[int, ...], cell: str, units: int, outputs: int):
    import keras  # here: building a model loads TensorFlow; listing a suite does not

    layer = {"gru": keras.layers.GRU, "lstm": keras.layers.LSTM, "rnn": keras.layers.SimpleRNN}
    return keras.Sequential(
        [
            keras.Input(input_shape),
            layer[cell](units),
            keras.layers.Dense(outputs, activation="softmax" if outputs > 1 else None),
        ]
    )


def dense_net(
    input_shape: tuple[int, ...],
    hidden: tuple[int, ...],
    outputs: int,
    activation: str = "relu",
    dropout: float = 0.0,
    batch_norm: bool = False,
    output_activation: str | None = None,
):
    """An MLP; with ``batch_norm`` each hidden Dense (no bias) is followed by batch
    normalisation and then the activation; ``dropout`` follows each hidden layer.
    The output is softmax for ``outputs > 1``, else linear, unless ``output_activation``."""
    import keras  # here: building a model loads TensorFlow; listing a suite does not

    layers = [keras.Input(input_shape)]
    for units in hidden:
        if batch_norm:
            layers += [
                keras.layers.Dense(units, use_bias=False),
                keras.layers.BatchNormalization(),
                keras.layers.Activation(activation),
            ]
        else:
            layers.append(keras.layers.Dense(units, activation=activation))
        if dropout:
            layers.append(keras.layers.Dropout(dropout))
    default = "softmax" if outputs > 1 else None
    layers.append(keras.layers.Dense(outputs, activation=output_activation or default))
    return keras.Sequential(layers)


def cnn(
    input_shape: tuple[int, ...],
    outputs: int,
    filters: tuple[int, ...] = (8, 16),
    batch_norm: bool = False,
    dropout: float = 0.0,
):
    """3x3 convolutions (``same`` padding; batch normalisation before the ReLU with
    ``batch_norm``), one 2x2 max-pool, optional dropout, then a softmax Dense."""
    import keras  # here: building a model loads TensorFlow; listing a suite does not

    layers = [keras.Input(input_shape)]
    for count in filters:
        if batch_norm:
            layers += [
                keras.layers.Conv2D(count, 3, padding="same", use_bias=False),
                keras.layers.BatchNormalization(),
                keras.layers.Activation("relu"),
            ]
        else:
            layers.append(keras.layers.Conv2D(count, 3, padding="same", activation="relu"))
    layers += [keras.layers.MaxPooling2D(2), keras.layers.Flatten()]
    if dropout:
        layers.append(keras.layers.Dropout(dropout))
    layers.append(keras.layers.Dense(outputs, activation="softmax"))
    return keras.Sequential(layers)


# --- suites -----------------------------------------------------------------

_CLF = dict(kind="classification", loss="sparse_categorical_crossentropy", metrics=("accuracy",))
_REG = dict(kind="regression", loss="mse", metrics=("mae",))
_BINARY = dict(kind="classification", loss="binary_crossentropy", metrics=("accuracy",))
_MOMENTUM = {"momentum": 0.9}
_NESTEROV = {"momentum": 0.9, "nesterov": True}

#: Tuned learning rate of each ``train_v2`` and ``validation`` task: the constant rate of
#: the v2 tuning grid with the lowest best validation loss, averaged over 3 seeds.
#: Measured by ``experiments/tune_suite.py`` (all figures: experiments/tuned_rates.json).
TUNED_LEARNING_RATES: dict[str, float] = {
    # train_v2
    "digits_mlp": 0.2154,
    "breast_cancer_mlp": 0.001,
    "wine_mlp": 0.4642,
    "diabetes_mlp": 0.02154,
    "friedman1_mlp": 0.1077,
    "moons_mlp": 0.01393,
    "synthetic_clf_mlp": 0.02154,
    "circles_mlp": 0.2321,
    "digits_cnn": 0.02154,
    "sine_gru": 0.004642,
    "clf_bn_adamw": 0.004642,
    "cancer_dropout_sgdm": 0.01,
    "breast_cancer_binary": 0.004642,
    "digits_wide_dropout": 0.004642,
    "digits_deep_bn": 0.04642,
    "digits_cnn_bn_sgdm": 0.04642,
    "diabetes_nesterov": 0.005,
    "blobs_rmsprop": 0.004642,
    "clf_deep_tanh": 0.04642,
    "many_classes_sgdm": 0.04642,
    "friedman2_bn": 0.004642,
    "moons_deep_sgdm": 0.01,
    "circles_adamw": 0.1,
    "swiss_roll_rmsprop": 0.02154,
    "sine_rnn": 0.02154,
    "counting_gru": 0.02154,
    # validation
    "checkerboard_adamw": 0.02154,
    "hastie_dropout_sgdm": 0.01,
    "friedman3_bn_rmsprop": 0.02154,
    "adding_gru": 0.02154,
    "lines_cnn": 0.004642,
    "sparse_linear_sgd": 0.2154,
    "s_curve_tanh": 0.02154,
    "delayed_xor_lstm": 0.02154,
    "stripes_cnn_sgdm": 0.04642,
    "multilabel_adamw": 0.004642,
    "low_rank_regression": 0.02154,
    "waves_conv1d_rmsprop": 0.001,
    "echo_gru_sgdm": 0.04642,
}


def _with_tuned_rates(tasks: list[TrainingTask]) -> list[TrainingTask]:
    """``tasks`` with ``tuned_learning_rate`` set from :data:`TUNED_LEARNING_RATES`."""
    return [
        replace(task, tuned_learning_rate=TUNED_LEARNING_RATES[task.name])
        if task.name in TUNED_LEARNING_RATES
        else task
        for task in tasks
    ]


def train_suite() -> list[TrainingTask]:
    """Ten tasks for training controllers: MLP, CNN and GRU; SGD, Adam and RMSprop."""
    return [
        TrainingTask(
            "digits_mlp", build_model=partial(mlp, (64,), (64, 64), 10),
            load_data=partial(digits_data, train_rows=1400), optimizer="sgd",
            learning_rate=0.01, batch_size=32, epochs=40,
            description="sklearn digits, 64-64-10 MLP (the reference task)", **_CLF,
        ),
        TrainingTask(
            "breast_cancer_mlp", build_model=partial(mlp, (30,), (32, 32), 2),
            load_data=partial(sklearn_data, "load_breast_cancer"), optimizer="adam",
            learning_rate=1e-3, batch_size=32, epochs=40, **_CLF,
        ),
        TrainingTask(
            "wine_mlp", build_model=partial(mlp, (13,), (32,), 3),
            load_data=partial(sklearn_data, "load_wine"), optimizer="rmsprop",
            learning_rate=1e-3, batch_size=16, epochs=40, **_CLF,
        ),
        TrainingTask(
            "diabetes_mlp", build_model=partial(mlp, (10,), (32, 32), 1),
            load_data=partial(sklearn_data, "load_diabetes", regression=True),
            optimizer="adam", learning_rate=1e-3, batch_size=32, epochs=50, **_REG,
        ),
        TrainingTask(
            "friedman1_mlp", build_model=partial(mlp, (10,), (64, 64), 1),
            load_data=partial(generated_data, "make_friedman1", True, n_samples=800, noise=1.0),
            optimizer="sgd", optimizer_kwargs={"momentum": 0.9}, learning_rate=0.005,
            batch_size=32, epochs=40, **_REG,
        ),
        TrainingTask(
            "moons_mlp", build_model=partial(mlp, (2,), (32, 32), 2),
            load_data=partial(generated_data, "make_moons", n_samples=600, noise=0.3),
            optimizer="adam", learning_rate=3e-3, batch_size=32, epochs=40, **_CLF,
        ),
        TrainingTask(
            "synthetic_clf_mlp", build_model=partial(mlp, (20,), (64, 32), 4),
            load_data=partial(
                generated_data, "make_classification", n_samples=800, n_features=20,
                n_informative=10, n_classes=4, flip_y=0.05,
            ),
            optimizer="rmsprop", learning_rate=1e-3, batch_size=32, epochs=40, **_CLF,
        ),
        TrainingTask(
            "circles_mlp", build_model=partial(mlp, (2,), (16, 16), 2, "tanh"),
            load_data=partial(
                generated_data, "make_circles", n_samples=600, noise=0.15, factor=0.5
            ),
            optimizer="sgd", learning_rate=0.05, batch_size=32, epochs=40, **_CLF,
        ),
        TrainingTask(
            "digits_cnn", build_model=partial(small_cnn, (8, 8, 1), 10),
            load_data=partial(digits_data, train_rows=600, as_image=True), optimizer="adam",
            learning_rate=1e-3, batch_size=32, epochs=30, **_CLF,
        ),
        TrainingTask(
            "sine_gru", build_model=partial(recurrent, (12, 1), "gru", 16, 1),
            load_data=sine_sequence_data, optimizer="rmsprop", learning_rate=1e-3,
            batch_size=32, epochs=30, **_REG,
        ),
    ]


def train_v2_extra() -> list[TrainingTask]:
    """The tasks ``train_v2`` adds to ``train`` (without tuned rates)."""
    return [
        TrainingTask(
            "clf_bn_adamw", build_model=partial(dense_net, (12,), (32, 32), 3, batch_norm=True),
            load_data=partial(
                generated_data, "make_classification", n_samples=800, n_features=12,
                n_informative=6, n_classes=3, class_sep=1.0, flip_y=0.05,
            ),
            optimizer="adamw", learning_rate=1e-3, batch_size=16, epochs=60, **_CLF,
        ),
        TrainingTask(
            "cancer_dropout_sgdm",
            build_model=partial(dense_net, (30,), (64, 64), 2, dropout=0.3),
            load_data=partial(sklearn_data, "load_breast_cancer"), optimizer="sgd",
            optimizer_kwargs=_MOMENTUM, learning_rate=0.01, batch_size=32, epochs=30, **_CLF,
        ),
        TrainingTask(
            "breast_cancer_binary",
            build_model=partial(dense_net, (30,), (16,), 1, output_activation="sigmoid"),
            load_data=partial(binary_data, "load_breast_cancer"),
            optimizer="rmsprop", learning_rate=1e-3, batch_size=64, epochs=50, **_BINARY,
        ),
        TrainingTask(
            "digits_wide_dropout",
            build_model=partial(dense_net, (64,), (256,), 10, dropout=0.4),
            load_data=partial(digits_data, train_rows=1000), optimizer="adamw",
            learning_rate=1e-3, batch_size=64, epochs=25, **_CLF,
        ),
        TrainingTask(
            "digits_deep_bn",
            build_model=partial(dense_net, (64,), (32, 32, 32, 32), 10, batch_norm=True),
            load_data=partial(digits_data, train_rows=1000), optimizer="sgd",
            optimizer_kwargs=_MOMENTUM, learning_rate=0.01, batch_size=128, epochs=20, **_CLF,
        ),
        TrainingTask(
            "digits_cnn_bn_sgdm", build_model=partial(cnn, (8, 8, 1), 10, batch_norm=True),
            load_data=partial(digits_data, train_rows=600, as_image=True), optimizer="sgd",
            optimizer_kwargs=_MOMENTUM, learning_rate=0.01, batch_size=64, epochs=20, **_CLF,
        ),
        TrainingTask(
            "diabetes_nesterov", build_model=partial(dense_net, (10,), (16,), 1),
            load_data=partial(sklearn_data, "load_diabetes", regression=True),
            optimizer="sgd", optimizer_kwargs=_NESTEROV, learning_rate=0.005, batch_size=16,
            epochs=100, **_REG,
        ),
        TrainingTask(
            "blobs_rmsprop", build_model=partial(dense_net, (8,), (32,), 5),
            load_data=partial(
                generated_data, "make_blobs", n_samples=800, n_features=8, centers=5,
                cluster_std=6.0,
            ),
            optimizer="rmsprop", learning_rate=1e-3, batch_size=64, epochs=20, **_CLF,
        ),
        TrainingTask(
            "clf_deep_tanh",
            build_model=partial(dense_net, (30,), (32, 32, 32, 32), 2, "tanh"),
            load_data=partial(
                generated_data, "make_classification", n_samples=1000, n_features=30,
                n_informative=15, flip_y=0.1,
            ),
            optimizer="sgd", learning_rate=0.01, batch_size=16, epochs=60, **_CLF,
        ),
        TrainingTask(
            "many_classes_sgdm",
            build_model=partial(dense_net, (40,), (128, 64), 10, dropout=0.2),
            load_data=partial(
                generated_data, "make_classification", n_samples=1500, n_features=40,
                n_informative=20, n_classes=10, n_clusters_per_class=1,
            ),
            optimizer="sgd", optimizer_kwargs=_MOMENTUM, learning_rate=0.01, batch_size=64,
            epochs=30, **_CLF,
        ),
        TrainingTask(
            "friedman2_bn", build_model=partial(dense_net, (4,), (64, 64), 1, batch_norm=True),
            load_data=partial(generated_data, "make_friedman2", True, n_samples=800, noise=50.0),
            optimizer="adam", learning_rate=1e-3, batch_size=64, epochs=60, **_REG,
        ),
        TrainingTask(
            "moons_deep_sgdm", build_model=partial(dense_net, (2,), (16, 16, 16, 16), 2),
            load_data=partial(generated_data, "make_moons", n_samples=600, noise=0.25),
            optimizer="sgd", optimizer_kwargs=_MOMENTUM, learning_rate=0.01, batch_size=16,
            epochs=80, **_CLF,
        ),
        TrainingTask(
            "circles_adamw", build_model=partial(dense_net, (2,), (64,), 2),
            load_data=partial(
                generated_data, "make_circles", n_samples=600, noise=0.1, factor=0.6
            ),
            optimizer="adamw", learning_rate=1e-3, batch_size=64, epochs=100, **_CLF,
        ),
        TrainingTask(
            "swiss_roll_rmsprop", build_model=partial(dense_net, (3,), (64, 64), 1),
            load_data=partial(generated_data, "make_swiss_roll", True, n_samples=800, noise=0.5),
            optimizer="rmsprop", learning_rate=1e-3, batch_size=32, epochs=40, **_REG,
        ),
        TrainingTask(
            "sine_rnn", build_model=partial(recurrent, (12, 1), "rnn", 16, 1),
            load_data=sine_sequence_data, optimizer="adam", learning_rate=1e-3,
            batch_size=64, epochs=60, **_REG,
        ),
        TrainingTask(
            "counting_gru", build_model=partial(recurrent, (10, 3), "gru", 16, 3),
            load_data=counting_data, optimizer="rmsprop", learning_rate=1e-3,
            batch_size=32, epochs=40, **_CLF,
        ),
    ]


def train_v2_suite() -> list[TrainingTask]:
    """``train`` plus :func:`train_v2_extra`: 26 tasks, each with its tuned learning rate."""
    return _with_tuned_rates(train_suite() + train_v2_extra())


def validation_suite() -> list[TrainingTask]:
    """Thirteen tasks for choosing recipes, on datasets no other suite uses: seven small
    ones, then :func:`validation_v3_tasks`."""
    return _with_tuned_rates([
        TrainingTask(
            "checkerboard_adamw", build_model=partial(dense_net, (2,), (32, 32), 2),
            load_data=checkerboard_data, optimizer="adamw", learning_rate=1e-3,
            batch_size=16, epochs=60, **_CLF,
        ),
        TrainingTask(
            "hastie_dropout_sgdm",
            build_model=partial(dense_net, (10,), (64, 64), 2, dropout=0.2),
            load_data=partial(generated_data, "make_hastie_10_2", n_samples=1000),
            optimizer="sgd", optimizer_kwargs=_MOMENTUM, learning_rate=0.01, batch_size=32,
            epochs=40, **_CLF,
        ),
        TrainingTask(
            "friedman3_bn_rmsprop",
            build_model=partial(dense_net, (4,), (32, 32), 1, batch_norm=True),
            load_data=partial(generated_data, "make_friedman3", True, n_samples=800, noise=0.1),
            optimizer="rmsprop", learning_rate=1e-3, batch_size=32, epochs=50, **_REG,
        ),
        TrainingTask(
            "adding_gru", build_model=partial(recurrent, (10, 2), "gru", 16, 1),
            load_data=adding_problem_data, optimizer="adamw", learning_rate=1e-3,
            batch_size=32, epochs=40, **_REG,
        ),
        TrainingTask(
            "lines_cnn", build_model=partial(cnn, (10, 10, 1), 4, dropout=0.25),
            load_data=lines_data, optimizer="adam", learning_rate=1e-3, batch_size=32,
            epochs=30, **_CLF,
        ),
        TrainingTask(
            "sparse_linear_sgd", build_model=partial(dense_net, (20,), (128,), 1),
            load_data=partial(
                generated_data, "make_sparse_uncorrelated", True, n_samples=800, n_features=20
            ),
            optimizer="sgd", learning_rate=0.01, batch_size=32, epochs=40, **_REG,
        ),
        TrainingTask(
            "s_curve_tanh", build_model=partial(dense_net, (3,), (32, 32, 32), 1, "tanh"),
            load_data=partial(generated_data, "make_s_curve", True, n_samples=800, noise=0.1),
            optimizer="adam", learning_rate=1e-3, batch_size=64, epochs=80, **_REG,
        ),
        *validation_v3_tasks(),
    ])


def validation_v3_tasks() -> list[TrainingTask]:
    """The validation suite's second half (controller v3): recurrent, convolutional,
    multi-label and larger regression tasks, on generators no other suite uses."""
    from fitpilot.envs import validation_data as data  # the generators of these tasks only

    return [
        TrainingTask(
            "delayed_xor_lstm", build_model=partial(recurrent, (12, 1), "lstm", 24, 2),
            load_data=data.delayed_xor_data, optimizer="adam", learning_rate=1e-3,
            batch_size=32, epochs=40, **_CLF,
        ),
        TrainingTask(
            "stripes_cnn_sgdm", build_model=partial(cnn, (12, 12, 1), 4, filters=(8, 16)),
            load_data=data.stripes_data, optimizer="sgd", optimizer_kwargs=_MOMENTUM,
            learning_rate=0.01, batch_size=32, epochs=30, **_CLF,
        ),
        TrainingTask(
            "multilabel_adamw",
            build_model=partial(dense_net, (20,), (64,), 5, output_activation="sigmoid"),
            load_data=data.multilabel_data, optimizer="adamw", learning_rate=1e-3,
            batch_size=32, epochs=40, kind="classification", loss="binary_crossentropy",
            metrics=("binary_accuracy",),
        ),
        TrainingTask(
            "low_rank_regression", build_model=partial(dense_net, (40,), (64, 64), 1),
            load_data=data.low_rank_regression_data, optimizer="adam", learning_rate=1e-3,
            batch_size=64, epochs=30, **_REG,
        ),
        TrainingTask(
            "waves_conv1d_rmsprop", build_model=partial(small_conv1d, (32, 1), 1),
            load_data=data.waves_data, optimizer="rmsprop", learning_rate=1e-3, batch_size=32,
            epochs=30, **_REG,
        ),
        TrainingTask(
            "echo_gru_sgdm", build_model=partial(recurrent, (10, 1), "gru", 16, 1),
            load_data=data.echo_data, optimizer="sgd", optimizer_kwargs=_MOMENTUM,
            learning_rate=0.01, batch_size=32, epochs=40, **_REG,
        ),
    ]


def holdout_suite() -> list[TrainingTask]:
    """Four tasks never trained on: new datasets, or architectures (LSTM, Conv1D) not in train."""
    return [
        TrainingTask(
            "quantiles_mlp", build_model=partial(mlp, (6,), (32, 32), 3),
            load_data=partial(
                generated_data, "make_gaussian_quantiles", n_samples=800, n_features=6,
                n_classes=3,
            ),
            optimizer="adam", learning_rate=1e-3, batch_size=32, epochs=40, **_CLF,
        ),
        TrainingTask(
            "digits_lstm", build_model=partial(recurrent, (8, 8), "lstm", 32, 10),
            load_data=partial(digits_rows_data, train_rows=600), optimizer="rmsprop",
            learning_rate=2e-3, batch_size=32, epochs=30, **_CLF,
        ),
        TrainingTask(
            "regression_sgd", build_model=partial(mlp, (30,), (64, 32), 1),
            load_data=partial(
                generated_data, "make_regression", True, n_samples=600, n_features=30,
                n_informative=15, noise=30.0,
            ),
            optimizer="sgd", learning_rate=0.01, batch_size=32, epochs=40, **_REG,
        ),
        TrainingTask(
            "sine_conv1d", build_model=partial(small_conv1d, (12, 1), 1),
            load_data=sine_sequence_data, optimizer="adam", learning_rate=1e-3,
            batch_size=32, epochs=40, **_REG,
        ),
    ]


SUITES: dict[str, Callable[[], list[TrainingTask]]] = {
    "train": train_suite,
    "train_v2": train_v2_suite,
    "validation": validation_suite,
    "holdout": holdout_suite,
    "real": real_suite,
}

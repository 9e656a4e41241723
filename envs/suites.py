"""Built-in task suites: ``train`` (for training controllers) and ``holdout`` (never trained on).

All data ships with scikit-learn or is generated: nothing downloads. Datasets
are kept small so that one epoch takes a few milliseconds with the fast
runner. ``holdout`` differs from ``train`` in dataset or architecture for
every task.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np

from fitpilot.envs.tasks import Split, TaskData, TrainingTask

DATA_SEED = 1234
TRAIN_SHARE, VALIDATION_SHARE = 0.6, 0.2


# --- data -------------------------------------------------------------------


def _split(
    x: np.ndarray, y: np.ndarray, standardize_y: bool = False, train_rows: int | None = None
) -> TaskData:
    """Shuffle (fixed seed), split 60/20/20 or ``train_rows`` + up to 300 + 300, standardise."""
    order = np.random.default_rng(DATA_SEED).permutation(len(x))
    x, y = x[order].astype("float32"), y[order]
    n_train = train_rows or int(TRAIN_SHARE * len(x))
    n_val = min((len(x) - n_train) // 2, 300) if train_rows else int(VALIDATION_SHARE * len(x))
    n_test = n_val if train_rows else len(x) - n_train - n_val
    parts = np.split(np.arange(n_train + n_val + n_test), [n_train, n_train + n_val])
    flat = x[parts[0]].reshape(n_train, -1)
    mean = flat.mean(axis=0).reshape(x.shape[1:])
    std = flat.std(axis=0).reshape(x.shape[1:])
    std = np.where(std < 1e-3, 1.0, std)  # constant features (blank digit pixels) stay 0
    x = (x - mean) / std
    if standardize_y:
        y = y.astype("float32")
        y = ((y - y[parts[0]].mean()) / (y[parts[0]].std() + 1e-6)).reshape(-1, 1)
    else:
        y = y.astype("int32")
    return TaskData(*(Split(x[p], y[p]) for p in parts))


def digits_data(train_rows: int | None = None, as_image: bool = False) -> TaskData:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    data = _split(x, y, train_rows=train_rows)
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
    import sklearn.datasets as datasets

    x, y = getattr(datasets, loader)(return_X_y=True)
    return _split(x, y, standardize_y=regression)


def generated_data(generator: str, regression: bool = False, **kwargs) -> TaskData:
    import sklearn.datasets as datasets

    x, y = getattr(datasets, generator)(random_state=DATA_SEED, **kwargs)
    if generator == "make_hastie_10_2":
        y = (y > 0).astype("int32")
    return _split(x, y, standardize_y=regression)


def sine_sequence_data(rows: int = 600, steps: int = 12) -> TaskData:
    """Noisy sums of two sines of random frequency; predict the next value."""
    rng = np.random.default_rng(DATA_SEED)
    t = np.arange(steps + 1, dtype="float32")
    freq = rng.uniform(0.05, 0.4, size=(rows, 2))
    phase = rng.uniform(0, 2 * np.pi, size=(rows, 2))
    series = np.sin(freq[:, :1] * t + phase[:, :1]) + 0.5 * np.sin(freq[:, 1:] * t + phase[:, 1:])
    series += rng.normal(0, 0.1, size=series.shape)
    return _split(series[:, :steps, None], series[:, steps], standardize_y=True)


# --- models -----------------------------------------------------------------


def mlp(
    input_shape: tuple[int, ...], hidden: tuple[int, ...], outputs: int, activation: str = "relu"
):
    import keras

    layers = [keras.Input(input_shape)]
    layers += [keras.layers.Dense(units, activation=activation) for units in hidden]
    layers.append(keras.layers.Dense(outputs, activation="softmax" if outputs > 1 else None))
    return keras.Sequential(layers)


def small_cnn(input_shape: tuple[int, ...], outputs: int):
    import keras

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
    import keras

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
    import keras

    layer = {"gru": keras.layers.GRU, "lstm": keras.layers.LSTM, "rnn": keras.layers.SimpleRNN}
    return keras.Sequential(
        [
            keras.Input(input_shape),
            layer[cell](units),
            keras.layers.Dense(outputs, activation="softmax" if outputs > 1 else None),
        ]
    )


# --- suites -----------------------------------------------------------------

_CLF = dict(kind="classification", loss="sparse_categorical_crossentropy", metrics=("accuracy",))
_REG = dict(kind="regression", loss="mse", metrics=("mae",))


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
    "holdout": holdout_suite,
}

"""Epoch runners: logs equal model.fit's, seeded resets, no retracing, the generic fit path."""

from __future__ import annotations

import gc
import math
import threading
from functools import partial

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import config as tf_config

from fitpilot.controller.actions import ActionError
from fitpilot.envs.fit_runner import FitEpochRunner
from fitpilot.envs.model_state import ModelResetter, RunnerError
from fitpilot.envs.runner import FastEpochRunner, make_runner
from fitpilot.envs.suites import digits_data, mlp, recurrent, small_cnn
from fitpilot.envs.tasks import Split, TaskData, TrainingTask

CLF = dict(kind="classification", loss="sparse_categorical_crossentropy", metrics=("accuracy",))


def _digits(train_rows: int = 170, rows: int = 250, image: bool = False) -> TaskData:
    """A small slice of sklearn digits: ``train_rows`` for training, the rest split in two."""
    data = digits_data(train_rows=train_rows, as_image=image)
    rest = (rows - train_rows) // 2
    return TaskData(
        data.train,
        Split(data.validation.x[:rest], data.validation.y[:rest]),
        Split(data.test.x[:rest], data.test.y[:rest]),
    )


def _sequences() -> TaskData:
    data = _digits()
    return TaskData(
        *(Split(s.x.reshape(-1, 8, 8), s.y) for s in (data.train, data.validation, data.test))
    )


MLP_SGD = TrainingTask(
    "tiny_mlp_sgd",
    build_model=partial(mlp, (64,), (32,), 10),
    load_data=_digits,
    optimizer="sgd",
    optimizer_kwargs={"momentum": 0.5},
    learning_rate=0.05,
    batch_size=32,
    **CLF,
)
CNN_ADAM = TrainingTask(
    "tiny_cnn_adam",
    build_model=partial(small_cnn, (8, 8, 1), 10),
    load_data=partial(_digits, image=True),
    optimizer="adam",
    learning_rate=3e-3,
    batch_size=24,
    **CLF,
)
LSTM_ADAM = TrainingTask(
    "tiny_lstm_adam",
    build_model=partial(recurrent, (8, 8), "lstm", 8, 10),
    load_data=_sequences,
    optimizer="adam",
    learning_rate=3e-3,
    batch_size=32,
    **CLF,
)


def _dropout_mlp() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )


DROPOUT = TrainingTask(
    "tiny_dropout",
    build_model=_dropout_mlp,
    load_data=_digits,
    optimizer="rmsprop",
    learning_rate=1e-3,
    batch_size=32,
    **CLF,
)


def _fit_history(task: TrainingTask, weights: list[np.ndarray], epochs: int) -> dict:
    data = task.data()
    model = task.compiled_model()
    model.set_weights(weights)
    history = model.fit(
        data.train.x,
        data.train.y,
        batch_size=task.batch_size,
        epochs=epochs,
        shuffle=False,
        validation_data=(data.validation.x, data.validation.y),
        verbose=0,
    )
    return history.history


def _weights(runner) -> list[np.ndarray]:
    return [v.numpy() for v in runner.model.weights]


@pytest.mark.parametrize("task", [MLP_SGD, CNN_ADAM, LSTM_ADAM], ids=lambda t: t.name)
def test_fast_runner_logs_equal_fit(task: TrainingTask) -> None:
    runner = FastEpochRunner(task, shuffle=False)
    runner.reset(seed=11, learning_rate=task.learning_rate)
    history = _fit_history(task, _weights(runner), epochs=3)
    logs = [runner.run_epoch() for _ in range(3)]
    assert set(logs[0]) == set(history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    for key, values in history.items():
        np.testing.assert_allclose([epoch[key] for epoch in logs], values, rtol=1e-5, err_msg=key)
    assert all(isinstance(v, float) for v in logs[0].values())
    assert runner.epoch == 3
    # the partial last batch is trained on: rows are not a multiple of the batch size
    assert len(task.data().train) % task.batch_size != 0


def test_reset_and_learning_rate_changes_do_not_retrace() -> None:
    runner = FastEpochRunner(MLP_SGD)
    for seed, lr in [(1, 0.01), (2, 0.3), (3, 1e-4)]:
        runner.reset(seed, lr)
        runner.run_epoch()
        runner.learning_rate = lr * 2
        runner.run_epoch()
        runner.remember_weights()
        runner.restore_weights()
        runner.evaluate_test()
    assert runner.epoch_function.experimental_get_tracing_count() == 1
    assert runner.test_function.experimental_get_tracing_count() == 1
    assert runner.resetter.reset_function.experimental_get_tracing_count() == 1


def test_learning_rate_is_the_optimizers() -> None:
    runner = FastEpochRunner(MLP_SGD)
    runner.reset(0, 0.02)
    assert runner.learning_rate == pytest.approx(0.02)
    runner.learning_rate = 0.5
    assert float(runner.model.optimizer.learning_rate.numpy()) == pytest.approx(0.5)
    runner.run_epoch()
    momentums = [v for v in runner.model.optimizer.variables if "momentum" in v.path]
    assert runner.model.optimizer.iterations.numpy() == 6  # ceil(170 / 32)
    assert momentums and all(np.any(v.numpy()) for v in momentums)
    runner.reset(0, 0.02)
    assert runner.model.optimizer.iterations.numpy() == 0
    assert all(not np.any(v.numpy()) for v in momentums)


def test_seeded_resets_reproduce_and_seeds_differ() -> None:
    runner = FastEpochRunner(DROPOUT)  # shuffled, with dropout: every source of randomness

    def episode(seed: int) -> tuple[list[np.ndarray], list[dict]]:
        runner.reset(seed, 1e-3)
        start = _weights(runner)
        return start, [runner.run_epoch() for _ in range(3)]

    weights_a, logs_a = episode(5)
    weights_b, logs_b = episode(5)
    weights_c, logs_c = episode(6)
    assert logs_a == logs_b
    assert all(np.array_equal(a, b) for a, b in zip(weights_a, weights_b, strict=True))
    assert logs_a != logs_c
    kernels = [
        (a, c)
        for a, c, v in zip(weights_a, weights_c, runner.model.weights, strict=True)
        if v.name == "kernel"
    ]
    assert kernels and all(not np.array_equal(a, c) for a, c in kernels)


def test_reset_redraws_like_the_initializers() -> None:
    runner = FastEpochRunner(LSTM_ADAM)
    runner.run_epoch()
    runner.reset(3, 1e-3)
    cell = runner.model.layers[0].cell
    bias = cell.bias.numpy()
    units = cell.units
    np.testing.assert_array_equal(bias[units : 2 * units], 1.0)  # unit_forget_bias
    np.testing.assert_array_equal(np.delete(bias, np.s_[units : 2 * units]), 0.0)
    recurrent_kernel = cell.recurrent_kernel.numpy()  # orthogonal initializer
    np.testing.assert_allclose(recurrent_kernel @ recurrent_kernel.T, np.eye(units), atol=1e-5)
    kernel = cell.kernel.numpy()  # glorot uniform: limit sqrt(6 / (fan_in + fan_out))
    assert np.abs(kernel).max() <= math.sqrt(6 / sum(kernel.shape)) + 1e-6
    assert kernel.std() > 0.3 * math.sqrt(6 / sum(kernel.shape)) / math.sqrt(3)
    assert runner.resetter.fallback_variables == []


def test_reset_knows_the_initializers_of_keras_layers() -> None:
    tokens = keras.Input((6,), dtype="int32")
    x = keras.layers.Embedding(20, 8)(tokens)
    x = keras.layers.SeparableConv1D(8, 3, padding="same")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.LayerNormalization()(x)
    x = keras.layers.Bidirectional(keras.layers.GRU(4, return_sequences=True))(x)
    x = keras.layers.MultiHeadAttention(2, 4)(x, x)
    x = keras.layers.PReLU()(keras.layers.Conv1DTranspose(4, 2)(x))
    x = keras.layers.Dropout(0.2)(keras.layers.GlobalAveragePooling1D()(x))
    model = keras.Model(tokens, keras.layers.Dense(3)(x))
    model.compile(optimizer="adam", loss="mse")
    resetter = ModelResetter(model)
    assert resetter.fallback_variables == []
    values = {}
    for seed in (1, 1, 2):
        resetter.reset(seed, 1e-3)
        values.setdefault(seed, []).append([v.numpy() for v in model.variables])
    (first, again), (other,) = values[1], values[2]
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    redrawn = [not np.array_equal(a, c) for a, c in zip(first, other, strict=True)]
    random = [
        v.name != "bias" and np.std(a) > 0 for v, a in zip(model.variables, first, strict=True)
    ]
    assert sum(random) >= 15 and all(r for r, rnd in zip(redrawn, random, strict=True) if rnd)


class _Scale(keras.layers.Layer):
    """A custom layer whose weight has no ``*_initializer`` attribute."""

    def build(self, input_shape: tuple[int, ...]) -> None:
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return x * self.scale


def test_variables_without_initializer_go_back_to_their_construction_value() -> None:
    model = keras.Sequential([keras.Input((4,)), _Scale(), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    resetter = ModelResetter(model)
    assert resetter.fallback_variables == [model.layers[0].scale.path]
    model.fit(np.ones((8, 4)), np.full((8, 1), 5.0), epochs=2, verbose=0)
    assert not np.allclose(model.layers[0].scale.numpy(), 1.0)
    resetter.reset(0, 0.1)
    np.testing.assert_array_equal(model.layers[0].scale.numpy(), 1.0)


def test_divergence_comes_back_as_nan_without_exception() -> None:
    runner = FastEpochRunner(MLP_SGD)
    runner.reset(0, 1e6)
    logs = [runner.run_epoch() for _ in range(2)]
    assert math.isnan(logs[-1]["loss"]) and math.isnan(logs[-1]["val_loss"])
    assert math.isnan(runner.evaluate_test()["loss"])
    runner.reset(0, 0.05)  # a reset repairs the NaN weights
    assert math.isfinite(runner.run_epoch()["loss"])


def test_remember_and_restore_weights() -> None:
    runner = FastEpochRunner(MLP_SGD)
    runner.reset(0, 0.05)
    with pytest.raises(RunnerError, match="before remember_weights"):
        runner.restore_weights()
    runner.run_epoch()
    runner.remember_weights()
    best, test = _weights(runner), runner.evaluate_test()
    runner.run_epoch()
    assert not np.array_equal(best[0], _weights(runner)[0])
    runner.restore_weights()
    assert all(np.array_equal(a, b) for a, b in zip(best, _weights(runner), strict=True))
    assert runner.evaluate_test() == test
    assert set(test) == {"loss", "accuracy"}


def _schedule_task() -> TrainingTask:
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.9)
    return TrainingTask(
        "scheduled",
        build_model=partial(mlp, (64,), (8,), 10),
        load_data=_digits,
        optimizer=lambda lr: keras.optimizers.SGD(learning_rate=schedule),
        **CLF,
    )


def test_a_schedule_learning_rate_is_a_clear_error() -> None:
    task = _schedule_task()
    with pytest.raises(ActionError, match="schedule.*float learning_rate"):
        FastEpochRunner(task)
    data = task.data()
    with pytest.raises(ActionError, match="schedule"):
        FitEpochRunner(
            task.compiled_model(), dict(x=data.train.x, y=data.train.y, validation_split=0.2)
        )


# --- the generic path ------------------------------------------------------------


def _fit_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "fitpilot-fit" and t.is_alive()]


def test_generic_runner_equals_the_fast_runner_on_arrays() -> None:
    fast = FastEpochRunner(MLP_SGD, shuffle=False)
    generic = make_runner(MLP_SGD, fast=False)
    assert isinstance(generic, FitEpochRunner)
    generic._worker.fit_kwargs["shuffle"] = False
    for runner in (fast, generic):
        runner.reset(4, 0.05)
    for _ in range(2):
        a, b = fast.run_epoch(), generic.run_epoch()
        assert a.keys() == b.keys()
        np.testing.assert_allclose(list(a.values()), [b[k] for k in a], rtol=1e-5)
    assert generic.epoch == 2
    test_a, test_b = fast.evaluate_test(), generic.evaluate_test()
    np.testing.assert_allclose(test_a["loss"], test_b["loss"], rtol=1e-5)
    generic.close()
    assert not _fit_threads()


def test_generic_runner_seeded_resets_reproduce() -> None:
    runner = make_runner(MLP_SGD, fast=False)  # fit shuffles the arrays

    def episode(seed: int) -> list[dict]:
        runner.reset(seed, 0.05)
        return [runner.run_epoch() for _ in range(2)]

    first = episode(3)
    tf.random.uniform([2])  # unrelated random ops in between do not matter
    assert episode(3) == first
    assert episode(4) != first
    runner.close()


def test_generic_runner_with_tf_data_and_validation_split() -> None:
    data = MLP_SGD.data()
    train = tf.data.Dataset.from_tensor_slices((data.train.x, data.train.y)).batch(32)
    val = tf.data.Dataset.from_tensor_slices((data.validation.x, data.validation.y)).batch(32)
    keys = {"loss", "accuracy", "val_loss", "val_accuracy"}
    for fit_kwargs in (
        dict(x=train, validation_data=val),
        dict(x=data.train.x, y=data.train.y, batch_size=32, validation_split=0.25),
    ):
        runner = FitEpochRunner(MLP_SGD.compiled_model(), fit_kwargs)
        runner.reset(1, 0.05)
        first, second = runner.run_epoch(), runner.run_epoch()
        assert set(first) == set(second) == keys
        assert second["loss"] < first["loss"]
        runner.learning_rate = 0.01
        assert runner.learning_rate == pytest.approx(0.01)
        with pytest.raises(RunnerError, match="no test data"):
            runner.evaluate_test()
        runner.close()
    assert not _fit_threads()


class _Recorder(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.epochs, self.train_ends = 0, 0

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.epochs += 1

    def on_train_end(self, logs: dict | None = None) -> None:
        self.train_ends += 1


def test_generic_runner_stops_fit_on_reset_and_close() -> None:
    data = MLP_SGD.data()
    recorder = _Recorder()
    runner = FitEpochRunner(
        MLP_SGD.compiled_model(),
        dict(
            x=data.train.x,
            y=data.train.y,
            batch_size=32,
            validation_split=0.25,
            callbacks=[recorder],
        ),
    )
    runner.reset(0, 0.05)
    runner.run_epoch()
    runner.run_epoch()
    assert len(_fit_threads()) == 1
    runner.reset(1, 0.05)  # stops the running fit: its callbacks see the end of training
    assert recorder.train_ends == 1 and recorder.epochs == 2 and not _fit_threads()
    runner.run_epoch()  # a new fit
    runner.close()
    assert recorder.train_ends == 2 and recorder.epochs == 3 and not _fit_threads()
    with pytest.raises(RunnerError, match="closed"):
        runner.run_epoch()


def test_generic_runner_dropped_mid_episode_ends_its_thread() -> None:
    data = MLP_SGD.data()
    runner = FitEpochRunner(
        MLP_SGD.compiled_model(),
        dict(x=data.train.x, y=data.train.y, batch_size=32, validation_split=0.25),
    )
    runner.run_epoch()
    assert len(_fit_threads()) == 1
    del runner
    gc.collect()
    assert not _fit_threads()


def test_generic_runner_reraises_fit_errors_with_their_message() -> None:
    data = MLP_SGD.data()
    wrong_targets = np.zeros((len(data.train), 3), dtype="float32")
    runner = FitEpochRunner(
        MLP_SGD.compiled_model(),
        dict(x=data.train.x, y=wrong_targets, batch_size=32, validation_split=0.25),
    )
    with pytest.raises(ValueError, match="target.shape"):
        runner.run_epoch()
    assert not _fit_threads()
    with pytest.raises(RunnerError, match="validation"):
        FitEpochRunner(MLP_SGD.compiled_model(), dict(x=data.train.x, y=data.train.y))


def test_runners_scope_op_determinism_to_their_own_calls() -> None:
    """Op determinism is on inside each runner call, and the caller's setting after it."""
    data = DROPOUT.data()
    seen: list[bool] = []

    class Probe(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            seen.append(tf_config.is_op_determinism_enabled())

    tf_config.disable_op_determinism()
    fast = FastEpochRunner(DROPOUT)
    epoch_function = fast.epoch_function
    fast.epoch_function = lambda seed: (seen.append(tf_config.is_op_determinism_enabled()),
                                        epoch_function(seed))[1]
    generic = FitEpochRunner(
        DROPOUT.compiled_model(),
        dict(x=data.train.x, y=data.train.y, batch_size=32, validation_split=0.25,
             callbacks=[Probe()]),
    )
    for runner in (fast, generic):
        runner.reset(0, 1e-3)
        runner.run_epoch()
        runner.remember_weights()
        assert not tf_config.is_op_determinism_enabled()
    assert seen == [True, True]
    tf_config.enable_op_determinism()  # a caller who wants it keeps it
    try:
        fast.run_epoch()
        generic.run_epoch()
        assert tf_config.is_op_determinism_enabled()
    finally:
        tf_config.disable_op_determinism()
        generic.close()

"""GreedyLR: the learning rates it sets against a transcription of transformers' scheduler on
scripted losses, and on real fits where raising (or lowering) is right; its best-weight restore,
its argument errors, a schedule refused, NaN handled."""

from __future__ import annotations

import math
import warnings
from typing import Any

import keras
import numpy as np
import pytest

from fitpilot import FitpilotError, GreedyLR
from fitpilot.baselines.greedy_lr import GreedyLRError

# --- the rule against transformers' code --------------------------------------------


def transformers_greedy(lr: float, metrics: list[float], *, mode: str = "min",
                        factor: float = 0.95, patience: int = 10, threshold: float = 1e-6,
                        threshold_mode: str = "abs", cooldown: int = 0, warmup: int = 0,
                        min_lr: float = 1e-3, max_lr: float = 1.0, eps: float = 1e-8,
                        smooth: bool = False, window_size: int = 50,
                        reset_start: int = 500) -> list[float]:
    """The rate after each ``GreedyLR.step(metric)`` of transformers' ``optimization.py``
    (release v5.23.0, lines 581-853: ``StreamingAverage``, ``step``, ``is_better``,
    ``_reduce_lr``, ``_increase_lr``, ``_reset``; Apache 2.0), one parameter group,
    transcribed line for line."""
    init_lr, worst = lr, (math.inf if mode == "min" else -math.inf)
    best, bad, good, cooldown_counter, warmup_counter = worst, 0, 0, 0, 0
    reset_left, values, total, rates = reset_start, [], 0.0, []

    def is_better(current: float, best: float) -> bool:
        if mode == "min":
            if threshold_mode == "rel":
                return current < best * (1.0 - threshold)
            return current < best - threshold
        if threshold_mode == "rel":
            return current > best * (1.0 + threshold)
        return current > best + threshold

    for metric in metrics:
        current = float(metric)
        if smooth:
            values.append(current)
            total += current
            if len(values) > window_size:
                total -= values.pop(0)
            current = total / len(values)
        if cooldown_counter > 0:
            cooldown_counter -= 1
            bad = good = 0
        elif warmup_counter > 0:
            warmup_counter -= 1
            bad = good = 0
        else:
            if is_better(current, best):
                best, bad, good = current, 0, good + 1
            else:
                bad, good = bad + 1, 0
            if good > patience:
                new_lr = min(lr / factor, max_lr)
                if new_lr - lr > eps:
                    lr = new_lr
                reset_left = reset_start
                warmup_counter, good = warmup, 0
            elif bad > patience:
                new_lr = max(lr * factor, min_lr)
                if lr - new_lr > eps:
                    lr = new_lr
                if not lr > min_lr:  # all_at_min
                    reset_left -= 1
                    if reset_left <= 0:  # _reset
                        lr, best, bad, good = init_lr, worst, 0, 0
                        cooldown_counter = warmup_counter = 0
                        reset_left, values, total = reset_start, [], 0.0
                cooldown_counter, bad = cooldown, 0
        rates.append(lr)
    return rates


def tiny_model(lr: float) -> keras.Model:
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(learning_rate=lr), "mse")
    return model


def drive(callback: keras.callbacks.Callback, lr: float, values: list[float],
          monitor: str = "val_loss") -> list[float]:
    """Feed ``values`` to the callback's hooks as the epochs' logs; the ``lr`` it logs each time."""
    callback.set_model(tiny_model(lr))
    callback.set_params({"epochs": len(values), "verbose": 0})
    callback.on_train_begin()
    rates = []
    for epoch, value in enumerate(values):
        logs = {monitor: value, "loss": 1.0}
        callback.on_epoch_end(epoch, logs)
        rates.append(logs["lr"])
    callback.on_train_end()
    return rates


def walk(n: int, seed: int, drift: float = -0.02) -> list[float]:
    rng = np.random.default_rng(seed)
    return list(1.0 + np.cumsum(drift + 0.05 * rng.normal(size=n)))


FALLING = [1.0 / (1 + t) for t in range(30)]
RISING = [1.0 + 0.1 * t for t in range(30)]
CASES: list[tuple[str, float, list[float], dict[str, Any]]] = [
    ("defaults, falling then flat", 0.01, FALLING[:15] + [FALLING[14]] * 25, {}),
    ("defaults, from below min_lr", 1e-4, RISING, {}),
    ("fast, noisy walk", 0.01, walk(60, 0), dict(factor=0.5, patience=1, min_lr=1e-4,
                                                  max_lr=0.5)),
    ("cooldown and warm-up", 0.01, walk(60, 1), dict(factor=0.5, patience=0, cooldown=2,
                                                     warmup=3, min_lr=1e-5)),
    ("smoothing", 0.01, walk(60, 2), dict(factor=0.7, patience=1, smooth=True,
                                          window_size=4, min_lr=1e-5)),
    ("relative threshold", 0.01, walk(60, 3, -0.05), dict(factor=0.8, patience=1, threshold=0.05,
                                                          threshold_mode="rel", min_lr=1e-5)),
    ("mode max", 0.01, walk(60, 4, 0.02), dict(mode="max", factor=0.5, patience=1, min_lr=1e-5)),
    ("clamped at max_lr", 0.25, FALLING, dict(factor=0.5, patience=0, max_lr=1.0)),
    ("reset at min_lr", 4e-3, RISING, dict(factor=0.5, patience=0, reset_start=2)),
    ("NaN counts as no improvement", 0.01,
     [1.0, 0.9, math.nan, 0.8, math.inf, 0.7, 0.6, 0.5, math.nan, 0.4] * 3,
     dict(factor=0.5, patience=0, min_lr=1e-5)),
]


@pytest.mark.parametrize(("lr", "values", "settings"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_rates_match_transformers(lr: float, values: list[float], settings: dict) -> None:
    expected = transformers_greedy(lr, values, **settings)
    keras_names = {"threshold": "min_delta"}
    callback = GreedyLR(**{keras_names.get(k, k): v for k, v in settings.items()})
    rates = drive(callback, lr, values)
    np.testing.assert_allclose(rates, expected, rtol=1e-6)
    assert [d.lr_after for d in callback.decisions] == rates
    assert [d.epoch for d in callback.decisions] == list(range(1, len(values) + 1))


def test_decisions_name_what_happened() -> None:
    callback = GreedyLR(factor=0.5, patience=0, cooldown=1, min_lr=1e-5)
    drive(callback, 0.01, [1.0, 0.5, 0.6, 0.7, 0.4])
    assert [d.action for d in callback.decisions] == ["raise", "raise", "lower", "cooldown",
                                                      "raise"]
    rows = callback.decisions_as_dicts()
    assert rows[0]["lr_before"] == pytest.approx(0.01)
    assert rows[0]["lr_after"] == pytest.approx(0.02)
    assert "raise" in callback.summary()


# --- real fits: raising right, lowering right ---------------------------------------


def regression(rows: int = 256, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Linear targets of 4 unit-normal features: SGD is stable below a rate of about 1."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 4)).astype("float32")
    w = np.array([1.0, -2.0, 0.5, 3.0], dtype="float32")
    return x, (x @ w + 0.1 * rng.normal(size=rows)).astype("float32")[:, None]


def linear_model(lr: float) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(learning_rate=lr), "mse")
    return model


def fit_regression(lr: float, callbacks: list, epochs: int = 20) -> tuple[keras.Model, dict]:
    x, y = regression()
    model = linear_model(lr)
    history = model.fit(x, y, validation_split=0.25, batch_size=32, epochs=epochs, verbose=0,
                        shuffle=False, callbacks=callbacks)
    return model, history.history


def held_out_loss(model: keras.Model) -> float:
    x, y = regression()
    return float(model.evaluate(x[192:], y[192:], verbose=0))


def test_raises_from_a_rate_100x_too_low_and_beats_the_constant_rate() -> None:
    constant, _ = fit_regression(1e-3, [])
    greedy = GreedyLR(factor=0.5, patience=0, min_lr=1e-5, max_lr=1.0)
    model, _ = fit_regression(1e-3, [greedy])
    assert max(d.lr_after for d in greedy.decisions) >= 0.1, greedy.summary()
    assert held_out_loss(model) < 0.1 * held_out_loss(constant)


def test_lowers_from_a_rate_too_high() -> None:
    greedy = GreedyLR(factor=0.5, patience=0, min_lr=1e-5, max_lr=1.0)
    model, _ = fit_regression(0.9, [greedy])
    assert greedy.decisions[-1].lr_after < 0.9 / 8, greedy.summary()
    assert held_out_loss(model) < held_out_loss(fit_regression(0.9, [])[0])


# --- best-weight restore ------------------------------------------------------------


class WeightsPerEpoch(keras.callbacks.Callback):
    def on_train_begin(self, logs: dict | None = None) -> None:
        self.weights: list[list[np.ndarray]] = []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.weights.append(self.model.get_weights())


@pytest.mark.parametrize("restore", [True, False])
def test_restores_the_weights_of_the_best_epoch(restore: bool) -> None:
    # mode="max" on val_loss makes an early epoch the "best", so a restore shows.
    recorder = WeightsPerEpoch()
    greedy = GreedyLR(mode="max", factor=0.5, patience=0, min_lr=1e-5,
                      restore_best_weights=restore)
    model, history = fit_regression(1e-2, [greedy, recorder], epochs=6)
    best = int(np.argmax(history["val_loss"]))
    assert best != 5 and greedy.best_epoch == best + 1
    expected = recorder.weights[best] if restore else recorder.weights[-1]
    for got, want in zip(model.get_weights(), expected, strict=True):
        np.testing.assert_array_equal(got, want)


# --- bad input ----------------------------------------------------------------------


@pytest.mark.parametrize(("argument", "value"), [
    ("monitor", ""), ("mode", "auto"), ("factor", 1.0), ("factor", 0.0), ("factor", "0.5"),
    ("patience", -1), ("patience", 1.5), ("cooldown", -2), ("warmup", True),
    ("min_delta", -1e-3), ("threshold_mode", "relative"), ("min_lr", -1.0),
    ("max_lr", 1e-4), ("eps", math.inf), ("smooth", 1), ("window_size", 0),
    ("reset_start", 0), ("restore_best_weights", "yes"), ("verbose", None),
])
def test_bad_arguments_name_the_argument(argument: str, value: Any) -> None:
    with pytest.raises(GreedyLRError, match=f"`{argument}`") as caught:
        GreedyLR(**{argument: value})
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, FitpilotError)


def test_a_learning_rate_schedule_is_refused() -> None:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    schedule = keras.optimizers.schedules.ExponentialDecay(0.01, 10, 0.9)
    model.compile(keras.optimizers.SGD(learning_rate=schedule), "mse")
    x, y = regression(32)
    with pytest.raises(GreedyLRError, match="schedule"):
        model.fit(x, y, validation_split=0.25, epochs=1, verbose=0, callbacks=[GreedyLR()])


def test_a_missing_monitor_warns_once_and_keeps_the_rate() -> None:
    callback = GreedyLR(factor=0.5, patience=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rates = drive(callback, 0.01, [1.0, 0.5, 0.2], monitor="loss")
    assert rates == [pytest.approx(0.01)] * 3
    assert len([w for w in caught if "not in the epoch logs" in str(w.message)]) == 1


class PoisonAfter(keras.callbacks.Callback):
    """Sets every weight to NaN at the end of epoch ``epochs``: the later losses are NaN."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if epoch + 1 == self.epochs:
            self.model.set_weights([np.full_like(w, np.nan) for w in self.model.get_weights()])


def test_a_diverging_fit_does_not_crash_and_ends_with_finite_weights() -> None:
    greedy = GreedyLR(factor=0.5, patience=0, min_lr=1e-5)
    model, history = fit_regression(0.01, [greedy, PoisonAfter(3)], epochs=6)
    assert np.isnan(history["val_loss"][3:]).all(), greedy.summary()
    assert [d.action for d in greedy.decisions[3:]] == ["lower"] * 3
    assert greedy.best_epoch == 3
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert all(np.isfinite(w).all() for w in model.get_weights())

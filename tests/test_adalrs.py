"""AdaLRS: the learning rates it sets against an independent transcription of its stated rule on
scripted losses; real fits where raising (or lowering) is right; a failed raise rolls the weights
and the optimizer state back exactly; best-weight restore, argument errors, a schedule refused,
NaN handled; both rules on Keras' JAX and torch backends."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from fitpilot import AdaLRS, FitpilotError
from fitpilot.baselines.adalrs import AdaLRSError, descent_velocity
from tests.other_backends import OTHER_BACKENDS, run_on_backend
from tests.test_greedy_lr import (
    PoisonAfter,
    WeightsPerEpoch,
    drive,
    fit_regression,
    held_out_loss,
    regression,
)

ROOT = Path(__file__).resolve().parents[1]

# --- the rule against a transcription -----------------------------------------------


def slope(ys: list[float]) -> float:
    """Ordinary least squares slope of ys against 0, 1, 2..."""
    n = len(ys)
    x_mean, y_mean = (n - 1) / 2, sum(ys) / n
    return (sum((x - x_mean) * (y - y_mean) for x, y in enumerate(ys))
            / sum((x - x_mean) ** 2 for x in range(n)))


def adalrs_rule(lr: float, values: list[float], budget: int, *, mode: str = "min",
                window: int = 3, raise_factor: float = 2.0, lower_factor: float = 0.5,
                search_fraction: float = 0.5, min_lr: float = 1e-7,
                max_lr: float = 10.0) -> tuple[list[float], list[str]]:
    """The rule as baselines/adalrs.py's docstring states it, written again from the text:
    the rate after each epoch and the action taken."""
    sign = -1.0 if mode == "min" else 1.0
    points: list[float] = []
    trial: tuple[float, float] | None = None  # (rate before the raise, velocity before it)
    ceiling = math.inf
    rates, actions = [], []

    def raise_if_allowed(done: int) -> bool:
        nonlocal lr, trial, points
        new_lr = min(lr * raise_factor, max_lr)
        if (len(points) >= window and done <= search_fraction * budget
                and done + window - 1 <= budget and lr < new_lr < ceiling and new_lr >= min_lr):
            trial = (lr, sign * slope(points[-window:]))
            points, lr = points[-1:], new_lr
            return True
        return False

    for done, y in enumerate(values, start=1):
        if trial is not None:
            before, velocity_before = trial
            if math.isfinite(y):
                points.append(y)
            if math.isfinite(y) and len(points) < window:
                action = "trial"
            elif math.isfinite(y) and sign * slope(points) > velocity_before:
                trial = None
                action = "raise" if raise_if_allowed(done) else "accept"
            else:  # failed: back to before the raise, a lower rate, and a ceiling
                ceiling = min(ceiling, lr)
                trial, points = None, points[:1]
                lr = max(before * lower_factor, min_lr)
                action = "rollback"
        elif not math.isfinite(y):
            points, action = [], "nonfinite"
        else:
            points.append(y)
            action = "raise" if raise_if_allowed(done) else "observe"
        rates.append(lr)
        actions.append(action)
    return rates, actions


def accelerating(n: int) -> list[float]:
    """A descent that speeds up: every raise succeeds."""
    return [10.0 - 0.1 * t * t for t in range(n)]


def decelerating(n: int) -> list[float]:
    """A descent that slows down: every raise fails."""
    return [1.0 / (1 + t) for t in range(n)]


def walk(n: int, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    return list(5.0 + np.cumsum(-0.05 + 0.1 * rng.normal(size=n)))


CASES: list[tuple[str, float, list[float], dict[str, Any]]] = [
    ("accelerating", 0.01, accelerating(20), {}),
    ("decelerating", 0.01, decelerating(20), {}),
    ("noisy walk", 0.01, walk(40, 0), dict(search_fraction=1.0)),
    ("noisy walk, window 2", 0.01, walk(40, 1), dict(window=2, search_fraction=0.8)),
    ("noisy walk, window 5", 0.01, walk(40, 2), dict(window=5, search_fraction=1.0)),
    ("other factors", 0.01, walk(40, 3), dict(raise_factor=1.5, lower_factor=0.6,
                                              search_fraction=1.0)),
    ("clamped at max_lr", 0.3, accelerating(20), dict(max_lr=1.0, search_fraction=1.0)),
    ("mode max", 0.01, [-v for v in walk(40, 4)], dict(mode="max", search_fraction=1.0)),
    ("NaN in and out of trials", 0.01,
     [5.0, 4.0, 3.5, math.nan, 3.0, 2.9, 2.7, math.inf, 2.5, 2.2, 2.0, 1.5, math.nan, 1.4,
      1.2, 1.0, 0.9, 0.8, 0.7, 0.6], dict(search_fraction=1.0)),
]


@pytest.mark.parametrize(("lr", "values", "settings"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_rates_match_the_stated_rule(lr: float, values: list[float], settings: dict) -> None:
    expected_rates, expected_actions = adalrs_rule(lr, values, len(values), **settings)
    callback = AdaLRS(**settings)
    rates = drive(callback, lr, values)
    assert [d.action for d in callback.decisions] == expected_actions
    np.testing.assert_allclose(rates, expected_rates, rtol=1e-6)


def test_the_scripted_cases_raise_fail_and_stop() -> None:
    _, up = adalrs_rule(0.01, accelerating(20), 20)
    _, down = adalrs_rule(0.01, decelerating(20), 20)
    assert up.count("raise") >= 4 and "rollback" not in up
    assert down.count("rollback") >= 2 and "accept" not in down
    # No trial starts past half the budget or runs past its end.
    assert "raise" not in up[10:] and up[-1] == "observe"


def test_descent_velocity_is_minus_the_least_squares_slope() -> None:
    assert descent_velocity([3.0, 2.0, 1.0]) == pytest.approx(1.0)
    assert descent_velocity([1.0, 2.0, 4.0]) == pytest.approx(-1.5)
    assert descent_velocity([1.0, 2.0, 4.0], mode="max") == pytest.approx(1.5)
    values = [0.3, 0.1, 0.4, 0.2, 0.5]
    assert descent_velocity(values) == pytest.approx(-np.polyfit(range(5), values, 1)[0])


# --- real fits: raising right, lowering right ---------------------------------------


def test_raises_from_a_rate_100x_too_low_and_beats_the_constant_rate() -> None:
    constant, _ = fit_regression(1e-3, [])
    adalrs = AdaLRS()
    model, _ = fit_regression(1e-3, [adalrs])
    assert max(d.lr_after for d in adalrs.decisions) >= 8e-3, adalrs.summary()
    assert held_out_loss(model) < 0.1 * held_out_loss(constant)


def test_lowers_from_a_rate_too_high_through_failed_raises() -> None:
    adalrs = AdaLRS()
    model, _ = fit_regression(0.9, [adalrs])
    assert [d.action for d in adalrs.decisions].count("rollback") >= 1, adalrs.summary()
    assert adalrs.decisions[-1].lr_after < 0.9
    assert held_out_loss(model) < held_out_loss(fit_regression(0.9, [])[0])


# --- the rollback -------------------------------------------------------------------


def state_of(model: keras.Model) -> list[np.ndarray]:
    """Every variable of the model and of its optimizer but the learning rate, as arrays."""
    rate = model.optimizer.learning_rate
    variables = [*model.variables, *(v for v in model.optimizer.variables if v is not rate)]
    return [np.array(keras.ops.convert_to_numpy(v)) for v in variables]


def check_rollback_restores_exactly() -> None:
    """On the current backend: a failed raise puts back the weights and the optimizer state
    (iterations, Adam's moments) of the end of the epoch the raise came after, exactly.
    Runs the epochs with model.fit and drives the callback's hooks with scripted values."""
    x, y = regression()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="tanh"),
                              keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(learning_rate=1e-3), "mse")
    adalrs = AdaLRS(window=2)
    adalrs.set_model(model)
    adalrs.set_params({"epochs": 10})
    adalrs.on_train_begin()
    snapshots = []
    for epoch, value in enumerate([1.0, 0.9, 0.85]):  # observe, raise, then a slower descent
        model.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
        snapshots.append(state_of(model))
        adalrs.on_epoch_end(epoch, {"val_loss": value})
    assert [d.action for d in adalrs.decisions] == ["observe", "raise", "rollback"]
    iterations = float(keras.ops.convert_to_numpy(model.optimizer.iterations))
    assert iterations == 2 * 8  # the 2 epochs before the raise, 8 batches each
    for got, want in zip(state_of(model), snapshots[1], strict=True):
        np.testing.assert_array_equal(got, want)
    assert adalrs.decisions[-1].lr_after == pytest.approx(5e-4)
    assert any(not np.array_equal(a, b) for a, b in zip(snapshots[1], snapshots[2], strict=True))


def test_a_failed_raise_rolls_back_weights_and_optimizer_state_exactly() -> None:
    check_rollback_restores_exactly()


def test_a_nan_in_a_trial_rolls_back_to_finite_weights() -> None:
    adalrs = AdaLRS(window=2, search_fraction=1.0)
    _, history = fit_regression(0.01, [adalrs, PoisonAfter(3)], epochs=6)
    actions = [d.action for d in adalrs.decisions]
    # epochs 2 and 3 raise (the second after a success); 3's weights are poisoned after it
    # was recorded, so epoch 4 is NaN and fails the trial: back to the end of epoch 3.
    assert actions[:4] == ["observe", "raise", "raise", "rollback"], adalrs.summary()
    assert np.isfinite(history["val_loss"][4:]).all()


# --- best-weight restore, bad input -------------------------------------------------


@pytest.mark.parametrize("restore", [True, False])
def test_restores_the_weights_of_the_best_epoch(restore: bool) -> None:
    recorder = WeightsPerEpoch()
    adalrs = AdaLRS(mode="max", restore_best_weights=restore)  # an early epoch is "best"
    model, history = fit_regression(1e-2, [adalrs, recorder], epochs=6)
    best = int(np.argmax(history["val_loss"]))
    assert best != 5 and adalrs.best_epoch == best + 1
    expected = recorder.weights[best] if restore else recorder.weights[-1]
    for got, want in zip(model.get_weights(), expected, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(("argument", "value"), [
    ("monitor", None), ("mode", "auto"), ("window", 1), ("window", 2.0),
    ("raise_factor", 1.0), ("raise_factor", math.inf), ("lower_factor", 1.0),
    ("lower_factor", 0), ("search_fraction", 0.0), ("search_fraction", 1.5),
    ("min_lr", -1e-7), ("max_lr", 0.0), ("restore_best_weights", 1), ("verbose", "1"),
])
def test_bad_arguments_name_the_argument(argument: str, value: Any) -> None:
    with pytest.raises(AdaLRSError, match=f"`{argument}`") as caught:
        AdaLRS(**{argument: value})
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, FitpilotError)


def test_a_learning_rate_schedule_is_refused() -> None:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    schedule = keras.optimizers.schedules.CosineDecay(0.01, 100)
    model.compile(keras.optimizers.Adam(learning_rate=schedule), "mse")
    x, y = regression(32)
    with pytest.raises(AdaLRSError, match="schedule"):
        model.fit(x, y, validation_split=0.25, epochs=1, verbose=0, callbacks=[AdaLRS()])


# --- other backends -----------------------------------------------------------------

@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_both_rules_on_backend(backend: str) -> None:
    run_on_backend(
        backend,
        "tests.test_adalrs:check_rollback_restores_exactly",
        "tests.test_adalrs:test_raises_from_a_rate_100x_too_low_and_beats_the_constant_rate",
        "tests.test_greedy_lr:test_raises_from_a_rate_100x_too_low_and_beats_the_constant_rate",
    )

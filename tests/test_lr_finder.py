"""The learning-rate range test: its valley rule against fastai's, its suggestion where the
best rate is known, and that it leaves the model and optimizer exactly as they were."""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from fitpilot import LRFinderResult, find_learning_rate
from fitpilot.baselines.lr_finder import LRFinder, LRFinderError
from fitpilot.controller.ramp import suggest, valley_index

# --- the valley rule against fastai's code ------------------------------------------


def fastai_valley(lrs: list[float], losses: list[float]) -> float:
    """``valley`` of fastai/callback/schedule.py (https://github.com/fastai/fastai, commit
    0a049e8, Apache 2.0), transcribed line for line (lists for tensors)."""
    n = len(losses)
    max_start, max_end = 0, 0
    lds = [1] * n
    for i in range(1, n):
        for j in range(0, i):
            if (losses[i] < losses[j]) and (lds[i] < lds[j] + 1):
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    idx = max_start + int(sections) + int(sections / 2)
    return float(lrs[idx])


def fastai_lr_find_suggestion(lrs: list[float], losses: list[float], num_it: int) -> float:
    """The slicing of ``Learner.lr_find`` before ``valley``: ``[num_it//10:-5]``, cut at NaN."""
    lrs, losses = lrs[num_it // 10 : -5], losses[num_it // 10 : -5]
    nan = [i for i, v in enumerate(losses) if math.isnan(v)]
    if nan:
        lrs, losses = lrs[: nan[0]], losses[: nan[0]]
    return fastai_valley(lrs, losses)


def curves() -> list[list[float]]:
    """Fixed loss curves: the usual dip then blow-up, monotone ones, plateaus, noise."""
    t = np.linspace(0, 1, 100)
    rng = np.random.default_rng(0)
    dip = list(2.0 - np.sin(np.pi * t) + 3 * t**8)
    noisy = [list(np.asarray(dip) + 0.05 * rng.normal(size=100)) for _ in range(20)]
    ties = [1.0, 1.0, 0.9, 0.9, 0.8, 1.0, 0.8, 0.7, 0.7, 2.0] * 3
    random = [list(rng.normal(size=int(rng.integers(1, 60)))) for _ in range(30)]
    quirk = [3.0, 2.0, 2.5, 2.6, 2.7]  # fastai's index comes out as -1: the last point
    return [dip, list(1 - t), list(t), [1.0] * 40, ties, [3.0], [3.0, 2.0], quirk, *noisy,
            *random]


@pytest.mark.parametrize("losses", curves())
def test_valley_matches_fastai(losses: list[float]) -> None:
    lrs = list(np.geomspace(1e-7, 10, len(losses)))
    assert lrs[valley_index(losses)] == fastai_valley(lrs, losses)


@pytest.mark.parametrize("losses", curves()[:8])
def test_suggestion_matches_fastai_lr_find(losses: list[float]) -> None:
    num_it = len(losses)
    lrs = list(np.geomspace(1e-7, 10, num_it))
    padded = losses + [1.0] * 5  # lr_find's slice drops the last 5 recorded points
    lrs_padded = lrs + [20.0] * 5
    suggestion, _ = suggest(lrs_padded, padded, num_it)
    assert suggestion == fastai_lr_find_suggestion(lrs_padded, padded, num_it)


def test_quirks_of_valley_are_kept() -> None:
    assert valley_index([3.0, 2.0, 2.5, 2.6, 2.7]) == -1
    assert valley_index([1.0, 2.0, 3.0]) == 0


def test_a_loss_that_never_falls_gets_a_warning() -> None:
    losses = [float(v) for v in np.linspace(1, 3, 50)]
    lrs = list(np.geomspace(1e-7, 10, 50))
    suggestion, warning = suggest(lrs, losses, 50)
    assert suggestion == lrs[5] and "never decreased" in warning


def test_suggestion_stops_at_the_first_nan() -> None:
    losses = [float(v) for v in np.linspace(3, 1, 60)] + [math.nan] * 10
    lrs = list(np.geomspace(1e-7, 10, len(losses)))
    suggestion, warning = suggest(lrs, losses, 70)
    assert suggestion == fastai_lr_find_suggestion(lrs, losses, 70)
    assert suggestion < lrs[60] and warning is None


# --- a problem whose good rates are known ---------------------------------------------


def least_squares(rows: int = 512, features: int = 8) -> tuple[np.ndarray, np.ndarray, float]:
    """Linear data with features of different scales, and SGD's stability limit for
    ``Dense(1)`` under mean squared error: 2 / lambda_max of the loss Hessian."""
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(rows, features)) * np.linspace(0.5, 2.0, features)).astype("float32")
    y = (x @ rng.normal(size=(features, 1)) + 0.1 * rng.normal(size=(rows, 1))).astype("float32")
    with_bias = np.hstack([x, np.ones((rows, 1))])
    hessian = 2 * with_bias.T @ with_bias / rows
    return x, y, 2 / float(np.linalg.eigvalsh(hessian).max())


def linear_model(optimizer: keras.optimizers.Optimizer | None = None) -> keras.Model:
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)])
    model.compile(optimizer or keras.optimizers.SGD(0.01), "mse")
    return model


def test_suggestion_lies_below_the_stability_limit_of_sgd() -> None:
    x, y, stable = least_squares()
    result = find_learning_rate(linear_model(), x, y, batch_size=32, seed=0)
    assert result.warning is None
    # The ramp ran past the limit before the smoothed loss blew up to 4x its best...
    assert result.learning_rates[-1] > stable and result.batches < 100
    # ... and valley picks a rate inside the stable range, within two decades of its edge.
    assert stable / 100 < result.suggestion < stable
    assert len(result.learning_rates) == len(result.losses) == result.batches
    np.testing.assert_allclose(result.learning_rates[:3], 1e-7 * 1e8 ** (np.arange(3) / 100))

    model = linear_model(keras.optimizers.SGD(result.suggestion))
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, batch_size=32, epochs=10, verbose=0)
    assert model.evaluate(x, y, verbose=0) < 0.05 * before


def variables_of(model: keras.Model) -> list[np.ndarray]:
    return [np.array(v.numpy()) for v in [*model.variables, *model.optimizer.variables]]


def test_model_optimizer_and_learning_rate_are_restored_exactly() -> None:
    x, y, _ = least_squares()
    model = keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(16, activation="relu"),
        keras.layers.BatchNormalization(),
        keras.layers.Dropout(0.2),
        keras.layers.Dense(1),
    ])
    model.compile(keras.optimizers.Adam(3e-3), "mse", metrics=["mae"], steps_per_execution=4)
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)  # non-zero moments, iterations 8
    before = variables_of(model)
    result = find_learning_rate(model, x, y, batch_size=32, max_batches=40, seed=1)
    assert result.batches > 10
    after = variables_of(model)
    assert len(after) == len(before)
    for a, b in zip(after, before, strict=True):
        np.testing.assert_array_equal(a, b)
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(3e-3)
    assert int(model.optimizer.iterations.numpy()) == 8


def test_an_unbuilt_optimizer_is_built_and_left_fresh() -> None:
    x, y, _ = least_squares()
    model = linear_model(keras.optimizers.Adam(1e-3))
    find_learning_rate(model, x, y, max_batches=20, seed=0)
    assert model.optimizer.built and int(model.optimizer.iterations.numpy()) == 0
    assert all(not np.any(v) for v in variables_of(model)[2:] if v.ndim)  # zero moments


def test_an_unbuilt_model_is_built_from_the_first_batch() -> None:
    x, y, _ = least_squares()
    model = keras.Sequential([keras.layers.Dense(1)])  # no Input: built on first call
    model.compile(keras.optimizers.SGD(0.01), "mse")
    result = find_learning_rate(model, x, y, max_batches=20, seed=0)
    assert model.built and result.batches == 20 and result.suggestion is not None
    assert int(model.optimizer.iterations.numpy()) == 0


def test_nan_from_the_first_batch_gives_no_suggestion_and_a_warning() -> None:
    x, y, _ = least_squares()
    y = np.full_like(y, np.nan)
    model = linear_model()
    before = variables_of(model)
    result = find_learning_rate(model, x, y)
    assert result.suggestion is None and result.batches == 1
    assert "first batch" in result.warning
    for a, b in zip(variables_of(model), before, strict=True):
        np.testing.assert_array_equal(a, b)


def test_early_divergence_gives_no_suggestion() -> None:
    x, y, _ = least_squares()
    result = find_learning_rate(linear_model(), x, y, start_lr=1.0, end_lr=1e4)
    assert result.suggestion is None and result.batches < 15
    assert "start_lr" in result.warning


def test_a_dataset_is_cycled_over_until_max_batches() -> None:
    x, y, _ = least_squares(rows=96)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)  # 3 batches per pass
    result = find_learning_rate(linear_model(), dataset, start_lr=1e-6, end_lr=1e-3,
                                max_batches=20)
    assert result.batches == 20 and result.suggestion is not None
    assert isinstance(result, LRFinderResult)


def test_callback_in_fit_gives_the_same_curve() -> None:
    x, y, _ = least_squares(rows=256)
    model = linear_model()
    before = variables_of(model)
    finder = LRFinder(max_batches=30)
    model.fit(x, y, batch_size=32, epochs=10, shuffle=False, verbose=0, callbacks=[finder])
    for a, b in zip(variables_of(model), before, strict=True):
        np.testing.assert_array_equal(a, b)
    direct = find_learning_rate(model, x, y, batch_size=32, max_batches=30, shuffle=False)
    assert finder.result.batches == direct.batches
    np.testing.assert_allclose(finder.result.learning_rates, direct.learning_rates, rtol=1e-12)
    np.testing.assert_allclose(finder.result.losses, direct.losses, rtol=1e-5)
    assert finder.result.suggestion == direct.suggestion


def test_plot(tmp_path: Path) -> None:
    x, y, _ = least_squares()
    result = find_learning_rate(linear_model(), x, y, seed=0)
    path = result.plot(tmp_path / "lr.png")
    assert path.stat().st_size > 1000


# --- bad input ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"start_lr": 0.0}, "`start_lr`"),
        ({"end_lr": -1.0}, "`end_lr`"),
        ({"end_lr": math.inf}, "`end_lr`"),
        ({"start_lr": 1.0, "end_lr": 0.1}, "`start_lr`"),
        ({"max_batches": 3}, "`max_batches`"),
        ({"beta": 1.0}, "`beta`"),
        ({"divergence": 1.0}, "`divergence`"),
        ({"batch_size": 0}, "`batch_size`"),
    ],
)
def test_bad_settings_name_the_parameter(settings: dict, named: str) -> None:
    x, y, _ = least_squares(rows=64)
    with pytest.raises(LRFinderError, match=named):
        find_learning_rate(linear_model(), x, y, **settings)


def test_a_schedule_is_refused_with_the_fix() -> None:
    x, y, _ = least_squares(rows=64)
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.9)
    with pytest.raises(LRFinderError, match="schedule.*float learning_rate"):
        find_learning_rate(linear_model(keras.optimizers.SGD(schedule)), x, y)


def test_uncompiled_model_and_empty_data_are_refused() -> None:
    x, y, _ = least_squares(rows=64)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)])
    with pytest.raises(LRFinderError, match="compile"):
        find_learning_rate(model, x, y)
    with pytest.raises(LRFinderError, match="no rows"):
        find_learning_rate(linear_model(), x[:0], y[:0])
    empty = tf.data.Dataset.from_tensor_slices((x, y)).take(0).batch(8)
    with pytest.raises(LRFinderError, match="no batch"):
        find_learning_rate(linear_model(), empty)
    with pytest.raises(LRFinderError, match="`y` must be None"):
        find_learning_rate(linear_model(), tf.data.Dataset.from_tensor_slices(x).batch(8), y)


def test_callback_refuses_steps_per_execution() -> None:
    x, y, _ = least_squares(rows=64)
    model = linear_model()
    model.compile(keras.optimizers.SGD(0.01), "mse", steps_per_execution=2)
    with pytest.raises(LRFinderError, match="steps_per_execution"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[LRFinder()])



def check_restores_exactly() -> None:
    """On the current Keras backend: a probe from a trained state leaves every variable as it was
    (run on JAX and torch by tests/test_other_backends.py)."""
    x, y, _ = least_squares()
    model = linear_model(keras.optimizers.Adam(1e-3))
    model.fit(x, y, epochs=1, verbose=0)
    before = variables_of(model)
    result = find_learning_rate(model, x, y, max_batches=40, seed=0)
    assert result.suggestion is not None and result.batches > 10, result
    for a, b in zip(before, variables_of(model), strict=True):
        np.testing.assert_array_equal(a, b)

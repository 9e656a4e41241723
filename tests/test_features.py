"""The observation featurizer: finite, scale-free, versioned."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fitpilot.controller.features import (
    FEATURE_NAMES,
    FEATURIZER_VERSIONS,
    Featurizer,
    FeaturizerConfig,
    FeaturizerError,
)

BAD_VALUES = [math.nan, math.inf, -math.inf, None, "text", 0.0, -1.0]


def observe_all(featurizer: Featurizer, history: list[dict], lr: float = 0.01) -> np.ndarray:
    featurizer.reset(budget=len(history) + 5)
    return np.stack([featurizer.observe(logs, lr) for logs in history])


@pytest.mark.parametrize("bad", BAD_VALUES)
def test_observations_are_finite_for_nan_inf_and_missing(bad) -> None:
    history = [
        {"loss": 1.0, "val_loss": 1.1},
        {"loss": bad, "val_loss": bad},
        {"loss": 0.8},
        {},
        {"loss": 0.5, "val_loss": 0.6},
    ]
    obs = observe_all(Featurizer(), history)
    assert obs.shape == (len(history), len(FEATURE_NAMES)) and obs.dtype == np.float32
    assert np.all(np.isfinite(obs))


def test_nonfinite_flag_marks_bad_epochs() -> None:
    history = [{"loss": 1.0, "val_loss": 1.0}, {"loss": math.nan, "val_loss": 1.0}, {"loss": 0.5}]
    flags = observe_all(Featurizer(), history)[:, FEATURE_NAMES.index("nonfinite")]
    assert flags.tolist() == [0.0, 1.0, 1.0]


def test_features_do_not_depend_on_the_loss_scale() -> None:
    losses = [2.0, 1.5, 1.2, 1.25, 1.1]
    history = [{"loss": v, "val_loss": v * 1.1} for v in losses]
    scaled = [{"loss": v * 1e-4, "val_loss": v * 1.1e-4} for v in losses]
    np.testing.assert_allclose(
        observe_all(Featurizer(), history), observe_all(Featurizer(), scaled), atol=1e-5
    )


def test_known_values() -> None:
    featurizer = Featurizer()
    featurizer.reset(budget=10)
    featurizer.observe({"loss": 1.0, "val_loss": 2.0}, 0.1)
    featurizer.observe({"loss": 0.5, "val_loss": 1.0}, 0.1)
    obs = featurizer.observe({"loss": 0.25, "val_loss": 1.5}, 0.3)
    value = dict(zip(FEATURE_NAMES, obs.tolist(), strict=True))
    assert value["progress"] == pytest.approx(0.3)
    assert value["log_val_vs_first"] == pytest.approx(math.log(1.5 / 2.0), rel=1e-5)
    assert value["log_val_vs_best"] == pytest.approx(math.log(1.5), rel=1e-5)
    assert value["log_val_change"] == pytest.approx(math.log(1.5), rel=1e-5)
    assert value["log_gap"] == pytest.approx(math.log(1.5 / 0.25), rel=1e-5)
    assert value["since_best_short"] == pytest.approx(0.1)
    assert value["since_best_budget"] == pytest.approx(0.1)
    assert value["log10_lr_vs_initial"] == pytest.approx(math.log10(3), rel=1e-5)
    assert value["log10_lr_change"] == pytest.approx(math.log10(3), rel=1e-5)


def test_reset_forgets_the_previous_run() -> None:
    featurizer = Featurizer()
    history = [{"loss": 1.0, "val_loss": 1.0}, {"loss": 3.0, "val_loss": 5.0}]
    np.testing.assert_array_equal(
        observe_all(featurizer, history), observe_all(featurizer, history)
    )


def test_config_round_trip_and_version_refusal() -> None:
    config = FeaturizerConfig(window=4)
    assert FeaturizerConfig.from_dict(config.to_dict()) == config
    with pytest.raises(FeaturizerError, match="version"):
        FeaturizerConfig.from_dict({**config.to_dict(), "version": max(FEATURIZER_VERSIONS) + 1})
    with pytest.raises(FeaturizerError, match="unknown featurizer settings"):
        FeaturizerConfig.from_dict({**config.to_dict(), "colour": "blue"})

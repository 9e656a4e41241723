"""Action schemes' shared rules: the learning-rate clamp and the divergence test."""

from __future__ import annotations

import math

import pytest

from fitpilot.controller.actions import (
    Decision,
    clamp_learning_rate,
    is_divergent,
    next_learning_rate,
)


def test_clamp_learning_rate() -> None:
    assert clamp_learning_rate(0.5, 1e-3, 0.1) == 0.1
    assert clamp_learning_rate(1e-9, 1e-3, 0.1) == 1e-3
    assert clamp_learning_rate(0.01, 1e-3, 0.1) == 0.01
    assert next_learning_rate(0.05, Decision(stop=False, factor=3.0), 1e-3, 0.1) == 0.1
    assert next_learning_rate(0.05, Decision(stop=True), 1e-3, 0.1) == 0.05


@pytest.mark.parametrize(
    ("logs", "keys", "diverged"),
    [
        ({"loss": 0.3, "val_loss": 0.4}, ("loss", "val_loss"), False),
        ({"loss": math.nan, "val_loss": 0.4}, ("loss", "val_loss"), True),
        ({"loss": 0.3, "val_loss": math.inf}, ("loss", "val_loss"), True),
        ({"loss": 0.3}, ("loss", "val_loss"), True),  # a key asked for but missing
        ({"loss": 0.3}, ("loss",), False),  # an epoch without validation, not asked for
        ({"loss": None}, ("loss",), True),
        ({"loss": "nan"}, ("loss",), True),
        ({"loss": -math.inf}, ("loss",), True),
        ({"loss": 0.0}, ("loss",), False),
    ],
)
def test_is_divergent(logs: dict, keys: tuple[str, ...], diverged: bool) -> None:
    assert is_divergent(logs, keys) is diverged

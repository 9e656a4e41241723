"""The checks of the training environment's settings, written once: the environment runs
them on its arguments, a training recipe (``agents.config.EnvSettings``) on its ``env:``
section before anything starts. Imports neither TensorFlow nor gymnasium.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from fitpilot.envs import REWARDS
from fitpilot.envs.tasks import LR_DISTRIBUTIONS
from fitpilot.errors import FitpilotError


class EnvError(FitpilotError, ValueError):
    """An argument, reset option or action that the environment cannot use."""


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_env_settings(
    *,
    lr_factor_range: Sequence[float],
    lr_distribution: str,
    tuned_fraction: float,
    reward: str,
    restarts: int,
    reversal_cost: float,
    seed_pool: int,
    uses_probe: bool,
    has_first_decision: bool,
) -> None:
    """Raise :class:`EnvError` naming the first setting that cannot work and what it takes."""
    low, high = lr_factor_range
    if not 0 < low <= high:
        raise EnvError(f"lr_factor_range must be [low, high] with 0 < low <= high, got "
                       f"{list(lr_factor_range)}")
    if lr_distribution not in LR_DISTRIBUTIONS:
        raise EnvError(f"lr_distribution must be one of {', '.join(LR_DISTRIBUTIONS)}, got "
                       f"{lr_distribution!r}")
    if not 0 <= tuned_fraction <= 1:
        raise EnvError(f"tuned_fraction must be in [0, 1], got {tuned_fraction}")
    if reward not in REWARDS:
        raise EnvError(f"reward must be one of {', '.join(REWARDS)}, got {reward!r}")
    if not _count(restarts):
        raise EnvError(f"restarts must be an int >= 0, got {restarts!r}")
    if not (math.isfinite(reversal_cost) and reversal_cost >= 0):
        raise EnvError(f"reversal_cost must be >= 0, got {reversal_cost}")
    if not _count(seed_pool):
        raise EnvError(f"seed_pool must be an int >= 0 (0: any seed), got {seed_pool!r}")
    if uses_probe != has_first_decision:
        raise EnvError(
            "featurizer version 3 (the scale probe) and an action scheme with a first decision "
            "(first choices, DiscreteActions.v3) go together; give both or neither"
        )

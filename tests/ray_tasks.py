"""Test helper for the Ray backend: tasks and environments, loaded by Ray workers by import path.

``CRASH_ONCE``: the tiny benchmark task of ``tests/benchmark_tasks.py`` whose
``build_model`` kills its process the first time it runs inside a Ray worker
(when ``$FITPILOT_TEST_CRASH_MARKER`` names a file that does not exist yet;
the file is created first), so that the run must be retried on a new worker.

:class:`CountingEnv`: a tiny gymnasium env without TensorFlow (an actor starts
in about a second): the observation is ``[start, steps]``, action 1 ends the
episode (terminated), the time limit cuts it at ``max_steps`` (truncated).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np

from tests.benchmark_tasks import mlp, tiny

CRASH_MARKER = "FITPILOT_TEST_CRASH_MARKER"
#: If this file exists, :class:`CountingEnv` kills its process when it is created.
DIE_ON_START = "FITPILOT_TEST_DIE_ON_START"


def _mlp_crashing_once_in_ray() -> Any:
    marker = os.environ.get(CRASH_MARKER)
    if marker and "RAY_RAYLET_PID" in os.environ:  # only inside a Ray worker
        try:
            descriptor = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pass
        else:
            os.close(descriptor)
            os._exit(1)
    return mlp()


CRASH_ONCE = [dataclasses.replace(tiny("tiny_crash_once"), build_model=_mlp_crashing_once_in_ray)]


class CountingEnv(gymnasium.Env):
    """Observation ``[start, steps]`` (float32); ``start`` is drawn from the seeded RNG."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, max_steps: int = 4, render_mode: str | None = "rgb_array") -> None:
        path = os.environ.get(DIE_ON_START)
        if path and Path(path).exists():
            os._exit(1)
        self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = gymnasium.spaces.Discrete(2)
        self.max_steps = max_steps
        self.render_mode = render_mode
        self.start, self.steps, self.resets = 0.0, 0, 0

    def _obs(self) -> np.ndarray:
        return np.array([self.start, self.steps], dtype=np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.start = float(self.np_random.integers(0, 1000))
        if options and "start" in options:
            self.start = float(options["start"])
        self.steps = 0
        self.resets += 1
        return self._obs(), {"resets": self.resets}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self.steps += 1
        terminated = int(action) == 1
        truncated = self.steps >= self.max_steps  # both at once: a real end, not a cut
        return self._obs(), float(self.steps), terminated, truncated, {"steps": self.steps}

    def render(self) -> np.ndarray:
        return np.full((2, 3, 3), self.steps, dtype=np.uint8)

    def double(self, value: float) -> float:
        return 2 * value


def counting_env() -> gymnasium.Env:
    """A :class:`CountingEnv` behind gymnasium's ``RecordEpisodeStatistics`` wrapper."""
    return gymnasium.wrappers.RecordEpisodeStatistics(CountingEnv())

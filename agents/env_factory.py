"""One training environment, built in the process that will step it.

The factory every kind of worker calls (a ``SubprocVecEnv`` child, a Ray actor, or the
learner's own process): it sizes that process's TensorFlow threads before TensorFlow is
imported, then builds the :class:`~fitpilot.envs.env.KerasTrainingEnv` of the recipe.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fitpilot.agents.config import WORKER_THREADS, TrainConfig
from fitpilot.runtime import configure

if TYPE_CHECKING:
    import gymnasium


def make_env(task_spec: str, config: TrainConfig) -> gymnasium.Env:
    """One :class:`KerasTrainingEnv`; TensorFlow is configured and imported here, in the caller."""
    configure(WORKER_THREADS)
    from fitpilot.envs.env import KerasTrainingEnv  # loads TensorFlow: configured just above

    return KerasTrainingEnv(tasks=task_spec, **config.env.env_kwargs())

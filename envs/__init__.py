"""Training tasks, the epoch runners and the gymnasium environment.

What it holds: tasks and suites (``tasks.py``, ``suites.py``, ``loading.py``: a suite name
or ``module:NAME``), the epoch runners (``runner.py``, ``fit_runner.py``, ``batched.py``,
sharing ``model_state.py`` and ``batches.py``), the environment (``env.py``, its settings'
checks in ``settings.py``) and the relative reward's reference runs (``plateau_run.py``).

The path a step takes: ``KerasTrainingEnv.step(action)`` -> the action scheme sets the
rate -> the task's runner trains and validates one epoch in one compiled call -> the logs
-> the controller's featurizer -> observation and reward.

May import: controller, baselines and the ground modules; never agents or experiments.

The environment is registered with gymnasium as :data:`ENV_ID` once both
``fitpilot`` and ``gymnasium`` are imported, in either order (``fitpilot``'s
``__init__`` calls :func:`register_env`); importing this package does not
import gymnasium, TensorFlow or Keras.
"""

from __future__ import annotations

from types import ModuleType

from fitpilot.envs.loading import load_tasks
from fitpilot.envs.tasks import Split, TaskData, TaskError, TrainingTask

#: The gymnasium id of :class:`~fitpilot.envs.env.KerasTrainingEnv`.
ENV_ID = "fitpilot/KerasTraining-v0"
ENTRY_POINT = "fitpilot.envs.env:KerasTrainingEnv"

# The environment's defaults (here, not in env.py, which imports TensorFlow: training
# recipes, agents.config.EnvSettings, start from them without loading it).
DEFAULT_EPOCH_COST = 0.01
DEFAULT_DIVERGENCE_PENALTY = 1.0
DEFAULT_LR_FACTOR_RANGE = (0.01, 100.0)
DEFAULT_LR_DISTRIBUTION = "default"
DEFAULT_TUNED_FRACTION = 1 / 3
#: What the reward measures: the policy's own progress, or its progress beyond the reference run.
REWARDS = ("absolute", "relative")
DEFAULT_REWARD = "absolute"

__all__ = [
    "DEFAULT_DIVERGENCE_PENALTY",
    "DEFAULT_EPOCH_COST",
    "DEFAULT_LR_DISTRIBUTION",
    "DEFAULT_LR_FACTOR_RANGE",
    "DEFAULT_REWARD",
    "DEFAULT_TUNED_FRACTION",
    "ENV_ID",
    "REWARDS",
    "Split",
    "TaskData",
    "TaskError",
    "TrainingTask",
    "load_tasks",
]


def register_env(gymnasium: ModuleType) -> None:
    """Register the environment as :data:`ENV_ID` with ``gymnasium`` (the module), once."""
    if ENV_ID not in gymnasium.registry:
        gymnasium.register(id=ENV_ID, entry_point=ENTRY_POINT)

"""Training tasks, the epoch runners and the gymnasium environment.

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

__all__ = ["ENV_ID", "Split", "TaskData", "TaskError", "TrainingTask", "load_tasks"]


def register_env(gymnasium: ModuleType) -> None:
    """Register the environment as :data:`ENV_ID` with ``gymnasium`` (the module), once."""
    if ENV_ID not in gymnasium.registry:
        gymnasium.register(id=ENV_ID, entry_point=ENTRY_POINT)

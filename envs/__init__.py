"""Training tasks, the epoch runners and the gymnasium environment."""

from fitpilot.envs.loading import load_tasks
from fitpilot.envs.tasks import Split, TaskData, TaskError, TrainingTask

__all__ = ["Split", "TaskData", "TaskError", "TrainingTask", "load_tasks"]

import gymnasium as _gymnasium

if "fitpilot/KerasTraining-v0" not in _gymnasium.registry:
    _gymnasium.register(
        id="fitpilot/KerasTraining-v0", entry_point="fitpilot.envs.env:KerasTrainingEnv"
    )

"""Training tasks, the epoch runners and the gymnasium environment."""

from fitpilot.envs.tasks import Split, TaskData, TaskError, TrainingTask, load_tasks

__all__ = ["Split", "TaskData", "TaskError", "TrainingTask", "load_tasks"]

"""fitpilot: a learned training controller for Keras.

Importing ``fitpilot`` is cheap and quiet: TensorFlow, Keras and the rest are
loaded on first use of the names below.

    from fitpilot import LearnedController
    model.fit(x, y, validation_split=0.2, epochs=50,
              callbacks=[LearnedController.pretrained()])
"""

from __future__ import annotations

import importlib
from typing import Any

from fitpilot._version import __version__
from fitpilot.runtime import quiet_environment

quiet_environment()

_LAZY = {
    "TrainingTask": "fitpilot.envs.tasks",
    "TaskData": "fitpilot.envs.tasks",
    "Split": "fitpilot.envs.tasks",
    "load_tasks": "fitpilot.envs.loading",
    "FitpilotError": "fitpilot.errors",
    "LearnedController": "fitpilot.controller.callback",
    "Featurizer": "fitpilot.controller.features",
    "KerasTrainingEnv": "fitpilot.envs.env",
    "Prodigy": "fitpilot.controller.prodigy",
    "find_learning_rate": "fitpilot.controller.lr_finder",
    "LRFinderResult": "fitpilot.controller.lr_finder",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fitpilot' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
